"""One running experiment: its current generation, its queue, and the step to the next generation.

:class:`ExperimentRun` is plain state (the scheduler guards it with its lock).
:func:`compute_step` is pure: from a complete generation and the stored
optimizer state it computes the generation's summary, the optimizer's new state
and the next generation's candidates, without touching the database or any
lock, so the scheduler can run it outside its lock and commit the result in one
transaction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.rpc import types_pb2

from . import early_stopping, optimizers
from .model import CandidateRecord, ExperimentRecord, GenerationRecord

Prescreen = Callable[[np.ndarray, int], bool]


class ExperimentRun:
    """An unfinished experiment's record, current generation and queue of candidate indices to lease."""

    def __init__(self, record: ExperimentRecord, candidates: Sequence[CandidateRecord]) -> None:
        self.record = record
        self.candidates = list(candidates)
        self.queue: deque[int] = deque(c.index for c in self.candidates if queued(c))
        # its step to the next generation is queued or being computed
        self.advancing = False
        # (generation, checkpoint values of earlier generations): the median rule's, read once per generation
        self.checkpoint_history: tuple[int, dict[int, list[float]]] | None = None

    @property
    def id(self) -> str:
        return self.record.id

    def complete(self) -> bool:
        return all(c.final for c in self.candidates)

    def next_generation(self, record: ExperimentRecord, candidates: Sequence[CandidateRecord]) -> None:
        self.record = record
        self.candidates = list(candidates)
        self.queue = deque(c.index for c in self.candidates if queued(c))

    def put(self, candidate: CandidateRecord) -> None:
        """Apply a stored change of one candidate; a final one leaves the queue."""
        self.candidates[candidate.index] = candidate
        if candidate.final and candidate.index in self.queue:
            self.queue.remove(candidate.index)  # an expired lease's report arrived while it waited

    def requeue(self, candidate: CandidateRecord) -> None:
        """Apply a stored requeue: it goes first, having waited longest."""
        self.candidates[candidate.index] = candidate
        if candidate.index not in self.queue:
            self.queue.appendleft(candidate.index)


@dataclass(frozen=True)
class Step:
    """A computed step: the finished generation's summary and what comes next."""

    summary: GenerationRecord
    candidates: list[CandidateRecord]
    optimizer_state: bytes
    last: bool
    time: float


def ask(
    optimizer: optimizers.Optimizer, record: ExperimentRecord, generation: int, now: float, prescreen: Prescreen
) -> list[CandidateRecord]:
    """Generation ``generation``'s candidates; pre-screened invalid ones are final already."""
    search, loss = record.spec.search, record.spec.loss
    screen = search.invariant_prescreen and spec_lib.prescreen_applies(loss)
    candidates = []
    for index, theta in enumerate(optimizer.ask()):
        c = CandidateRecord(record.id, generation, index, theta, create_time=now)
        if screen and not prescreen(theta, search.num_classes):
            c = replace(
                c,
                status=types_pb2.CANDIDATE_STATUS_INVALID,
                finish_time=now,
                error="rejected by the invariant pre-screen",
            )
        candidates.append(c)
    return candidates


def compute_step(
    record: ExperimentRecord, candidates: Sequence[CandidateRecord], now: float, prescreen: Prescreen
) -> Step:
    """Tell the optimizer the complete generation; ask the next one unless this was the last."""
    optimizer = optimizers.restore(record.spec, record.es_state)
    thetas = [c.theta for c in candidates]
    rule = early_stopping.rule_of(record.spec)
    optimizer.tell(thetas, np.array([early_stopping.told_fitness(rule, c) for c in candidates]))
    fitness = np.array([c.fitness for c in candidates])
    best = int(np.argmax(fitness))
    # The mean of what trained in full: a stopped candidate's fitness is a rank, not an accuracy.
    full = [c.fitness for c in candidates if c.status != types_pb2.CANDIDATE_STATUS_STOPPED]
    summary = GenerationRecord(
        record.id,
        record.generation,
        float(fitness[best]),
        float(np.mean(full)) if full else float(fitness.mean()),
        thetas[best],
        optimizer.mean,
        optimizer.sigma,
        now,
    )
    last = record.generation + 1 >= record.spec.search.generations
    nxt = [] if last else ask(optimizer, record, record.generation + 1, now, prescreen)
    return Step(summary, nxt, optimizer.state(), last, now)


def queued(c: CandidateRecord) -> bool:
    return c.status == types_pb2.CANDIDATE_STATUS_QUEUED


_TRAINED = frozenset(
    {
        types_pb2.CANDIDATE_STATUS_SUCCEEDED,
        types_pb2.CANDIDATE_STATUS_DIVERGED,
        types_pb2.CANDIDATE_STATUS_ABORTED,
        types_pb2.CANDIDATE_STATUS_STOPPED,
    }
)


def untrainable(generation: int, candidates: Sequence[CandidateRecord]) -> str:
    """Why a complete generation shows that the task cannot run on the trainers, or ``""``.

    That is the case when candidates were sent to trainers, every one of them
    FAILED (errors or expired leases, ``max_attempts`` times each) and none
    trained: a missing dataset or an unknown model on the trainers, not a bad loss.
    """
    failed = [c for c in candidates if c.status == types_pb2.CANDIDATE_STATUS_FAILED]
    if not failed or any(c.status in _TRAINED for c in candidates):
        return ""
    return (
        f"every candidate of generation {generation} sent to trainers failed ({len(failed)} of "
        f"{len(candidates)}); first error: {_error_summary(failed[0].error)}"
    )


def all_prescreened(candidates: Sequence[CandidateRecord]) -> str:
    """Why an experiment trained nothing at all, or ``""``: every candidate of every generation was INVALID."""
    if not candidates or any(c.status != types_pb2.CANDIDATE_STATUS_INVALID for c in candidates):
        return ""
    generations = len({c.generation for c in candidates})
    return (
        f"every candidate of every generation failed the invariant pre-screen ({len(candidates)} "
        f"candidates in {generations} generations); nothing was trained"
    )


def _error_summary(error: str) -> str:
    """The exception line of a reported traceback (the last unindented line), else the error's last line."""
    lines = [line for line in error.splitlines() if line.strip()]
    unindented = [line for line in lines if not line[0].isspace()]
    return (unindented or lines or ["(no error message)"])[-1].strip()


def with_results(record: ExperimentRecord, finished: Sequence[CandidateRecord]) -> ExperimentRecord:
    """``record`` with its counters and best-so-far updated by newly final candidates.

    Only a candidate that trained successfully can be the best: a failed or
    pre-screened one's theta says nothing about the loss.
    """
    done, best, best_theta = record.evaluations_done, record.best_fitness, record.best_theta
    for c in finished:
        if not c.final:
            continue
        done += 1
        if c.status == types_pb2.CANDIDATE_STATUS_SUCCEEDED and (c.fitness > best or best_theta.size == 0):
            best, best_theta = c.fitness, c.theta
    return replace(record, evaluations_done=done, best_fitness=best, best_theta=best_theta)
