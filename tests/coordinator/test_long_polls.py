"""LeaseCandidate long polls hold no thread: more trainers than server threads wait, and all are served."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from taylorglo_tf.coordinator.defaults import DEFAULT_MAX_WORKERS
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc

TRAINERS = DEFAULT_MAX_WORKERS + 88  # more waiting trainers than the server has threads


def waiting(server) -> int:
    """Lease calls waiting on the coordinator for work."""
    return len(server.scheduler._dispatcher.waiting)


def spec(population: int) -> types_pb2.ExperimentSpec:
    return types_pb2.ExperimentSpec(
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=1),
        search=types_pb2.SearchSpec(population=population, generations=2),
    )


def test_more_waiting_trainers_than_server_threads_are_all_served_and_clients_still_answered(tmp_path):
    server = serve(tmp_path / "c.db")
    threads_before = threading.active_count()
    # several connections, as from many trainer machines
    channels = [
        grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(8)
    ]
    try:
        workers = [ws_grpc.WorkerServiceStub(c) for c in channels]
        polls = [
            workers[i % len(workers)].LeaseCandidate.future(
                ws.LeaseCandidateRequest(trainer_id=f"trainer-{i}", wait_ms=30_000), timeout=60
            )
            for i in range(TRAINERS)
        ]
        deadline = time.monotonic() + 30
        while waiting(server) < TRAINERS:  # every poll is waiting on the server
            assert time.monotonic() < deadline, f"{waiting(server)} of {TRAINERS} polls arrived"
            time.sleep(0.1)
        assert threading.active_count() - threads_before < 100  # no thread per waiting trainer

        # A client is answered at once while they all wait.
        experiments = es_grpc.ExperimentServiceStub(channels[0])
        started = time.monotonic()
        exp = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(TRAINERS)), timeout=10)
        assert time.monotonic() - started < 5

        # The new generation goes to the waiting trainers: every one gets a distinct candidate.
        leases = [poll.result(timeout=30).lease for poll in polls]
        assert all(lease.experiment_id == exp.id for lease in leases)
        assert sorted(lease.index for lease in leases) == list(range(TRAINERS))
    finally:
        for channel in channels:
            channel.close()
        server.stop(grace=0)


def test_a_trainer_that_hangs_up_while_waiting_is_granted_nothing(tmp_path):
    server = serve(tmp_path / "c.db")
    try:
        with grpc.insecure_channel(server.address) as channel:
            worker = ws_grpc.WorkerServiceStub(channel)
            poll = worker.LeaseCandidate.future(ws.LeaseCandidateRequest(trainer_id="gone", wait_ms=30_000))
            deadline = time.monotonic() + 10
            while not waiting(server):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            poll.cancel()
            while waiting(server):  # the cancelled call withdrew its request
                assert time.monotonic() < deadline
                time.sleep(0.05)
            exp = es_grpc.ExperimentServiceStub(channel).SubmitExperiment(
                es.SubmitExperimentRequest(spec=spec(2)), timeout=10
            )
            candidates = server.scheduler.result(exp.id).candidates
            assert [c.status for c in candidates] == [types_pb2.CANDIDATE_STATUS_QUEUED] * 2
    finally:
        server.stop(grace=0)


def test_stopping_the_server_ends_waiting_polls_without_a_lease(tmp_path):
    server = serve(tmp_path / "c.db")
    with grpc.insecure_channel(server.address) as channel:
        poll = ws_grpc.WorkerServiceStub(channel).LeaseCandidate.future(
            ws.LeaseCandidateRequest(trainer_id="t", wait_ms=30_000), timeout=30
        )
        deadline = time.monotonic() + 10
        while not waiting(server):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        server.stop(grace=5)
        try:
            assert not poll.result(timeout=10).HasField("lease")
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert time.monotonic() - started < 5


@pytest.mark.slow
def test_two_thousand_trainers_are_granted_a_generation_and_all_their_reports_are_accepted(tmp_path):
    trainers = 2000  # more calls at once than grpc lets wait for the event loop by default (1,000)
    server = serve(tmp_path / "c.db")
    channels = [
        grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(8)
    ]
    try:
        workers = [ws_grpc.WorkerServiceStub(c) for c in channels]
        polls = [
            (
                f"trainer-{i}",
                workers[i % 8].LeaseCandidate.future(
                    ws.LeaseCandidateRequest(trainer_id=f"trainer-{i}", wait_ms=60_000), timeout=120
                ),
            )
            for i in range(trainers)
        ]
        es_grpc.ExperimentServiceStub(channels[0]).SubmitExperiment(
            es.SubmitExperimentRequest(spec=spec(trainers)), timeout=30
        )
        leases = [(trainer_id, poll.result(timeout=120).lease) for trainer_id, poll in polls]
        acks = [
            workers[i % 8].ReportResult.future(
                ws.ReportResultRequest(
                    lease_id=lease.lease_id, trainer_id=trainer_id, status=ws.EVALUATION_STATUS_OK, fitness=0.5
                ),
                timeout=120,
            )
            for i, (trainer_id, lease) in enumerate(leases)
        ]
        assert sum(ack.result().accepted for ack in acks) == trainers
    finally:
        for channel in channels:
            channel.close()
        server.stop(grace=0)
