"""``taylorglo coordinator``: serve experiments to trainers and clients over gRPC.

Starts without TensorFlow. Tokens come from files (``--trainer-token-file``,
``--client-token-file``) or the environment (``TAYLORGLO_TRAINER_TOKEN``,
``TAYLORGLO_CLIENT_TOKEN``). SIGTERM or Ctrl-C: health turns NOT_SERVING, new
calls are refused, calls in flight get ``--grace`` seconds, leases stay in the
database for the next start, exit status 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from taylorglo_tf.commands.arguments import EXIT_BAD_INPUT, EXIT_OK, lease_ttl, non_negative_float, print_error
from taylorglo_tf.limits import DEFAULT_COORDINATOR_GRACE_S, MAX_LEASE_TTL_S, MIN_LEASE_TTL_S

TRAINER_TOKEN_ENV = "TAYLORGLO_TRAINER_TOKEN"
CLIENT_TOKEN_ENV = "TAYLORGLO_CLIENT_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from taylorglo_tf.coordinator.defaults import DEFAULT_LEASE_TTL_S, DEFAULT_LISTEN, PROGRESS_DEADLINE_TTLS

    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to bind (default {DEFAULT_LISTEN}; non-loopback needs tokens or --insecure)",
    )
    parser.add_argument(
        "--db",
        default="taylorglo.db",
        metavar="URL",
        help="database: a file path or sqlite:///PATH, reopened on restart to resume experiments "
        "(default taylorglo.db); :memory: keeps nothing",
    )
    parser.add_argument(
        "--trainer-token-file",
        metavar="FILE",
        help=f"file holding the trainers' bearer token (else env {TRAINER_TOKEN_ENV})",
    )
    parser.add_argument(
        "--client-token-file",
        metavar="FILE",
        help=f"file holding the clients' bearer token (else env {CLIENT_TOKEN_ENV})",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without tokens (anyone reaching the port controls searches)",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain; enables TLS (with --tls-key)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--health-listen",
        metavar="HOST:PORT",
        help="also serve gRPC health checks, and nothing else, in plaintext here "
        "(for probes that cannot speak TLS, e.g. Kubernetes' gRPC probes)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (counts only) at http://HOST:PORT/metrics; off by default. "
        "Use 127.0.0.1:PORT unless a scraper on another host needs it (the endpoint has no auth)",
    )
    parser.add_argument(
        "--tensorboard-dir",
        metavar="DIR",
        help="write each experiment's TensorBoard run (generation scalars, every candidate as an "
        "HParams trial, the best loss shape) here as results arrive",
    )
    parser.add_argument(
        "--lease-ttl",
        type=lease_ttl,
        default=DEFAULT_LEASE_TTL_S,
        metavar="S",
        help=f"seconds a lease lives without a heartbeat, {MIN_LEASE_TTL_S:g}..{MAX_LEASE_TTL_S:g} "
        f"(default {DEFAULT_LEASE_TTL_S:g})",
    )
    parser.add_argument(
        "--progress-deadline",
        type=lease_ttl,
        metavar="S",
        help="seconds a lease lives while its heartbeats report no new training step "
        f"(default {PROGRESS_DEADLINE_TTLS:g} lease TTLs; twice that before the first step)",
    )
    parser.add_argument(
        "--grace",
        type=non_negative_float,
        default=DEFAULT_COORDINATOR_GRACE_S,
        metavar="S",
        help=f"on shutdown, seconds calls in flight may take to finish (default {DEFAULT_COORDINATOR_GRACE_S:g})",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log lines shown on stderr (default: INFO)",
    )


def run(args: argparse.Namespace) -> int:
    from taylorglo_tf.connection import load_token
    from taylorglo_tf.coordinator.server import serve

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trainer_token = load_token(args.trainer_token_file, env=TRAINER_TOKEN_ENV)
        client_token = load_token(args.client_token_file, env=CLIENT_TOKEN_ENV)
        server = serve(
            args.db,
            args.listen,
            trainer_token=trainer_token,
            client_token=client_token,
            insecure=args.insecure,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            lease_ttl_s=args.lease_ttl,
            health_listen=args.health_listen,
            metrics_listen=args.metrics_listen,
            tensorboard_dir=args.tensorboard_dir,
            scheduler_options={"progress_deadline_s": args.progress_deadline},
        )
    except (ValueError, OSError, RuntimeError, ModuleNotFoundError) as exc:  # bad settings, port, database, extra
        print_error("coordinator", exc)
        return EXIT_BAD_INPUT

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # The one announcement of the address (serve() does not log it): on stdout, whatever --log-level.
    print(f"coordinator listening on {server.address} (database {args.db})", flush=True)
    if server.metrics_port is not None:
        host = args.metrics_listen.rpartition(":")[0]
        print(f"metrics on http://{host}:{server.metrics_port}/metrics", flush=True)
    while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
        pass
    server.stop(grace=args.grace)
    return EXIT_OK
