"""The coordinator's gRPC server: services, auth, TLS, health, reflection, shutdown.

In-process use (tests, ``taylorglo run``, benchmarks)::

    server = serve("search.db")          # 127.0.0.1, a free port
    channel = taylorglo_tf.connection.connect(server.address)
    ...
    server.stop(grace=1.0)

Security defaults: loopback only. Binding any other address needs a trainer
and/or client token, or ``insecure=True`` explicitly (tokens over a network
should also use TLS: ``tls_cert``/``tls_key``).

``health_listen`` adds a second, plaintext port that serves only the gRPC health
service, for probes that cannot speak TLS (Kubernetes' native gRPC probes): it
carries no tokens and no data, only SERVING / NOT_SERVING.

The server is ``grpc.aio`` on an event loop in a thread of its own, so that a
trainer waiting in LeaseCandidate holds a future, not a thread
(:mod:`taylorglo_tf.coordinator.longpoll`): thousands can wait at once. Every WorkerService
call is a coroutine whose scheduler call runs in a small pool; the
ExperimentService calls (few clients) are plain methods run in a pool of
``max_workers`` threads (grpc's migration pool); a watch stream is an async
generator whose reads of its event queue (at most 0.5 s each) use that pool. On
stop, the loop is closed only once calls still in the pool have finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import threading
from collections.abc import Coroutine
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from taylorglo_tf import extras
from taylorglo_tf.connection import parse_address
from taylorglo_tf.limits import DEFAULT_COORDINATOR_GRACE_S, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from taylorglo_tf.rpc import (
    experiment_service_pb2,
    experiment_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

from .auth import TokenAuthInterceptor, check_token
from .defaults import DEFAULT_LEASE_TTL_S, DEFAULT_LISTEN, DEFAULT_MAX_WORKERS, LEASE_THREADS, MAX_PENDING_CALLS  # noqa: F401
from .fleet import Fleet
from .grpc_util import DecodeGuardInterceptor
from .longpoll import LongPolls
from .scheduler import Scheduler
from .servicers import ExperimentServicer, WorkerServicer
from .storage import Storage, open_storage

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    experiment_service_pb2.DESCRIPTOR.services_by_name["ExperimentService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


class _EventLoop:
    """An asyncio event loop running in a daemon thread; ``run(coro)`` from any other thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="grpc-aio", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


def _drain(pools: list[futures.ThreadPoolExecutor], timeout: float) -> bool:
    """Shut the pools down (queued work dropped); True once their threads have ended within ``timeout``."""

    def shut_down() -> None:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)

    waiter = threading.Thread(target=shut_down, name="rpc-drain", daemon=True)
    waiter.start()
    waiter.join(timeout)
    return not waiter.is_alive()


class CoordinatorServer:
    """A running coordinator: ``.port``, ``.address``, ``.scheduler``, ``.stop(grace)``."""

    def __init__(
        self,
        loop: _EventLoop,
        server: grpc.aio.Server,
        scheduler: Scheduler,
        storage: Storage,
        health_servicer: health_aio.HealthServicer,
        pools: list[futures.ThreadPoolExecutor],
        host: str,
        port: int,
        health_server: grpc.aio.Server | None = None,
        health_port: int | None = None,
        fleet: Fleet | None = None,
        metrics: Any = None,
        tensorboard: Any = None,
    ):
        self._loop = loop
        self._server = server
        self._health_server = health_server
        self.health_port = health_port
        self.scheduler = scheduler
        self._storage = storage
        self._health = health_servicer
        self._pools = pools
        self.port = port
        self.address = f"{'[' + host + ']' if ':' in host else host}:{port}"
        self.fleet = fleet
        self._metrics = metrics
        self.metrics_port: int | None = metrics.port if metrics is not None else None
        self._tensorboard = tensorboard
        self._stopped = False
        self._terminated = threading.Event()

    def stop(self, grace: float | None = DEFAULT_COORDINATOR_GRACE_S) -> None:
        """Health NOT_SERVING, stop accepting calls, let calls in flight finish for ``grace`` s,
        end watch streams, close the database. Leases stay recorded; a restart resumes them."""
        if self._stopped:
            return
        self._stopped = True
        self._loop.run(self._health.enter_graceful_shutdown())
        self.scheduler.stop()  # ends waiting long polls (no lease) and watch streams first
        self._loop.run(self._server.stop(grace))
        if self._health_server is not None:
            self._loop.run(self._health_server.stop(0))  # probes see NOT_SERVING until the service is gone
        # Calls still running in a pool thread finish through the event loop (a plain
        # handler's context talks to it): close the loop only once they are done.
        if _drain(self._pools, timeout=max(5.0, grace or 0.0)):
            self._loop.close()
        else:
            log.warning("calls still running after the shutdown grace; leaving them the event loop")
        self._storage.close()
        if self._metrics is not None:
            self._metrics.stop()
        if self._tensorboard is not None:
            self._tensorboard.close()  # writes what the last events brought, then closes the files
        self._terminated.set()
        log.info("coordinator on %s stopped", self.address)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Wait until the server stops; True if ``timeout`` passed first (as ``grpc.Server``'s)."""
        return not self._terminated.wait(timeout)


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from exc


def serve(
    db_path: str | os.PathLike[str],
    listen: str = "127.0.0.1:0",
    *,
    trainer_token: str | None = None,
    client_token: str | None = None,
    insecure: bool = False,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    max_workers: int = DEFAULT_MAX_WORKERS,
    scheduler_options: dict | None = None,
    health_listen: str | None = None,
    metrics_listen: str | None = None,
    tensorboard_dir: str | os.PathLike[str] | None = None,
) -> CoordinatorServer:
    """Open (or create) the database at ``db_path``, resume its experiments and start serving.

    ``listen``: ``HOST:PORT``; port 0 picks a free one (see ``.port``). Raises
    ValueError for a non-loopback address without tokens (unless ``insecure``),
    half a TLS pair, or a weak token; OSError when the address cannot be bound.
    ``health_listen``: ``HOST:PORT`` of an extra plaintext port with the health
    service only (see ``.health_port``). ``metrics_listen``: ``HOST:PORT`` of Prometheus'
    ``/metrics`` (off when None; see ``.metrics_port``). ``tensorboard_dir``: a folder that
    gets each experiment's TensorBoard run as results arrive.
    """
    host, port = parse_address(listen)
    _check_exposure(listen, host, trainer_token, client_token, insecure, tls_cert, tls_key, health_listen)
    if metrics_listen is not None:
        parse_address(metrics_listen)
    credentials = _server_credentials(tls_cert, tls_key)
    fleet = Fleet(lease_ttl_s)
    metrics = None
    if metrics_listen is not None:
        with extras.needs("--metrics-listen"):  # prometheus-client only when asked for
            from .metrics import Metrics

        metrics = Metrics(fleet)
    storage, scheduler = _resume(db_path, lease_ttl_s, scheduler_options, metrics)
    scheduler.listen(_fleet_listener(fleet))
    tensorboard = None
    try:
        if tensorboard_dir is not None:
            from .live_tensorboard import LiveTensorBoard

            tensorboard = LiveTensorBoard(tensorboard_dir, scheduler)
        if metrics is not None:
            metrics.attach(scheduler)
            metrics.serve(metrics_listen)  # type: ignore[arg-type]
    except BaseException:
        if tensorboard is not None:
            tensorboard.close()
        scheduler.stop()
        storage.close()
        raise
    # Plain servicer methods (everything but LeaseCandidate) run in this pool; scheduler
    # calls of the event loop's coroutines in a small one of their own, so neither waits for the other.
    rpc_pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc")
    lease_pool = futures.ThreadPoolExecutor(max_workers=LEASE_THREADS, thread_name_prefix="lease")
    loop = _EventLoop()
    try:
        started = loop.run(
            _start_grpc(
                scheduler,
                rpc_pool,
                lease_pool,
                _interceptors(trainer_token, client_token, metrics),
                credentials,
                listen,
                host,
                port,
                health_listen,
                fleet,
            )
        )
    except BaseException:
        if metrics is not None:
            metrics.stop()
        if tensorboard is not None:
            tensorboard.close()
        scheduler.stop()
        loop.close()
        for pool in (rpc_pool, lease_pool):
            pool.shutdown(wait=False)
        storage.close()
        raise
    return CoordinatorServer(
        loop,
        started.server,
        scheduler,
        storage,
        started.health,
        [rpc_pool, lease_pool],
        host,
        started.port,
        started.health_server,
        started.health_port,
        fleet,
        metrics,
        tensorboard,
    )


def _check_exposure(
    listen: str,
    host: str,
    trainer_token: str | None,
    client_token: str | None,
    insecure: bool,
    tls_cert: object,
    tls_key: object,
    health_listen: str | None,
) -> None:
    """The security policy, before anything starts: tokens strong enough, and none missing off loopback
    (unless ``insecure``); TLS as a whole pair; ValueError names what is wrong."""
    if health_listen is not None:
        parse_address(health_listen)  # a bad value is named before anything starts
    if trainer_token:
        check_token(trainer_token, "trainer")
    if client_token:
        check_token(client_token, "client")
    authenticated = bool(trainer_token or client_token)
    if not is_loopback(host) and not authenticated and not insecure:
        raise ValueError(
            f"refusing to listen on {listen} without tokens: set a trainer and a client token, "
            "or pass --insecure to expose the coordinator unauthenticated"
        )
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    if authenticated and tls_cert is None and not is_loopback(host):
        log.warning("tokens on %s travel unencrypted; use --tls-cert/--tls-key", listen)


def _server_credentials(
    tls_cert: str | os.PathLike[str] | None, tls_key: str | os.PathLike[str] | None
) -> grpc.ServerCredentials | None:
    """TLS credentials from the PEM files, or None for plaintext (both or neither: checked before)."""
    if tls_cert is None or tls_key is None:
        return None
    return grpc.ssl_server_credentials([(_read(tls_key, "TLS key"), _read(tls_cert, "TLS certificate"))])


def _fleet_listener(fleet: Fleet) -> Any:
    finished = experiment_service_pb2.ProgressEvent.KIND_CANDIDATE_FINISHED

    def listener(event: experiment_service_pb2.ProgressEvent) -> None:
        if event.kind == finished:
            fleet.candidate_finished(event.experiment.id)

    return listener


def _resume(
    db_path: str | os.PathLike[str], lease_ttl_s: float, scheduler_options: dict | None, metrics: Any = None
) -> tuple[Storage, Scheduler]:
    """The database opened (or created) and a started scheduler over it, its experiments resumed
    (its writes timed when ``metrics`` is given)."""
    storage = open_storage(db_path)
    try:
        watched = storage if metrics is None else metrics.timed_storage(storage)
        scheduler = Scheduler(watched, lease_ttl_s=lease_ttl_s, **(scheduler_options or {}))
        scheduler.start()
    except BaseException:
        storage.close()
        raise
    return storage, scheduler


def _interceptors(
    trainer_token: str | None, client_token: str | None, metrics: Any = None
) -> list[grpc.aio.ServerInterceptor]:
    """The error counter (metrics on), token auth when any token is set, then the decode guard:
    unauthenticated bytes are never parsed."""
    interceptors: list[grpc.aio.ServerInterceptor] = [] if metrics is None else [metrics.interceptor()]
    if trainer_token or client_token:
        interceptors.append(TokenAuthInterceptor(trainer_token=trainer_token, client_token=client_token))
    interceptors.append(DecodeGuardInterceptor())
    return interceptors


@dataclasses.dataclass
class _Started:
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    port: int
    health_server: grpc.aio.Server | None
    health_port: int | None


async def _start_grpc(
    scheduler: Scheduler,
    rpc_pool: futures.ThreadPoolExecutor,
    lease_pool: futures.ThreadPoolExecutor,
    interceptors: list[grpc.aio.ServerInterceptor],
    credentials: grpc.ServerCredentials | None,
    listen: str,
    host: str,
    port: int,
    health_listen: str | None,
    fleet: Fleet,
) -> _Started:
    """The gRPC server with the two services, health and reflection, bound and started; health SERVING."""
    server = grpc.aio.server(
        migration_thread_pool=rpc_pool,
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            ("grpc.so_reuseport", 0),  # a second coordinator on the same port must fail, not share it
            # grpc cancels calls at random once more than 1,000 wait to be taken up by the event
            # loop (a generation's worth of reports from 2,000 trainers at once): allow a burst
            ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
        ],
    )
    experiment_service_pb2_grpc.add_ExperimentServiceServicer_to_server(
        ExperimentServicer(scheduler, rpc_pool, fleet), server
    )
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
        WorkerServicer(scheduler, LongPolls(scheduler, lease_pool), fleet), server
    )
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_secure_port(bind, credentials) if credentials else server.add_insecure_port(bind)
        if not bound:
            raise OSError(f"cannot listen on {listen}")
    except (RuntimeError, OSError, ValueError) as exc:
        raise OSError(f"cannot listen on {listen}: {exc}") from exc
    health_server, health_port = None, None
    if health_listen is not None:
        health_server, health_port = await _serve_health_only(health_servicer, health_listen)
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return _Started(server, health_servicer, bound, health_server, health_port)


async def _serve_health_only(health_servicer: health_aio.HealthServicer, listen: str) -> tuple[grpc.aio.Server, int]:
    """A plaintext server with only ``health_servicer`` (shared with the main port, so a
    graceful shutdown shows NOT_SERVING on both); returns it started, and its port."""
    host, port = parse_address(listen)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {listen} (--health-listen): {exc}") from exc
    if not bound:
        raise OSError(f"cannot listen on {listen} (--health-listen)")
    await server.start()
    log.info("health checks also served in plaintext on %s", f"{host}:{bound}")
    return server, bound
