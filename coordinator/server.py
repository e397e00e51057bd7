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
"""

from __future__ import annotations

import ipaddress
import logging
import os
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator.auth import TokenAuthInterceptor, check_token
from coordinator.defaults import DEFAULT_LEASE_TTL_S, DEFAULT_LISTEN, DEFAULT_MAX_WORKERS  # noqa: F401 (re-exported)
from coordinator.grpc_util import DecodeGuardInterceptor
from coordinator.scheduler import Scheduler
from coordinator.servicers import ExperimentServicer, WorkerServicer
from coordinator.storage import SqliteStorage, open_storage
from taylorglo_tf.connection import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, parse_address
from taylorglo_tf.rpc import experiment_service_pb2, experiment_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc

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


class CoordinatorServer:
    """A running coordinator: ``.port``, ``.address``, ``.scheduler``, ``.stop(grace)``."""

    def __init__(self, server: grpc.Server, scheduler: Scheduler, storage: SqliteStorage,
                 health_servicer: health.HealthServicer, host: str, port: int,
                 health_server: grpc.Server | None = None, health_port: int | None = None):
        self._server = server
        self._health_server = health_server
        self.health_port = health_port
        self.scheduler = scheduler
        self._storage = storage
        self._health = health_servicer
        self.port = port
        self.address = f"{'[' + host + ']' if ':' in host else host}:{port}"
        self._stopped = False

    def stop(self, grace: float | None = 5.0) -> None:
        """Health NOT_SERVING, stop accepting calls, let calls in flight finish for ``grace`` s,
        end watch streams, close the database. Leases stay recorded; a restart resumes them."""
        if self._stopped:
            return
        self._stopped = True
        self._health.enter_graceful_shutdown()
        self.scheduler.stop()  # wakes long-polls and ends watch streams first
        self._server.stop(grace).wait()
        if self._health_server is not None:
            self._health_server.stop(0).wait()  # probes see NOT_SERVING until the service is gone
        self._storage.close()
        log.info("coordinator on %s stopped", self.address)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)


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
) -> CoordinatorServer:
    """Open (or create) the database at ``db_path``, resume its experiments and start serving.

    ``listen``: ``HOST:PORT``; port 0 picks a free one (see ``.port``). Raises
    ValueError for a non-loopback address without tokens (unless ``insecure``),
    half a TLS pair, or a weak token; OSError when the address cannot be bound.
    ``health_listen``: ``HOST:PORT`` of an extra plaintext port with the health
    service only (see ``.health_port``).
    """
    host, port = parse_address(listen)
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
            "or pass --insecure to expose the coordinator unauthenticated")
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    if authenticated and tls_cert is None and not is_loopback(host):
        log.warning("tokens on %s travel unencrypted; use --tls-cert/--tls-key", listen)

    storage = open_storage(db_path)
    try:
        scheduler = Scheduler(storage, lease_ttl_s=lease_ttl_s, **(scheduler_options or {}))
        scheduler.start()
    except BaseException:
        storage.close()
        raise
    interceptors: list[grpc.ServerInterceptor] = (
        [TokenAuthInterceptor(trainer_token=trainer_token, client_token=client_token)] if authenticated else [])
    interceptors.append(DecodeGuardInterceptor())  # after auth: unauthenticated bytes are never parsed
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            ("grpc.so_reuseport", 0),  # a second coordinator on the same port must fail, not share it
        ],
    )
    experiment_service_pb2_grpc.add_ExperimentServiceServicer_to_server(ExperimentServicer(scheduler), server)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(scheduler), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls_cert is not None:
            credentials = grpc.ssl_server_credentials([(_read(tls_key, "TLS key"), _read(tls_cert, "TLS certificate"))])
            bound = server.add_secure_port(bind, credentials)
        else:
            bound = server.add_insecure_port(bind)
        if not bound:
            raise OSError(f"cannot listen on {listen}")
    except (RuntimeError, OSError, ValueError) as exc:
        scheduler.stop()
        storage.close()
        raise OSError(f"cannot listen on {listen}: {exc}") from exc
    health_server, health_port = None, None
    if health_listen is not None:
        try:
            health_server, health_port = _serve_health_only(health_servicer, health_listen)
        except OSError:
            server.stop(0)
            scheduler.stop()
            storage.close()
            raise
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return CoordinatorServer(server, scheduler, storage, health_servicer, host, bound, health_server, health_port)


def _serve_health_only(health_servicer: health.HealthServicer, listen: str) -> tuple[grpc.Server, int]:
    """A plaintext server with only ``health_servicer`` (shared with the main port, so a
    graceful shutdown shows NOT_SERVING on both); returns it started, and its port."""
    host, port = parse_address(listen)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="health"),
                         options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {listen} (--health-listen): {exc}") from exc
    if not bound:
        raise OSError(f"cannot listen on {listen} (--health-listen)")
    server.start()
    log.info("health checks also served in plaintext on %s", f"{host}:{bound}")
    return server, bound
