"""Container health check: ask a TaylorGLO coordinator's gRPC health service.

Used by both images (``HEALTHCHECK`` in docker/Dockerfile.*): the coordinator
checks itself on loopback, a trainer checks the coordinator it works for (a
trainer that cannot reach its coordinator does no work). Exit status 0 means
SERVING, 1 anything else (NOT_SERVING during a graceful shutdown, unreachable,
timeout), as Docker expects.

Usage: ``python healthcheck.py [ADDRESS] [--tls-ca FILE] [--timeout S]``.
ADDRESS defaults to $TAYLORGLO_HEALTHCHECK_ADDRESS, then 127.0.0.1:50051; the
CA file defaults to $TAYLORGLO_TLS_CA (TLS is used only when a CA is given).
Only grpcio and grpcio-health-checking are needed (no TensorFlow, no package).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"


def check(address: str, *, tls_ca: str | None = None, timeout_s: float = 5.0) -> str:
    """Return the overall serving status name of the server at ``address``."""
    if tls_ca:
        with open(tls_ca, "rb") as handle:
            credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # service="" asks for the server's overall status.
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "address",
        nargs="?",
        default=os.environ.get("TAYLORGLO_HEALTHCHECK_ADDRESS") or DEFAULT_ADDRESS,
        help="HOST:PORT of the coordinator (default: $TAYLORGLO_HEALTHCHECK_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--tls-ca",
        default=os.environ.get("TAYLORGLO_TLS_CA") or None,
        help="PEM CA bundle; enables TLS (default: $TAYLORGLO_TLS_CA)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        status = check(args.address, tls_ca=args.tls_ca, timeout_s=args.timeout)
    except grpc.RpcError as error:
        print(f"unhealthy: {args.address}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"unhealthy: cannot read --tls-ca {args.tls_ca!r}: {error}", file=sys.stderr)
        return 1
    print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
