"""Prometheus metrics of a coordinator: ``/metrics`` on ``--metrics-listen HOST:PORT`` (off by default).

Counts only: no tokens, no thetas, no experiment names or ids (a label's value
is a gRPC method, a status code or an evaluation status, all from fixed sets).
Each scrape reads the fleet (its own lock) and :meth:`Scheduler.load` (no lock):
a scraper never waits on, or holds up, the scheduler's lock on the lease path.

- counters: ``taylorglo_leases_granted_total``, ``taylorglo_reports_total{status}``,
  ``taylorglo_rpc_errors_total{method,code}``, ``taylorglo_leases_expired_total``;
- gauges: ``taylorglo_trainers_active``, ``taylorglo_trainers_lost``,
  ``taylorglo_candidates_queued``, ``taylorglo_experiments_running``;
- histogram: ``taylorglo_storage_write_seconds{operation}``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from taylorglo_tf.connection import parse_address

from .fleet import Fleet
from .scheduler import Scheduler
from .storage import WRITE_METHODS

# Storage writes take milliseconds; a locked or slow disk shows in the upper buckets.
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Snapshot(Collector):
    """Values read at scrape time from the fleet and the scheduler."""

    def __init__(self, fleet: Fleet, scheduler: Scheduler):
        self._fleet = fleet
        self._scheduler = scheduler

    def collect(self) -> Iterator[Any]:
        trainers = self._fleet.trainers()
        queued, running = self._scheduler.load()
        leases_granted, reports_by_status = self._fleet.counts()
        granted = CounterMetricFamily("taylorglo_leases_granted", "Leases granted to trainers.")
        granted.add_metric([], leases_granted)
        yield granted
        reports = CounterMetricFamily("taylorglo_reports", "Evaluation reports by status.", labels=["status"])
        for status, count in sorted(reports_by_status.items()):
            reports.add_metric([status], count)
        yield reports
        expired = CounterMetricFamily("taylorglo_leases_expired", "Leases ended without a heartbeat or progress.")
        expired.add_metric([], self._scheduler.expired_leases)
        yield expired
        lost = sum(t.lost for t in trainers)
        yield GaugeMetricFamily(
            "taylorglo_trainers_active", "Trainers heard from within the lease TTL.", len(trainers) - lost
        )
        yield GaugeMetricFamily("taylorglo_trainers_lost", "Trainers silent for longer than the lease TTL.", lost)
        yield GaugeMetricFamily("taylorglo_candidates_queued", "Candidates waiting for a trainer.", queued)
        yield GaugeMetricFamily("taylorglo_experiments_running", "Experiments not yet finished.", running)


class Metrics:
    """The registry and its instruments; :meth:`serve` starts the HTTP endpoint."""

    def __init__(self, fleet: Fleet):
        self._fleet = fleet
        self.registry = CollectorRegistry(auto_describe=True)
        self.errors = Counter(
            "taylorglo_rpc_errors",
            "Calls answered with an error, by method and code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.storage_seconds = Histogram(
            "taylorglo_storage_write_seconds",
            "Database write latency.",
            ["operation"],
            buckets=STORAGE_BUCKETS,
            registry=self.registry,
        )
        self._http: Any = None
        self.port: int | None = None

    def attach(self, scheduler: Scheduler) -> None:
        """Read the scheduler's counts at each scrape (it is created after the timed storage)."""
        self.registry.register(_Snapshot(self._fleet, scheduler))

    def serve(self, listen: str) -> int:
        """Serve ``/metrics`` on ``listen`` (``HOST:PORT``, port 0 picks one); returns the port."""
        host, port = parse_address(listen)
        try:
            self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot listen on {listen} (--metrics-listen): {exc.strerror or exc}") from exc
        self.port = int(self._http.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def timed_storage(self, storage: Any) -> Any:
        """``storage`` whose writes are timed into ``taylorglo_storage_write_seconds``."""
        return _TimedStorage(storage, self.storage_seconds)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _ErrorCounter(self.errors)


class _TimedStorage:
    def __init__(self, inner: Any, histogram: Histogram):
        self._inner = inner
        self._histogram = histogram

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in WRITE_METHODS:
            return attribute
        observe = self._histogram.labels(name).observe

        def write(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                observe(time.perf_counter() - start)

        return write


class _Recording:
    """A servicer context that remembers the code it aborted with (a sync handler's context has no
    ``code()``); everything else goes to the real context."""

    def __init__(self, context: Any):
        self._context = context
        self.aborted: grpc.StatusCode = grpc.StatusCode.UNKNOWN  # an exception that escaped: UNKNOWN

    def abort(self, code: grpc.StatusCode, details: str = "") -> Any:
        self.aborted = code
        return self._context.abort(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _ErrorCounter(grpc.aio.ServerInterceptor):
    """Counts unary calls that end with a status other than OK (streams are not wrapped)."""

    def __init__(self, errors: Counter):
        self._errors = errors

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        behaviour, errors = handler.unary_unary, self._errors
        if inspect.iscoroutinefunction(behaviour):

            async def counted_async(request: Any, context: Any) -> Any:
                recording = _Recording(context)
                try:
                    return await behaviour(request, recording)
                except asyncio.CancelledError:
                    raise  # the caller hung up: no answer, no error
                except BaseException:
                    errors.labels(method, recording.aborted.name).inc()
                    raise

            wrapped: Callable[..., Any] = counted_async
        else:

            def counted(request: Any, context: Any) -> Any:
                recording = _Recording(context)
                try:
                    return behaviour(request, recording)
                except BaseException:
                    errors.labels(method, recording.aborted.name).inc()
                    raise

            wrapped = counted
        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
