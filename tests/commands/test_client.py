"""The client commands (submit, status, watch, result, cancel) against a scripted ExperimentService."""

from __future__ import annotations

import argparse
import io
import socket
import time
from concurrent import futures

import grpc
import pytest

from taylorglo_tf.commands import client
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc, types_pb2

Event = es.ProgressEvent
SPEC_YAML = """\
name: digits search
task: {dataset: digits, model: tiny, steps: 50}
search: {population: 4, generations: 2}
"""


def _experiment(state=types_pb2.EXPERIMENT_STATE_RUNNING, done=0, generation=0, best=0.0):
    spec = types_pb2.ExperimentSpec(
        name="digits search",
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=50),
        search=types_pb2.SearchSpec(population=4, generations=2),
    )
    return types_pb2.Experiment(
        id="exp-1",
        spec=spec,
        state=state,
        generation=generation,
        evaluations_done=done,
        evaluations_total=8,
        best_fitness=best,
        best_theta=[0.5] * 8 if best else [],
    )


class ScriptedExperiments(experiment_service_pb2_grpc.ExperimentServiceServicer):
    def __init__(self, final_state=types_pb2.EXPERIMENT_STATE_SUCCEEDED, error=None):
        self.final_state = final_state
        self.error = error  # (code, details) to abort every call with
        self.submitted: list[types_pb2.ExperimentSpec] = []
        self.metadata: list[dict] = []
        self.cancelled: list[str] = []

    def _enter(self, context):
        self.metadata.append(dict(context.invocation_metadata()))
        if self.error:
            context.abort(*self.error)

    def _known(self, experiment_id, context):
        if experiment_id != "exp-1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no experiment {experiment_id!r}")

    def SubmitExperiment(self, request, context):
        self._enter(context)
        self.submitted.append(request.spec)
        experiment = _experiment(types_pb2.EXPERIMENT_STATE_PENDING)
        experiment.spec.CopyFrom(request.spec)
        return experiment

    def GetExperiment(self, request, context):
        self._enter(context)
        self._known(request.experiment_id, context)
        return _experiment(done=3, best=0.75)

    def ListExperiments(self, request, context):
        self._enter(context)
        other = _experiment(types_pb2.EXPERIMENT_STATE_SUCCEEDED, done=8, generation=2, best=0.9)
        other.id = "exp-0"
        return es.ListExperimentsResponse(experiments=[_experiment(done=3, best=0.75), other])

    def WatchExperiment(self, request, context):
        self._enter(context)
        self._known(request.experiment_id, context)
        yield Event(kind=Event.KIND_SNAPSHOT, experiment=_experiment())
        for done in range(1, 9):
            generation = done // 4
            yield Event(
                kind=Event.KIND_CANDIDATE_FINISHED,
                experiment=_experiment(done=done, generation=generation, best=0.1 * done),
                candidate=types_pb2.Candidate(index=(done - 1) % 4, fitness=0.1 * done),
            )
            if done % 4 == 0:
                yield Event(
                    kind=Event.KIND_GENERATION_FINISHED,
                    experiment=_experiment(done=done, generation=generation, best=0.1 * done),
                    generation=types_pb2.GenerationSummary(
                        generation=generation - 1, best_fitness=0.1 * done, mean_fitness=0.05 * done
                    ),
                )
        yield Event(
            kind=Event.KIND_EXPERIMENT_FINISHED,
            experiment=_experiment(self.final_state, done=8, generation=2, best=0.8),
        )

    def CancelExperiment(self, request, context):
        self._enter(context)
        self._known(request.experiment_id, context)
        self.cancelled.append(request.experiment_id)
        return _experiment(types_pb2.EXPERIMENT_STATE_CANCELLED, done=3)

    def GetResult(self, request, context):
        self._enter(context)
        self._known(request.experiment_id, context)
        experiment = _experiment(types_pb2.EXPERIMENT_STATE_SUCCEEDED, done=8, generation=2, best=0.8)
        candidates = [
            types_pb2.Candidate(
                experiment_id="exp-1",
                generation=g,
                index=i,
                theta=[0.1 * i] * 8,
                status=types_pb2.CANDIDATE_STATUS_SUCCEEDED,
                fitness=0.1 * (4 * g + i + 1),
                attempts=1,
            )
            for g in range(2)
            for i in range(4)
        ]
        generations = [
            types_pb2.GenerationSummary(
                generation=g,
                best_fitness=0.4 * (g + 1),
                mean_fitness=0.25 + 0.4 * g,
                best_theta=[0.3] * 8,
                mean_theta=[0.1] * 8,
                sigma=1.0,
            )
            for g in range(2)
        ]
        return es.ExperimentResult(
            experiment=experiment,
            best_theta=[0.3] * 8,
            best_fitness=0.8,
            generations=generations,
            candidates=candidates,
        )


@pytest.fixture
def service():
    servers = []

    def start(servicer):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        experiment_service_pb2_grpc.add_ExperimentServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def invoke(argv: list[str], monkeypatch=None) -> tuple[int, str]:
    """Parses ``argv`` the way ``taylorglo`` does and runs it; returns (exit code, stdout)."""
    parser = argparse.ArgumentParser(prog="taylorglo")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("submit", "status", "watch", "result", "cancel", "trainers"):
        client.add_arguments(sub.add_parser(name), name)
    out = io.StringIO()
    code = client.run(parser.parse_args(argv), out=out)
    return code, out.getvalue()


@pytest.fixture(autouse=True)
def _no_token_from_environment(monkeypatch):
    monkeypatch.delenv("TAYLORGLO_TOKEN", raising=False)


def test_submit_sends_the_spec_with_defaults_and_prints_the_id(service, tmp_path):
    fake = ScriptedExperiments()
    address = service(fake)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(SPEC_YAML)
    code, out = invoke(["submit", str(spec_file), "--coordinator", address])
    assert code == 0 and out.splitlines()[0] == "exp-1"
    (spec,) = fake.submitted
    assert spec.task.dataset == "digits" and spec.search.population == 4
    assert spec.search.sigma0 == pytest.approx(1.2)  # default applied before sending


def test_submit_rejects_an_invalid_spec_naming_the_field_without_calling_the_coordinator(service, tmp_path, capsys):
    fake = ScriptedExperiments()
    address = service(fake)
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(SPEC_YAML.replace("population: 4", "population: 1"))
    code, _ = invoke(["submit", str(spec_file), "--coordinator", address])
    assert code == 2  # bad input
    assert "spec.search.population" in capsys.readouterr().err
    assert fake.submitted == []


def test_submit_sends_the_bearer_token_from_the_token_file(service, tmp_path):
    fake = ScriptedExperiments()
    address = service(fake)
    (tmp_path / "spec.yaml").write_text(SPEC_YAML)
    (tmp_path / "token").write_text("s3cret\n")
    code, _ = invoke(
        ["submit", str(tmp_path / "spec.yaml"), "--coordinator", address, "--token-file", str(tmp_path / "token")]
    )
    assert code == 0 and fake.metadata[0]["authorization"] == "Bearer s3cret"


def test_status_with_an_id_describes_the_experiment(service):
    code, out = invoke(["status", "exp-1", "--coordinator", service(ScriptedExperiments())])
    assert code == 0
    assert "state:       running" in out and "evaluations: 3 of 8" in out and "best:        0.7500" in out


def test_status_and_watch_both_count_generations_done_out_of_the_total(service):
    # Experiment.generation is 0-based and current: 0 of 2 done while the first runs.
    _, status = invoke(["status", "exp-1", "--coordinator", service(ScriptedExperiments())])
    assert "generations: 0/2 done" in status
    _, table = invoke(["status", "--coordinator", service(ScriptedExperiments())])
    assert "generations" in table and "0/2" in table and "2/2" in table
    _, watched = invoke(["watch", "exp-1", "--coordinator", service(ScriptedExperiments())])
    assert "generations 2/2 done" in watched and "generation 1: best" in watched


def test_status_without_an_id_lists_every_experiment(service):
    code, out = invoke(["status", "--coordinator", service(ScriptedExperiments())])
    assert code == 0
    assert "exp-1" in out and "exp-0" in out and "succeeded" in out and "3/8" in out


def test_status_of_an_unknown_id_fails_with_not_found(service, capsys):
    code, _ = invoke(["status", "nope", "--coordinator", service(ScriptedExperiments())])
    assert code == 1 and "not found: no experiment 'nope'" in capsys.readouterr().err


def test_watch_follows_progress_to_success(service):
    code, out = invoke(["watch", "exp-1", "--coordinator", service(ScriptedExperiments())])
    assert code == 0
    assert "generation 0: best 0.4000  mean 0.2000" in out
    assert "generation 1: best 0.8000" in out
    assert "8/8" in out
    assert out.rstrip().endswith("experiment exp-1 succeeded: best fitness 0.8000")


def test_watch_of_a_cancelled_experiment_exits_3(service):
    fake = ScriptedExperiments(final_state=types_pb2.EXPERIMENT_STATE_CANCELLED)
    code, out = invoke(["watch", "exp-1", "--coordinator", service(fake)])
    assert code == 3 and "experiment exp-1 cancelled" in out


def test_submit_with_watch_prints_the_id_then_follows_the_experiment(service, tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC_YAML)
    code, out = invoke(
        ["submit", str(tmp_path / "spec.yaml"), "--watch", "--coordinator", service(ScriptedExperiments())]
    )
    assert code == 0 and out.splitlines()[0] == "exp-1"
    assert out.rstrip().endswith("experiment exp-1 succeeded: best fitness 0.8000")


def test_watch_gives_up_on_an_unreachable_coordinator_after_the_reconnect_timeout(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here after the block
    started = time.monotonic()
    code, out = invoke(["watch", "exp-1", "--reconnect-timeout", "1.5", "--coordinator", f"127.0.0.1:{port}"])
    waited = time.monotonic() - started
    assert code == 1 and f"cannot reach the coordinator at 127.0.0.1:{port}" in capsys.readouterr().err
    assert "reconnecting for up to 1.5 s" in out
    assert 1.5 <= waited < 10  # kept trying for the timeout, then stopped


class BrokenStreams(ScriptedExperiments):
    """Each watch first sends a snapshot, then breaks with ``code`` (``breaks`` times), then runs to the end."""

    def __init__(self, code, breaks):
        super().__init__()
        self.code, self.breaks, self.watches = code, breaks, 0

    def WatchExperiment(self, request, context):
        self.watches += 1
        if self.watches <= self.breaks:
            yield Event(kind=Event.KIND_SNAPSHOT, experiment=_experiment(done=self.watches))
            context.abort(self.code, "stream broken")
        yield from super().WatchExperiment(request, context)


def test_watch_reopens_a_stream_broken_by_unavailable_and_follows_to_success(service):
    fake = BrokenStreams(grpc.StatusCode.UNAVAILABLE, breaks=2)
    code, out = invoke(["watch", "exp-1", "--coordinator", service(fake)])
    assert code == 0 and fake.watches == 3
    assert "lost the coordinator (stream broken); reconnecting" in out
    assert "reconnected to the coordinator" in out
    assert out.rstrip().endswith("experiment exp-1 succeeded: best fitness 0.8000")


class EndingStreams(ScriptedExperiments):
    """Each watch ends cleanly (as a stopping coordinator ends them) ``ends`` times, after a snapshot or at once."""

    def __init__(self, ends, snapshot=True):
        super().__init__()
        self.ends, self.snapshot, self.watches = ends, snapshot, 0

    def WatchExperiment(self, request, context):
        self.watches += 1
        if self.watches <= self.ends:
            if self.snapshot:
                yield Event(kind=Event.KIND_SNAPSHOT, experiment=_experiment(done=self.watches))
            return
        yield from super().WatchExperiment(request, context)


def test_watch_reopens_a_stream_that_ended_before_a_final_state(service):
    fake = EndingStreams(ends=2)
    code, out = invoke(["watch", "exp-1", "--coordinator", service(fake)])
    assert code == 0 and fake.watches == 3
    assert "the watch stream ended while experiment exp-1 was running; reconnecting" in out
    assert out.rstrip().endswith("experiment exp-1 succeeded: best fitness 0.8000")


def test_watch_gives_up_on_streams_that_keep_ending_empty_after_the_reconnect_timeout(service, capsys):
    fake = EndingStreams(ends=10**6, snapshot=False)
    started = time.monotonic()
    code, _ = invoke(["watch", "exp-1", "--reconnect-timeout", "1", "--coordinator", service(fake)])
    assert code == 1 and 1 <= time.monotonic() - started < 10
    assert "the watch stream ended while experiment exp-1 was unknown; gave up after 1 s" in capsys.readouterr().err
    assert 2 <= fake.watches < 20  # backoff between attempts: 0.5 s doubling


def test_watch_does_not_retry_a_non_transient_error(service, capsys):
    fake = BrokenStreams(grpc.StatusCode.PERMISSION_DENIED, breaks=1)
    code, _ = invoke(["watch", "exp-1", "--coordinator", service(fake)])
    assert code == 1 and fake.watches == 1
    assert "permission denied (stream broken)" in capsys.readouterr().err


def test_cancel_prints_the_new_state(service):
    fake = ScriptedExperiments()
    code, out = invoke(["cancel", "exp-1", "--coordinator", service(fake)])
    assert code == 0 and fake.cancelled == ["exp-1"]
    assert "experiment exp-1 cancelled after 3 of 8 evaluations" in out


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, "rejected the credentials"),
        (grpc.StatusCode.PERMISSION_DENIED, "use a client token, not a trainer token"),
        (grpc.StatusCode.FAILED_PRECONDITION, "not possible now: already finished"),
    ],
)
def test_grpc_errors_become_one_clear_line_and_exit_1(service, capsys, code, expected):
    fake = ScriptedExperiments(error=(code, "already finished"))
    exit_code, _ = invoke(["cancel", "exp-1", "--coordinator", service(fake)])
    assert exit_code == 1 and expected in capsys.readouterr().err


def test_an_unreachable_coordinator_is_named_in_the_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here after the block
    code, _ = invoke(["status", "--coordinator", f"127.0.0.1:{port}"])
    assert code == 1 and f"cannot reach the coordinator at 127.0.0.1:{port}" in capsys.readouterr().err


def test_a_malformed_address_or_missing_token_file_is_bad_input(capsys, tmp_path):
    assert invoke(["status", "--coordinator", "localhost"])[0] == 2
    assert "'localhost' is not HOST:PORT" in capsys.readouterr().err
    assert invoke(["status", "--token-file", str(tmp_path / "missing")])[0] == 2
    assert "cannot read token file" in capsys.readouterr().err


def test_result_writes_the_result_folder(service, tmp_path):
    pytest.importorskip("taylorglo_tf.results")
    code, out = invoke(
        ["result", "exp-1", "--out", str(tmp_path / "out"), "--coordinator", service(ScriptedExperiments())]
    )
    assert code == 0 and "best fitness 0.8000" in out
    assert (tmp_path / "out" / "best_theta.json").is_file()
    assert (tmp_path / "out" / "candidates.csv").read_text().count("\n") == 9  # header + 8 candidates


@pytest.mark.parametrize("make_out", [lambda tmp: tmp / "a-file", lambda tmp: tmp / "a-file" / "below"])
def test_result_into_a_folder_that_cannot_be_made_is_an_error_naming_it(service, tmp_path, capsys, make_out):
    (tmp_path / "a-file").write_text("not a folder")
    out = make_out(tmp_path)
    code, _ = invoke(["result", "exp-1", "--out", str(out), "--coordinator", service(ScriptedExperiments())])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write the result folder {str(out)!r}" in err and "Traceback" not in err


class ScriptedFleet(ScriptedExperiments):
    """A coordinator with a fleet view: one active trainer, one lost, and exp-1's pace."""

    def GetFleet(self, request, context):
        return es.GetFleetResponse(
            trainers=[
                es.TrainerInfo(trainer_id="gpu-a", idle_s=1.2, leases_held=2, evaluations=40, candidate_steps_per_s=90),
                es.TrainerInfo(trainer_id="gpu-b\x1b[2J", idle_s=75, lost=True, evaluations=12, failures=3),
            ],
            experiments=[
                es.ExperimentPace(experiment_id="exp-1", candidates_per_s=0.5, remaining_candidates=5, eta_s=10)
            ],
        )


def test_trainers_lists_each_trainer_marking_the_lost_one_and_each_searchs_eta(service):
    code, out = invoke(["trainers", "--coordinator", service(ScriptedFleet())])
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "active" in rows["gpu-a"] and "1s ago" in rows["gpu-a"] and "90.0" in rows["gpu-a"]
    assert "LOST" in rows["gpu-b\\x1b[2J"] and "1m15s ago" in rows["gpu-b\\x1b[2J"]  # escaped, not raw
    assert "exp-1: 30.0 candidates/min, 5 left, ETA 10s" in out


def test_status_shows_the_pace_of_an_experiment_and_the_fleet_below_the_list(service):
    _, described = invoke(["status", "exp-1", "--coordinator", service(ScriptedFleet())])
    assert "pace:        30.0 candidates/min, 5 left, ETA 10s" in described
    _, listed = invoke(["status", "--coordinator", service(ScriptedFleet())])
    assert "trainers: 1 active, 1 lost" in listed and "gpu-a" in listed


def test_trainers_against_a_coordinator_without_the_fleet_view_says_so(service, capsys):
    code, _ = invoke(["trainers", "--coordinator", service(ScriptedExperiments())])
    assert code == 1
    assert "predates the fleet view" in capsys.readouterr().err


class EarlyStopped(ScriptedExperiments):
    """The scripted search with an early-stopping rule: in each generation, candidates 0 and 1 are
    stopped (at checkpoints 1 and 2 of 2, after 12 and 25 of the 50 steps); the result also holds
    a candidate waiting for its generation's decision."""

    def __init__(self, rule="successive_halving"):
        super().__init__()
        self.rule = rule

    def _ruled(self, experiment):
        experiment.spec.search.early_stopping = self.rule
        return experiment

    @staticmethod
    def _stop(candidate):
        at = candidate.index + 1
        candidate.status = types_pb2.CANDIDATE_STATUS_STOPPED
        candidate.stopped_at = at
        candidate.metrics.steps = (12, 25)[candidate.index]
        candidate.metrics.val_accuracy = (0.25, 0.5)[candidate.index]
        candidate.fitness = (at - 1 + candidate.metrics.val_accuracy) / 2 - 1

    def GetExperiment(self, request, context):
        return self._ruled(super().GetExperiment(request, context))

    def ListExperiments(self, request, context):
        listed = super().ListExperiments(request, context)
        self._ruled(listed.experiments[0])  # exp-0 stops nothing early
        return listed

    def WatchExperiment(self, request, context):
        for event in super().WatchExperiment(request, context):
            self._ruled(event.experiment)
            if event.kind == Event.KIND_CANDIDATE_FINISHED:
                event.candidate.generation = event.experiment.evaluations_done // 4 - (event.candidate.index == 3)
                if event.candidate.index < 2:
                    self._stop(event.candidate)
            yield event

    def GetResult(self, request, context):
        result = super().GetResult(request, context)
        self._ruled(result.experiment)
        for candidate in result.candidates:
            candidate.metrics.steps = 50
            if candidate.index < 2:
                self._stop(candidate)
        result.candidates[-1].status = types_pb2.CANDIDATE_STATUS_WAITING
        return result


def test_status_names_the_early_stopping_rule_and_counts_stopped_and_waiting_candidates(service):
    code, out = invoke(["status", "exp-1", "--coordinator", service(EarlyStopped())])
    assert code == 0
    assert "early stop:  successive_halving (deterministic)" in out
    assert "candidates:  3 succeeded, 4 stopped, 1 waiting" in out
    assert f"steps:       {4 * 50 + 2 * (12 + 25):,} trained" in out
    _, median = invoke(["status", "exp-1", "--coordinator", service(EarlyStopped("median"))])
    assert "early stop:  median (timing-dependent)" in median


def test_status_of_a_search_without_early_stopping_shows_no_rule_but_counts_its_candidates(service):
    code, out = invoke(["status", "exp-1", "--coordinator", service(ScriptedExperiments())])
    assert code == 0 and "early stop" not in out
    assert "candidates:  8 succeeded" in out and "steps:       0 trained" in out


def test_watch_prints_each_stopped_candidate_with_its_checkpoint_partial_accuracy_and_steps(service):
    code, out = invoke(["watch", "exp-1", "--coordinator", service(EarlyStopped("median"))])
    assert code == 0
    assert "early stopping: median (timing-dependent)" in out
    assert "generation 0 candidate 0 stopped at checkpoint 1: accuracy 0.2500 after 12 steps" in out
    assert "generation 1 candidate 1 stopped at checkpoint 2: accuracy 0.5000 after 25 steps" in out
    # the generation's mean counts the stopped candidates' negative scores; the line adds the rest's
    assert "generation 0: best 0.4000  mean 0.2000  stopped 2 (mean of the rest 0.3500)" in out
    assert "stopped 4" in out


def test_watch_without_early_stopping_prints_no_stopped_lines(service):
    _, out = invoke(["watch", "exp-1", "--coordinator", service(ScriptedExperiments())])
    assert "stopped" not in out and "early stopping" not in out


def test_the_status_list_shows_each_search_s_early_stopping_rule_only_when_one_has_a_rule(service):
    _, out = invoke(["status", "--coordinator", service(EarlyStopped())])
    assert "early stop" in out
    exp_1 = next(line for line in out.splitlines() if "exp-1" in line)
    exp_0 = next(line for line in out.splitlines() if "exp-0" in line)
    assert "successive_halving" in exp_1 and "none" in exp_0
    _, plain = invoke(["status", "--coordinator", service(ScriptedExperiments())])
    assert "early stop" not in plain
