"""``pipeline``: in-memory arrays -> batched ``tf.data.Dataset`` for training or evaluation.

REFERENCE section 8 order, done on indices so every step is batch-level:
shuffle (indices) -> batch -> gather (the per-batch "map"; the arrays already sit
in memory, so there is nothing to cache) -> augment (vectorised) -> prefetch.

Training shuffles with one stateless permutation per epoch (no shuffle buffer to
fill), seeded by a per-epoch seed pair; each batch's augmentation seed is split
from that pair too, so an epoch is a pure function of ``(seed, epoch)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from taylorglo_tf.data.augment_ops import augment_batch
from taylorglo_tf.data.augmentation import Augmentation

AUTOTUNE = tf.data.AUTOTUNE


def _options() -> tf.data.Options:
    """No static graph rewrites: the pipeline is already batch-level with parallel maps
    and prefetch, and the rewrites serialise the captured arrays, which made each
    start-up scale with the data (CIFAR-10: ~75 ms more; benchmarks/pipeline.py)."""
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return options


def as_tensors(x: Any, y: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """Images as float32 and labels as int32 tensors; tensors of those types (and int32 inputs) are used as they are.

    A caller that builds many pipelines over the same arrays (a trainer, one per
    attempt) converts them once with this and passes the tensors: nothing is copied again.
    """
    # int32 input tensors (token ids of a registered model) are used as they are too
    ready = isinstance(x, tf.Tensor) and x.dtype in (tf.float32, tf.int32)
    images = x if ready else tf.constant(np.asarray(x, np.float32))
    labels = y if isinstance(y, tf.Tensor) and y.dtype == tf.int32 else tf.constant(np.asarray(y, np.int32))
    return images, labels


def _epoch_batches(n: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """One epoch of ``(indices, augmentation seed)`` per batch, reshuffled on every iteration.

    Full batches only, unless the set is smaller than a batch (then one batch of all).
    """
    batch = batch_size if n >= batch_size else n
    rows = n // batch

    def epoch(pair):
        shuffle_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(pair, 2))
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), shuffle_seed)
        indices = tf.reshape(order[: rows * batch], [rows, batch])
        return tf.data.Dataset.from_tensor_slices((indices, tf.random.experimental.stateless_split(augment_seed, rows)))

    # A new seed pair each time the dataset is iterated (each epoch of a .repeat()).
    pairs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2).take(1)
    return pairs.flat_map(epoch)


def pipeline(
    x: Any, y: Any, *, batch_size: int, training: bool, augment: Augmentation | None = None, seed: int = 0
) -> tf.data.Dataset:
    """One epoch of batches of ``(x, y)``.

    ``x``/``y``: NumPy arrays, or tensors from ``as_tensors`` (not copied).
    Training: reshuffled every iteration (seeded), full batches only (the last
    partial batch is dropped unless the set is smaller than one batch), and
    ``augment`` applied per batch; with CutMix the targets are ``(y_a, y_b, lam)``
    (the training step mixes the two losses with weight ``lam``). Evaluation: in
    order, all examples, no augmentation. Deterministic given ``seed``; call
    ``.repeat()`` for more than one epoch.
    """
    augment = augment or Augmentation()
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"pipeline needs as many labels as images (> 0): got {len(x)} images, {len(y)} labels")
    images, labels = as_tensors(x, y)
    n, batch_size = len(x), int(batch_size)
    if not training:
        return (
            tf.data.Dataset.range(n)
            .batch(batch_size)
            .map(lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=AUTOTUNE)
            .prefetch(AUTOTUNE)
            .with_options(_options())
        )
    if augment.active:

        def load(i, s):
            return augment_batch(tf.gather(images, i), tf.gather(labels, i), s, augment)
    else:

        def load(i, s):
            return tf.gather(images, i), tf.gather(labels, i)

    return (
        _epoch_batches(n, batch_size, seed)
        .map(load, num_parallel_calls=AUTOTUNE)
        .prefetch(AUTOTUNE)
        .with_options(_options())
    )
