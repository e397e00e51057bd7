"""Candidate-evaluation benchmark: per-candidate overhead, XLA on/off, input pipeline vs training.

    .venv/bin/python benchmarks/evaluation.py [--dataset URI] [--model basic_cnn]
                                              [--steps 200] [--candidates 3] [--jit off,on]

For each XLA setting one ``Evaluator`` evaluates a cold first candidate and then
``--candidates`` consecutive candidates (different thetas of ``TaylorGLOLoss``) in
the same process, as a trainer does. Per evaluation it splits the wall time into
the training steps (the step loop, batch fetches included) and the overhead:
everything else (model re-initialisation, optimizer reset, pipeline rebuild and
start-up, final validation), by wall time and by process CPU time (all threads;
other jobs on a shared machine disturb it much less than wall time). Then it
times the training input pipeline alone (batches/s, plain and with augmentation)
against training steps/s.

Data: Debian's Fashion-MNIST (``idx:/usr/share/datasets/fashion-mnist``, MNIST
shapes and sizes) when installed, else MNIST-shaped random arrays written to a
temporary ``.npz`` (55,000 / 5,000 / 10,000).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

from taylorglo_tf import taylor

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
PAPER_THETA = np.array(taylor.PAPER_MNIST_THETA)


def _other_share(row: dict) -> float:
    """The share of a candidate's wall time spent neither training nor validating."""
    return (row["total_s"] - row["train_s"] - row["validation_s"]) / row["total_s"]


def default_dataset(tmp: str) -> str:
    if (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        return f"idx:{FASHION_MNIST}"
    rng = np.random.default_rng(0)
    path = Path(tmp) / "mnist_shaped.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (55_000, 28, 28, 1), dtype=np.uint8),
        y_train=rng.integers(0, 10, 55_000),
        x_val=rng.integers(0, 256, (5_000, 28, 28, 1), dtype=np.uint8),
        y_val=rng.integers(0, 10, 5_000),
        x_test=rng.integers(0, 256, (10_000, 28, 28, 1), dtype=np.uint8),
        y_test=rng.integers(0, 10, 10_000),
    )
    return f"npz:{path}"


def run_evaluations(dataset: str, model: str, steps: int, candidates: int, jit: bool) -> list[dict]:
    from taylorglo_tf.losses import TaylorGLOLoss
    from taylorglo_tf.training import Evaluator, Task

    evaluator = Evaluator(jit_compile=jit)
    task = Task(dataset=dataset, model=model, steps=steps, seed=0)
    rows = []
    scales = [1.0] + list(np.linspace(0.8, 1.2, candidates))
    for index, scale in enumerate(scales):
        result = evaluator.evaluate(TaylorGLOLoss(PAPER_THETA * scale), task)
        timing = evaluator.last_timings
        training = timing["train_steps_s"]
        rows.append(
            {
                "jit": "on" if jit else "off",
                "evaluation": "cold" if index == 0 else f"warm {index}",
                "status": result.status,
                "val_accuracy": result.val_accuracy,
                "total_s": timing["total_s"],
                "train_s": training,
                "steps_per_s": result.steps / training if training > 0 else float("nan"),
                "validation_s": timing["validation_s"],
                "other_s": timing["total_s"] - training - timing["validation_s"],
                "overhead": (timing["total_s"] - training) / timing["total_s"],
                "cpu_overhead": (timing["total_cpu_s"] - timing["train_steps_cpu_s"]) / timing["total_cpu_s"],
                "cpu_validation": timing["validation_cpu_s"] / timing["total_cpu_s"],
            }
        )
    rows[-1]["traces"] = evaluator.trace_count()
    return rows


def pipeline_rate(dataset: str, batch_size: int, batches: int, augmentation: dict) -> float:
    """Batches per second of the training input pipeline alone (after the first batch)."""
    from taylorglo_tf import data

    splits = data.load(dataset)
    stream = data.pipeline(
        splits.x_train,
        splits.y_train,
        batch_size=batch_size,
        training=True,
        augment=data.Augmentation.from_dict(augmentation),
        seed=0,
    ).repeat()
    iterator = iter(stream)
    next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - started)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="data URI (default: Fashion-MNIST idx, else MNIST-shaped random)")
    parser.add_argument("--model", default="basic_cnn")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=3, help="warm evaluations after the cold one")
    parser.add_argument("--jit", default="off,on", help="XLA settings to compare: off, on or off,on")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or default_dataset(tmp)
        from taylorglo_tf import models

        batch_size = models.recipe(args.model).batch_size
        print(
            f"dataset {dataset}, model {args.model}, {args.steps} steps of batch {batch_size}, "
            f"{args.candidates} warm candidates per setting"
        )
        rows = []
        for setting in args.jit.split(","):
            rows += run_evaluations(dataset, args.model, args.steps, args.candidates, setting.strip() == "on")
        print_table(
            [
                "XLA",
                "evaluation",
                "status",
                "val acc",
                "total s",
                "train s",
                "steps/s",
                "validation s",
                "other s",
                "overhead",
                "CPU overhead",
                "CPU validation",
            ],
            [
                [
                    r["jit"],
                    r["evaluation"],
                    r["status"],
                    f"{r['val_accuracy']:.4f}",
                    f"{r['total_s']:.2f}",
                    f"{r['train_s']:.2f}",
                    f"{r['steps_per_s']:.1f}",
                    f"{r['validation_s']:.3f}",
                    f"{r['other_s']:.3f}",
                    f"{100 * r['overhead']:.1f}%",
                    f"{100 * r['cpu_overhead']:.1f}%",
                    f"{100 * r['cpu_validation']:.1f}%",
                ]
                for r in rows
            ],
        )
        print()
        summary = []
        rates = {}
        for setting in sorted({r["jit"] for r in rows}):
            warm = [r for r in rows if r["jit"] == setting and r["evaluation"] != "cold"]
            rates[setting] = statistics.mean(r["steps_per_s"] for r in warm)
            summary.append(
                [
                    setting,
                    f"{100 * statistics.mean(r['overhead'] for r in warm):.2f}%",
                    f"{100 * statistics.mean(_other_share(r) for r in warm):.2f}%",
                    f"{100 * statistics.mean(r['cpu_overhead'] for r in warm):.2f}%",
                    f"{100 * statistics.mean(r['cpu_overhead'] - r['cpu_validation'] for r in warm):.2f}%",
                    f"{rates[setting]:.1f}",
                    str([r for r in rows if r["jit"] == setting][-1]["traces"]),
                ]
            )
        print_table(
            [
                "XLA",
                "warm overhead (mean)",
                "of which not validation",
                "CPU overhead (mean)",
                "CPU, not validation",
                "train steps/s",
                "traces",
            ],
            summary,
        )
        if {"on", "off"} <= set(rates):
            print(f"\nXLA on / off training steps/s ratio: {rates['on'] / rates['off']:.3f}")

        print()
        train_rate = rates.get("off", next(iter(rates.values())))
        pipeline_rows = []
        for label, augmentation in (
            ("plain", {}),
            (
                "flip + crop 2 + cutout 8 + CutMix 0.5",
                {"flip": True, "crop_padding": 2, "cutout": 8, "cutmix_prob": 0.5},
            ),
        ):
            rate = pipeline_rate(dataset, batch_size, 500, augmentation)
            pipeline_rows.append([label, f"{rate:.0f}", f"{train_rate:.1f}", f"{rate / train_rate:.0f}x"])
        print_table(["input pipeline", "batches/s alone", "train steps/s", "pipeline / training"], pipeline_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
