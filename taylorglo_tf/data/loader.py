"""``load(uri)``: datasets named by URI-like strings.

    tfds:NAME[?train=SPLIT&val=SPLIT&test=SPLIT&norm=unit|standardise]
    idx:DIR        MNIST-format files (raw or .gz)
    npz:FILE       arrays x_train, y_train, x_test, y_test [, x_val, y_val]
    digits         scikit-learn's 8x8 digits (bundled)

Relative ``DIR``/``FILE`` paths resolve under ``data_dir`` (else the working directory).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from taylorglo_tf.data.splits import Splits, check_fraction, subsample

SCHEMES = ("tfds", "idx", "npz")
PLAIN = ("digits",)


def parse_uri(uri: str) -> tuple[str, str, dict[str, str]]:
    """Split a dataset URI into ``(scheme, target, options)`` without loading anything.

    ``"tfds:cifar10"`` -> ``("tfds", "cifar10", {})``; ``"digits"`` -> ``("digits", "", {})``.
    Query options (``?k=v&k=v``) are kept verbatim (split strings contain ``%``).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"dataset URI must be a non-empty string, got {uri!r}")
    if uri in PLAIN:
        return uri, "", {}
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme not in SCHEMES or not rest:
        raise ValueError(
            f"unknown dataset {uri!r}; use one of: " + ", ".join([f"{s}:..." for s in SCHEMES] + list(PLAIN))
        )
    options: dict[str, str] = {}
    if scheme == "tfds":
        rest, _, query = rest.partition("?")
        for part in filter(None, query.split("&")):
            key, eq, value = part.partition("=")
            if not eq or not key or not value:
                raise ValueError(f"dataset URI {uri!r}: malformed option {part!r} (want key=value)")
            options[key] = value
    return scheme, rest, options


def _resolve(target: str, data_dir: str | Path | None) -> Path:
    if "\x00" in target:  # the OS would refuse it with a message that does not name the path
        raise ValueError(f"dataset path {target!r} contains a NUL character")
    try:
        path = Path(target).expanduser()
    except RuntimeError:  # "~user" for a user that does not exist
        raise ValueError(f"dataset path {target!r} names an unknown user's home directory") from None
    if not path.is_absolute() and data_dir is not None:
        path = Path(data_dir).expanduser() / path
    return path


def _read_files(reader: Callable[[Path], Splits], path: Path, uri: str) -> Splits:
    """``reader(path)``; a file that is not what the scheme promises is a ValueError naming the URI.

    NumPy, gzip and struct errors on a corrupt, truncated or pickled file do not say
    which file they were reading (a TypeError: e.g. an IDX file declaring 0 dimensions).
    """
    try:
        return reader(path)
    except FileNotFoundError:
        raise  # already names the path
    except (ValueError, TypeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"dataset {uri!r} ({path}) cannot be read: {type(exc).__name__}: {exc}") from exc


def load(
    uri: str, *, data_dir: str | Path | None = None, fraction: float = 1.0, seed: int = 0, download: bool = True
) -> Splits:
    """Load dataset ``uri`` as NumPy ``Splits`` (normalised float32 images, int32 labels).

    Args:
        uri: ``tfds:NAME[?train=SPLIT&val=SPLIT&test=SPLIT&norm=unit|standardise]``
            (TensorFlow Datasets, with the paper's splits), ``idx:DIR`` (MNIST-format
            files, raw or ``.gz``), ``npz:FILE`` (arrays ``x_train``, ``y_train``,
            ``x_test``, ``y_test`` [, ``x_val``, ``y_val``]) or ``digits``
            (scikit-learn's 8x8 digits, bundled).
        data_dir: where datasets live: TFDS's ``data_dir`` and the base of
            relative ``DIR``/``FILE`` paths. Defaults to TFDS's own and the
            working directory.
        fraction: the part of the training split kept, in (0, 1], drawn with
            ``seed``; validation and test stay whole, and the normalisation
            statistics come from the full training split. Defaults to 1.
        seed: seeds that draw, a non-negative integer. Defaults to 0.
        download: let TFDS fetch and prepare missing data. Defaults to ``True``.

    Returns:
        ``Splits``: ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``,
        ``y_test`` (images ``(N, H, W, C)`` float32, labels ``(N,)`` int32),
        ``name``, ``num_classes``, ``input_shape`` and ``info`` (the URI,
        fraction, seed and normalisation).

    Raises:
        ValueError: for an unknown scheme or a malformed URI, a ``fraction``
            outside (0, 1], a negative or non-integer ``seed``, or a file that is
            not what its scheme promises (the message names the URI and the path).
        FileNotFoundError: for an ``idx:``/``npz:`` path that does not exist.

    Example:

    >>> from taylorglo_tf import data
    >>> splits = data.load("digits")
    >>> splits.x_train.shape, splits.x_val.shape, splits.x_test.shape
    ((1197, 8, 8, 1), (300, 8, 8, 1), (300, 8, 8, 1))
    >>> str(splits.x_train.dtype), str(splits.y_train.dtype), splits.num_classes
    ('float32', 'int32', 10)
    >>> data.load("digits", fraction=0.5, seed=1).x_train.shape  # half the training split
    (598, 8, 8, 1)
    >>> data.load("mnist")
    Traceback (most recent call last):
        ...
    ValueError: unknown dataset 'mnist'; use one of: tfds:..., idx:..., npz:..., digits
    """
    fraction = check_fraction(fraction)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    scheme, target, options = parse_uri(uri)
    if scheme == "tfds":
        from taylorglo_tf.data.tfds_source import load_tfds

        splits = load_tfds(target, options, None if data_dir is None else str(data_dir), download)
    elif scheme == "idx":
        from taylorglo_tf.data.files import load_idx

        splits = _read_files(load_idx, _resolve(target, data_dir), uri)
    elif scheme == "npz":
        from taylorglo_tf.data.files import load_npz

        splits = _read_files(load_npz, _resolve(target, data_dir), uri)
    else:
        from taylorglo_tf.data.files import load_digits

        splits = load_digits()
    splits.x_train, splits.y_train = subsample(splits.x_train, splits.y_train, fraction, seed)
    splits.info.update(uri=uri, fraction=fraction, seed=int(seed))
    return splits
