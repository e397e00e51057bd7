"""``taylorglo trainer``: lease candidates from a coordinator, evaluate them, report.

The token comes from ``--token-file`` or ``$TAYLORGLO_TOKEN`` (a trainer-role
token). ``--evaluator keras`` (the default) trains with TensorFlow, imported
only then; ``--evaluator synthetic`` scores theta with the deterministic
function of :mod:`taylorglo_tf.trainer.synthetic` (tests, benchmarks, dry runs).

SIGTERM or SIGINT: no new candidate is taken; the one in progress is finished
and reported if that takes at most ``--grace`` seconds, otherwise its lease is
given back; then the trainer exits 0. Exit 2 when an argument (or a file it
names) is bad, 1 when the coordinator rejects the trainer's credentials.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from taylorglo_tf.commands.arguments import (
    DATA_DIR_ENV,
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_OK,
    CommandError,
    add_connection_arguments,
    candidates_per_step_or_auto,
    non_negative_float,
    open_channel,
    positive_int,
    print_error,
    wait_ms,
)
from taylorglo_tf.limits import DEFAULT_TRAINER_GRACE_S, MAX_LEASE_CANDIDATES, MAX_WAIT_MS

log = logging.getLogger("taylorglo.trainer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from taylorglo_tf.trainer.worker import DEFAULT_WAIT_MS  # no TensorFlow

    add_connection_arguments(parser)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_DIR_ENV),
        metavar="DIR",
        help=f"TFDS data and the base of idx:/npz: paths in specs (default: ${DATA_DIR_ENV}; "
        "without either, TFDS's own ~/tensorflow_datasets and no idx:/npz: datasets)",
    )
    parser.add_argument(
        "--evaluator",
        choices=("keras", "synthetic"),
        default="keras",
        help="how candidates are scored (default: keras)",
    )
    parser.add_argument("--trainer-id", metavar="ID", help="name in the coordinator's records (default: HOST-PID)")
    parser.add_argument("--max-reports", type=positive_int, metavar="N", help="exit after reporting N evaluations")
    # The flag's old name, still accepted (LeaseCandidateRequest.max_candidates is a batch size instead).
    parser.add_argument("--max-candidates", type=positive_int, dest="max_reports", help=argparse.SUPPRESS)
    parser.add_argument(
        "--grace",
        type=non_negative_float,
        default=DEFAULT_TRAINER_GRACE_S,
        metavar="S",
        help=f"on SIGTERM, finish the current candidate if it ends within S seconds, "
        f"else give it back (default: {DEFAULT_TRAINER_GRACE_S:g})",
    )
    parser.add_argument(
        "--wait-ms",
        type=wait_ms,
        default=DEFAULT_WAIT_MS,
        metavar="MS",
        help=f"lease long-poll time in milliseconds, 0..{MAX_WAIT_MS} (default: {DEFAULT_WAIT_MS})",
    )
    parser.add_argument(
        "--synthetic-sleep",
        type=non_negative_float,
        default=0.0,
        metavar="S",
        help="synthetic evaluator: seconds per evaluation (default: 0)",
    )
    parser.add_argument(
        "--synthetic-diverge-above",
        type=non_negative_float,
        metavar="X",
        help="synthetic evaluator: report divergence when max |theta_i| > X",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log lines shown on stderr (default: INFO)",
    )
    parser.add_argument(
        "--candidates-per-step",
        type=candidates_per_step_or_auto,
        default=1,
        metavar="K|auto",
        help=f"lease up to K candidates (of one experiment) per call, at most "
        f"{MAX_LEASE_CANDIDATES}; the keras evaluator trains them together in one compiled "
        f"step; auto measures the fastest K for the first task on this device (cached; "
        f"a CPU measures only small K) (default: 1)",
    )
    parser.add_argument(
        "--gpus",
        metavar="all|0,2,...",
        help="run one worker process per GPU (all visible ones, or those listed), each pinned "
        "to its GPU with memory growth on (default: this process, on whatever TensorFlow sees)",
    )
    parser.add_argument(
        "--xla",
        choices=("auto", "on", "off"),
        default="auto",
        help="compile train steps with XLA; auto measures on/off on a GPU and is off on a CPU, "
        "where XLA measured 3-4x slower (default: auto)",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="keras evaluator: models compute in bfloat16 (the loss stays float32)",
    )


def make_evaluator(args: argparse.Namespace):
    """The ``(lease, heartbeat) -> Outcome`` callable chosen by ``--evaluator``."""
    if args.evaluator == "synthetic":
        from taylorglo_tf.trainer.synthetic import SyntheticEvaluator

        return SyntheticEvaluator(sleep_s=args.synthetic_sleep, diverge_above=args.synthetic_diverge_above)
    import tensorflow as tf

    from taylorglo_tf.trainer.keras_evaluator import KerasEvaluator  # imports TensorFlow

    if args.mixed_precision:
        import keras

        # bfloat16 has float32's exponent range: no loss scaling needed.
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    xla = args.xla
    if xla == "auto" and not tf.config.list_physical_devices("GPU"):
        xla = "off"  # on CPU XLA measured 3-4x slower for these convnets (docs/BENCHMARKS.md)
    return KerasEvaluator(data_dir=args.data_dir, candidates_per_step=args.candidates_per_step, xla=xla)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    if args.gpus is not None:
        from taylorglo_tf.commands.gpus import GpuError, chosen_gpus, parent_gpu, run_per_gpu, visible_gpus

        if parent_gpu() is not None:  # a child of a --gpus parent never starts children itself
            log.info("worker for GPU %s of a --gpus parent: --gpus %s ignored", parent_gpu(), args.gpus)
        else:
            visible = visible_gpus()
            if visible or args.gpus.strip() != "all":
                try:
                    gpus = chosen_gpus(args.gpus, visible)
                except GpuError as error:
                    print_error("trainer", error)
                    return EXIT_BAD_INPUT
                argv = list(getattr(args, "argv", sys.argv[1:]))
                return run_per_gpu(argv[argv.index("trainer") + 1 :], gpus)
            # The same trainer command serves GPU and CPU hosts.
            log.warning("--gpus all: no GPU is visible on this host; one worker on the CPU")
    from taylorglo_tf.trainer.worker import Worker, WorkerError

    trainer_id = args.trainer_id or f"{socket.gethostname()}-{os.getpid()}"
    try:
        channel = open_channel(args)
        evaluate_fn = make_evaluator(args)
        # One loop leases a step's worth of candidates per LeaseCandidate call; "auto" leases
        # one until the first task has measured K.
        chosen = getattr(evaluate_fn, "candidates_per_step", args.candidates_per_step)
        worker = Worker(
            channel,
            evaluate_fn,
            trainer_id,
            wait_ms=args.wait_ms,
            max_reports=args.max_reports,
            grace_s=args.grace,
            candidates_per_step=chosen if isinstance(chosen, int) else 1,
        )
    except (CommandError, ValueError) as error:  # a bad address, token file, data directory or option
        print_error("trainer", error)
        return EXIT_BAD_INPUT
    if chosen == "auto" and hasattr(evaluate_fn, "on_chosen"):  # the synthetic evaluator measures nothing
        evaluate_fn.on_chosen = lambda k: setattr(worker, "candidates_per_step", k)

    def on_signal(signum, frame):
        log.info("%s received: stopping (grace %.0f s)", signal.Signals(signum).name, args.grace)
        worker.request_stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    log.info(
        "trainer %s working for %s (%s evaluator, %s candidates per step, CUDA_VISIBLE_DEVICES=%s)",
        trainer_id,
        args.coordinator,
        args.evaluator,
        chosen,
        os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
    )
    try:
        reported = worker.run()
    except WorkerError as error:
        print_error("trainer", error)
        return EXIT_ERROR
    log.info("trainer %s done: %d evaluations reported, %d leases returned", trainer_id, reported, worker.returned)
    if worker.abandoned_evaluation:
        # An evaluation thread is still running (its lease was given back):
        # leave without waiting for it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return EXIT_OK
