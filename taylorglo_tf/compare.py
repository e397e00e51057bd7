"""Full-length comparisons of two losses (the paper's Table 1 method), with a fair baseline.

**Plain** (:func:`compare`): each side is trained ``runs`` times on the task (the
recipe's full length when ``task.steps == 0``, else that step budget) and scored
by test accuracy; the two samples are compared with a one-tailed Welch t-test
(H1: the candidate loss has the higher mean test accuracy). Run ``i`` of both
sides uses seed ``task.seed + i``, so each pair shares its initial weights and
data order.

**Tuned** (:func:`compare_tuned`): a loss can win by its scale alone (for SGD,
training with ``s * L`` is training with ``L`` at ``s`` times the learning rate).
So the baseline's learning rate is first chosen by :func:`choose_learning_rate`:
each multiplier of the task's rate trains the baseline on a few seeds that no
comparison run uses, and the multiplier with the best mean *validation* score
wins; the test split plays no part in the choice. Then the plain comparison is
repeated against the baseline at the chosen rate. Optionally the candidate loss's
rate is tuned the same way, so that both sides are treated alike.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from taylorglo_tf.training.task import EvaluationResult, Task

if TYPE_CHECKING:  # scipy loads with the first comparison: the CLI reads the defaults below
    from taylorglo_tf import stats
    from taylorglo_tf.training.evaluator import Evaluator  # TensorFlow: imported when a comparison runs
    from taylorglo_tf.training.gradient_scale import LossScale

# (side, run index, steps done in that run, total steps of that run)
ProgressFn = Callable[[str, int, int, int], None]
# (side, learning-rate multiplier, seed, result of that tuning run)
TuningFn = Callable[[str, float, int, EvaluationResult], None]
SIDES = ("loss", "baseline")
#: Multipliers of the task's learning rate tried when tuning (the issue's grid: 0.3x to 30x).
DEFAULT_LR_MULTIPLIERS: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
#: Seeds per multiplier when tuning a learning rate.
DEFAULT_TUNING_SEEDS = 2


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One training run of one side (``lr_scale``: the run's multiple of the recipe's rate)."""

    side: str
    run: int
    seed: int
    status: str
    test_accuracy: float
    val_accuracy: float
    steps: int
    attempts: int
    wall_time_s: float
    lr_scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Per-run records, per-side summaries and the Welch test of loss vs baseline.

    ``lr_multipliers``: each side's multiple of ``task``'s learning rate (1 = the
    task's own); ``loss_scale``: the loss's ``training.LossScale`` when measured.
    """

    loss_name: str
    baseline_name: str
    task: Task
    records: tuple[RunRecord, ...]
    summaries: dict[str, stats.Summary]
    welch: stats.WelchResult
    lr_multipliers: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(SIDES, 1.0))
    loss_scale: LossScale | None = None

    def accuracies(self, side: str) -> list[float]:
        """Test accuracies of ``side`` (``"loss"`` or ``"baseline"``) in run order."""
        return [r.test_accuracy for r in self.records if r.side == side]

    @property
    def win(self) -> float:
        """Mean test accuracy of the loss minus that of the baseline."""
        return self.summaries["loss"].mean - self.summaries["baseline"].mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (what ``taylorglo compare --json`` writes)."""
        base_lr = base_learning_rate(self.task)
        record = {
            "loss": self.loss_name,
            "baseline": self.baseline_name,
            "task": self.task.to_dict(),
            "lr_multipliers": dict(self.lr_multipliers),
            "learning_rates": {side: base_lr * m for side, m in self.lr_multipliers.items()},
            "runs": [dataclasses.asdict(r) for r in self.records],
            "summary": {side: dataclasses.asdict(s) for side, s in self.summaries.items()},
            "welch": _finite_or_none(dataclasses.asdict(self.welch)),
        }
        if self.loss_scale is not None:
            record["loss_scale"] = self.loss_scale.to_dict()
        return record


@dataclasses.dataclass(frozen=True)
class LearningRateChoice:
    """The validation scores behind one side's learning-rate choice.

    ``scores[i][j]`` is the validation accuracy of multiplier ``multipliers[i]``
    with seed ``seeds[j]``, 0 for a run that diverged or was aborted.
    ``base_learning_rate`` is the task's initial rate (recipe x ``task.lr_scale``).
    """

    side: str
    multipliers: tuple[float, ...]
    seeds: tuple[int, ...]
    scores: tuple[tuple[float, ...], ...]
    statuses: tuple[tuple[str, ...], ...]
    chosen: float
    base_learning_rate: float

    def mean_scores(self) -> list[float]:
        return [sum(row) / len(row) for row in self.scores]

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "split": "validation",
            "seeds": list(self.seeds),
            "chosen_multiplier": self.chosen,
            "chosen_learning_rate": self.base_learning_rate * self.chosen,
            "grid": [
                {
                    "multiplier": m,
                    "learning_rate": self.base_learning_rate * m,
                    "mean_validation_accuracy": mean,
                    "validation_accuracy": list(row),
                    "status": list(statuses),
                }
                for m, mean, row, statuses in zip(self.multipliers, self.mean_scores(), self.scores, self.statuses)
            ],
        }


@dataclasses.dataclass(frozen=True)
class TunedComparison:
    """The plain comparison, the one against the tuned baseline, and how the rates were chosen."""

    plain: Comparison
    tuned: Comparison
    baseline_lr: LearningRateChoice
    loss_lr: LearningRateChoice | None = None

    @property
    def win_shrank(self) -> bool:
        """The loss beat the baseline, but its lead against the tuned baseline is less than half of that."""
        return self.plain.win > 0 and self.tuned.win < self.plain.win / 2

    def verdict(self) -> str:
        """In plain words, what tuning the learning rate(s) did to the win."""
        sentence = self._win_sentence()
        if self.loss_lr is not None:
            sentence += (
                f" In the tuned comparison {self.plain.loss_name} also trains at its own best learning rate "
                f"(x{self.loss_lr.chosen:g})."
            )
        return sentence

    def _win_sentence(self) -> str:
        loss, baseline = self.plain.loss_name, self.plain.baseline_name
        choice = self.baseline_lr
        own = f"the task's learning rate ({choice.base_learning_rate:.4g})"
        best = f"its best learning rate (x{choice.chosen:g} = {choice.base_learning_rate * choice.chosen:.4g})"
        plain, tuned = _points(self.plain.win), _points(self.tuned.win)
        if self.win_shrank and self.tuned.win > 0:
            return (
                f"Most of the win is a learning-rate effect: {loss} beats {baseline} by {plain} at {own}, "
                f"but by only {tuned} against {baseline} at {best}."
            )
        if self.win_shrank:
            return (
                f"The win is a learning-rate effect: {loss} beats {baseline} by {plain} at {own}, "
                f"but not {baseline} at {best} ({tuned})."
            )
        if self.plain.win > 0:
            return (
                f"The win holds against a tuned baseline: {loss} beats {baseline} by {plain} at {own} "
                f"and by {tuned} against {baseline} at {best}."
            )
        return f"{loss} does not beat {baseline} at {own} ({plain}); against {baseline} at {best}: {tuned}."

    def to_dict(self) -> dict[str, Any]:
        """The plain comparison's form (as ``Comparison.to_dict``) plus the tuned one and the tuning."""
        record = self.plain.to_dict()
        record["learning_rate_tuning"] = {
            "baseline": self.baseline_lr.to_dict(),
            "loss": None if self.loss_lr is None else self.loss_lr.to_dict(),
        }
        tuned = self.tuned.to_dict()
        tuned.pop("loss_scale", None)  # a property of the loss: once, at the top
        record["tuned"] = tuned
        record["win"] = {"plain": self.plain.win, "tuned": self.tuned.win, "shrank_by_more_than_half": self.win_shrank}
        record["verdict"] = self.verdict()
        return record


def base_learning_rate(task: Task) -> float:
    """The task's initial learning rate, times ``task.lr_scale``: the zoo recipe's, a ``python:`` model's
    recipe block's, or what a ``script:`` model's optimizer factory starts at."""
    from taylorglo_tf.training import sources

    if sources.kind(task.model) == "script":
        import numpy as np

        rate = sources.lookup(task.model).optimizer().learning_rate  # a schedule reads as its first value
        return float(np.asarray(rate)) * task.lr_scale
    return sources.recipe(task).lr * task.lr_scale


def check_lr_multipliers(values: Sequence[float]) -> tuple[float, ...]:
    """``values`` as a tuple of distinct positive, finite floats; ValueError naming a bad one."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"learning-rate multipliers must be a non-empty list of numbers, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"learning-rate multipliers must be positive, finite numbers, got {value!r}")
    multipliers = tuple(float(v) for v in values)
    if len(set(multipliers)) != len(multipliers):
        raise ValueError(f"learning-rate multipliers must be distinct, got {list(values)}")
    return multipliers


def choose_learning_rate(
    loss: Any,
    task: Task,
    seeds: Sequence[int],
    *,
    multipliers: Sequence[float] = DEFAULT_LR_MULTIPLIERS,
    side: str = "baseline",
    evaluator: Evaluator | None = None,
    on_run: TuningFn | None = None,
) -> LearningRateChoice:
    """Pick the multiplier of ``task``'s learning rate that gives ``loss`` the best validation accuracy.

    Trains ``loss`` once per (multiplier, seed) with ``task.replace(seed=seed,
    lr_scale=task.lr_scale * multiplier)`` and scores the run by its validation
    accuracy (0 unless it trained: a rate that diverges is never chosen). The
    evaluator is never asked for the test split. The best mean over the seeds
    wins; on a tie, the multiplier nearest 1 (the task's own rate).
    """
    multipliers = check_lr_multipliers(multipliers)
    seeds = tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"tuning seeds must be a non-empty list of integers >= 0, got {list(seeds)!r}")
    evaluator = evaluator if evaluator is not None else _new_evaluator()
    scores, statuses = [], []
    for multiplier in multipliers:
        row, row_statuses = [], []
        for seed in seeds:
            run_task = task.replace(seed=seed, lr_scale=task.lr_scale * multiplier)
            result = evaluator.evaluate(loss, run_task, test=False)
            row.append(float(result.fitness))  # validation accuracy, 0 unless "ok"
            row_statuses.append(result.status)
            if on_run is not None:
                on_run(side, multiplier, seed, result)
        scores.append(tuple(row))
        statuses.append(tuple(row_statuses))
    means = [sum(row) / len(row) for row in scores]
    best = max(range(len(multipliers)), key=lambda i: (means[i], -abs(math.log(multipliers[i])), -multipliers[i]))
    return LearningRateChoice(
        side=side,
        multipliers=multipliers,
        seeds=seeds,
        scores=tuple(scores),
        statuses=tuple(statuses),
        chosen=multipliers[best],
        base_learning_rate=base_learning_rate(task),
    )


def compare(
    loss: Any,
    baseline: Any,
    task: Task,
    runs: int = 10,
    *,
    loss_name: str = "loss",
    baseline_name: str = "baseline",
    loss_lr_multiplier: float = 1.0,
    baseline_lr_multiplier: float = 1.0,
    measure_loss_scale: bool = False,
    evaluator: Evaluator | None = None,
    progress: ProgressFn | None = None,
    on_run: Callable[[RunRecord], None] | None = None,
) -> Comparison:
    """Train ``loss`` and ``baseline`` ``runs`` times each on ``task``; compare test accuracy.

    Formula:

    A one-tailed Welch t-test of the runs' test accuracies (H1: the loss has the
    higher mean).

    ```python
    t = (mean(loss_acc) - mean(baseline_acc)) / sqrt(var(loss_acc) / runs + var(baseline_acc) / runs)  # var: ddof=1
    pvalue = P(T_df >= t)   # df: Welch-Satterthwaite
    ```

    Run ``i`` of both sides uses seed ``task.seed + i`` (the same initial weights
    and data order). A run that diverges or is aborted keeps its measured test
    accuracy (outputs with NaN/inf count as wrong), as in the paper's "4 of 10
    trained" reporting; its ``status`` is in the record.

    Args:
        loss: the candidate, a ``keras.losses.Loss``.
        baseline: the loss it is compared with, a ``keras.losses.Loss``.
        task: the ``training.Task`` both train on: the recipe's full length when
            ``task.steps == 0``, else that step budget.
        runs: runs per side, an integer >= 2. Defaults to 10.
        loss_name: the loss's name in the records. Defaults to ``"loss"``.
        baseline_name: the baseline's name in the records. Defaults to ``"baseline"``.
        loss_lr_multiplier: the loss trains at this multiple of ``task``'s
            learning rate. Defaults to 1.
        baseline_lr_multiplier: the same for the baseline. Defaults to 1.
        measure_loss_scale: also measure the loss's gradient scale relative to
            cross-entropy (``training.loss_scale``). Defaults to ``False``.
        evaluator: the ``training.Evaluator`` to train with. Defaults to a fresh
            one (pass one to share warm sessions).
        progress: called as ``progress(side, run, steps_done, total_steps)``
            while a run trains.
        on_run: called with each ``RunRecord`` as its run ends.

    Returns:
        A ``Comparison``: the per-run records, each side's ``stats.Summary`` of
        test accuracy, the Welch test, the learning-rate multipliers and the loss
        scale when measured; ``to_dict()`` is its JSON form.

    Raises:
        ValueError: for ``runs`` that is not an integer >= 2 or a multiplier that
            is not a positive, finite number.
        TypeError: for a task that is not a ``training.Task``, or a loss that is
            not a ``keras.losses.Loss``.

    Example:

    >>> import keras
    >>> from taylorglo_tf import taylor
    >>> from taylorglo_tf.compare import compare
    >>> from taylorglo_tf.losses import TaylorGLOLoss
    >>> from taylorglo_tf.training import Task
    >>> comparison = compare(
    ...     TaylorGLOLoss(taylor.PAPER_MNIST_THETA), keras.losses.CategoricalCrossentropy(),
    ...     Task(dataset="digits", model="tiny", steps=10), runs=2,
    ...     loss_name="taylorglo", baseline_name="cross_entropy")
    >>> [(record.side, record.seed) for record in comparison.records]
    [('loss', 0), ('baseline', 0), ('loss', 1), ('baseline', 1)]
    >>> comparison.summaries["loss"].n, comparison.welch.alternative
    (2, 'greater')
    >>> comparison.win == comparison.summaries["loss"].mean - comparison.summaries["baseline"].mean
    True
    >>> comparison.to_dict()["loss"], comparison.to_dict()["baseline"]
    ('taylorglo', 'cross_entropy')
    >>> compare(TaylorGLOLoss(taylor.PAPER_MNIST_THETA), keras.losses.CategoricalCrossentropy(), Task(), runs=1)
    Traceback (most recent call last):
        ...
    ValueError: runs must be an integer >= 2 (Welch's t-test needs 2 per side), got 1
    """
    _check_runs(runs)
    _check_task(task)
    multipliers = {
        side: check_lr_multipliers([value])[0]
        for side, value in zip(SIDES, (loss_lr_multiplier, baseline_lr_multiplier))
    }
    evaluator = evaluator if evaluator is not None else _new_evaluator()
    sides = [(side, side_loss, multipliers[side]) for side, side_loss in zip(SIDES, (loss, baseline))]
    records = _train_runs(sides, task, runs, evaluator, progress, on_run)
    scale = _loss_scale(loss, task) if measure_loss_scale else None
    return _comparison(loss_name, baseline_name, task, records, multipliers, scale)


def compare_tuned(
    loss: Any,
    baseline: Any,
    task: Task,
    runs: int = 10,
    *,
    loss_name: str = "loss",
    baseline_name: str = "baseline",
    lr_multipliers: Sequence[float] = DEFAULT_LR_MULTIPLIERS,
    tuning_seeds: int = DEFAULT_TUNING_SEEDS,
    tune_loss_lr: bool = False,
    measure_loss_scale: bool = False,
    evaluator: Evaluator | None = None,
    progress: ProgressFn | None = None,
    on_run: Callable[[RunRecord], None] | None = None,
    on_tuning_run: TuningFn | None = None,
) -> TunedComparison:
    """The plain comparison, and the same against the baseline at its best learning rate.

    1. :func:`choose_learning_rate` picks the baseline's multiplier from
       ``lr_multipliers`` on the validation split, with seeds ``task.seed + runs
       + j`` for ``j < tuning_seeds`` (none of them a comparison run's seed); with
       ``tune_loss_lr`` the loss's rate is chosen the same way;
    2. :func:`compare` at the task's rate (the plain comparison);
    3. the comparison at the chosen rates. A side whose chosen multiplier is 1
       keeps its plain runs (same seeds, same training), so only the other side
       trains again.
    """
    _check_runs(runs)
    _check_task(task)
    multipliers = check_lr_multipliers(lr_multipliers)
    if isinstance(tuning_seeds, bool) or not isinstance(tuning_seeds, int) or tuning_seeds < 1:
        raise ValueError(f"tuning_seeds must be an integer >= 1, got {tuning_seeds!r}")
    evaluator = evaluator if evaluator is not None else _new_evaluator()
    seeds = [task.seed + runs + j for j in range(tuning_seeds)]
    choose = functools.partial(
        choose_learning_rate, task=task, seeds=seeds, multipliers=multipliers, evaluator=evaluator, on_run=on_tuning_run
    )
    baseline_lr = choose(baseline, side="baseline")
    loss_lr = choose(loss, side="loss") if tune_loss_lr else None
    plain = compare(
        loss,
        baseline,
        task,
        runs,
        loss_name=loss_name,
        baseline_name=baseline_name,
        measure_loss_scale=measure_loss_scale,
        evaluator=evaluator,
        progress=progress,
        on_run=on_run,
    )
    chosen = {"loss": loss_lr.chosen if loss_lr else 1.0, "baseline": baseline_lr.chosen}
    kept = [r for r in plain.records if chosen[r.side] == 1.0]
    retrain = [
        (side, side_loss, chosen[side]) for side, side_loss in zip(SIDES, (loss, baseline)) if chosen[side] != 1.0
    ]
    records = kept + _train_runs(retrain, task, runs, evaluator, progress, on_run)
    records.sort(key=lambda r: (r.run, SIDES.index(r.side)))
    tuned = _comparison(loss_name, baseline_name, task, records, chosen, plain.loss_scale)
    return TunedComparison(plain=plain, tuned=tuned, baseline_lr=baseline_lr, loss_lr=loss_lr)


# ----------------------------------------------------------------------------- helpers


def _train_runs(
    sides: Sequence[tuple[str, Any, float]],
    task: Task,
    runs: int,
    evaluator: Evaluator,
    progress: ProgressFn | None,
    on_run: Callable[[RunRecord], None] | None,
) -> list[RunRecord]:
    """Run ``i`` of each (side, loss, lr multiplier) with seed ``task.seed + i``, scored on the test split."""
    records: list[RunRecord] = []
    for run in range(runs):
        seed = task.seed + run
        for side, side_loss, multiplier in sides:
            run_task = task.replace(seed=seed, lr_scale=task.lr_scale * multiplier)
            step_progress = None
            if progress is not None:
                step_progress = lambda done, total, s=side, r=run: progress(s, r, done, total)  # noqa: E731
            result = evaluator.evaluate(side_loss, run_task, step_progress, test=True)
            record = RunRecord(
                side=side,
                run=run,
                seed=seed,
                status=result.status,
                test_accuracy=float(cast(float, result.test_accuracy)),  # set: evaluated with test=True
                val_accuracy=float(result.val_accuracy),
                steps=result.steps,
                attempts=result.attempts,
                wall_time_s=result.wall_time_s,
                lr_scale=run_task.lr_scale,
            )
            records.append(record)
            if on_run is not None:
                on_run(record)
    return records


def _comparison(
    loss_name: str,
    baseline_name: str,
    task: Task,
    records: Sequence[RunRecord],
    multipliers: dict[str, float],
    loss_scale: LossScale | None,
) -> Comparison:
    from taylorglo_tf import stats

    by_side = {side: [r.test_accuracy for r in records if r.side == side] for side in SIDES}
    return Comparison(
        loss_name=loss_name,
        baseline_name=baseline_name,
        task=task,
        records=tuple(records),
        summaries={side: stats.summarize(values, side) for side, values in by_side.items()},
        welch=stats.welch_t_test(by_side["loss"], by_side["baseline"], alternative="greater"),
        lr_multipliers=dict(multipliers),
        loss_scale=loss_scale,
    )


def _check_runs(runs: Any) -> None:
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 2:
        raise ValueError(f"runs must be an integer >= 2 (Welch's t-test needs 2 per side), got {runs!r}")


def _check_task(task: Any) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"task must be a training.Task, got {type(task).__name__}")


def _new_evaluator() -> Evaluator:
    from taylorglo_tf.training import Evaluator

    return Evaluator()


def _loss_scale(loss: Any, task: Task) -> LossScale | None:
    from taylorglo_tf.training import loss_scale, sources

    if sources.kind(task.model) != "zoo":
        # The measure builds the zoo model without its softmax to get logits; a user's model
        # ends in its own output layer, so there is none to measure against: not reported.
        return None
    return loss_scale(loss, task)


def _finite_or_none(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (value if not isinstance(value, float) or math.isfinite(value) else None) for key, value in values.items()
    }


def _points(difference: float) -> str:
    """A difference of accuracies in percentage points, signed."""
    return f"{100 * difference:+.2f} points"
