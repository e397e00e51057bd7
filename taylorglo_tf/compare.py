"""Full-length comparisons of two losses (the paper's Table 1 method).

Each side is trained ``runs`` times on the task (the recipe's full length when
``task.steps == 0``, else that step budget) and scored by test accuracy; the two
samples are compared with a one-tailed Welch t-test (H1: the candidate loss has
the higher mean test accuracy). Run ``i`` of both sides uses seed
``task.seed + i``, so each pair shares its initial weights and data order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from taylorglo_tf import stats
from taylorglo_tf.training.task import Task

# (side, run index, steps done in that run, total steps of that run)
ProgressFn = Callable[[str, int, int, int], None]
SIDES = ("loss", "baseline")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One training run of one side."""

    side: str
    run: int
    seed: int
    status: str
    test_accuracy: float
    val_accuracy: float
    steps: int
    attempts: int
    wall_time_s: float


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Per-run records, per-side summaries and the Welch test of loss vs baseline."""

    loss_name: str
    baseline_name: str
    task: Task
    records: tuple[RunRecord, ...]
    summaries: dict[str, stats.Summary]
    welch: stats.WelchResult

    def accuracies(self, side: str) -> list[float]:
        """Test accuracies of ``side`` (``"loss"`` or ``"baseline"``) in run order."""
        return [r.test_accuracy for r in self.records if r.side == side]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (what ``taylorglo compare --json`` writes)."""
        return {
            "loss": self.loss_name,
            "baseline": self.baseline_name,
            "task": self.task.to_dict(),
            "runs": [dataclasses.asdict(r) for r in self.records],
            "summary": {side: dataclasses.asdict(s) for side, s in self.summaries.items()},
            "welch": {
                key: (value if not isinstance(value, float) or math.isfinite(value) else None)
                for key, value in dataclasses.asdict(self.welch).items()
            },
        }


def compare(
    loss: Any,
    baseline: Any,
    task: Task,
    runs: int = 10,
    *,
    loss_name: str = "loss",
    baseline_name: str = "baseline",
    evaluator: Any = None,
    progress: ProgressFn | None = None,
    on_run: Callable[[RunRecord], None] | None = None,
) -> Comparison:
    """Train ``loss`` and ``baseline`` ``runs`` times each on ``task``; compare test accuracy.

    A run that diverges or is aborted keeps its measured test accuracy (outputs
    with NaN/inf count as wrong), as in the paper's "4 of 10 trained" reporting;
    its ``status`` is in the record. ``evaluator`` defaults to a fresh
    ``training.Evaluator`` (pass one to share warm sessions).
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 2:
        raise ValueError(f"runs must be an integer >= 2 (Welch's t-test needs 2 per side), got {runs!r}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a training.Task, got {type(task).__name__}")
    if evaluator is None:
        from taylorglo_tf.training import Evaluator

        evaluator = Evaluator()
    records: list[RunRecord] = []
    for run in range(runs):
        seed = task.seed + run
        run_task = task.replace(seed=seed)
        for side, side_loss in zip(SIDES, (loss, baseline)):
            step_progress = None
            if progress is not None:
                step_progress = lambda done, total, s=side, r=run: progress(s, r, done, total)  # noqa: E731
            result = evaluator.evaluate(side_loss, run_task, step_progress, test=True)
            record = RunRecord(
                side=side,
                run=run,
                seed=seed,
                status=result.status,
                test_accuracy=float(result.test_accuracy),
                val_accuracy=float(result.val_accuracy),
                steps=result.steps,
                attempts=result.attempts,
                wall_time_s=result.wall_time_s,
            )
            records.append(record)
            if on_run is not None:
                on_run(record)
    by_side = {side: [r.test_accuracy for r in records if r.side == side] for side in SIDES}
    return Comparison(
        loss_name=loss_name,
        baseline_name=baseline_name,
        task=task,
        records=tuple(records),
        summaries={side: stats.summarize(values, side) for side, values in by_side.items()},
        welch=stats.welch_t_test(by_side["loss"], by_side["baseline"], alternative="greater"),
    )
