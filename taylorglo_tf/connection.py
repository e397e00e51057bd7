"""Client-side gRPC channel to a coordinator: bearer token, optional TLS, size limits, retries.

Shared by the trainer, the client commands, ``taylorglo run`` and tests, so every
client sends credentials the same way the coordinator's auth interceptor expects:
``authorization: Bearer <token>`` metadata on every call.

Retries come in two layers, the same for every client:

- the channel's service config (:data:`SERVICE_CONFIG`) retries the idempotent
  calls (:data:`IDEMPOTENT_METHODS`) on UNAVAILABLE a few times within about a
  second and a half: a dropped connection or a coordinator restarting costs no
  call. Trainer calls also wait for the connection to be ready (within their
  deadline) instead of failing at once while the coordinator is away;
- long outages are the callers' to wait out, through the one backoff helper
  :mod:`taylorglo_tf.retry` (the trainer's lease, report and return, and
  ``taylorglo watch``), so the waits follow one schedule and a stop request
  ends them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from taylorglo_tf.limits import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES

MAX_RECONNECT_BACKOFF_MS = 5_000  # cap on the channel's reconnect delay
AUTH_METADATA_KEY = "authorization"
DEFAULT_ADDRESS = "127.0.0.1:50051"  # also where the coordinator listens by default
TOKEN_ENV = "TAYLORGLO_TOKEN"  # the bearer token when no token file is given

# Calls that may be sent twice with the effect of once, so the channel may retry them
# (gRPC retries only calls whose answer has not begun; a watch is retried only before
# its first event). Reads, and the trainer's calls about a lease it holds: a
# Heartbeat only extends the lease; ReportResult counts the first report of a
# candidate and acknowledges a repeat with accepted = false; ReturnLease of a lease
# already returned answers returned = false. Not retried: SubmitExperiment (a second
# experiment), LeaseCandidate (a second lease, held until it expires, costing the
# candidate an attempt), CancelExperiment and DeleteExperiment (a repeat after a lost
# answer would fail with FAILED_PRECONDITION or NOT_FOUND for a call that succeeded).
IDEMPOTENT_METHODS = {
    "taylorglo.v1.ExperimentService": ("GetExperiment", "ListExperiments", "WatchExperiment", "GetResult"),
    "taylorglo.v1.WorkerService": ("Heartbeat", "ReportResult", "ReturnLease"),
}
# Short blips only (at most 5 attempts, gRPC's limit; about 1.5 s of backoff in all).
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# The trainer's idempotent calls wait for a coordinator that is away (always within
# their deadline); the client commands' calls fail at once, so that a user hears
# "cannot reach the coordinator" instead of waiting out a 30 s deadline.
WAIT_FOR_READY_SERVICES = frozenset({"taylorglo.v1.WorkerService"})


def _service_config() -> str:
    configs = [
        {
            "name": [{"service": service, "method": method} for method in methods],
            "retryPolicy": RETRY_POLICY,
            "waitForReady": service in WAIT_FOR_READY_SERVICES,
        }
        for service, methods in IDEMPOTENT_METHODS.items()
    ]
    # gRPC's retry throttling: each failed attempt takes one of 10 tokens, each success gives
    # back 0.1, and a channel with 5 or fewer stops retrying: thousands of trainers do not
    # multiply the load of a coordinator in trouble.
    return json.dumps({"methodConfig": configs, "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}})


SERVICE_CONFIG = _service_config()


def parse_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into host and port; ValueError names a bad value."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"address {address!r} is not HOST:PORT (port 0..65535)")
    return host.strip("[]"), int(port_text)


def load_token(token_file: str | os.PathLike[str] | None = None, env: str = TOKEN_ENV) -> str | None:
    """A bearer token from ``token_file`` (whitespace stripped) or else the environment variable ``env``.

    Returns None when neither is set. An empty or unreadable file is an error
    naming the file, so a misconfigured secret never silently means "no auth".
    """
    if token_file:
        path = Path(token_file)
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read token file {str(path)!r}: {exc.strerror}") from exc
        if not token:
            raise ValueError(f"token file {str(path)!r} is empty")
        return token
    token = os.environ.get(env, "").strip()
    return token or None


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call's metadata."""

    def __init__(self, token: str):
        self._pair = (AUTH_METADATA_KEY, f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or []) + [self._pair]
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression
        )

    def _call(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def connect(
    address: str,
    *,
    token: str | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_server_name: str | None = None,
) -> grpc.Channel:
    """Open a channel to the coordinator at ``address`` (``HOST:PORT``).

    ``token``: bearer token sent on every call (trainer or client role).
    ``tls_ca``: PEM file of the CA (or self-signed certificate) to trust; enables
    TLS. ``tls_server_name`` overrides the name checked against the certificate
    (e.g. when connecting by IP to a certificate issued for a host name).
    Connecting is lazy: errors surface as ``grpc.RpcError`` on the first call.
    """
    parse_address(address)
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
        # gRPC's reconnect delay grows to 120 s by default; trainers and watchers
        # should find a restarted coordinator within seconds.
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", SERVICE_CONFIG),
    ]
    if tls_ca is not None:
        try:
            root = Path(tls_ca).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read TLS CA file {str(tls_ca)!r}: {exc.strerror}") from exc
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root), options)
    else:
        channel = grpc.insecure_channel(address, options)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel
