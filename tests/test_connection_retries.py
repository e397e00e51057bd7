"""The channel's retry policy: idempotent calls survive a few UNAVAILABLE answers, others are sent once.

A scripted coordinator answers the first N calls of each method UNAVAILABLE, then
succeeds; the client is a channel from :func:`taylorglo_tf.connection.connect`.
"""

import json
import socket
import threading
import time
from concurrent import futures

import grpc
import pytest

from taylorglo_tf import connection
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc


class Flaky:
    """Answers the first ``failures`` calls of every method UNAVAILABLE; counts calls per method."""

    def __init__(self, failures):
        self.failures = failures
        self.calls = {}
        self._lock = threading.Lock()

    def attempt(self, method, context):
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            failing = self.calls[method] <= self.failures
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")


class FlakyExperiments(es_grpc.ExperimentServiceServicer):
    def __init__(self, flaky):
        self.flaky = flaky

    def GetExperiment(self, request, context):
        self.flaky.attempt("GetExperiment", context)
        return types_pb2.Experiment(id=request.experiment_id)

    def SubmitExperiment(self, request, context):
        self.flaky.attempt("SubmitExperiment", context)
        return types_pb2.Experiment(id="new")


class FlakyWorkers(ws_grpc.WorkerServiceServicer):
    def __init__(self, flaky):
        self.flaky = flaky

    def Heartbeat(self, request, context):
        self.flaky.attempt("Heartbeat", context)
        return ws.HeartbeatResponse(keep_going=True, ttl_s=30)

    def LeaseCandidate(self, request, context):
        self.flaky.attempt("LeaseCandidate", context)
        return ws.LeaseCandidateResponse()


def start_server(flaky, port=0):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    es_grpc.add_ExperimentServiceServicer_to_server(FlakyExperiments(flaky), server)
    ws_grpc.add_WorkerServiceServicer_to_server(FlakyWorkers(flaky), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


@pytest.fixture
def flaky_coordinator():
    servers = []

    def start(failures):
        flaky = Flaky(failures)
        server, port = start_server(flaky)
        servers.append(server)
        return flaky, connection.connect(f"127.0.0.1:{port}", token="secret-token-0123456789")

    yield start
    for server in servers:
        server.stop(0)


def test_an_idempotent_call_answered_unavailable_three_times_succeeds_on_the_fourth_attempt(flaky_coordinator):
    flaky, channel = flaky_coordinator(failures=3)
    experiment = es_grpc.ExperimentServiceStub(channel).GetExperiment(
        es.GetExperimentRequest(experiment_id="e"), timeout=10
    )
    assert experiment.id == "e" and flaky.calls["GetExperiment"] == 4


def test_a_trainer_call_answered_unavailable_three_times_succeeds_on_the_fourth_attempt(flaky_coordinator):
    flaky, channel = flaky_coordinator(failures=3)
    beat = ws_grpc.WorkerServiceStub(channel).Heartbeat(ws.HeartbeatRequest(lease_id="l", trainer_id="t"), timeout=10)
    assert beat.keep_going and flaky.calls["Heartbeat"] == 4


def test_a_channel_whose_calls_keep_failing_stops_retrying_them(flaky_coordinator):
    flaky, channel = flaky_coordinator(failures=100)
    stub = es_grpc.ExperimentServiceStub(channel)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            stub.GetExperiment(es.GetExperimentRequest(experiment_id="e"), timeout=10)
    # gRPC's retry throttling: 5 + 1 + 1 attempts, not 15; a coordinator in trouble is not sent more work
    assert flaky.calls["GetExperiment"] == 7


def test_the_retries_give_up_after_five_attempts_with_the_last_error(flaky_coordinator):
    flaky, channel = flaky_coordinator(failures=100)
    with pytest.raises(grpc.RpcError) as raised:
        es_grpc.ExperimentServiceStub(channel).GetExperiment(es.GetExperimentRequest(experiment_id="e"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and raised.value.details() == "scripted outage"
    assert flaky.calls["GetExperiment"] == 5  # a long outage is the caller's to wait out (taylorglo_tf.retry)


@pytest.mark.parametrize("call", ["SubmitExperiment", "LeaseCandidate"])
def test_a_call_that_is_not_idempotent_is_sent_once(flaky_coordinator, call):
    flaky, channel = flaky_coordinator(failures=1)
    send = {
        "SubmitExperiment": lambda: es_grpc.ExperimentServiceStub(channel).SubmitExperiment(
            es.SubmitExperimentRequest(), timeout=10
        ),
        "LeaseCandidate": lambda: ws_grpc.WorkerServiceStub(channel).LeaseCandidate(
            ws.LeaseCandidateRequest(trainer_id="t"), timeout=10
        ),
    }[call]
    with pytest.raises(grpc.RpcError) as raised:
        send()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and flaky.calls[call] == 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_trainer_call_waits_for_a_coordinator_that_comes_up_within_its_deadline():
    port = _free_port()
    channel = connection.connect(f"127.0.0.1:{port}")
    started = time.monotonic()
    answer = futures.ThreadPoolExecutor(1).submit(
        ws_grpc.WorkerServiceStub(channel).Heartbeat, ws.HeartbeatRequest(lease_id="l", trainer_id="t"), timeout=20
    )
    time.sleep(1.0)  # nothing listens yet: without waiting for ready the call would have failed by now
    assert not answer.done()
    server, _ = start_server(Flaky(failures=0), port)
    try:
        assert answer.result(timeout=20).keep_going
        assert time.monotonic() - started >= 1.0
    finally:
        server.stop(0)


def test_a_client_command_call_fails_at_once_when_nothing_listens():
    channel = connection.connect(f"127.0.0.1:{_free_port()}")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        es_grpc.ExperimentServiceStub(channel).GetExperiment(es.GetExperimentRequest(experiment_id="e"), timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 10  # a few quick retries, not the 30 s deadline


def test_the_service_config_names_only_methods_the_services_have():
    config = json.loads(connection.SERVICE_CONFIG)
    services = {
        s.full_name: s
        for s in (es.DESCRIPTOR.services_by_name["ExperimentService"], ws.DESCRIPTOR.services_by_name["WorkerService"])
    }
    for method_config in config["methodConfig"]:
        for name in method_config["name"]:
            assert name["method"] in services[name["service"]].methods_by_name, name
