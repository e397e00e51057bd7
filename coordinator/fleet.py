"""The trainers a coordinator has seen, and the measured pace of each experiment.

The servicer tells :class:`Fleet` about every trainer call (``leased``,
``heartbeat``, ``reported``, ``returned``); the scheduler's finished-candidate
events feed the experiments' rates. A trainer silent for longer than the lease
TTL is shown as lost, never forgotten: an operator sees which trainers died.

The fleet has a lock of its own, held only for dictionary updates: reading it
(``taylorglo trainers``, a Prometheus scrape) never takes the scheduler's lock.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from taylorglo_tf.rpc import experiment_service_pb2 as es_pb2

from .defaults import FORGET_LOST_TRAINER_S, RATE_WINDOW_S
from .model import ExperimentRecord


@dataclass
class TrainerState:
    """What the coordinator knows about one trainer (a snapshot when returned by :meth:`Fleet.trainers`)."""

    trainer_id: str
    first_seen: float
    last_contact: float
    leases: set[str] = field(default_factory=set)
    evaluations: int = 0
    failures: int = 0
    lost: bool = False
    steps_per_s: float = 0.0
    # (monotonic time, candidate-steps) of recent heartbeats' progress, for the rate
    _progress: collections.deque = field(default_factory=collections.deque, repr=False)
    _steps: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def leases_held(self) -> int:
        return 0 if self.lost else len(self.leases)


@dataclass(frozen=True)
class ExperimentPace:
    """Candidates finished per second over the last window, and the seconds left at that pace."""

    experiment_id: str
    candidates_per_s: float
    eta_s: float | None  # None until a rate is measured


def _trim(samples: collections.deque, now: float, window: float) -> None:
    while samples and samples[0][0] < now - window:
        samples.popleft()


def _rate(samples: collections.deque, now: float, window: float) -> float:
    """Sum of the amounts in ``samples`` ((time, amount) pairs) per second over the last ``window``."""
    _trim(samples, now, window)
    if not samples:
        return 0.0
    span = max(now - samples[0][0], 1.0)  # one burst of results is not an infinite rate
    return sum(amount for _, amount in samples) / span


class Fleet:
    """Thread-safe record of trainers and experiment pace; ``lost_after_s`` is the lease TTL."""

    def __init__(
        self, lost_after_s: float, *, clock: Callable[[], float] = time.monotonic, window_s: float = RATE_WINDOW_S
    ):
        self._lost_after_s = lost_after_s
        self._clock = clock
        self._window_s = window_s
        self._lock = threading.Lock()
        self._trainers: dict[str, TrainerState] = {}
        self._finished: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.leases_granted = 0
        self.reports: collections.Counter[str] = collections.Counter()

    def _seen(self, trainer_id: str, now: float) -> TrainerState:
        state = self._trainers.get(trainer_id)
        if state is None:
            state = self._trainers[trainer_id] = TrainerState(trainer_id, first_seen=now, last_contact=now)
        state.last_contact = now
        return state

    def leased(self, trainer_id: str, lease_ids: list[str]) -> None:
        """A LeaseCandidate call answered (``lease_ids`` may be empty: no work)."""
        with self._lock:
            state = self._seen(trainer_id, self._clock())
            state.leases.update(lease_ids)
            self.leases_granted += len(lease_ids)

    def heartbeat(self, trainer_id: str, steps: list[tuple[str, int]]) -> None:
        """A heartbeat with ``(lease_id, steps_done)`` per lease: new steps count toward the trainer's rate."""
        with self._lock:
            now = self._clock()
            state = self._seen(trainer_id, now)
            new_steps = 0
            for lease_id, steps_done in steps:
                before = state._steps.get(lease_id, 0)
                new_steps += max(steps_done - before, 0)  # a retried candidate restarts at step 1
                state._steps[lease_id] = steps_done
            if new_steps:
                state._progress.append((now, new_steps))
                _trim(state._progress, now, self._window_s)  # bounded whether or not anyone reads it

    def reported(self, trainer_id: str, lease_id: str, status: str, steps: int = 0) -> None:
        """A ReportResult: ``status`` is the evaluation status's name (``OK``, ``ERROR``, ...)."""
        with self._lock:
            now = self._clock()
            state = self._seen(trainer_id, now)
            state.leases.discard(lease_id)
            before = state._steps.pop(lease_id, 0)
            if steps > before:
                state._progress.append((now, steps - before))
                _trim(state._progress, now, self._window_s)
            state.evaluations += 1
            if status in ("ERROR", "ABORTED"):
                state.failures += 1
            self.reports[status] += 1

    def returned(self, trainer_id: str, lease_id: str) -> None:
        with self._lock:
            state = self._seen(trainer_id, self._clock())
            state.leases.discard(lease_id)
            state._steps.pop(lease_id, None)

    def counts(self) -> tuple[int, dict[str, int]]:
        """(leases granted, reports by status), read together under the fleet's lock."""
        with self._lock:
            return self.leases_granted, dict(self.reports)

    def candidate_finished(self, experiment_id: str) -> None:
        """One candidate of the experiment reached a final state (the scheduler's event)."""
        with self._lock:
            now = self._clock()
            finished = self._finished[experiment_id]
            finished.append((now, 1))
            _trim(finished, now, self._window_s)

    def trainers(self) -> list[TrainerState]:
        """Snapshots, oldest first; a trainer silent past the TTL is ``lost`` and holds no lease, and
        one silent for :data:`~.defaults.FORGET_LOST_TRAINER_S` is forgotten."""
        with self._lock:
            now = self._clock()
            out = []
            for trainer_id, state in list(self._trainers.items()):
                if now - state.last_contact > FORGET_LOST_TRAINER_S:
                    del self._trainers[trainer_id]
                    continue
                lost = now - state.last_contact > self._lost_after_s
                if lost:
                    state.leases.clear()  # its leases expire with the same TTL
                    state._steps.clear()
                out.append(
                    TrainerState(
                        state.trainer_id,
                        first_seen=state.first_seen,
                        last_contact=state.last_contact,
                        leases=set(state.leases),
                        evaluations=state.evaluations,
                        failures=state.failures,
                        lost=lost,
                        steps_per_s=0.0 if lost else _rate(state._progress, now, self._window_s),
                    )
                )
            return out

    def pace(self, experiment_id: str, remaining: int) -> ExperimentPace:
        """The experiment's measured rate, and the ETA of its ``remaining`` candidates."""
        with self._lock:
            rate = _rate(self._finished[experiment_id], self._clock(), self._window_s)
        return ExperimentPace(experiment_id, rate, remaining / rate if rate > 0 else None)

    def forget_experiment(self, experiment_id: str) -> None:
        with self._lock:
            self._finished.pop(experiment_id, None)


def fleet_response(fleet: Fleet, records: list[ExperimentRecord], now: float | None = None) -> es_pb2.GetFleetResponse:
    """The GetFleet answer: every trainer seen, and the pace of each running experiment in ``records``."""
    now = time.monotonic() if now is None else now
    trainers = [
        es_pb2.TrainerInfo(
            trainer_id=t.trainer_id,
            idle_s=max(now - t.last_contact, 0.0),
            lost=t.lost,
            leases_held=t.leases_held,
            evaluations=t.evaluations,
            failures=t.failures,
            candidate_steps_per_s=t.steps_per_s,
            seen_for_s=max(now - t.first_seen, 0.0),
        )
        for t in fleet.trainers()
    ]
    experiments = []
    for record in records:
        if record.final:
            continue
        remaining = max(record.evaluations_total - record.evaluations_done, 0)
        pace = fleet.pace(record.id, remaining)
        experiments.append(
            es_pb2.ExperimentPace(
                experiment_id=record.id,
                candidates_per_s=pace.candidates_per_s,
                remaining_candidates=remaining,
                eta_s=pace.eta_s,
            )
        )
    return es_pb2.GetFleetResponse(trainers=trainers, experiments=experiments)
