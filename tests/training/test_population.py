"""Batched evaluation (``Evaluator.evaluate_many``): K candidates per train step, each as if alone."""

import dataclasses

import numpy as np
import pytest

from taylorglo_tf import taylor
from taylorglo_tf.training import Task
from tests.helpers.training import taylor_losses

PAPER_THETA = np.array(taylor.PAPER_MNIST_THETA)
EXPLODING_THETA = [0.0, 0.0, 1e30, 1e30, 1e30, 1e30, 1e30, 1e30]
# Zero coefficients: a constant loss, so the model never learns (for the abort rule).
FLAT_THETA = [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
DIGITS = Task(dataset="digits", model="tiny", steps=100, seed=0)


@pytest.fixture(scope="module")
def evaluator():
    from taylorglo_tf.training import Evaluator

    return Evaluator(progress_every=10)


def assert_same_as_alone(batched, alone):
    assert batched.status == alone.status
    assert batched.steps == alone.steps and batched.attempts == alone.attempts
    assert batched.val_accuracy == alone.val_accuracy
    assert batched.fitness == alone.fitness
    if np.isfinite(alone.val_loss):
        assert batched.val_loss == pytest.approx(alone.val_loss, rel=1e-3)
    else:
        assert not np.isfinite(batched.val_loss)


def test_four_candidates_trained_together_each_match_their_run_alone_and_a_diverging_one_changes_nothing(
    evaluator,
):
    thetas = [PAPER_THETA, PAPER_THETA * 0.8, EXPLODING_THETA, PAPER_THETA * 1.2]
    alone = [evaluator.evaluate(loss, DIGITS) for loss in taylor_losses(thetas)]
    batched = evaluator.evaluate_many(taylor_losses(thetas), DIGITS)
    assert [r.status for r in batched] == ["ok", "ok", "diverged", "ok"]
    assert batched[2].steps < DIGITS.steps and batched[2].fitness == 0.0  # stopped at the first check
    for one_batched, one_alone in zip(batched, alone):
        assert_same_as_alone(one_batched, one_alone)
    # The others do not notice the diverging one: the same batch without it agrees.
    without = evaluator.evaluate_many(taylor_losses([thetas[0], thetas[1], thetas[3]]), DIGITS)
    for one_without, one_batched in zip(without, [batched[0], batched[1], batched[3]]):
        assert_same_as_alone(one_without, one_batched)


def test_dropout_masks_are_each_candidates_own_as_when_trained_alone(evaluator):
    # basic_cnn has dropout 0.4; on 8x8 digits it is small enough for a test.
    task = Task(dataset="digits", model="basic_cnn", steps=40, batch_size=32, seed=3)
    thetas = [PAPER_THETA, PAPER_THETA * 0.5]
    alone = [evaluator.evaluate(loss, task) for loss in taylor_losses(thetas)]
    batched = evaluator.evaluate_many(taylor_losses(thetas), task)
    for one_batched, one_alone in zip(batched, alone):
        assert_same_as_alone(one_batched, one_alone)


def test_a_stopped_candidate_stops_alone_and_the_others_train_on(evaluator):
    seen = {0: [], 1: []}

    def watcher(slot, stop_at=None):
        def progress(done, total):
            seen[slot].append(done)
            return stop_at is None or done < stop_at

        return progress

    thetas = [PAPER_THETA, PAPER_THETA * 0.8]
    batched = evaluator.evaluate_many(taylor_losses(thetas), DIGITS, progress=[watcher(0), watcher(1, stop_at=50)])
    assert seen[1] == [10, 20, 30, 40, 50]
    assert seen[0] == list(range(10, DIGITS.steps + 1, 10))
    assert batched[1].status == "aborted" and batched[1].steps == 50 and batched[1].fitness == 0.0
    assert_same_as_alone(batched[0], evaluator.evaluate(taylor_losses(thetas[:1])[0], DIGITS))


def test_the_abort_rule_retries_only_the_candidate_that_hit_it(evaluator):
    task = DIGITS.replace(abort_threshold=0.5, abort_check_epoch=1.0, abort_attempts=3)
    thetas = [PAPER_THETA, FLAT_THETA]
    alone = [evaluator.evaluate(loss, task) for loss in taylor_losses(thetas)]
    batched = evaluator.evaluate_many(taylor_losses(thetas), task)
    assert (batched[0].status, batched[0].attempts) == ("ok", 1)
    assert (batched[1].status, batched[1].attempts) == ("aborted", 3)
    for one_batched, one_alone in zip(batched, alone):
        assert_same_as_alone(one_batched, one_alone)


def test_losses_of_different_forms_train_in_one_call_each_as_alone(evaluator):
    from taylorglo_tf import losses

    mixed = [losses.get("cross_entropy"), taylor_losses([PAPER_THETA])[0]]
    alone = [evaluator.evaluate(loss, DIGITS, test=True) for loss in mixed]
    batched = evaluator.evaluate_many(mixed, DIGITS, test=True)
    for one_batched, one_alone in zip(batched, alone):
        assert_same_as_alone(one_batched, one_alone)
        assert one_batched.test_accuracy == one_alone.test_accuracy


def test_new_batches_of_one_task_reuse_the_compiled_step_without_retracing(evaluator):
    task = DIGITS.replace(steps=20)
    evaluator.evaluate_many(taylor_losses([PAPER_THETA, PAPER_THETA * 0.9]), task)
    traces = evaluator.trace_count()
    evaluator.evaluate_many(taylor_losses([PAPER_THETA * 1.1, PAPER_THETA * 0.7]), task)
    assert evaluator.trace_count() == traces


def test_a_smaller_batch_runs_only_its_own_copies_and_traces_once_per_width():
    from taylorglo_tf.training import Evaluator

    evaluator = Evaluator(progress_every=10)  # its own: no width traced before
    task = DIGITS.replace(steps=20)
    pair = evaluator.evaluate_many(taylor_losses([PAPER_THETA * 1.1, PAPER_THETA * 0.7]), task)
    traced_pair = evaluator.trace_count()
    fewer = evaluator.evaluate_many(taylor_losses([PAPER_THETA * 0.7]), task)  # slot 0 of the two copies
    traced_one = evaluator.trace_count()
    assert traced_one > traced_pair  # a step one copy wide
    again = evaluator.evaluate_many(taylor_losses([PAPER_THETA * 0.7]), task)
    assert evaluator.trace_count() == traced_one
    assert_same_as_alone(fewer[0], pair[1])
    assert again[0] == dataclasses.replace(fewer[0], wall_time_s=again[0].wall_time_s)


def test_widths_are_powers_of_two_so_three_candidates_reuse_the_step_of_four():
    from taylorglo_tf.training import Evaluator

    evaluator = Evaluator(progress_every=10)
    task = DIGITS.replace(steps=10)
    evaluator.evaluate_many(taylor_losses([PAPER_THETA * s for s in (0.7, 0.8, 0.9, 1.0)]), task)
    traces = evaluator.trace_count()
    three = evaluator.evaluate_many(taylor_losses([PAPER_THETA * s for s in (0.7, 0.8, 0.9)]), task)
    assert evaluator.trace_count() == traces and len(three) == 3


def test_bad_arguments_are_refused_naming_them(evaluator):
    with pytest.raises(ValueError, match="2 callbacks for 1 losses"):
        evaluator.evaluate_many(taylor_losses([PAPER_THETA]), DIGITS, progress=[None, None])
    with pytest.raises(TypeError, match="keras.losses.Loss, got str"):
        evaluator.evaluate_many(["cross_entropy"], DIGITS)
    with pytest.raises(TypeError, match="training.Task"):
        evaluator.evaluate_many(taylor_losses([PAPER_THETA]), {"model": "tiny"})
    assert evaluator.evaluate_many([], DIGITS) == []


def test_candidates_trained_together_at_another_learning_rate_match_their_runs_alone(evaluator):
    from taylorglo_tf import losses

    def candidates():
        return [losses.get("cross_entropy"), *taylor_losses([PAPER_THETA])]

    task = DIGITS.replace(steps=40, lr_scale=0.3)
    alone = [evaluator.evaluate(loss, task) for loss in candidates()]
    batched = evaluator.evaluate_many(candidates(), task)
    for one_batched, one_alone in zip(batched, alone):
        assert_same_as_alone(one_batched, one_alone)
    at_recipe_rate = evaluator.evaluate_many(candidates(), task.replace(lr_scale=1.0))
    assert at_recipe_rate[0].val_loss < 0.9 * batched[0].val_loss  # cross-entropy: the rate really changed


def test_a_candidate_stopped_early_keeps_its_batch_norm_statistics_while_the_others_train():
    """A stopped copy's forward pass goes on in the batched step; its score is still that of its run alone."""
    from taylorglo_tf.training import Evaluator

    evaluator = Evaluator(progress_every=5)
    task = DIGITS.replace(model="preact_resnet20", steps=15, batch_size=32)  # a model with batch norm

    def stop_after_5(steps_done, total):
        return steps_done < 5

    losses = taylor_losses([PAPER_THETA, PAPER_THETA * 0.9])
    alone = evaluator.evaluate(losses[0], task, progress=stop_after_5)
    batched = evaluator.evaluate_many(losses, task, progress=[stop_after_5, None])
    assert alone.status == batched[0].status == "aborted" and batched[0].steps == 5
    assert_same_as_alone(batched[0], alone)
    assert batched[1].steps == 15


def test_evaluate_is_a_population_of_one_with_the_same_compiled_step_and_result(evaluator):
    """One training loop: ``evaluate`` runs ``evaluate_many``'s loop and steps, not a loop of its own."""
    task = DIGITS.replace(steps=20)
    [loss] = taylor_losses([PAPER_THETA * 0.9])
    alone = evaluator.evaluate(loss, task)
    traces = evaluator.trace_count()
    [many] = evaluator.evaluate_many([loss], task)
    assert evaluator.trace_count() == traces
    assert many == dataclasses.replace(alone, wall_time_s=many.wall_time_s)


class CheckedScaledCrossEntropy:
    """Cross-entropy times ``theta[0]`` with a numerics check on its gradient: a theta of inf makes the
    train step raise (scoring takes no gradient). Theta-settable (``theta``, ``set_theta``), so losses
    of different theta share one compiled step."""

    @staticmethod
    def make(theta):
        import keras
        import tensorflow as tf

        class Checked(keras.losses.Loss):
            def __init__(self, theta=(1.0,), name="checked_scaled_cross_entropy", **kwargs):
                super().__init__(name=name, **kwargs)
                self._theta = tf.Variable(np.asarray(theta, np.float32), trainable=False)

            @property
            def theta(self):
                return self._theta.numpy()

            def set_theta(self, theta):
                self._theta.assign(np.asarray(theta, np.float32))

            def call(self, y_true, y_pred):
                @tf.custom_gradient
                def checked(predictions):
                    return tf.identity(predictions), lambda up: tf.debugging.check_numerics(up, "checked gradient")

                return keras.losses.categorical_crossentropy(y_true, checked(y_pred)) * self._theta[0]

            def get_config(self):
                return {**super().get_config(), "theta": self.theta.tolist()}

        return Checked(theta)


def test_a_step_that_raises_diverges_its_own_candidate_only(evaluator):
    """A numerics check failing inside the batched step cannot tell whose it is: the batch trains
    again one candidate at a time, so only the candidate that raises is ``diverged``."""
    task = DIGITS.replace(steps=20)
    thetas = [[1.0], [float("inf")], [0.5]]
    alone = [evaluator.evaluate(CheckedScaledCrossEntropy.make(theta), task) for theta in thetas]
    assert (alone[1].status, alone[1].steps, alone[1].fitness) == ("diverged", 1, 0.0)
    batched = evaluator.evaluate_many([CheckedScaledCrossEntropy.make(theta) for theta in thetas], task)
    assert [r.status for r in batched] == ["ok", "diverged", "ok"]
    for one_batched, one_alone in zip(batched, alone):
        assert_same_as_alone(one_batched, one_alone)
