"""A registered user model against the same model as a zoo entry, side by side: candidate-steps/s.

    python benchmarks/user_model.py [--model basic_cnn] [--dataset digits] [--candidates 4]
                                    [--steps 40] [--rounds 10] [--json FILE]

The user side registers ``models.build(MODEL, ...)`` with the zoo recipe's optimizer
and the dataset's arrays under ``script:bench`` (``training.sources.register``); the
zoo side is ``Task(model=MODEL, dataset=DATASET)``. Both train through one
``Evaluator`` (two warm sessions), the same batch size and ``--candidates`` per
step. Each round times ``Evaluator.step_rate`` (after a warm-up step) on both, the
two taking turns going first, so a round's ratio resists slow drifts of other
jobs' load; the spread across rounds is this machine's noise.

Printed: per round the user/zoo ratio of candidate-steps per second (1.0 = the
same speed), by wall time and per CPU second of the process (all threads, which
other jobs on a shared machine move less), their medians and ranges.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="basic_cnn")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from taylorglo_tf import data, models, runtime

    runtime.set_tensorflow_defaults()  # what a trainer runs with
    from taylorglo_tf.training import Evaluator, Task, sources

    splits = data.load(args.dataset)
    recipe = models.recipe(args.model, args.dataset)
    spe = recipe.steps_per_epoch(len(splits.y_train), recipe.batch_size)
    sources.register(
        "script:bench",
        lambda: models.build(args.model, splits.input_shape, splits.num_classes, **dict(recipe.model_options)),
        lambda: recipe.optimizer(spe),
        train=(splits.x_train, splits.y_train),
        validation=(splits.x_val, splits.y_val),
    )
    common = {"steps": args.steps, "batch_size": recipe.batch_size, "augmentation": {}, "abort_threshold": 0.0}
    tasks = {
        "zoo": Task(dataset=args.dataset, model=args.model, **common),
        "user": Task(dataset="script:bench", model="script:bench", **common),
    }
    evaluator = Evaluator(max_sessions=2)
    for task in tasks.values():  # open both sessions and trace both steps before timing
        evaluator.step_rate(task, args.candidates, steps=2)
    rounds = []
    for number in range(args.rounds):
        order = ("zoo", "user") if number % 2 == 0 else ("user", "zoo")
        rates = {}
        for side in order:
            cpu = time.process_time()
            rates[side] = evaluator.step_rate(tasks[side], args.candidates, steps=args.steps)
            # per CPU second of this process (all threads; the warm-up step included): other jobs' load moves it less
            rates[f"{side}_cpu"] = args.candidates * (args.steps + 1) / (time.process_time() - cpu)
        rates["ratio"] = rates["user"] / rates["zoo"]
        rates["cpu_ratio"] = rates["user_cpu"] / rates["zoo_cpu"]
        rounds.append(rates)
        print(
            f"round {number + 1}: zoo {rates['zoo']:.1f}, user {rates['user']:.1f} candidate-steps/s, "
            f"user/zoo {rates['ratio']:.3f} (per CPU second {rates['cpu_ratio']:.3f})",
            flush=True,
        )
    ratios = [r["ratio"] for r in rounds]
    cpu_ratios = [r["cpu_ratio"] for r in rounds]
    summary = {
        "model": args.model,
        "dataset": args.dataset,
        "candidates": args.candidates,
        "steps": args.steps,
        "median_ratio": statistics.median(ratios),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "median_cpu_ratio": statistics.median(cpu_ratios),
        "min_cpu_ratio": min(cpu_ratios),
        "max_cpu_ratio": max(cpu_ratios),
        "median_zoo": statistics.median(r["zoo"] for r in rounds),
        "median_user": statistics.median(r["user"] for r in rounds),
        "rounds": rounds,
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(
        f"user/zoo candidate-steps/s: median {summary['median_ratio']:.3f} "
        f"(range {summary['min_ratio']:.3f}-{summary['max_ratio']:.3f}, {args.rounds} rounds); per CPU second "
        f"median {summary['median_cpu_ratio']:.3f} ({summary['min_cpu_ratio']:.3f}-{summary['max_cpu_ratio']:.3f})"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
