"""The trainer's protocol loop: lease a batch of candidates, evaluate them, report each, repeat.

The loop is generic over the evaluation, so the same code drives the Keras
evaluator, the synthetic evaluator of the tests and the benchmark's sleeping
trainers. No TensorFlow here.

A worker with ``candidates_per_step = K`` leases up to K candidates in one
LeaseCandidate call (``max_candidates``; all of one experiment), heartbeats
each lease on its own, and reports each one. Contract for an evaluation
function, one of::

    evaluate_fn(lease: worker_service_pb2.Lease, heartbeat: Heartbeat) -> Outcome
    evaluate_fn.evaluate_many(leases, heartbeats) -> list[Outcome | BaseException]

- It runs in a background thread of the worker (one batch at a time). A plain
  function evaluates a batch's leases one after another; a shutdown request
  leaves the ones not yet started unstarted, and their leases go back. An
  ``evaluate_many`` trains the whole batch together; its i-th entry belongs to
  ``leases[i]`` (an exception entry: that candidate failed or stopped).
- It calls a candidate's ``heartbeat(steps_done)`` as often as it likes (cheap:
  no RPC; a background thread per lease sends the actual Heartbeat RPCs every
  ``ttl_s / 3``). ``heartbeat`` returns False when that candidate should stop:
  the coordinator answered ``keep_going = false`` for its lease (lease lost or
  experiment cancelled), or a shutdown's grace period ran out. The evaluation
  then stops that candidate only and returns anything for it or raises
  :class:`EvaluationStopped`; its outcome is not reported.
- It returns an :class:`Outcome` per candidate; an exception is reported as
  status ERROR with its traceback (the coordinator retries the candidate while
  attempts remain).

Reports: a finished training is not thrown away. ReportResult is retried on
UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED until the lease's
TTL is spent, heartbeats going on meanwhile (see :meth:`Worker._report`).

Shutdown (``request_stop(grace_s)``, which the CLI wires to SIGTERM/SIGINT): no
new lease is taken; the batch in progress is finished and reported if that
happens within the grace period, otherwise its leases are given back
(ReturnLease, which costs a candidate no attempt) and ``run`` returns.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import grpc

from taylorglo_tf.limits import (
    ASSUMED_LEASE_TTL_S,
    DEFAULT_TRAINER_GRACE_S,
    MAX_ERROR_CHARS,
    MAX_ID_CHARS,
    MAX_LEASE_CANDIDATES,
    MAX_WAIT_MS,
)
from taylorglo_tf.retry import Backoff, call_with_retries
from taylorglo_tf.rpc import types_pb2, worker_service_pb2, worker_service_pb2_grpc

__all__ = ["Backoff", "EvaluationStopped", "Heartbeat", "Outcome", "Worker", "WorkerError"]

log = logging.getLogger(__name__)

DEFAULT_WAIT_MS = 10_000  # lease long-poll time (at most limits.MAX_WAIT_MS)

Heartbeat = Callable[[int], bool]
"""``heartbeat(steps_done) -> keep_going``."""

_STATUS_CODES = {
    "ok": worker_service_pb2.EVALUATION_STATUS_OK,
    "diverged": worker_service_pb2.EVALUATION_STATUS_DIVERGED,
    "aborted": worker_service_pb2.EVALUATION_STATUS_ABORTED,
    "error": worker_service_pb2.EVALUATION_STATUS_ERROR,
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

RETURN_TIMEOUT_S = 5.0  # giving a lease back is best effort: it expires anyway


class _ShutdownDeadline(grpc.RpcError):
    """A call that a shutdown's grace deadline cut short (see ``Worker._until_shutdown``)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "the shutdown's grace period ended first"


class EvaluationStopped(Exception):
    """Raised by an evaluation function when ``heartbeat`` told it to stop."""


class WorkerError(RuntimeError):
    """The worker cannot go on (bad credentials, incompatible coordinator)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one evaluation produced.

    ``status`` is ``"ok"``, ``"diverged"``, ``"aborted"`` or ``"error"``;
    ``fitness`` is the validation accuracy in [0, 1] (used when ``"ok"``);
    ``wall_time_s`` in seconds; ``attempts`` counts the abort-and-retry attempts
    made inside the trainer; ``error`` is the message for ``"error"``.
    """

    status: str = "ok"
    fitness: float = 0.0
    val_accuracy: float = 0.0
    val_loss: float = 0.0
    steps: int = 0
    wall_time_s: float = 0.0
    attempts: int = 1
    error: str = ""

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
            ),
            error=self.error[-MAX_ERROR_CHARS:],  # the end of a traceback says most
        )


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


class _Heartbeater:
    """Sends Heartbeat RPCs for one lease from a background thread, until the lease is reported."""

    def __init__(self, worker: Worker, lease: worker_service_pb2.Lease) -> None:
        self._worker = worker
        self._lease = lease
        self.steps_done = 0
        self.lost = False  # the coordinator said keep_going = false
        # time.monotonic() at which the coordinator drops the lease unless it hears from us
        self.expires_at = time.monotonic() + (lease.ttl_s if lease.ttl_s > 0 else ASSUMED_LEASE_TTL_S)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{lease.lease_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()

    def _interval(self, ttl_s: float) -> float:
        if self._worker.heartbeat_interval_s is not None:
            return self._worker.heartbeat_interval_s
        return max(0.05, (ttl_s if ttl_s > 0 else ASSUMED_LEASE_TTL_S) / 3.0)

    def _loop(self) -> None:
        interval = self._interval(self._lease.ttl_s)
        while not self._done.wait(interval):
            try:
                response = self._beat(interval)
            except grpc.RpcError as error:
                if self._done.is_set():
                    return  # reported or given back while the coordinator was away
                log.warning(
                    "heartbeat for %s rejected (%s: %s); stopping",
                    self._lease.lease_id,
                    error.code().name,
                    error.details(),
                )
                self._mark_lost()
                return
            if not response.keep_going:
                log.info("coordinator stopped lease %s (keep_going=false)", self._lease.lease_id)
                self._mark_lost()
                return
            self.expires_at = time.monotonic() + response.ttl_s
            interval = self._interval(response.ttl_s)

    def _beat(self, interval: float) -> worker_service_pb2.HeartbeatResponse:
        """One heartbeat, retried through the one retry helper while the coordinator is away (it may be
        restarting; training goes on): the first retry after 0.5-1 s, at most one per ``interval`` after
        that, with jitter, so a cluster's trainers do not all retry at once; until the lease is done."""
        request = worker_service_pb2.HeartbeatRequest(
            lease_id=self._lease.lease_id, trainer_id=self._worker.trainer_id, steps_done=int(self.steps_done)
        )

        def send(_time_left_s: float) -> worker_service_pb2.HeartbeatResponse:
            request.steps_done = int(self.steps_done)
            return self._worker._stub.Heartbeat(request, timeout=max(1.0, interval), metadata=self._worker.metadata)

        def on_retry(error: Exception, delay: float) -> None:
            log.warning(
                "heartbeat for %s failed (%s); retrying in %.2f s", self._lease.lease_id, _failure(error), delay
            )

        return call_with_retries(
            send,
            retryable=RETRYABLE_CODES,
            backoff=Backoff(min(1.0, interval), interval),
            wait=self._done.wait,
            give_up_at=lambda: -math.inf if self._done.is_set() else math.inf,
            on_retry=on_retry,
        )

    def _mark_lost(self) -> None:
        self.lost = True
        self._worker._wake.set()


def check_candidates_per_step(value: Any) -> int:
    """``value`` if it is a whole number of candidates one lease call may ask for, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LEASE_CANDIDATES:
        raise ValueError(f"candidates_per_step must be an integer in 1..{MAX_LEASE_CANDIDATES}, got {value!r}")
    return value


class Worker:
    """Leases candidates from a coordinator and evaluates them with ``evaluate_fn``.

    ``channel`` is a ``grpc.Channel`` (see ``taylorglo_tf.connection.connect``);
    ``trainer_id`` names this trainer in the coordinator's records (<= ``limits.MAX_ID_CHARS``).
    ``wait_ms`` is the lease long-poll time. ``heartbeat_interval_s`` overrides
    the default ``ttl_s / 3``. ``max_candidates`` makes ``run`` return after that
    many reported evaluations. ``grace_s`` is the default shutdown grace period.
    ``candidates_per_step`` is how many candidates one LeaseCandidate call asks
    for (and one evaluation batch holds); it may be raised while running (a
    measured K: ``--candidates-per-step auto``).
    """

    def __init__(
        self,
        channel: grpc.Channel,
        evaluate_fn: EvaluateFn,
        trainer_id: str,
        *,
        wait_ms: int = DEFAULT_WAIT_MS,
        heartbeat_interval_s: float | None = None,
        max_candidates: int | None = None,
        grace_s: float = DEFAULT_TRAINER_GRACE_S,
        backoff: Backoff | None = None,
        rpc_timeout_s: float = 30.0,
        metadata: Sequence[tuple[str, str]] = (),
        candidates_per_step: int = 1,
    ) -> None:
        if not trainer_id or len(trainer_id) > MAX_ID_CHARS:
            raise ValueError(f"trainer_id must be 1..{MAX_ID_CHARS} characters, got {trainer_id!r}")
        if not 0 <= wait_ms <= MAX_WAIT_MS:
            raise ValueError(f"wait_ms must be in 0..{MAX_WAIT_MS}, got {wait_ms}")
        check_candidates_per_step(candidates_per_step)
        if max_candidates is not None and max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        if grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {grace_s}")
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self._evaluate_fn = evaluate_fn
        self.trainer_id = trainer_id
        self.wait_ms = wait_ms
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_candidates = max_candidates
        self.candidates_per_step = candidates_per_step
        self.grace_s = grace_s
        self.rpc_timeout_s = rpc_timeout_s
        self.metadata = tuple(metadata)
        self._backoff = backoff or Backoff()
        self._stop_requested = threading.Event()
        self._stop_changed = threading.Event()  # set by every request_stop (wakes report retries)
        self._stop_deadline = math.inf  # time.monotonic() after which the current lease is given back
        self._wake = threading.Event()  # set by anything the main loop waits for
        self.reported = 0  # evaluations reported (accepted or not)
        self.returned = 0  # leases given back unfinished
        self.lease_calls = 0  # LeaseCandidate calls that granted leases
        # True when run() gave a lease back while its evaluation thread still ran
        # (the caller may then exit the process without waiting for that thread).
        self.abandoned_evaluation = False
        # Round trips of granted leases and time spent evaluating, in seconds (for the benchmark).
        self.lease_wait_s: list[float] = []
        self.report_s: list[float] = []  # ReportResult round trips, seconds
        self.busy_s = 0.0

    # -- control ---------------------------------------------------------------

    def request_stop(self, grace_s: float | None = None) -> None:
        """Starts a graceful shutdown (safe to call from a signal handler or another thread)."""
        grace = self.grace_s if grace_s is None else grace_s
        self._stop_deadline = min(self._stop_deadline, time.monotonic() + grace)
        self._stop_requested.set()
        self._stop_changed.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    def _past_deadline(self) -> bool:
        return time.monotonic() >= self._stop_deadline

    def _sleep(self, seconds: float) -> None:
        """Sleeps, waking early on a stop request."""
        self._wake.clear()
        if not self.stopping:
            self._wake.wait(seconds)

    def _wait_for_stop(self, seconds: float) -> None:
        """Sleeps; any request_stop ends the sleep at once (its grace deadline is read after)."""
        if self._stop_changed.wait(seconds):
            self._stop_changed.clear()

    # -- main loop -------------------------------------------------------------

    def run(self) -> int:
        """Runs until stopped or ``max_candidates`` are reported; returns the number reported.

        Raises :class:`WorkerError` when the coordinator rejects this trainer
        (bad token, wrong role) or does not implement the worker API.
        """
        while not self.stopping:
            if self.max_candidates is not None and self.reported >= self.max_candidates:
                break
            leases = self._lease()
            if leases:
                self._process(leases)
        return self.reported

    def _check_fatal(self, error: grpc.RpcError, what: str) -> None:
        if error.code() in FATAL_CODES:
            raise WorkerError(f"{what} rejected by the coordinator: {error.code().name}: {error.details()}") from None

    def _batch_size(self) -> int:
        """Candidates to ask for: a step's worth, but no more than ``max_candidates`` still allows."""
        size = self.candidates_per_step
        if self.max_candidates is not None:
            size = min(size, self.max_candidates - self.reported)
        return max(1, size)

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
            for lease in leases:
                self._return(lease, "trainer shutting down")
            return []
        # Counted once kept: a stop requested after this finishes them within its grace period.
        self.lease_calls += 1
        self.lease_wait_s.append(waited)
        return leases

    def _poll_lease(self, _time_left_s: float) -> tuple[worker_service_pb2.LeaseCandidateResponse, float] | None:
        """One LeaseCandidate long-poll and its round trip in seconds; None when a stop request cancelled it."""
        if self.stopping:
            return None
        request = worker_service_pb2.LeaseCandidateRequest(
            trainer_id=self.trainer_id, wait_ms=self.wait_ms, max_candidates=self._batch_size()
        )
        started = time.monotonic()
        self._wake.clear()
        future = self._stub.LeaseCandidate.future(
            request, timeout=self.wait_ms / 1000 + self.rpc_timeout_s, metadata=self.metadata
        )
        future.add_done_callback(lambda _: self._wake.set())
        while not future.done():
            if self.stopping and future.cancel():
                return None
            self._wake.wait(0.5)  # bounded, so signal handlers run promptly
        try:
            return future.result(), time.monotonic() - started
        except grpc.FutureCancelledError:
            return None

    def _process(self, leases: list[worker_service_pb2.Lease]) -> None:
        """Evaluates a batch of leases with heartbeats, then reports or returns each."""
        if len(leases) > 1:
            log.info("leased %d candidates of experiment %s in one call", len(leases), leases[0].experiment_id)
        for lease in leases:
            log.info(
                "leased %s: experiment %s generation %d candidate %d (attempt %d)",
                lease.lease_id,
                lease.experiment_id,
                lease.generation,
                lease.index,
                lease.attempt,
            )
        heartbeaters = [_Heartbeater(self, lease) for lease in leases]
        started = time.monotonic()
        for heartbeater in heartbeaters:
            heartbeater.start()
        try:  # heartbeats go on until each outcome is delivered: they keep the leases alive meanwhile
            results = self._start_evaluation(leases, [self._heartbeat_fn(h) for h in heartbeaters])
            if self._await_outcome(leases, heartbeaters, results, started):
                for lease, heartbeater, result in zip(leases, heartbeaters, results.result()):
                    self._deliver(lease, heartbeater, result)
        finally:
            for heartbeater in heartbeaters:
                heartbeater.stop()

    def _heartbeat_fn(self, heartbeater: _Heartbeater) -> Heartbeat:
        """One candidate's ``heartbeat(steps_done) -> keep_going``: False once its lease is lost or the
        shutdown deadline has passed."""

        def heartbeat(steps_done: int) -> bool:
            heartbeater.steps_done = int(steps_done)
            return not (heartbeater.lost or (self.stopping and self._past_deadline()))

        return heartbeat

    def _start_evaluation(
        self, leases: list[worker_service_pb2.Lease], heartbeats: list[Heartbeat]
    ) -> Future[list[Result]]:
        """Runs the evaluation of ``leases`` in a background thread; the future holds one result per lease."""
        results: Future = Future()
        results.set_running_or_notify_cancel()
        # Done (and visible as done) before the wake-up, so the waiting loop never misses it.
        results.add_done_callback(lambda _: self._wake.set())

        def target() -> None:
            try:
                results.set_result(self._evaluate(leases, heartbeats))
            except BaseException as error:  # a bug in this module: still one result per lease
                results.set_result([error] * len(leases))

        thread_name = f"evaluate-{leases[0].lease_id}" + (f"+{len(leases) - 1}" if len(leases) > 1 else "")
        threading.Thread(target=target, name=thread_name, daemon=True).start()
        return results

    def _evaluate(self, leases: list[worker_service_pb2.Lease], heartbeats: list[Heartbeat]) -> list[Result]:
        """One result per lease: the batch trained together (``evaluate_many``), or one after another."""
        evaluate_many = getattr(self._evaluate_fn, "evaluate_many", None)
        if evaluate_many is None:
            results: list[Result] = []
            for index, (lease, heartbeat) in enumerate(zip(leases, heartbeats)):
                # No new training once a shutdown began: the lease goes back. The first was
                # kept before this thread started, so a stop in between finishes it (grace period).
                if index > 0 and self.stopping:
                    results.append(EvaluationStopped(f"lease {lease.lease_id} not started: shutting down"))
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
                results = [
                    Outcome(
                        status="error", error=f"evaluate_many returned {len(results)} results for {len(leases)} leases"
                    )
                ] * len(leases)
        for lease, result in zip(leases, results):
            if isinstance(result, BaseException) and not isinstance(result, EvaluationStopped):
                # The traceback goes to the coordinator; the trainer's own log says why too.
                log.warning(
                    "evaluation of %s failed: %s",
                    lease.lease_id,
                    "".join(traceback.format_exception_only(type(result), result)).strip(),
                )
        return results

    def _await_outcome(
        self,
        leases: list[worker_service_pb2.Lease],
        heartbeaters: list[_Heartbeater],
        results: Future[list[Result]],
        started: float,
    ) -> bool:
        """Waits for the evaluation thread: True when it finished; False when, past the shutdown
        deadline, the leases were given back instead."""
        try:
            while True:
                # Clear, then check, then wait: a wake-up between the check and the
                # wait is kept. (Waiting on the thread's liveness instead would race
                # with its exit and could sleep a whole wait out after the result.)
                self._wake.clear()
                if results.done():
                    return True
                if self.stopping and self._past_deadline():
                    # The evaluation would not finish within the grace period.
                    for lease, heartbeater in zip(leases, heartbeaters):
                        if not heartbeater.lost:
                            self._return(lease, "trainer shutting down")
                    self.abandoned_evaluation = True
                    return False
                # Bounded waits keep signal handlers prompt; after a stop request,
                # wake at the deadline at the latest.
                self._wake.wait(min(0.5, max(0.0, self._stop_deadline - time.monotonic())))
        finally:
            self.busy_s += time.monotonic() - started

    def _deliver(self, lease: worker_service_pb2.Lease, heartbeater: _Heartbeater, result: Result) -> None:
        """Reports one candidate's outcome, or gives its lease back when its evaluation stopped (or never started)."""
        if heartbeater.lost:
            log.info("lease %s stopped before finishing; not reported", lease.lease_id)
            return
        if isinstance(result, EvaluationStopped):
            # The evaluation saw the shutdown first (its heartbeat said stop, or it was never
            # started): the lease is still ours, so give it back all the same.
            self._return(lease, "trainer shutting down")
            return
        if isinstance(result, BaseException):
            result = error_outcome(result)
        elif not isinstance(result, Outcome):
            result = Outcome(status="error", error=f"evaluate_fn returned {type(result).__name__}, expected Outcome")
        self._report(lease, result, heartbeater)

    def _report(self, lease: worker_service_pb2.Lease, outcome: Outcome, heartbeater: _Heartbeater) -> None:
        """Reports an outcome, retrying until the lease's TTL is spent: a finished training is not thrown away.

        UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are
        retried with backoff: the coordinator (or its database) may recover, and
        reports are idempotent (one that did land is acknowledged again with
        accepted = false). The heartbeats go on meanwhile, so a coordinator that
        still answers them (a full disk) keeps the lease, and the retries, alive;
        the last TTL it granted bounds them. A stop request ends the waits at once;
        retries then end at its grace deadline.
        """
        request = outcome.to_request(lease.lease_id, self.trainer_id)
        started = time.monotonic()
        backoff = self._backoff.fresh()

        def give_up_at() -> float:
            return min(heartbeater.expires_at, self._stop_deadline if self.stopping else math.inf)

        def send(time_left_s: float) -> worker_service_pb2.ReportResultResponse:
            timeout = max(1.0, min(self.rpc_timeout_s, time_left_s))
            return self._until_shutdown(self._stub.ReportResult, request, timeout)

        def on_retry(error: Exception, delay: float) -> None:
            log.warning("report for %s failed (%s); retrying in %.2f s", lease.lease_id, _failure(error), delay)

        while True:
            try:
                response = call_with_retries(
                    send,
                    retryable=REPORT_RETRYABLE_CODES,
                    give_up_at=give_up_at,
                    backoff=backoff,
                    wait=self._wait_for_stop,
                    on_retry=on_retry,
                )
            except grpc.RpcError as error:
                self._check_fatal(error, "ReportResult")
                code = error.code()
                if code == grpc.StatusCode.INVALID_ARGUMENT and request.status != _STATUS_CODES["error"]:
                    # Our result was malformed: report it as a trainer error so the
                    # attempt counts instead of the candidate hanging until expiry.
                    log.error("report for %s rejected: %s", lease.lease_id, error.details())
                    request = Outcome(status="error", error=f"invalid report: {error.details()}").to_request(
                        lease.lease_id, self.trainer_id
                    )
                    continue
                if code in REPORT_RETRYABLE_CODES:
                    why = "before shutdown" if self.stopping and self._past_deadline() else "within the lease's TTL"
                    log.error(
                        "report for %s not delivered %s (%s: %s); the coordinator will lease the candidate again",
                        lease.lease_id,
                        why,
                        code.name,
                        error.details(),
                    )
                else:
                    log.error("report for %s failed (%s: %s); dropped", lease.lease_id, code.name, error.details())
                return
            self.reported += 1
            self.report_s.append(time.monotonic() - started)
            if response.accepted:
                log.info("reported %s: %s fitness %.4f", lease.lease_id, outcome.status, outcome.fitness)
            else:
                log.info("report for %s not accepted (%s)", lease.lease_id, response.reason)
            return

    def _until_shutdown(self, method: Any, request: Any, timeout: float) -> Any:
        """``method(request)``, cut short once a stop request's grace deadline passes.

        A call sent before the stop (the channel waits for a coordinator that is
        gone, up to ``timeout``) would otherwise hold the shutdown for its whole
        timeout; cut short, it fails as DEADLINE_EXCEEDED, which it then is.
        """
        future = method.future(request, timeout=timeout, metadata=self.metadata)
        while True:
            slice_s = 0.5 if not self.stopping else max(0.0, min(0.5, self._stop_deadline - time.monotonic()))
            try:
                return future.result(timeout=slice_s)
            except grpc.FutureTimeoutError:
                if self.stopping and self._past_deadline() and future.cancel():
                    raise _ShutdownDeadline() from None

    def _return(self, lease: worker_service_pb2.Lease, reason: str) -> None:
        """Gives a lease back unfinished (best effort: an unreturned lease expires anyway)."""
        request = worker_service_pb2.ReturnLeaseRequest(
            lease_id=lease.lease_id, trainer_id=self.trainer_id, reason=reason
        )
        give_up_at = time.monotonic() + RETURN_TIMEOUT_S
        try:
            call_with_retries(
                lambda time_left_s: self._stub.ReturnLease(
                    request, timeout=max(0.5, time_left_s), metadata=self.metadata
                ),
                retryable=RETRYABLE_CODES,
                give_up_at=lambda: give_up_at,
                backoff=Backoff(0.2, 1.0),
            )
        except grpc.RpcError:
            log.warning("could not return lease %s; it will expire on the coordinator", lease.lease_id)
            return
        self.returned += 1
        log.info("returned lease %s (%s)", lease.lease_id, reason)
