"""A trainer is given, and keeps, only the leases it can serve.

A trainer inside a user's script names its experiment in every lease call; a
generic trainer names none and is never granted an experiment whose model is a
script's. Should a coordinator grant one anyway (one older than
``LeaseCandidateRequest.experiment_id`` ignores the field), the trainer gives
it straight back, which costs the candidate no attempt.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc

from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import types_pb2, worker_service_pb2, worker_service_pb2_grpc
from taylorglo_tf.trainer.synthetic import SyntheticEvaluator
from taylorglo_tf.trainer.worker import CANNOT_SERVE, Backoff, Worker
from tests.helpers.scheduling import make_spec


def script_spec():
    spec = make_spec(population=4, generations=1)
    spec.task.model = spec.task.dataset = "script:wine"
    return spec


class OlderCoordinator(worker_service_pb2_grpc.WorkerServiceServicer):
    """Grants one lease of a script's experiment to any caller, as a coordinator that predates the filter."""

    def __init__(self, experiment_id: str = "exp-script", model: str = "script:wine"):
        self.granted = threading.Event()
        self.returned: list[tuple[str, str]] = []
        self.requests: list[worker_service_pb2.LeaseCandidateRequest] = []
        self._lease = worker_service_pb2.Lease(
            lease_id="lease-0",
            experiment_id=experiment_id,
            theta=[0.0] * 8,
            attempt=1,
            ttl_s=30.0,
            task=types_pb2.TaskSpec(dataset=model, model=model, steps=10),
        )

    def LeaseCandidate(self, request, context):
        self.requests.append(request)
        if self.granted.is_set():
            time.sleep(request.wait_ms / 1000)
            return worker_service_pb2.LeaseCandidateResponse()
        self.granted.set()
        return worker_service_pb2.LeaseCandidateResponse(lease=self._lease, leases=[self._lease])

    def ReturnLease(self, request, context):
        self.returned.append((request.lease_id, request.reason))
        return worker_service_pb2.ReturnLeaseResponse(returned=True)


def _run_until(worker: Worker, condition, timeout_s: float = 20.0) -> None:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)
    finally:
        worker.request_stop(0.0)
        thread.join(10)


def _fail_if_called(lease, heartbeat):
    raise AssertionError(f"evaluated lease {lease.lease_id} it cannot serve")


def _older_coordinator(servicer):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{port}")


def test_a_generic_trainer_returns_a_script_lease_an_older_coordinator_grants_it():
    servicer = OlderCoordinator()
    server, channel = _older_coordinator(servicer)
    try:
        worker = Worker(channel, _fail_if_called, "generic", wait_ms=100, backoff=Backoff(0.01, 0.05))
        _run_until(worker, lambda: servicer.returned)
        assert servicer.returned[0][0] == "lease-0"
        assert servicer.returned[0][1].startswith(CANNOT_SERVE) and "'script:wine'" in servicer.returned[0][1]
        assert worker.reported == 0
    finally:
        server.stop(0)


def test_a_script_trainer_returns_a_lease_of_another_experiment():
    servicer = OlderCoordinator(experiment_id="someone-elses", model="tiny")
    server, channel = _older_coordinator(servicer)
    try:
        worker = Worker(channel, _fail_if_called, "mine", wait_ms=100, experiment_id="my-experiment")
        _run_until(worker, lambda: servicer.returned)
        assert servicer.requests[0].experiment_id == "my-experiment"
        assert "someone-elses" in servicer.returned[0][1] and worker.reported == 0
    finally:
        server.stop(0)


def test_a_script_trainer_trains_its_experiment_while_a_generic_one_waits_idle(tmp_path):
    """Against the real coordinator: the script's experiment is trained only by the trainer naming it."""
    server = serve(tmp_path / "c.db", "127.0.0.1:0")
    try:
        experiment = server.scheduler.submit(script_spec())
        generic_calls: list[int] = []

        def generic_evaluate(lease, heartbeat):
            generic_calls.append(1)
            raise AssertionError("a generic trainer was granted a script's candidate")

        with grpc.insecure_channel(server.address) as channel:
            generic = Worker(channel, generic_evaluate, "generic", wait_ms=200)
            generic_thread = threading.Thread(target=generic.run, daemon=True)
            generic_thread.start()
            mine = Worker(
                channel, SyntheticEvaluator(), "in-script", wait_ms=200, max_reports=4, experiment_id=experiment.id
            )
            assert mine.run() == 4
            generic.request_stop(0.0)
            generic_thread.join(10)
        assert server.scheduler.get(experiment.id).state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
        assert generic_calls == [] and generic.returned == 0
    finally:
        server.stop(0)
