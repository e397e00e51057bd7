"""Watching a running search: live TensorBoard, the fleet view (GetFleet) and Prometheus metrics.

The searches run a coordinator in this process (``serve``) and trainers as real
``taylorglo trainer --evaluator synthetic`` processes, so a trainer can be killed with
SIGKILL. The TensorBoard files are read with a small TFRecord reader of this module
(TensorBoard's own loaders import TensorFlow when it is installed).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from taylorglo_tf import connection
from taylorglo_tf import spec as spec_module
from taylorglo_tf.coordinator.fleet import Fleet
from taylorglo_tf.coordinator.live_tensorboard import run_name
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc, types_pb2

REPO = Path(__file__).resolve().parents[2]
RUNNING = types_pb2.EXPERIMENT_STATE_RUNNING


def read_events(path: Path) -> list[event_pb2.Event]:
    """Every complete record of a TFRecord event file (a record still being written is left out)."""
    data, events, at = path.read_bytes(), [], 0
    while at + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        end = at + 12 + length + 4
        if end > len(data):
            break
        events.append(event_pb2.Event.FromString(data[at + 12 : at + 12 + length]))
        at = end
    return events


def folder_events(folder: Path) -> list[event_pb2.Event]:
    return [e for f in sorted(folder.glob("events.out.tfevents.*")) for e in read_events(f)]


class Trainers:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, address: str, trainer_id: str, sleep_s: float) -> subprocess.Popen:
        log = open(self.workdir / f"{trainer_id}.log", "ab")  # noqa: SIM115 (the process writes it until it ends)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("TAYLORGLO_TOKEN", None)
        argv = [sys.executable, "-m", "taylorglo_tf", "trainer", "--coordinator", address]
        argv += ["--evaluator", "synthetic", "--synthetic-sleep", str(sleep_s), "--trainer-id", trainer_id]
        argv += ["--wait-ms", "500", "--grace", "0", "--log-level", "WARNING"]
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[trainer_id] = process
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.workdir.glob("*.log")))

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(10)


@pytest.fixture
def trainers(tmp_path):
    t = Trainers(tmp_path)
    yield t
    t.close()


@pytest.fixture
def coordinator(tmp_path):
    servers = []

    def start(**options):
        server = serve(str(tmp_path / "search.db"), **options)
        servers.append(server)
        channel = connection.connect(server.address)
        return server, experiment_service_pb2_grpc.ExperimentServiceStub(channel)

    yield start
    for server in servers:
        server.stop(grace=0)


def submit(stub, population: int, generations: int, name: str = "monitored") -> str:
    spec = spec_module.load_spec(
        {
            "name": name,
            "task": {"dataset": "digits", "model": "tiny", "steps": 10},
            "search": {"population": population, "generations": generations, "seed": 7},
        }
    )
    return stub.SubmitExperiment(es.SubmitExperimentRequest(spec=spec), timeout=10).id


def wait_until(predicate, timeout: float, what: str, trainers: Trainers, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{trainers.logs()}"
        time.sleep(interval)


def test_tensorboard_shows_finished_generations_while_the_search_still_runs(coordinator, trainers, tmp_path):
    """Scalars of each done generation and an HParams trial per finished candidate are on disk
    while the experiment is RUNNING (not only in the result folder at the end)."""
    log_dir = tmp_path / "tb"
    server, stub = coordinator(tensorboard_dir=log_dir, lease_ttl_s=10.0)
    experiment_id = submit(stub, population=4, generations=200)  # far more than the test waits for
    for name in ("trainer-a", "trainer-b"):
        trainers.start(server.address, name, sleep_s=0.05)
    get = lambda: stub.GetExperiment(es.GetExperimentRequest(experiment_id=experiment_id), timeout=5)  # noqa: E731
    wait_until(lambda: get().generation >= 2, 120, "two generations", trainers)
    run = log_dir / run_name(experiment_id)

    def generations_on_disk():
        steps = {e.step for e in folder_events(run) for v in e.summary.value if v.tag == "generation/best_fitness"}
        return steps >= {0, 1} and steps

    steps = wait_until(generations_on_disk, 10, "the generation scalars", trainers)
    trials = sorted(p for p in run.iterdir() if p.is_dir())
    assert get().state == RUNNING, "the files were read after the search ended"
    assert {0, 1} <= steps
    main_tags = {v.tag for e in folder_events(run) for v in e.summary.value}
    assert hparams_metadata.EXPERIMENT_TAG in main_tags
    assert "loss_shape/best" in main_tags  # matplotlib is installed here
    done = {f"g{g:04d}_c{i:03d}" for g in (0, 1) for i in range(4)}
    assert done <= {p.name for p in trials}
    trial = folder_events(run / "g0001_c002")
    tags = [v.tag for e in trial for v in e.summary.value]
    assert tags[0] == hparams_metadata.SESSION_START_INFO_TAG and tags[-1] == hparams_metadata.SESSION_END_INFO_TAG
    start = hparams_metadata.parse_session_start_info_plugin_data(
        trial[1].summary.value[0].metadata.plugin_data.content
    )
    assert len([k for k in start.hparams if k.startswith("theta_")]) == 8
    assert {"candidate/fitness", "candidate/val_loss", "candidate/steps", "candidate/status"} <= set(tags)
    stub.CancelExperiment(es.CancelExperimentRequest(experiment_id=experiment_id), timeout=5)


def test_a_trainer_killed_with_sigkill_shows_as_lost_and_its_candidate_goes_to_the_other(coordinator, trainers):
    server, stub = coordinator(lease_ttl_s=1.5)
    experiment_id = submit(stub, population=4, generations=2)
    doomed = trainers.start(server.address, "doomed", sleep_s=60.0)  # holds its lease until killed

    def fleet():
        return {t.trainer_id: t for t in stub.GetFleet(es.GetFleetRequest(), timeout=5).trainers}

    wait_until(lambda: fleet().get("doomed") and fleet()["doomed"].leases_held > 0, 60, "a lease", trainers)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    trainers.start(server.address, "survivor", sleep_s=0.02)
    get = lambda: stub.GetExperiment(es.GetExperimentRequest(experiment_id=experiment_id), timeout=5)  # noqa: E731
    wait_until(lambda: get().state == types_pb2.EXPERIMENT_STATE_SUCCEEDED, 120, "the search to finish", trainers)
    view = fleet()
    assert view["doomed"].lost and view["doomed"].leases_held == 0 and view["doomed"].evaluations == 0
    assert not view["survivor"].lost and view["survivor"].evaluations == 8
    result = stub.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=5)
    assert {c.trainer_id for c in result.candidates} == {"survivor"}
    assert any(c.attempts == 2 for c in result.candidates)  # the one the killed trainer held, leased again


def test_an_experiment_shows_its_rate_and_eta():
    now = [100.0]
    fleet = Fleet(lost_after_s=5.0, clock=lambda: now[0], window_s=60.0)
    assert fleet.pace("e", remaining=10).eta_s is None  # nothing measured yet
    for _ in range(4):
        now[0] += 1.0
        fleet.candidate_finished("e")
    pace = fleet.pace("e", remaining=10)
    assert pace.candidates_per_s == pytest.approx(4 / 3)
    assert pace.eta_s == pytest.approx(7.5)


def test_a_silent_trainer_is_lost_but_not_forgotten():
    now = [0.0]
    fleet = Fleet(lost_after_s=5.0, clock=lambda: now[0])
    fleet.leased("t1", ["lease-1"])
    fleet.heartbeat("t1", [("lease-1", 30)])
    (t1,) = fleet.trainers()
    assert not t1.lost and t1.leases_held == 1 and t1.steps_per_s > 0
    now[0] = 5.5
    (t1,) = fleet.trainers()
    assert t1.lost and t1.leases_held == 0 and t1.trainer_id == "t1"
    assert t1.steps_per_s == 0.0  # a lost trainer is not working, whatever it did before


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_metrics_are_off_by_default(coordinator):
    server, _ = coordinator()
    assert server.metrics_port is None


def test_metrics_parse_with_prometheus_own_parser_and_hold_counts_only(coordinator, trainers, tmp_path):
    token = "c" * 40
    server, _ = coordinator(metrics_listen="127.0.0.1:0", client_token=token, trainer_token="t" * 40)
    stub = experiment_service_pb2_grpc.ExperimentServiceStub(connection.connect(server.address, token=token))
    secret_name = "secret-name {}\\n"
    experiment_id = submit(stub, population=2, generations=1, name=secret_name)
    with pytest.raises(grpc.RpcError):  # an error counted by code
        stub.GetExperiment(es.GetExperimentRequest(experiment_id="missing"), timeout=5)
    # The status may reach the client a moment before the server's handler has counted it.
    deadline = time.monotonic() + 5
    while "taylorglo_rpc_errors_total{" not in (text := _scrape(server.metrics_port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["taylorglo_experiments_running"].samples[0].value == 1
    assert families["taylorglo_candidates_queued"].samples[0].value == 2
    assert families["taylorglo_leases_granted"].type == "counter"
    errors = [s for s in families["taylorglo_rpc_errors"].samples if s.name == "taylorglo_rpc_errors_total"]
    assert [(s.labels, s.value) for s in errors] == [({"method": "GetExperiment", "code": "NOT_FOUND"}, 1.0)]
    writes = families["taylorglo_storage_write_seconds"].samples
    assert any(s.labels.get("operation") == "insert_experiment" and s.name.endswith("_count") for s in writes)
    result = stub.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=5)
    for secret in (token, "t" * 40, experiment_id, "secret-name", *(f"{x:.6g}" for x in result.candidates[0].theta)):
        assert secret not in text


def test_metrics_listen_names_a_bad_address(tmp_path):
    with pytest.raises(ValueError, match="nonsense"):
        serve(str(tmp_path / "x.db"), metrics_listen="nonsense")


TF_FREE_WRITER = r"""
import sys, time
from taylorglo_tf import spec as spec_module
from taylorglo_tf.coordinator.live_tensorboard import LiveTensorBoard
from taylorglo_tf.rpc import experiment_service_pb2 as es, types_pb2

class Scheduler:  # the one method LiveTensorBoard uses
    def listen(self, callback):
        self.callback = callback

scheduler = Scheduler()
writer = LiveTensorBoard(sys.argv[1], scheduler)
spec = spec_module.load_spec({"task": {"dataset": "digits", "model": "tiny", "steps": 5}, "search": {"population": 2}})
experiment = types_pb2.Experiment(id="e/1", spec=spec)
theta = [0.1 * i for i in range(8)]
candidate = types_pb2.Candidate(theta=theta, status=types_pb2.CANDIDATE_STATUS_SUCCEEDED, fitness=0.5)
Event = es.ProgressEvent
scheduler.callback(Event(kind=Event.KIND_CANDIDATE_FINISHED, experiment=experiment, candidate=candidate))
summary = types_pb2.GenerationSummary(generation=0, best_fitness=0.5, best_theta=theta)
scheduler.callback(Event(kind=Event.KIND_GENERATION_FINISHED, experiment=experiment, generation=summary))
writer.close()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
"""


TENSORBOARD_READER = r"""
import sys
from pathlib import Path
from tensorboard.backend.event_processing import event_accumulator as ea
run = Path(sys.argv[1])
main = ea.EventAccumulator(str(run), size_guidance={ea.IMAGES: 0}); main.Reload()
print(sorted(main.PluginTagToContent("hparams")), main.Tags()["images"], len(main.Tags()["scalars"]))
[trial_dir] = [p for p in run.iterdir() if p.is_dir()]
trial = ea.EventAccumulator(str(trial_dir)); trial.Reload()
print(sorted(trial.PluginTagToContent("hparams")), len(trial.Tags()["scalars"]))
"""


def test_live_tensorboard_writes_without_importing_tensorflow(tmp_path):
    """The coordinator stays free of TensorFlow with --tensorboard-dir too (TensorFlow is installed here)."""
    done = subprocess.run(
        [sys.executable, "-c", TF_FREE_WRITER, str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    run = tmp_path / run_name("e/1")
    assert run.name == "e_1"
    tags = {v.tag for e in folder_events(run) for v in e.summary.value}
    assert {"generation/best_fitness", "loss_shape/best", hparams_metadata.EXPERIMENT_TAG} <= tags
    (image,) = [v.image for e in folder_events(run) for v in e.summary.value if v.tag == "loss_shape/best"]
    assert image.encoded_image_string.startswith(b"\x89PNG")
    # TensorBoard's own loader (it imports TensorFlow, so in a process of its own) sees each plugin's data
    read = subprocess.run(
        [sys.executable, "-c", TENSORBOARD_READER, str(run)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert read.returncode == 0, read.stderr[-3000:]
    assert read.stdout.strip().splitlines()[-2:] == [
        "['_hparams_/experiment'] ['loss_shape/best'] 6",
        "['_hparams_/session_end_info', '_hparams_/session_start_info'] 6",
    ]


def test_a_scrape_never_waits_for_the_schedulers_lock(coordinator):
    """While another thread holds the scheduler's lock (a long commit), /metrics still answers."""
    server, stub = coordinator(metrics_listen="127.0.0.1:0")
    submit(stub, population=3, generations=1)
    held, release = threading.Event(), threading.Event()

    def hold_the_lock():
        with server.scheduler._cond:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert held.wait(5)
        text = _scrape(server.metrics_port)  # urlopen's 5 s timeout: it would fail while the lock is held
    finally:
        release.set()
        holder.join()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["taylorglo_candidates_queued"].samples[0].value == 3


def test_the_coordinator_command_serves_no_metrics_and_writes_no_tensorboard_unless_asked():
    from taylorglo_tf import cli

    args = cli.build_parser().parse_args(["coordinator"])
    assert args.metrics_listen is None and args.tensorboard_dir is None


def test_failed_reports_count_against_their_trainer_and_by_status():
    fleet = Fleet(lost_after_s=60.0)
    fleet.leased("t1", ["l1", "l2", "l3"])
    fleet.reported("t1", "l1", "OK", steps=10)
    fleet.reported("t1", "l2", "ERROR")
    fleet.reported("t1", "l3", "DIVERGED", steps=4)  # a diverged loss is a result, not a trainer failure
    (t1,) = fleet.trainers()
    assert (t1.evaluations, t1.failures, t1.leases_held) == (3, 1, 0)
    assert fleet.leases_granted == 3
    assert dict(fleet.reports) == {"OK": 1, "ERROR": 1, "DIVERGED": 1}


def test_the_fleet_keeps_only_its_rate_window_and_forgets_a_trainer_lost_for_a_day():
    """Nobody may read the fleet for days: what it keeps must stay bounded anyway."""
    from taylorglo_tf.coordinator.defaults import FORGET_LOST_TRAINER_S

    now = [0.0]
    fleet = Fleet(lost_after_s=60.0, clock=lambda: now[0], window_s=10.0)
    for step in range(1, 1001):
        now[0] = float(step)
        fleet.heartbeat("busy", [("lease", step)])
        fleet.candidate_finished("e")
    assert len(fleet._trainers["busy"]._progress) <= 11 and len(fleet._finished["e"]) <= 11
    fleet.leased("gone", [])
    now[0] += FORGET_LOST_TRAINER_S + 1
    fleet.leased("busy", [])
    assert [t.trainer_id for t in fleet.trainers()] == ["busy"]


Event = es.ProgressEvent


class _Listening:
    """The one Scheduler method LiveTensorBoard uses."""

    def listen(self, callback):
        self.callback = callback


def _stopped_candidate(generation: int, index: int, at: int, accuracy: float, steps: int) -> types_pb2.Candidate:
    return types_pb2.Candidate(
        experiment_id="e1",
        generation=generation,
        index=index,
        theta=[0.1] * 8,
        status=types_pb2.CANDIDATE_STATUS_STOPPED,
        fitness=(at - 1 + accuracy) / 2 - 1,
        stopped_at=at,
        metrics=types_pb2.EvaluationMetrics(val_accuracy=accuracy, val_loss=1.5, steps=steps),
        checkpoints=[types_pb2.CheckpointValue(index=i, steps=steps, val_accuracy=accuracy) for i in range(at)],
    )


def _early_stopped_generation(tmp_path: Path) -> Path:
    """A live run of one generation of four: two trained in full (0.9, 0.7; 40 steps), two stopped
    (at checkpoint 1 with 0.3 after 10 steps, at checkpoint 2 with 0.5 after 20)."""
    from taylorglo_tf.coordinator.live_tensorboard import LiveTensorBoard

    scheduler = _Listening()
    writer = LiveTensorBoard(tmp_path, scheduler)
    writer._images = False  # no loss shapes: not what these tests look at
    spec = spec_module.load_spec(
        {
            "task": {"dataset": "digits", "model": "tiny", "steps": 40},
            "search": {"population": 4, "early_stopping": "successive_halving"},
        }
    )
    experiment = types_pb2.Experiment(id="e1", spec=spec, best_fitness=0.9)
    trained = [
        types_pb2.Candidate(
            generation=0,
            index=i,
            theta=[0.1] * 8,
            status=types_pb2.CANDIDATE_STATUS_SUCCEEDED,
            fitness=value,
            metrics=types_pb2.EvaluationMetrics(val_accuracy=value, val_loss=0.4, steps=40),
        )
        for i, value in ((0, 0.9), (1, 0.7))
    ]
    stopped = [_stopped_candidate(0, 2, 1, 0.3, 10), _stopped_candidate(0, 3, 2, 0.5, 20)]
    for candidate in trained + stopped:
        scheduler.callback(Event(kind=Event.KIND_CANDIDATE_FINISHED, experiment=experiment, candidate=candidate))
    fitness = [c.fitness for c in trained + stopped]
    full = [c.fitness for c in trained]  # the coordinator's mean leaves the stopped out
    summary = types_pb2.GenerationSummary(
        generation=0, best_fitness=max(fitness), mean_fitness=sum(full) / len(full), best_theta=[0.1] * 8
    )
    scheduler.callback(Event(kind=Event.KIND_GENERATION_FINISHED, experiment=experiment, generation=summary))
    writer.close()
    return tmp_path / run_name("e1")


def _trial(run: Path, folder: str) -> tuple[dict, dict[str, float], int]:
    """(the trial's hyperparameters, its metrics, its end status) as written."""
    events = folder_events(run / folder)
    hparams, metrics, status = {}, {}, None
    for event in events:
        for value in event.summary.value:
            content = value.metadata.plugin_data.content
            if value.tag == hparams_metadata.SESSION_START_INFO_TAG:
                start = hparams_metadata.parse_session_start_info_plugin_data(content)
                hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
            elif value.tag == hparams_metadata.SESSION_END_INFO_TAG:
                status = hparams_metadata.parse_session_end_info_plugin_data(content).status
            elif value.tag.startswith("candidate/"):
                metrics[value.tag] = value.simple_value
    return hparams, metrics, status


def test_a_stopped_candidate_s_trial_has_status_stopped_and_its_partial_accuracy_and_steps(tmp_path):
    from tensorboard.plugins.hparams import api_pb2

    run = _early_stopped_generation(tmp_path)
    hparams, metrics, end = _trial(run, "g0000_c003")
    assert hparams["status"] == "stopped"
    assert metrics["candidate/val_accuracy"] == pytest.approx(0.5)
    assert metrics["candidate/steps"] == 20 and metrics["candidate/stopped_at"] == 2
    assert metrics["candidate/status"] == types_pb2.CANDIDATE_STATUS_STOPPED
    assert metrics["candidate/fitness"] == pytest.approx(-0.25)
    assert end == api_pb2.STATUS_SUCCESS  # stopped by the search's choice, not a failure
    hparams, metrics, _ = _trial(run, "g0000_c000")
    assert hparams["status"] == "succeeded" and metrics["candidate/stopped_at"] == 0
    (experiment,) = [
        hparams_metadata.parse_experiment_plugin_data(v.metadata.plugin_data.content)
        for e in folder_events(run)
        for v in e.summary.value
        if v.tag == hparams_metadata.EXPERIMENT_TAG
    ]
    status = next(info for info in experiment.hparam_infos if info.name == "status")
    assert "stopped" in [v.string_value for v in status.domain_discrete.values]
    assert {"candidate/val_accuracy", "candidate/stopped_at"} <= {m.name.tag for m in experiment.metric_infos}


def test_generation_scalars_count_stopped_candidates_and_steps_and_the_best_leaves_them_out(
    tmp_path,
):
    run = _early_stopped_generation(tmp_path)
    scalars = {v.tag: v.simple_value for e in folder_events(run) for v in e.summary.value if e.step == 0}
    assert scalars["generation/stopped"] == 2
    assert scalars["generation/training_steps"] == 40 + 40 + 10 + 20
    assert scalars["generation/best_fitness"] == pytest.approx(0.9)
    assert "generation/trained_mean_fitness" not in scalars  # mean_fitness already leaves the stopped out


def test_the_fleet_counts_a_stopped_evaluation_by_its_status_not_as_a_trainer_failure():
    fleet = Fleet(lost_after_s=60.0)
    fleet.leased("t1", ["l1", "l2"])
    fleet.reported("t1", "l1", "STOPPED", steps=10)
    fleet.reported("t1", "l2", "OK", steps=40)
    (t1,) = fleet.trainers()
    assert (t1.evaluations, t1.failures) == (2, 0)
    assert dict(fleet.reports) == {"STOPPED": 1, "OK": 1}
    from prometheus_client import CollectorRegistry, generate_latest

    from taylorglo_tf.coordinator.metrics import _Snapshot

    class Idle:  # what a scrape reads of the scheduler
        expired_leases = 0

        def load(self):
            return 0, 0

    registry = CollectorRegistry()
    registry.register(_Snapshot(fleet, Idle()))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    reports = {s.labels["status"]: s.value for s in families["taylorglo_reports"].samples if s.name.endswith("_total")}
    assert reports == {"OK": 1, "STOPPED": 1}
