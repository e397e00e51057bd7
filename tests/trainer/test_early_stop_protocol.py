"""The trainer's side of early stopping: checkpoint values in heartbeats, hold, stop, and STOPPED reports.

A scripted coordinator grants leases with ``Lease.checkpoints`` and answers each heartbeat that
carries a checkpoint value as a test scripts it (go on, hold, stop, drop the lease); the worker
must send the value at once, block the evaluation while it is held, and report a stopped
candidate as STOPPED with the steps it trained instead of giving its lease back.
"""

from __future__ import annotations

import itertools
import threading
import time

import grpc
import pytest

from taylorglo_tf.rpc import types_pb2, worker_service_pb2
from taylorglo_tf.trainer import worker as worker_module
from taylorglo_tf.trainer.synthetic import SyntheticEvaluator, synthetic_fitness
from taylorglo_tf.trainer.worker import EvaluationStopped, Outcome
from tests.helpers.leases import APPENDIX_C_THETA, STEPS, lease
from tests.trainer.test_worker import (
    ScriptedCoordinator,
    _coordinators,
    _fast_worker,
    _run_in_thread,
    _wait_until_leased,
)

STOPPED = worker_service_pb2.EVALUATION_STATUS_STOPPED
OK = worker_service_pb2.EVALUATION_STATUS_OK


@pytest.fixture
def coordinator():
    """``start(servicer) -> channel``: the scripted coordinators of tests/trainer/test_worker.py, on loopback."""
    with _coordinators() as start:
        yield start


class EarlyStoppingCoordinator(ScriptedCoordinator):
    """Leases with ``checkpoints`` (100 steps each); ``decide(lease_id, values, calls)`` answers a heartbeat
    that carries checkpoint values for a lease with "go", "hold", "stop" or "drop" (keep_going false);
    ``calls`` counts that lease's heartbeats with values so far. The time of each heartbeat is kept."""

    def __init__(self, thetas, decide, checkpoints=(0.25, 0.5), **kwargs):
        super().__init__(thetas, **kwargs)
        self.checkpoints = list(checkpoints)
        self.decide = decide
        self.beat_times: list[float] = []
        self.calls_with_values: dict[str, int] = {}

    def LeaseCandidate(self, request, context):
        response = super().LeaseCandidate(request, context)
        for granted in [response.lease, *response.leases]:
            granted.checkpoints[:] = self.checkpoints
            if granted.lease_id in self.leases:
                self.leases[granted.lease_id].checkpoints[:] = self.checkpoints
        return response

    def Heartbeat(self, request, context):
        if self.heartbeats_unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")
        with self.lock:
            self.heartbeats.append(request)
            self.beat_times.append(time.monotonic())
        answers = []
        for progress in request.leases:
            decision = "go"
            if progress.checkpoints:
                calls = self.calls_with_values.get(progress.lease_id, 0) + 1
                self.calls_with_values[progress.lease_id] = calls
                decision = self.decide(progress.lease_id, list(progress.checkpoints), calls)
            answers.append(
                worker_service_pb2.LeaseHeartbeat(
                    lease_id=progress.lease_id,
                    keep_going=decision in ("go", "hold"),
                    ttl_s=self.ttl_s,
                    hold=decision == "hold",
                    stop=decision == "stop",
                )
            )
        return worker_service_pb2.HeartbeatResponse(leases=answers)


def value(index, steps, accuracy):
    return types_pb2.CheckpointValue(index=index, steps=steps, val_accuracy=accuracy)


class CheckpointingEvaluation:
    """A plain evaluate_fn that reports checkpoint 0 at step 25 (accuracy 0.4) and checkpoint 1 at step 50
    (0.6), then finishes at 100; records how long each ``heartbeat`` at a checkpoint blocked and what it said."""

    def __init__(self, stopped_outcome=False):
        self.blocked: list[tuple[int, float, bool]] = []  # (step, seconds, keep_going)
        self.stopped_outcome = stopped_outcome  # return Outcome("stopped") rather than raise

    def __call__(self, lease, heartbeat):
        assert list(lease.checkpoints) == [0.25, 0.5]
        for index, (step, accuracy) in enumerate([(25, 0.4), (50, 0.6)]):
            heartbeat.checkpoint(index, step, accuracy)
            started = time.monotonic()
            keep_going = heartbeat(step)
            self.blocked.append((step, time.monotonic() - started, keep_going))
            if not keep_going:
                if self.stopped_outcome and heartbeat.stopped_early:
                    return Outcome(status="stopped", val_accuracy=accuracy, steps=step)
                raise EvaluationStopped()
        heartbeat(100)
        return Outcome(fitness=0.7, val_accuracy=0.7, steps=100)


def test_a_checkpoint_value_is_sent_at_once_and_an_answer_without_hold_lets_training_go_on(coordinator):
    """The heartbeat interval is 10 s (TTL 30 s): only the checkpoint's own heartbeat can answer in time."""
    fake = EarlyStoppingCoordinator([[0.0] * 8], lambda lease_id, values, calls: "go")
    evaluation = CheckpointingEvaluation()
    worker = _fast_worker(coordinator(fake), evaluation, max_reports=1)
    started = time.monotonic()
    assert worker.run() == 1
    assert time.monotonic() - started < 5
    assert [(step, keep_going) for step, _, keep_going in evaluation.blocked] == [(25, True), (50, True)]
    with_values = [list(h.leases[0].checkpoints) for h in fake.heartbeats if h.leases[0].checkpoints]
    # each heartbeat carries every value so far (a lost one loses nothing)
    assert with_values == [[value(0, 25, 0.4)], [value(0, 25, 0.4), value(1, 50, 0.6)]]
    (report,) = fake.reports
    assert report.status == OK and report.fitness == pytest.approx(0.7)
    assert list(report.metrics.checkpoints) == [value(0, 25, 0.4), value(1, 50, 0.6)]  # added by the worker


@pytest.mark.parametrize("stopped_outcome", [False, True], ids=["raises-stopped", "returns-stopped"])
def test_hold_blocks_the_evaluation_heartbeating_then_stop_reports_stopped_with_the_steps_trained(
    coordinator, stopped_outcome
):
    """Held for five heartbeats (about 0.5 s at the hold poll of 0.1 s), then stopped: the evaluation
    waits at its checkpoint, then the candidate is reported STOPPED, never given back."""

    def decide(lease_id, values, calls):
        return "hold" if calls <= 5 else "stop"

    fake = EarlyStoppingCoordinator([[0.0] * 8], decide)
    evaluation = CheckpointingEvaluation(stopped_outcome)
    worker = _fast_worker(coordinator(fake), evaluation, max_reports=1)
    assert worker.run() == 1
    [(step, seconds, keep_going)] = evaluation.blocked
    assert (step, keep_going) == (25, False)
    assert 5 * worker_module.HOLD_POLL_S * 0.8 <= seconds < 3
    held_beats = fake.beat_times[-6:]
    gaps = [later - earlier for earlier, later in itertools.pairwise(held_beats)]
    assert all(gap < 0.5 for gap in gaps)  # polled, not at the 10 s interval
    assert all(list(h.leases[0].checkpoints) == [value(0, 25, 0.4)] for h in fake.heartbeats[-6:])
    (report,) = fake.reports
    assert report.status == STOPPED and report.fitness == 0.0
    assert report.metrics.steps == 25 and report.metrics.val_accuracy == pytest.approx(0.4)
    assert list(report.metrics.checkpoints) == [value(0, 25, 0.4)]
    assert fake.returned == []


def test_a_lease_dropped_while_held_ends_its_evaluation_unreported(coordinator):
    def decide(lease_id, values, calls):
        if lease_id != "lease-0":
            return "go"
        return "hold" if calls <= 2 else "drop"

    fake = EarlyStoppingCoordinator([[0.0] * 8, [0.1] * 8], decide)
    evaluation = CheckpointingEvaluation()
    worker = _fast_worker(coordinator(fake), evaluation, max_reports=1)
    worker.run()
    assert evaluation.blocked[0][0] == 25 and evaluation.blocked[0][2] is False
    assert [r.lease_id for r in fake.reports] == ["lease-1"]  # the worker went on to the next
    assert "lease-0" not in fake.returned  # the coordinator no longer holds it for us


def test_without_an_answer_the_evaluation_trains_on_after_the_wait_bound(coordinator, monkeypatch):
    monkeypatch.setattr(worker_module, "CHECKPOINT_ANSWER_WAIT_S", 0.3)
    fake = EarlyStoppingCoordinator([[0.0] * 8], lambda lease_id, values, calls: "go", heartbeats_unavailable=True)
    evaluation = CheckpointingEvaluation()
    worker = _fast_worker(coordinator(fake), evaluation, max_reports=1)
    assert worker.run() == 1
    assert [step for step, _, keep_going in evaluation.blocked if keep_going] == [25, 50]
    assert all(0.25 <= seconds < 2 for _, seconds, _ in evaluation.blocked), evaluation.blocked
    assert fake.reports[0].status == OK


def test_a_shutdown_deadline_ends_a_hold_and_the_lease_goes_back(coordinator):
    fake = EarlyStoppingCoordinator([[0.0] * 8], lambda lease_id, values, calls: "hold")
    evaluation = CheckpointingEvaluation()
    worker = _fast_worker(coordinator(fake), evaluation)
    thread, result = _run_in_thread(worker)
    _wait_until_leased(worker)
    while not fake.calls_with_values:  # held at its first checkpoint
        time.sleep(0.01)
    worker.request_stop(grace_s=0.3)
    thread.join(5)
    assert not thread.is_alive()
    assert result["n"] == 0 and fake.reports == [] and fake.returned == ["lease-0"]


def test_a_hold_is_not_kept_while_a_lease_of_the_same_batch_waits_to_start_behind_it(coordinator):
    """A plain evaluate_fn trains a batch one lease after another: the coordinator holds lease-0 until
    lease-1 (leased, so "in training") reaches the checkpoint, which it only can after lease-0. The
    worker must not wait on that: lease-0 trains on, and its result waits on the coordinator instead."""

    def decide(lease_id, values, calls):
        return "hold" if lease_id == "lease-0" else "go"

    fake = EarlyStoppingCoordinator([[0.0] * 8, [0.1] * 8], decide, per_call=2)
    evaluation = CheckpointingEvaluation()
    worker = _fast_worker(coordinator(fake), evaluation, max_reports=2, candidates_per_step=2)
    started = time.monotonic()
    assert worker.run() == 2
    assert time.monotonic() - started < 5
    assert [(step, keep_going) for step, _, keep_going in evaluation.blocked] == [(25, True), (50, True)] * 2
    assert [r.status for r in fake.reports] == [OK, OK]


def test_a_batch_of_two_sends_both_values_in_one_heartbeat_and_stops_only_the_one_told(coordinator):
    """Two candidates trained together reach a checkpoint in the same step: one Heartbeat call carries
    both values, and the stop of one leaves the other to finish."""

    class Batch:
        def __init__(self):
            self.keep_going = {}

        def evaluate_many(self, leases, heartbeats):
            for i, heartbeat in enumerate(heartbeats):
                heartbeat.checkpoint(0, 25, 0.2 + 0.5 * i)
            for i, heartbeat in enumerate(heartbeats):
                self.keep_going[i] = heartbeat(25)
            results = []
            for i, heartbeat in enumerate(heartbeats):
                if self.keep_going[i]:
                    heartbeat(100)
                    results.append(Outcome(fitness=0.9, val_accuracy=0.9, steps=100))
                else:
                    results.append(EvaluationStopped())
            return results

    def decide(lease_id, values, calls):
        return "stop" if values[0].val_accuracy < 0.5 else "go"

    fake = EarlyStoppingCoordinator([[0.0] * 8, [0.1] * 8], decide, per_call=2, checkpoints=[0.25])
    batch = Batch()
    worker = _fast_worker(coordinator(fake), batch, max_reports=2, candidates_per_step=2)
    assert worker.run() == 2
    assert batch.keep_going == {0: False, 1: True}
    first = next(h for h in fake.heartbeats if any(p.checkpoints for p in h.leases))
    assert [list(p.checkpoints) for p in first.leases] == [[value(0, 25, 0.2)], [value(0, 25, 0.7)]]
    reports = {r.lease_id: r for r in fake.reports}
    assert reports["lease-0"].status == STOPPED and reports["lease-0"].metrics.steps == 25
    assert reports["lease-1"].status == OK and reports["lease-1"].metrics.steps == 100


# ------------------------------------------------------------------------------- the synthetic trainer


class ScriptedHeartbeat:
    """A heartbeat object as the worker gives: records checkpoint values, stops when told."""

    def __init__(self, stop_at_step=None):
        self.values: list[tuple[int, int, float]] = []
        self.steps: list[int] = []
        self.stop_at_step = stop_at_step
        self.stopped_early = False

    def checkpoint(self, index, steps, val_accuracy):
        self.values.append((index, steps, val_accuracy))

    def __call__(self, steps_done):
        self.steps.append(steps_done)
        if self.stop_at_step is not None and steps_done >= self.stop_at_step:
            self.stopped_early = True
        return not self.stopped_early


def synthetic_lease(theta, checkpoints):
    return worker_service_pb2.Lease(
        lease_id="l",
        theta=theta,
        checkpoints=checkpoints,
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=200),
    )


def test_the_synthetic_trainer_reports_its_fitness_scaled_by_how_far_it_got_at_each_checkpoint():
    theta = [0.1] * 8
    fitness = synthetic_fitness(theta)
    heartbeat = ScriptedHeartbeat()
    outcome = SyntheticEvaluator()(synthetic_lease(theta, [0.25, 0.5]), heartbeat)
    expected = [(0, 50, fitness * 0.625), (1, 100, fitness * 0.75)]
    assert [(index, steps) for index, steps, _ in heartbeat.values] == [(0, 50), (1, 100)]
    assert [accuracy for _, _, accuracy in heartbeat.values] == pytest.approx([a for _, _, a in expected])
    assert heartbeat.steps[:2] == [50, 100]  # each value is followed by its step's heartbeat
    assert outcome.status == "ok" and outcome.fitness == pytest.approx(fitness)
    assert list(outcome.checkpoints) == heartbeat.values


def test_the_synthetic_trainer_stopped_at_a_checkpoint_is_stopped_with_that_checkpoints_steps():
    heartbeat = ScriptedHeartbeat(stop_at_step=50)
    outcome = SyntheticEvaluator()(synthetic_lease([0.1] * 8, [0.25, 0.5]), heartbeat)
    assert (outcome.status, outcome.steps, outcome.fitness) == ("stopped", 50, 0.0)
    assert outcome.val_accuracy == pytest.approx(heartbeat.values[0][2])
    assert [index for index, _, _ in outcome.checkpoints] == [0]


def test_the_synthetic_trainer_stopped_otherwise_is_not_reported():
    def lost(steps_done):
        return False

    with pytest.raises(EvaluationStopped):
        SyntheticEvaluator()(synthetic_lease([0.1] * 8, [0.25]), lost)


def test_synthetic_trainers_behind_a_worker_are_stopped_below_a_threshold_and_finish_above(coordinator):
    thetas = [[0.0] * 8, [3.0] * 8]  # fitness about 0.88 and nearly 0

    def decide(lease_id, values, calls):
        return "stop" if values[-1].val_accuracy < 0.1 else "go"

    fake = EarlyStoppingCoordinator(thetas, decide)
    worker = _fast_worker(coordinator(fake), SyntheticEvaluator(), max_reports=2)
    assert worker.run() == 2
    good, bad = fake.reports
    assert good.status == OK and good.metrics.steps == 100 and len(good.metrics.checkpoints) == 2
    assert bad.status == STOPPED and bad.metrics.steps == 25 and [c.index for c in bad.metrics.checkpoints] == [0]


# ------------------------------------------------------------------------------------------- Outcome


def test_a_stopped_outcome_is_reported_as_status_stopped_with_fitness_0_and_its_checkpoints():
    outcome = Outcome(status="stopped", val_accuracy=0.3, steps=25, checkpoints=((1, 50, 0.5), (0, 25, 0.3)))
    request = outcome.to_request("l", "t")
    assert request.status == STOPPED and request.fitness == 0.0 and request.metrics.steps == 25
    assert list(request.metrics.checkpoints) == [value(0, 25, 0.3), value(1, 50, 0.5)]
    with pytest.raises(ValueError, match="'halted'"):
        Outcome(status="halted")


def test_heartbeat_requests_still_work_for_leases_without_checkpoints(coordinator):
    """An old-style evaluate_fn and a lease without checkpoints: the heartbeat is a plain callable."""
    fake = ScriptedCoordinator([[0.0] * 8], ttl_s=0.15)
    seen = threading.Event()

    def evaluate(lease, heartbeat):
        for step in range(1, 6):
            assert heartbeat(step)
            time.sleep(0.05)
        seen.set()
        return Outcome(fitness=0.5, steps=5)

    worker = _fast_worker(coordinator(fake), evaluate, max_reports=1)
    assert worker.run() == 1 and seen.is_set()
    assert all(not p.checkpoints for h in fake.heartbeats for p in h.leases)
    assert fake.reports[0].status == OK and not fake.reports[0].metrics.checkpoints


# ----------------------------------------------------------------------------- the Keras adapter


@pytest.fixture(scope="module")
def keras_evaluator():
    from taylorglo_tf.trainer.keras_evaluator import KerasEvaluator

    return KerasEvaluator()


def test_the_keras_adapter_reports_a_candidate_stopped_at_a_checkpoint_as_stopped_and_the_other_in_full(
    keras_evaluator,
):
    leases = [lease(index=0), lease(index=1)]
    for one in leases:
        one.checkpoints[:] = [0.25, 0.5]  # steps 10 and 20 of 40
    heartbeats = [ScriptedHeartbeat(stop_at_step=10), ScriptedHeartbeat()]
    stopped, finished = keras_evaluator.evaluate_many(leases, heartbeats)
    assert (stopped.status, stopped.steps, stopped.fitness) == ("stopped", 10, 0.0)
    assert stopped.checkpoints == tuple(heartbeats[0].values) and [i for i, _, _ in stopped.checkpoints] == [0]
    assert stopped.val_accuracy == pytest.approx(heartbeats[0].values[0][2], abs=1e-6)
    assert (finished.status, finished.steps) == ("ok", STEPS)
    assert [(i, s) for i, s, _ in finished.checkpoints] == [(0, 10), (1, 20)]
    assert finished.checkpoints == tuple(heartbeats[1].values)


def test_the_keras_adapter_trains_leases_with_other_checkpoints_apart(keras_evaluator):
    leases = [lease(index=0), lease(index=1), lease(index=2)]
    leases[0].checkpoints[:] = [0.5]
    leases[2].checkpoints[:] = [0.5]
    before = len(keras_evaluator.batch_sizes)
    results = keras_evaluator.evaluate_many(leases, [ScriptedHeartbeat() for _ in leases])
    assert keras_evaluator.batch_sizes[before:] == [2, 1]
    assert [len(r.checkpoints) for r in results] == [1, 0, 1]


def test_bad_checkpoints_of_a_lease_are_its_error_naming_them(keras_evaluator):
    bad = lease()
    bad.checkpoints[:] = [0.5, 0.25]
    [result] = keras_evaluator.evaluate_many([bad], [ScriptedHeartbeat()])
    assert isinstance(result, ValueError) and "ascending order, got [0.5, 0.25]" in str(result)


def test_a_keras_trainer_held_then_stopped_by_the_coordinator_reports_stopped_and_its_partner_ok(coordinator):
    """The whole trainer side: a worker leasing two candidates at a time, the Keras adapter training them
    together; the coordinator holds the first at its checkpoint, then stops it."""
    from taylorglo_tf.trainer.keras_evaluator import KerasEvaluator

    def decide(lease_id, values, calls):
        if lease_id == "lease-0":
            return "hold" if calls <= 3 else "stop"
        return "go"

    fake = EarlyStoppingCoordinator([APPENDIX_C_THETA, APPENDIX_C_THETA], decide, per_call=2)
    worker = _fast_worker(coordinator(fake), KerasEvaluator(), max_reports=2, candidates_per_step=2)
    assert worker.run() == 2
    reports = {r.lease_id: r for r in fake.reports}
    assert reports["lease-0"].status == STOPPED and reports["lease-0"].metrics.steps == 25  # 0.25 of 100
    assert [c.steps for c in reports["lease-0"].metrics.checkpoints] == [25]
    assert reports["lease-1"].status == OK and reports["lease-1"].metrics.steps == 100
    assert [c.steps for c in reports["lease-1"].metrics.checkpoints] == [25, 50]
    assert fake.calls_with_values["lease-0"] >= 4 and fake.returned == []  # held 3 times, then stopped
