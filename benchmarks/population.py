"""Evaluations per hour against K: K candidates one after another vs K trained together.

    python benchmarks/population.py [--models basic_cnn,preact_resnet20] [--k 1,2,4,8,16,32]
                                    [--steps 8] [--val 500] [--jit off] [--mixed-precision]
                                    [--rounds 1] [--sequential-max M] [--json FILE]

For each model and K, one ``Evaluator`` (one per XLA setting) evaluates K
candidates (``TaylorGLOLoss`` with the paper's MNIST theta scaled by 0.8..1.2)
*sequentially* (``evaluate`` K times) and *batched* (one ``evaluate_many``), each
after an untimed 10-step warm-up at that K (compilation is paid once per trainer,
not per candidate), the two taking turns from round to round. Both do exactly the same
work per candidate: ``--steps`` training steps and the validation pass over
``--val`` images. Evaluations per hour = K / elapsed seconds x 3600, by wall
time and by process CPU time (all threads; on a machine shared with other jobs
CPU time is the steadier of the two, wall time is what a lone machine delivers).

Memory per candidate: the bytes of one candidate's state (weights and optimizer
slots, what every extra slot adds), and on a GPU the peak device memory of the
batched run divided by K. The process's peak resident memory after each K (the
K grow, so each row's peak is its K's batched run or an earlier one) shows what
activations add on a CPU.

On a shared machine, read the K=1 row first: both sides do identical work there,
so its ratio is the measurement's bias. Each round's ratio (its two sides run back
to back) is kept; their median, with the load average before and after each K,
is printed next to the totals.

Data: random arrays of the model's shape written to a temporary ``.npz``:
MNIST (28x28x1, batch 100) for ``basic_cnn``, CIFAR-10 (32x32x3, batch 128) for
the others; 5,000 training images (only the order matters here) and ``--val``
validation images.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from evaluation import print_table

from taylorglo_tf import runtime, taylor

runtime.set_tensorflow_defaults()  # what a trainer runs with (oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set)

PAPER_THETA = np.array(taylor.PAPER_MNIST_THETA)
SHAPES = {"basic_cnn": ((28, 28, 1), 100)}  # anything else: CIFAR-10 shape, batch 128
CIFAR = ((32, 32, 3), 128)


def dataset_for(model: str, val: int, folder: str) -> tuple[str, int]:
    """A random ``npz:`` dataset of the model's benchmark shape, and its batch size."""
    shape, batch = SHAPES.get(model, CIFAR)
    path = Path(folder) / f"{model}_{'x'.join(map(str, shape))}_{val}.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        arrays = {}
        for split, count in (("train", 5_000), ("val", val), ("test", 100)):
            arrays[f"x_{split}"] = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
            arrays[f"y_{split}"] = rng.integers(0, 10, count)
        np.savez(path, **arrays)
    return f"npz:{path}", batch


def clock() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])


def candidate_losses(k: int):
    from taylorglo_tf.losses import TaylorGLOLoss

    return [TaylorGLOLoss(PAPER_THETA * scale) for scale in np.linspace(0.8, 1.2, k)]


def state_bytes_per_candidate(evaluator) -> int:
    """Weights and optimizer slots of one population slot."""
    session = next(reversed(evaluator._sessions.values()))
    population = session.population
    variables = list(population.models[0].variables) + list(population.optimizers[0].variables)
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables))


def device_peak_bytes() -> int | None:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def reset_device_peak() -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")


def measure(evaluator, task, k: int, rounds: int, sequential_max: int | None) -> dict:
    """Seconds (wall, CPU) and counts of evaluations, sequential and batched, summed over the rounds.

    Sequential evaluations per hour do not depend on K, so ``sequential_max``
    may cap how many are timed per round (long GPU evaluations). ``round_ratios``
    are each round's batched/sequential evaluations per hour, (wall, CPU): the two
    sides of a round run back to back, so their median resists another job's burst.
    """
    warm_up = task.replace(steps=min(task.steps, 10))  # same session: compilation is not per candidate
    evaluator.evaluate(candidate_losses(1)[0], warm_up)
    evaluator.evaluate_many(candidate_losses(k), warm_up)
    spent = {"sequential": np.zeros(2), "batched": np.zeros(2)}
    counts = {"sequential": 0, "batched": 0}
    statuses = {"sequential": [], "batched": []}
    round_ratios = []
    peak = None
    for round_index in range(rounds):
        order = ("sequential", "batched") if round_index % 2 == 0 else ("batched", "sequential")
        rates = {}
        for mode in order:
            losses = candidate_losses(k)
            if mode == "batched":
                reset_device_peak()
            started = clock()
            if mode == "sequential":
                results = [evaluator.evaluate(loss, task) for loss in losses[:sequential_max]]
            else:
                results = evaluator.evaluate_many(losses, task)
                peak = device_peak_bytes()
            seconds = clock() - started
            spent[mode] += seconds
            counts[mode] += len(results)
            rates[mode] = len(results) / seconds
            statuses[mode] += [r.status for r in results]
        round_ratios.append(rates["batched"] / rates["sequential"])
    agree = statuses["sequential"] == statuses["batched"][: len(statuses["sequential"])]
    return {
        "spent": spent,
        "counts": counts,
        "statuses_agree": agree,
        "peak": peak,
        "round_ratios": np.array(round_ratios),
    }


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (host memory; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="basic_cnn,preact_resnet20")
    parser.add_argument("--k", default="1,2,4,8,16,32", help="candidates per step to measure")
    parser.add_argument("--steps", type=int, default=8, help="training steps per evaluation (default: 8)")
    parser.add_argument("--val", type=int, default=500, help="validation images (default: 500)")
    parser.add_argument("--jit", default="off", help="XLA settings: off, on or off,on (default: off)")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 models")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds per K (default: 1)")
    parser.add_argument(
        "--sequential-max",
        type=int,
        metavar="M",
        help="time at most M sequential evaluations per K and round (default: K)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    if args.mixed_precision:
        import keras

        keras.mixed_precision.set_global_policy("mixed_float16")
    from taylorglo_tf.training import Evaluator, Task

    devices = [d.name for d in tf.config.list_physical_devices("GPU")] or ["CPU"]
    print(
        f"devices {devices}; {args.steps} steps and {args.val} validation images per evaluation; "
        f"mixed precision {'on' if args.mixed_precision else 'off'}; "
        f"{runtime.ONEDNN_ENV}={os.environ[runtime.ONEDNN_ENV]}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            dataset, batch = dataset_for(model, args.val, folder)
            # A threshold of 0 keeps the abort rule out of the timing.
            task = Task(dataset=dataset, model=model, steps=args.steps, batch_size=batch, seed=0, abort_threshold=0.0)
            for jit in args.jit.split(","):
                evaluator = Evaluator(jit_compile=jit.strip() == "on")
                for k in [int(k) for k in args.k.split(",")]:
                    load_before = os.getloadavg()[0]
                    m = measure(evaluator, task, k, args.rounds, args.sequential_max)
                    seq, bat = m["spent"]["sequential"], m["spent"]["batched"]
                    n_seq, n_bat = m["counts"]["sequential"], m["counts"]["batched"]
                    row = {
                        "model": model,
                        "xla": jit.strip(),
                        "k": k,
                        "batch": batch,
                        "steps": args.steps,
                        "sequential_per_hour": 3600 * n_seq / seq[0],
                        "batched_per_hour": 3600 * n_bat / bat[0],
                        "sequential_per_cpu_hour": 3600 * n_seq / seq[1],
                        "batched_per_cpu_hour": 3600 * n_bat / bat[1],
                        "state_mb_per_candidate": state_bytes_per_candidate(evaluator) / 2**20,
                        "device_peak_mb_per_candidate": None if m["peak"] is None else m["peak"] / 2**20 / k,
                        "median_round_ratio_wall": float(np.median(m["round_ratios"][:, 0])),
                        "median_round_ratio_cpu": float(np.median(m["round_ratios"][:, 1])),
                        "process_peak_rss_mb": peak_rss_mb(),
                        "load_average": [load_before, os.getloadavg()[0]],
                        "statuses_agree": m["statuses_agree"],
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print()
    print_table(
        [
            "model",
            "XLA",
            "K",
            "sequential evals/h",
            "batched evals/h",
            "batched/sequential (wall)",
            "batched/sequential (CPU)",
            "median round ratio (wall)",
            "state MB/candidate",
            "process peak RSS MB",
            "device peak MB/candidate",
            "load average",
        ],
        [
            [
                r["model"],
                r["xla"],
                str(r["k"]),
                f"{r['sequential_per_hour']:.0f}",
                f"{r['batched_per_hour']:.0f}",
                f"{r['batched_per_hour'] / r['sequential_per_hour']:.2f}",
                f"{r['batched_per_cpu_hour'] / r['sequential_per_cpu_hour']:.2f}",
                f"{r['median_round_ratio_wall']:.2f}",
                f"{r['state_mb_per_candidate']:.1f}",
                f"{r['process_peak_rss_mb']:.0f}",
                "-" if r["device_peak_mb_per_candidate"] is None else f"{r['device_peak_mb_per_candidate']:.0f}",
                "{:.1f}-{:.1f}".format(*r["load_average"]),
            ]
            for r in rows
        ],
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
