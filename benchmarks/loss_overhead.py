"""Overhead of TaylorGLOLoss vs Keras CategoricalCrossentropy, measured side by side in one run.

1. Train step (forward + backward + SGD update) of the same model with each loss
   (and with mean squared error as a reference), interleaved round by round;
   median CPU time per step and the ratios to cross-entropy.
2. The loss op alone on a 1024 x 100 batch: value, and value + gradient w.r.t.
   the predictions, as a compiled tf.function (graph) and with XLA.

Usage: python benchmarks/loss_overhead.py [--rounds 15] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from taylorglo_tf import models, taylor
from taylorglo_tf.losses import TaylorGLOLoss

MNIST_THETA = list(taylor.PAPER_MNIST_THETA)


def basic_cnn() -> keras.Model:
    """The GLO MNIST CNN of the model zoo: the model TaylorGLO's MNIST results use."""
    return models.build("basic_cnn", (28, 28, 1), 10)


def small_mlp() -> keras.Model:
    """A deliberately cheap model, so that the loss is a larger share of the step."""
    return keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )


def timed(fn, steps: int) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` per call, over ``steps`` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        result = fn()
    np.asarray(result)  # wait for the last step
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def interleaved(fns: dict, rounds: int, steps: int) -> dict[str, float]:
    """Median wall and CPU seconds per call of each function, and median per-round ratios.

    The functions alternate round by round (order reversed every other round), so
    load from other processes on the shared machine hits both alike. Each round's
    TaylorGLO/cross-entropy ratio is taken before the median. CPU time (all threads
    of this process) is the steadier measure on a loaded machine: other processes
    lengthen wall time but not the work this process does.
    """
    for fn in fns.values():
        timed(fn, 3)  # trace / compile / warm up
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for name in order:
            samples[name].append(timed(fns[name], steps))
    result = {}
    for k, kind in enumerate(("wall", "cpu")):
        for name, values in samples.items():
            result[f"{name}_{kind}"] = statistics.median(v[k] for v in values)
            pairs = zip(values, samples["cross_entropy"])
            result[f"{name}_ratio_{kind}"] = statistics.median(t[k] / c[k] for t, c in pairs)
    return result


def train_step_times(builder, input_shape, batch: int, jit: bool, rounds: int, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *input_shape)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=batch)]
    candidates = {
        "cross_entropy": keras.losses.CategoricalCrossentropy(),
        "taylorglo": TaylorGLOLoss(MNIST_THETA),
        # reference: any loss on probabilities misses the fused softmax-cross-entropy kernel Keras uses for CE
        "mse": keras.losses.MeanSquaredError(),
    }
    fns = {}
    for name, loss in candidates.items():
        keras.utils.set_random_seed(0)
        model = builder()
        # learning rate 0 keeps both models identical across rounds (the work per step is unchanged)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss, jit_compile=jit)
        fns[name] = lambda model=model: model.train_on_batch(x, y)
    return interleaved(fns, rounds, steps)


def loss_op_times(batch: int, classes: int, jit: bool, with_grad: bool, rounds: int, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    y_pred = tf.constant(rng.dirichlet(np.ones(classes), size=batch).astype(np.float32))
    y_true = tf.constant(np.eye(classes, dtype=np.float32)[rng.integers(0, classes, size=batch)])
    fns = {}
    for name, loss in (
        ("cross_entropy", keras.losses.CategoricalCrossentropy()),
        ("taylorglo", TaylorGLOLoss(MNIST_THETA)),
    ):

        def value_and_grad(loss=loss):
            with tf.GradientTape() as tape:
                tape.watch(y_pred)
                value = loss(y_true, y_pred)
            return tape.gradient(value, y_pred)

        body = value_and_grad if with_grad else (lambda loss=loss: loss(y_true, y_pred))
        fns[name] = tf.function(body, jit_compile=jit, autograph=False)
    return interleaved(fns, rounds, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per comparison (median taken)")
    parser.add_argument("--steps", type=int, default=20, help="calls per round")
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )
    print(
        f"rounds={args.rounds}, steps per round={args.steps}. "
        "CE: Keras cross-entropy, TG: TaylorGLO, MSE: mean squared error."
    )
    print(
        "Times: median CPU time per call. "
        "Ratios: median of per-round ratios to CE, by CPU time (TG also by wall time).\n"
    )
    header = f"{'measurement':<42} {'unit':>4} {'CE cpu':>9} {'TG cpu':>9} {'TG/CE':>7} {'(wall)':>8} {'MSE/CE':>9}"
    print(header)
    print("-" * len(header))
    models = (
        ("train step, basic CNN, batch 100", basic_cnn, (28, 28, 1), 100),
        ("train step, MLP 784-128-10, batch 128", small_mlp, (784,), 128),
    )
    for label, builder, shape, batch in models:
        steps = max(2, args.steps // 4) if builder is basic_cnn else args.steps  # the CNN step is ~100x the MLP's
        for jit in (False, True):
            print_row(
                f"{label}{', XLA' if jit else ''}", train_step_times(builder, shape, batch, jit, args.rounds, steps)
            )
    for with_grad in (False, True):
        for jit in (False, True):
            label = f"loss op 1024x100{' + gradient' if with_grad else ''}{', XLA' if jit else ''}"
            print_row(label, loss_op_times(1024, 100, jit, with_grad, args.rounds, args.steps * 5))


def print_row(label: str, times: dict[str, float]) -> None:
    unit, scale = ("ms", 1e3) if times["cross_entropy_cpu"] > 1e-3 else ("us", 1e6)
    mse = f"{times['mse_ratio_cpu']:>9.3f}" if "mse_cpu" in times else f"{'':>9}"
    print(
        f"{label:<42} {unit:>4} {times['cross_entropy_cpu'] * scale:>9.3f} {times['taylorglo_cpu'] * scale:>9.3f} "
        f"{times['taylorglo_ratio_cpu']:>7.3f} {times['taylorglo_ratio_wall']:>8.3f} {mse}",
        flush=True,
    )


if __name__ == "__main__":
    main()
