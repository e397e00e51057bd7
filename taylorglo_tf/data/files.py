"""Local sources: MNIST-format IDX folders, ``.npz`` archives, scikit-learn's 8x8 digits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from taylorglo_tf.data.splits import Splits, make_splits, to_unit

# IDX type codes (http://yann.lecun.com/exdb/mnist/): code -> big-endian dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Like MNIST's 55,000 / 5,000: the last 1/12 of the training file is the validation split.
IDX_VAL_DIVISOR = 12
# digits: a fixed split of the 1,797 images (permutation seed 0): 1,197 / 300 / 300.
DIGITS_SPLIT_SEED = 0
DIGITS_VAL = 300
DIGITS_TEST = 300


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) into a NumPy array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    body = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - body != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes), file holds {len(data) - body} bytes")
    return np.frombuffer(data, dtype=dtype, offset=body).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"IDX file {directory / stem}[.gz] not found")


def load_idx(directory: Path) -> Splits:
    """MNIST-format folder -> splits: train = the training file minus its last 1/12
    (validation), test = the t10k file; images scaled to [0, 1]."""
    if not directory.is_dir():
        raise FileNotFoundError(f"IDX directory {directory} not found")
    arr = {key: read_idx(_find(directory, stem)) for key, stem in _IDX_FILES.items()}
    x_tr, y_tr = arr["train_images"], arr["train_labels"]
    n_val = len(x_tr) // IDX_VAL_DIVISOR
    x_tr, x_te = to_unit(x_tr, arr["test_images"])
    cut = len(x_tr) - n_val
    return make_splits(
        f"idx:{directory}",
        (x_tr[:cut], y_tr[:cut]),
        (x_tr[cut:], y_tr[cut:]),
        (x_te, arr["test_labels"]),
        info={"normalisation": "unit"},
    )


def load_npz(path: Path) -> Splits:
    """``.npz`` with ``x_train, y_train, x_test, y_test`` and optionally ``x_val, y_val``
    (else the last 1/12 of train). Integer images are scaled by 1/255; float
    images are used as stored. Labels are sparse ints or one-hot rows."""
    if not path.is_file():
        raise FileNotFoundError(f"npz file {path} not found")
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data]
    if ("x_val" in data) != ("y_val" in data):
        missing.append("y_val" if "x_val" in data else "x_val")
    if missing:
        raise ValueError(f"npz file {path} lacks array(s) {missing} (has {sorted(data)})")
    x_tr, y_tr = data["x_train"], data["y_train"]
    if "x_val" in data:
        x_va, y_va = data["x_val"], data["y_val"]
    else:
        cut = len(x_tr) - len(x_tr) // IDX_VAL_DIVISOR
        x_tr, x_va, y_tr, y_va = x_tr[:cut], x_tr[cut:], y_tr[:cut], y_tr[cut:]
    xs = [x_tr, x_va, data["x_test"]]
    integer = [np.issubdtype(np.asarray(x).dtype, np.integer) for x in xs]
    if any(integer):
        xs = [to_unit(x)[0] if i else x for x, i in zip(xs, integer)]
    return make_splits(
        f"npz:{path}",
        (xs[0], y_tr),
        (xs[1], y_va),
        (xs[2], data["y_test"]),
        info={"normalisation": "unit" if any(integer) else "as stored"},
    )


def load_digits() -> Splits:
    """scikit-learn's 8x8 digits (bundled, nothing downloaded): images (8, 8, 1) scaled
    from 0..16 to [0, 1]; a fixed permutation (seed 0) gives 1,197 train, 300
    validation, 300 test images."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.data.reshape(-1, 8, 8, 1) / 16.0).astype(np.float32)
    y = bunch.target
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y))
    test, val, train = np.split(order, [DIGITS_TEST, DIGITS_TEST + DIGITS_VAL])
    return make_splits(
        "digits",
        (x[train], y[train]),
        (x[val], y[val]),
        (x[test], y[test]),
        num_classes=10,
        info={"normalisation": "x / 16"},
    )
