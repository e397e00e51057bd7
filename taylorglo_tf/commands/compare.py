"""``taylorglo compare``: train two losses N times each and compare test accuracy.

    taylorglo compare --loss LOSS.json [--baseline cross_entropy|baikal|poly1|LOSS.json]
                      --runs 10 [--task TASK.yaml] [--dataset D --model M --steps N ...]
                      [--tune-baseline-lr [--tune-loss-lr] [--lr-multipliers 0.3,1,3,10,30]]
                      [--json OUT.json]

Prints a table (mean and std of test accuracy per side, runs that trained), the
one-tailed Welch t-test p-value for "the loss beats the baseline" and the loss's
gradient scale relative to cross-entropy. With ``--tune-baseline-lr`` it first
chooses the baseline's learning rate on the validation split and prints a second
table against the baseline at that rate (``taylorglo_tf.compare.compare_tuned``).
No TensorFlow at import time (``taylorglo --help`` stays fast).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from taylorglo_tf.commands.arguments import EXIT_BAD_INPUT, EXIT_OK, finite_float, print_error
from taylorglo_tf.commands.quiet import import_tensorflow_quietly
from taylorglo_tf.compare import DEFAULT_LR_MULTIPLIERS, DEFAULT_TUNING_SEEDS, check_lr_multipliers

# CLI flag -> Task field; flags left out keep the task file's (or the default) value.
_TASK_FLAGS = {
    "dataset": "dataset",
    "model": "model",
    "steps": "steps",
    "batch_size": "batch_size",
    "fraction": "fraction",
    "seed": "seed",
    "lr_scale": "lr_scale",
    "data_dir": "data_dir",
    "attempts": "abort_attempts",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loss", required=True, help="candidate loss: a loss JSON file or a built-in name")
    parser.add_argument(
        "--baseline",
        default="cross_entropy",
        help="baseline loss: cross_entropy (default), baikal, poly1 or a loss JSON file",
    )
    parser.add_argument("--runs", type=int, default=10, help="training runs per side (>= 2; default 10)")
    parser.add_argument("--task", metavar="TASK.yaml", help="task file (YAML or JSON mapping of Task fields)")
    parser.add_argument("--dataset", help="data URI, e.g. digits, tfds:mnist, idx:DIR (default digits)")
    parser.add_argument("--model", help="model-zoo name (default tiny)")
    parser.add_argument("--steps", type=int, help="training steps per run; 0 = the recipe's full length (default)")
    parser.add_argument("--batch-size", type=int, help="batch size; 0 = the recipe's")
    parser.add_argument("--fraction", type=finite_float, help="fraction of the training split (0, 1]")
    parser.add_argument("--seed", type=int, help="seed of run 0 (run i uses seed + i on both sides)")
    parser.add_argument("--data-dir", help="dataset directory (TFDS data_dir)")
    parser.add_argument("--attempts", type=int, help="attempts per run under the abort rule")
    parser.add_argument(
        "--lr-scale", type=finite_float, help="multiplier of the recipe's learning rate for both sides (default 1)"
    )
    parser.add_argument(
        "--tune-baseline-lr",
        action="store_true",
        help="also compare against the baseline at its best learning rate, chosen on the "
        "validation split (never the test split)",
    )
    parser.add_argument(
        "--tune-loss-lr",
        action="store_true",
        help="tune the loss's learning rate the same way (implies --tune-baseline-lr)",
    )
    parser.add_argument(
        "--lr-multipliers",
        type=lr_multipliers,
        default=DEFAULT_LR_MULTIPLIERS,
        metavar="LIST",
        help="comma-separated multipliers of the task's learning rate tried when tuning "
        f"(default {','.join(f'{m:g}' for m in DEFAULT_LR_MULTIPLIERS)})",
    )
    parser.add_argument(
        "--tuning-seeds",
        type=int,
        default=DEFAULT_TUNING_SEEDS,
        metavar="N",
        help=f"training runs per multiplier when tuning (default {DEFAULT_TUNING_SEEDS})",
    )
    parser.add_argument("--json", metavar="OUT.json", help="also write the comparison as JSON")


def lr_multipliers(text: str) -> tuple[float, ...]:
    """argparse type of ``--lr-multipliers``: ``"0.3,1,3"`` -> ``(0.3, 1.0, 3.0)``, each positive and finite."""
    try:
        values = [float(part) for part in text.split(",")]
        return check_lr_multipliers(values)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def _read_task_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ValueError(f"task file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    import yaml

    try:
        # PyYAML reads JSON's 1e-3 as a string, so JSON files get the JSON parser.
        content = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(f"task file {path!r} cannot be parsed: {error}") from None
    if not isinstance(content, dict):
        raise ValueError(f"task file {path!r} must hold a mapping of Task fields, got {type(content).__name__}")
    return content


def build_task(args: argparse.Namespace):
    """The comparison's Task: defaults (full recipe), then the task file, then the flags."""
    from taylorglo_tf.training.task import Task

    fields: dict[str, Any] = {"steps": 0}
    if args.task:
        fields.update(_read_task_file(args.task))
    for flag, name in _TASK_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            fields[name] = value
    return Task.from_dict(fields)


def _loss_label(spec: str) -> str:
    return os.path.splitext(os.path.basename(spec))[0] if spec.endswith(".json") else spec


def _load_loss(spec: str, role: str):
    from taylorglo_tf import losses

    try:
        return losses.get(spec)
    except (ValueError, OSError, KeyError) as error:
        raise ValueError(f"--{role} {spec!r}: {error}") from error


def _print_table(console, comparison, title: str) -> None:
    from rich.table import Table

    table = Table(title=f"{title}: test accuracy over {len(comparison.accuracies('loss'))} runs per side")
    for column in ("side", "loss", "lr", "mean", "std", "trained"):
        table.add_column(column, justify="left" if column in ("side", "loss") else "right")
    names = {"loss": comparison.loss_name, "baseline": comparison.baseline_name}
    rates = comparison.to_dict()["learning_rates"]
    for side, summary in comparison.summaries.items():
        statuses = [r.status for r in comparison.records if r.side == side]
        table.add_row(
            side,
            names[side],
            f"{rates[side]:.4g} (x{comparison.lr_multipliers[side]:g})",
            f"{summary.mean:.4f}",
            f"{summary.std:.4f}",
            f"{statuses.count('ok')}/{len(statuses)}",
        )
    console.print(table)
    welch = comparison.welch
    console.print(
        f"one-tailed Welch t-test (H1: {comparison.loss_name} > {comparison.baseline_name}): "
        f"t = {welch.statistic:.4f}, df = {welch.df:.2f}, p = {welch.pvalue:.4g}",
        soft_wrap=True,
    )


def _print_tuning(console, choice, name: str) -> None:
    grid = ", ".join(f"x{m:g} {mean:.4f}" for m, mean in zip(choice.multipliers, choice.mean_scores()))
    console.print(
        f"{name} ({choice.side}): learning rate x{choice.chosen:g} = {choice.base_learning_rate * choice.chosen:.4g}, "
        f"chosen by mean validation accuracy over seeds {list(choice.seeds)}: {grid}",
        soft_wrap=True,
    )


def _print_result(console, result) -> None:
    tuned = getattr(result, "tuned", None)
    plain = result.plain if tuned is not None else result
    _print_table(console, plain, "At the task's learning rate")
    if tuned is not None:
        _print_tuning(console, result.baseline_lr, plain.baseline_name)
        if result.loss_lr is not None:
            _print_tuning(console, result.loss_lr, plain.loss_name)
        _print_table(console, tuned, "At the tuned learning rate(s)")
        console.print(result.verdict(), soft_wrap=True)
    scale = plain.loss_scale
    console.print(
        f"loss scale: {scale.ratio:.3g} x cross-entropy's gradient w.r.t. the logits at initialisation "
        f"(mean over {scale.examples} validation images; 1 = cross-entropy's scale)",
        soft_wrap=True,
    )


@dataclasses.dataclass(frozen=True)
class ComparisonOptions:
    """How a comparison trains: runs per side, and the learning-rate tuning (none unless asked for)."""

    runs: int
    tune_baseline_lr: bool = False
    tune_loss_lr: bool = False  # implies tuning the baseline's too
    lr_multipliers: tuple[float, ...] = DEFAULT_LR_MULTIPLIERS
    tuning_seeds: int = DEFAULT_TUNING_SEEDS

    @property
    def tuned(self) -> bool:
        return self.tune_baseline_lr or self.tune_loss_lr

    def tuning_runs(self) -> int:
        """Trainings of the learning-rate choice (0 without tuning)."""
        if not self.tuned:
            return 0
        return len(self.lr_multipliers) * self.tuning_seeds * (2 if self.tune_loss_lr else 1)


def train_and_compare(loss, baseline, task, options: ComparisonOptions, *, loss_name: str, baseline_name: str, console):
    """Trains both losses as ``options`` says, showing progress on ``console`` (a ``rich`` Console).

    The one comparison loop of ``taylorglo compare`` and ``taylorglo run``: returns
    a ``taylorglo_tf.compare.TunedComparison`` when tuning, else a ``Comparison``;
    both hold the loss's gradient scale relative to cross-entropy. ValueError or
    OSError: the dataset or the model cannot be opened (the message names it).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from taylorglo_tf import compare as comparison_module

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        # The tuned comparison retrains each side whose chosen rate is not 1: the total grows then.
        overall = bar.add_task("runs", total=options.tuning_runs() + 2 * options.runs)
        current = bar.add_task("steps", total=None)

        def on_steps(side: str, run_index: int, done: int, total: int) -> None:
            bar.update(current, description=f"run {run_index + 1} {side}", completed=done, total=total)

        def on_run(record) -> None:
            total = bar.tasks[overall].total or 0
            if bar.tasks[overall].completed >= total:
                bar.update(overall, total=total + 1)
            bar.advance(overall)
            console.print(
                f"run {record.run + 1} {record.side} (lr x{record.lr_scale:g}): test accuracy "
                f"{record.test_accuracy:.4f} ({record.status}, {record.wall_time_s:.1f} s)",
                soft_wrap=True,
            )

        def on_tuning_run(side: str, multiplier: float, seed: int, result) -> None:
            bar.advance(overall)
            console.print(
                f"tuning {side} lr x{multiplier:g}, seed {seed}: validation accuracy {result.val_accuracy:.4f} "
                f"({result.status}, {result.wall_time_s:.1f} s)",
                soft_wrap=True,
            )

        if options.tuned:
            return comparison_module.compare_tuned(
                loss,
                baseline,
                task,
                options.runs,
                loss_name=loss_name,
                baseline_name=baseline_name,
                lr_multipliers=options.lr_multipliers,
                tuning_seeds=options.tuning_seeds,
                tune_loss_lr=options.tune_loss_lr,
                measure_loss_scale=True,
                progress=on_steps,
                on_run=on_run,
                on_tuning_run=on_tuning_run,
            )
        return comparison_module.compare(
            loss,
            baseline,
            task,
            options.runs,
            loss_name=loss_name,
            baseline_name=baseline_name,
            measure_loss_scale=True,
            progress=on_steps,
            on_run=on_run,
        )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    try:
        task = build_task(args)
        if args.runs < 2:
            raise ValueError(f"--runs must be >= 2 (Welch's t-test needs 2 runs per side), got {args.runs}")
        if args.tuning_seeds < 1:
            raise ValueError(f"--tuning-seeds must be >= 1, got {args.tuning_seeds}")
        import_tensorflow_quietly()  # before Keras loads it, which would print its start-up lines
        loss = _load_loss(args.loss, "loss")
        baseline = _load_loss(args.baseline, "baseline")
    except ValueError as error:
        print_error("compare", error)
        return EXIT_BAD_INPUT

    options = ComparisonOptions(
        runs=args.runs,
        tune_baseline_lr=args.tune_baseline_lr,
        tune_loss_lr=args.tune_loss_lr,
        lr_multipliers=args.lr_multipliers,
        tuning_seeds=args.tuning_seeds,
    )
    try:
        result = train_and_compare(
            loss,
            baseline,
            task,
            options,
            loss_name=_loss_label(args.loss),
            baseline_name=_loss_label(args.baseline),
            console=console,
        )
    except (ValueError, OSError) as error:
        # The dataset and the model are first opened here: a missing file or an
        # unknown model name is bad input (the message names it), not a crash.
        print_error("compare", f"{type(error).__name__}: {error}")
        return EXIT_BAD_INPUT
    _print_result(console, result)
    if args.json:
        from taylorglo_tf.results import write_json

        write_json(result.to_dict(), args.json)
        console.print(f"wrote {args.json}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taylorglo compare", allow_abbrev=False)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
