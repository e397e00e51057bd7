"""``pipeline``: NumPy arrays -> batched ``tf.data.Dataset`` for training or evaluation.

REFERENCE section 8 order, done on indices so every step is batch-level:
shuffle (indices) -> batch -> gather (the per-batch "map"; the arrays already sit
in memory, so there is nothing to cache) -> augment (vectorised) -> prefetch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from taylorglo_tf.data.augment_ops import augment_batch
from taylorglo_tf.data.augmentation import Augmentation

AUTOTUNE = tf.data.AUTOTUNE


def pipeline(x: np.ndarray, y: np.ndarray, *, batch_size: int, training: bool,
             augment: Augmentation | None = None, seed: int = 0) -> tf.data.Dataset:
    """One epoch of batches of ``(x, y)``.

    Training: reshuffled every iteration (seeded), full batches only (the last
    partial batch is dropped unless the set is smaller than one batch), and
    ``augment`` applied per batch; with CutMix the targets are ``(y_a, y_b, lam)``
    (the training step mixes the two losses with weight ``lam``). Evaluation: in order, all examples, no augmentation.
    Deterministic given ``seed``; call ``.repeat()`` for more than one epoch.
    """
    augment = augment or Augmentation()
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"pipeline needs as many labels as images (> 0): got {len(x)} images, "
                         f"{len(y)} labels")
    n = len(x)
    images = tf.constant(np.asarray(x, dtype=np.float32))
    labels = tf.constant(np.asarray(y, dtype=np.int32))
    ds = tf.data.Dataset.range(n)
    if training:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size), drop_remainder=training and n >= batch_size)
    ds = ds.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)),
                num_parallel_calls=AUTOTUNE)
    if training and augment.active:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda xy, s: augment_batch(xy[0], xy[1], s, augment), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
