"""``taylorglo submit | status | watch | result | cancel | delete``: the coordinator's client commands.

One module serves the six subcommands (``add_arguments(parser, name)`` and
``run(args)`` dispatching on ``args.command``). Every command talks to the
coordinator's ExperimentService over :func:`taylorglo_tf.connection.connect`;
gRPC errors become one clear line on stderr and a non-zero exit code:

- 0: success (``watch``: the experiment succeeded);
- 1: the coordinator refused or failed the request, or is unreachable;
- 2: bad input: an argument (argparse) or a file it names (spec, token);
- 3: ``watch`` followed an experiment that ended CANCELLED or FAILED.

Every user-provided string (names, ids, dataset URIs, errors) is printed through
:func:`taylorglo_tf.text.escape_controls`, so no control character reaches the
terminal. Listings and results follow the coordinator's pages
(:func:`list_experiments`, :func:`fetch_result`).

No TensorFlow here.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TextIO

import grpc

from taylorglo_tf.commands.arguments import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_OK,
    TOKEN_ENV,
    BadInput,
    CommandError,
    add_connection_arguments,
    non_negative_float,
    open_channel,
    print_error,
)
from taylorglo_tf.retry import Backoff, Retryable, call_with_retries
from taylorglo_tf.rpc import experiment_service_pb2, experiment_service_pb2_grpc, types_pb2
from taylorglo_tf.text import escape_controls

RPC_TIMEOUT_S = 30.0
RECONNECT_TIMEOUT_S = 300.0  # a watch outlives a coordinator restart of up to 5 minutes
RECONNECT_INITIAL_DELAY_S, RECONNECT_MAX_DELAY_S = 0.5, 5.0

EXIT_UNSUCCESSFUL = 3  # watch: the experiment ended CANCELLED or FAILED

_STATE_NAMES = {
    value: name.removeprefix("EXPERIMENT_STATE_").lower() for name, value in types_pb2.ExperimentState.items()
}
FINAL_STATES = frozenset(
    {
        types_pb2.EXPERIMENT_STATE_SUCCEEDED,
        types_pb2.EXPERIMENT_STATE_CANCELLED,
        types_pb2.EXPERIMENT_STATE_FAILED,
    }
)


def describe_rpc_error(error: grpc.RpcError, address: str) -> str:
    """One line explaining a failed call, by status code."""
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the coordinator at {address} ({details}); is it running?"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the coordinator at {address} did not answer in time"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"the coordinator rejected the credentials ({details}); pass --token-file or set ${TOKEN_ENV}"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"permission denied ({details}); use a client token, not a trainer token"
    if code == grpc.StatusCode.NOT_FOUND:
        return f"not found: {details}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return f"invalid request: {details}"
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return f"not possible now: {details}"
    return f"{code.name}: {details}"


# -- formatting -----------------------------------------------------------------


def shown(value: str) -> str:
    """A user-provided string as printed: control characters escaped."""
    return escape_controls(value)


def state_name(state: int) -> str:
    """``EXPERIMENT_STATE_RUNNING`` -> ``"running"``."""
    return _STATE_NAMES.get(state, str(state))


def _format_theta(theta: Iterable[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in theta) + "]"


def _generations_done(experiment: types_pb2.Experiment) -> str:
    """``"done/total"``: ``Experiment.generation`` is the current 0-based generation, so
    also the number completed; every command shows it this way, matching the
    0-based generation numbers of the progress lines and the result files."""
    return f"{experiment.generation}/{experiment.spec.search.generations}"


def early_stopping_text(spec: types_pb2.ExperimentSpec) -> str:
    """The spec's early-stopping rule as shown (``"median (timing-dependent)"``), or ``""`` for none."""
    from taylorglo_tf.spec import DETERMINISTIC_EARLY_STOPPING

    rule = spec.search.early_stopping or "none"  # "" in an experiment stored before the field
    if rule == "none":
        return ""
    kind = "deterministic" if rule in DETERMINISTIC_EARLY_STOPPING else "timing-dependent"
    return f"{shown(rule)} ({kind})"


def format_experiment(experiment: types_pb2.Experiment) -> str:
    """A multi-line description of one experiment."""
    spec = experiment.spec
    lines = [
        f"id:          {shown(experiment.id)}",
        f"name:        {shown(spec.name)}",
        f"state:       {state_name(experiment.state)}",
        f"task:        {shown(spec.task.dataset)} / {shown(spec.task.model)}, {spec.task.steps} steps",
    ]
    rule = early_stopping_text(spec)
    if rule:
        lines.append(f"early stop:  {rule}")
    lines += [
        f"generations: {_generations_done(experiment)} done",
        f"evaluations: {experiment.evaluations_done} of {experiment.evaluations_total}",
        f"best:        {experiment.best_fitness:.4f}",
    ]
    if experiment.best_theta:
        lines.append(f"best theta:  {_format_theta(experiment.best_theta)}")
    if experiment.error:
        lines.append(f"error:       {shown(experiment.error)}")
    return "\n".join(lines)


def _print_table(experiments: list[types_pb2.Experiment], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # the rule's column only where some search stops candidates early
    ruled = any(early_stopping_text(e.spec) for e in experiments)
    table = Table("id", "name", "state", "generations", "evaluations", "best", *(["early stop"] if ruled else []))
    for e in experiments:
        table.add_row(  # Text, not str: rich would read "[...]" in a name as markup
            Text(shown(e.id)),
            Text(shown(e.spec.name)),
            state_name(e.state),
            _generations_done(e),
            f"{e.evaluations_done}/{e.evaluations_total}",
            f"{e.best_fitness:.4f}",
            *([shown(e.spec.search.early_stopping or "none")] if ruled else []),
        )
    Console(file=out, width=max(100, Console(file=out).width)).print(table)


# -- subcommands ------------------------------------------------------------------


def _stub(channel: grpc.Channel) -> experiment_service_pb2_grpc.ExperimentServiceStub:
    return experiment_service_pb2_grpc.ExperimentServiceStub(channel)


def list_experiments(stub) -> list[types_pb2.Experiment]:
    """Every experiment, newest first, page by page."""
    experiments: list[types_pb2.Experiment] = []
    token = ""
    while True:
        page = stub.ListExperiments(
            experiment_service_pb2.ListExperimentsRequest(page_token=token), timeout=RPC_TIMEOUT_S
        )
        experiments.extend(page.experiments)
        token = page.next_page_token
        if not token:
            return experiments


def fetch_result(stub, experiment_id: str) -> experiment_service_pb2.ExperimentResult:
    """An experiment's whole result: every page of GetResult in one message.

    The experiment and best-so-far are the last page's (the newest); the
    generation summaries and candidates are those of all pages in order.
    """
    merged = experiment_service_pb2.ExperimentResult()
    token = ""
    while True:
        page = stub.GetResult(
            experiment_service_pb2.GetResultRequest(experiment_id=experiment_id, page_token=token),
            timeout=RPC_TIMEOUT_S,
        )
        merged.experiment.CopyFrom(page.experiment)
        merged.best_theta[:] = page.best_theta
        merged.best_fitness = page.best_fitness
        merged.generations.extend(page.generations)
        merged.candidates.extend(page.candidates)
        token = page.next_page_token
        if not token:
            return merged


def candidates_text(result: experiment_service_pb2.ExperimentResult) -> str:
    """Two lines: how many candidates have each status (``stopped`` and ``waiting`` among them) and the
    training steps spent, a stopped candidate counting the steps it actually trained."""
    from taylorglo_tf.results import status_counts, training_steps

    counts = status_counts(result.candidates)
    listed = ", ".join(f"{count} {status}" for status, count in counts.items()) or "none yet"
    return f"candidates:  {listed}\nsteps:       {training_steps(result.candidates):,} trained"


def cmd_submit(args: argparse.Namespace, stub, out: TextIO) -> int:
    from taylorglo_tf import spec as spec_module

    try:
        spec = spec_module.load_spec(args.spec)
    except (ValueError, OSError) as error:  # SpecError is a ValueError naming the field
        raise BadInput(f"invalid spec {args.spec}: {error}") from None
    experiment = stub.SubmitExperiment(experiment_service_pb2.SubmitExperimentRequest(spec=spec), timeout=RPC_TIMEOUT_S)
    print(shown(experiment.id), file=out)  # alone on stdout, for scripts
    print(
        f"submitted {shown(experiment.spec.name) or 'experiment'}: {experiment.evaluations_total} evaluations "
        f"({experiment.spec.search.generations} generations x {experiment.spec.search.population})",
        file=sys.stderr,
    )
    if args.watch:
        return watch(stub, experiment.id, out, reconnect_timeout_s=args.reconnect_timeout)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, stub, out: TextIO) -> int:
    if args.experiment_id:
        experiment = stub.GetExperiment(
            experiment_service_pb2.GetExperimentRequest(experiment_id=args.experiment_id), timeout=RPC_TIMEOUT_S
        )
        print(format_experiment(experiment), file=out)
        print(candidates_text(fetch_result(stub, experiment.id)), file=out)
        fleet = fetch_fleet(stub)
        for pace in fleet.experiments if fleet is not None else ():
            if pace.experiment_id == experiment.id:
                print(f"pace:        {pace_text(pace)}", file=out)
        return EXIT_OK
    experiments = list_experiments(stub)
    if not experiments:
        print("no experiments", file=out)
    else:
        _print_table(experiments, out)
    fleet = fetch_fleet(stub)
    if fleet is not None and fleet.trainers:
        lost = sum(t.lost for t in fleet.trainers)
        print(f"\ntrainers: {len(fleet.trainers) - lost} active, {lost} lost", file=out)
        print_fleet(fleet, out)
    return EXIT_OK


def _duration(seconds: float) -> str:
    """``"42s"``, ``"7m05s"``, ``"3h12m"``."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def fetch_fleet(stub) -> experiment_service_pb2.GetFleetResponse | None:
    """The coordinator's fleet view, or None from a coordinator that predates it."""
    try:
        return stub.GetFleet(experiment_service_pb2.GetFleetRequest(), timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise


def pace_text(pace: experiment_service_pb2.ExperimentPace) -> str:
    """``"12.0 candidates/min, 40 left, ETA 3m20s"`` (ETA unknown until a rate is measured)."""
    eta = _duration(pace.eta_s) if pace.HasField("eta_s") else "unknown"
    return f"{60 * pace.candidates_per_s:.1f} candidates/min, {pace.remaining_candidates} left, ETA {eta}"


def print_fleet(fleet: experiment_service_pb2.GetFleetResponse, out: TextIO) -> None:
    """The trainers as a table (a lost one marked), then each running experiment's pace."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, width=max(100, Console(file=out).width))
    if not fleet.trainers:
        print("no trainers seen since the coordinator started", file=out)
    else:
        table = Table("trainer", "state", "last contact", "leases", "evaluations", "failures", "steps/s", "seen for")
        for t in fleet.trainers:
            table.add_row(
                Text(shown(t.trainer_id)),
                "LOST" if t.lost else "active",
                f"{_duration(t.idle_s)} ago",
                str(t.leases_held),
                str(t.evaluations),
                str(t.failures),
                f"{t.candidate_steps_per_s:.1f}",
                _duration(t.seen_for_s),
            )
        console.print(table)
    for pace in fleet.experiments:
        print(f"{shown(pace.experiment_id)}: {pace_text(pace)}", file=out)


def cmd_trainers(args: argparse.Namespace, stub, out: TextIO) -> int:
    fleet = fetch_fleet(stub)
    if fleet is None:
        raise CommandError("the coordinator predates the fleet view (GetFleet); upgrade it")
    print_fleet(fleet, out)
    return EXIT_OK


def watch(
    stub,
    experiment_id: str,
    out: TextIO,
    on_event: Callable[[experiment_service_pb2.ProgressEvent], None] | None = None,
    reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
) -> int:
    """Follows an experiment with a rich progress bar until it reaches a final state.

    The bar shows evaluations and generations done/total and the best fitness so
    far; a line is printed as each generation finishes. With early stopping, the rule
    is named once, each stopped candidate gets a line (the checkpoint where it stopped,
    its partial accuracy, the steps it trained), and the bar and the generation lines
    count the stopped candidates this watch saw finish. Returns 0 when the experiment
    succeeded, 3 when it was cancelled or failed.

    A coordinator restart does not end the watch: when the stream breaks with
    UNAVAILABLE, or ends before a final state (a coordinator shutting down ends its
    streams), the watch is re-opened with exponential backoff (``taylorglo_tf.retry``:
    0.5 s doubling to 5 s, with jitter) for up to ``reconnect_timeout_s`` seconds from the break; the server's
    snapshot then resumes the bar. Any other gRPC error is raised at once. Ctrl-C (and
    SIGTERM in ``taylorglo run``) ends a wait between attempts at once.
    """
    with _ProgressView(experiment_id, out) as view:
        experiment = _follow(stub, experiment_id, view, on_event, reconnect_timeout_s)
    return _announce_end(experiment_id, experiment, out)


class _ProgressView:
    """Drawing: one experiment's rich progress bar, and a line per finished generation or connection change."""

    def __init__(self, experiment_id: str, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._experiment_id = experiment_id
        # candidates stopped early, as this watch saw them finish: (generation, index) -> fitness,
        # and the fitness of the others, per generation (for the mean of those that trained in full)
        self._stopped: dict[tuple[int, int], float] = {}
        self._trained: dict[tuple[int, int], float] = {}
        self._rule_said = False
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "evaluations  generations {task.fields[generations]} done  best {task.fields[best]:.4f}"
                "{task.fields[stopped]}"
            ),
            TimeElapsedColumn(),
            console=Console(file=out),
            transient=False,
        )

    def __enter__(self) -> _ProgressView:
        self._progress.__enter__()
        self._task = self._progress.add_task(
            _markup_text(shown(self._experiment_id)), total=None, generations="-", best=0.0, stopped=""
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._progress.__exit__(exc_type, exc, traceback)

    def show(self, experiment: types_pb2.Experiment) -> None:
        rule = early_stopping_text(experiment.spec)
        if rule and not self._rule_said:
            self._rule_said = True
            self.say(f"early stopping: {rule}")
        self._progress.update(
            self._task,
            description=_markup_text(shown(experiment.spec.name or self._experiment_id)),
            total=experiment.evaluations_total or None,
            completed=experiment.evaluations_done,
            generations=_generations_done(experiment),
            best=experiment.best_fitness,
            stopped=f"  stopped {len(self._stopped)}" if early_stopping_text(experiment.spec) else "",
        )

    def candidate_finished(self, c: types_pb2.Candidate) -> None:
        """A line for a candidate stopped early: where, its partial accuracy and the steps it trained."""
        key = (c.generation, c.index)
        if c.status != types_pb2.CANDIDATE_STATUS_STOPPED:
            self._trained[key] = c.fitness
            return
        self._stopped[key] = c.fitness
        self.say(
            f"generation {c.generation} candidate {c.index} stopped at checkpoint {c.stopped_at}: "
            f"accuracy {c.metrics.val_accuracy:.4f} after {c.metrics.steps} steps"
        )

    def generation_finished(self, g: types_pb2.GenerationSummary) -> None:
        line = f"generation {g.generation}: best {g.best_fitness:.4f}  mean {g.mean_fitness:.4f}"
        stopped = sum(generation == g.generation for generation, _ in self._stopped)
        if stopped:
            # the mean above counts the stopped candidates' negative ranking scores
            rest = [f for (generation, _), f in self._trained.items() if generation == g.generation]
            line += f"  stopped {stopped}"
            line += f" (mean of the rest {sum(rest) / len(rest):.4f})" if rest else ""
        self.say(line)

    def say(self, line: str) -> None:
        self._progress.console.print(line, soft_wrap=True)  # one line, whatever the width: greppable


def _markup_text(value: str) -> str:
    """``value`` as rich markup that shows it verbatim ("[...]" in a name must stay text)."""
    from rich.markup import escape

    return escape(value)


class _StreamEnded(Retryable):
    """The watch stream ended before the experiment reached a final state (a coordinator stopping ends them)."""


def _follow(
    stub,
    experiment_id: str,
    view: _ProgressView,
    on_event: Callable[[experiment_service_pb2.ProgressEvent], None] | None,
    reconnect_timeout_s: float,
) -> types_pb2.Experiment:
    """Reconnecting: the experiment in its final state, following its watch stream and re-opening it after a
    break, for up to ``reconnect_timeout_s`` from the break (an UNAVAILABLE error is then raised as it came)."""
    latest: types_pb2.Experiment | None = None
    broke_at: float | None = None  # set while the coordinator is away
    backoff = Backoff(RECONNECT_INITIAL_DELAY_S, RECONNECT_MAX_DELAY_S)

    def follow_stream(_time_left_s: float) -> types_pb2.Experiment:
        nonlocal latest, broke_at
        stream = stub.WatchExperiment(experiment_service_pb2.WatchExperimentRequest(experiment_id=experiment_id))
        try:
            for event in stream:
                if broke_at is not None:
                    view.say("reconnected to the coordinator")
                    broke_at = None
                    backoff.reset()
                latest = event.experiment
                if event.kind == experiment_service_pb2.ProgressEvent.KIND_CANDIDATE_FINISHED:
                    view.candidate_finished(event.candidate)  # before the bar, which counts the stopped
                view.show(latest)
                if on_event is not None:
                    on_event(event)
                if event.kind == experiment_service_pb2.ProgressEvent.KIND_GENERATION_FINISHED:
                    view.generation_finished(event.generation)
                if event.kind == experiment_service_pb2.ProgressEvent.KIND_EXPERIMENT_FINISHED:
                    break
            if latest is not None and latest.state in FINAL_STATES:
                return latest
            lost = (
                f"the watch stream ended while experiment {experiment_id} was "
                f"{state_name(latest.state) if latest is not None else 'unknown'}"
            )
            failure: Exception = _StreamEnded(lost)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            lost, failure = f"lost the coordinator ({error.details()})", error
        finally:
            stream.cancel()
        if broke_at is None:
            broke_at = time.monotonic()
            view.say(f"{lost}; reconnecting for up to {reconnect_timeout_s:g} s")
        raise failure  # a grpc.RpcError is reported as "cannot reach the coordinator" when it is the last

    try:
        return call_with_retries(
            follow_stream,
            retryable={grpc.StatusCode.UNAVAILABLE},
            backoff=backoff,
            give_up_at=lambda: math.inf if broke_at is None else broke_at + reconnect_timeout_s,
        )
    except _StreamEnded as ended:
        raise CommandError(f"{ended}; gave up after {reconnect_timeout_s:g} s") from None


def _announce_end(experiment_id: str, experiment: types_pb2.Experiment, out: TextIO) -> int:
    """Exit code: 0 when the experiment succeeded, 3 when it was cancelled or failed (after saying which)."""
    print(
        f"experiment {shown(experiment_id)} {state_name(experiment.state)}: best fitness {experiment.best_fitness:.4f}",
        file=out,
    )
    if experiment.error:
        print(f"error: {shown(experiment.error)}", file=out)
    return EXIT_OK if experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED else EXIT_UNSUCCESSFUL


def cmd_watch(args: argparse.Namespace, stub, out: TextIO) -> int:
    return watch(stub, args.experiment_id, out, reconnect_timeout_s=args.reconnect_timeout)


def cmd_result(args: argparse.Namespace, stub, out: TextIO) -> int:
    result = fetch_result(stub, args.experiment_id)
    from taylorglo_tf.results import write_result_folder

    try:
        folder = write_result_folder(result, args.out)
    except (ValueError, OSError) as error:
        raise BadInput(f"cannot write the result folder {str(args.out)!r}: {error}") from None
    state = state_name(result.experiment.state)
    print(
        f"wrote the result of experiment {shown(args.experiment_id)} ({state}, best fitness "
        f"{result.best_fitness:.4f}) to {folder}",
        file=out,
    )
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, stub, out: TextIO) -> int:
    experiment = stub.CancelExperiment(
        experiment_service_pb2.CancelExperimentRequest(experiment_id=args.experiment_id), timeout=RPC_TIMEOUT_S
    )
    print(
        f"experiment {shown(experiment.id)} {state_name(experiment.state)} after "
        f"{experiment.evaluations_done} of {experiment.evaluations_total} evaluations",
        file=out,
    )
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, stub, out: TextIO) -> int:
    deleted = stub.DeleteExperiment(
        experiment_service_pb2.DeleteExperimentRequest(experiment_id=args.experiment_id), timeout=RPC_TIMEOUT_S
    ).experiment
    name = f" ({shown(deleted.spec.name)})" if deleted.spec.name else ""
    print(
        f"deleted experiment {shown(deleted.id)}{name}, {state_name(deleted.state)} with "
        f"{deleted.evaluations_done} evaluations",
        file=out,
    )
    return EXIT_OK


_COMMANDS = {
    "submit": cmd_submit,
    "status": cmd_status,
    "watch": cmd_watch,
    "result": cmd_result,
    "cancel": cmd_cancel,
    "delete": cmd_delete,
    "trainers": cmd_trainers,
}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Adds the arguments of subcommand ``name`` (one of submit, status, watch, result, cancel, delete)."""
    if name not in _COMMANDS:
        raise ValueError(f"unknown client command {name!r}; expected one of {sorted(_COMMANDS)}")
    if name == "submit":
        parser.add_argument("spec", metavar="SPEC", help="experiment spec file (YAML or JSON)")
        parser.add_argument("--watch", action="store_true", help="follow the experiment after submitting it")
    elif name == "trainers":
        pass
    elif name == "status":
        parser.add_argument("experiment_id", nargs="?", metavar="ID", help="experiment id (default: list all)")
    else:
        parser.add_argument("experiment_id", metavar="ID", help="experiment id")
    if name in ("submit", "watch"):
        parser.add_argument(
            "--reconnect-timeout",
            type=non_negative_float,
            default=RECONNECT_TIMEOUT_S,
            metavar="S",
            help="while watching, seconds to keep reconnecting to a restarting coordinator "
            f"(default {RECONNECT_TIMEOUT_S:g})",
        )
    if name == "result":
        parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the result into")
    add_connection_arguments(parser)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Runs ``args.command``; returns the exit code (errors are printed to stderr)."""
    out = sys.stdout if out is None else out
    handler = _COMMANDS[args.command]
    try:
        channel = open_channel(args)
        with channel:
            return handler(args, _stub(channel), out)
    except CommandError as error:
        print_error(args.command, error)
        return EXIT_BAD_INPUT if isinstance(error, BadInput) else EXIT_ERROR
    except grpc.RpcError as error:
        print_error(args.command, describe_rpc_error(error, args.coordinator))
        return EXIT_ERROR
