"""A trainer with K candidates per step: K worker loops, one batched training (trainer.batching, trainer.pool)."""

from __future__ import annotations

import threading

import pytest

from tests.test_keras_evaluator import APPENDIX_C_THETA, RecordingHeartbeat, lease
from trainer.batching import BatchingEvaluator
from trainer.keras_evaluator import KerasEvaluator
from trainer.pool import WorkerPool, split
from trainer.worker import EvaluationStopped

THETAS = [APPENDIX_C_THETA, [t * 0.8 for t in APPENDIX_C_THETA], [t * 1.2 for t in APPENDIX_C_THETA]]


@pytest.fixture(scope="module")
def keras_evaluator():
    from taylorglo_tf.training import Evaluator

    return KerasEvaluator(evaluator=Evaluator(progress_every=5))


def call_concurrently(evaluate_fn, leases, heartbeats):
    """Each lease evaluated from its own thread, as K worker loops do; -> outcome or exception per lease."""
    answers = [None] * len(leases)

    def one(index):
        try:
            answers[index] = evaluate_fn(leases[index], heartbeats[index])
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            answers[index] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(leases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return answers


def test_candidates_leased_together_train_in_one_batch_each_as_alone(keras_evaluator):
    batching = BatchingEvaluator(keras_evaluator, 3, gather_s=30.0)  # 30 s: all three surely join
    leases = [lease(theta, index=i) for i, theta in enumerate(THETAS)]
    heartbeats = [RecordingHeartbeat() for _ in leases]
    outcomes = call_concurrently(batching, leases, heartbeats)
    assert batching.batch_sizes == [3]
    alone = [keras_evaluator(one, RecordingHeartbeat()) for one in leases]
    for together, by_itself, heartbeat in zip(outcomes, alone, heartbeats):
        assert together.status == by_itself.status == "ok"
        assert together.val_accuracy == by_itself.val_accuracy
        assert together.val_loss == pytest.approx(by_itself.val_loss, rel=1e-3)
        assert heartbeat.steps[0] == 0 and heartbeat.steps[-1] == together.steps  # each heartbeats its own


def test_a_lost_lease_stops_only_its_candidate(keras_evaluator):
    batching = BatchingEvaluator(keras_evaluator, 2, gather_s=30.0)
    leases = [lease(THETAS[0], index=5), lease(THETAS[1], index=6)]
    heartbeats = [RecordingHeartbeat(), RecordingHeartbeat(stop_after=10)]
    kept, stopped = call_concurrently(batching, leases, heartbeats)
    assert isinstance(stopped, EvaluationStopped) and max(heartbeats[1].steps) == 10
    assert kept.status == "ok" and kept.steps == leases[0].task.steps


def test_candidates_of_different_tasks_are_not_batched_together(keras_evaluator):
    batching = BatchingEvaluator(keras_evaluator, 2, gather_s=0.5)
    leases = [lease(THETAS[0], index=7), lease(THETAS[0], index=8, steps=20)]
    outcomes = call_concurrently(batching, leases, [RecordingHeartbeat(), RecordingHeartbeat()])
    assert sorted(batching.batch_sizes) == [1, 1]
    assert [o.steps for o in outcomes] == [40, 20]


def test_a_bad_task_fails_each_call_naming_it(tmp_path):
    batching = BatchingEvaluator(KerasEvaluator(data_dir=tmp_path), 2)
    with pytest.raises((ValueError, FileNotFoundError), match="nothere"):
        batching(lease(dataset="npz:nothere.npz"), RecordingHeartbeat())


def test_bad_settings_are_refused_naming_them(keras_evaluator):
    with pytest.raises(ValueError, match="candidates_per_step must be an integer >= 1 or 'auto', got 0"):
        BatchingEvaluator(keras_evaluator, 0)
    with pytest.raises(ValueError, match="xla must be"):
        BatchingEvaluator(keras_evaluator, 2, xla="maybe")


# ----------------------------------------------------------------------------- pool


class CountingWorker:
    def __init__(self, max_candidates):
        self.max_candidates = max_candidates
        self.reported = self.returned = 0
        self.abandoned_evaluation = False
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set() and (self.max_candidates is None or self.reported < self.max_candidates):
            self.reported += 1
        return self.reported

    def request_stop(self, grace_s=None):
        self.stopped.set()


def test_max_candidates_is_split_among_the_loops_so_the_total_is_kept():
    assert split(10, 4) == [3, 3, 2, 2]
    assert split(None, 3) == [None, None, None]
    pool = WorkerPool(CountingWorker, max_candidates=7)
    pool.grow(3)
    assert pool.run() == 7
    assert [w.reported for w in pool.workers] == [3, 2, 2]


def test_a_pool_grows_while_running_and_stops_every_loop():
    class Waiting(CountingWorker):
        def run(self):
            self.stopped.wait(30)
            return 0

    pool = WorkerPool(Waiting)
    pool.grow(1)
    runner = threading.Thread(target=pool.run)
    runner.start()
    pool.grow(3)
    assert len(pool.workers) == 3
    pool.request_stop(0.0)
    runner.join(timeout=10)
    assert not runner.is_alive() and all(w.stopped.is_set() for w in pool.workers)
