"""A trainer with K candidates per step: a leased batch trained together by the one adapter,
``KerasEvaluator.evaluate_many``."""

from __future__ import annotations

import pytest

from taylorglo_tf.trainer.keras_evaluator import KerasEvaluator
from taylorglo_tf.trainer.worker import EvaluationStopped
from tests.helpers.leases import APPENDIX_C_THETA, RecordingHeartbeat, lease

THETAS = [APPENDIX_C_THETA, [t * 0.8 for t in APPENDIX_C_THETA], [t * 1.2 for t in APPENDIX_C_THETA]]


@pytest.fixture(scope="module")
def evaluator():
    """One training Evaluator for the module: the task stays warm from test to test."""
    from taylorglo_tf.training import Evaluator

    return Evaluator(progress_every=5)


@pytest.fixture
def keras_evaluator(evaluator):
    return KerasEvaluator(evaluator=evaluator)


def adapter(evaluator, candidates_per_step):
    return KerasEvaluator(evaluator=evaluator, candidates_per_step=candidates_per_step)


def test_a_leased_batch_trains_in_one_step_each_candidate_as_alone(evaluator, keras_evaluator):
    batching = adapter(evaluator, 3)
    leases = [lease(theta, index=i) for i, theta in enumerate(THETAS)]
    heartbeats = [RecordingHeartbeat() for _ in leases]
    outcomes = batching.evaluate_many(leases, heartbeats)
    assert batching.batch_sizes == [3]
    alone = [keras_evaluator(one, RecordingHeartbeat()) for one in leases]
    for together, by_itself, heartbeat in zip(outcomes, alone, heartbeats):
        assert together.status == by_itself.status == "ok"
        assert together.val_accuracy == by_itself.val_accuracy
        assert together.val_loss == pytest.approx(by_itself.val_loss, rel=1e-3)
        assert heartbeat.steps[0] == 0 and heartbeat.steps[-1] == together.steps  # each heartbeats its own


def test_a_lost_lease_stops_only_its_candidate(evaluator):
    batching = adapter(evaluator, 2)
    leases = [lease(THETAS[0], index=5), lease(THETAS[1], index=6)]
    heartbeats = [RecordingHeartbeat(), RecordingHeartbeat(stop_after=10)]
    kept, stopped = batching.evaluate_many(leases, heartbeats)
    assert isinstance(stopped, EvaluationStopped) and max(heartbeats[1].steps) == 10
    assert kept.status == "ok" and kept.steps == leases[0].task.steps


def test_candidates_of_different_tasks_are_not_batched_together(evaluator):
    batching = adapter(evaluator, 2)
    leases = [lease(THETAS[0], index=7), lease(THETAS[0], index=8, steps=20)]
    outcomes = batching.evaluate_many(leases, [RecordingHeartbeat(), RecordingHeartbeat()])
    assert batching.batch_sizes == [1, 1]
    assert [o.steps for o in outcomes] == [40, 20]


def test_a_bad_theta_fails_only_its_own_candidate(evaluator):
    batching = adapter(evaluator, 2)
    bad, good = batching.evaluate_many(
        [lease([1.0, 2.0], index=9), lease(THETAS[0], index=10)], [RecordingHeartbeat(), RecordingHeartbeat()]
    )
    assert isinstance(bad, ValueError) and "lease theta has 2 entries" in str(bad)
    assert good.status == "ok" and batching.batch_sizes == [1]


def test_a_bad_task_fails_each_call_naming_it(tmp_path):
    batching = KerasEvaluator(data_dir=tmp_path, candidates_per_step=2)
    with pytest.raises((ValueError, FileNotFoundError), match="nothere"):
        batching(lease(dataset="npz:nothere.npz"), RecordingHeartbeat())


def test_bad_settings_are_refused_naming_them():
    for bad in (0, 65, 2.0):
        with pytest.raises(ValueError, match=f"candidates_per_step must be an integer >= 1 or 'auto', got {bad}"):
            KerasEvaluator(candidates_per_step=bad)
    with pytest.raises(ValueError, match="xla must be one of .*, got 'maybe'"):
        KerasEvaluator(candidates_per_step=2, xla="maybe")


def test_heartbeats_of_another_count_than_the_leases_are_refused(keras_evaluator):
    with pytest.raises(ValueError, match="2 leases and 1 heartbeats"):
        keras_evaluator.evaluate_many([lease(index=11), lease(index=12)], [RecordingHeartbeat()])
