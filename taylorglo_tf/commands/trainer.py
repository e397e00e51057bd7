"""``taylorglo trainer``: lease candidates from a coordinator, evaluate them, report.

The token comes from ``--token-file`` or ``$TAYLORGLO_TOKEN`` (a trainer-role
token). ``--evaluator keras`` (the default) trains with TensorFlow, imported
only then; ``--evaluator synthetic`` scores theta with the deterministic
function of :mod:`trainer.synthetic` (tests, benchmarks, dry runs).

SIGTERM or SIGINT: no new candidate is taken; the one in progress is finished
and reported if that takes at most ``--grace`` seconds, otherwise its lease is
given back; then the trainer exits 0. Exit 1 when the coordinator rejects the
trainer's credentials or an argument is bad.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from taylorglo_tf.commands.client import (
    CommandError,
    add_connection_arguments,
    non_negative_float,
    open_channel,
    positive_int,
)

log = logging.getLogger("taylorglo.trainer")

DEFAULT_GRACE_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument(
        "--data-dir", default=os.environ.get("TAYLORGLO_DATA_DIR"), metavar="DIR",
        help="TFDS data and the base of idx:/npz: paths in specs (default: $TAYLORGLO_DATA_DIR; "
        "without either, TFDS's own ~/tensorflow_datasets and no idx:/npz: datasets)",
    )
    parser.add_argument("--evaluator", choices=("keras", "synthetic"), default="keras",
                        help="how candidates are scored (default: keras)")
    parser.add_argument("--trainer-id", metavar="ID", help="name in the coordinator's records (default: HOST-PID)")
    parser.add_argument("--max-candidates", type=positive_int, metavar="N",
                        help="exit after reporting N evaluations")
    parser.add_argument("--grace", type=non_negative_float, default=DEFAULT_GRACE_S, metavar="S",
                        help=f"on SIGTERM, finish the current candidate if it ends within S seconds, "
                             f"else give it back (default: {DEFAULT_GRACE_S:g})")
    parser.add_argument("--wait-ms", type=int, default=10_000, metavar="MS",
                        help="lease long-poll time in milliseconds (default: 10000)")
    parser.add_argument("--synthetic-sleep", type=non_negative_float, default=0.0, metavar="S",
                        help="synthetic evaluator: seconds per evaluation (default: 0)")
    parser.add_argument("--synthetic-diverge-above", type=float, metavar="X",
                        help="synthetic evaluator: report divergence when max |theta_i| > X")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="log lines shown on stderr (default: INFO)")


def make_evaluator(args: argparse.Namespace):
    """The ``(lease, heartbeat) -> Outcome`` callable chosen by ``--evaluator``."""
    if args.evaluator == "synthetic":
        from trainer.synthetic import SyntheticEvaluator

        return SyntheticEvaluator(sleep_s=args.synthetic_sleep, diverge_above=args.synthetic_diverge_above)
    from trainer.keras_evaluator import KerasEvaluator  # imports TensorFlow

    return KerasEvaluator(data_dir=args.data_dir)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trainer.worker import Worker, WorkerError

    trainer_id = args.trainer_id or f"{socket.gethostname()}-{os.getpid()}"
    try:
        channel = open_channel(args)
        worker = Worker(channel, make_evaluator(args), trainer_id, wait_ms=args.wait_ms,
                        max_candidates=args.max_candidates, grace_s=args.grace)
    except (CommandError, ValueError) as error:
        print(f"taylorglo trainer: error: {error}", file=sys.stderr)
        return 1

    def on_signal(signum, frame):
        log.info("%s received: stopping (grace %.0f s)", signal.Signals(signum).name, args.grace)
        worker.request_stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    log.info("trainer %s working for %s (%s evaluator)", trainer_id, args.coordinator, args.evaluator)
    try:
        reported = worker.run()
    except WorkerError as error:
        print(f"taylorglo trainer: error: {error}", file=sys.stderr)
        return 1
    log.info("trainer %s done: %d evaluations reported, %d leases returned", trainer_id, reported, worker.returned)
    if worker.abandoned_evaluation:
        # An evaluation thread is still running (its lease was given back):
        # leave without waiting for it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
