"""The search logic: experiments, generations, CMA-ES, leases, fairness, progress events.

One :class:`Scheduler` serves every experiment of a coordinator. Its rules:

- Store before dispatch. A generation's candidates and the pickled CMA-ES state
  (taken right after ``ask()``) are committed in one transaction before any
  trainer can lease them. ``ask()`` is never called twice for one generation: a
  restarted coordinator unpickles that state instead.
- Told once. When the last candidate of generation g gets its final result, one
  transaction records g's summary, the strategy after ``tell()`` and generation
  g+1's candidates. A crash before that commit leaves g complete in the database
  with the pre-``tell`` state, so the restart repeats exactly the same step.
- Every change is committed before it is applied in memory and acknowledged, so
  a failed write loses nothing and a restart sees what clients were told.
- Leases expire on the coordinator (heartbeats extend them in memory only; a
  restart gives every open lease a fresh TTL). An expired lease spends its
  attempt; after ``max_attempts`` the candidate is FAILED with fitness 0 and the
  generation still completes. ReturnLease requeues without spending an attempt.
- Reports are idempotent: the first final report for a candidate counts, whether
  it comes from the current lease or an expired one; later ones change nothing.
- Fairness: leases go round-robin over running experiments with queued work.

All state is guarded by one condition variable; LeaseCandidate long-polls on it.
The CMA-ES step between generations is computed outside it (see
:meth:`Scheduler._step_pending`), so one experiment's step does not stall the
lease path of the others.
"""

from __future__ import annotations

import logging
import math
import queue
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import numpy as np

from coordinator import cmaes
from coordinator.defaults import DEFAULT_LEASE_TTL_S
from coordinator.grpc_util import FailedPrecondition, NotFound, Unavailable
from coordinator.model import (
    CandidateRecord,
    ExperimentRecord,
    GenerationRecord,
    LeaseRecord,
    result_proto,
)
from coordinator.storage import Storage
from taylorglo_tf import spec as spec_lib
from taylorglo_tf.rpc import experiment_service_pb2 as es_pb2
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws_pb2

log = logging.getLogger(__name__)

Prescreen = Callable[[np.ndarray, int], bool]
ProgressEvent = es_pb2.ProgressEvent

MAX_ERROR_CHARS = 4000

# EvaluationStatus of a report -> final CandidateStatus (ERROR is retried instead).
_FINAL_STATUS = {
    ws_pb2.EVALUATION_STATUS_OK: types_pb2.CANDIDATE_STATUS_SUCCEEDED,
    ws_pb2.EVALUATION_STATUS_DIVERGED: types_pb2.CANDIDATE_STATUS_DIVERGED,
    ws_pb2.EVALUATION_STATUS_ABORTED: types_pb2.CANDIDATE_STATUS_ABORTED,
}


def invariant_prescreen(theta: np.ndarray, num_classes: int) -> bool:
    """Default pre-screen: :func:`taylorglo_tf.invariant.is_valid` (NumPy only)."""
    from taylorglo_tf.invariant import is_valid

    return bool(is_valid(theta, num_classes))


@dataclass
class _Running:
    """An unfinished experiment's current generation."""

    record: ExperimentRecord
    candidates: list[CandidateRecord]
    queue: deque[int]
    # every lease granted in this generation -> (candidate index, trainer id)
    owners: dict[str, tuple[int, str]] = field(default_factory=dict)
    # its CMA-ES step is queued or being computed
    advancing: bool = False


@dataclass(frozen=True)
class _Step:
    """A computed CMA-ES step: the finished generation's summary and what comes next."""

    summary: GenerationRecord
    candidates: list[CandidateRecord]
    es_state: bytes
    last: bool
    time: float


@dataclass
class _ActiveLease:
    lease_id: str
    trainer_id: str
    run: _Running
    index: int
    expires: float


@dataclass
class Report:
    """A trainer's report, already validated by the servicer."""

    lease_id: str
    trainer_id: str
    status: int
    fitness: float
    metrics: types_pb2.EvaluationMetrics | None
    error: str = ""


class Scheduler:
    """Experiments, CMA-ES and leases over a :class:`~coordinator.storage.Storage`.

    ``lease_ttl_s``: seconds a lease lives without a heartbeat. ``prescreen``:
    ``(theta, num_classes) -> valid`` for specs that ask for the invariant
    pre-screen. ``clock`` (monotonic seconds, for expiry) and ``wall`` (epoch
    seconds, for records) are injectable for tests.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        prescreen: Prescreen = invariant_prescreen,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        if not (math.isfinite(lease_ttl_s) and lease_ttl_s > 0):
            raise ValueError(f"lease_ttl_s={lease_ttl_s!r} must be a positive number of seconds")
        self._storage = storage
        self.lease_ttl_s = float(lease_ttl_s)
        self._prescreen = prescreen
        self._clock = clock
        self._wall = wall
        self._cond = threading.Condition(threading.RLock())
        self._experiments: dict[str, ExperimentRecord] = {}
        self._running: dict[str, _Running] = {}
        self._owners: dict[str, _Running] = {}  # lease id -> its generation (current generations only)
        self._leases: dict[str, _ActiveLease] = {}
        self._watchers: dict[str, list[queue.SimpleQueue]] = defaultdict(list)
        self._pending: list[_Running] = []  # runs whose CMA-ES step is due
        self._rr_next = 0
        self._stopping = False
        self._reaper: threading.Thread | None = None
        self._reaper_stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, reaper: bool = True) -> None:
        """Load every experiment and resume the unfinished ones; start the lease reaper."""
        with self._cond:
            now = self._clock()
            for record in self._storage.load_experiments():
                self._experiments[record.id] = record
                if record.final:
                    continue
                candidates = self._storage.load_candidates(record.id, record.generation)
                run = _Running(record, candidates, deque(c.index for c in candidates if _queued(c)))
                for lease in self._storage.load_leases(record.id, record.generation):
                    run.owners[lease.lease_id] = (lease.index, lease.trainer_id)
                    self._owners[lease.lease_id] = run
                for c in candidates:
                    if c.status == types_pb2.CANDIDATE_STATUS_LEASED and c.lease_id in run.owners:
                        # trainers may still be working: give them a full TTL to heartbeat again
                        trainer = run.owners[c.lease_id][1]
                        self._leases[c.lease_id] = _ActiveLease(c.lease_id, trainer, run, c.index, now + self.lease_ttl_s)
                    elif c.status == types_pb2.CANDIDATE_STATUS_LEASED:
                        run.queue.append(c.index)  # lease row missing: cannot happen with one transaction
                self._running[record.id] = run
                log.info("resumed experiment %s at generation %d", record.id, record.generation)
                self._advance(run)
        self._step_pending()
        if reaper:
            interval = min(1.0, self.lease_ttl_s / 4)
            self._reaper = threading.Thread(target=self._reap, args=(interval,), name="lease-reaper", daemon=True)
            self._reaper.start()

    def stop(self) -> None:
        """Stop dispatching and end watch streams; leases stay in the database."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            for queues in self._watchers.values():
                for q in queues:
                    q.put(None)
        self._reaper_stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)

    def _reap(self, interval: float) -> None:
        while not self._reaper_stop.wait(interval):
            try:
                self.expire_leases()
                self.retry_stalled()
            except Exception:  # keep reaping; the next pass retries
                log.exception("lease expiry failed")

    def retry_stalled(self) -> None:
        """Advance generations whose last result is stored but whose next step failed to commit."""
        with self._cond:
            for run in list(self._running.values()):
                self._advance(run)
        self._step_pending()

    # ------------------------------------------------------------------ experiments

    def submit(self, spec: types_pb2.ExperimentSpec) -> types_pb2.Experiment:
        """Store a validated spec (see :func:`taylorglo_tf.spec.load_spec`) with its first generation."""
        with self._cond:
            if self._stopping:
                raise Unavailable("the coordinator is shutting down")
            exp_id = secrets.token_hex(8)
            now = self._wall()
            search = spec.search
            es = cmaes.new_strategy(spec_lib.theta_length(spec.loss), search.sigma0, search.population, search.seed)
            record = ExperimentRecord(id=exp_id, spec=spec, state=types_pb2.EXPERIMENT_STATE_RUNNING,
                                      create_time=now, update_time=now)
            candidates = self._ask(es, record, 0, now)
            record = _with_results(replace(record, es_state=cmaes.dumps(es)), candidates)
            self._storage.insert_experiment(record, candidates)
            run = _Running(record, candidates, deque(c.index for c in candidates if _queued(c)))
            self._experiments[exp_id] = record
            self._running[exp_id] = run
            log.info("experiment %s submitted: %d generations x %d", exp_id, search.generations, search.population)
            self._advance(run)
            self._cond.notify_all()
        self._step_pending()
        return self.get(exp_id)

    def get(self, experiment_id: str) -> types_pb2.Experiment:
        with self._cond:
            return self._record(experiment_id).to_proto()

    def list(self) -> list[types_pb2.Experiment]:
        """Every experiment, newest first."""
        with self._cond:
            return [r.to_proto() for r in reversed(self._experiments.values())]

    def cancel(self, experiment_id: str) -> types_pb2.Experiment:
        with self._cond:
            record = self._record(experiment_id)
            if record.final:
                raise FailedPrecondition(
                    f"experiment {experiment_id} already finished ({types_pb2.ExperimentState.Name(record.state)})")
            record = replace(record, state=types_pb2.EXPERIMENT_STATE_CANCELLED, update_time=self._wall())
            self._storage.update_experiment(record)
            self._finish(self._running[experiment_id], record)
            return record.to_proto()

    def result(self, experiment_id: str) -> es_pb2.ExperimentResult:
        with self._cond:  # a consistent snapshot: nothing commits while we read
            record = self._record(experiment_id)
            generations = self._storage.load_generations(experiment_id)
            candidates = self._storage.load_candidates(experiment_id)
        # Built outside the lock (tens of ms for thousands of candidates): leases wait only for the reads.
        return result_proto(record, generations, candidates)

    def watch(self, experiment_id: str, is_active: Callable[[], bool] = lambda: True) -> Iterator[ProgressEvent]:
        """A snapshot, then every event of the experiment, ending after its final state."""
        with self._cond:
            record = self._record(experiment_id)
            snapshot = ProgressEvent(kind=ProgressEvent.KIND_SNAPSHOT, experiment=record.to_proto())
            events: queue.SimpleQueue = queue.SimpleQueue()
            follow = not record.final and not self._stopping
            if follow:
                self._watchers[experiment_id].append(events)
        try:
            yield snapshot
            if record.final:
                yield ProgressEvent(kind=ProgressEvent.KIND_EXPERIMENT_FINISHED, experiment=record.to_proto())
            if not follow:
                return
            while True:
                try:
                    event = events.get(timeout=0.5)
                except queue.Empty:
                    if not is_active():
                        return
                    continue
                if event is None:  # coordinator stopping
                    return
                yield event
                if event.kind == ProgressEvent.KIND_EXPERIMENT_FINISHED:
                    return
        finally:
            with self._cond:
                queues = self._watchers.get(experiment_id, [])
                if events in queues:
                    queues.remove(events)

    # ------------------------------------------------------------------ workers

    def lease(self, trainer_id: str, wait_s: float = 0.0,
              is_active: Callable[[], bool] = lambda: True) -> ws_pb2.Lease | None:
        """The next queued candidate (round-robin over experiments), waiting up to ``wait_s`` for one."""
        deadline = self._clock() + wait_s
        with self._cond:
            while True:
                # A caller that hung up (a trainer shutting down mid long-poll) gets
                # nothing: a lease granted to it would only expire, spending an attempt.
                if self._stopping or not is_active():
                    return None
                run = self._pick()
                if run is not None:
                    return self._grant(run, trainer_id)
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 1.0))

    def heartbeat(self, lease_id: str, trainer_id: str) -> tuple[bool, float]:
        """Extend a live lease: ``(keep_going, ttl_s)``; ``(False, 0)`` when it is gone."""
        with self._cond:
            active = self._leases.get(lease_id)
            if active is None or active.trainer_id != trainer_id:
                return False, 0.0
            active.expires = self._clock() + self.lease_ttl_s
            return True, self.lease_ttl_s

    def return_lease(self, lease_id: str, trainer_id: str) -> bool:
        """Queue a leased candidate again without spending its attempt."""
        with self._cond:
            active = self._leases.get(lease_id)
            if active is None or active.trainer_id != trainer_id:
                return False
            run = active.run
            c = run.candidates[active.index]
            updated = replace(c, status=types_pb2.CANDIDATE_STATUS_QUEUED, attempts=c.attempts - 1, lease_id="")
            self._storage.update_candidate(updated)
            run.candidates[c.index] = updated
            del self._leases[lease_id]
            run.queue.appendleft(c.index)
            self._cond.notify_all()
            return True

    def report(self, report: Report) -> tuple[bool, str]:
        """Record a result: ``(accepted, reason)``; only the first final report for a candidate counts."""
        try:
            return self._report(report)
        finally:
            self._step_pending()

    def _report(self, report: Report) -> tuple[bool, str]:
        with self._cond:
            run = self._owners.get(report.lease_id)
            if run is None:
                past = self._storage.find_lease(report.lease_id)
                if past is None:
                    return False, "unknown lease"
                record = self._experiments[past.experiment_id]
                if record.final:
                    return False, f"experiment is {types_pb2.ExperimentState.Name(record.state)}"
                return False, "stale: the candidate of this lease already has a final result"
            index, granted_to = run.owners[report.lease_id]
            if granted_to != report.trainer_id:
                return False, f"the lease was granted to trainer {granted_to!r}"
            if run.record.final:
                return False, f"experiment is {types_pb2.ExperimentState.Name(run.record.state)}"
            c = run.candidates[index]
            if c.final:
                return False, "duplicate: the candidate already has a final result"
            error = report.error[:MAX_ERROR_CHARS]
            if report.status == ws_pb2.EVALUATION_STATUS_ERROR:
                if c.lease_id != report.lease_id:
                    return False, "stale: the lease expired; the candidate was queued again"
                self._retry_or_fail(run, c, error or "the trainer reported an error")
                return True, ""
            fitness = report.fitness if report.status == ws_pb2.EVALUATION_STATUS_OK else 0.0
            self._finish_candidate(run, c, _FINAL_STATUS[report.status], fitness,
                                   trainer_id=report.trainer_id, metrics=report.metrics, error=error)
            self._advance(run)
            return True, ""

    def expire_leases(self) -> int:
        """Requeue (or fail, after max_attempts) candidates whose lease was not heartbeated in time."""
        with self._cond:
            now = self._clock()
            expired = [a for a in self._leases.values() if a.expires <= now]
            for active in expired:
                self._leases.pop(active.lease_id, None)
                run = active.run
                c = run.candidates[active.index]
                if c.lease_id == active.lease_id and not c.final and not run.record.final:
                    log.info("lease %s of %s/%d/%d expired", active.lease_id, run.record.id, c.generation, c.index)
                    self._retry_or_fail(run, c, f"lease expired after {self.lease_ttl_s:g} s without a heartbeat")
        self._step_pending()
        return len(expired)

    # ------------------------------------------------------------------ internals

    def _record(self, experiment_id: str) -> ExperimentRecord:
        record = self._experiments.get(experiment_id)
        if record is None:
            raise NotFound(f"experiment {experiment_id!r} not found")
        return record

    def _pick(self) -> _Running | None:
        ids = list(self._running)
        for k in range(len(ids)):
            i = (self._rr_next + k) % len(ids)
            run = self._running[ids[i]]
            if run.queue:
                self._rr_next = i + 1
                return run
        return None

    def _grant(self, run: _Running, trainer_id: str) -> ws_pb2.Lease:
        index = run.queue[0]
        c = run.candidates[index]
        lease_id = secrets.token_urlsafe(16)
        updated = replace(c, status=types_pb2.CANDIDATE_STATUS_LEASED, attempts=c.attempts + 1, lease_id=lease_id)
        record = LeaseRecord(lease_id, c.experiment_id, c.generation, c.index, updated.attempts, trainer_id,
                             self._wall())
        self._storage.grant_lease(record, updated)
        run.queue.popleft()
        run.candidates[index] = updated
        run.owners[lease_id] = (index, trainer_id)
        self._owners[lease_id] = run
        self._leases[lease_id] = _ActiveLease(lease_id, trainer_id, run, index, self._clock() + self.lease_ttl_s)
        spec = run.record.spec
        return ws_pb2.Lease(
            lease_id=lease_id, experiment_id=c.experiment_id, generation=c.generation, index=c.index,
            theta=c.theta.tolist(), task=spec.task, loss=spec.loss, attempt=updated.attempts,
            ttl_s=self.lease_ttl_s,
        )

    def _retry_or_fail(self, run: _Running, c: CandidateRecord, error: str) -> None:
        self._leases.pop(c.lease_id, None)
        if c.attempts >= run.record.spec.search.max_attempts:
            self._finish_candidate(run, c, types_pb2.CANDIDATE_STATUS_FAILED, 0.0,
                                   error=f"{error} (attempt {c.attempts} of {run.record.spec.search.max_attempts})")
            self._advance(run)
            return
        updated = replace(c, status=types_pb2.CANDIDATE_STATUS_QUEUED, lease_id="", error=error)
        self._storage.update_candidate(updated)
        run.candidates[c.index] = updated
        run.queue.appendleft(c.index)
        self._cond.notify_all()

    def _finish_candidate(self, run: _Running, c: CandidateRecord, status: int, fitness: float, *,
                          trainer_id: str = "", metrics: types_pb2.EvaluationMetrics | None = None,
                          error: str = "") -> None:
        now = self._wall()
        updated = replace(c, status=status, fitness=fitness, trainer_id=trainer_id, metrics=metrics,
                          finish_time=now, error=error, lease_id="")
        record = _with_results(replace(run.record, update_time=now), [updated])
        self._storage.update_candidate(updated, record)
        if c.lease_id:
            self._leases.pop(c.lease_id, None)  # a newer lease elsewhere: its heartbeat now says stop
        if c.index in run.queue:
            run.queue.remove(c.index)  # an expired lease's report arrived while the candidate waited
        run.candidates[c.index] = updated
        self._set_record(run, record)
        self._emit(run.record.id, lambda: ProgressEvent(kind=ProgressEvent.KIND_CANDIDATE_FINISHED,
                                                        experiment=record.to_proto(), candidate=updated.to_proto()))

    def _ask(self, es, record: ExperimentRecord, generation: int, now: float) -> list[CandidateRecord]:
        """Generation ``generation``'s candidates; pre-screened invalid ones are final already."""
        search, loss = record.spec.search, record.spec.loss
        screen = search.invariant_prescreen and spec_lib.prescreen_applies(loss)
        candidates = []
        for index, theta in enumerate(cmaes.ask(es)):
            c = CandidateRecord(record.id, generation, index, theta, create_time=now)
            if screen and not self._prescreen(theta, search.num_classes):
                c = replace(c, status=types_pb2.CANDIDATE_STATUS_INVALID, finish_time=now,
                            error="rejected by the invariant pre-screen")
            candidates.append(c)
        return candidates

    def _advance(self, run: _Running) -> None:
        """Queue a CMA-ES step for ``run`` if its current generation is complete (lock held)."""
        if run.record.id in self._running and not run.advancing and all(c.final for c in run.candidates):
            run.advancing = True
            self._pending.append(run)

    def _step_pending(self) -> None:
        """Run the queued CMA-ES steps; called with the lock *released*.

        The step's computation (unpickle, tell, ask, pre-screen, pickle) runs
        outside the lock so leases and reports of other experiments are not held
        up; nothing can change a complete generation meanwhile, and the result is
        committed and applied under the lock only if the experiment is still
        where the step started (a cancel in between wins).
        """
        while True:
            with self._cond:
                if not self._pending:
                    return
                run = self._pending.pop(0)
                record, candidates = run.record, list(run.candidates)
            try:
                step: _Step | Exception = self._compute_step(record, candidates)
            except Exception as exc:  # a broken strategy or pre-screen: this experiment cannot go on
                log.exception("experiment %s failed", record.id)
                step = exc
            with self._cond:
                run.advancing = False
                if run.record is not record or record.id not in self._running:
                    continue  # cancelled (or otherwise changed) while computing
                self._apply_step(run, record, step)
                self._advance(run)  # a generation pre-screened entirely invalid is complete at once

    def _compute_step(self, record: ExperimentRecord, candidates: list[CandidateRecord]) -> "_Step":
        now = self._wall()
        es = cmaes.loads(record.es_state)
        thetas = [c.theta for c in candidates]
        fitness = np.array([c.fitness for c in candidates])
        cmaes.tell(es, thetas, fitness)
        best = int(np.argmax(fitness))
        summary = GenerationRecord(record.id, record.generation, float(fitness[best]), float(fitness.mean()),
                                   thetas[best], np.array(es.mean, dtype=np.float64), float(es.sigma), now)
        last = record.generation + 1 >= record.spec.search.generations
        nxt = [] if last else self._ask(es, record, record.generation + 1, now)
        return _Step(summary, nxt, cmaes.dumps(es), last, now)

    def _apply_step(self, run: _Running, record: ExperimentRecord, step: "_Step | Exception") -> None:
        if isinstance(step, Exception):
            self._fail(run, record, f"{type(step).__name__}: {step}")
            return
        untrainable = _untrainable(record.generation, run.candidates)
        if untrainable:
            # Feeding CMA-ES a generation of zeros would only report a meaningless "success".
            self._fail(run, record, untrainable)
            return
        summary = step.summary
        if step.last and record.best_theta.size == 0:
            rejected = _all_prescreened(self._storage.load_candidates(record.id))
            if rejected:
                # Nothing was ever trained: "succeeding" would report a search that never ran.
                self._fail(run, record, rejected)
                return
        if step.last:
            final = replace(record, state=types_pb2.EXPERIMENT_STATE_SUCCEEDED, update_time=step.time,
                            generation=record.spec.search.generations, es_state=step.es_state)
            self._storage.advance_generation(final, summary, [])
            self._emit_generation(final, summary)
            self._finish(run, final)
            log.info("experiment %s finished: best fitness %.4f", record.id, final.best_fitness)
            return
        candidates = step.candidates
        nxt = _with_results(replace(record, generation=record.generation + 1, update_time=step.time,
                                    es_state=step.es_state), candidates)
        self._storage.advance_generation(nxt, summary, candidates)
        for lease_id in run.owners:
            self._owners.pop(lease_id, None)
        run.owners.clear()
        run.candidates = candidates
        run.queue = deque(c.index for c in candidates if _queued(c))
        self._set_record(run, nxt)
        self._emit_generation(nxt, summary)
        for c in candidates:
            if c.final:
                self._emit(nxt.id, lambda c=c: ProgressEvent(kind=ProgressEvent.KIND_CANDIDATE_FINISHED,
                                                             experiment=nxt.to_proto(), candidate=c.to_proto()))
        self._cond.notify_all()

    def _fail(self, run: _Running, record: ExperimentRecord, error: str) -> None:
        failed = replace(record, state=types_pb2.EXPERIMENT_STATE_FAILED, update_time=self._wall(), error=error)
        self._storage.update_experiment(failed)
        self._finish(run, failed)
        log.info("experiment %s failed: %s", record.id, error)

    def _emit_generation(self, record: ExperimentRecord, summary: GenerationRecord) -> None:
        self._emit(record.id, lambda: ProgressEvent(kind=ProgressEvent.KIND_GENERATION_FINISHED,
                                                    experiment=record.to_proto(), generation=summary.to_proto()))

    def _finish(self, run: _Running, record: ExperimentRecord) -> None:
        """Take a finished (succeeded, cancelled, failed) experiment out of dispatch."""
        self._set_record(run, record)
        self._running.pop(record.id, None)
        for lease_id in run.owners:
            self._owners.pop(lease_id, None)
            self._leases.pop(lease_id, None)
        run.queue.clear()
        self._emit(record.id, lambda: ProgressEvent(kind=ProgressEvent.KIND_EXPERIMENT_FINISHED,
                                                    experiment=record.to_proto()))
        self._watchers.pop(record.id, None)

    def _set_record(self, run: _Running, record: ExperimentRecord) -> None:
        run.record = record
        self._experiments[record.id] = record

    def _emit(self, experiment_id: str, make_event: Callable[[], ProgressEvent]) -> None:
        """Send an event to the experiment's watchers (built only when someone watches)."""
        queues = self._watchers.get(experiment_id)
        if queues:
            event = make_event()
            for q in queues:
                q.put(event)


def _queued(c: CandidateRecord) -> bool:
    return c.status == types_pb2.CANDIDATE_STATUS_QUEUED


_TRAINED = frozenset({types_pb2.CANDIDATE_STATUS_SUCCEEDED, types_pb2.CANDIDATE_STATUS_DIVERGED,
                      types_pb2.CANDIDATE_STATUS_ABORTED})


def _untrainable(generation: int, candidates: Sequence[CandidateRecord]) -> str:
    """Why a complete generation shows that the task cannot run on the trainers, or ``""``.

    That is the case when candidates were sent to trainers, every one of them
    FAILED (errors or expired leases, ``max_attempts`` times each) and none
    trained: a missing dataset or an unknown model on the trainers, not a bad loss.
    """
    failed = [c for c in candidates if c.status == types_pb2.CANDIDATE_STATUS_FAILED]
    if not failed or any(c.status in _TRAINED for c in candidates):
        return ""
    return (f"every candidate of generation {generation} sent to trainers failed ({len(failed)} of "
            f"{len(candidates)}); first error: {_error_summary(failed[0].error)}")


def _all_prescreened(candidates: Sequence[CandidateRecord]) -> str:
    """Why an experiment trained nothing at all, or ``""``: every candidate of every generation was INVALID."""
    if not candidates or any(c.status != types_pb2.CANDIDATE_STATUS_INVALID for c in candidates):
        return ""
    generations = len({c.generation for c in candidates})
    return (f"every candidate of every generation failed the invariant pre-screen ({len(candidates)} "
            f"candidates in {generations} generations); nothing was trained")


def _error_summary(error: str) -> str:
    """The exception line of a reported traceback (the last unindented line), else the error's last line."""
    lines = [line for line in error.splitlines() if line.strip()]
    unindented = [line for line in lines if not line[0].isspace()]
    return (unindented or lines or ["(no error message)"])[-1].strip()


def _with_results(record: ExperimentRecord, finished: Sequence[CandidateRecord]) -> ExperimentRecord:
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
