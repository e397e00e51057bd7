"""TFDS datasets: the paper's splits through TFDS split strings, offline with mock_data.

The mock resolves each requested split string against the real datasets' split
sizes with TFDS's own split arithmetic (``ReadInstruction``), so the sizes
checked here are what ``tfds.load`` returns on the real data.
"""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")

from taylorglo_tf import data  # noqa: E402

# Published split sizes (TFDS catalog) and image shapes.
REAL = {
    "mnist": ({"train": 60_000, "test": 10_000}, (28, 28, 1), 10),
    "cifar10": ({"train": 50_000, "test": 10_000}, (32, 32, 3), 10),
    "cifar100": ({"train": 50_000, "test": 10_000}, (32, 32, 3), 100),
    "svhn_cropped": ({"train": 73_257, "test": 26_032}, (32, 32, 3), 10),
}
# REFERENCE section 3 (paper, Appendix A).
PAPER = {
    "mnist": (55_000, 5_000, 10_000),
    "cifar10": (45_000, 5_000, 10_000),
    "cifar100": (45_000, 5_000, 10_000),
    "svhn_cropped": (47_225, 26_032, 26_032),
}


def _split_size(name: str, split) -> int:
    sizes = REAL[name][0]
    total = 0
    for part in tfds.core.ReadInstruction.from_spec(str(split)).to_absolute(
        {k: tfds.core.SplitInfo(name=k, shard_lengths=[v], num_bytes=0) for k, v in sizes.items()}
    ):
        n = sizes[part.splitname]
        start = 0 if part.from_ is None else part.from_
        stop = n if part.to is None else part.to
        start, stop = (s + n if s < 0 else s for s in (start, stop))
        total += max(0, min(stop, n) - max(start, 0))
    return total


# The mock's images: real shape for MNIST (checks the full path), small images of
# the real channel count elsewhere (keeps the 100k-example loads fast).
FAKE_SHAPE = {"mnist": (28, 28, 1), "cifar10": (4, 4, 3), "cifar100": (4, 4, 3), "svhn_cropped": (4, 4, 3)}


def _fake_as_dataset(self, split, **kwargs):
    """Mocked ``_as_dataset``: as many (cheap) examples as the split string selects."""
    _, _, classes = REAL[self.name]
    shape = FAKE_SHAPE[self.name]
    n = _split_size(self.name, split)
    test = "test" in str(split)
    offset = 7 if test else 0

    def examples(i):  # a batch of indices -> a batch of examples (vectorised, cheap)
        value = tf.cast((i * 37 + offset) % 251 // (2 if test else 1), tf.uint8)  # test: darker
        channels = tf.cast(tf.range(shape[-1]) * 40, tf.uint8)
        images = tf.broadcast_to(value[:, None, None, None] + channels, (tf.shape(i)[0], *shape))
        return {"image": images, "label": (i + offset) % classes, "id": tf.strings.as_string(i)}

    return tf.data.Dataset.range(n).batch(4096).map(examples).unbatch()


@pytest.fixture
def mocked_tfds():
    with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
        yield


@pytest.mark.parametrize("name", sorted(PAPER))
def test_tfds_dataset_has_the_papers_train_validation_test_sizes(mocked_tfds, name):
    splits = data.load(f"tfds:{name}", download=False)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == PAPER[name]
    assert splits.input_shape == FAKE_SHAPE[name]
    assert splits.num_classes == REAL[name][2]
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int32
    assert splits.x_train.shape[1:] == FAKE_SHAPE[name]


def test_mnist_is_scaled_to_unit_range(mocked_tfds):
    splits = data.load("tfds:mnist", download=False)
    assert splits.info["normalisation"] == "unit"
    assert splits.x_train.min() >= 0.0 and splits.x_train.max() <= 1.0
    assert splits.x_train.max() > 0.9  # 250 / 255 occurs


def test_cifar_is_standardised_per_channel_with_training_statistics(mocked_tfds):
    splits = data.load("tfds:cifar10", download=False)
    mean = splits.x_train.mean(axis=(0, 1, 2), dtype=np.float64)
    std = splits.x_train.std(axis=(0, 1, 2), dtype=np.float64)
    np.testing.assert_allclose(mean, 0.0, atol=1e-3)
    np.testing.assert_allclose(std, 1.0, atol=1e-3)
    # the recorded statistics are per channel, in [0, 1] pixel units
    assert len(splits.info["mean"]) == 3 and len(splits.info["std"]) == 3
    # validation/test use the training statistics, not their own
    assert not np.allclose(splits.x_test.mean(axis=(0, 1, 2), dtype=np.float64), 0.0, atol=1e-3)


def test_training_fraction_applies_to_the_training_split_only(mocked_tfds):
    splits = data.load("tfds:cifar100", fraction=0.1, seed=3, download=False)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (4_500, 5_000, 10_000)


def test_custom_splits_in_the_uri_are_used(mocked_tfds):
    splits = data.load("tfds:mnist?train=train[:10%]&val=train[10%:12%]&test=test[:1000]&norm=unit", download=False)
    assert splits.sizes() == {"train": 6_000, "val": 1_200, "test": 1_000}


def test_bad_split_string_is_an_error_naming_it(mocked_tfds):
    with pytest.raises(ValueError, match=r"bad val split 'train\[oops'"):
        data.load("tfds:mnist?val=train[oops", download=False)


def test_unknown_uri_option_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown option.*'shuffle'"):
        data.load("tfds:mnist?shuffle=yes")


def test_dataset_without_paper_splits_must_name_them():
    with pytest.raises(ValueError, match="tfds:fashion_mnist has no built-in splits"):
        data.load("tfds:fashion_mnist", download=False)


def test_unknown_tfds_dataset_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown TFDS dataset 'no_such_set'"):
        data.load("tfds:no_such_set?train=train&val=train&test=test", download=False)


def test_missing_data_without_download_is_an_error_naming_the_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds:mnist is not available"):
        data.load("tfds:mnist", data_dir=tmp_path, download=False)


class _NetworkReached(Exception):
    """Raised in place of the download: the real path got as far as the network."""


def test_real_download_path_reaches_the_network_with_the_installed_dependencies(tmp_path, monkeypatch):
    # Everything of tfds.load's download-and-prepare path runs for real except the
    # transfer itself, so a missing runtime dependency of TFDS fails here, offline.
    def no_network(self, *args, **kwargs):
        raise _NetworkReached()

    monkeypatch.setattr(tfds.download.DownloadManager, "download", no_network)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", no_network)
    with pytest.raises(_NetworkReached):
        data.load("tfds:mnist", data_dir=tmp_path, download=True)
