"""The trainer's protocol loop: lease a batch of candidates, evaluate them, report each, repeat.

Generic over the evaluation (the Keras evaluator, the synthetic one of the tests,
the benchmark's sleeping trainers); no TensorFlow here.

One control loop, in the thread that calls :meth:`Worker.run`, owns the leases:
it alone moves a lease from training to reporting to done, sends the RPCs and
keeps the deadlines. Each call goes out as a future whose completion arrives in
the loop's inbox, beside the evaluation's results and stop requests, so the loop
never waits on the coordinator (but to give leases back: bounded, best effort).
The evaluation is blocking (TensorFlow): the worker's one evaluation thread runs
it, a batch at a time, and shares with the loop only each lease's progress (it
writes) and whether to stop (it reads). An evaluation function is one of::

    evaluate_fn(lease: worker_service_pb2.Lease, heartbeat: Heartbeat) -> Outcome
    evaluate_fn.evaluate_many(leases, heartbeats) -> list[Outcome | BaseException]

- A plain function evaluates a batch's leases one after another (after a stop
  request, the ones not started go back); ``evaluate_many`` trains the batch
  together, its i-th entry for ``leases[i]``.
- ``heartbeat(steps_done)`` is cheap (no RPC) and returns False when that
  candidate must stop: its lease is lost, its experiment cancelled, or the
  shutdown's grace period is over. The evaluation then stops that candidate
  only, and returns anything for it or raises :class:`EvaluationStopped`; it is
  not reported. The one exception is the early-stopping rule (below): then
  ``heartbeat.stopped_early`` is True and the candidate IS reported.
- An exception for a candidate is reported as status ERROR with its traceback
  (the coordinator retries the candidate while attempts remain).

Heartbeats: one Heartbeat call every ``ttl_s / 3`` carries every lease held,
each with its ``steps_done`` (``HeartbeatRequest.leases``); a failed one is
retried after 0.5-1 s, then at most once per interval, with jitter.

Early stopping (``Lease.checkpoints``): each heartbeat is a
:class:`CandidateHeartbeat`, which also has ``checkpoint(index, steps,
val_accuracy)``, called by the evaluation at each checkpoint it reaches. It only
records the value on the lease; every Heartbeat call carries all of a lease's
values (``LeaseProgress.checkpoints``: idempotent, a lost call loses nothing).
The next ``heartbeat(steps)`` after a new value asks the control loop for a
Heartbeat now (after the one in flight, if any) and blocks the evaluation until
an answer that covered the value, at most ``CHECKPOINT_ANSWER_WAIT_S`` (then it
trains on). While the answers say ``hold`` (the rest of the generation has not
reached the checkpoint yet) it heartbeats every ``HOLD_POLL_S`` and keeps
blocking, until an answer without hold, a stop, the lease's loss (or its granted
TTL running out unanswered) or the shutdown's deadline. A hold is not kept while
a lease of the same batch has yet to start training (an evaluation that trains
the batch one after another, or in turns): the coordinator counts that one as in
training, so the wait would never end; the candidate trains on and its result
waits on the coordinator for the decision. An answer with ``stop``
ends the candidate: ``heartbeat`` returns False, ``stopped_early`` is True, and
its result is reported as status STOPPED (the steps it trained, its validation
accuracy, its checkpoint values), never given back. Only answers move these
flags, and only the control loop reads answers; it wakes a blocked evaluation
through a ``threading.Condition``.

Reports: a finished training is not thrown away. ReportResult is retried on
UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED until the lease's
TTL is spent, heartbeats going on meanwhile (a coordinator that answers them but
cannot store results, a full disk, keeps the lease alive). Reports are idempotent.

Shutdown (``request_stop(grace_s)``; SIGTERM/SIGINT in the CLI): no new lease,
waits between report retries end at once, and the batch in progress is finished
and reported if that happens within the grace period. At its deadline, leases
still training go back (ReturnLease costs no attempt; the evaluation is told to
stop and left behind), reports still going are dropped, and ``run`` returns.
Every ReturnLease says why in its ``reason``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from taylorglo_tf.limits import (
    ASSUMED_LEASE_TTL_S,
    DEFAULT_TRAINER_GRACE_S,
    MAX_CHECKPOINT_VALUES,
    MAX_ERROR_CHARS,
    MAX_ID_CHARS,
    MAX_LEASE_CANDIDATES,
    MAX_REASON_CHARS,
    MAX_WAIT_MS,
    SCRIPT_MODEL_PREFIX,
)
from taylorglo_tf.retry import Backoff, call_with_retries
from taylorglo_tf.rpc import types_pb2, worker_service_pb2, worker_service_pb2_grpc

__all__ = ["Backoff", "CandidateHeartbeat", "EvaluationStopped", "Heartbeat", "Outcome", "Worker", "WorkerError"]

log = logging.getLogger(__name__)

DEFAULT_WAIT_MS = 10_000  # lease long-poll time (at most limits.MAX_WAIT_MS)
RETURN_TIMEOUT_S = 5.0  # giving leases back is best effort: they expire anyway
_MAX_IDLE_S = 1.0  # the control loop looks at the clock at least this often
_DISTINCT_FAILURES_KEPT = 100  # failure texts remembered so that each is logged in full once
# An evaluation waits at most this long for the answer to a checkpoint's value, then trains on
# (a coordinator that does not answer must not stall training: without a decision it goes on).
CHECKPOINT_ANSWER_WAIT_S = 10.0
# Seconds between heartbeats while the coordinator says hold (its decision comes when others arrive).
HOLD_POLL_S = 0.1

Heartbeat = Callable[[int], bool]
"""``heartbeat(steps_done) -> keep_going``."""

_STATUS_CODES = {
    "ok": worker_service_pb2.EVALUATION_STATUS_OK,
    "diverged": worker_service_pb2.EVALUATION_STATUS_DIVERGED,
    "aborted": worker_service_pb2.EVALUATION_STATUS_ABORTED,
    "error": worker_service_pb2.EVALUATION_STATUS_ERROR,
    "stopped": worker_service_pb2.EVALUATION_STATUS_STOPPED,
}

# Codes after which the same call may succeed later (coordinator restarting,
# network blip, overload).
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
# A finished result is worth more: a report is also retried on INTERNAL (a
# coordinator whose database failed may recover; reports are idempotent).
REPORT_RETRYABLE_CODES = RETRYABLE_CODES | {grpc.StatusCode.INTERNAL}
# Codes that no retry can fix: the trainer is misconfigured.
FATAL_CODES = frozenset(
    {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED}
)
# A lease call is retried after anything but those and INVALID_ARGUMENT (a bad trainer id):
# asking for work again changes nothing on the coordinator.
LEASE_RETRYABLE_CODES = (
    frozenset(grpc.StatusCode) - FATAL_CODES - {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
)

# ReturnLease.reason: why a lease goes back (the coordinator logs it).
SHUTTING_DOWN = "trainer shutting down"
GRACE_OVER = f"{SHUTTING_DOWN}: the grace period ended before the evaluation"
NOT_STARTED = "not started"
CANNOT_SERVE = "this trainer cannot serve the lease"


class EvaluationStopped(Exception):
    """Raised by an evaluation function when ``heartbeat`` told it to stop."""


class WorkerError(RuntimeError):
    """The worker cannot go on (bad credentials, incompatible coordinator)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one evaluation produced.

    ``status`` is ``"ok"``, ``"diverged"``, ``"aborted"``, ``"error"`` or
    ``"stopped"`` (the early-stopping rule ended it: ``steps`` says how far it
    trained); ``fitness`` is the validation accuracy in [0, 1] (used when
    ``"ok"``); ``wall_time_s`` in seconds; ``attempts`` counts the abort-and-retry
    attempts made inside the trainer; ``error`` is the message for ``"error"``;
    ``checkpoints`` are ``(index, steps, val_accuracy)`` at the early-stopping
    checkpoints it reached.
    """

    status: str = "ok"
    fitness: float = 0.0
    val_accuracy: float = 0.0
    val_loss: float = 0.0
    steps: int = 0
    wall_time_s: float = 0.0
    attempts: int = 1
    error: str = ""
    checkpoints: tuple[tuple[int, int, float], ...] = ()

    def __post_init__(self) -> None:
        if self.status not in _STATUS_CODES:
            raise ValueError(f"Outcome.status must be one of {sorted(_STATUS_CODES)}, got {self.status!r}")
        if not (math.isfinite(self.fitness) and 0.0 <= self.fitness <= 1.0):
            raise ValueError(f"Outcome.fitness must be a finite number in [0, 1], got {self.fitness!r}")

    @classmethod
    def from_result(cls, result: Any) -> Outcome:
        """Converts an object with the fields of ``taylorglo_tf.training.EvaluationResult``."""
        return cls(
            status=str(result.status),
            fitness=float(result.fitness),
            val_accuracy=float(result.val_accuracy),
            val_loss=float(result.val_loss),
            steps=int(result.steps),
            wall_time_s=float(result.wall_time_s),
            attempts=int(result.attempts),
            checkpoints=tuple(getattr(result, "checkpoints", ())),
        )

    def to_request(self, lease_id: str, trainer_id: str) -> worker_service_pb2.ReportResultRequest:
        """The ReportResult request for this outcome (non-finite metrics are sent as 0)."""

        def finite(value: float) -> float:
            return float(value) if math.isfinite(value) else 0.0

        return worker_service_pb2.ReportResultRequest(
            lease_id=lease_id,
            trainer_id=trainer_id,
            status=_STATUS_CODES[self.status],
            fitness=self.fitness if self.status == "ok" else 0.0,
            metrics=types_pb2.EvaluationMetrics(
                val_accuracy=finite(self.val_accuracy),
                val_loss=finite(self.val_loss),
                steps=int(self.steps),
                wall_time_s=finite(self.wall_time_s),
                attempts=int(self.attempts),
                checkpoints=_checkpoint_values(self.checkpoints),
            ),
            error=self.error[-MAX_ERROR_CHARS:],  # the end of a traceback says most
        )


def _checkpoint_values(values: Sequence[tuple[int, int, float]]) -> list[types_pb2.CheckpointValue]:
    """The wire form of ``(index, steps, val_accuracy)`` values, by index (at most ``MAX_CHECKPOINT_VALUES``)."""
    return [
        types_pb2.CheckpointValue(index=int(index), steps=int(steps), val_accuracy=float(accuracy))
        for index, steps, accuracy in sorted(values)[:MAX_CHECKPOINT_VALUES]
    ]


EvaluateFn = Callable[[worker_service_pb2.Lease, Heartbeat], Outcome]
# What a batch's evaluation gives for one candidate: its outcome, or why there is none
# (EvaluationStopped: stopped or never started; any other exception: reported as an error).
Result = Outcome | BaseException


def _failure(error: Exception) -> str:
    """``CODE: details`` of a failed call, for the log."""
    if isinstance(error, grpc.RpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


def error_outcome(error: BaseException) -> Outcome:
    """Status ERROR with ``error``'s traceback (sent to the coordinator, which retries the candidate)."""
    return Outcome(status="error", error="".join(traceback.format_exception(type(error), error, error.__traceback__)))


def check_candidates_per_step(value: Any) -> int:
    """``value`` if it is a whole number of candidates one lease call may ask for, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LEASE_CANDIDATES:
        raise ValueError(f"candidates_per_step must be an integer in 1..{MAX_LEASE_CANDIDATES}, got {value!r}")
    return value


_TRAINING, _REPORTING, _DONE = "training", "reporting", "done"


@dataclasses.dataclass(eq=False)
class _Held:
    """One lease from grant to end. The control loop owns it; the evaluation thread only writes
    ``steps_done`` and the checkpoint values, and reads whether to stop (:class:`CandidateHeartbeat`);
    the checkpoint fields are read and written under ``Worker._answers``."""

    lease: worker_service_pb2.Lease
    expires_at: float  # time.monotonic() when the coordinator drops it unless it hears from us
    steps_done: int = 0
    lost: bool = False  # the coordinator said keep_going = false or refused its heartbeat
    # checkpoint index -> (steps, val_accuracy), as the evaluation measured them
    checkpoints: dict[int, tuple[int, float]] = dataclasses.field(default_factory=dict)
    recorded: int = 0  # checkpoint values recorded so far
    answered: int = 0  # of them, how many the latest answer covered
    hold: bool = False  # the latest answer said hold
    stopped_early: bool = False  # an answer said stop: reported as STOPPED, not given back
    waiting: bool = False  # its evaluation is blocked waiting for an answer
    phase: str = _TRAINING
    outcome: Outcome = dataclasses.field(default_factory=Outcome)  # while reporting, with:
    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    retry_at: float = math.inf  # the next try, when no call is in flight
    call: Any = None  # the ReportResult call in flight
    reporting_since: float = 0.0


class _Batch:
    """The leases of one LeaseCandidate call, evaluated together, and their heartbeat schedule."""

    def __init__(self, leases: list[worker_service_pb2.Lease], interval: float) -> None:
        self.started = time.monotonic()
        self.held = [_Held(lease, self.started + _ttl(lease.ttl_s)) for lease in leases]
        self.evaluating = True  # until the evaluation thread hands over its results
        self.interval = interval
        self.next_beat = self.started + interval
        self.beat: Any = None  # the Heartbeat call in flight
        self.beat_again = False  # a checkpoint value came while it was in flight: send another at its answer
        self.beat_backoff = Backoff(min(1.0, interval), interval)  # first retry after 0.5-1 s

    def open(self) -> list[_Held]:
        return [held for held in self.held if held.phase != _DONE]


class CandidateHeartbeat:
    """One lease's heartbeat, as the worker hands it to the evaluation (see the module's protocol).

    ``heartbeat(steps_done) -> keep_going``: records progress; False when the candidate must
    stop. Right after a new checkpoint value it blocks until the coordinator answered it (and
    while it says hold). ``heartbeat.checkpoint(index, steps, val_accuracy)``: records the
    validation accuracy at early-stopping checkpoint ``index`` (0-based), measured after
    ``steps`` steps; never blocks. ``stopped_early``: the early-stopping rule stopped the
    candidate (report it as ``"stopped"``, do not give it back). Thread-safe.
    """

    def __init__(self, worker: Worker, batch: _Batch, held: _Held) -> None:
        self._worker, self._batch, self._held = worker, batch, held

    @property
    def stopped_early(self) -> bool:
        return self._held.stopped_early

    def checkpoint(self, index: int, steps: int, val_accuracy: float) -> None:
        held = self._held
        with self._worker._answers:
            if len(held.checkpoints) >= MAX_CHECKPOINT_VALUES and int(index) not in held.checkpoints:
                return  # more than a lease may carry: the coordinator would refuse them
            held.checkpoints[int(index)] = (int(steps), float(val_accuracy))
            held.recorded += 1

    def __call__(self, steps_done: int) -> bool:
        held = self._held
        held.steps_done = int(steps_done)
        with self._worker._answers:
            waiting = held.answered < held.recorded or held.hold
        if waiting and self._worker._keeps_going(held):
            self._worker._await_decision(self._batch, held)
        return self._worker._keeps_going(held)


def _ttl(ttl_s: float) -> float:
    return ttl_s if ttl_s > 0 else ASSUMED_LEASE_TTL_S


class Worker:
    """Leases candidates from a coordinator and evaluates them with ``evaluate_fn``.

    ``channel`` is a ``grpc.Channel`` (see ``taylorglo_tf.connection.connect``);
    ``trainer_id`` names this trainer in the coordinator's records (<= ``limits.MAX_ID_CHARS``).
    ``wait_ms`` is the lease long-poll time. ``heartbeat_interval_s`` overrides
    the default ``ttl_s / 3``. ``max_reports`` makes ``run`` return after that
    many reported evaluations (None: run until stopped). ``grace_s`` is the
    default shutdown grace period. ``candidates_per_step`` is how many candidates
    one LeaseCandidate call asks for (and one evaluation batch holds); it may be
    raised while running (a measured K: ``--candidates-per-step auto``).
    ``experiment_id`` makes this a trainer of that one experiment (inside a user's
    script: ``taylorglo_tf.LossSearch``); unset, a generic trainer. Either way a
    lease this trainer cannot serve (another experiment's, or, for a generic
    trainer, one whose model is a script's: an older coordinator grants them
    unasked) goes straight back, which costs the candidate no attempt.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        evaluate_fn: EvaluateFn,
        trainer_id: str,
        *,
        wait_ms: int = DEFAULT_WAIT_MS,
        heartbeat_interval_s: float | None = None,
        max_reports: int | None = None,
        grace_s: float = DEFAULT_TRAINER_GRACE_S,
        backoff: Backoff | None = None,
        rpc_timeout_s: float = 30.0,
        metadata: Sequence[tuple[str, str]] = (),
        candidates_per_step: int = 1,
        experiment_id: str = "",
    ) -> None:
        if len(experiment_id) > MAX_ID_CHARS:
            raise ValueError(f"experiment_id must be at most {MAX_ID_CHARS} characters, got {experiment_id!r}")
        if not trainer_id or len(trainer_id) > MAX_ID_CHARS:
            raise ValueError(f"trainer_id must be 1..{MAX_ID_CHARS} characters, got {trainer_id!r}")
        if not 0 <= wait_ms <= MAX_WAIT_MS:
            raise ValueError(f"wait_ms must be in 0..{MAX_WAIT_MS}, got {wait_ms}")
        check_candidates_per_step(candidates_per_step)
        if max_reports is not None and (isinstance(max_reports, bool) or max_reports < 1):
            raise ValueError(f"max_reports must be None or an integer >= 1, got {max_reports!r}")
        if grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {grace_s}")
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self._evaluate_fn = evaluate_fn
        self.trainer_id = trainer_id
        self.experiment_id = experiment_id
        self.wait_ms = wait_ms
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_reports = max_reports
        self.candidates_per_step = candidates_per_step
        self.grace_s = grace_s
        self.rpc_timeout_s = rpc_timeout_s
        self.metadata = tuple(metadata)
        self._backoff = backoff or Backoff()
        # (kind, payload) from call callbacks, the evaluation thread and request_stop;
        # a SimpleQueue, whose put() is safe in a signal handler.
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        # Guards the leases' checkpoint fields; notified when an answer (or a lease's end) may end a wait.
        self._answers = threading.Condition()
        self._stopping = False
        self._stop_deadline = math.inf  # time.monotonic() when a shutdown's grace period ends
        self._jobs: queue.SimpleQueue[_Batch | None] | None = None  # the evaluation thread's, while it runs
        # a failure's text -> the lease that logged it first (the evaluation thread's alone)
        self._failures_logged: dict[str, str] = {}
        self.reported = 0  # evaluations reported (accepted or not)
        self.returned = 0  # leases given back unfinished
        self.lease_calls = 0  # LeaseCandidate calls that granted leases
        # True when run() gave a lease back while its evaluation still ran
        # (the caller may then exit the process without waiting for that thread).
        self.abandoned_evaluation = False
        # Round trips of granted leases and time spent evaluating, in seconds (for the benchmark).
        self.lease_wait_s: list[float] = []
        self.report_s: list[float] = []  # ReportResult round trips, seconds
        self.busy_s = 0.0

    def request_stop(self, grace_s: float | None = None) -> None:
        """Starts a graceful shutdown (safe to call from a signal handler or another thread)."""
        grace = self.grace_s if grace_s is None else grace_s
        self._stop_deadline = min(self._stop_deadline, time.monotonic() + grace)
        self._stopping = True
        self._inbox.put(("stop", None))

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _next_event(self, until: float) -> tuple[str, Any] | None:
        """The inbox's next event, or None when none came by ``until`` (time.monotonic())."""
        try:
            return self._inbox.get(timeout=min(max(0.0, until - time.monotonic()), _MAX_IDLE_S))
        except queue.Empty:
            return None

    def _sleep(self, seconds: float) -> None:
        """Waits ``seconds``; a stop request ends the wait at once (events of calls that ended are stale)."""
        until = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < until:
            self._next_event(until)

    def run(self) -> int:
        """Runs until stopped or ``max_reports`` are reported; returns the number reported.

        Raises :class:`WorkerError` when the coordinator rejects this trainer
        (bad token, wrong role) or does not implement the worker API.
        """
        try:
            while not self.stopping and (self.max_reports is None or self.reported < self.max_reports):
                leases = self._lease()
                if leases:
                    self._process(leases)
        finally:
            if self._jobs is not None:
                self._jobs.put(None)  # the evaluation thread ends after its evaluation
                self._jobs = None
        return self.reported

    def _check_fatal(self, error: grpc.RpcError, what: str) -> None:
        if error.code() in FATAL_CODES:
            raise WorkerError(f"{what} rejected by the coordinator: {error.code().name}: {error.details()}") from None

    # -- leasing ---------------------------------------------------------------

    def _lease(self) -> list[worker_service_pb2.Lease]:
        """Up to a step's worth of leases from one long-poll, retried through the one retry helper while the
        coordinator is away (a stop request ends the wait); [] when none came or a stop was requested."""

        def on_retry(error: Exception, delay: float) -> None:
            log.warning("cannot lease from the coordinator (%s); retrying in %.2f s", _failure(error), delay)

        try:
            polled = call_with_retries(
                self._poll_lease,
                retryable=LEASE_RETRYABLE_CODES,
                backoff=self._backoff,
                wait=self._sleep,
                on_retry=on_retry,
                give_up_at=lambda: -math.inf if self.stopping else math.inf,
            )
        except grpc.RpcError as error:
            self._check_fatal(error, "LeaseCandidate")
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:  # e.g. a bad trainer id: no retry fixes it
                raise WorkerError(f"LeaseCandidate rejected by the coordinator: {error.details()}") from None
            return []  # failed while stopping
        if polled is None:
            return []
        response, waited = polled
        self._backoff.reset()
        # A coordinator that predates `leases` fills only `lease`.
        leases = list(response.leases) or ([response.lease] if response.HasField("lease") else [])
        if not leases:
            if waited < self.wait_ms / 1000 / 10:
                # The coordinator answered at once without work: do not spin.
                self._sleep(min(1.0, self.wait_ms / 1000) * random.uniform(0.5, 1.0))
            return []
        if self.stopping:
            # Granted in the instant a stop was requested: hand them straight back.
            self._give_back(leases, f"{SHUTTING_DOWN}: leased as the shutdown began")
            return []
        unserved = [lease for lease in leases if not self._serves(lease)]
        if unserved:
            self._give_back(unserved, self._cannot_serve(unserved[0]))
            leases = [lease for lease in leases if self._serves(lease)]
            if not leases:  # the same coordinator would grant them again at once: do not spin
                self._sleep(min(1.0, self.wait_ms / 1000) * random.uniform(0.5, 1.0))
                return []
        # Counted once kept: a stop requested after this finishes them within its grace period.
        self.lease_calls += 1
        self.lease_wait_s.append(waited)
        return leases

    def _serves(self, lease: worker_service_pb2.Lease) -> bool:
        """Whether this trainer can train ``lease`` (the coordinator's rule, checked again here)."""
        if self.experiment_id:
            return lease.experiment_id == self.experiment_id
        return not lease.task.model.startswith(SCRIPT_MODEL_PREFIX)

    def _cannot_serve(self, lease: worker_service_pb2.Lease) -> str:
        if self.experiment_id:
            return f"{CANNOT_SERVE}: it trains experiment {self.experiment_id} only, not {lease.experiment_id}"
        return f"{CANNOT_SERVE}: model {lease.task.model!r} is registered only inside the script that runs it"

    def _poll_lease(self, _time_left_s: float) -> tuple[worker_service_pb2.LeaseCandidateResponse, float] | None:
        """One LeaseCandidate long-poll and its round trip in seconds; None when a stop request cancelled it."""
        if self.stopping:
            return None
        size = self.candidates_per_step  # a step's worth, but no more than max_reports still allows
        if self.max_reports is not None:
            size = max(1, min(size, self.max_reports - self.reported))
        request = worker_service_pb2.LeaseCandidateRequest(
            trainer_id=self.trainer_id, wait_ms=self.wait_ms, max_candidates=size, experiment_id=self.experiment_id
        )
        started = time.monotonic()
        call = self._stub.LeaseCandidate.future(
            request, timeout=self.wait_ms / 1000 + self.rpc_timeout_s, metadata=self.metadata
        )
        call.add_done_callback(lambda done: self._inbox.put(("leased", done)))
        while not call.done():
            if self.stopping and call.cancel():
                return None
            self._next_event(math.inf)  # its completion or a stop request
        try:
            return call.result(), time.monotonic() - started
        except grpc.FutureCancelledError:
            return None

    # -- one batch: the control loop ---------------------------------------------

    def _process(self, leases: list[worker_service_pb2.Lease]) -> None:
        """Evaluates a batch of leases with heartbeats, then reports or returns each."""
        for lease in leases:
            log.info(
                "leased %s: experiment %s generation %d candidate %d (attempt %d, %d in this call)",
                *(lease.lease_id, lease.experiment_id, lease.generation, lease.index, lease.attempt, len(leases)),
            )
        batch = _Batch(leases, self._interval(min(_ttl(lease.ttl_s) for lease in leases)))
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=self._evaluation_thread, args=(self._jobs,), name="evaluate", daemon=True).start()
        self._jobs.put(batch)
        try:
            self._tend(batch)
        except BaseException as error:  # WorkerError (this trainer is rejected) or a bug: the leases go back
            self._end(batch, f"trainer error: {error}", reporting_too=True)
            raise
        finally:
            if batch.beat is not None:
                batch.beat.cancel()

    def _tend(self, batch: _Batch) -> None:
        """Heartbeats, results, reports and the grace deadline of one batch, until each lease is done."""
        while batch.open():
            now = time.monotonic()
            if now >= self._stop_deadline:
                self._end(batch, GRACE_OVER)
                return
            if batch.beat is None and now >= batch.next_beat:
                self._send_heartbeat(batch)
            reporting = [held for held in batch.open() if held.phase == _REPORTING and held.call is None]
            for held in reporting:
                if now >= held.retry_at:
                    self._send_report(held)
            beat_at = [batch.next_beat] if batch.beat is None else []  # else its answer wakes the loop
            event = self._next_event(min([self._stop_deadline, *beat_at] + [held.retry_at for held in reporting]))
            if event is None:
                continue
            kind, payload = event
            if kind == "evaluated" and payload[0] is batch:
                self._on_evaluated(batch, payload[1])
            elif kind == "beat" and payload[1] is batch.beat:
                self._on_heartbeat(*payload)
            elif kind == "checkpoint" and payload is batch:  # an evaluation waits for a decision: beat now
                if batch.beat is None:
                    batch.next_beat = time.monotonic()
                else:
                    batch.beat_again = True
            elif kind == "report" and payload[1] is payload[0].call:
                self._on_report(*payload)
            elif kind == "stop":  # waits between report retries end at once
                for held in batch.open():
                    if held.phase == _REPORTING:
                        held.retry_at = min(held.retry_at, time.monotonic())

    def _end(self, batch: _Batch, reason: str, *, reporting_too: bool = False) -> None:
        """Ends a batch early: leases still training go back (their evaluation is told to stop and left
        behind); reports still going are dropped, and their leases go back too when ``reporting_too``
        (at a shutdown's deadline they are left to expire: the coordinator may be gone)."""
        back = [h.lease for h in batch.open() if not h.lost and (reporting_too or h.phase == _TRAINING)]
        for held in batch.open():
            if held.call is not None:
                held.call.cancel()
            if held.phase == _REPORTING:
                log.error("report for %s not delivered: %s", held.lease.lease_id, reason)
            held.phase = _DONE
        if batch.evaluating:
            self.busy_s += time.monotonic() - batch.started
            self.abandoned_evaluation = True
        self._wake_evaluation()
        self._give_back(back, reason)

    # -- the evaluation thread -------------------------------------------------

    def _evaluation_thread(self, jobs: queue.SimpleQueue[_Batch | None]) -> None:
        """Evaluates one batch after another; each batch's results go to the control loop's inbox."""
        for batch in iter(jobs.get, None):
            leases = [held.lease for held in batch.held]
            try:
                results = self._evaluate(leases, [CandidateHeartbeat(self, batch, held) for held in batch.held])
            except BaseException as error:  # a bug in this module: still one result per lease
                results = [error] * len(leases)
            self._inbox.put(("evaluated", (batch, results)))

    def _keeps_going(self, held: _Held) -> bool:
        """Whether ``held``'s evaluation goes on: not once its lease is lost, ended or stopped early,
        or the shutdown's grace period is over."""
        return not (held.lost or held.stopped_early or held.phase == _DONE or time.monotonic() >= self._stop_deadline)

    def _await_decision(self, batch: _Batch, held: _Held) -> None:
        """Blocks the evaluation thread until an answer covered ``held``'s checkpoint values (at most
        ``CHECKPOINT_ANSWER_WAIT_S``) and, while answers say hold, until one does not (see the module)."""
        self._inbox.put(("checkpoint", batch))
        give_up_at = time.monotonic() + CHECKPOINT_ANSWER_WAIT_S
        lease_id = held.lease.lease_id
        with self._answers:
            while self._keeps_going(held):
                now = time.monotonic()
                if held.answered < held.recorded:
                    if now >= give_up_at:
                        log.warning(
                            "no answer to %s's checkpoint value in %.0f s; training on",
                            *(lease_id, CHECKPOINT_ANSWER_WAIT_S),
                        )
                        return
                    until = give_up_at
                elif held.hold and self._may_hold(batch, held):
                    if now >= held.expires_at:  # unanswered for its whole TTL: the coordinator lost it
                        log.warning("lease %s held past its TTL without an answer; training on", lease_id)
                        return
                    until = held.expires_at
                else:
                    return
                # The answer notifies; the timeout also catches a shutdown's deadline.
                held.waiting = True
                try:
                    self._answers.wait(max(0.0, min(until, self._stop_deadline) - now))
                finally:
                    held.waiting = False

    @staticmethod
    def _may_hold(batch: _Batch, held: _Held) -> bool:
        """Whether ``held`` may wait at its checkpoint: not while a lease of its own batch has yet to start
        training (trained after it, one after another or in turns), which the coordinator counts as in
        training: that wait would never end. Training on is safe: the result waits for the decision."""
        return all(
            other.steps_done > 0 or other.checkpoints
            for other in batch.held
            if other is not held and other.phase == _TRAINING and not (other.lost or other.stopped_early)
        )

    def _wake_evaluation(self) -> None:
        with self._answers:
            self._answers.notify_all()

    def _evaluate(self, leases: list[worker_service_pb2.Lease], heartbeats: list[Heartbeat]) -> list[Result]:
        """One result per lease: the batch trained together (``evaluate_many``), or one after another."""
        evaluate_many = getattr(self._evaluate_fn, "evaluate_many", None)
        if evaluate_many is None:
            results: list[Result] = []
            for index, (lease, heartbeat) in enumerate(zip(leases, heartbeats)):
                # No new training once a shutdown began: the lease goes back. The first was
                # kept before the stop could matter, so it trains within the grace period.
                if index > 0 and self.stopping:
                    results.append(EvaluationStopped(NOT_STARTED))
                    continue
                try:
                    results.append(self._evaluate_fn(lease, heartbeat))
                except BaseException as error:  # reported; the coordinator retries
                    results.append(error)
        else:
            try:
                results = list(evaluate_many(list(leases), list(heartbeats)))
            except BaseException as error:  # the whole batch failed: each candidate reports it
                results = [error] * len(leases)
            if len(results) != len(leases):
                why = f"evaluate_many returned {len(results)} results for {len(leases)} leases"
                results = [Outcome(status="error", error=why)] * len(leases)
        for lease, result in zip(leases, results):
            if isinstance(result, BaseException) and not isinstance(result, EvaluationStopped):
                # The traceback goes to the coordinator; the trainer's own log says why too.
                why = "".join(traceback.format_exception_only(type(result), result)).strip()
                first = self._failures_logged.setdefault(why, lease.lease_id)
                if first == lease.lease_id:
                    log.warning("evaluation of %s failed: %s", lease.lease_id, why)
                else:  # a trainer that cannot run a task says so once, not once per lease
                    log.info("evaluation of %s failed as %s did", lease.lease_id, first)
                if len(self._failures_logged) > _DISTINCT_FAILURES_KEPT:
                    self._failures_logged.pop(next(iter(self._failures_logged)))
        return results

    def _on_evaluated(self, batch: _Batch, results: list[Result]) -> None:
        """Each candidate's result is to be reported, or its lease given back when its evaluation stopped."""
        batch.evaluating = False
        now = time.monotonic()
        self.busy_s += now - batch.started
        for held, result in zip(batch.held, results):
            if held.lost:
                log.info("lease %s stopped before finishing; not reported", held.lease.lease_id)
                held.phase = _DONE
                continue
            if held.stopped_early:  # reported, whatever the evaluation made of the stop
                outcome = self._stopped_outcome(held, result, now - batch.started)
            elif isinstance(result, EvaluationStopped):  # it stopped or never started: the lease is still ours
                # (Past the deadline, it is what told the evaluation to stop.)
                why = GRACE_OVER if now >= self._stop_deadline else SHUTTING_DOWN if self.stopping else "stopped"
                self._give_back([held.lease], f"{why}: {result}" if str(result) else why)
                held.phase = _DONE
                continue
            elif isinstance(result, BaseException):
                outcome = error_outcome(result)
            elif isinstance(result, Outcome):
                outcome = result
            else:
                outcome = Outcome(status="error", error=f"evaluate_fn returned {type(result).__name__}")
            if not outcome.checkpoints and held.checkpoints:  # an evaluation that does not keep them
                outcome = dataclasses.replace(outcome, checkpoints=self._recorded(held))
            held.outcome, held.backoff = outcome, self._backoff.fresh()
            held.reporting_since = held.retry_at = now
            held.phase = _REPORTING

    def _recorded(self, held: _Held) -> tuple[tuple[int, int, float], ...]:
        with self._answers:
            return tuple((index, steps, accuracy) for index, (steps, accuracy) in sorted(held.checkpoints.items()))

    def _stopped_outcome(self, held: _Held, result: Result, wall_time_s: float) -> Outcome:
        """The STOPPED report of a candidate the early-stopping rule ended: the evaluation's own
        ``"stopped"`` outcome, else one from what its heartbeat saw (its steps, its last checkpoint's value)."""
        recorded = self._recorded(held)
        if isinstance(result, Outcome):
            return dataclasses.replace(
                result, status="stopped", fitness=0.0, error="", checkpoints=result.checkpoints or recorded
            )
        return Outcome(
            status="stopped",
            val_accuracy=recorded[-1][2] if recorded else 0.0,
            steps=held.steps_done,
            wall_time_s=wall_time_s,
            checkpoints=recorded,
        )

    # -- heartbeats ------------------------------------------------------------

    def _interval(self, ttl_s: float) -> float:
        return self.heartbeat_interval_s if self.heartbeat_interval_s is not None else max(0.05, _ttl(ttl_s) / 3)

    def _send_heartbeat(self, batch: _Batch) -> None:
        """One Heartbeat call for every lease still held, each with its progress."""
        live = [held for held in batch.open() if not held.lost]
        if not live:
            batch.next_beat = math.inf
            return
        with self._answers:  # what this call covers: each lease's values recorded so far
            covered = [held.recorded for held in live]
            progress = [
                worker_service_pb2.LeaseProgress(
                    lease_id=h.lease.lease_id,
                    steps_done=h.steps_done,
                    checkpoints=_checkpoint_values([(i, s, a) for i, (s, a) in h.checkpoints.items()]),
                )
                for h in live
            ]
        request = worker_service_pb2.HeartbeatRequest(trainer_id=self.trainer_id, leases=progress)
        batch.beat = call = self._stub.Heartbeat.future(
            request, timeout=max(1.0, batch.interval), metadata=self.metadata
        )
        call.add_done_callback(lambda done: self._inbox.put(("beat", (batch, done, live, covered))))

    def _on_heartbeat(self, batch: _Batch, call: Any, live: list[_Held], covered: list[int]) -> None:
        now, batch.beat = time.monotonic(), None
        try:
            response = call.result()
        except grpc.FutureCancelledError:
            return
        except grpc.RpcError as error:
            names = ", ".join(held.lease.lease_id for held in live)
            if error.code() in RETRYABLE_CODES:  # the coordinator may be restarting: training goes on
                delay = batch.beat_backoff.next_delay()
                log.warning("heartbeat for %s failed (%s); retrying in %.2f s", names, _failure(error), delay)
                batch.next_beat = now + delay
            else:
                log.warning("heartbeat for %s rejected (%s); stopping", names, _failure(error))
                for held in live:
                    held.lost = True
                self._wake_evaluation()
            return
        batch.beat_backoff.reset()
        answers = {answer.lease_id: answer for answer in response.leases}
        with self._answers:
            for held, values in zip(live, covered):
                answer = answers.get(held.lease.lease_id)
                if answer is None:  # no news (lost on the way): the lease is not extended
                    continue
                held.answered, held.hold = max(held.answered, values), answer.hold
                if answer.stop:  # the early-stopping rule: reported, not lost
                    if not held.stopped_early:
                        log.info("coordinator stopped %s early (early-stopping rule)", held.lease.lease_id)
                    held.stopped_early = True
                elif answer.keep_going:
                    held.expires_at = now + answer.ttl_s
                    batch.interval = self._interval(answer.ttl_s)
                elif not held.lost and not held.stopped_early:
                    log.info("coordinator stopped lease %s (keep_going=false)", held.lease.lease_id)
                    held.lost = True
            holding = any(held.hold and held.waiting for held in live)
            self._answers.notify_all()
        batch.next_beat = now + batch.interval
        if batch.beat_again:  # a value recorded after this call went out waits for its answer
            batch.beat_again, batch.next_beat = False, now
        elif holding:
            batch.next_beat = min(batch.next_beat, now + HOLD_POLL_S)

    # -- reports and returns ---------------------------------------------------

    def _report_deadline(self, held: _Held) -> float:
        """Report retries end when the lease's last granted TTL is spent, or at a shutdown's deadline."""
        return min(held.expires_at, self._stop_deadline)

    def _send_report(self, held: _Held) -> None:
        request = held.outcome.to_request(held.lease.lease_id, self.trainer_id)
        timeout = max(1.0, min(self.rpc_timeout_s, self._report_deadline(held) - time.monotonic()))
        held.retry_at = math.inf
        held.call = call = self._stub.ReportResult.future(request, timeout=timeout, metadata=self.metadata)
        call.add_done_callback(lambda done: self._inbox.put(("report", (held, done))))

    def _on_report(self, held: _Held, call: Any) -> None:
        """A ReportResult call ended: the lease is done, or the report is tried again later."""
        held.call, lease_id, now = None, held.lease.lease_id, time.monotonic()
        try:
            response = call.result()
        except grpc.FutureCancelledError:
            return
        except grpc.RpcError as error:
            self._check_fatal(error, "ReportResult")
            code = error.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT and held.outcome.status != "error":
                # Our result was malformed: report it as a trainer error so the
                # attempt counts instead of the candidate hanging until expiry.
                log.error("report for %s rejected: %s", lease_id, error.details())
                held.outcome, held.retry_at = Outcome(status="error", error=f"invalid report: {error.details()}"), now
                return
            time_left = self._report_deadline(held) - now
            if code in REPORT_RETRYABLE_CODES and time_left > 0:
                delay = min(held.backoff.next_delay(), time_left)
                log.warning("report for %s failed (%s); retrying in %.2f s", lease_id, _failure(error), delay)
                held.retry_at = now + delay
                return
            held.phase = _DONE
            if code not in REPORT_RETRYABLE_CODES:
                log.error("report for %s failed (%s); dropped", lease_id, _failure(error))
            else:
                why = "before shutdown" if now >= self._stop_deadline else "within the lease's TTL"
                log.error(
                    "report for %s not delivered %s (%s); it will be leased again", lease_id, why, _failure(error)
                )
            return
        held.phase = _DONE
        self.reported += 1
        self.report_s.append(now - held.reporting_since)
        if response.accepted:
            log.info("reported %s: %s fitness %.4f", lease_id, held.outcome.status, held.outcome.fitness)
        else:
            log.info("report for %s not accepted (%s)", lease_id, response.reason)

    def _give_back(self, leases: list[worker_service_pb2.Lease], reason: str) -> None:
        """ReturnLease for each, saying why: best effort, RETURN_TIMEOUT_S for them all (a lease expires anyway)."""
        give_up_at = time.monotonic() + RETURN_TIMEOUT_S
        for lease in leases:
            request = worker_service_pb2.ReturnLeaseRequest(
                lease_id=lease.lease_id, trainer_id=self.trainer_id, reason=reason[:MAX_REASON_CHARS]
            )

            def send(time_left_s: float, request: Any = request) -> Any:
                return self._stub.ReturnLease(request, timeout=max(0.5, time_left_s), metadata=self.metadata)

            try:
                call_with_retries(
                    send, retryable=RETRYABLE_CODES, give_up_at=lambda: give_up_at, backoff=Backoff(0.2, 1.0)
                )
            except grpc.RpcError:
                log.warning("could not return lease %s; it will expire on the coordinator", lease.lease_id)
                continue
            self.returned += 1
            log.info("returned lease %s (%s)", lease.lease_id, reason)
