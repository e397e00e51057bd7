"""Early stopping against none, side by side: training steps, time, and the found loss's quality.

    python benchmarks/early_stopping.py [--tasks default,protocol] [--rules successive_halving,median]
                                        [--runs 10] [--trainers 2] [--protocol-generations 16]
                                        [--search-seeds 1,2,3] [--workdir DIR] [--json FILE]
    python benchmarks/early_stopping.py --narrowing 6 [--rounds 6]
    python benchmarks/early_stopping.py --checkpoint-cost 8 [--rounds 6]

For each task, one ``taylorglo run`` per rule (``none`` first, then each of
``--rules``) on the same spec and seeds, the same trainer layout (``--trainers``
trainers of ``population / trainers`` candidates per step: the fleet holds a whole
generation) and the same machine, one after another. Each run's cost: the training
steps its candidates trained (``candidates.csv``'s ``steps``, summed), its wall time,
its steady time (from generation 0's end to the last one's: without the processes'
start-up and the first traces of the train step, which early stopping adds: one per
width of a narrowed step) and the CPU seconds of its processes. Its quality: the best validation fitness, and
the found loss's test accuracy over ``--runs`` full trainings (seeds 0..runs-1),
against the loss found without early stopping: a one-tailed Welch test of
H1 "the loss found without early stopping is better" (``p > 0.05``: not significantly
worse). With ``--search-seeds``, each seed's searches and found losses, then every seed's
runs pooled per rule, for one more test: one search per rule says which of two losses is
better, not whether the rule finds worse losses.

``--narrowing K``: how a batch of K candidates trained together goes on when half of them
stop: the step narrowed to the K/2 still training (what the population loop does: a
stopped copy's update is skipped and the step covers copies up to the last one
training) against the step of K (the freed slots given new candidates), in
candidate-steps per second, the two taking turns for ``--rounds`` rounds.

``--checkpoint-cost K``: what a checkpoint's validation pass costs against a train step:
K candidates of the default task (tiny CNN, digits, 200 steps) trained together with the
rules' checkpoints, CPU seconds per pass and per step (``Evaluator.last_timings``), and
the passes' share of the training time, medians over ``--rounds`` evaluations.

Tasks: ``default`` is the README's search (``taylorglo run`` without a spec: digits,
tiny CNN, 12 x 12 evaluations of 200 steps; full trainings of the recipe's 300 steps);
``protocol`` is docs/examples/mnist-protocol-digits.yaml (the paper's MNIST protocol
scaled: lambda 28, 16 generations of 200 steps; full trainings of 2,000 steps), with
``--protocol-generations`` generations (default 8; docs/BENCHMARKS.md ran 16).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]
PROTOCOL_SPEC = REPO / "docs" / "examples" / "mnist-protocol-digits.yaml"


def task_spec(task: str, rule: str, protocol_generations: int, seed: int | None) -> tuple[dict[str, Any], int]:
    """(spec, full-training steps) of a benchmark task with early-stopping rule ``rule``."""
    import yaml

    from taylorglo_tf.commands.run import DEFAULT_SPEC

    if task == "default":
        spec = json.loads(json.dumps(DEFAULT_SPEC))
        full_steps = 300  # the tiny recipe's length: what `taylorglo run` compares at
    else:
        spec = yaml.safe_load(PROTOCOL_SPEC.read_text())
        spec.pop("paper", None)
        spec["search"]["generations"] = protocol_generations
        full_steps = 2000  # the protocol's --compare-steps
    spec["name"] = f"{spec['name']}-{rule}"
    spec["search"]["early_stopping"] = rule
    if seed is not None:
        spec["search"]["seed"] = seed
    return spec, full_steps


def run_search(spec: dict[str, Any], out: Path, trainers: int) -> dict[str, Any]:
    """One ``taylorglo run`` without the comparison: its cost and what it found."""
    out.mkdir(parents=True)
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps(spec))
    per_step = max(1, -(-spec["search"]["population"] // trainers))
    command = [
        sys.executable,
        "-m",
        "taylorglo_tf",
        "run",
        str(spec_file),
        "--out",
        str(out / "result"),
        "--trainers",
        str(trainers),
        "--candidates-per-step",
        str(per_step),
        "--compare-runs",
        "0",
        "--db",
        str(out / "search.db"),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out / "result" / "candidates.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best = json.loads((out / "result" / "best_theta.json").read_text())
    with open(out / "result" / "history.csv", newline="") as f:
        finished = [datetime.datetime.fromisoformat(row["finish_time"]) for row in csv.DictReader(f)]
    full_steps = spec["task"]["steps"] * len(rows)
    return {
        "training_steps": sum(int(row["steps"] or 0) for row in rows),
        "steps_without_stopping": full_steps,
        "stopped": sum(row["status"] == "stopped" for row in rows),
        "candidates": len(rows),
        "wall_s": wall,
        # generation 0's end to the last one's: the search without start-up and first traces
        "steady_s": (finished[-1] - finished[0]).total_seconds(),
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "best_fitness": best["fitness"],
        "best_theta": best["theta"],
    }


def test_accuracies(spec: dict[str, Any], runs: dict[str, dict[str, Any]], full_steps: int, count: int) -> dict:
    """Each rule's found loss trained ``count`` times in full; Welch test of none's against each other."""
    from taylorglo_tf import compare, taylor
    from taylorglo_tf.losses import TaylorGLOLoss
    from taylorglo_tf.training import Task

    task = Task(dataset=spec["task"]["dataset"], model=spec["task"]["model"], steps=full_steps, seed=0)
    order, inputs = spec["loss"]["order"], tuple(spec["loss"]["inputs"])
    assert taylor.expected_theta_length(order, inputs) == len(runs["none"]["best_theta"])

    def loss(rule: str) -> Any:
        return TaylorGLOLoss(runs[rule]["best_theta"], order=order, inputs=inputs)

    quality = {}
    for rule in runs:
        if rule == "none":
            continue
        result = compare.compare(loss("none"), loss(rule), task, count, loss_name="none", baseline_name=rule)
        quality[rule] = {
            "none_test_accuracy": result.summaries["loss"].mean,
            "none_test_std": result.summaries["loss"].std,
            "test_accuracy": result.summaries["baseline"].mean,
            "test_std": result.summaries["baseline"].std,
            "p_none_better": result.welch.pvalue,
            "accuracies": result.accuracies("baseline"),
            "none_accuracies": result.accuracies("loss"),
        }
    return quality


def narrowing(k: int, rounds: int, steps: int = 30) -> dict[str, Any]:
    """Candidate-steps/s of the tiny digits step with all K copies training, and with the first
    K/2 (the rest stopped: narrowed) or every other one (stopped in the middle of the batch)."""
    import numpy as np

    from taylorglo_tf import taylor
    from taylorglo_tf.losses import TaylorGLOLoss
    from taylorglo_tf.training import Evaluator, Task
    from taylorglo_tf.training.evaluator import batch_loss

    task = Task(dataset="digits", model="tiny", steps=200, seed=0)
    evaluator = Evaluator()
    session = evaluator._session(task)
    compiled = session.steps_for([TaylorGLOLoss(taylor.PAPER_MNIST_THETA) for _ in range(k)], batch_loss)
    batches = session.train_batches(task.seed)
    masks = {
        f"all {k}": np.ones(k, dtype=bool),
        f"first {k // 2} (narrowed)": np.arange(k) < k // 2,
        f"every other, {k // 2}": np.arange(k) % 2 == 0,
    }
    for active in masks.values():  # traces each width once
        x, y = next(batches)
        compiled.train_step(x, y, active).numpy()
    rates: dict[str, list[float]] = {name: [] for name in masks}
    for round_number in range(rounds):
        order = list(masks.items()) if round_number % 2 == 0 else list(reversed(masks.items()))
        for name, active in order:
            started = time.process_time()
            for _ in range(steps):
                x, y = next(batches)
                compiled.train_step(x, y, active).numpy()
            rates[name].append(int(active.sum()) * steps / (time.process_time() - started))
    import statistics

    return {name: statistics.median(values) for name, values in rates.items()}


def checkpoint_cost(k: int, rounds: int) -> dict[str, float]:
    """CPU seconds of a checkpoint's validation pass and of a train step, K candidates together."""
    import statistics

    from taylorglo_tf import taylor
    from taylorglo_tf.coordinator import early_stopping
    from taylorglo_tf.losses import TaylorGLOLoss
    from taylorglo_tf.training import Evaluator, Task

    task = Task(dataset="digits", model="tiny", steps=200, seed=0)
    evaluator = Evaluator()
    losses = [TaylorGLOLoss(taylor.PAPER_MNIST_THETA) for _ in range(k)]
    hooks = [lambda index, steps, accuracy: None] * k
    evaluator.evaluate_many(losses, task, checkpoints=early_stopping.CHECKPOINTS, on_checkpoint=hooks)  # traces
    per_pass, per_step, share = [], [], []
    for _ in range(rounds):
        evaluator.evaluate_many(losses, task, checkpoints=early_stopping.CHECKPOINTS, on_checkpoint=hooks)
        timings = evaluator.last_timings
        per_pass.append(timings["checkpoint_cpu_s"] / timings["checkpoint_passes"])
        per_step.append(timings["train_steps_cpu_s"] / task.steps)
        share.append(timings["checkpoint_cpu_s"] / (timings["checkpoint_cpu_s"] + timings["train_steps_cpu_s"]))
    result = {
        "candidates": k,
        "pass_cpu_ms": 1000 * statistics.median(per_pass),
        "step_cpu_ms": 1000 * statistics.median(per_step),
        "share_of_training": statistics.median(share),
    }
    result["pass_in_steps"] = result["pass_cpu_ms"] / result["step_cpu_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="default,protocol")
    parser.add_argument("--rules", default="successive_halving,median")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--trainers", type=int, default=2)
    parser.add_argument("--protocol-generations", type=int, default=8)
    parser.add_argument("--search-seeds", default="", help="comma-separated CMA-ES seeds (default: the spec's)")
    parser.add_argument("--workdir", default=None, help="keep each run's folder here (default: a temporary one)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--narrowing", type=int, default=0, metavar="K")
    parser.add_argument("--checkpoint-cost", type=int, default=0, metavar="K")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if args.checkpoint_cost:
        cost = checkpoint_cost(args.checkpoint_cost, args.rounds)
        print(
            f"K={cost['candidates']}: a checkpoint pass {cost['pass_cpu_ms']:.1f} ms CPU, a train step"
            f" {cost['step_cpu_ms']:.1f} ms ({cost['pass_in_steps']:.1f} steps); the passes are"
            f" {100 * cost['share_of_training']:.1f}% of the training's CPU time"
        )
        if args.json:
            Path(args.json).write_text(json.dumps({"checkpoint_cost": cost}, indent=2) + "\n")
        return
    if args.narrowing:
        measured = narrowing(args.narrowing, args.rounds)
        for name, rate in measured.items():
            print(f"{name:24} {rate:8.0f} candidate-steps per CPU second")
        if args.json:
            Path(args.json).write_text(json.dumps({"narrowing": measured}, indent=2) + "\n")
        return
    rules = ["none", *args.rules.split(",")]
    seeds: list[int | None] = [int(seed) for seed in args.search_seeds.split(",")] if args.search_seeds else [None]
    report: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        for task in args.tasks.split(","):
            report[task] = {}
            pooled: dict[str, list[float]] = {rule: [] for rule in rules}
            for seed in seeds:
                runs = {}
                for rule in rules:
                    spec, full_steps = task_spec(task, rule, args.protocol_generations, seed)
                    runs[rule] = run_search(spec, work / task / f"seed-{seed}" / rule, args.trainers)
                    r, none = runs[rule], runs["none"]
                    print(
                        f"{task:8} seed {seed} {rule:18} steps {r['training_steps']:7}"
                        f" ({r['training_steps'] / none['training_steps']:.2f}x none)"
                        f"  stopped {r['stopped']:3}/{r['candidates']}  wall {r['wall_s']:6.1f} s"
                        f" ({r['wall_s'] / none['wall_s']:.2f}x)  steady {r['steady_s']:6.1f} s"
                        f" ({r['steady_s'] / none['steady_s']:.2f}x)  cpu {r['cpu_s']:6.1f} s"
                        f"  best val {r['best_fitness']:.4f}",
                        flush=True,
                    )
                quality = test_accuracies(spec, runs, full_steps, args.runs) if args.runs >= 2 else {}
                if quality:  # none's found loss, trained once per seed: the same runs in every rule's test
                    pooled["none"] += next(iter(quality.values()))["none_accuracies"]
                for rule, q in quality.items():
                    pooled[rule] += q["accuracies"]
                    print(
                        f"{task:8} seed {seed} {rule:18} test {q['test_accuracy']:.4f} +- {q['test_std']:.4f}"
                        f" vs none {q['none_test_accuracy']:.4f} +- {q['none_test_std']:.4f}"
                        f"  p(none better) {q['p_none_better']:.3f}",
                        flush=True,
                    )
                none = runs["none"]
                report[task][f"seed-{seed}"] = {
                    rule: {
                        **run,
                        "steps_ratio": run["training_steps"] / none["training_steps"],
                        "wall_ratio": run["wall_s"] / none["wall_s"],
                        "steady_ratio": run["steady_s"] / none["steady_s"],
                        "cpu_ratio": run["cpu_s"] / none["cpu_s"],
                        **quality.get(rule, {}),
                    }
                    for rule, run in runs.items()
                }
            if len(seeds) > 1 and args.runs >= 2:
                report[task]["pooled"] = pooled_tests(task, pooled)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def pooled_tests(task: str, pooled: dict[str, list[float]]) -> dict[str, Any]:
    """Every seed's found loss, all runs together: Welch test of none's against each rule's."""
    import statistics

    from taylorglo_tf import stats

    result = {}
    for rule, accuracies in pooled.items():
        if rule == "none":
            continue
        welch = stats.welch_t_test(pooled["none"], accuracies)
        result[rule] = {"mean": statistics.mean(accuracies), "none_mean": statistics.mean(pooled["none"])}
        result[rule]["p_none_better"] = welch.pvalue
        print(
            f"{task:8} pooled {rule:18} test {result[rule]['mean']:.4f} vs none {result[rule]['none_mean']:.4f}"
            f" over {len(accuracies)} runs  p(none better) {welch.pvalue:.3f}",
            flush=True,
        )
    return result


if __name__ == "__main__":
    main()
