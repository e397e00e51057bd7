"""Batch-level, vectorised augmentation ops (TensorFlow).

Every op takes a whole batch ``x`` of shape ``(B, H, W, C)`` and a stateless seed
(shape ``[2]`` int), so a pipeline is deterministic given its seed.
"""

from __future__ import annotations

import tensorflow as tf

from taylorglo_tf.data.augmentation import Augmentation


def _uniform_int(seed, shape, maxval):
    return tf.random.stateless_uniform(shape, seed, minval=0, maxval=maxval, dtype=tf.int32)


def _columns(b, w, seed, flip: bool, offset_range: int):
    """Per-image source column indices ``(B, W)``: an offset in ``[0, offset_range)``
    and, if ``flip``, reversed with probability 1/2."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    cols = tf.broadcast_to(tf.range(w)[None, :], [b, w])
    if flip:
        mirror = tf.random.stateless_uniform([b, 1], s1) < 0.5
        cols = tf.where(mirror, w - 1 - cols, cols)
    if offset_range > 1:
        cols = cols + _uniform_int(s2, [b, 1], offset_range)
    return cols


def random_flip(x, seed):
    """Flip each image left-right with probability 1/2 (a batched column gather)."""
    b, w = tf.shape(x)[0], tf.shape(x)[2]
    return tf.gather(x, _columns(b, w, seed, True, 1), axis=2, batch_dims=1)


def random_crop(x, padding: int, seed, flip: bool = False):
    """Zero-pad by ``padding`` per side, then crop each image back to ``(H, W)`` at a
    uniform offset in ``[0, 2 * padding]`` (per image, by batched gathers); with
    ``flip``, also mirror each image with probability 1/2 in the same gather."""
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    padded = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    rows = _uniform_int(s1, [b, 1], 2 * padding + 1) + tf.range(h)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, _columns(b, w, s2, flip, 2 * padding + 1), axis=2, batch_dims=1)


def box_mask(h, w, cy, cx, box_h, box_w):
    """Boolean ``(B, H, W)`` masks of boxes ``[cy - box_h//2, cy - box_h//2 + box_h)`` x
    ``[cx - box_w//2, ...)``, clipped to the image. ``cy, cx, box_h, box_w``: ``(B,)`` or scalars."""
    cy, cx, box_h, box_w = (tf.cast(tf.reshape(v, [-1, 1]), tf.int32) for v in (cy, cx, box_h, box_w))
    y0, x0 = cy - box_h // 2, cx - box_w // 2
    ys, xs = tf.range(h)[None, :], tf.range(w)[None, :]
    in_y = (ys >= y0) & (ys < y0 + box_h)
    in_x = (xs >= x0) & (xs < x0 + box_w)
    return in_y[:, :, None] & in_x[:, None, :]


def cutout(x, length: int, seed):
    """Cutout (DeVries & Taylor 2017): one ``length`` x ``length`` hole per image, centre
    uniform over the image, clipped at the edges, set to 0."""
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    hole = box_mask(h, w, _uniform_int(s1, [b], h), _uniform_int(s2, [b], w), length, length)
    return tf.where(hole[..., None], tf.zeros_like(x), x)


def sample_beta(seed, alpha: float):
    """One draw of Beta(alpha, alpha) as G1 / (G1 + G2) with G ~ Gamma(alpha)."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    g1 = tf.random.stateless_gamma([], s1, alpha=alpha)
    g2 = tf.random.stateless_gamma([], s2, alpha=alpha)
    return g1 / (g1 + g2)


def cutmix_box(h, w, lam):
    """Side lengths of the CutMix box for a target ``lam``: ``floor(H sqrt(1-lam))`` x
    ``floor(W sqrt(1-lam))``."""
    ratio = tf.sqrt(1.0 - lam)
    return (tf.cast(tf.cast(h, tf.float32) * ratio, tf.int32), tf.cast(tf.cast(w, tf.float32) * ratio, tf.int32))


def cutmix(x, y, prob: float, alpha: float, seed):
    """CutMix (Yun et al. 2019) on a batch, with probability ``prob``.

    One box per batch, centre uniform, clipped; the box is pasted from a random
    permutation of the batch. Returns ``x, (y_a, y_b, lam)`` where ``lam`` (shape
    ``(B,)``) is the unpasted area fraction recomputed from the clipped box (1 when
    not applied): the loss is ``lam * L(y_a) + (1 - lam) * L(y_b)``.
    """
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    s = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
    apply = tf.random.stateless_uniform([], s[0]) < prob
    box_h, box_w = cutmix_box(h, w, sample_beta(s[1], alpha))
    box_h, box_w = tf.where(apply, box_h, 0), tf.where(apply, box_w, 0)
    mask = box_mask(h, w, _uniform_int(s[2], [], h), _uniform_int(s[3], [], w), box_h, box_w)
    perm = tf.argsort(tf.random.stateless_uniform([b], s[4]))
    mixed = tf.where(mask[..., None], tf.gather(x, perm), x)
    area = tf.reduce_sum(tf.cast(mask, tf.float32))
    lam = 1.0 - area / tf.cast(h * w, tf.float32)
    return mixed, (y, tf.gather(y, perm), tf.fill([b], lam))


def augment_batch(x, y, seed, aug: Augmentation):
    """Apply ``aug`` to one batch: flip, pad-crop, Cutout, then CutMix.

    Returns ``(x, y)``, or ``(x, (y_a, y_b, lam))`` when CutMix is on.
    """
    s = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    if aug.crop_padding:
        x = random_crop(x, aug.crop_padding, s[1], flip=aug.flip)
    elif aug.flip:
        x = random_flip(x, s[0])
    if aug.cutout:
        x = cutout(x, aug.cutout, s[2])
    if aug.cutmix:
        return cutmix(x, y, aug.cutmix_prob, aug.cutmix_alpha, s[3])
    return x, y
