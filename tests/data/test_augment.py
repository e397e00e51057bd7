"""Input pipelines and augmentation: order, determinism, flip/crop, Cutout and CutMix geometry."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from taylorglo_tf import data  # noqa: E402
from taylorglo_tf.data import augment_ops as ops  # noqa: E402
from taylorglo_tf.data.augmentation import Augmentation  # noqa: E402


def _indexed_images(n, h=8, w=8, c=1):
    """Image i is filled with the value i + 1 (so every pixel tells its source)."""
    x = np.broadcast_to(np.arange(1, n + 1, dtype=np.float32)[:, None, None, None], (n, h, w, c))
    return np.ascontiguousarray(x), np.arange(n, dtype=np.int32) % 10


def _seed(a=1, b=2):
    return tf.constant([a, b], dtype=tf.int64)


# ----------------------------------------------------------- Augmentation


def test_augmentation_is_off_by_default_and_round_trips():
    assert not Augmentation().active and not Augmentation().cutmix
    aug = Augmentation(flip=True, crop_padding=2, cutout=16, cutmix_prob=0.5, cutmix_alpha=1.0)
    assert Augmentation.from_dict(aug.to_dict()) == aug
    assert Augmentation.from_dict(None) == Augmentation()
    assert Augmentation.from_dict({"cutout": 8}) == Augmentation(cutout=8)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"flips": True}, "flips"),
        ({"cutout": -1}, "cutout"),
        ({"crop_padding": 1.5}, "crop_padding"),
        ({"cutmix_prob": 1.5}, "cutmix_prob"),
        ({"cutmix_alpha": 0}, "cutmix_alpha"),
        ({"flip": "yes"}, "flip"),
    ],
)
def test_bad_augmentation_options_are_errors_naming_them(options, field):
    with pytest.raises(ValueError, match=field):
        Augmentation.from_dict(options)


# ----------------------------------------------------------------- pipeline


def test_evaluation_pipeline_yields_every_example_in_order():
    x, y = _indexed_images(10)
    batches = list(data.pipeline(x, y, batch_size=4, training=False))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_training_pipeline_shuffles_deterministically_and_reshuffles_each_epoch():
    x, y = _indexed_images(10)

    def epochs(seed):
        ds = data.pipeline(x, y, batch_size=4, training=True, seed=seed).repeat(2)
        return [b[0][:, 0, 0, 0].numpy() for b in ds]

    a, b, c = epochs(5), epochs(5), epochs(6)
    assert [len(batch) for batch in a] == [4, 4, 4, 4]  # partial batches dropped
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    first, second = np.concatenate(a[:2]), np.concatenate(a[2:])
    assert not np.array_equal(first, second)  # a new order in the second epoch
    assert len(set(first)) == 8  # no example repeated within an epoch


def test_pipelines_over_converted_tensors_reuse_them_and_match_the_arrays():
    x, y = _indexed_images(10)
    images, labels = data.as_tensors(x, y)
    again = data.as_tensors(images, labels)
    assert again[0] is images and again[1] is labels  # no second copy

    def order(xs, ys):
        return [b[0][:, 0, 0, 0].numpy() for b in data.pipeline(xs, ys, batch_size=4, training=True, seed=2)]

    np.testing.assert_array_equal(order(images, labels), order(x, y))


def test_training_set_smaller_than_a_batch_still_yields_one_batch():
    x, y = _indexed_images(3)
    (batch,) = list(data.pipeline(x, y, batch_size=8, training=True))
    assert len(batch[1]) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
    ],
)
def test_bad_pipeline_arguments_are_errors_naming_them(kwargs, match):
    x, y = _indexed_images(4)
    with pytest.raises(ValueError, match=match):
        data.pipeline(x, y, training=True, **kwargs)


def test_augmented_pipeline_is_deterministic_given_the_seed():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 10, 16).astype(np.int32)
    aug = Augmentation(flip=True, crop_padding=2, cutout=3, cutmix_prob=0.5)

    def run(seed):
        return [
            (b[0].numpy(), b[1][2].numpy())
            for b in data.pipeline(x, y, batch_size=4, training=True, augment=aug, seed=seed)
        ]

    first, again, other = run(3), run(3), run(4)
    for (xa, la), (xb, lb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(la, lb)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_evaluation_pipeline_never_augments():
    x, y = _indexed_images(6)
    aug = Augmentation(flip=True, crop_padding=2, cutout=4, cutmix_prob=1.0)
    ((xb, yb),) = list(data.pipeline(x, y, batch_size=6, training=False, augment=aug))
    np.testing.assert_array_equal(xb, x)
    np.testing.assert_array_equal(yb, y)


# ------------------------------------------------------------ flip and crop


def test_flip_mirrors_some_images_and_leaves_the_rest():
    x = np.random.default_rng(1).normal(size=(64, 5, 6, 2)).astype(np.float32)
    out = ops.random_flip(tf.constant(x), _seed()).numpy()
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
    same = [np.array_equal(o, i) for o, i in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 16 <= sum(flipped) <= 48


def test_pad_crop_is_a_window_of_the_zero_padded_image_at_every_offset():
    p = 2
    x = np.random.default_rng(2).normal(size=(200, 6, 7, 1)).astype(np.float32) + 5.0
    out = ops.random_crop(tf.constant(x), p, _seed()).numpy()
    padded = np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
    offsets = set()
    for o, pad in zip(out, padded):
        hits = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if np.array_equal(o, pad[dy : dy + 6, dx : dx + 7])
        ]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert offsets == {(dy, dx) for dy in range(5) for dx in range(5)}  # uniform over all 25


def test_combined_flip_and_crop_is_a_window_of_the_padded_image_or_its_mirror():
    p = 1
    x = np.random.default_rng(3).normal(size=(100, 5, 6, 2)).astype(np.float32) + 5.0
    out = ops.random_crop(tf.constant(x), p, _seed(), flip=True).numpy()
    padded = np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
    mirrored = 0
    for o, pad in zip(out, padded):
        windows = [
            (m, dy, dx)
            for m in (False, True)
            for dy in range(3)
            for dx in range(3)
            if np.array_equal(o, (pad[:, ::-1] if m else pad)[dy : dy + 5, dx : dx + 6])
        ]
        assert len(windows) == 1
        mirrored += windows[0][0]
    assert 25 <= mirrored <= 75


# ------------------------------------------------------------------ Cutout


@pytest.mark.parametrize(
    "cy, cx, length, rows, cols",
    [
        (4, 4, 4, (2, 6), (2, 6)),  # inside: length x length
        (0, 0, 4, (0, 2), (0, 2)),  # corner: clipped to a quarter
        (7, 3, 4, (5, 8), (1, 5)),  # bottom edge: 3 rows left
        (4, 4, 3, (3, 6), (3, 6)),  # odd length: [c - 1, c + 2)
        (0, 9, 16, (0, 8), (1, 10)),  # longer than the image: clipped both ways
    ],
)
def test_box_mask_is_the_clipped_box_around_the_centre(cy, cx, length, rows, cols):
    mask = ops.box_mask(8, 10, tf.constant([cy]), tf.constant([cx]), length, length).numpy()[0]
    expected = np.zeros((8, 10), bool)
    expected[rows[0] : rows[1], cols[0] : cols[1]] = True
    np.testing.assert_array_equal(mask, expected)


def test_cutout_zeroes_one_clipped_square_per_image():
    length, n = 4, 300
    x = np.ones((n, 9, 9, 2), np.float32)
    out = ops.cutout(tf.constant(x), length, _seed()).numpy()
    areas = set()
    for o in out:
        hole = o[..., 0] == 0
        np.testing.assert_array_equal(hole, o[..., 1] == 0)  # all channels together
        rows, cols = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
        assert hole.sum() == len(rows) * len(cols)  # one rectangle
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        assert 1 <= len(rows) <= length and 1 <= len(cols) <= length
        # unclipped sides are exactly `length`; clipped ones touch the border
        assert len(rows) == length or rows[0] == 0 or rows[-1] == 8
        assert len(cols) == length or cols[0] == 0 or cols[-1] == 8
        areas.add(int(hole.sum()))
    assert length * length in areas and min(areas) <= 4  # centres near corners occur


# ------------------------------------------------------------------ CutMix


def test_cutmix_box_sides_follow_the_target_lambda():
    h, w = ops.cutmix_box(32, 32, tf.constant(0.75))
    assert (int(h), int(w)) == (16, 16)  # sqrt(1 - 0.75) = 0.5
    h, w = ops.cutmix_box(10, 20, tf.constant(0.0))
    assert (int(h), int(w)) == (10, 20)


def test_beta_samples_have_the_beta_moments():
    draws = np.array([float(ops.sample_beta(_seed(i, 7), 1.0)) for i in range(400)])
    assert np.all((draws > 0) & (draws < 1))
    assert abs(draws.mean() - 0.5) < 0.05 and abs(draws.var() - 1 / 12) < 0.02


def test_cutmix_pastes_one_box_and_lambda_is_the_unpasted_area():
    n, h, w = 16, 12, 10
    x, _ = _indexed_images(n, h=h, w=w)
    y = np.arange(n, dtype=np.int32)  # label i <-> image i (pixel value i + 1)
    seen_partial = False
    for s in range(40):
        mixed, (y_a, y_b, lam) = ops.cutmix(tf.constant(x), tf.constant(y), 1.0, 1.0, _seed(s, 3))
        source = mixed.numpy()[..., 0].astype(int) - 1  # which image each pixel came from
        y_a, y_b, lam = y_a.numpy(), y_b.numpy(), lam.numpy()
        np.testing.assert_array_equal(y_a, y)
        assert sorted(y_b) == list(range(n))  # a permutation of the batch
        assert lam.shape == (n,) and np.all(lam == lam[0])
        box = (source != y[:, None, None]).any(axis=0)  # pasted anywhere in the batch
        for i in range(n):  # inside the box: the partner y_b[i]; outside: itself
            assert np.all(source[i][box] == y_b[i]) and np.all(source[i][~box] == i)
        area = int(box.sum())
        if area:  # one rectangle
            rows, cols = np.nonzero(box.any(axis=1))[0], np.nonzero(box.any(axis=0))[0]
            assert area == len(rows) * len(cols)
        # the loss weight: exactly the fraction of each image left unpasted (clipped box)
        assert lam[0] == pytest.approx(1.0 - area / (h * w), abs=1e-6)
        seen_partial |= 0 < area < h * w
    assert seen_partial


def test_cutmix_applies_with_the_given_probability_per_batch():
    x, y = _indexed_images(4)
    cutmix = tf.function(ops.cutmix)  # traced once per probability, seeds as tensors

    def lam(prob, s):
        return float(cutmix(tf.constant(x), tf.constant(y), prob, 1.0, _seed(s, 9))[1][2][0])

    applied = sum(lam(0.5, s) < 1.0 for s in range(200))
    assert 70 <= applied <= 130
    assert [lam(0.0, s) for s in range(20)] == [1.0] * 20


def test_cutmix_pipeline_yields_two_label_sets_and_a_per_example_weight():
    x, y = _indexed_images(12)
    ds = data.pipeline(x, y, batch_size=4, training=True, augment=Augmentation(cutmix_prob=0.5))
    for xb, (y_a, y_b, lam) in ds:
        assert xb.shape == (4, 8, 8, 1) and y_a.shape == y_b.shape == lam.shape == (4,)
        assert lam.dtype == tf.float32 and y_a.dtype == tf.int32
    xb, yb = next(iter(data.pipeline(x, y, batch_size=4, training=True, augment=Augmentation(flip=True))))
    assert yb.shape == (4,)  # without CutMix: plain (x, y)


def test_cutout_lengths_per_dataset_are_the_papers():
    assert data.CUTOUT_LENGTH == {"cifar10": 16, "cifar100": 8, "svhn_cropped": 20}
