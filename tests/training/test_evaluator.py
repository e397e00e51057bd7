"""Candidate evaluation on the embedded digits data: training, divergence, the abort rule, reuse.

All evaluations use the ``tiny`` model (recipe: SGD lr 0.05, momentum 0.9, batch 32,
300 steps) on scikit-learn's 8x8 digits, so each run takes about a second.
"""

import math

import numpy as np
import pytest

from taylorglo_tf import taylor
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.training import EvaluationResult, Task

# Appendix C's best MNIST theta (paper form): a loss that trains.
PAPER_THETA = list(taylor.PAPER_MNIST_THETA)
# Coefficients of 1e30: the first updates overflow the weights to inf/NaN.
EXPLODING_THETA = [0.0, 0.0, 1e30, 1e30, 1e30, 1e30, 1e30, 1e30]


# ----------------------------------------------------------------------------- Task (no TensorFlow)


def test_task_round_trips_through_a_plain_dict():
    task = Task(
        dataset="tfds:mnist",
        model="basic_cnn",
        steps=2000,
        batch_size=100,
        fraction=0.1,
        augmentation={"cutout": 8},
        seed=3,
        lr_scale=0.3,
        abort_threshold=0.2,
        abort_check_epoch=5.0,
        abort_attempts=2,
        data_dir="/data",
    )
    assert Task.from_dict(task.to_dict()) == task


def test_task_defaults_follow_the_paper_abort_rule():
    task = Task()
    assert (task.abort_threshold, task.abort_check_epoch, task.abort_attempts) == (0.15, 10.0, 3)
    assert task.batch_size == 0 and task.augmentation is None  # 0 / None: the recipe's


def test_the_old_name_max_attempts_is_read_as_abort_attempts_with_a_warning():
    """``max_attempts`` read like the spec's search.max_attempts (leases per candidate): it was renamed."""
    with pytest.warns(FutureWarning, match="renamed Task.abort_attempts"):  # a task file: shown to its user
        assert Task.from_dict({"max_attempts": 2}).abort_attempts == 2
    with pytest.warns(DeprecationWarning):
        assert Task().replace(max_attempts=4).abort_attempts == 4
    assert Task(abort_attempts=5).max_attempts == 5  # the old name still reads
    with pytest.raises(ValueError, match="give only abort_attempts"):
        Task.from_dict({"max_attempts": 2, "abort_attempts": 3})


FULL_AUGMENTATION = {"flip": True, "crop_padding": 2, "cutout": 16, "cutmix_prob": 0.5, "cutmix_alpha": 0.7}
NO_AUGMENTATION = {"flip": False, "crop_padding": 0, "cutout": 0, "cutmix_prob": 0.0, "cutmix_alpha": 1.0}


@pytest.mark.parametrize("augmentation", [None, FULL_AUGMENTATION, NO_AUGMENTATION], ids=["recipe", "full", "off"])
def test_a_task_round_trips_through_its_proto(augmentation):
    """``augmentation=None`` (the recipe's) stays the recipe's: it once came back from a proto as "off"."""
    task = Task(
        dataset="digits",
        model="basic_cnn",
        steps=300,
        batch_size=64,
        fraction=0.5,
        augmentation=augmentation,
        seed=9,
        lr_scale=0.3,
        abort_threshold=0.2,
        abort_check_epoch=5.0,
    )
    spec = task.to_proto()
    assert spec.HasField("augmentation") == (augmentation is not None)
    assert Task.from_proto(types_pb2.TaskSpec.FromString(spec.SerializeToString())) == task


def test_no_augmentation_block_in_a_spec_means_the_recipes_and_an_empty_block_none():
    from taylorglo_tf import spec as spec_lib

    task = {"dataset": "digits", "model": "tiny", "steps": 10}
    recipe = spec_lib.load_spec({"task": task}).task
    off = spec_lib.load_spec({"task": {**task, "augmentation": {}}}).task
    flips = spec_lib.load_spec({"task": {**task, "augmentation": {"flip_crop": True}}}).task
    assert Task.from_proto(recipe).augmentation is None and Task(**task).augmentation is None
    assert Task.from_proto(off).augmentation == NO_AUGMENTATION
    assert Task.from_proto(flips).augmentation == {**NO_AUGMENTATION, "flip": True, "crop_padding": 4}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": 0}, "needs > 0 steps"),
        ({"abort_check_epoch": 2.5}, "whole epochs"),
        ({"augmentation": {"crop_padding": 2}}, "crops only with flips"),
        ({"augmentation": {"mixup": 1}}, r"unknown option\(s\) \['mixup'\]"),
    ],
)
def test_what_a_task_spec_cannot_carry_is_refused_naming_it(changes, message):
    with pytest.raises(ValueError, match=message):
        Task().replace(**changes).to_proto()


def test_task_from_dict_names_unknown_fields():
    with pytest.raises(ValueError, match=r"unknown Task field\(s\) \['stpes'\]"):
        Task.from_dict({"stpes": 10})


def test_task_names_an_unknown_model_when_it_is_made_not_when_it_is_evaluated():
    with pytest.raises(ValueError, match=r"Task.model: unknown model 'resnet9000'; valid names: .*basic_cnn"):
        Task.from_dict({"model": "resnet9000"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", -1),
        ("steps", 2.5),
        ("batch_size", True),
        ("fraction", 0.0),
        ("fraction", 1.5),
        ("seed", -2),
        ("lr_scale", 0),
        ("lr_scale", -0.5),
        ("lr_scale", float("inf")),
        ("lr_scale", float("nan")),
        ("lr_scale", "2"),
        ("abort_threshold", float("nan")),
        ("abort_check_epoch", 0),
        ("abort_attempts", 0),
        ("dataset", ""),
        ("model", None),
        ("augmentation", ["flip"]),
        ("data_dir", ""),
    ],
)
def test_task_rejects_a_bad_value_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"Task\.{field} "):
        Task.from_dict({field: value})


def test_task_lr_scale_error_names_the_value():
    with pytest.raises(ValueError, match=r"Task\.lr_scale must be a positive, finite number, got -0\.5"):
        Task(lr_scale=-0.5)


def test_task_from_dict_accepts_integral_yaml_numbers_for_real_fields():
    task = Task.from_dict({"fraction": 1, "abort_check_epoch": 10, "lr_scale": 3})
    assert task.fraction == 1.0 and isinstance(task.fraction, float)
    assert task.lr_scale == 3.0 and isinstance(task.lr_scale, float)


def test_evaluation_result_rejects_unknown_status_and_serialises_nan_as_null():
    with pytest.raises(ValueError, match="'exploded'"):
        EvaluationResult(0.0, 0.0, 0.0, 1, 0.1, 1, "exploded")
    result = EvaluationResult(0.0, 0.1, float("nan"), 10, 0.5, 1, "diverged")
    assert result.to_dict()["val_loss"] is None


# ------------------------------------------------------------------------- evaluation on digits

DIGITS = Task(dataset="digits", model="tiny", steps=300, seed=0)


@pytest.fixture(scope="module")
def evaluator():
    from taylorglo_tf.training import Evaluator

    return Evaluator(progress_every=10)


@pytest.fixture(scope="module")
def cross_entropy():
    from taylorglo_tf import losses

    return losses.get("cross_entropy")


def test_cross_entropy_reaches_90_percent_validation_accuracy_in_300_steps(evaluator, cross_entropy):
    result = evaluator.evaluate(cross_entropy, DIGITS)
    assert result.status == "ok"
    assert result.steps == 300 and result.attempts == 1
    assert result.val_accuracy >= 0.90
    assert result.fitness == result.val_accuracy
    assert math.isfinite(result.val_loss) and result.val_loss < 0.5
    assert result.wall_time_s > 0


def test_exploding_theta_is_diverged_with_zero_fitness_and_no_exception(evaluator):
    from taylorglo_tf.losses import TaylorGLOLoss

    result = evaluator.evaluate(TaylorGLOLoss(EXPLODING_THETA), DIGITS)
    assert result.status == "diverged"
    assert result.fitness == 0.0
    assert result.steps < DIGITS.steps  # stopped at the first check after the NaN


def test_abort_rule_retries_then_gives_up(evaluator, cross_entropy):
    # A threshold no model reaches after one epoch: every attempt is aborted at the check.
    task = DIGITS.replace(abort_threshold=1.0, abort_check_epoch=1.0, abort_attempts=3)
    progress_calls = []
    result = evaluator.evaluate(cross_entropy, task, progress=lambda done, total: progress_calls.append(done))
    from taylorglo_tf import data

    steps_per_epoch = len(data.load("digits").y_train) // 32  # tiny's batch size
    assert result.status == "aborted"
    assert result.attempts == 3
    assert result.fitness == 0.0
    assert result.steps == steps_per_epoch
    # Each attempt restarted from step 1.
    assert progress_calls.count(10) == 3


def test_abort_rule_below_threshold_only_so_a_training_run_is_not_retried(evaluator, cross_entropy):
    task = DIGITS.replace(abort_threshold=0.15, abort_check_epoch=1.0)
    result = evaluator.evaluate(cross_entropy, task)
    assert result.status == "ok" and result.attempts == 1


def test_progress_callback_sees_every_interval_and_can_stop_the_evaluation(evaluator, cross_entropy):
    seen = []

    def progress(done, total):
        seen.append((done, total))
        return done < 50  # False at 50 -> stop

    result = evaluator.evaluate(cross_entropy, DIGITS, progress=progress)
    assert seen == [(10, 300), (20, 300), (30, 300), (40, 300), (50, 300)]
    assert result.status == "aborted" and result.steps == 50 and result.fitness == 0.0


def test_candidates_of_one_task_reuse_the_compiled_step_without_retracing(evaluator):
    from taylorglo_tf.losses import TaylorGLOLoss
    from taylorglo_tf.training import Evaluator

    task = DIGITS.replace(steps=100)
    evaluator.evaluate(TaylorGLOLoss(PAPER_THETA), task)
    traces = evaluator.trace_count()
    second_theta = np.asarray(PAPER_THETA) * 0.5
    reused = evaluator.evaluate(TaylorGLOLoss(second_theta), task)
    assert evaluator.trace_count() == traces
    # The new theta really reached the compiled step: a fresh evaluator agrees.
    fresh = Evaluator().evaluate(TaylorGLOLoss(second_theta), task)
    assert reused.val_accuracy == pytest.approx(fresh.val_accuracy, abs=1e-6)
    assert reused.val_loss == pytest.approx(fresh.val_loss, rel=1e-4)


def test_same_seed_repeats_the_evaluation_and_another_seed_differs(evaluator, cross_entropy):
    task = DIGITS.replace(steps=100)
    first = evaluator.evaluate(cross_entropy, task)
    again = evaluator.evaluate(cross_entropy, task)
    other = evaluator.evaluate(cross_entropy, task.replace(seed=1))
    assert again.val_accuracy == first.val_accuracy
    assert again.val_loss == pytest.approx(first.val_loss, rel=1e-5)
    assert other.val_loss != pytest.approx(first.val_loss, rel=1e-5)


def test_test_split_is_scored_only_when_asked(evaluator, cross_entropy):
    task = DIGITS.replace(steps=50)
    assert evaluator.evaluate(cross_entropy, task).test_accuracy is None
    scored = evaluator.evaluate(cross_entropy, task, test=True)
    assert 0.5 < scored.test_accuracy <= 1.0 and math.isfinite(scored.test_loss)


def test_one_shot_evaluate_matches_the_reusing_evaluator(evaluator, cross_entropy):
    from taylorglo_tf.training import evaluate

    task = DIGITS.replace(steps=60)
    assert evaluate(cross_entropy, task).val_accuracy == evaluator.evaluate(cross_entropy, task).val_accuracy


def test_cutmix_batches_mix_the_two_losses_by_lambda():
    import keras
    import tensorflow as tf

    from taylorglo_tf.training.evaluator import batch_loss

    loss = keras.losses.CategoricalCrossentropy()
    labels = lambda y: tf.one_hot(y, 3)  # noqa: E731
    predictions = tf.constant([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    y_a, y_b = tf.constant([0, 2]), tf.constant([1, 1])
    mixed = batch_loss(loss, labels, (y_a, y_b, tf.constant(0.25)), predictions)
    expected = 0.25 * loss(labels(y_a), predictions) + 0.75 * loss(labels(y_b), predictions)
    assert float(mixed) == pytest.approx(float(expected), rel=1e-6)
    # One lambda per example weighs each example's two losses.
    per_example = batch_loss(loss, labels, (y_a, y_b, tf.constant([1.0, 0.0])), predictions)
    expected = (-math.log(0.7) - math.log(0.3)) / 2
    assert float(per_example) == pytest.approx(expected, rel=1e-5)


def test_bad_inputs_raise_clear_errors(evaluator, cross_entropy):
    with pytest.raises(ValueError, match="'no_such_model'"):
        evaluator.evaluate(cross_entropy, DIGITS.replace(model="no_such_model"))
    with pytest.raises(TypeError, match="keras.losses.Loss"):
        evaluator.evaluate(lambda y, p: y, DIGITS)
    with pytest.raises(TypeError, match="training.Task"):
        evaluator.evaluate(cross_entropy, DIGITS.to_dict())


def test_cutmix_task_trains_on_mixed_batches_from_the_pipeline(evaluator, cross_entropy):
    task = DIGITS.replace(steps=200, augmentation={"cutmix_prob": 0.5})
    result = evaluator.evaluate(cross_entropy, task)
    assert result.status == "ok" and result.val_accuracy >= 0.7


def test_time_varying_loss_sees_training_progress_through_the_full_recipe(evaluator):
    from taylorglo_tf import taylor
    from taylorglo_tf.losses import TaylorGLOLoss

    # f = c * x * y * t (centres 0): no gradient at t = 0, a label-pulling one as t grows.
    # It can only train if the evaluator feeds the progress t = step / 300 to the loss.

    expansion = taylor.Expansion(("x", "y", "t"), 3, trimmed=True)
    theta = np.zeros(expansion.num_vars + len(expansion.multi_indices))
    theta[expansion.num_vars + list(expansion.multi_indices).index((1, 1, 1))] = 40.0
    loss = TaylorGLOLoss(theta, inputs=("x", "y", "t"))
    full = evaluator.evaluate(loss, DIGITS.replace(steps=0))  # 0: the tiny recipe's 300 steps
    assert full.status == "ok" and full.steps == 300
    assert full.val_accuracy >= 0.8


def test_an_evaluator_keeps_at_most_max_sessions_tasks_warm(cross_entropy):
    from taylorglo_tf.training import Evaluator

    evaluator = Evaluator(max_sessions=1)
    first = DIGITS.replace(steps=5)
    evaluator.evaluate(cross_entropy, first)
    evaluator.evaluate(cross_entropy, first.replace(batch_size=16))  # another task: its own session
    assert len(evaluator._sessions) == 1
    assert next(iter(evaluator._sessions.values())).batch_size == 16


def test_initial_weights_kept_per_task_are_bounded_and_a_dropped_seed_reproduces(evaluator, cross_entropy):
    from taylorglo_tf.training.session import KEPT_INITIAL_STATES

    task = DIGITS.replace(steps=5, batch_size=8)  # a session of its own
    first = evaluator.evaluate(cross_entropy, task)
    for seed in range(1, KEPT_INITIAL_STATES + 1):
        evaluator.evaluate(cross_entropy, task.replace(seed=seed))
    session = evaluator._sessions[next(reversed(evaluator._sessions))]
    assert len(session.initial_states) == KEPT_INITIAL_STATES
    assert task.seed not in session.initial_states
    again = evaluator.evaluate(cross_entropy, task)  # seed 0's weights rebuilt
    assert again.val_accuracy == first.val_accuracy
    assert again.val_loss == pytest.approx(first.val_loss, rel=1e-5)


def test_lr_scale_multiplies_the_learning_rate_like_scaling_the_loss_without_retracing(evaluator, cross_entropy):
    """For SGD with momentum, cross-entropy at 10x the rate trains exactly like 10x cross-entropy."""
    from tests.helpers.scaled_loss import ScaledCrossEntropy

    task = DIGITS.replace(steps=40, lr_scale=0.1)
    at_recipe_rate = evaluator.evaluate(cross_entropy, task)
    traces = evaluator.trace_count()
    faster = evaluator.evaluate(cross_entropy, task.replace(lr_scale=1.0))
    assert evaluator.trace_count() == traces  # another rate: same session, same compiled step
    scaled_loss = evaluator.evaluate(ScaledCrossEntropy(10.0), task)
    assert faster.val_accuracy == pytest.approx(scaled_loss.val_accuracy, abs=1 / 300)  # one image of 300
    assert faster.val_loss == pytest.approx(scaled_loss.val_loss / 10, rel=1e-3)
    assert at_recipe_rate.val_accuracy < faster.val_accuracy - 0.1  # the rate really changed
