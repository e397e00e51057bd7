"""The search service: experiments, generations, leases, fairness, progress events.

One :class:`Scheduler` serves every experiment of a coordinator. It ties
together parts that each do one job: :class:`~taylorglo_tf.coordinator.runner.ExperimentRun`
(an experiment's current generation and queue) and :func:`~taylorglo_tf.coordinator.runner.compute_step`
(the step to the next generation, through an :mod:`~taylorglo_tf.coordinator.optimizers`
optimizer), the :class:`~taylorglo_tf.coordinator.leases.LeaseTable`, the
:class:`~taylorglo_tf.coordinator.dispatch.Dispatcher` (waiting calls and batch grants), the
:class:`~taylorglo_tf.coordinator.events.EventHub` and a :class:`~taylorglo_tf.coordinator.storage.Storage`.
Its rules:

- Store before dispatch. A generation's candidates and the optimizer state
  (taken right after ``ask()``) are committed in one transaction before any
  trainer can lease them. ``ask()`` is never called twice for one generation: a
  restarted coordinator restores that state instead.
- Told once. When the last candidate of generation g gets its final result, one
  transaction records g's summary, the optimizer after ``tell()`` and generation
  g+1's candidates. A crash before that commit leaves g complete in the database
  with the pre-``tell`` state, so the restart repeats exactly the same step.
- The database first. Every change is committed before it is applied in memory
  and acknowledged, so a failed write (disk full, database locked) changes
  nothing, is answered UNAVAILABLE and can simply be retried; a restart sees
  what clients were told.
- Leases expire on the coordinator (heartbeats extend them in memory only; a
  restart gives every open lease a fresh TTL): after the TTL without a
  heartbeat, or after the progress deadline without a new training step. An
  expired lease spends its attempt; after ``max_attempts`` the candidate is
  FAILED with fitness 0 and the generation still completes. ReturnLease requeues
  without spending an attempt. Time in which the database refuses writes does
  not count against a lease (its trainer may be retrying its report).
- Reports are idempotent: the first final report for a candidate counts, whether
  it comes from the current lease or an expired one; later ones change nothing.
- Fairness: leases go round-robin over running experiments with queued work.

Leasing has one form: :meth:`Scheduler.wait_for_leases` registers a call and
returns a :class:`LeaseTicket`, granted at once if there is work; otherwise, when
work appears (a new generation, a requeued candidate), every waiting call is
granted in one transaction, first come first served, and each ticket's
``on_granted(leases)`` is called. :class:`~taylorglo_tf.coordinator.longpoll.LongPolls`
awaits tickets on the server's event loop (a call that must not wait cancels its
ticket at once).

All state is guarded by one lock, held for a write's transaction (a locked
database fails it fast) but never for the optimizer: a new experiment's first
generation is built before it is taken (:meth:`Scheduler.submit`) and the step
between generations outside it (:meth:`Scheduler._step_pending`), so one
experiment's optimizer does not stall the lease path of the others. Experiment
records are also kept under a small lock of their own, so reading them never
waits behind a write.
"""

from __future__ import annotations

import builtins  # `list` in the annotations of class Scheduler is its method
import logging
import math
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from taylorglo_tf.limits import MAX_ERROR_CHARS
from taylorglo_tf.rpc import experiment_service_pb2 as es_pb2
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws_pb2
from taylorglo_tf.text import escape_controls

from . import early_stopping, optimizers, runner
from .defaults import DEFAULT_LEASE_TTL_S, PROGRESS_DEADLINE_TTLS, STARTUP_PROGRESS_FACTOR
from .dispatch import Dispatcher, LeaseTicket, OnGranted
from .errors import FailedPrecondition, NotFound, StorageUnavailable, Unavailable
from .events import CLOSED, EventHub, ProgressEvent
from .leases import Lease, LeaseTable
from .model import CandidateRecord, Checkpoint, ExperimentRecord, GenerationRecord, result_proto
from .ratelog import RateLimitedLog
from .runner import ExperimentRun, Prescreen, Step
from .storage import WRITE_METHODS, Storage

log = logging.getLogger(__name__)
storage_log = RateLimitedLog(log)  # a full disk fails every pass: one line per distinct error


# EvaluationStatus of a report -> final CandidateStatus (ERROR is retried instead).
_FINAL_STATUS: dict[ws_pb2.EvaluationStatus, types_pb2.CandidateStatus] = {
    ws_pb2.EVALUATION_STATUS_OK: types_pb2.CANDIDATE_STATUS_SUCCEEDED,
    ws_pb2.EVALUATION_STATUS_DIVERGED: types_pb2.CANDIDATE_STATUS_DIVERGED,
    ws_pb2.EVALUATION_STATUS_ABORTED: types_pb2.CANDIDATE_STATUS_ABORTED,
}


def invariant_prescreen(theta: np.ndarray, num_classes: int) -> bool:
    """Default pre-screen: :func:`taylorglo_tf.invariant.is_valid` (NumPy only)."""
    from taylorglo_tf.invariant import is_valid

    return bool(is_valid(theta, num_classes))


def _candidate_finished(record: ExperimentRecord, candidate: CandidateRecord) -> Callable[[], ProgressEvent]:
    """The event of a finished candidate, built only when someone watches."""
    return lambda: ProgressEvent(
        kind=ProgressEvent.KIND_CANDIDATE_FINISHED, experiment=record.to_proto(), candidate=candidate.to_proto()
    )


@dataclass(frozen=True)
class Beat:
    """One lease's part of a heartbeat, validated by the servicer."""

    lease_id: str
    steps_done: int | None = None  # None: no count this time
    checkpoints: tuple[Checkpoint, ...] = ()  # early-stopping values reached so far


@dataclass(frozen=True)
class BeatAnswer:
    """The answer for one lease: go on (for ``ttl_s`` more seconds), or stop; early stopping's word."""

    keep_going: bool
    ttl_s: float
    stop: bool = False  # the early-stopping rule stopped it: report it STOPPED
    hold: bool = False  # wait at the checkpoint: the rest of the generation is training towards it


_GONE = BeatAnswer(False, 0.0)


@dataclass
class Report:
    """A trainer's report, already validated by the servicer."""

    lease_id: str
    trainer_id: str
    status: ws_pb2.EvaluationStatus
    fitness: float
    metrics: types_pb2.EvaluationMetrics | None
    error: str = ""


class Scheduler:
    """Experiments, optimizers and leases over a :class:`~taylorglo_tf.coordinator.storage.Storage`.

    ``lease_ttl_s``: seconds a lease lives without a heartbeat. ``progress_deadline_s``:
    seconds a lease lives while its heartbeats report no new training step (default
    :data:`~taylorglo_tf.coordinator.defaults.PROGRESS_DEADLINE_TTLS` TTLs; twice that before
    the first step, for data loading and compilation). ``prescreen``:
    ``(theta, num_classes) -> valid`` for specs that ask for the invariant
    pre-screen. ``clock`` (monotonic seconds, for expiry) and ``wall`` (epoch
    seconds, for records) are injectable for tests.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        progress_deadline_s: float | None = None,
        prescreen: Prescreen = invariant_prescreen,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        if not (math.isfinite(lease_ttl_s) and lease_ttl_s > 0):
            raise ValueError(f"lease_ttl_s={lease_ttl_s!r} must be a positive number of seconds")
        if progress_deadline_s is None:
            progress_deadline_s = PROGRESS_DEADLINE_TTLS * lease_ttl_s
        if not (math.isfinite(progress_deadline_s) and progress_deadline_s > 0):
            raise ValueError(f"progress_deadline_s={progress_deadline_s!r} must be a positive number of seconds")
        self._storage = _WriteWatch(storage, self._storage_refused, self._storage_wrote)
        self.lease_ttl_s = float(lease_ttl_s)
        self.progress_deadline_s = float(progress_deadline_s)
        self._prescreen = prescreen
        self._clock = clock
        self._wall = wall
        self._cond = (
            threading.RLock()
        )  # guards all state (re-entrant: shared with the dispatcher, which may take it again)
        self._experiments: dict[str, ExperimentRecord] = {}
        # Guards _experiments alone, never held across I/O: reads of records (GetExperiment,
        # ListExperiments) take only it, so they never wait behind a write that holds _cond.
        self._records_lock = threading.Lock()
        # Monotonic time of the first write the database refused since the last one it took
        # (None: no fault). Leases do not age meanwhile; see _storage_wrote.
        self._storage_fault_since: float | None = None
        self._running: dict[str, ExperimentRun] = {}
        self._leases = LeaseTable()
        self._events = EventHub()
        self._dispatcher = Dispatcher(
            self._storage,
            self._leases,
            self._running,
            self._cond,
            lease_ttl_s=self.lease_ttl_s,
            startup_progress_s=STARTUP_PROGRESS_FACTOR * self.progress_deadline_s,
            clock=clock,
            wall=wall,
        )
        self._pending: list[ExperimentRun] = []  # runs whose optimizer step is due
        self.expired_leases = 0  # leases ended for silence or no progress (the metrics' counter)
        self._stopping = False
        self._reaper: threading.Thread | None = None
        self._reaper_stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, reaper: bool = True) -> None:
        """Load every experiment and resume the unfinished ones; start the lease reaper."""
        with self._cond:
            now = self._clock()
            for record in self._storage.load_experiments():
                with self._records_lock:
                    self._experiments[record.id] = record
                if record.final:
                    continue
                run = ExperimentRun(record, self._storage.load_candidates(record.id, record.generation))
                for row in self._storage.load_leases(record.id, record.generation):
                    self._leases.add(Lease(row.lease_id, row.trainer_id, record.id, row.generation, row.index, None))
                for c in run.candidates:
                    if c.status != types_pb2.CANDIDATE_STATUS_LEASED:
                        continue
                    lease = self._leases.get(c.lease_id)
                    if lease is not None:
                        # trainers may still be working: give them a full TTL to heartbeat again,
                        # and the start-up allowance to report a step (their count is unknown)
                        self._leases.extend(lease, now + self.lease_ttl_s)
                        self._leases.progressed(lease, 0, now + STARTUP_PROGRESS_FACTOR * self.progress_deadline_s)
                    else:
                        run.queue.append(c.index)  # lease row missing: cannot happen with one transaction
                self._running[record.id] = run
                log.info("resumed experiment %s at generation %d", record.id, record.generation)
                self._advance(run)
            self._work_available()
        self._step_pending()
        if reaper:
            interval = min(1.0, self.lease_ttl_s / 4)
            self._reaper = threading.Thread(target=self._reap, args=(interval,), name="lease-reaper", daemon=True)
            self._reaper.start()

    def listen(self, callback: Callable[[ProgressEvent], None]) -> None:
        """Call ``callback`` with every progress event of every experiment (under the lock: it must be quick)."""
        with self._cond:
            self._events.listen(callback)

    def load(self) -> tuple[int, int]:
        """(queued candidates, running experiments), read without the lock for metrics (approximate)."""
        runs = list(self._running.values())  # one C-level copy: safe against concurrent changes
        return sum(len(run.queue) for run in runs), len(runs)

    def stop(self) -> None:
        """Stop dispatching, end waiting lease calls and watch streams; leases stay in the database."""
        with self._cond:
            self._stopping = True
            self._dispatcher.close()
            self._events.close_all()
        self._reaper_stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)

    def _reap(self, interval: float) -> None:
        while not self._reaper_stop.wait(interval):
            try:
                self.expire_leases()
                self.retry_stalled()
            except StorageUnavailable as exc:  # nothing changed; the next pass retries
                storage_log.warning(f"lease expiry postponed: {exc}")
            except Exception:  # keep reaping; the next pass retries
                log.exception("lease expiry failed")

    def retry_stalled(self) -> None:
        """Advance generations whose last result is stored but whose next step failed to commit,
        and grant waiting calls whose grant failed to commit."""
        with self._cond:
            for run in list(self._running.values()):
                self._advance(run)
            self._work_available()
        self._step_pending()

    # ------------------------------------------------------------------ experiments

    def submit(self, spec: types_pb2.ExperimentSpec) -> types_pb2.Experiment:
        """Store a validated spec (see :func:`taylorglo_tf.spec.load_spec`) with its first generation.

        The optimizer and the first generation (``ask``, the pre-screen) are built before the
        scheduler's lock is taken: only the commit and the publication in memory happen under it.
        """
        if self._stopping:
            raise Unavailable("the coordinator is shutting down")
        exp_id = secrets.token_hex(8)
        now = self._wall()
        optimizer = optimizers.create(spec)
        record = ExperimentRecord(
            id=exp_id, spec=spec, state=types_pb2.EXPERIMENT_STATE_RUNNING, create_time=now, update_time=now
        )
        candidates = runner.ask(optimizer, record, 0, now, self._prescreen)
        record = runner.with_results(replace(record, es_state=optimizer.state()), candidates)
        with self._cond:
            if self._stopping:  # it may have begun meanwhile
                raise Unavailable("the coordinator is shutting down")
            self._storage.insert_experiment(record, candidates)
            run = ExperimentRun(record, candidates)
            with self._records_lock:
                self._experiments[exp_id] = record
            self._running[exp_id] = run
            for c in candidates:
                if c.final:  # pre-screened out, as later generations' are (live TensorBoard shows them)
                    self._events.publish(exp_id, _candidate_finished(record, c))
            log.info(
                "experiment %s submitted: %d generations x %d", exp_id, spec.search.generations, spec.search.population
            )
            self._advance(run)
            self._work_available()
        self._step_pending()
        return self.get(exp_id)

    def get(self, experiment_id: str) -> types_pb2.Experiment:
        with self._records_lock:  # not _cond: a read never waits behind a write
            record = self._experiments.get(experiment_id)
        if record is None:
            raise NotFound(f"experiment {experiment_id!r} not found")
        return record.to_proto()

    def list(self) -> list[types_pb2.Experiment]:
        """Every experiment, newest first."""
        return [r.to_proto() for r in self.records()]

    def records(self) -> builtins.list[ExperimentRecord]:
        """Every experiment's record (immutable), newest first."""
        with self._records_lock:
            return list(reversed(self._experiments.values()))

    def delete(self, experiment_id: str) -> types_pb2.Experiment:
        """Delete a finished or cancelled experiment; committed before it is forgotten in memory."""
        with self._cond:
            record = self._record(experiment_id)
            if not record.final:
                raise FailedPrecondition(
                    f"experiment {experiment_id} is {types_pb2.ExperimentState.Name(record.state)}; "
                    "cancel it before deleting it"
                )
            self._storage.delete_experiment(experiment_id)
            with self._records_lock:
                del self._experiments[experiment_id]
            log.info("experiment %s deleted", experiment_id)
            return record.to_proto()

    def cancel(self, experiment_id: str) -> types_pb2.Experiment:
        with self._cond:
            record = self._record(experiment_id)
            if record.final:
                raise FailedPrecondition(
                    f"experiment {experiment_id} already finished ({types_pb2.ExperimentState.Name(record.state)})"
                )
            record = replace(record, state=types_pb2.EXPERIMENT_STATE_CANCELLED, update_time=self._wall())
            self._storage.update_experiment(record)
            self._finish(self._running[experiment_id], record)
            return record.to_proto()

    def result(
        self, experiment_id: str, *, generations_from: int = 0, candidates_from: int = 0, limit: int | None = None
    ) -> es_pb2.ExperimentResult:
        """Best theta, history and candidates; with offsets and ``limit`` (summaries plus
        candidates), one page of them (see :mod:`taylorglo_tf.coordinator.paging`)."""
        with self._cond:  # a consistent snapshot: nothing commits while we read
            record = self._record(experiment_id)
            generations = self._storage.load_generations(experiment_id, offset=generations_from, limit=limit)
            room = None if limit is None else limit - len(generations)
            candidates = self._storage.load_candidates(experiment_id, offset=candidates_from, limit=room)
        # Built outside the lock (tens of ms for thousands of candidates): leases wait only for the reads.
        return result_proto(record, generations, candidates)

    def watch(self, experiment_id: str, is_active: Callable[[], bool] = lambda: True) -> Iterator[ProgressEvent]:
        """A snapshot, then every event of the experiment, ending after its final state."""
        with self._cond:
            record = self._record(experiment_id)
            snapshot = ProgressEvent(kind=ProgressEvent.KIND_SNAPSHOT, experiment=record.to_proto())
            follow = not record.final and not self._stopping
            events = self._events.subscribe(experiment_id) if follow else None
        try:
            yield snapshot
            if record.final:
                yield ProgressEvent(kind=ProgressEvent.KIND_EXPERIMENT_FINISHED, experiment=record.to_proto())
            if events is None:
                return
            while True:
                try:
                    event = events.get(timeout=0.5)
                except queue.Empty:
                    if not is_active():
                        return
                    continue
                if event is CLOSED:  # coordinator stopping
                    return
                yield event
                if event.kind == ProgressEvent.KIND_EXPERIMENT_FINISHED:
                    return
        finally:
            if events is not None:
                with self._cond:
                    self._events.unsubscribe(experiment_id, events)

    # ------------------------------------------------------------------ leasing

    def wait_for_leases(
        self,
        trainer_id: str,
        on_granted: OnGranted,
        *,
        max_candidates: int = 1,
        is_active: Callable[[], bool] = lambda: True,
        experiment_id: str = "",
    ) -> LeaseTicket:
        """Grant now if there is work, else wait for it without a thread.

        ``on_granted(leases)`` is called exactly once: with the granted leases
        (from this call, or later from the thread whose change made work
        available, under the scheduler's lock: it must not block or call the
        scheduler, e.g. ``loop.call_soon_threadsafe(future.set_result, leases)``),
        or with ``[]`` when the coordinator stops or ``is_active()`` turned false
        by the time work came (a caller that hung up is granted nothing). The
        caller cancels the ticket when it stops waiting (timeout); if
        ``cancel()`` returns False the leases were granted and are the caller's
        to use or give back (:meth:`return_lease`).

        ``experiment_id`` (a trainer inside a user's script) limits the grant to that
        experiment; "" (a generic trainer) to experiments whose model is not a
        script's (:func:`~taylorglo_tf.coordinator.dispatch.serves`).

        Raises :class:`~taylorglo_tf.coordinator.errors.StorageUnavailable` if there is work but
        the database refused to record the grant; a ticket still waiting when a grant failed keeps
        the error in ``ticket.error`` (its wait should end UNAVAILABLE, not "no work").
        """
        if max_candidates < 1:
            raise ValueError(f"max_candidates={max_candidates} must be at least 1")
        with self._cond:
            ticket = self._dispatcher.ticket(trainer_id, max_candidates, on_granted, is_active, experiment_id)
            if self._stopping or not is_active():
                self._dispatcher.resolve(ticket, [])
            else:
                self._dispatcher.wait(ticket)
            return ticket

    def heartbeat(self, lease_id: str, trainer_id: str, steps_done: int | None = None) -> tuple[bool, float]:
        """Extend a live lease: ``(keep_going, ttl_s)``; ``(False, 0)`` when it is gone.

        ``steps_done`` (training steps so far) other than the last count reported restarts
        the lease's progress deadline: it goes up as training goes on, and back to 1 when the
        abort rule retries a candidate with a fresh seed (a retry is progress too); a lease
        heartbeated with the same count for ``progress_deadline_s`` ends like a silent one.
        None: no count this time. :meth:`heartbeat_many` is the whole form.
        """
        [answer] = self.heartbeat_many(trainer_id, [Beat(lease_id, steps_done)])
        return answer.keep_going, answer.ttl_s

    def heartbeat_many(self, trainer_id: str, beats: builtins.list[Beat]) -> builtins.list[BeatAnswer]:
        """Every lease of one heartbeat: record checkpoint values, let the early-stopping rule decide, answer each.

        New checkpoint values (the first for each checkpoint of a candidate) are stored,
        with the rule's decisions, before the answers are made: so a generation whose
        last values arrive in this call is decided in it. A lease whose candidate the rule
        stopped answers ``stop``; one that waits for a decision the rest of the
        generation (all in training) will bring answers ``hold``, which also counts as
        progress.
        """
        with self._cond:
            for beat in beats:
                lease = self._leases.live(beat.lease_id, trainer_id)
                if lease is not None and beat.checkpoints:
                    self._record_checkpoints(self._running[lease.experiment_id], lease.index, beat.checkpoints)
            answers = [self._answer(beat, trainer_id) for beat in beats]
        self._step_pending()
        return answers

    def _answer(self, beat: Beat, trainer_id: str) -> BeatAnswer:
        lease = self._leases.live(beat.lease_id, trainer_id)
        if lease is None:
            return _GONE
        now = self._clock()
        self._leases.extend(lease, now + self.lease_ttl_s)
        run = self._running[lease.experiment_id]
        c = run.candidates[lease.index]
        if c.stopped_at:
            return BeatAnswer(False, self.lease_ttl_s, stop=True)
        hold = early_stopping.holds(early_stopping.rule_of(run.record.spec), run.candidates, c)
        if hold or (beat.steps_done is not None and beat.steps_done != lease.steps_done):
            steps = lease.steps_done if beat.steps_done is None else beat.steps_done
            self._leases.progressed(lease, steps, now + self.progress_deadline_s)
        return BeatAnswer(True, self.lease_ttl_s, hold=hold)

    def return_lease(self, lease_id: str, trainer_id: str, reason: str = "") -> bool:
        """Queue a leased candidate again without spending its attempt; ``reason`` goes to the log."""
        with self._cond:
            lease = self._leases.live(lease_id, trainer_id)
            if lease is None:
                log.info(
                    "lease %s not returned by trainer %s: not live (%s)",
                    escape_controls(lease_id),
                    escape_controls(trainer_id),
                    escape_controls(reason) or "no reason given",
                )
                return False
            run = self._running[lease.experiment_id]
            c = run.candidates[lease.index]
            if c.stopped_at:  # stopped early: nothing to train again
                self._finish_stopped(run, c)
                self._advance(run)
                return True
            updated = replace(c, status=types_pb2.CANDIDATE_STATUS_QUEUED, attempts=c.attempts - 1, lease_id="")
            self._storage.update_candidate(updated)
            self._leases.end(lease_id)
            run.requeue(updated)
            # escaped: the reason is the trainer's text, and a log line must stay one line
            log.info(
                "lease %s of %s/%d/%d returned by trainer %s: %s",
                lease_id,
                run.id,
                c.generation,
                c.index,
                escape_controls(trainer_id),
                escape_controls(reason) or "no reason given",
            )
            self._work_available()
            return True

    def report(self, report: Report) -> tuple[bool, str]:
        """Record a result: ``(accepted, reason)``; only the first final report for a candidate counts."""
        try:
            return self._report(report)
        finally:
            self._step_pending()

    def _report(self, report: Report) -> tuple[bool, str]:
        with self._cond:
            lease = self._leases.get(report.lease_id)
            if lease is None:
                past = self._storage.find_lease(report.lease_id)
                if past is None:
                    return False, "unknown lease"
                record = self._experiments[past.experiment_id]
                if record.final:
                    return False, f"experiment is {types_pb2.ExperimentState.Name(record.state)}"
                return False, "stale: the candidate of this lease already has a final result"
            if lease.trainer_id != report.trainer_id:
                return False, f"the lease was granted to trainer {lease.trainer_id!r}"
            run = self._running[lease.experiment_id]
            c = run.candidates[lease.index]
            if c.final or c.status == types_pb2.CANDIDATE_STATUS_WAITING:
                return False, "duplicate: the candidate already has a final result"
            error = report.error[:MAX_ERROR_CHARS]
            if report.metrics is not None and report.metrics.checkpoints:
                values = tuple((v.index, v.steps, v.val_accuracy) for v in report.metrics.checkpoints)
                self._record_checkpoints(run, c.index, values)
                c = run.candidates[lease.index]
            if c.stopped_at:  # however its training ended, the rule's decision stands
                self._finish_stopped(run, c, trainer_id=report.trainer_id, metrics=report.metrics)
                self._advance(run)
                return True, ""
            if report.status == ws_pb2.EVALUATION_STATUS_STOPPED:
                return False, "no early-stopping decision stopped this candidate"
            if report.status == ws_pb2.EVALUATION_STATUS_ERROR:
                if c.lease_id != report.lease_id:
                    return False, "stale: the lease expired; the candidate was queued again"
                self._retry_or_fail(run, c, error or "the trainer reported an error")
                return True, ""
            fitness = report.fitness if report.status == ws_pb2.EVALUATION_STATUS_OK else 0.0
            if early_stopping.waits(early_stopping.rule_of(run.record.spec), run.candidates, c):
                # It ran ahead of a decision the rest of its generation has not reached: the result
                # waits for it, so that the search does not depend on the trainers' timing.
                waiting = replace(
                    c,
                    status=types_pb2.CANDIDATE_STATUS_WAITING,
                    held_status=_FINAL_STATUS[report.status],
                    fitness=fitness,
                    trainer_id=report.trainer_id,
                    metrics=report.metrics,
                    error=error,
                    lease_id="",
                )
                self._storage.update_candidate(waiting)
                self._leases.end(c.lease_id)
                run.put(waiting)
                return True, ""
            self._finish_candidate(
                run,
                c,
                _FINAL_STATUS[report.status],
                fitness,
                trainer_id=report.trainer_id,
                metrics=report.metrics,
                error=error,
            )
            self._advance(run)
            return True, ""

    def expire_leases(self) -> int:
        """Requeue (or fail, after max_attempts) candidates whose lease was not heartbeated in time.

        A lease ends in memory only once the database has its candidate's new
        state: if that write fails, the lease stays expired in the table and the
        next pass tries again.
        """
        with self._cond:
            if self._storage_fault_since is not None:
                # Nothing can be requeued while the database refuses writes, and the leases'
                # time does not run meanwhile: try it (this raises while the fault lasts).
                self._probe_storage()
            now = self._clock()
            expired = self._leases.expired(now)
            for lease in expired:
                run = self._running[lease.experiment_id]
                c = run.candidates[lease.index]
                if c.lease_id == lease.lease_id and not c.final:
                    if self._leases.silent(lease, now):
                        why = f"lease expired after {self.lease_ttl_s:g} s without a heartbeat"
                    else:
                        why = (
                            f"lease expired: no training progress (steps_done stayed at {lease.steps_done}) "
                            f"within its {self.progress_deadline_s:g} s progress deadline"
                        )
                    log.info("lease %s of %s/%d/%d: %s", lease.lease_id, run.id, c.generation, c.index, why)
                    self._retry_or_fail(run, c, why)
                    self.expired_leases += 1
                else:
                    self._leases.end(lease.lease_id)
        self._step_pending()
        return len(expired)

    # ------------------------------------------------------------------ internals: storage faults

    def _probe_storage(self) -> None:
        """One write that changes nothing (a running experiment's row, rewritten as it is stored),
        to learn whether the database takes writes again; raises StorageUnavailable if not."""
        run = next(iter(self._running.values()), None)
        if run is None:  # no experiment, no lease to protect
            self._storage_fault_since = None
            return
        self._storage.update_experiment(run.record)

    def _storage_refused(self) -> None:
        """A write failed with StorageUnavailable (lock held)."""
        if self._storage_fault_since is None:
            self._storage_fault_since = self._clock()

    def _storage_wrote(self) -> None:
        """A write succeeded (lock held): time spent in a storage fault does not count against a lease.

        A trainer cannot report while the database refuses writes (it retries, often without
        heartbeating), so each live lease gets back the time it had left when the fault began,
        counted from now; one heartbeated during the fault gets its full TTL from now. Its
        progress deadline moves by the fault's length too (the report of a finished
        evaluation may have been what waited).
        """
        since = self._storage_fault_since
        if since is None:
            return
        self._storage_fault_since = None
        now = self._clock()
        for lease in self._leases:
            if lease.expires is None or lease.expires <= since:
                continue  # ended, or overdue before the fault began
            paused_at = max(since, lease.expires - self.lease_ttl_s)  # the fault's start or its last heartbeat
            self._leases.extend(lease, now + (lease.expires - paused_at))
            if lease.progress_by is not None and lease.progress_by > since:
                self._leases.progressed(lease, lease.steps_done, lease.progress_by + (now - since))
        log.info("the database takes writes again after %.1f s; leases were given that time back", now - since)

    # ------------------------------------------------------------------ internals: leases

    def _work_available(self) -> None:
        """Queued work may have appeared: grant waiting calls, wake blocking ones (lock held)."""
        self._dispatcher.dispatch()

    # ------------------------------------------------------------------ internals: candidates

    def _record(self, experiment_id: str) -> ExperimentRecord:
        with self._records_lock:
            record = self._experiments.get(experiment_id)
        if record is None:
            raise NotFound(f"experiment {experiment_id!r} not found")
        return record

    def _retry_or_fail(self, run: ExperimentRun, c: CandidateRecord, error: str) -> None:
        if c.stopped_at:  # stopped early: its lease ending is no reason to train it again
            self._finish_stopped(run, c)
            self._advance(run)
            return
        if c.attempts >= run.record.spec.search.max_attempts:
            self._finish_candidate(
                run,
                c,
                types_pb2.CANDIDATE_STATUS_FAILED,
                0.0,
                error=f"{error} (attempt {c.attempts} of {run.record.spec.search.max_attempts})",
            )
            self._advance(run)
            return
        updated = replace(c, status=types_pb2.CANDIDATE_STATUS_QUEUED, lease_id="", error=error)
        self._storage.update_candidate(updated)
        self._leases.end(c.lease_id)
        run.requeue(updated)
        self._work_available()

    def _finish_candidate(
        self,
        run: ExperimentRun,
        c: CandidateRecord,
        status: types_pb2.CandidateStatus,
        fitness: float,
        *,
        trainer_id: str = "",
        metrics: types_pb2.EvaluationMetrics | None = None,
        error: str = "",
    ) -> None:
        now = self._wall()
        updated = replace(
            c,
            status=status,
            fitness=fitness,
            trainer_id=trainer_id,
            metrics=metrics,
            finish_time=now,
            error=error,
            lease_id="",
            held_status=types_pb2.CANDIDATE_STATUS_UNSPECIFIED,
        )
        record = runner.with_results(replace(run.record, update_time=now), [updated])
        self._storage.update_candidate(updated, record)
        if c.lease_id:
            self._leases.end(c.lease_id)  # a newer lease elsewhere: its heartbeat now says stop
        run.put(updated)
        self._set_record(run, record)
        self._events.publish(run.id, _candidate_finished(record, updated))

    # ------------------------------------------------------------------ internals: early stopping

    def _record_checkpoints(self, run: ExperimentRun, index: int, values: tuple[Checkpoint, ...]) -> None:
        """Store the first value reported at each of the rule's checkpoints for candidate ``index``,
        with the decisions they bring in the same transaction, then end what those settle (lock held)."""
        c = run.candidates[index]
        count = len(early_stopping.checkpoints(early_stopping.rule_of(run.record.spec)))
        known = {i for i, _, _ in c.checkpoints}
        new = [value for value in values if value[0] < count and value[0] not in known]
        if not new:
            return
        updated = replace(c, checkpoints=tuple(sorted(c.checkpoints + tuple(new))))
        self._decide(run, updated, {(index, i) for i, _, _ in new})
        self._advance(run)

    def _decide(
        self, run: ExperimentRun, recorded: CandidateRecord | None = None, new: set[tuple[int, int]] | None = None
    ) -> None:
        """Store ``recorded`` (a candidate with new checkpoint values, ``new`` naming them as (candidate,
        checkpoint) pairs: the ``median`` rule decides on those) and the rule's new decisions for
        ``run``'s generation, in one transaction, then apply them (lock held)."""
        rule = early_stopping.rule_of(run.record.spec)
        candidates = list(run.candidates)
        if recorded is not None:
            candidates[recorded.index] = recorded
        history = self._checkpoint_history(run) if rule == early_stopping.MEDIAN else None
        decisions = early_stopping.decide(rule, candidates, new or (), history)
        stopped = [replace(candidates[i], stopped_at=at) for i, at in sorted(decisions.items())]
        changed = {c.index: c for c in ([recorded] if recorded is not None else []) + stopped}
        if not changed:
            return
        self._storage.update_candidates(list(changed.values()))
        for c in changed.values():
            run.put(c)
        for c in stopped:
            log.info(
                "candidate %s/%d/%d stopped early at checkpoint %d (%s): validation accuracy %.4f",
                *(run.id, c.generation, c.index, c.stopped_at, rule, c.value_at(c.stopped_at - 1) or 0.0),
            )

    def _settle(self, run: ExperimentRun) -> None:
        """Store the rule's pending decisions for ``run``'s generation, then end what they settle (lock
        held): a stopped candidate that is queued or waiting is STOPPED; a waiting one whose decisions
        are all made and let it go on gets the status it reported."""
        rule = early_stopping.rule_of(run.record.spec)
        if rule == early_stopping.NONE:
            return
        self._decide(run)
        for c in list(run.candidates):
            if c.stopped_at and c.status in (types_pb2.CANDIDATE_STATUS_QUEUED, types_pb2.CANDIDATE_STATUS_WAITING):
                self._finish_stopped(run, c)
            elif c.status == types_pb2.CANDIDATE_STATUS_WAITING and not early_stopping.waits(rule, run.candidates, c):
                self._finish_candidate(
                    run, c, c.held_status, c.fitness, trainer_id=c.trainer_id, metrics=c.metrics, error=c.error
                )

    def _finish_stopped(
        self,
        run: ExperimentRun,
        c: CandidateRecord,
        *,
        trainer_id: str = "",
        metrics: types_pb2.EvaluationMetrics | None = None,
    ) -> None:
        """End a candidate the rule stopped: STOPPED, with the fitness of its value at that checkpoint.
        ``metrics``: what its trainer measured (the steps it trained); else what is known."""
        index = c.stopped_at - 1
        value = c.value_at(index) or 0.0
        if metrics is None:
            metrics = c.metrics
        if metrics is None:
            steps = next(steps for i, steps, _ in c.checkpoints if i == index)
            metrics = types_pb2.EvaluationMetrics(val_accuracy=value, steps=steps)
        fitness = early_stopping.stopped_fitness(c.stopped_at, value)
        self._finish_candidate(
            run, c, types_pb2.CANDIDATE_STATUS_STOPPED, fitness, trainer_id=trainer_id or c.trainer_id, metrics=metrics
        )

    def _checkpoint_history(self, run: ExperimentRun) -> dict[int, builtins.list[float]]:
        """Checkpoint values of the experiment's earlier generations (``median``), read once per generation."""
        generation = run.record.generation
        if run.checkpoint_history is None or run.checkpoint_history[0] != generation:
            earlier = [c for c in self._storage.load_candidates(run.id) if c.generation < generation]
            run.checkpoint_history = (generation, early_stopping.history_values(earlier))
        return run.checkpoint_history[1]

    # ------------------------------------------------------------------ internals: generations

    def _advance(self, run: ExperimentRun) -> None:
        """Queue an optimizer step for ``run`` if its current generation is complete (lock held).

        Early stopping's pending decisions come first: they may end candidates. A database
        that refuses them leaves them to the next pass (:meth:`retry_stalled`)."""
        if run.id in self._running and not run.advancing and not run.complete():
            try:
                self._settle(run)
            except StorageUnavailable as exc:
                storage_log.warning(f"early-stopping decisions postponed: {exc}")
        if run.id in self._running and not run.advancing and run.complete():
            run.advancing = True
            self._pending.append(run)

    def _step_pending(self) -> None:
        """Run the queued optimizer steps; called with the lock *released*.

        The step's computation (restore, tell, ask, pre-screen, serialise) runs
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
                step: Step | Exception = self._compute_step(record, candidates)
            except Exception as exc:  # a broken strategy or pre-screen: this experiment cannot go on
                log.exception("experiment %s failed", record.id)
                step = exc
            with self._cond:
                run.advancing = False
                if run.record is not record or record.id not in self._running:
                    continue  # cancelled (or otherwise changed) while computing
                self._apply_step(run, record, step)
                self._advance(run)  # a generation pre-screened entirely invalid is complete at once

    def _compute_step(self, record: ExperimentRecord, candidates: builtins.list[CandidateRecord]) -> Step:
        return runner.compute_step(record, candidates, self._wall(), self._prescreen)

    def _apply_step(self, run: ExperimentRun, record: ExperimentRecord, step: Step | Exception) -> None:
        if isinstance(step, Exception):
            self._fail(run, record, f"{type(step).__name__}: {step}")
            return
        untrainable = runner.untrainable(record.generation, run.candidates)
        if untrainable:
            # Feeding the optimizer a generation of zeros would only report a meaningless "success".
            self._fail(run, record, untrainable)
            return
        summary = step.summary
        if step.last and record.best_theta.size == 0:
            rejected = runner.all_prescreened(self._storage.load_candidates(record.id))
            if rejected:
                # Nothing was ever trained: "succeeding" would report a search that never ran.
                self._fail(run, record, rejected)
                return
        if step.last:
            final = replace(
                record,
                state=types_pb2.EXPERIMENT_STATE_SUCCEEDED,
                update_time=step.time,
                generation=record.spec.search.generations,
                es_state=step.optimizer_state,
            )
            self._storage.advance_generation(final, summary, [])
            self._emit_generation(final, summary)
            self._finish(run, final)
            log.info("experiment %s finished: best fitness %.4f", record.id, final.best_fitness)
            return
        candidates = step.candidates
        nxt = runner.with_results(
            replace(record, generation=record.generation + 1, update_time=step.time, es_state=step.optimizer_state),
            candidates,
        )
        self._storage.advance_generation(nxt, summary, candidates)
        self._leases.forget(run.id)
        run.next_generation(nxt, candidates)
        self._set_record(run, nxt)
        self._emit_generation(nxt, summary)
        for c in candidates:
            if c.final:
                self._events.publish(nxt.id, _candidate_finished(nxt, c))
        self._work_available()

    def _fail(self, run: ExperimentRun, record: ExperimentRecord, error: str) -> None:
        failed = replace(record, state=types_pb2.EXPERIMENT_STATE_FAILED, update_time=self._wall(), error=error)
        self._storage.update_experiment(failed)
        self._finish(run, failed)
        log.info("experiment %s failed: %s", record.id, error)

    def _emit_generation(self, record: ExperimentRecord, summary: GenerationRecord) -> None:
        self._events.publish(
            record.id,
            lambda: ProgressEvent(
                kind=ProgressEvent.KIND_GENERATION_FINISHED, experiment=record.to_proto(), generation=summary.to_proto()
            ),
        )

    def _finish(self, run: ExperimentRun, record: ExperimentRecord) -> None:
        """Take a finished (succeeded, cancelled, failed) experiment out of dispatch."""
        self._set_record(run, replace(record, es_state=b""))  # stored; nothing resumes it from memory
        self._running.pop(record.id, None)
        self._leases.forget(record.id)
        run.queue.clear()
        self._events.publish(
            record.id, lambda: ProgressEvent(kind=ProgressEvent.KIND_EXPERIMENT_FINISHED, experiment=record.to_proto())
        )
        self._events.close_experiment(record.id)

    def _set_record(self, run: ExperimentRun, record: ExperimentRecord) -> None:
        run.record = record
        with self._records_lock:
            self._experiments[record.id] = record


class _WriteWatch:
    """A storage whose writes report their outcome to the scheduler (called under its lock):
    ``refused()`` after a write failed with StorageUnavailable, ``wrote()`` after one succeeded."""

    WRITES = WRITE_METHODS

    def __init__(self, storage: Storage, refused: Callable[[], None], wrote: Callable[[], None]):
        self._inner = storage
        self._refused = refused
        self._wrote = wrote

    def __getattr__(self, name: str):
        attribute = getattr(self._inner, name)  # looked up per call: tests may replace a method
        if name not in self.WRITES:
            return attribute

        def write(*args, **kwargs):
            try:
                result = attribute(*args, **kwargs)
            except StorageUnavailable:
                self._refused()
                raise
            self._wrote()
            return result

        return write
