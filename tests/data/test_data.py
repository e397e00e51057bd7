"""Datasets by URI: digits, npz, idx (synthetic and Debian's Fashion-MNIST), fractions, errors."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from taylorglo_tf import data

FASHION = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------ digits


def test_digits_has_the_documented_fixed_split():
    splits = data.load("digits")
    assert splits.sizes() == {"train": 1197, "val": 300, "test": 300}
    assert splits.input_shape == (8, 8, 1) and splits.num_classes == 10
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int32
    assert splits.x_train.min() == 0.0 and splits.x_train.max() == 1.0
    again = data.load("digits", seed=123)  # the split does not depend on the seed
    np.testing.assert_array_equal(splits.y_val, again.y_val)
    np.testing.assert_array_equal(splits.x_test, again.x_test)


def test_digits_splits_are_disjoint_and_cover_all_images():
    from sklearn.datasets import load_digits

    splits = data.load("digits")
    rows = np.concatenate([splits.x_train, splits.x_val, splits.x_test]).reshape(-1, 64)
    expected = load_digits().data / 16.0
    assert len(rows) == len(expected) == 1797
    # every original image appears exactly once (sort rows lexicographically to compare)
    order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(rows), order(expected), atol=1e-7)


# --------------------------------------------------------------- fractions


def test_fraction_keeps_a_seeded_subset_of_training_only():
    full = data.load("digits")
    a = data.load("digits", fraction=0.25, seed=1)
    b = data.load("digits", fraction=0.25, seed=1)
    c = data.load("digits", fraction=0.25, seed=2)
    assert len(a.y_train) == round(1197 * 0.25)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.sizes()["val"] == full.sizes()["val"] and a.sizes()["test"] == full.sizes()["test"]
    # the subset is drawn from the full training split
    full_rows = {r.tobytes() for r in full.x_train}
    assert all(r.tobytes() in full_rows for r in a.x_train)
    assert a.info["fraction"] == 0.25 and a.info["seed"] == 1


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "half", None, float("nan")])
def test_bad_fraction_is_an_error_naming_it(bad):
    with pytest.raises(ValueError, match="fraction"):
        data.load("digits", fraction=bad)


# --------------------------------------------------------------------- URIs


@pytest.mark.parametrize("uri", ["", "mnist", "cifar10", "http://x", "idx:", "tfds:"])
def test_unknown_dataset_uri_is_an_error_naming_it(uri):
    with pytest.raises(ValueError, match="dataset"):
        data.load(uri)


def test_parse_uri_splits_scheme_target_and_options():
    assert data.parse_uri("digits") == ("digits", "", {})
    assert data.parse_uri("idx:fashion") == ("idx", "fashion", {})
    assert data.parse_uri("tfds:mnist?train=train[:90%]&val=train[90%:]") == (
        "tfds",
        "mnist",
        {"train": "train[:90%]", "val": "train[90%:]"},
    )
    with pytest.raises(ValueError, match="malformed option 'oops'"):
        data.parse_uri("tfds:mnist?oops")


# ---------------------------------------------------------------------- npz


def _arrays(n, shape=(6, 5), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), rng.integers(0, classes, n)


def test_npz_with_validation_arrays_is_used_as_stored(tmp_path):
    (xt, yt), (xv, yv), (xs, ys) = _arrays(30), _arrays(8, seed=1), _arrays(10, seed=2)
    np.savez(tmp_path / "set.npz", x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys)
    splits = data.load("npz:set.npz", data_dir=tmp_path)  # relative to data_dir
    assert splits.sizes() == {"train": 30, "val": 8, "test": 10}
    assert splits.input_shape == (6, 5, 1)
    np.testing.assert_allclose(splits.x_val[..., 0], xv / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(splits.y_test, ys)


def test_npz_without_validation_carves_the_last_twelfth_of_train(tmp_path):
    (xt, yt), (xs, ys) = _arrays(120, shape=(4, 4, 3)), _arrays(10, shape=(4, 4, 3))
    xt = xt.astype(np.float32)  # floats are kept as stored
    path = tmp_path / "f.npz"
    np.savez(path, x_train=xt, y_train=np.eye(4)[yt], x_test=xs.astype(np.float32), y_test=ys)
    splits = data.load(f"npz:{path}")
    assert splits.sizes() == {"train": 110, "val": 10, "test": 10}
    np.testing.assert_array_equal(splits.x_val, xt[110:])
    np.testing.assert_array_equal(splits.y_train, yt[:110])  # one-hot rows -> sparse


def test_npz_missing_arrays_are_named(tmp_path):
    x, y = _arrays(5)
    np.savez(tmp_path / "bad.npz", x_train=x, y_train=y, x_test=x)
    with pytest.raises(ValueError, match=r"lacks array\(s\) \['y_test'\]"):
        data.load("npz:bad.npz", data_dir=tmp_path)


def test_npz_label_count_mismatch_is_named(tmp_path):
    x, y = _arrays(5)
    np.savez(tmp_path / "bad.npz", x_train=x, y_train=y[:3], x_test=x, y_test=y)
    with pytest.raises(ValueError, match="train labels: 3 labels for 5 images"):
        data.load("npz:bad.npz", data_dir=tmp_path)


def test_missing_npz_file_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.npz")):
        data.load("npz:nope.npz", data_dir=tmp_path)


# ---------------------------------------------------------------------- idx


def _write_idx(path: Path, array: np.ndarray, compress: bool):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _idx_dir(root: Path, n_train=24, n_test=6, compress=True):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 7, 7)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 7, 7)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    root.mkdir(exist_ok=True)
    for i, (stem, a) in enumerate(arrays.items()):
        _write_idx(root / stem, a, compress and i % 2 == 0)  # gz and raw mixed
    return arrays


def test_idx_folder_gz_or_raw_loads_with_validation_carved_from_train(tmp_path):
    arrays = _idx_dir(tmp_path / "mini")
    splits = data.load("idx:mini", data_dir=tmp_path)
    assert splits.sizes() == {"train": 22, "val": 2, "test": 6}
    assert splits.input_shape == (7, 7, 1)
    np.testing.assert_allclose(splits.x_val[..., 0], arrays["train-images-idx3-ubyte"][22:] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(splits.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_idx_missing_file_is_an_error_naming_it(tmp_path):
    _idx_dir(tmp_path / "mini")
    (tmp_path / "mini" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load(f"idx:{tmp_path / 'mini'}")


def test_idx_missing_directory_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"IDX directory {tmp_path / 'absent'} not found"):
        data.load("idx:absent", data_dir=tmp_path)


def test_idx_corrupt_files_are_named(tmp_path):
    _idx_dir(tmp_path / "mini", compress=False)
    bad = tmp_path / "mini" / "train-labels-idx1-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04rubbish")
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte: not an IDX file"):
        data.load("idx:mini", data_dir=tmp_path)
    bad.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 50) + b"\x00" * 3)
    with pytest.raises(ValueError, match=r"header says \(50,\)"):
        data.load("idx:mini", data_dir=tmp_path)


@pytest.mark.skipif(
    not FASHION.is_dir(), reason=f"{FASHION} absent: install Debian's dataset-fashion-mnist (.ci/run does)"
)
def test_idx_loads_debians_fashion_mnist_as_55k_5k_10k():
    splits = data.load(f"idx:{FASHION}")
    assert splits.sizes() == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert splits.input_shape == (28, 28, 1) and splits.num_classes == 10
    assert splits.x_train.min() >= 0.0 and splits.x_train.max() <= 1.0
    assert set(np.unique(splits.y_test)) == set(range(10))
    assert np.bincount(splits.y_test).tolist() == [1000] * 10  # Fashion-MNIST's balanced test set


def test_empty_split_is_an_error_naming_it(tmp_path):
    x, y = _arrays(5)  # 5 // 12 = 0 validation examples
    np.savez(tmp_path / "small.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match=r"empty split\(s\) \['val'\]"):
        data.load("npz:small.npz", data_dir=tmp_path)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_bad_seed_is_an_error_naming_it(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        data.load("digits", seed=bad)


def test_an_empty_split_without_an_image_shape_is_named_as_empty():
    from taylorglo_tf.data.splits import make_splits

    x, y = _arrays(5)
    nothing = (np.zeros((0,), np.uint8), np.zeros((0,), np.int64))  # what an empty TFDS slice gives
    with pytest.raises(ValueError, match=r"tfds:mnist: empty split\(s\) \['val'\]"):
        make_splits("tfds:mnist", (x, y), nothing, (x, y))
