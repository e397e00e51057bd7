"""The result folder of a search: what ``taylorglo result`` and ``taylorglo run`` write.

From a ``taylorglo.v1.ExperimentResult`` (``GetResult``) :func:`write_result_folder` writes::

    experiment.json      id, name, state, evaluations, best fitness, the spec
    best_theta.json      the best candidate's theta (paper convention) and its form
    best_loss.json       that loss as a Keras serialization: ``losses.load_json`` /
                         ``TaylorGLOLoss.from_config(json["config"])`` rebuild it
    candidates.csv       every candidate: generation, index, status, fitness, metrics, theta,
                         and where early stopping stopped it with its checkpoint accuracies
    history.csv          per generation: best and mean fitness, best so far, CMA-ES sigma,
                         candidates stopped early and training steps spent
    fitness.png          best and mean fitness per generation (the paper's Figure 2)
    loss_shapes.png      each generation's best loss in the binary view (Figure 3a)
    tensorboard/         an event file with the history's scalars (step = generation)
    comparison.json/.txt the loss-vs-baseline comparison, when one is given

Tables and JSON come first and need only NumPy; plots need matplotlib and the
event files the ``tensorboard`` package (its ``summary.Writer``, no TensorFlow),
both imported on first use (the coordinator image has neither and
never calls this). Every file is written to a temporary name and
renamed, so an interrupted write never leaves a truncated file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from taylorglo_tf import atomic, taylor
from taylorglo_tf.rpc import experiment_service_pb2, types_pb2

BEST_THETA = "best_theta.json"
BEST_LOSS = "best_loss.json"
CANDIDATES = "candidates.csv"
HISTORY = "history.csv"
EXPERIMENT = "experiment.json"
FITNESS_PLOT = "fitness.png"
LOSS_SHAPES_PLOT = "loss_shapes.png"
TENSORBOARD_DIR = "tensorboard"
COMPARISON_JSON = "comparison.json"
COMPARISON_TEXT = "comparison.txt"

# Scalars of history.csv that also go to TensorBoard (tag -> column).
TENSORBOARD_SCALARS = {
    "fitness/best": "best_fitness",
    "fitness/mean": "mean_fitness",
    "fitness/best_so_far": "best_so_far",
    "cmaes/sigma": "sigma",
    "candidates/stopped": "stopped",
    "training/steps": "training_steps",
}
STOPPED = types_pb2.CANDIDATE_STATUS_STOPPED


def status_name(status: int) -> str:
    """``CANDIDATE_STATUS_STOPPED`` -> ``"stopped"`` (the number, as text, for a status this build does not know)."""
    try:
        return types_pb2.CandidateStatus.Name(status).removeprefix("CANDIDATE_STATUS_").lower()
    except ValueError:
        return str(status)


def status_counts(candidates: Iterable[types_pb2.Candidate]) -> dict[str, int]:
    """How many candidates have each status, by :func:`status_name`, in the enum's order."""
    counts: dict[int, int] = {}
    for c in candidates:
        counts[c.status] = counts.get(c.status, 0) + 1
    return {status_name(status): counts[status] for status in sorted(counts)}


def training_steps(candidates: Iterable[types_pb2.Candidate]) -> int:
    """Training steps spent on ``candidates``: a stopped candidate counts the steps it actually trained."""
    return sum(c.metrics.steps for c in candidates)


def early_stopping_rule(spec: types_pb2.ExperimentSpec) -> str:
    """The spec's early-stopping rule; ``"none"`` for a stored experiment that predates the field."""
    return spec.search.early_stopping or "none"


def loss_form(spec: types_pb2.ExperimentSpec) -> tuple[int, tuple[str, ...]]:
    """(order, inputs) of the searched loss, with the proto's defaults for 0/empty (3, ("x", "y"))."""
    from taylorglo_tf import spec as spec_module

    return spec_module.loss_form(spec.loss)


def best_candidate(result: experiment_service_pb2.ExperimentResult) -> types_pb2.Candidate | None:
    """The succeeded candidate with the highest fitness (first in (generation, index) order on ties)."""
    best = None
    for candidate in result.candidates:
        if candidate.status == types_pb2.CANDIDATE_STATUS_SUCCEEDED and (
            best is None or candidate.fitness > best.fitness
        ):
            best = candidate
    return best


def write_result_folder(
    result: experiment_service_pb2.ExperimentResult,
    out_dir: str | os.PathLike[str],
    *,
    comparison: Any = None,
    plots: bool = True,
    tensorboard: bool = True,
) -> Path:
    """Write the result folder of ``result`` into ``out_dir`` (created); returns its path.

    ``comparison`` is a ``taylorglo_tf.compare.Comparison`` (or anything with
    ``to_dict()``, or a plain dict): written as comparison.json and a text table.
    ``plots``/``tensorboard`` turn the PNGs and the event files off (both on by
    default). Files already in ``out_dir`` with the same names are replaced.

    Raises TypeError for a ``result`` that is not an ``ExperimentResult`` and
    ValueError when its best theta does not fit the spec's loss form.
    """
    if not isinstance(result, experiment_service_pb2.ExperimentResult):
        raise TypeError(f"result must be a taylorglo.v1.ExperimentResult, got {type(result).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"result folder {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)

    order, inputs = loss_form(result.experiment.spec)
    theta_length = taylor.expected_theta_length(order, inputs)
    best_theta = list(result.best_theta)
    if best_theta and len(best_theta) != theta_length:
        raise ValueError(
            f"result.best_theta has {len(best_theta)} entries; the spec's loss "
            f"(order={order}, inputs={list(inputs)}) has {theta_length}"
        )
    history = history_rows(result.generations, result.candidates)

    _write_text(out / EXPERIMENT, _json(_experiment_record(result)))
    _write_text(out / BEST_THETA, _json(_best_theta_record(result, order, inputs)))
    if best_theta:
        _write_text(out / BEST_LOSS, _json(taylor.keras_config(best_theta, order, inputs, name="taylorglo_best")))
    _write_text(out / CANDIDATES, _csv(*candidate_table(result.candidates, theta_length)))
    _write_text(out / HISTORY, _csv(*_history_table(history, result.generations, theta_length)))
    if comparison is not None:
        write_comparison(comparison, out)
    if plots and history:
        plot_fitness(history, out / FITNESS_PLOT, title=result.experiment.spec.name or result.experiment.id)
        shapes = [
            (row["generation"], list(g.best_theta)) for row, g in zip(history, result.generations) if g.best_theta
        ]
        if shapes:
            plot_loss_shapes(shapes, order, inputs, out / LOSS_SHAPES_PLOT)
    if tensorboard and history:
        write_tensorboard(history, out / TENSORBOARD_DIR)
    return out


# ----------------------------------------------------------------------------- records


def _timestamp(stamp: Any) -> str:
    """ISO 8601 UTC text of a protobuf Timestamp; empty when unset."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return ""
    return stamp.ToJsonString()


def _experiment_record(result: experiment_service_pb2.ExperimentResult) -> dict[str, Any]:
    from taylorglo_tf import spec as spec_module  # no TensorFlow

    experiment = result.experiment
    return {
        "id": experiment.id,
        "name": experiment.spec.name,
        "state": types_pb2.ExperimentState.Name(experiment.state),
        "generation": experiment.generation,
        "evaluations_done": experiment.evaluations_done,
        "evaluations_total": experiment.evaluations_total,
        "best_fitness": result.best_fitness,
        "early_stopping": early_stopping_rule(experiment.spec),
        "candidates": status_counts(result.candidates),
        "stopped": sum(c.status == STOPPED for c in result.candidates),
        "training_steps": training_steps(result.candidates),
        "create_time": _timestamp(experiment.create_time),
        "update_time": _timestamp(experiment.update_time),
        "error": experiment.error,
        "spec": spec_module.to_dict(experiment.spec),
    }


def _best_theta_record(
    result: experiment_service_pb2.ExperimentResult, order: int, inputs: Sequence[str]
) -> dict[str, Any]:
    best = best_candidate(result)
    return {
        "theta": list(result.best_theta) or None,
        "fitness": result.best_fitness,
        "convention": "paper",
        "order": order,
        "inputs": list(inputs),
        "generation": best.generation if best is not None else None,
        "index": best.index if best is not None else None,
        "experiment_id": result.experiment.id,
    }


CANDIDATE_COLUMNS = (
    "generation",
    "index",
    "status",
    "fitness",
    "attempts",
    "trainer_id",
    "val_accuracy",
    "val_loss",
    "steps",
    "wall_time_s",
    "trainer_attempts",
    "create_time",
    "finish_time",
    "error",
)
# After the theta columns (new columns go last, so older readers by position still work): the
# checkpoint (1-based) at which early stopping stopped the candidate, empty when it did not; then
# its validation accuracy at each checkpoint reached (checkpoint_1_accuracy, ...), one column per
# checkpoint any candidate reached.
EARLY_STOPPING_COLUMNS = ("stopped_at",)


def checkpoint_column(index: int) -> str:
    """The candidates.csv column of checkpoint ``index`` (0-based, as ``CheckpointValue.index``)."""
    return f"checkpoint_{index + 1}_accuracy"


def candidate_table(candidates: Iterable[types_pb2.Candidate], theta_length: int) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of candidates.csv; ``status`` without its ``CANDIDATE_STATUS_`` prefix, lower case.

    A stopped candidate's ``steps`` are the steps it actually trained and its ``val_accuracy`` its
    partial accuracy at the checkpoint where it stopped (``stopped_at``).
    """
    candidates = list(candidates)
    checkpoints = max((v.index + 1 for c in candidates for v in c.checkpoints), default=0)
    header = [
        *CANDIDATE_COLUMNS,
        *(f"theta_{i}" for i in range(theta_length)),
        *EARLY_STOPPING_COLUMNS,
        *(checkpoint_column(i) for i in range(checkpoints)),
    ]
    rows = []
    for c in candidates:
        status = status_name(c.status)
        theta = _padded(c.theta, theta_length)
        reached = {v.index: v.val_accuracy for v in c.checkpoints}
        rows.append(
            [
                c.generation,
                c.index,
                status,
                c.fitness,
                c.attempts,
                c.trainer_id,
                c.metrics.val_accuracy,
                c.metrics.val_loss,
                c.metrics.steps,
                c.metrics.wall_time_s,
                c.metrics.attempts,
                _timestamp(c.create_time),
                _timestamp(c.finish_time),
                c.error,
                *theta,
                c.stopped_at or "",
                *(reached.get(i, "") for i in range(checkpoints)),
            ]
        )
    return header, rows


def history_rows(
    generations: Iterable[types_pb2.GenerationSummary], candidates: Iterable[types_pb2.Candidate] = ()
) -> list[dict[str, Any]]:
    """Per-generation scalars: generation, best_fitness, mean_fitness, best_so_far, sigma, finish_time,
    and from ``candidates``: stopped (how many early stopping stopped) and training_steps (steps
    spent). mean_fitness is the coordinator's: the mean of the candidates that were not stopped
    (a stopped one's fitness is a ranking score in [-1, 0], not an accuracy).

    ``finish_time`` is ISO 8601 text (empty when unset); ``finish_seconds`` the same
    time in seconds since the epoch (0.0 when unset).
    """
    by_generation: dict[int, list[types_pb2.Candidate]] = {}
    for c in candidates:
        by_generation.setdefault(c.generation, []).append(c)
    rows = []
    best_so_far = -math.inf
    for g in sorted(generations, key=lambda g: g.generation):
        best_so_far = max(best_so_far, g.best_fitness)
        members = by_generation.get(g.generation, [])
        stopped = sum(c.status == STOPPED for c in members)
        rows.append(
            {
                "generation": g.generation,
                "best_fitness": g.best_fitness,
                "mean_fitness": g.mean_fitness,
                "best_so_far": best_so_far,
                "sigma": g.sigma,
                "finish_time": _timestamp(g.finish_time),
                "finish_seconds": g.finish_time.seconds + g.finish_time.nanos / 1e9,
                "stopped": stopped,
                "training_steps": training_steps(members),
            }
        )
    return rows


def _history_table(
    history: list[dict[str, Any]], generations: Iterable[types_pb2.GenerationSummary], theta_length: int
) -> tuple[list[str], list[list[Any]]]:
    by_generation = {g.generation: g for g in generations}
    scalar_columns = ["generation", "best_fitness", "mean_fitness", "best_so_far", "sigma", "finish_time"]
    # after the thetas, as candidates.csv's early-stopping columns: older readers by position still work
    early_stopping_columns = ["stopped", "training_steps"]
    header = [
        *scalar_columns,
        *(f"best_theta_{i}" for i in range(theta_length)),
        *(f"mean_theta_{i}" for i in range(theta_length)),
        *early_stopping_columns,
    ]
    rows = []
    for row in history:
        g = by_generation[row["generation"]]
        rows.append(
            [row[c] for c in scalar_columns]
            + _padded(g.best_theta, theta_length)
            + _padded(g.mean_theta, theta_length)
            + [row[c] for c in early_stopping_columns]
        )
    return header, rows


def _padded(values: Sequence[float], length: int) -> list[Any]:
    """``values`` as a list of ``length`` CSV cells (empty cells where a theta is missing)."""
    return list(values) + [""] * (length - len(values))


def write_comparison(comparison: Any, out_dir: str | os.PathLike[str]) -> Path:
    """Write comparison.json and comparison.txt into ``out_dir``; returns the JSON's path.

    ``comparison``: a ``taylorglo_tf.compare.Comparison`` (anything with
    ``to_dict()``) or its dict form.
    """
    record = comparison if isinstance(comparison, dict) else comparison.to_dict()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / COMPARISON_JSON, _json(record))
    _write_text(out / COMPARISON_TEXT, comparison_text(record))
    return out / COMPARISON_JSON


def comparison_text(record: dict[str, Any]) -> str:
    """A short human-readable table of a comparison's ``to_dict()`` form.

    A tuned comparison (``compare.TunedComparison.to_dict()``) adds one row per
    comparison (the task's learning rate, the tuned one), the validation scores
    behind each chosen rate and the verdict; a measured loss scale adds a line.
    """
    lines = [f"{record.get('loss', 'loss')} vs {record.get('baseline', 'baseline')}"]
    task = record.get("task") or {}
    if task:
        steps = task.get("steps")
        length = "the recipe's full length" if steps == 0 else f"{steps} steps"
        lines.append(f"task: {task.get('dataset')} / {task.get('model')}, {length} per run")
    lines.append(f"{'side':<10} {'runs':>4} {'mean':>8} {'std':>8}")
    for side, summary in (record.get("summary") or {}).items():
        lines.append(
            f"{side:<10} {summary.get('n', ''):>4} {_number(summary.get('mean')):>8} {_number(summary.get('std')):>8}"
        )
    welch = record.get("welch") or {}
    if welch:
        details = ", ".join(f"{key}={_number(value)}" for key, value in welch.items())
        lines.append(f"one-tailed Welch t-test (H1: loss > baseline): {details}")
    if record.get("tuned"):
        lines += _tuned_lines(record)
    scale = record.get("loss_scale")
    if scale:
        lines.append(f"loss scale: {_number(scale.get('ratio'))} x cross-entropy ({scale.get('definition')})")
    return "\n".join(lines) + "\n"


def _tuned_lines(record: dict[str, Any]) -> list[str]:
    """Both comparisons as rows, how each learning rate was chosen, and the verdict."""
    lines = ["", f"{'comparison':<32} {'baseline lr':>14} {'loss':>8} {'baseline':>8} {'win':>8} {'p':>8}"]
    for label, row in (("at the task's learning rate", record), ("against the tuned baseline", record["tuned"])):
        summary, rate = row.get("summary") or {}, row.get("learning_rates") or {}
        multiplier = (row.get("lr_multipliers") or {}).get("baseline")
        loss_mean = (summary.get("loss") or {}).get("mean")
        baseline_mean = (summary.get("baseline") or {}).get("mean")
        win = loss_mean - baseline_mean if loss_mean is not None and baseline_mean is not None else None
        lines.append(
            f"{label:<32} {_rate(rate.get('baseline'), multiplier):>14} {_number(loss_mean):>8} "
            f"{_number(baseline_mean):>8} {'n/a' if win is None else f'{100 * win:+.2f}':>8} "
            f"{_number((row.get('welch') or {}).get('pvalue')):>8}"
        )
    lines.append("(win: loss minus baseline mean test accuracy, in percentage points; p: one-tailed Welch t-test)")
    for side, choice in (record.get("learning_rate_tuning") or {}).items():
        if choice:
            grid = ", ".join(
                f"x{row['multiplier']:g} {_number(row['mean_validation_accuracy'])}" for row in choice.get("grid", [])
            )
            lines.append(
                f"{side} learning rate x{choice['chosen_multiplier']:g}, chosen by mean validation "
                f"accuracy (seeds {choice.get('seeds')}; the test split is not used): {grid}"
            )
    if record.get("verdict"):
        lines.append(record["verdict"])
    return lines


def _rate(learning_rate: Any, multiplier: Any) -> str:
    """``0.15 (x3)``: a learning rate and its multiple of the task's."""
    if not isinstance(learning_rate, (int, float)) or not isinstance(multiplier, (int, float)):
        return "n/a"
    return f"{learning_rate:.4g} (x{multiplier:g})"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


# ----------------------------------------------------------------------------- plots


def plot_fitness(history: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Best and mean validation accuracy per generation, and the best so far (Figure 2).

    Candidates stopped early are left out of the mean (the coordinator's ``mean_fitness``): their
    fitness is a ranking score in [-1, 0], not an accuracy. The best is never a stopped one while any
    candidate of the generation finished.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend, nothing to close
    from matplotlib.ticker import MaxNLocator

    generations = [row["generation"] for row in history]
    stopped = any(row.get("stopped") for row in history)
    means = [row["mean_fitness"] for row in history]
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.plot(generations, [row["best_fitness"] for row in history], marker="o", label="best of generation")
    mean_label = "mean of generation (stopped early left out)" if stopped else "mean of generation"
    axes.plot(generations, means, marker=".", label=mean_label)
    axes.plot(generations, [row["best_so_far"] for row in history], linestyle="--", label="best so far")
    axes.set_xlabel("generation")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("fitness (validation accuracy)")
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save_figure(figure, path)
    return path


def plot_loss_shapes(
    thetas: Sequence[tuple[int, Sequence[float]]], order: int, inputs: Sequence[str], path: Path
) -> Path:
    """Each generation's best loss in the binary-classification view (Figure 3a), one curve each."""
    import matplotlib
    import matplotlib.cm
    import matplotlib.colors
    import matplotlib.ticker
    from matplotlib.figure import Figure

    from taylorglo_tf import plotting

    # Configs, not Keras objects: the plotting module evaluates them in NumPy.
    curves = {f"generation {generation}": taylor.keras_config(theta, order, inputs) for generation, theta in thetas}
    generations = [generation for generation, _ in thetas]
    # One colour per generation along a colormap (as the paper's Figure 3a), with a colour bar.
    colormap = matplotlib.colormaps["viridis"]
    norm = matplotlib.colors.Normalize(vmin=min(generations, default=0), vmax=max(max(generations, default=0), 1))
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    plotting.plot_losses(axes, curves, colors=[colormap(norm(g)) for g in generations], legend=False)
    figure.colorbar(
        matplotlib.cm.ScalarMappable(norm=norm, cmap=colormap),
        ax=axes,
        label="generation",
        ticks=matplotlib.ticker.MaxNLocator(integer=True),
    )  # no "generation 0.4"
    axes.set_title("best loss of each generation (binary view)")
    figure.tight_layout()
    _save_figure(figure, path)
    return path


def _save_figure(figure: Any, path: Path) -> None:
    with atomic.replacing(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def write_tensorboard(history: list[dict[str, Any]], log_dir: Path) -> Path:
    """A TensorBoard event file of the history's scalars (step = generation); returns its path.

    Written with ``tensorboard.summary.Writer`` into an :class:`~taylorglo_tf.event_file.EventFile`,
    so no TensorFlow import (which costs seconds) is needed. Each generation's
    scalars carry its finish time as their wall time (the time of writing when a
    generation has none). Each call writes a new ``events.out.tfevents.<time>.<host>``
    file and removes the folder's older ones, so a rewritten result folder shows one run.
    """
    import socket
    import time

    from tensorboard.summary import Writer

    from taylorglo_tf.event_file import EventFile

    log_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
    with atomic.replacing(log_dir / name) as tmp, open(tmp, "wb") as handle:  # hidden: outside the glob below
        writer = Writer(EventFile(handle, wall_time=now))
        for row in history:
            wall_time = row["finish_seconds"] or now
            for tag, column in TENSORBOARD_SCALARS.items():
                writer.add_scalar(tag, row[column], row["generation"], wall_time=wall_time)
        writer.close()
    for old in log_dir.glob("events.out.tfevents.*"):
        if old.name != name:
            old.unlink()
    return log_dir / name


# ----------------------------------------------------------------------------- files


def _json(record: Any) -> str:
    return json.dumps(record, indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    atomic.write_text(path, text)


def write_json(record: Any, path: str | os.PathLike[str]) -> Path:
    """Writes ``record`` as strict JSON (NumPy values as lists) to ``path``, atomically; returns the path."""
    return atomic.write_text(path, _json(record))
