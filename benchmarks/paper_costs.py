"""What each experiment of the paper costs here: one partial evaluation and one full training.

    python benchmarks/paper_costs.py [--steps 4] [--only NAME ...] [--json OUT.json] [--gpus 1,4,20]
    python benchmarks/paper_costs.py --from-json OUT.json [MORE.json ...] [--gpus 1,4,20]   # tables, no measuring

For every distinct model and image shape among the presets in docs/examples/paper/
it times, on this machine, training steps at the recipe's batch size and the
validation pass, with the preset's own task (model, augmentation, loss form),
on random data of the real image shape and class count (an ``npz:`` file of
1,024 training and 512 validation images: step time does not depend on the
values or on the split size). One evaluator, one seed (so the model, the
pipeline and the compiled step are reused, as in a trainer): a first evaluation
compiles and is not counted; then a 1-step and a ``1 + --steps``-step evaluation;
seconds per step = the difference of their step-loop times / ``--steps`` (wall,
and process CPU time, which other jobs on a shared machine disturb less).

It then extrapolates, per preset, and says so in the table:

- partial evaluation = steps x (seconds per step) + validation images x
  (seconds per validation image) + per-candidate set-up (measured);
- full training = the recipe's full length in steps x (seconds per step) + the
  test pass;
- search = population x generations x partial evaluation (one worker);
- comparison = 2 x 10 full trainings (one worker).

Data loading and TFDS preparation are not included (one-off per trainer).

A second table estimates the wall-clock time of a whole experiment (search, then
the 2 x 10 comparison) on N GPUs. It is not measured: it starts from the paper's
Table 3 (GTX 1080Ti, 20 concurrent candidates, 50 generations: one evaluation
takes hours / 50) and scales by the preset's evaluation and full-training steps
against the 10% evaluation Table 3 assumes. Models missing from Table 3
(basic_cnn) are scaled from AlexNet's by the measured CPU seconds per step.
N workers run a generation's candidates in ceil(population / N) rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESETS = ROOT / "docs" / "examples" / "paper"
# Appendix A split sizes: train, validation, test.
SPLITS = {
    "mnist": (55_000, 5_000, 10_000),
    "cifar10": (45_000, 5_000, 10_000),
    "cifar100": (45_000, 5_000, 10_000),
    "svhn_cropped": (47_225, 26_032, 26_032),
}
SHAPES = {
    "mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "svhn_cropped": ((32, 32, 3), 10),
}
BENCH_TRAIN, BENCH_VAL = 1024, 512
COMPARE_RUNS = 10
MEASURED = ("step_s", "step_cpu_s", "val_image_s", "setup_s", "cold_start_s", "measured_steps", "measured_with")
# Paper Table 3: hours for 50 generations of 20 concurrent candidates on GTX 1080Ti GPUs
# (10% evaluations on CIFAR-10), so one evaluation takes hours / 50.
TABLE3_HOURS = {
    "alexnet": 3.60,
    "preact_resnet20": 9.26,
    "allcnn_c": 17.06,
    "pyramidnet_110_48": 73.86,
    "wide_resnet_28_5": 42.90,
    "wide_resnet_16_8": 36.08,
}
TABLE3_GENERATIONS = 50
CIFAR10_STEPS_PER_EPOCH = 45_000 // 128


def fake_npz(directory: Path, dataset: str) -> str:
    (shape, classes) = SHAPES[dataset]
    path = directory / f"{dataset}.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        arrays = {}
        for split, n in (("train", BENCH_TRAIN), ("val", BENCH_VAL), ("test", BENCH_VAL)):
            arrays[f"x_{split}"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
            arrays[f"y_{split}"] = rng.integers(0, classes, n)
        np.savez(path, **arrays)
    return f"npz:{path}"


def measure(spec, directory: Path, steps: int) -> dict:
    """Seconds per training step, per validation image and per-candidate set-up, for the spec's task."""
    from taylorglo_tf.losses import TaylorGLOLoss
    from taylorglo_tf.training import Evaluator, Task

    dataset = spec.task.dataset.removeprefix("tfds:")
    task = Task.from_proto(spec.task, None).replace(dataset=fake_npz(directory, dataset), fraction=1.0)
    loss = TaylorGLOLoss.from_loss("cross_entropy", order=spec.loss.order, inputs=tuple(spec.loss.inputs))
    evaluator = Evaluator()
    started = time.perf_counter()
    evaluator.evaluate(loss, task.replace(steps=1))  # builds, traces, compiles: not counted
    cold_s = time.perf_counter() - started
    evaluator.evaluate(loss, task.replace(steps=1))
    one = dict(evaluator.last_timings)
    result = evaluator.evaluate(loss, task.replace(steps=1 + steps))
    more = evaluator.last_timings
    assert result.steps == 1 + steps, result
    return {
        "step_s": (more["train_steps_s"] - one["train_steps_s"]) / steps,
        "step_cpu_s": (more["train_steps_cpu_s"] - one["train_steps_cpu_s"]) / steps,
        "val_image_s": more["validation_s"] / BENCH_VAL,
        "setup_s": max(0.0, more["total_s"] - more["train_steps_s"] - more["validation_s"]),
        "cold_start_s": cold_s,
        "measured_steps": steps,
    }


def extrapolate(spec, cost: dict) -> dict:
    from taylorglo_tf import models

    dataset = spec.task.dataset.removeprefix("tfds:")
    train, val, test = SPLITS[dataset]
    train = int(train * (spec.task.train_fraction or 1.0))
    recipe = models.recipe(spec.task.model, spec.task.dataset)
    batch = spec.task.batch_size or recipe.batch_size
    full_steps = recipe.total_steps(recipe.steps_per_epoch(train, batch))
    partial_s = spec.task.steps * cost["step_s"] + val * cost["val_image_s"] + cost["setup_s"]
    full_s = full_steps * cost["step_s"] + test * cost["val_image_s"]
    search_s = spec.search.population * spec.search.generations * partial_s
    return {
        "partial_steps": spec.task.steps,
        "full_steps": full_steps,
        "partial_s": partial_s,
        "full_s": full_s,
        "search_s": search_s,
        "comparison_s": 2 * COMPARE_RUNS * full_s,
        "evaluations": spec.search.population * spec.search.generations,
        "population": spec.search.population,
        "generations": spec.search.generations,
    }


def table3_evaluation_s(row: dict, by_model: dict) -> tuple[float, str]:
    """Seconds of one 10%-of-CIFAR-10 evaluation on a GTX 1080Ti (paper Table 3), and how it was got."""
    from taylorglo_tf import models

    model = row["model"]
    if model in TABLE3_HOURS:
        return TABLE3_HOURS[model] * 3600 / TABLE3_GENERATIONS, "Table 3"
    # Not in Table 3: AlexNet's time per step, scaled by the CPU step-time ratio.
    alexnet = models.recipe("alexnet")
    alexnet_steps = alexnet.epochs * CIFAR10_STEPS_PER_EPOCH // 10
    alexnet_step_s = TABLE3_HOURS["alexnet"] * 3600 / TABLE3_GENERATIONS / alexnet_steps
    ratio = row["step_s"] / by_model["alexnet"]["step_s"]
    return alexnet_step_s * ratio * row["partial_steps"], "AlexNet x CPU ratio"


def gpu_estimates(rows: list[dict], gpus: list[int]) -> list[dict]:
    from taylorglo_tf import models

    by_model = {row["model"]: row for row in rows}
    out = []
    for row in rows:
        if row["model"] not in TABLE3_HOURS and "alexnet" not in by_model:
            continue
        base_s, how = table3_evaluation_s(row, by_model)
        if how == "Table 3":  # Table 3 timed 10% evaluations: scale to this preset's length
            recipe = models.recipe(row["model"])
            table3_steps = recipe.epochs * CIFAR10_STEPS_PER_EPOCH // 10
            step_s = base_s / table3_steps
        else:
            step_s = base_s / row["partial_steps"]
        evaluation_s, full_s = step_s * row["partial_steps"], step_s * row["full_steps"]
        estimate = {"preset": row["preset"], "how": how, "evaluation_s": evaluation_s, "full_s": full_s}
        for n in gpus:
            rounds = -(-row["population"] // n)
            comparison_rounds = -(-2 * COMPARE_RUNS // n)
            estimate[n] = row["generations"] * rounds * evaluation_s + comparison_rounds * full_s
        out.append(estimate)
    return out


def cost_key(spec) -> tuple:
    """Presets that differ only in augmentation, data fraction, loss order or search share a step cost
    (measured with the first such preset: augmentation and the loss are a few batch-wide ops)."""
    dataset = spec.task.dataset.removeprefix("tfds:")
    return spec.task.model, SHAPES[dataset]


def human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per model (default 4)")
    parser.add_argument("--only", nargs="*", default=None, help="preset names (default: all)")
    parser.add_argument("--json", help="also write the measurements and extrapolations as JSON")
    parser.add_argument(
        "--from-json",
        nargs="+",
        metavar="JSON",
        help="print the tables of earlier --json runs, measuring nothing; a model measured "
        "in a later file replaces an earlier file's measurement, and every preset of that "
        "model is extrapolated from it",
    )
    parser.add_argument("--gpus", default="1,4,20", help="GPU counts for the estimate table (default 1,4,20)")
    args = parser.parse_args(argv)
    gpus = [int(n) for n in args.gpus.split(",")]

    if args.from_json:
        rows = rows_from_json(args.from_json)
    else:
        rows = measure_all(args.steps, args.only)
        if args.json:
            Path(args.json).write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2, default=str))
    print_tables(rows, gpus)
    return 0


def rows_from_json(paths: list[str]) -> list[dict]:
    """Every preset's row from the measurements in ``paths`` (later files win, per model and shape)."""
    from taylorglo_tf import spec as spec_module

    measured: dict[tuple, dict] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["rows"]:
            spec = spec_module.load_spec(PRESETS / f"{row['preset']}.yaml")
            measured[cost_key(spec)] = {key: row[key] for key in MEASURED if key in row}
    rows = []
    for preset in sorted(PRESETS.glob("*.yaml")):
        spec = spec_module.load_spec(preset)
        cost = measured.get(cost_key(spec))
        if cost is not None:
            rows.append({"preset": preset.stem, "model": spec.task.model, **cost, **extrapolate(spec, cost)})
    return rows


def measure_all(steps: int, only) -> list[dict]:
    from taylorglo_tf import spec as spec_module

    presets = {p.stem: spec_module.load_spec(p) for p in sorted(PRESETS.glob("*.yaml"))}
    if only:
        presets = {name: presets[name] for name in only}
    costs: dict[tuple, dict] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in presets.items():
            key = cost_key(spec)
            if key not in costs:
                print(f"measuring {name} ({spec.task.model}, {key[1][0]}) ...", file=sys.stderr, flush=True)
                costs[key] = {**measure(spec, Path(tmp), steps), "measured_with": name}
            rows.append({"preset": name, "model": spec.task.model, **costs[key], **extrapolate(spec, costs[key])})
    return rows


def paper_cell(preset: str) -> str:
    from taylorglo_tf import spec as spec_module

    paper = spec_module.load_spec(PRESETS / f"{preset}.yaml").paper

    def number(value: float) -> str:
        return f"{value:.4f}" if value else "-"

    p = f" ({paper.p_value:.3g})" if paper.p_value else ""
    return f"{number(paper.taylorglo)} / {number(paper.baseline)}{p}"


def print_tables(rows: list[dict], gpus: list[int]) -> None:
    print("CPU, measured here (s/step) and extrapolated (the rest):\n")
    print(
        f"| preset | s/step wall (CPU) | partial evaluation | full training | search, 1 worker | "
        f"comparison 2x{COMPARE_RUNS}, 1 worker |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['preset']} | {row['step_s']:.3f} ({row.get('step_cpu_s', float('nan')):.3f}) | "
            f"{human(row['partial_s'])} ({row['partial_steps']} steps) | "
            f"{human(row['full_s'])} ({row['full_steps']} steps) | {human(row['search_s'])} "
            f"({row['evaluations']} evaluations) | {human(row['comparison_s'])} |"
        )
    print(
        "\nOne line per experiment: the paper's row, the CPU costs measured here, and the whole experiment "
        "(search + comparison) on N GPUs estimated from the paper's Table 3:\n"
    )
    print(
        "| experiment (docs/examples/paper/) | paper: TaylorGLO / cross-entropy (p) | CPU: partial evaluation | "
        "CPU: full training | GPU here | " + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in gpus) + " |"
    )
    print("|---|---|---|---|---|" + "---|" * len(gpus))
    estimates = {est["preset"]: est for est in gpu_estimates(rows, gpus)}
    for row in rows:
        est = estimates.get(row["preset"])
        print(
            f"| {row['preset']} | {paper_cell(row['preset'])} | {human(row['partial_s'])} | {human(row['full_s'])} | "
            "not available | " + " | ".join(human(est[n]) if est else "-" for n in gpus) + " |"
        )
    print("\nGPU (GTX 1080Ti), estimated from the paper's Table 3, whole experiment (search + comparison):\n")
    print(
        "| preset | from | evaluation | full training | "
        + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in gpus)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(gpus))
    for est in gpu_estimates(rows, gpus):
        print(
            f"| {est['preset']} | {est['how']} | {human(est['evaluation_s'])} | {human(est['full_s'])} | "
            + " | ".join(human(est[n]) for n in gpus)
            + " |"
        )


if __name__ == "__main__":
    sys.exit(main())
