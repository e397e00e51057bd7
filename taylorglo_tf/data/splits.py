"""The ``Splits`` container and the array helpers every source shares (NumPy only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Splits:
    """A dataset's train / validation / test arrays.

    ``x_*`` are float32 ``(N, H, W, C)`` images, already normalised; ``y_*`` are
    int32 sparse labels in ``[0, num_classes)``. ``info`` records provenance
    (source, normalisation statistics, fraction, seed).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, int, int]
    info: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Number of examples per split."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def as_images(x: np.ndarray, what: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, C)`` -> ``(N, H, W, C)``; anything else is an error naming ``what``."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{what}: expected images of shape (N, H, W[, C]), got {x.shape}")
    return x


def as_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    """Sparse int32 labels of length ``n`` (one-hot rows are converted by argmax)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if len(y) != n:
        raise ValueError(f"{what}: {len(y)} labels for {n} images")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"{what}: labels must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise ValueError(f"{what}: negative label {int(y.min())}")
    return y.astype(np.int32)


def check_fraction(fraction: float) -> float:
    """A training fraction must be a number in (0, 1]."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}") from None
    if not 0.0 < f <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return f


def subsample(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """A seeded random ``fraction`` of the examples (at least one), in original order."""
    fraction = check_fraction(fraction)
    if fraction == 1.0:
        return x, y
    n = len(y)
    keep = max(1, int(round(n * fraction)))
    idx = np.sort(np.random.default_rng(seed).choice(n, size=keep, replace=False))
    return x[idx], y[idx]


def to_unit(*arrays: np.ndarray) -> list[np.ndarray]:
    """8-bit images -> float32 in [0, 1] (MNIST-style normalisation)."""
    return [np.asarray(a, dtype=np.float32) / np.float32(255.0) for a in arrays]


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of 8-bit images, in [0, 1] pixel units, exact (float64).

    Uses a 256-bin histogram per channel: one pass, no float copies of the data.
    """
    flat = np.ascontiguousarray(images).reshape(-1, images.shape[-1])
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for c in range(flat.shape[1]):
        counts = np.bincount(flat[:, c], minlength=256).astype(np.float64)
        m = counts @ levels / counts.sum()
        mean.append(m)
        std.append(np.sqrt(max(counts @ (levels - m) ** 2 / counts.sum(), 0.0)))
    return np.asarray(mean), np.asarray(std)


def standardise(train: np.ndarray, *others: np.ndarray):
    """8-bit images -> per-channel ``(x / 255 - mean) / std`` (float32), with the
    statistics of ``train``.

    Returns the normalised arrays and ``{"mean": [...], "std": [...]}`` (in [0, 1] units).
    """
    train = np.asarray(train)
    if train.dtype != np.uint8:
        raise ValueError(f"standardise expects 8-bit images, got dtype {train.dtype}")
    mean, std = _channel_stats(train)
    std = np.where(std > 0, std, 1.0)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (-mean / std).astype(np.float32)
    out = []
    for a in (train, *others):
        x = np.asarray(a, dtype=np.float32)  # one copy, then in-place affine map
        x *= scale
        x += shift
        out.append(x)
    return out, {"mean": mean.tolist(), "std": std.tolist()}


def make_splits(
    name: str, train, val, test, *, num_classes: int | None = None, info: dict[str, Any] | None = None
) -> Splits:
    """Assemble validated ``Splits`` from ``(x, y)`` pairs of float images and labels."""
    arrays, empty = {}, []
    for split, (x, y) in (("train", train), ("val", val), ("test", test)):
        if len(x) == 0:  # not a shape error: an empty TFDS slice has no image shape either
            empty.append(split)
            continue
        images = as_images(x, f"{name} {split} images").astype(np.float32, copy=False)
        arrays[split] = (images, as_labels(y, len(images), f"{name} {split} labels"))
    if empty:
        raise ValueError(f"{name}: empty split(s) {empty}")
    shapes = {s: a[0].shape[1:] for s, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{name}: image shapes differ between splits: {shapes}")
    seen = max(int(a[1].max()) + 1 for a in arrays.values())
    classes = int(num_classes) if num_classes is not None else seen
    height, width, channels = shapes["train"]  # as_images checked (N, H, W, C)
    if seen > classes:
        raise ValueError(f"{name}: label {seen - 1} out of range for {classes} classes")
    return Splits(
        name,
        *arrays["train"],
        *arrays["val"],
        *arrays["test"],
        num_classes=classes,
        input_shape=(int(height), int(width), int(channels)),
        info=dict(info or {}),
    )
