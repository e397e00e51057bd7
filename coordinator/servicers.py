"""gRPC servicers: request validation, then the :class:`~taylorglo_tf.coordinator.scheduler.Scheduler`.

Every field a client or trainer sends is checked here; a bad one is
INVALID_ARGUMENT naming its path in the request (``spec.search.population``,
``fitness``, ``metrics.val_accuracy``). Every string of every request is first
held to its bound (:data:`taylorglo_tf.limits.STRING_LIMITS`) by :func:`handler`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.limits import (
    MAX_CHECKPOINT_VALUES,
    MAX_ID_CHARS,
    MAX_LEASE_CANDIDATES,
    int_out_of_range,
    overlong_string,
)
from taylorglo_tf.rpc import experiment_service_pb2 as es_pb2
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws_pb2
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc

from . import paging
from .fleet import Fleet, fleet_response
from .grpc_util import InvalidArgument, rpc
from .longpoll import LongPolls
from .model import Checkpoint
from .scheduler import Beat, Report, Scheduler

_REPORTABLE = frozenset(
    {
        ws_pb2.EVALUATION_STATUS_OK,
        ws_pb2.EVALUATION_STATUS_DIVERGED,
        ws_pb2.EVALUATION_STATUS_ABORTED,
        ws_pb2.EVALUATION_STATUS_ERROR,
        ws_pb2.EVALUATION_STATUS_STOPPED,
    }
)


def _check_bounds(request: Any) -> None:
    """Every request's strings and bounded integers against ``limits`` (INVALID_ARGUMENT naming the field)."""
    overlong = overlong_string(request)
    if overlong:
        field, length, bound = overlong
        raise InvalidArgument(field, f"is {length} characters long; at most {bound}")
    out_of_range = int_out_of_range(request)
    if out_of_range:
        field, value, bound = out_of_range
        raise InvalidArgument(field, f"{value} is outside 0..{bound}")


def handler(method: Callable[..., Any]) -> Callable[..., Any]:
    """A servicer method: string bounds checked first, exceptions mapped to status codes (:func:`rpc`)."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def async_stream(self, request, context):
            _check_bounds(request)
            async for response in method(self, request, context):
                yield response

        return rpc(async_stream)
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def coroutine(self, request, context):
            _check_bounds(request)
            return await method(self, request, context)

        return rpc(coroutine)

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def streaming(self, request, context):
            _check_bounds(request)
            yield from method(self, request, context)

        return rpc(streaming)

    @functools.wraps(method)
    def unary(self, request, context):
        _check_bounds(request)
        return method(self, request, context)

    return rpc(unary)


def _identifier(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        shown = repr(value[:40]) + (f"... ({len(value)} characters)" if len(value) > 40 else "")
        raise InvalidArgument(field, f"{shown} is not at most {MAX_ID_CHARS} printable characters")
    return value


def _unit_interval(value: float, field: str) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidArgument(field, f"{value!r} is not a number in [0, 1]")


def checkpoint_values(values: Any, field: str) -> tuple[Checkpoint, ...]:
    """Early-stopping checkpoint values of a heartbeat or report, checked: ``(index, steps, val_accuracy)``."""
    if len(values) > MAX_CHECKPOINT_VALUES:
        raise InvalidArgument(field, f"holds {len(values)} values; at most {MAX_CHECKPOINT_VALUES}")
    checked = []
    for i, value in enumerate(values):
        if value.index < 0:
            raise InvalidArgument(f"{field}[{i}].index", f"{value.index} is negative")
        if value.steps < 1:
            raise InvalidArgument(f"{field}[{i}].steps", f"{value.steps} is not a step count >= 1")
        _unit_interval(value.val_accuracy, f"{field}[{i}].val_accuracy")
        checked.append((value.index, value.steps, value.val_accuracy))
    if len({index for index, _, _ in checked}) < len(checked):
        raise InvalidArgument(field, "names a checkpoint more than once")
    return tuple(checked)


def validate_report(request: ws_pb2.ReportResultRequest) -> Report:
    """Check a ReportResultRequest field by field and turn it into a :class:`Report`."""
    _identifier(request.lease_id, "lease_id")
    _identifier(request.trainer_id, "trainer_id")
    if request.status not in _REPORTABLE:
        raise InvalidArgument("status", f"{request.status} is not OK, DIVERGED, ABORTED, ERROR or STOPPED")
    _unit_interval(request.fitness, "fitness")
    metrics = None
    if request.HasField("metrics"):
        m = request.metrics
        _unit_interval(m.val_accuracy, "metrics.val_accuracy")
        if m.steps < 0:
            raise InvalidArgument("metrics.steps", f"{m.steps} is negative")
        if m.attempts < 0:
            raise InvalidArgument("metrics.attempts", f"{m.attempts} is negative")
        if not (math.isfinite(m.wall_time_s) and m.wall_time_s >= 0):
            raise InvalidArgument("metrics.wall_time_s", f"{m.wall_time_s!r} is not a time >= 0")
        checkpoint_values(m.checkpoints, "metrics.checkpoints")
        # val_loss may be NaN or inf: that is what a diverged run measures
        metrics = types_pb2.EvaluationMetrics()
        metrics.CopyFrom(m)
    return Report(request.lease_id, request.trainer_id, request.status, request.fitness, metrics, request.error)


class ExperimentServicer(es_grpc.ExperimentServiceServicer):
    """Plain methods (run in the server's thread pool), but WatchExperiment: an async generator
    on the event loop whose blocking reads of the event queue run in ``watch_pool``."""

    def __init__(self, scheduler: Scheduler, watch_pool: Executor, fleet: Fleet | None = None):
        self._scheduler = scheduler
        self._watch_pool = watch_pool
        self._fleet = fleet if fleet is not None else Fleet(scheduler.lease_ttl_s)

    @handler
    def SubmitExperiment(self, request, context):
        if not request.HasField("spec"):
            raise InvalidArgument("spec", "is required")
        return self._scheduler.submit(spec_lib.load_spec(request.spec))

    @handler
    def GetExperiment(self, request, context):
        return self._scheduler.get(_identifier(request.experiment_id, "experiment_id"))

    @handler
    def ListExperiments(self, request, context):
        return paging.list_page(self._scheduler.records(), request)

    @handler
    async def WatchExperiment(self, request, context):
        ended = threading.Event()  # the client hung up, or the server is stopping
        events = self._scheduler.watch(_identifier(request.experiment_id, "experiment_id"), lambda: not ended.is_set())
        loop = asyncio.get_running_loop()
        try:
            while True:  # each read waits at most 0.5 s in the pool (the watch checks ended that often)
                event = await loop.run_in_executor(self._watch_pool, next, events, None)
                if event is None:
                    return
                yield event
        finally:
            ended.set()

    @handler
    def CancelExperiment(self, request, context):
        return self._scheduler.cancel(_identifier(request.experiment_id, "experiment_id"))

    @handler
    def GetResult(self, request, context):
        _identifier(request.experiment_id, "experiment_id")
        return paging.result_page(self._scheduler.result, request)

    @handler
    def DeleteExperiment(self, request, context):
        experiment = self._scheduler.delete(_identifier(request.experiment_id, "experiment_id"))
        return es_pb2.DeleteExperimentResponse(experiment=experiment)

    @handler
    def GetFleet(self, request, context):
        return fleet_response(self._fleet, self._scheduler.records())


class WorkerServicer(ws_grpc.WorkerServiceServicer):
    """Coroutines on the server's event loop: a waiting trainer holds no thread, and the
    scheduler calls run in the small pool of :class:`LongPolls`, never on the loop."""

    def __init__(self, scheduler: Scheduler, long_polls: LongPolls, fleet: Fleet | None = None):
        self._scheduler = scheduler
        self._long_polls = long_polls
        self._fleet = fleet if fleet is not None else Fleet(scheduler.lease_ttl_s)

    @handler
    async def LeaseCandidate(self, request, context):
        trainer_id = _identifier(request.trainer_id, "trainer_id")
        experiment_id = _identifier(request.experiment_id, "experiment_id") if request.experiment_id else ""
        leases = await self._long_polls.lease(
            trainer_id,
            request.wait_ms / 1000.0,
            max_candidates=request.max_candidates or 1,  # 0: a client of one lease
            experiment_id=experiment_id,
        )
        self._fleet.leased(trainer_id, [lease.lease_id for lease in leases])
        # `lease` too: clients that predate `leases` read the first one there.
        return ws_pb2.LeaseCandidateResponse(lease=leases[0] if leases else None, leases=leases)

    @handler
    async def Heartbeat(self, request, context):
        """Batched (``leases``: every lease of the trainer) or single (``lease_id``, older trainers)."""
        trainer_id = _identifier(request.trainer_id, "trainer_id")
        if not request.leases:
            beats = [Beat(_identifier(request.lease_id, "lease_id"), request.steps_done)]
            fields = ["steps_done"]
        elif request.lease_id or request.steps_done:
            raise InvalidArgument("lease_id", "must be unset when leases are given (each lease goes in leases)")
        elif len(request.leases) > MAX_LEASE_CANDIDATES:
            raise InvalidArgument("leases", f"holds {len(request.leases)} leases; at most {MAX_LEASE_CANDIDATES}")
        else:
            beats = [
                Beat(
                    _identifier(lease.lease_id, f"leases[{i}].lease_id"),
                    lease.steps_done,
                    checkpoint_values(lease.checkpoints, f"leases[{i}].checkpoints"),
                )
                for i, lease in enumerate(request.leases)
            ]
            fields = [f"leases[{i}].steps_done" for i in range(len(beats))]
            if len({beat.lease_id for beat in beats}) < len(beats):
                raise InvalidArgument("leases", "names a lease more than once")
        for beat, field in zip(beats, fields):
            if beat.steps_done < 0:
                raise InvalidArgument(field, f"{beat.steps_done} is negative")

        # one trip to the scheduler's pool for them all
        answers = await self._long_polls.call(self._scheduler.heartbeat_many, trainer_id, beats)
        self._fleet.heartbeat(trainer_id, [(beat.lease_id, beat.steps_done) for beat in beats])
        if not request.leases:
            return ws_pb2.HeartbeatResponse(keep_going=answers[0].keep_going, ttl_s=answers[0].ttl_s)
        return ws_pb2.HeartbeatResponse(
            leases=[
                ws_pb2.LeaseHeartbeat(
                    lease_id=beat.lease_id,
                    keep_going=answer.keep_going,
                    ttl_s=answer.ttl_s,
                    stop=answer.stop,
                    hold=answer.hold,
                )
                for beat, answer in zip(beats, answers)
            ]
        )

    @handler
    async def ReportResult(self, request, context):
        report = validate_report(request)
        accepted, reason = await self._long_polls.call(self._scheduler.report, report)
        steps = report.metrics.steps if report.metrics is not None else 0
        status = ws_pb2.EvaluationStatus.Name(report.status).removeprefix("EVALUATION_STATUS_")
        self._fleet.reported(report.trainer_id, report.lease_id, status, steps)
        return ws_pb2.ReportResultResponse(accepted=accepted, reason=reason)

    @handler
    async def ReturnLease(self, request, context):
        lease_id = _identifier(request.lease_id, "lease_id")
        trainer_id = _identifier(request.trainer_id, "trainer_id")
        returned = await self._long_polls.call(self._scheduler.return_lease, lease_id, trainer_id, request.reason)
        self._fleet.returned(trainer_id, lease_id)
        return ws_pb2.ReturnLeaseResponse(returned=returned)
