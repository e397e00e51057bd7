"""Leasing K candidates in one call, against a real coordinator: the protocol (``max_candidates`` in
LeaseCandidateRequest, ``leases`` in the response) and a trainer that leases, heartbeats and reports a batch."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from taylorglo_tf.connection import connect
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc
from taylorglo_tf.trainer.worker import Backoff, EvaluationStopped, Outcome, Worker

STEPS = 30  # simulated training steps per candidate


def spec(population: int, name: str = "batched") -> types_pb2.ExperimentSpec:
    return types_pb2.ExperimentSpec(
        name=name,
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=STEPS),
        search=types_pb2.SearchSpec(population=population, generations=1, seed=1),
    )


class Calls(grpc.UnaryUnaryClientInterceptor):
    """Records each granted LeaseCandidate call as (max_candidates asked, leases granted) and drops the
    leases in ``silenced`` from each Heartbeat (as if lost on the way; UNAVAILABLE when none is left)."""

    def __init__(self):
        self.lease_calls: list[tuple[int, int]] = []
        self.silenced: set[str] = set()

    def intercept_unary_unary(self, continuation, details, request):
        if details.method.endswith("/Heartbeat") and self.silenced:
            kept = [lease for lease in request.leases if lease.lease_id not in self.silenced]
            if not kept:
                return _Unavailable()
            request = ws.HeartbeatRequest(trainer_id=request.trainer_id, leases=kept)
        call = continuation(details, request)
        if details.method.endswith("/LeaseCandidate"):

            def record(done):
                if done.exception() is None and done.result().leases:
                    self.lease_calls.append((request.max_candidates, len(done.result().leases)))

            call.add_done_callback(record)
        return call


class _Unavailable(grpc.RpcError, grpc.Future):
    """A failed call's outcome, as an interceptor returns one."""

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "heartbeat lost on the way"

    def result(self, timeout=None):
        raise self

    def exception(self, timeout=None):
        return self

    def traceback(self, timeout=None):
        return None

    def add_done_callback(self, fn):
        fn(self)

    def cancel(self):
        return False

    def cancelled(self):
        return False

    def running(self):
        return False

    def done(self):
        return True


@pytest.fixture
def coordinator(tmp_path):
    server = serve(tmp_path / "c.db", "127.0.0.1:0", lease_ttl_s=1.0)  # the reaper looks every 0.25 s
    channel = connect(server.address)
    calls = Calls()
    yield (
        server,
        es_grpc.ExperimentServiceStub(channel),
        ws_grpc.WorkerServiceStub(channel),
        grpc.intercept_channel(channel, calls),
        calls,
    )
    channel.close()
    server.stop(grace=0)


class SimulatedBatch:
    """An ``evaluate_many`` that "trains" a batch in lockstep: each step heartbeats every candidate
    still running; a candidate whose heartbeat answers False stops, the others go on."""

    def __init__(self, step_s: float = 0.0, on_step=None):
        self.step_s = step_s
        self.on_step = on_step or (lambda step, leases: None)
        self.batches: list[list[ws.Lease]] = []
        self.stopped_at: dict[str, int] = {}  # lease id -> the step its heartbeat said stop

    def evaluate_many(self, leases, heartbeats):
        self.batches.append(list(leases))
        running = set(range(len(leases)))
        for step in range(STEPS + 1):
            self.on_step(step, leases)
            for k in sorted(running):
                if not heartbeats[k](step):
                    self.stopped_at[leases[k].lease_id] = step
                    running.discard(k)
            time.sleep(self.step_s)
        return [
            Outcome(fitness=0.5, val_accuracy=0.5, steps=STEPS)
            if k in running
            else EvaluationStopped(leases[k].lease_id)
            for k in range(len(leases))
        ]


def batched_worker(channel, evaluate_fn, k, **kwargs):
    return Worker(
        channel,
        evaluate_fn,
        "batch-trainer",
        wait_ms=500,
        candidates_per_step=k,
        heartbeat_interval_s=0.1,
        backoff=Backoff(0.01, 0.05),
        **kwargs,
    )


def candidates(experiments, experiment_id):
    return list(experiments.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=10).candidates)


def wait_for_state(experiments, experiment_id, state, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while experiments.GetExperiment(es.GetExperimentRequest(experiment_id=experiment_id), timeout=10).state != state:
        assert time.monotonic() < deadline, f"experiment {experiment_id} never reached state {state}"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- the protocol


def test_one_call_grants_up_to_max_candidates_of_one_experiment_and_experiments_take_turns(coordinator):
    _, experiments, workers, _, _ = coordinator
    a = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(6, "a")), timeout=10)
    b = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(6, "b")), timeout=10)
    answers = [
        workers.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t", max_candidates=4), timeout=10) for _ in range(4)
    ]
    granted = [[(lease.experiment_id, lease.index) for lease in answer.leases] for answer in answers]
    # round-robin over experiments, as for single leases: a, b, a, b; each call up to 4 of one experiment
    assert granted == [
        [(a.id, i) for i in range(4)],
        [(b.id, i) for i in range(4)],
        [(a.id, 4), (a.id, 5)],
        [(b.id, 4), (b.id, 5)],
    ]
    assert all(answer.lease == answer.leases[0] for answer in answers)  # the singular field: the first lease
    assert len({lease.lease_id for answer in answers for lease in answer.leases}) == 12


def test_a_single_lease_client_gets_one_lease_and_fairness_between_experiments_is_unchanged(coordinator):
    _, experiments, workers, _, _ = coordinator
    a = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(2, "a")), timeout=10)
    b = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(2, "b")), timeout=10)
    answers = [workers.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t"), timeout=10) for _ in range(4)]
    assert [answer.lease.experiment_id for answer in answers] == [a.id, b.id, a.id, b.id]
    assert all(list(answer.leases) == [answer.lease] for answer in answers)
    for answer in answers:  # a one-lease client's reports count as before
        report = ws.ReportResultRequest(
            lease_id=answer.lease.lease_id, trainer_id="t", status=ws.EVALUATION_STATUS_OK, fitness=0.5
        )
        assert workers.ReportResult(report, timeout=10).accepted


def test_a_waiting_call_for_several_is_granted_a_batch_when_work_arrives(coordinator):
    _, experiments, workers, _, _ = coordinator
    waiting = workers.LeaseCandidate.future(
        ws.LeaseCandidateRequest(trainer_id="t", wait_ms=20_000, max_candidates=3), timeout=30
    )
    time.sleep(0.3)
    experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(5)), timeout=10)
    assert [lease.index for lease in waiting.result(timeout=30).leases] == [0, 1, 2]


# ----------------------------------------------------------------------------- the trainer


def test_a_trainer_with_four_per_step_leases_each_batch_in_one_call_and_reports_every_candidate(coordinator):
    _, experiments, _, channel, calls = coordinator
    a = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(6, "a")), timeout=10)
    b = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(3, "b")), timeout=10)
    batch = SimulatedBatch()
    worker = batched_worker(channel, batch, 4, max_reports=9)
    assert worker.run() == 9
    # One LeaseCandidate call per trained batch, of one experiment, the experiments taking turns;
    # the last call asks for only the 2 that max_reports=9 still allows.
    assert [[lease.experiment_id for lease in leases] for leases in batch.batches] == [
        [a.id] * 4,
        [b.id] * 3,
        [a.id] * 2,
    ]
    assert calls.lease_calls == [(4, 4), (4, 3), (2, 2)]
    for experiment in (a, b):
        wait_for_state(experiments, experiment.id, types_pb2.EXPERIMENT_STATE_SUCCEEDED)
        done = candidates(experiments, experiment.id)
        assert all(c.status == types_pb2.CANDIDATE_STATUS_SUCCEEDED and c.attempts == 1 for c in done)
        assert all(c.metrics.steps == STEPS for c in done)


def test_an_expired_lease_stops_only_its_own_candidate_of_the_batch(coordinator):
    _, experiments, _, channel, calls = coordinator
    a = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(4)), timeout=10)

    def lose_one_lease(step, leases):
        # The heartbeats of candidate 1's lease stop arriving for longer than its 1 s TTL.
        if step == 1 and len(leases) == 4:
            calls.silenced.add(leases[1].lease_id)
        if step == 20:
            calls.silenced.clear()

    batch = SimulatedBatch(step_s=0.1, on_step=lose_one_lease)
    worker = batched_worker(channel, batch, 4, max_reports=4)
    assert worker.run() == 4
    first = batch.batches[0]
    assert len(first) == 4 and list(batch.stopped_at) == [first[1].lease_id]
    assert batch.stopped_at[first[1].lease_id] < STEPS  # told to stop, it did not train to the end
    assert [lease.index for lease in batch.batches[1]] == [1]  # leased again, alone, after the batch
    wait_for_state(experiments, a.id, types_pb2.EXPERIMENT_STATE_SUCCEEDED)
    attempts = {c.index: c.attempts for c in candidates(experiments, a.id)}
    assert attempts == {0: 1, 1: 2, 2: 1, 3: 1}  # the other three were reported from the first batch


def test_cancelling_an_experiment_stops_its_batch_and_the_trainer_goes_on_with_the_next(coordinator):
    _, experiments, _, channel, _ = coordinator
    a = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(3, "a")), timeout=10)
    b = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(3, "b")), timeout=10)

    def cancel_a(step, leases):
        if step == 3 and leases[0].experiment_id == a.id:
            experiments.CancelExperiment(es.CancelExperimentRequest(experiment_id=a.id), timeout=10)

    batch = SimulatedBatch(step_s=0.05, on_step=cancel_a)
    worker = batched_worker(channel, batch, 4, max_reports=3)
    assert worker.run() == 3
    assert [lease.experiment_id for lease in batch.batches[0]] == [a.id] * 3
    assert sorted(batch.stopped_at) == sorted(lease.lease_id for lease in batch.batches[0])
    assert [lease.experiment_id for lease in batch.batches[1]] == [b.id] * 3
    wait_for_state(experiments, b.id, types_pb2.EXPERIMENT_STATE_SUCCEEDED)
    assert all(c.status == types_pb2.CANDIDATE_STATUS_SUCCEEDED for c in candidates(experiments, b.id))


def test_a_shutdown_gives_back_the_leases_a_one_at_a_time_evaluation_has_not_started(coordinator):
    _, experiments, workers, channel, _ = coordinator
    a = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(3)), timeout=10)
    started = []

    def evaluate(lease, heartbeat):  # a plain evaluate_fn: the worker runs a batch one lease at a time
        started.append(lease.index)
        worker.request_stop(grace_s=30.0)  # a SIGTERM during the first candidate
        return Outcome(fitness=0.5)

    worker = batched_worker(channel, evaluate, 3)
    thread = threading.Thread(target=worker.run)
    thread.start()
    thread.join(20)
    assert not thread.is_alive() and started == [0]
    assert worker.reported == 1 and worker.returned == 2
    states = {c.index: (c.status, c.attempts) for c in candidates(experiments, a.id)}
    assert states == {
        0: (types_pb2.CANDIDATE_STATUS_SUCCEEDED, 1),
        1: (types_pb2.CANDIDATE_STATUS_QUEUED, 0),
        2: (types_pb2.CANDIDATE_STATUS_QUEUED, 0),
    }  # given back without spending an attempt
    assert sorted(
        lease.index
        for lease in workers.LeaseCandidate(
            ws.LeaseCandidateRequest(trainer_id="other", max_candidates=4), timeout=10
        ).leases
    ) == [1, 2]
