"""What the tuned baseline costs: ``compare`` against ``compare_tuned`` side by side.

    .venv/bin/python benchmarks/comparison.py [--runs 5] [--tuning-seeds 2] [--repeats 2]

The comparison step of ``taylorglo run``'s default job: Appendix C's MNIST loss
(``taylor.PAPER_MNIST_THETA``) against cross-entropy on the embedded digits with
the ``tiny`` model at its recipe's full length (300 steps), ``--runs`` runs per
side, the loss scale measured. Each repeat times the plain comparison and the
tuned one (the default grid 0.3x..30x, ``--tuning-seeds`` per multiplier), each
with a fresh ``Evaluator`` as ``taylorglo run`` has, alternating which goes first.
It prints wall and process CPU time (all threads; other jobs on a shared machine
disturb it much less than wall time) per mode, the medians and the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def measure(mode: str, runs: int, tuning_seeds: int) -> dict:
    from taylorglo_tf import compare, losses, taylor
    from taylorglo_tf.training import Evaluator, Task

    loss = losses.TaylorGLOLoss(taylor.PAPER_MNIST_THETA)
    baseline = losses.get("cross_entropy")
    task = Task(dataset="digits", model="tiny", steps=0, seed=0)
    trainings = []
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    common = {"measure_loss_scale": True, "evaluator": Evaluator(), "on_run": trainings.append}
    if mode == "plain":
        result = compare.compare(loss, baseline, task, runs, **common)
        chosen = "-"
    else:
        result = compare.compare_tuned(
            loss,
            baseline,
            task,
            runs,
            tuning_seeds=tuning_seeds,
            on_tuning_run=lambda *args: trainings.append(args),
            **common,
        )
        chosen = f"x{result.baseline_lr.chosen:g}"
    return {
        "mode": mode,
        "wall_s": time.perf_counter() - started_wall,
        "cpu_s": time.process_time() - started_cpu,
        "trainings": len(trainings),
        "chosen": chosen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tuning-seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for repeat in range(args.repeats):
        order = ("plain", "tuned") if repeat % 2 == 0 else ("tuned", "plain")
        for mode in order:
            row = measure(mode, args.runs, args.tuning_seeds)
            rows.append(row)
            print(
                f"repeat {repeat + 1} {mode:<6} wall {row['wall_s']:7.1f} s  cpu {row['cpu_s']:7.1f} s  "
                f"trainings {row['trainings']:3d}  chosen {row['chosen']}",
                flush=True,
            )
    medians = {
        mode: {key: statistics.median(r[key] for r in rows if r["mode"] == mode) for key in ("wall_s", "cpu_s")}
        for mode in ("plain", "tuned")
    }
    print(f"\n{'mode':<8} {'wall (median)':>14} {'cpu (median)':>14}")
    for mode, median in medians.items():
        print(f"{mode:<8} {median['wall_s']:>12.1f} s {median['cpu_s']:>12.1f} s")
    print(
        f"{'tuned/plain':<8} {medians['tuned']['wall_s'] / medians['plain']['wall_s']:>13.2f}x "
        f"{medians['tuned']['cpu_s'] / medians['plain']['cpu_s']:>13.2f}x"
    )


if __name__ == "__main__":
    main()
