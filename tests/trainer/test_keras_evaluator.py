"""The trainer's Keras adapter (taylorglo_tf.trainer.keras_evaluator): lease -> Task + loss -> Outcome."""

from __future__ import annotations

import os

import pytest

from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.trainer.keras_evaluator import KerasEvaluator
from taylorglo_tf.trainer.worker import EvaluationStopped
from taylorglo_tf.training import EvaluationResult, Task
from tests.helpers.leases import APPENDIX_C_THETA, STEPS, RecordingHeartbeat, lease


# Appendix C's best MNIST loss: trains the tiny model on digits well.
class FixedEvaluator:
    """A stand-in training Evaluator that gives each candidate a given result and records its calls."""

    def __init__(self, result):
        self.result = result
        self.calls = []

    def evaluate_many(self, losses, task, progress):
        self.calls += [(loss, task) for loss in losses]
        for report in progress:
            report(task.steps, task.steps)
        return [self.result] * len(losses)


# ------------------------------------------------------------------ TaskSpec -> Task


def test_minimal_task_spec_gets_the_documented_defaults():
    task = Task.from_proto(types_pb2.TaskSpec(dataset="digits", model="tiny", steps=25, seed=7), None)
    assert task == Task(
        dataset="digits",
        model="tiny",
        steps=25,
        batch_size=0,
        fraction=1.0,
        augmentation=None,  # no block: the recipe's, as in Python
        seed=7,
        abort_threshold=0.15,
        abort_check_epoch=10.0,
        data_dir=None,
    )


def test_task_spec_fields_map_onto_the_task():
    spec = types_pb2.TaskSpec(
        dataset="tfds:cifar10",
        model="alexnet",
        steps=2000,
        batch_size=64,
        train_fraction=0.1,
        seed=5,
        abort_accuracy=0.2,
        abort_epochs=3,
        lr_scale=0.3,
        augmentation=types_pb2.AugmentationSpec(flip_crop=True, cutout_length=16, cutmix_probability=0.5),
    )
    task = Task.from_proto(spec, None)
    assert (task.dataset, task.model, task.steps, task.batch_size, task.fraction) == (
        "tfds:cifar10",
        "alexnet",
        2000,
        64,
        0.1,
    )
    assert (task.abort_threshold, task.abort_check_epoch, task.lr_scale) == (0.2, 3.0, 0.3)
    assert task.augmentation == {"flip": True, "crop_padding": 4, "cutout": 16, "cutmix_prob": 0.5, "cutmix_alpha": 1.0}


def test_negative_abort_accuracy_turns_the_abort_rule_off():
    task = Task.from_proto(types_pb2.TaskSpec(dataset="digits", model="tiny", steps=5, abort_accuracy=-1), None)
    assert task.abort_threshold == 0.0  # accuracy is never below 0


def test_an_abort_accuracy_of_zero_is_zero_not_the_default():
    task = Task.from_proto(types_pb2.TaskSpec(dataset="digits", model="tiny", steps=5, abort_accuracy=0), None)
    assert task.abort_threshold == 0.0


def test_task_spec_without_steps_is_refused():
    with pytest.raises(ValueError, match="task.steps must be > 0, got 0"):
        Task.from_proto(types_pb2.TaskSpec(dataset="digits", model="tiny"), None)


def test_dataset_paths_resolve_under_the_data_directory(tmp_path):
    (tmp_path / "fashion").mkdir()
    task = Task.from_proto(types_pb2.TaskSpec(dataset="idx:fashion", model="tiny", steps=5), tmp_path)
    assert task.dataset == f"idx:{tmp_path.resolve() / 'fashion'}"
    assert task.data_dir == str(tmp_path.resolve())


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("idx:../outside", "must not contain '..'"),
        ("npz:/etc/passwd", "must be relative to the trainer's data directory"),
        ("idx:a/../../b", "must not contain '..'"),
        ("nosuch:thing", "is not digits, tfds:NAME, idx:DIR or npz:FILE"),
    ],
)
def test_dataset_paths_outside_the_data_directory_are_refused(tmp_path, dataset, message):
    with pytest.raises(ValueError, match="task.dataset") as error:
        Task.from_proto(types_pb2.TaskSpec(dataset=dataset, model="tiny", steps=5), tmp_path)
    assert message in str(error.value)


def test_a_symlink_leading_out_of_the_data_directory_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", data_dir / "link")
    with pytest.raises(ValueError, match="outside the data directory"):
        Task.from_proto(types_pb2.TaskSpec(dataset="idx:link", model="tiny", steps=5), data_dir)


def test_file_datasets_need_a_data_directory():
    with pytest.raises(ValueError, match="no data directory"):
        Task.from_proto(types_pb2.TaskSpec(dataset="npz:data.npz", model="tiny", steps=5), None)


def test_a_missing_data_directory_is_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        KerasEvaluator(data_dir=tmp_path / "missing")


# ---------------------------------------------------------------- losses and results


def test_theta_of_the_wrong_length_is_refused_naming_the_form():
    evaluator = KerasEvaluator(evaluator=FixedEvaluator(None))
    with pytest.raises(ValueError, match="lease theta has 3 entries; a loss of order 3 in \\['x', 'y'\\] needs 8"):
        evaluator.loss_for(types_pb2.LossSpec(), [1.0, 2.0, 3.0])


def test_the_loss_has_the_lease_form_and_theta():
    evaluator = KerasEvaluator(evaluator=FixedEvaluator(None))
    default = evaluator.loss_for(types_pb2.LossSpec(), APPENDIX_C_THETA)
    assert (default.order, default.inputs) == (3, ("x", "y"))
    assert default.theta.tolist() == pytest.approx(APPENDIX_C_THETA)
    timed = evaluator.loss_for(types_pb2.LossSpec(order=2, inputs=["x", "y", "t"]), [0.1] * 7)
    assert timed.inputs == ("x", "y", "t") and timed.order == 2


def test_evaluation_results_map_to_outcomes_with_status_fitness_and_metrics():
    diverged = EvaluationResult(
        fitness=0.0, val_accuracy=0.1, val_loss=float("nan"), steps=12, wall_time_s=0.5, attempts=1, status="diverged"
    )
    stand_in = FixedEvaluator(diverged)
    outcome = KerasEvaluator(evaluator=stand_in)(lease(), RecordingHeartbeat())
    assert (outcome.status, outcome.fitness, outcome.val_accuracy, outcome.steps, outcome.wall_time_s) == (
        "diverged",
        0.0,
        0.1,
        12,
        0.5,
    )
    # The NaN loss is reported as 0 (proto metrics must be finite).
    assert outcome.to_request("lease-0", "t").metrics.val_loss == 0.0
    loss, task = stand_in.calls[0]
    assert task.dataset == "digits" and task.steps == STEPS
    assert loss.theta.tolist() == pytest.approx(APPENDIX_C_THETA)


def test_a_stop_from_the_heartbeat_before_training_raises_evaluation_stopped():
    stand_in = FixedEvaluator(None)
    with pytest.raises(EvaluationStopped):
        KerasEvaluator(evaluator=stand_in)(lease(), RecordingHeartbeat(stop_after=0))
    assert stand_in.calls == []


# ------------------------------------------------------------ real training on digits


@pytest.fixture(scope="module")
def keras_evaluator():
    from taylorglo_tf.training import Evaluator

    return KerasEvaluator(evaluator=Evaluator(progress_every=5))


def test_trains_a_candidate_on_digits_and_heartbeats_while_training(keras_evaluator):
    heartbeat = RecordingHeartbeat()
    outcome = keras_evaluator(lease(), heartbeat)
    assert outcome.status == "ok"
    assert outcome.steps == STEPS and outcome.attempts == 1
    assert 0.3 < outcome.fitness <= 1.0  # well above chance (0.1) for this loss
    assert outcome.fitness == outcome.val_accuracy
    assert heartbeat.steps[0] == 0 and heartbeat.steps[-1] == STEPS
    assert heartbeat.steps == sorted(heartbeat.steps) and len(heartbeat.steps) >= STEPS // 5


def test_the_next_candidate_of_the_same_task_reuses_the_compiled_step(keras_evaluator):
    keras_evaluator(lease(index=1), RecordingHeartbeat())
    traces = keras_evaluator.evaluator.trace_count()
    outcome = keras_evaluator(lease([0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0], index=2), RecordingHeartbeat())
    assert keras_evaluator.evaluator.trace_count() == traces
    assert outcome.status == "ok"


def test_a_lost_lease_stops_training_early_and_is_not_reported(keras_evaluator):
    heartbeat = RecordingHeartbeat(stop_after=10)
    with pytest.raises(EvaluationStopped, match="stopped after 10 steps"):
        keras_evaluator(lease(index=3), heartbeat)
    assert max(heartbeat.steps) == 10  # no training after the stop


def test_missing_data_raises_an_error_naming_the_path(tmp_path):
    evaluator = KerasEvaluator(data_dir=tmp_path, evaluator=None)
    with pytest.raises((ValueError, FileNotFoundError), match="nothere"):
        evaluator(lease(dataset="npz:nothere.npz"), RecordingHeartbeat())
