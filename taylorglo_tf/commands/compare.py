"""``taylorglo compare``: train two losses N times each and compare test accuracy.

    taylorglo compare --loss LOSS.json [--baseline cross_entropy|baikal|poly1|LOSS.json]
                      --runs 10 [--task TASK.yaml] [--dataset D --model M --steps N ...]
                      [--json OUT.json]

Prints a table (mean and std of test accuracy per side, runs that trained) and
the one-tailed Welch t-test p-value for "the loss beats the baseline". No
TensorFlow at import time (``taylorglo --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from taylorglo_tf.commands.quiet import import_tensorflow_quietly

# CLI flag -> Task field; flags left out keep the task file's (or the default) value.
_TASK_FLAGS = {
    "dataset": "dataset",
    "model": "model",
    "steps": "steps",
    "batch_size": "batch_size",
    "fraction": "fraction",
    "seed": "seed",
    "data_dir": "data_dir",
    "attempts": "max_attempts",
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
    parser.add_argument("--fraction", type=float, help="fraction of the training split (0, 1]")
    parser.add_argument("--seed", type=int, help="seed of run 0 (run i uses seed + i on both sides)")
    parser.add_argument("--data-dir", help="dataset directory (TFDS data_dir)")
    parser.add_argument("--attempts", type=int, help="attempts per run under the abort rule")
    parser.add_argument("--json", metavar="OUT.json", help="also write the comparison as JSON")


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


def _print_table(console, comparison) -> None:
    from rich.table import Table

    table = Table(title=f"Test accuracy over {len(comparison.accuracies('loss'))} runs per side")
    for column in ("side", "loss", "mean", "std", "trained"):
        table.add_column(column, justify="left" if column in ("side", "loss") else "right")
    names = {"loss": comparison.loss_name, "baseline": comparison.baseline_name}
    for side, summary in comparison.summaries.items():
        statuses = [r.status for r in comparison.records if r.side == side]
        table.add_row(
            side,
            names[side],
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


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    error_console = Console(stderr=True)
    try:
        task = build_task(args)
        if args.runs < 2:
            raise ValueError(f"--runs must be >= 2 (Welch's t-test needs 2 runs per side), got {args.runs}")
        import_tensorflow_quietly()  # before Keras loads it, which would print its start-up lines
        loss = _load_loss(args.loss, "loss")
        baseline = _load_loss(args.baseline, "baseline")
    except ValueError as error:
        error_console.print(f"taylorglo compare: error: {error}")
        return 2

    from taylorglo_tf import compare as comparison_module

    total_runs = 2 * args.runs
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        overall = bar.add_task("runs", total=total_runs)
        current = bar.add_task("steps", total=None)

        def on_steps(side: str, run_index: int, done: int, total: int) -> None:
            bar.update(current, description=f"run {run_index + 1} {side}", completed=done, total=total)

        def on_run(record) -> None:
            bar.advance(overall)
            console.print(
                f"run {record.run + 1} {record.side}: test accuracy {record.test_accuracy:.4f} "
                f"({record.status}, {record.wall_time_s:.1f} s)",
                soft_wrap=True,
            )

        try:
            result = comparison_module.compare(
                loss,
                baseline,
                task,
                args.runs,
                loss_name=_loss_label(args.loss),
                baseline_name=_loss_label(args.baseline),
                progress=on_steps,
                on_run=on_run,
            )
        except (ValueError, OSError) as error:
            # The dataset and the model are first opened here: a missing file or an
            # unknown model name is bad input (the message names it), not a crash.
            error_console.print(f"taylorglo compare: error: {type(error).__name__}: {error}")
            return 2
    _print_table(console, result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result.to_dict(), handle, indent=2)
        console.print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taylorglo compare")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
