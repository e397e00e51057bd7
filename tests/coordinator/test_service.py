"""The coordinator over gRPC, in process on 127.0.0.1: services, errors, health, reflection, restart."""

import subprocess
import sys
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.grpc_client import Client, spec_proto

SPEC = {"task": {"dataset": "digits", "model": "tiny", "steps": 10}, "search": {"population": 4, "generations": 2}}


@pytest.fixture
def coordinator(tmp_path):
    server = serve(tmp_path / "c.db", "127.0.0.1:0", lease_ttl_s=30)
    yield server
    server.stop(grace=0)


@pytest.fixture
def client(coordinator):
    return Client(coordinator.address)


def test_a_search_over_grpc_records_every_candidate_and_the_best(client):
    exp = client.submit()
    assert exp.state == types_pb2.EXPERIMENT_STATE_RUNNING and exp.evaluations_total == 8
    assert client.train() == 8
    result = client.result(exp.id)
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
    assert len(result.candidates) == 8 and len(result.generations) == 2
    best = max(result.candidates, key=lambda c: c.fitness)
    assert result.best_fitness == best.fitness and list(result.best_theta) == list(best.theta)
    assert all(c.metrics.steps == 10 and c.trainer_id == "t" for c in result.candidates)
    assert all(c.HasField("finish_time") for c in result.candidates)


def test_leases_carry_the_task_and_loss_of_their_experiment(client):
    exp = client.submit()
    lease = client.worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t"), timeout=5).lease
    assert lease.experiment_id == exp.id and lease.attempt == 1 and lease.ttl_s == 30
    assert lease.task.dataset == "digits" and lease.task.steps == 10 and lease.task.train_fraction == 1.0
    assert list(lease.loss.inputs) == ["x", "y"] and lease.loss.order == 3 and len(lease.theta) == 8
    beat = client.worker.Heartbeat(ws.HeartbeatRequest(lease_id=lease.lease_id, trainer_id="t", steps_done=3))
    assert beat.keep_going and beat.ttl_s == 30
    assert client.worker.ReturnLease(ws.ReturnLeaseRequest(lease_id=lease.lease_id, trainer_id="t")).returned


def test_a_search_seed_of_zero_is_kept_and_a_zero_sigma0_is_invalid_argument_naming_it(client):
    exp = client.submit(seed=0)
    assert exp.spec.search.seed == 0 and exp.spec.search.HasField("seed")
    seeded_1 = client.submit(seed=1)
    theta = {e: client.result(e).candidates[0].theta for e in (exp.id, seeded_1.id)}
    assert list(theta[exp.id]) != list(theta[seeded_1.id])  # seed 0 is its own search
    with pytest.raises(grpc.RpcError) as err:
        client.submit(sigma0=0.0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("spec.search.sigma0: 0.0 ")


def test_list_get_and_cancel(client):
    first, second = client.submit(), client.submit()
    listed = client.experiments.ListExperiments(es.ListExperimentsRequest()).experiments
    assert [e.id for e in listed] == [second.id, first.id]  # newest first
    cancelled = client.experiments.CancelExperiment(es.CancelExperimentRequest(experiment_id=first.id))
    assert cancelled.state == types_pb2.EXPERIMENT_STATE_CANCELLED
    got = client.experiments.GetExperiment(es.GetExperimentRequest(experiment_id=first.id))
    assert got.state == types_pb2.EXPERIMENT_STATE_CANCELLED
    with pytest.raises(grpc.RpcError) as err:
        client.experiments.CancelExperiment(es.CancelExperimentRequest(experiment_id=first.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("call", ["GetExperiment", "GetResult", "CancelExperiment"])
def test_an_unknown_experiment_is_not_found(client, call):
    request_type = {
        "GetExperiment": es.GetExperimentRequest,
        "GetResult": es.GetResultRequest,
        "CancelExperiment": es.CancelExperimentRequest,
    }[call]
    with pytest.raises(grpc.RpcError) as err:
        getattr(client.experiments, call)(request_type(experiment_id="no-such-id"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "no-such-id" in err.value.details()


def test_watch_streams_progress_until_the_experiment_finishes(client):
    exp = client.submit()
    stream = client.experiments.WatchExperiment(es.WatchExperimentRequest(experiment_id=exp.id), timeout=30)
    first = next(stream)
    assert first.kind == es.ProgressEvent.KIND_SNAPSHOT and first.experiment.id == exp.id
    trainer = threading.Thread(target=client.train)
    trainer.start()
    rest = list(stream)  # ends by itself after the final event
    trainer.join(10)
    kinds = [e.kind for e in rest]
    assert kinds.count(es.ProgressEvent.KIND_CANDIDATE_FINISHED) == 8
    assert kinds.count(es.ProgressEvent.KIND_GENERATION_FINISHED) == 2
    assert kinds[-1] == es.ProgressEvent.KIND_EXPERIMENT_FINISHED
    assert rest[-1].experiment.evaluations_done == 8


def test_a_watch_ends_when_the_experiment_is_cancelled(client):
    exp = client.submit()
    stream = client.experiments.WatchExperiment(es.WatchExperimentRequest(experiment_id=exp.id), timeout=30)
    next(stream)
    client.experiments.CancelExperiment(es.CancelExperimentRequest(experiment_id=exp.id))
    events = list(stream)
    assert [e.kind for e in events] == [es.ProgressEvent.KIND_EXPERIMENT_FINISHED]
    assert events[0].experiment.state == types_pb2.EXPERIMENT_STATE_CANCELLED


def test_duplicate_reports_are_acknowledged_but_not_accepted(client):
    client.submit()
    lease = client.worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t")).lease
    request = ws.ReportResultRequest(
        lease_id=lease.lease_id, trainer_id="t", status=ws.EVALUATION_STATUS_OK, fitness=0.5
    )
    assert client.worker.ReportResult(request).accepted
    again = client.worker.ReportResult(request)
    assert not again.accepted and "final result" in again.reason


def test_the_health_service_reports_serving_then_not_serving_after_stop(tmp_path):
    server = serve(tmp_path / "h.db")
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
    for service in ("", "taylorglo.v1.WorkerService", "taylorglo.v1.ExperimentService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    server.stop(grace=1)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_server_reflection_lists_the_services(coordinator):
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(coordinator.address))
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for s in next(responses).list_services_response.service}
    assert {"taylorglo.v1.ExperimentService", "taylorglo.v1.WorkerService", "grpc.health.v1.Health"} <= names


def test_restart_on_the_same_database_continues_the_uninterrupted_trajectory(tmp_path):
    def trajectory(result):
        return (
            [(c.generation, c.index, tuple(c.theta), c.fitness) for c in result.candidates],
            [(g.generation, tuple(g.mean_theta), g.sigma) for g in result.generations],
        )

    reference = serve(tmp_path / "ref.db")
    try:
        ref_client = Client(reference.address)
        ref = ref_client.submit(generations=3, seed=11)
        ref_client.train()
        expected = trajectory(ref_client.result(ref.id))
    finally:
        reference.stop(grace=0)

    first = serve(tmp_path / "run.db")
    c1 = Client(first.address)
    exp = c1.submit(generations=3, seed=11)
    c1.train(limit=6)  # generation 0 and half of generation 1
    first.stop(grace=0)

    second = serve(tmp_path / "run.db")
    try:
        c2 = Client(second.address)
        assert c2.experiments.GetExperiment(es.GetExperimentRequest(experiment_id=exp.id)).evaluations_done == 6
        assert c2.train() == 6
        result = c2.result(exp.id)
        assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
        assert trajectory(result) == expected
    finally:
        second.stop(grace=0)


def test_a_second_coordinator_cannot_take_a_port_in_use(coordinator, tmp_path):
    with pytest.raises(OSError, match=str(coordinator.port)):
        serve(tmp_path / "other.db", f"127.0.0.1:{coordinator.port}")


def test_the_coordinator_imports_without_tensorflow():
    code = (
        "import sys\nimport taylorglo_tf.coordinator.server, taylorglo_tf.commands.coordinator\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_stops_the_coordinator_command_cleanly_and_keeps_leases(tmp_path):
    import os
    import signal
    import time

    from taylorglo_tf.coordinator.storage import SqliteStorage

    port = _free_port()
    db = tmp_path / "term.db"
    env = dict(os.environ, TAYLORGLO_TRAINER_TOKEN="", TAYLORGLO_CLIENT_TOKEN="")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taylorglo_tf",
            "coordinator",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            str(db),
            "--grace",
            "1",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        client = Client(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                exp = client.submit()
                break
            except grpc.RpcError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read().decode()
                time.sleep(0.2)
        lease = client.worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t"), timeout=10).lease
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stdout.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
    storage = SqliteStorage(db)
    try:
        leased = storage.load_candidates(exp.id, 0)[lease.index]
        assert leased.status == types_pb2.CANDIDATE_STATUS_LEASED and leased.lease_id == lease.lease_id
        assert storage.find_lease(lease.lease_id).trainer_id == "t"
    finally:
        storage.close()


def test_watching_an_unknown_experiment_is_not_found(client):
    stream = client.experiments.WatchExperiment(es.WatchExperimentRequest(experiment_id="missing"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_unexpected_failure_is_internal_not_unknown(coordinator, client, monkeypatch):
    def broken():
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(coordinator.scheduler, "records", broken)
    with pytest.raises(grpc.RpcError) as err:
        client.experiments.ListExperiments(es.ListExperimentsRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL and "ZeroDivisionError" in err.value.details()


def test_watch_streams_end_when_the_coordinator_stops(tmp_path):
    server = serve(tmp_path / "w.db")
    client = Client(server.address)
    exp = client.submit()
    stream = client.experiments.WatchExperiment(es.WatchExperimentRequest(experiment_id=exp.id), timeout=30)
    next(stream)
    stopper = threading.Timer(0.3, server.stop, kwargs={"grace": 2})
    stopper.start()
    try:
        events = list(stream)  # ends instead of hanging until the timeout
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        events = []
    stopper.join()
    assert all(e.kind != es.ProgressEvent.KIND_EXPERIMENT_FINISHED for e in events)


def test_the_coordinator_command_refuses_a_negative_grace_naming_it(capsys):
    from taylorglo_tf import cli

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["coordinator", "--grace", "-1"])
    assert "--grace: must be >= 0, got -1" in capsys.readouterr().err


def test_a_spec_that_would_cost_too_much_is_refused_naming_the_values(tmp_path):
    server = serve(tmp_path / "c.db")
    try:
        client = Client(server.address)
        spec = spec_proto(population=10_000)
        spec.loss.order = 10
        spec.loss.inputs.extend(["x", "y", "t"])
        with pytest.raises(grpc.RpcError) as raised:
            client.experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec), timeout=10)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "spec.search.population" in raised.value.details() and "2,230,000" in raised.value.details()
        assert client.experiments.ListExperiments(es.ListExperimentsRequest(), timeout=10).experiments == []
    finally:
        server.stop(grace=0)
