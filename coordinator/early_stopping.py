"""Early stopping: which candidates of a generation stop at a checkpoint, from their validation accuracy there.

A rule (``search.early_stopping``, :data:`taylorglo_tf.spec.EARLY_STOPPING_RULES`) has
checkpoints, fractions of a task's training steps (:data:`CHECKPOINTS`); trainers
report each candidate's validation accuracy there, and the rule decides from those
values which candidates stop. Pure functions over candidate records: the scheduler
stores what they decide (``CandidateRecord.stopped_at``) before any trainer hears it.

- ``none``: no checkpoint; every candidate trains in full (the paper).
- ``successive_halving`` (deterministic): once every candidate of the generation has
  reached a checkpoint (or ended, or stopped, before it), the best half of those that
  reached it go on (rounded down, at least one; ties: lower index first) and the rest
  stop there: about half go on from 1/5 of the steps and a quarter train in full from
  2/5, 0.45 of the generation's training steps. A candidate that ended before a
  checkpoint (diverged, rejected by the pre-screen) takes no place among them. The decision uses
  only values every candidate reached, so the same spec gives the same search,
  however trainers are timed; a candidate that ran ahead of the decision keeps its
  result waiting (WAITING) until it is made.
- ``median`` (depends on timing): a candidate stops at a checkpoint as it reports it,
  when its value is below the median of the values that other candidates of this and
  earlier generations reported there, once :data:`MEDIAN_MIN_VALUES` have (Optuna's
  MedianPruner, Vizier's median automated stopping). Which values have arrived depends
  on the trainers' timing.

A stopped candidate's fitness (:func:`stopped_fitness`) ranks it below every candidate
that trained in full, higher the further it got; the search algorithm is told it as it
is, and a failed candidate below it (:func:`told_fitness`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence

from taylorglo_tf.rpc import types_pb2

from .model import CandidateRecord

#: The checkpoints of every rule but ``none``: fractions of a task's training steps. With successive
#: halving a generation trains 0.2 + 0.2 / 2 + 0.6 / 4 = 0.45 of its steps (at 1/4 and 1/2 it would be
#: 0.5, and rounding and chance put a search's total above the half; docs/BENCHMARKS.md).
CHECKPOINTS = (0.2, 0.4)
#: ``median`` stops nothing at a checkpoint until this many other values were reported there.
MEDIAN_MIN_VALUES = 5

NONE, HALVING, MEDIAN = "none", "successive_halving", "median"


def rule_of(spec: types_pb2.ExperimentSpec) -> str:
    """The experiment's rule; "" (an experiment stored before the field existed) is ``none``."""
    return spec.search.early_stopping or NONE


def checkpoints(rule: str) -> tuple[float, ...]:
    """The rule's checkpoints, fractions of the task's steps (what a lease carries)."""
    return () if rule == NONE else CHECKPOINTS


def stopped_fitness(stopped_at: int, value: float, count: int = len(CHECKPOINTS)) -> float:
    """``(stopped_at - 1 + value) / count - 1``: in [-1, 0], below every fitness of a full training
    (validation accuracy, >= 0), ordered by the checkpoint reached, then by the value there."""
    return (stopped_at - 1 + value) / count - 1.0


#: What the search algorithm is told for a candidate that failed (diverged, aborted, failed, invalid)
#: when a rule is on: below every stopped candidate's fitness (>= -1), which got further.
FAILURE_FITNESS = -2.0
_FAILURES = frozenset(
    {
        types_pb2.CANDIDATE_STATUS_DIVERGED,
        types_pb2.CANDIDATE_STATUS_ABORTED,
        types_pb2.CANDIDATE_STATUS_FAILED,
        types_pb2.CANDIDATE_STATUS_INVALID,
    }
)


def told_fitness(rule: str, c: CandidateRecord) -> float:
    """What the search algorithm is told for a finished candidate: its fitness, except that with a
    rule on, a failure (stored with fitness 0) ranks below every stopped candidate (fitness in
    [-1, 0]): a stopped candidate trained and measured something, a failure did not."""
    if rule != NONE and c.status in _FAILURES:
        return FAILURE_FITNESS
    return c.fitness


def resolved(c: CandidateRecord, index: int, stopped_at: Mapping[int, int]) -> bool:
    """Whether checkpoint ``index``'s decision can count ``c``: it has a value there, was stopped before
    it, or ended (or waits with its result) without one."""
    if c.value_at(index) is not None:
        return True
    stop = stopped_at.get(c.index, c.stopped_at)
    if 0 < stop <= index:
        return True
    return c.final or c.status == types_pb2.CANDIDATE_STATUS_WAITING


def decided_through(candidates: Sequence[CandidateRecord]) -> int:
    """``successive_halving``: how many checkpoints (from the first) every candidate has resolved."""
    for index in range(len(CHECKPOINTS)):
        if not all(resolved(c, index, {}) for c in candidates):
            return index
    return len(CHECKPOINTS)


def halving(candidates: Sequence[CandidateRecord]) -> dict[int, int]:
    """New ``successive_halving`` decisions for one generation: candidate index -> checkpoint (1-based).

    Recomputed from the stored values each time (decisions already stored come out
    the same): at each checkpoint whose values are all in, the candidates that
    reached it still in the running rank by value (higher first, then lower index)
    and all but the best half (rounded down, at least one) stop there, unless they
    already ended (a failure keeps its own status).
    """
    stopped_at = {c.index: c.stopped_at for c in candidates if c.stopped_at}
    decisions: dict[int, int] = {}
    for index in range(len(CHECKPOINTS)):
        if not all(resolved(c, index, stopped_at) for c in candidates):
            break
        reached = [
            c for c in candidates if c.value_at(index) is not None and not 0 < stopped_at.get(c.index, 0) <= index
        ]
        reached.sort(key=lambda c: (-(c.value_at(index) or 0.0), c.index))
        for c in reached[max(1, len(reached) // 2) :]:
            if c.index in stopped_at or (c.final and c.status != types_pb2.CANDIDATE_STATUS_WAITING):
                continue
            stopped_at[c.index] = decisions[c.index] = index + 1
    return decisions


def median(
    candidates: Sequence[CandidateRecord], new: Iterable[tuple[int, int]], history: Mapping[int, Sequence[float]]
) -> dict[int, int]:
    """New ``median`` decisions for the values just reported: ``new`` holds (candidate index, checkpoint index)
    pairs, ``history[checkpoint]`` the values of earlier generations there."""
    by_index = {c.index: c for c in candidates}
    decisions: dict[int, int] = {}
    for candidate_index, checkpoint in sorted(new, key=lambda pair: (pair[1], pair[0])):
        c = by_index[candidate_index]
        value = c.value_at(checkpoint)
        if value is None or c.stopped_at or candidate_index in decisions or c.final:
            continue
        others = [
            other.value_at(checkpoint)
            for other in candidates
            if other.index != candidate_index and other.value_at(checkpoint) is not None
        ]
        reference = [*history.get(checkpoint, ()), *(v for v in others if v is not None)]
        if len(reference) >= MEDIAN_MIN_VALUES and value < statistics.median(reference):
            decisions[candidate_index] = checkpoint + 1
    return decisions


def decide(
    rule: str,
    candidates: Sequence[CandidateRecord],
    new: Iterable[tuple[int, int]] = (),
    history: Mapping[int, Sequence[float]] | None = None,
) -> dict[int, int]:
    """The rule's new decisions for one generation: candidate index -> checkpoint (1-based) where it stops."""
    if rule == HALVING:
        return halving(candidates)
    if rule == MEDIAN:
        return median(candidates, new, history or {})
    return {}


def waits(rule: str, candidates: Sequence[CandidateRecord], c: CandidateRecord) -> bool:
    """Whether ``c`` reached a checkpoint whose decision is not made yet (``successive_halving`` only):
    its result must wait for it."""
    if rule != HALVING or c.stopped_at:
        return False
    through = decided_through(candidates)
    return any(c.value_at(index) is not None for index in range(through, len(CHECKPOINTS)))


def holds(rule: str, candidates: Sequence[CandidateRecord], c: CandidateRecord) -> bool:
    """Whether ``c``'s trainer should wait at its checkpoint for the decision: it waits for one, and every
    candidate the decision still needs is in training (so it will come without this trainer's slot)."""
    if not waits(rule, candidates, c):
        return False
    index = decided_through(candidates)
    missing = [other for other in candidates if not resolved(other, index, {})]
    return all(other.status == types_pb2.CANDIDATE_STATUS_LEASED for other in missing)


def history_values(candidates: Iterable[CandidateRecord]) -> dict[int, list[float]]:
    """Values by checkpoint index of finished generations' candidates (the ``median`` rule's history)."""
    values: dict[int, list[float]] = {}
    for c in candidates:
        for index, _, value in c.checkpoints:
            values.setdefault(index, []).append(value)
    return values
