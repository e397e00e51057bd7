"""Input pipeline throughput: ``data.pipeline`` vs a per-example tf.data pipeline, and vs training.

Measured side by side in one process, on in-memory arrays shaped like the paper's
datasets (random values; throughput does not depend on them):

- ``per-example``: the textbook pipeline, ``from_tensor_slices -> cache ->
  shuffle -> batch`` with per-image augmentation (``tf.image`` flip, pad, random
  crop) mapped before batching;
- ``data.pipeline``: this project's (shuffled indices -> batch -> one gather per
  batch -> vectorised batch augmentation -> prefetch);
- ``train step``: one optimizer step of the model the pipeline feeds (compiled
  ``tf.function``, cross-entropy), for the "pipeline is not the bottleneck" ratio.

Rates are batches per second. ``pipeline / train`` > 1 means the pipeline
outruns training by that factor (it also runs in parallel with it, via prefetch).

A second table times the start-up (building the pipeline and fetching its first
batch), which a trainer pays once per candidate, on full-size training splits:
``shuffle buffer`` is the earlier formulation (arrays copied into a constant,
``Dataset.range(n).shuffle(n)`` fills a buffer of every index before the first
batch), ``arrays`` is ``data.pipeline`` given NumPy arrays (one copy, a stateless
permutation per epoch), ``tensors`` is ``data.pipeline`` over tensors converted once
(what ``training.Evaluator`` does). Rounds interleave the three; medians.

    python benchmarks/pipeline.py            # full
    python benchmarks/pipeline.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

from taylorglo_tf import data, models
from taylorglo_tf.data import Augmentation

AUTOTUNE = tf.data.AUTOTUNE


def per_example_pipeline(x, y, batch_size: int, seed: int, augment: Augmentation):
    """The common per-example formulation (flip/crop only), for comparison."""
    h, w = x.shape[1:3]
    pad = augment.crop_padding

    def aug(image, label):
        if augment.flip:
            image = tf.image.random_flip_left_right(image)
        if pad:
            image = tf.image.resize_with_crop_or_pad(image, h + 2 * pad, w + 2 * pad)
            image = tf.image.random_crop(image, (h, w, x.shape[3]))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment.active:
        ds = ds.map(aug, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def batches_per_second(ds, batches: int) -> float:
    it = iter(ds.repeat())
    for _ in range(5):  # warm-up: tracing, first shuffle buffer fill
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - start)


def shuffle_buffer_pipeline(x, y, batch_size: int, seed: int):
    """The earlier start-up path: copy the arrays, shuffle a buffer of all indices, gather."""
    images, labels = tf.constant(np.asarray(x, np.float32)), tf.constant(np.asarray(y, np.int32))
    ds = tf.data.Dataset.range(len(x)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=AUTOTUNE)


def startup_seconds(build, rounds: int) -> list[float]:
    """Seconds from building a pipeline to holding its first batch, per round."""
    times = []
    for seed in range(rounds):
        start = time.perf_counter()
        next(iter(build(seed)))
        times.append(time.perf_counter() - start)
    return times


def startup_table(rng, rounds: int) -> None:
    header = ("training split", "shuffle buffer ms", "arrays ms", "tensors ms", "buffer / tensors")
    table = [header]
    for setting, n, shape, batch in (
        ("MNIST 55,000 x 28x28x1", 55_000, (28, 28, 1), 100),
        ("CIFAR-10 45,000 x 32x32x3", 45_000, (32, 32, 3), 128),
    ):
        x = rng.normal(size=(n, *shape)).astype(np.float32)
        y = rng.integers(0, 10, n).astype(np.int32)
        held = data.as_tensors(x, y)
        variants = {
            "buffer": lambda seed, x=x, y=y, batch=batch: shuffle_buffer_pipeline(x, y, batch, seed),
            "arrays": lambda seed, x=x, y=y, batch=batch: data.pipeline(
                x, y, batch_size=batch, training=True, seed=seed
            ),
            "tensors": lambda seed, held=held, batch=batch: data.pipeline(
                *held, batch_size=batch, training=True, seed=seed
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):  # interleaved, so the machine's slow phases hit all three
            for name, build in variants.items():
                times[name] += startup_seconds(build, 1)
        med = {name: 1000 * float(np.median(t)) for name, t in times.items()}
        table.append(
            (
                setting,
                f"{med['buffer']:.1f}",
                f"{med['arrays']:.1f}",
                f"{med['tensors']:.1f}",
                f"{med['buffer'] / med['tensors']:.0f}x",
            )
        )
    print_table(table)


def print_table(table) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def train_steps_per_second(model_name, shape, classes, batch_size, steps) -> float:
    model = models.build(model_name, shape, classes)
    optimizer = models.recipe(model_name).optimizer(100)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
    x = tf.random.normal((batch_size, *shape))
    y = tf.random.uniform((batch_size,), 0, classes, dtype=tf.int32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)) + tf.add_n(model.losses or [0.0])
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step().numpy()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few batches (smoke test)")
    args = parser.parse_args()
    batches = 20 if args.quick else 200
    steps = 3 if args.quick else 20
    rng = np.random.default_rng(0)
    flip_crop = Augmentation(flip=True, crop_padding=2)
    full = Augmentation(flip=True, crop_padding=2, cutout=16, cutmix_prob=0.5)
    cases = [
        # (setting, model, shape, classes, examples, batch, augmentations)
        (
            "CIFAR-10",
            "preact_resnet20",
            (32, 32, 3),
            10,
            20_000,
            128,
            [("none", Augmentation()), ("flip+crop", flip_crop), ("flip+crop+cutout+cutmix", full)],
        ),
        ("MNIST", "basic_cnn", (28, 28, 1), 10, 20_000, 100, [("none", Augmentation())]),
        ("digits", "tiny", (8, 8, 1), 10, 1_197, 32, [("none", Augmentation())]),
    ]
    rows = []
    for setting, model_name, shape, classes, n, batch, augs in cases:
        x = rng.normal(size=(n, *shape)).astype(np.float32)
        y = rng.integers(0, classes, n).astype(np.int32)
        train = train_steps_per_second(model_name, shape, classes, batch, steps)
        for aug_name, aug in augs:
            ours = batches_per_second(
                data.pipeline(x, y, batch_size=batch, training=True, augment=aug, seed=0), batches
            )
            if aug.cutmix or aug.cutout:
                naive = float("nan")  # no per-example formulation of batch-level CutMix
            else:
                naive = batches_per_second(per_example_pipeline(x, y, batch, 0, aug), batches)
            rows.append((setting, model_name, batch, aug_name, naive, ours, ours / naive, train, ours / train))
    header = (
        "data",
        "model",
        "batch",
        "augmentation",
        "per-example b/s",
        "data.pipeline b/s",
        "speed-up",
        "train steps/s",
        "pipeline/train",
    )
    print_table(
        [header]
        + [
            (
                r[0],
                r[1],
                str(r[2]),
                r[3],
                f"{r[4]:.1f}",
                f"{r[5]:.1f}",
                "-" if np.isnan(r[6]) else f"{r[6]:.1f}x",
                f"{r[7]:.2f}",
                f"{r[8]:.0f}x",
            )
            for r in rows
        ]
    )
    print()
    startup_table(rng, 2 if args.quick else 7)


if __name__ == "__main__":
    main()
