"""``taylorglo run``: the all-in-one local search.

    taylorglo run [SPEC] [--trainers N] [--out DIR] [--compare-runs R] [--db PATH]

1. starts a coordinator in this process on loopback, on a port the OS picks
   when it binds (port 0, read back: no other process can take it between a
   probe and the bind), with a temporary database (or ``--db``) and fresh
   random tokens for both roles;
2. starts N trainer processes (``taylorglo trainer``, through
   ``python -m taylorglo_tf.commands.run``: see :func:`_local_trainer_main`),
   logging to ``DIR/logs/``;
3. submits the spec (no SPEC: :data:`DEFAULT_SPEC`, a search on the embedded
   ``digits`` data with the ``tiny`` model that takes a few minutes on 2 cores)
   and follows it with the same progress bar as ``taylorglo watch``;
4. writes the result folder (:mod:`taylorglo_tf.results`) into DIR;
5. stops the trainers, chooses cross-entropy's learning rate on the validation
   split (``--no-tune-baseline-lr`` skips this), trains the best loss and
   cross-entropy R times each at the recipe's full length, and cross-entropy
   again at its chosen rate, and writes both Welch-test comparisons, the choice
   and the loss's gradient scale (``comparison.json``/``.txt``) into DIR; a spec
   with a ``paper`` block also gets the published table row printed beside the
   measured one.

Everything started here is stopped on success, failure, Ctrl-C or SIGTERM; the
trainers also get SIGTERM if this process dies (Linux). An interrupted search
still leaves its partial result folder. If every trainer exits before the
search is done, the experiment is cancelled and the command fails, pointing at
the trainers' logs. No TensorFlow is imported here unless the comparison runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from taylorglo_tf import runtime
from taylorglo_tf.commands.arguments import (
    DATA_DIR_ENV,
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    candidates_per_step,
    lease_ttl,
    non_negative_int,
    positive_int,
    positive_int_or_auto,
    print_error,
)
from taylorglo_tf.commands.quiet import import_tensorflow_quietly
from taylorglo_tf.compare import DEFAULT_LR_MULTIPLIERS, DEFAULT_TUNING_SEEDS
from taylorglo_tf.limits import MAX_LEASE_CANDIDATES

#: The README's main job: a search on the embedded digits data (1,797 8x8 images)
#: with the tiny CNN, 12 x 12 = 144 partial trainings of 200 steps, measured at
#: about two and a half minutes on a shared 2-core CPU with 2 trainers (README, "run").
DEFAULT_SPEC: dict[str, Any] = {
    "name": "digits-tiny",
    "task": {"dataset": "digits", "model": "tiny", "steps": 200, "seed": 0},
    "loss": {"order": 3, "inputs": ["x", "y"]},
    "search": {
        "population": 12,
        "generations": 12,
        "sigma0": 1.2,
        "seed": 1,
        "invariant_prescreen": True,
    },
}
DEFAULT_TRAINERS = 2
DEFAULT_COMPARE_RUNS = 5
TRAINER_GRACE_S = 5.0  # on Ctrl-C a trainer finishes a candidate that ends soon, else hands it back
TRAINER_STOP_TIMEOUT_S = 30.0
EXIT_FAILED = EXIT_ERROR


class RunError(Exception):
    """The local search could not complete; the message says why."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec",
        nargs="?",
        metavar="SPEC",
        help="experiment spec (YAML or JSON); default: a digits/tiny search (see README)",
    )
    parser.add_argument(
        "--trainers",
        type=positive_int_or_auto,
        default="auto",
        metavar="N|auto",
        help="local trainer processes; auto measures (once per machine and task shape, then "
        "cached) whether one trainer training K candidates per step or one trainer per "
        f"core is faster (default auto; {DEFAULT_TRAINERS} with the synthetic evaluator)",
    )
    parser.add_argument(
        "--candidates-per-step",
        type=candidates_per_step,
        default=None,
        metavar="K",
        help="candidates each trainer trains together per step (default: 1 with --trainers N, "
        "the measured K with --trainers auto)",
    )
    parser.add_argument("--out", metavar="DIR", help="result folder (default results/<spec name>-<UTC time>)")
    parser.add_argument(
        "--compare-runs",
        type=non_negative_int,
        default=DEFAULT_COMPARE_RUNS,
        metavar="R",
        help=f"full-length trainings per side comparing the best loss with cross-entropy; "
        f"0 skips the comparison (default {DEFAULT_COMPARE_RUNS})",
    )
    parser.add_argument(
        "--compare-steps",
        type=non_negative_int,
        default=0,
        metavar="S",
        help="training steps per comparison run; 0 = the model recipe's full length (default)",
    )
    parser.add_argument(
        "--tune-baseline-lr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also compare against cross-entropy at its best learning rate, chosen on the "
        "validation split (default: on)",
    )
    parser.add_argument(
        "--tuning-seeds",
        type=positive_int,
        default=DEFAULT_TUNING_SEEDS,
        metavar="N",
        help=f"runs per learning-rate multiplier when tuning (default {DEFAULT_TUNING_SEEDS}; "
        f"multipliers {', '.join(f'{m:g}' for m in DEFAULT_LR_MULTIPLIERS)})",
    )
    parser.add_argument("--db", metavar="PATH", help="coordinator database (default: a temporary file)")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="trainers' data directory: TFDS data and the base of idx:/npz: paths "
        f"(default ${DATA_DIR_ENV}, else ~/tensorflow_datasets, TFDS's own default)",
    )
    parser.add_argument(
        "--evaluator",
        choices=("keras", "synthetic"),
        default="keras",
        help="how trainers score candidates (default keras; synthetic is a quick dry run)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=lease_ttl,
        default=None,
        metavar="S",
        help="seconds a lease lives without a heartbeat (default: the coordinator's)",
    )


def load_run_spec(path: str | None):
    """The spec to search: ``path`` loaded and validated, or :data:`DEFAULT_SPEC`."""
    from taylorglo_tf import spec as spec_module

    return spec_module.load_spec(path if path else DEFAULT_SPEC)


def default_data_dir() -> Path:
    """``$TAYLORGLO_DATA_DIR``, else ``~/tensorflow_datasets`` (created if missing)."""
    path = Path(os.environ.get(DATA_DIR_ENV) or Path.home() / "tensorflow_datasets").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_out_dir(name: str, now: datetime.datetime | None = None) -> Path:
    """``results/<name>-<UTC time>``, with the name reduced to file-name-safe characters."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-.") or "search"
    return Path("results") / f"{safe[:60]}-{now:%Y%m%d-%H%M%S}"


# ----------------------------------------------------------------------------- trainers


def _parent_death_signal(parent: int | None = None) -> Callable[[], None] | None:
    """A function asking Linux to SIGTERM the calling process when ``parent`` (default: this
    process, for a child forked from it) dies; None elsewhere.

    The libc function is looked up here, before any fork; the function only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    parent = os.getpid() if parent is None else parent

    def set_signal() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect: nobody will signal
            os._exit(1)

    return set_signal


class LocalTrainers:
    """N ``taylorglo trainer`` processes on this machine, each logging to ``log_dir/trainer-<i>.log``."""

    def __init__(
        self,
        count: int,
        address: str,
        token: str,
        log_dir: Path,
        *,
        evaluator: str = "keras",
        data_dir: str | None = None,
        candidates_per_step: int = 1,
    ) -> None:
        self.count = count
        self.candidates_per_step = candidates_per_step
        self.address = address
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []
        self._token = token
        self._evaluator = evaluator
        self._data_dir = data_dir

    def command(self, index: int) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "taylorglo_tf.commands.run",  # taylorglo, dying with this process: see _local_trainer_main
            str(os.getpid()),
            "trainer",
            "--coordinator",
            self.address,
            "--evaluator",
            self._evaluator,
            "--trainer-id",
            f"local-{index}",
            "--grace",
            f"{TRAINER_GRACE_S:g}",
            "--wait-ms",
            "2000",
            "--candidates-per-step",
            str(self.candidates_per_step),
        ]
        if self._data_dir:
            argv += ["--data-dir", self._data_dir]
        return argv

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TAYLORGLO_TOKEN=self._token, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        for index in range(self.count):
            with open(self.log_dir / f"trainer-{index}.log", "ab") as log:
                # No preexec_fn: the coordinator's gRPC threads run already, and a
                # fork (not vfork) would run gRPC's fork handlers and log warnings.
                self.processes.append(
                    subprocess.Popen(
                        self.command(index),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )

    def alive(self) -> int:
        return sum(process.poll() is None for process in self.processes)

    def stop(self, timeout_s: float = TRAINER_STOP_TIMEOUT_S) -> None:
        """SIGTERM all (they finish or return their lease), then SIGKILL what is left after ``timeout_s``."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _watch_trainers(
    trainers: LocalTrainers, on_all_exited: Callable[[], None], done: threading.Event, interval_s: float = 1.0
) -> None:
    """Calls ``on_all_exited`` once if every trainer exits while ``done`` is unset (polls every ``interval_s``)."""
    while not done.wait(interval_s):
        if trainers.alive() == 0:
            on_all_exited()
            return


# ----------------------------------------------------------------------------- the command


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    # TensorFlow (result folder, comparison) logs C++ noise to stderr unless told not to.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from taylorglo_tf.spec import SpecError

    try:
        spec = load_run_spec(args.spec)
    except (SpecError, ValueError, OSError) as error:
        print_error("run", error)
        return EXIT_BAD_INPUT
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        print_error("run", f"--data-dir {args.data_dir!r} is not a directory")
        return EXIT_BAD_INPUT
    options = RunOptions.from_args(args)
    out_dir = Path(args.out) if args.out else default_out_dir(spec.name or "search")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)  # now, not after the search
    except OSError as error:
        print_error("run", f"cannot make the result folder {str(out_dir)!r}: {error}")
        return EXIT_BAD_INPUT

    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM stops the run like Ctrl-C: everything started is stopped.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return LocalSearch(spec, options, out_dir, out).run()
    except RunError as error:
        print_error("run", error)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"taylorglo run: interrupted; partial results (if any) in {out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What one ``taylorglo run`` was asked for, built once from its arguments (:meth:`from_args`)."""

    data_dir: str  # the trainers' data directory
    trainers: int | str = "auto"  # a count, or "auto": the layout measured on this machine
    candidates_per_step: int | None = None  # None: 1, or the measured K with trainers="auto"
    evaluator: str = "keras"
    db: str | None = None  # None: a temporary database
    lease_ttl: float | None = None  # None: the coordinator's default
    compare_runs: int = DEFAULT_COMPARE_RUNS
    compare_steps: int = 0  # 0: the recipe's full length
    tune_baseline_lr: bool = True
    tuning_seeds: int = DEFAULT_TUNING_SEEDS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options of parsed ``taylorglo run`` arguments; no ``--data-dir``: :func:`default_data_dir`."""
        return cls(
            data_dir=args.data_dir if args.data_dir is not None else str(default_data_dir()),
            trainers=args.trainers,
            candidates_per_step=args.candidates_per_step,
            evaluator=args.evaluator,
            db=args.db,
            lease_ttl=args.lease_ttl,
            compare_runs=args.compare_runs,
            compare_steps=args.compare_steps,
            tune_baseline_lr=args.tune_baseline_lr,
            tuning_seeds=args.tuning_seeds,
        )


class LocalSearch:
    """One ``taylorglo run``: coordinator, trainers, watch, result folder, comparison."""

    def __init__(self, spec: Any, options: RunOptions, out_dir: Path, out: TextIO) -> None:
        self.spec = spec
        self.options = options
        self.out_dir = out_dir
        self.out = out
        self.trainers: LocalTrainers | None = None
        self.experiment_id: str | None = None
        self.trainers_lost = False
        self._trainer_token = secrets.token_urlsafe(24)

    def run(self) -> int:
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            count, per_step = self._layout()
            # The coordinator binds port 0 and reports the port it got; the trainers dial that.
            server, stub = self._start_coordinator(stack)
            self.trainers = LocalTrainers(
                count,
                server.address,
                self._trainer_token,
                self.out_dir / "logs",
                evaluator=self.options.evaluator,
                data_dir=self.options.data_dir,
                candidates_per_step=per_step,
            )
            # Stopped while the coordinator still serves (callbacks run last first),
            # so that interrupted trainers can hand their leases back.
            stack.callback(self.trainers.stop)
            self.trainers.start()
            self._print(
                f"coordinator on {server.address}, {count} trainer(s), {per_step} candidate(s) per step "
                f"(logs in {self.out_dir / 'logs'})"
            )
            try:
                code = self._search(stub)
            except KeyboardInterrupt:
                # Keep what was evaluated: the partial result folder, then stop everything.
                with contextlib.suppress(Exception):
                    self._write_result(stub)
                raise
            result_code = self._write_result(stub)
            self._print(f"search finished in {time.monotonic() - started:.0f} s; result folder: {self.out_dir}")
            # Trainers and coordinator go before the comparison, which needs the cores.
            stack.close()
            if code != EXIT_OK or result_code != EXIT_OK:
                return code or result_code
        return self._compare()

    def _layout(self) -> tuple[int, int]:
        """(trainer processes, candidates per step): as given, else measured on this machine (cached)."""
        per_step = self.options.candidates_per_step
        if isinstance(self.options.trainers, int):  # else "auto"
            return self.options.trainers, per_step or 1
        if self.options.evaluator != "keras":
            return DEFAULT_TRAINERS, per_step or 1
        from taylorglo_tf.training import Task, tuning

        # oneDNN is measured too unless the user set it; the choice reaches the trainers
        # and this process's comparison through the environment (TensorFlow is not loaded yet).
        user_onednn = runtime.chosen_by_user(runtime.ONEDNN_ENV)
        onednn = (os.environ[runtime.ONEDNN_ENV],) if user_onednn else tuning.ONEDNN_SETTINGS
        try:
            task = Task.from_proto(self.spec.task, self.options.data_dir)
            self._print(f"measuring the fastest trainer layout for {task.model} on this machine (once; cached)")
            layout = tuning.local_layout(task, os.cpu_count() or 1, onednn=onednn)
        except (ValueError, RuntimeError, OSError) as error:
            # The trainers will report a bad task themselves, as for any search.
            self._print(f"no layout measurement ({error}); {DEFAULT_TRAINERS} trainers")
            return DEFAULT_TRAINERS, per_step or 1
        rates = ", ".join(f"{name}: {rate:.0f}" for name, rate in layout["rates"].items())
        self._print(f"candidate-steps/s: {rates}")
        if not user_onednn and "onednn" in layout:
            os.environ[runtime.ONEDNN_ENV] = layout["onednn"]
        trainers = layout["trainers"]
        return trainers, per_step or self._holding_a_generation(trainers, layout["candidates_per_step"])

    def _holding_a_generation(self, trainers: int, per_step: int) -> int:
        """The measured K, raised so that the trainers hold a whole generation when successive halving
        decides: the candidates then reach each checkpoint together and the losers stop there
        (docs/explanation/early-stopping.md)."""
        population = self.spec.search.population
        if self.spec.search.early_stopping != "successive_halving" or trainers * per_step >= population:
            return per_step
        needed = min(MAX_LEASE_CANDIDATES, -(-population // trainers))
        self._print(
            f"{needed} candidates per step (measured best {per_step}): {trainers} trainer(s) then hold a "
            f"generation of {population}, as successive halving saves most"
        )
        return needed

    # -- steps --------------------------------------------------------------------------

    def _start_coordinator(self, stack: contextlib.ExitStack):
        from taylorglo_tf import connection
        from taylorglo_tf.coordinator.server import serve
        from taylorglo_tf.coordinator.storage import DatabaseFileError
        from taylorglo_tf.rpc import experiment_service_pb2_grpc

        client_token = secrets.token_urlsafe(24)
        if self.options.db:
            db_path = Path(self.options.db)
        else:
            db_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taylorglo-run-"))) / "search.db"
        options: dict[str, Any] = {} if self.options.lease_ttl is None else {"lease_ttl_s": self.options.lease_ttl}
        if importlib.util.find_spec("tensorboard") is not None:
            from taylorglo_tf.results import TENSORBOARD_DIR

            # live while the search runs: one run per experiment beside the final history's
            options["tensorboard_dir"] = self.out_dir / TENSORBOARD_DIR
        try:
            server = serve(
                db_path, "127.0.0.1:0", trainer_token=self._trainer_token, client_token=client_token, **options
            )
        except DatabaseFileError as error:  # a bad --db is bad input, like a bad spec file
            raise RunError(str(error), EXIT_BAD_INPUT) from None
        except (ValueError, OSError) as error:
            raise RunError(f"cannot start the coordinator: {error}") from None
        stack.callback(server.stop, 2.0)
        channel = stack.enter_context(connection.connect(server.address, token=client_token))
        return server, experiment_service_pb2_grpc.ExperimentServiceStub(channel)

    def _search(self, stub) -> int:
        import grpc

        from taylorglo_tf.commands import client
        from taylorglo_tf.rpc import experiment_service_pb2

        try:
            experiment = stub.SubmitExperiment(
                experiment_service_pb2.SubmitExperimentRequest(spec=self.spec), timeout=client.RPC_TIMEOUT_S
            )
        except grpc.RpcError as error:
            raise RunError(f"the coordinator refused the spec: {error.details()}") from None
        self.experiment_id = experiment.id
        self._print(
            f"experiment {experiment.id}: {experiment.evaluations_total} evaluations "
            f"({self.spec.search.generations} generations x {self.spec.search.population})"
        )
        done = threading.Event()

        def all_trainers_exited() -> None:
            self.trainers_lost = True
            with contextlib.suppress(grpc.RpcError):
                stub.CancelExperiment(
                    experiment_service_pb2.CancelExperimentRequest(experiment_id=experiment.id),
                    timeout=client.RPC_TIMEOUT_S,
                )

        monitor = threading.Thread(
            target=_watch_trainers, args=(self.trainers, all_trainers_exited, done), name="trainer-monitor", daemon=True
        )
        monitor.start()
        try:
            code = client.watch(stub, experiment.id, self.out)
        except client.CommandError as error:
            raise RunError(str(error)) from None
        except grpc.RpcError as error:
            raise RunError(client.describe_rpc_error(error, "the local coordinator")) from None
        finally:
            done.set()
        if self.trainers_lost:
            self._write_result(stub)
            raise RunError(f"every trainer exited before the search finished; see {self.out_dir / 'logs'}")
        return code

    def _write_result(self, stub) -> int:
        import grpc

        from taylorglo_tf.commands import client
        from taylorglo_tf.results import write_result_folder

        if self.experiment_id is None:
            return EXIT_FAILED
        try:
            result = client.fetch_result(stub, self.experiment_id)
        except grpc.RpcError as error:
            raise RunError(f"cannot fetch the result: {error.details()}") from None
        write_result_folder(result, self.out_dir)
        if result.best_theta:
            self._print(
                f"best fitness {result.best_fitness:.4f}, theta [{', '.join(f'{v:.4f}' for v in result.best_theta)}]"
            )
        else:
            self._print("no candidate trained successfully: no best loss")
        return EXIT_OK

    def _compare(self) -> int:
        runs = self.options.compare_runs
        best_loss = self.out_dir / "best_loss.json"
        if runs == 0:
            return EXIT_OK
        if runs < 2:
            self._print("comparison skipped: --compare-runs must be >= 2 for a t-test")
            return EXIT_OK
        if not best_loss.exists():
            self._print("comparison skipped: the search found no successful candidate")
            return EXIT_OK
        tuning_seeds = self.options.tuning_seeds if self.options.tune_baseline_lr else 0
        comparison = compare_with_cross_entropy(
            best_loss,
            self.spec,
            runs,
            steps=self.options.compare_steps,
            data_dir=self.options.data_dir,
            out=self.out,
            tuning_seeds=tuning_seeds,
        )
        from taylorglo_tf.results import COMPARISON_TEXT, write_comparison

        write_comparison(comparison, self.out_dir)
        self.out.write((self.out_dir / COMPARISON_TEXT).read_text())
        if self.spec.HasField("paper"):  # the published row beside the measured one
            from taylorglo_tf.paper import table_row

            self.out.write(table_row(self.spec.paper, comparison.to_dict()))
        self._print(f"comparison written to {self.out_dir / COMPARISON_TEXT}")
        return EXIT_OK

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def compare_with_cross_entropy(
    best_loss: Path,
    spec: Any,
    runs: int,
    *,
    steps: int = 0,
    data_dir: str | None = None,
    out: TextIO | None = None,
    tuning_seeds: int = DEFAULT_TUNING_SEEDS,
):
    """Train the loss in ``best_loss`` and cross-entropy ``runs`` times each on the spec's task.

    ``steps`` per run (0 = the model recipe's full length). With ``tuning_seeds``
    > 0, cross-entropy's learning rate is first chosen on the validation split
    (``tuning_seeds`` runs per multiplier) and the comparison is repeated at that
    rate: returns a ``taylorglo_tf.compare.TunedComparison``; with 0, the plain
    ``Comparison``. Both hold the loss's gradient scale relative to cross-entropy.
    The training loop and its progress display are ``taylorglo compare``'s.
    """
    from rich.console import Console

    import_tensorflow_quietly()  # its C++ start-up lines would garble the progress bars
    from taylorglo_tf import losses
    from taylorglo_tf.commands.compare import ComparisonOptions, train_and_compare
    from taylorglo_tf.training import Task

    task = Task.from_proto(spec.task, data_dir).replace(steps=steps)
    options = ComparisonOptions(runs=runs, tune_baseline_lr=tuning_seeds > 0, tuning_seeds=max(tuning_seeds, 1))
    return train_and_compare(
        losses.load_json(best_loss),
        losses.get("cross_entropy"),
        task,
        options,
        loss_name=str(best_loss.name),
        baseline_name="cross_entropy",
        console=Console(file=out or sys.stdout),
    )


def _local_trainer_main(argv: list[str]) -> int:
    """``python -m taylorglo_tf.commands.run PARENT_PID ARGS...``: ``taylorglo ARGS...`` in a
    process that gets SIGTERM when PARENT_PID dies (Linux), or exits at once if it is gone already.

    The death signal is set here rather than between fork and exec (``preexec_fn``),
    so that the trainers can be started by vfork after the coordinator's gRPC threads.
    """
    set_signal = _parent_death_signal(int(argv[0]))
    if set_signal is not None:
        set_signal()
    from taylorglo_tf.cli import main

    return main(argv[1:])


if __name__ == "__main__":
    sys.exit(_local_trainer_main(sys.argv[1:]))
