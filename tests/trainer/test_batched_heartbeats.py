"""Heartbeats for every lease of a trainer in one call, against a real coordinator: the batched form
of HeartbeatRequest (``leases``), the single form that older trainers send, and the trainer's use of it."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from taylorglo_tf.connection import connect
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.limits import MAX_LEASE_CANDIDATES
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc
from taylorglo_tf.trainer.worker import Backoff, Outcome, Worker


@pytest.fixture
def coordinator(tmp_path):
    server = serve(tmp_path / "c.db", "127.0.0.1:0", lease_ttl_s=1.0)
    channel = connect(server.address)
    yield server, es_grpc.ExperimentServiceStub(channel), ws_grpc.WorkerServiceStub(channel), channel
    channel.close()
    server.stop(grace=0)


def submit(experiments, population: int) -> str:
    spec = types_pb2.ExperimentSpec(
        name="beats",
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=30),
        search=types_pb2.SearchSpec(population=population, generations=1, seed=1),
    )
    return experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec), timeout=10).id


def lease(workers, n: int, trainer_id: str = "t") -> list[ws.Lease]:
    request = ws.LeaseCandidateRequest(trainer_id=trainer_id, max_candidates=n)
    return list(workers.LeaseCandidate(request, timeout=10).leases)


def progress(*pairs) -> list[ws.LeaseProgress]:
    return [ws.LeaseProgress(lease_id=lease_id, steps_done=steps) for lease_id, steps in pairs]


def test_one_call_extends_every_lease_and_answers_each_in_the_request_order(coordinator):
    _, experiments, workers, _ = coordinator
    submit(experiments, 4)
    leases = lease(workers, 3)
    ids = [held.lease_id for held in leases]
    request = ws.HeartbeatRequest(trainer_id="t", leases=progress(*zip(reversed(ids), (5, 6, 7))))
    answer = workers.Heartbeat(request, timeout=10)
    assert [a.lease_id for a in answer.leases] == list(reversed(ids))
    assert all(a.keep_going and a.ttl_s == 1.0 for a in answer.leases)
    # the leases outlive their 1 s TTL only because they were heartbeated
    for _ in range(4):
        time.sleep(0.4)
        answer = workers.Heartbeat(request, timeout=10)
    assert all(a.keep_going for a in answer.leases)


def test_a_lease_that_is_not_the_trainers_is_answered_keep_going_false_and_the_others_go_on(coordinator):
    _, experiments, workers, _ = coordinator
    submit(experiments, 4)
    mine = lease(workers, 2, "t")
    theirs = lease(workers, 1, "other")
    request = ws.HeartbeatRequest(
        trainer_id="t", leases=progress((mine[0].lease_id, 1), (theirs[0].lease_id, 1), ("no-such-lease", 0))
    )
    answer = workers.Heartbeat(request, timeout=10)
    assert [(a.keep_going, a.ttl_s) for a in answer.leases] == [(True, 1.0), (False, 0.0), (False, 0.0)]


def test_the_single_form_of_older_trainers_still_extends_its_lease(coordinator):
    _, experiments, workers, _ = coordinator
    submit(experiments, 2)
    (held,) = lease(workers, 1)
    answer = workers.Heartbeat(ws.HeartbeatRequest(lease_id=held.lease_id, trainer_id="t", steps_done=3), timeout=10)
    assert answer.keep_going and answer.ttl_s == 1.0 and not answer.leases


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ws.HeartbeatRequest(trainer_id="t", leases=progress(("a", 1), ("a", 2))), "leases: names a lease more"),
        (ws.HeartbeatRequest(trainer_id="t", leases=progress(("a", 1), ("b", -1))), "leases[1].steps_done: -1 is"),
        (ws.HeartbeatRequest(trainer_id="t", leases=progress(("", 1))), "leases[0].lease_id: is required"),
        (ws.HeartbeatRequest(trainer_id="t", lease_id="a", leases=progress(("b", 1))), "lease_id: must be unset"),
        (ws.HeartbeatRequest(trainer_id="t", lease_id="a", steps_done=-2), "steps_done: -2 is negative"),
        (
            ws.HeartbeatRequest(
                trainer_id="t", leases=progress(*((f"l{i}", 0) for i in range(MAX_LEASE_CANDIDATES + 1)))
            ),
            f"leases: holds {MAX_LEASE_CANDIDATES + 1} leases; at most {MAX_LEASE_CANDIDATES}",
        ),
    ],
    ids=["twice", "negative-steps", "no-id", "both-forms", "single-negative", "too-many"],
)
def test_a_malformed_heartbeat_is_invalid_argument_naming_the_field(coordinator, request_, field):
    _, _, workers, _ = coordinator
    with pytest.raises(grpc.RpcError) as error:
        workers.Heartbeat(request_, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(field)


class HeartbeatCalls(grpc.UnaryUnaryClientInterceptor):
    """Records the leases and progress of every Heartbeat call a trainer sends."""

    def __init__(self):
        self.calls: list[list[tuple[str, int]]] = []

    def intercept_unary_unary(self, continuation, details, request):
        if details.method.endswith("/Heartbeat"):
            self.calls.append([(p.lease_id, p.steps_done) for p in request.leases])
        return continuation(details, request)


def test_a_trainer_heartbeats_its_whole_batch_in_one_call_per_interval_with_each_candidates_progress(coordinator):
    _, experiments, _, channel = coordinator
    submit(experiments, 4)
    calls = HeartbeatCalls()

    class Batch:
        """Four candidates trained together for 1 s, candidate i at i + 1 steps per tick."""

        def evaluate_many(self, leases, heartbeats):
            for tick in range(1, 21):
                for i, heartbeat in enumerate(heartbeats):
                    heartbeat(tick * (i + 1))
                time.sleep(0.05)
            return [Outcome(fitness=0.5, steps=20 * (i + 1)) for i in range(len(leases))]

    worker = Worker(
        grpc.intercept_channel(channel, calls),
        Batch(),
        "batch-trainer",
        wait_ms=500,
        candidates_per_step=4,
        heartbeat_interval_s=0.1,
        backoff=Backoff(0.01, 0.05),
        max_reports=4,
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and worker.reported == 4
    # about 10 intervals in 1 s: one call each, never one call per lease
    assert 3 <= len(calls.calls) <= 15
    assert all(len(call) == 4 for call in calls.calls)
    for i in range(4):  # each lease's own progress (a multiple of its rate), advancing
        steps = [call[i][1] for call in calls.calls]
        assert all(s % (i + 1) == 0 for s in steps) and steps == sorted(steps) and steps[-1] > steps[0]
