"""Early-stopping checkpoints in the training loop (``Evaluator.evaluate_many(checkpoints=..., on_checkpoint=...)``).

At each checkpoint the loop measures the running candidates' validation accuracy in one
pass, hands each value to its candidate's hook, then calls ``progress``: that is where a
trainer waits for the coordinator's decision and stops a candidate. The tiny model on
digits keeps every run around a second.
"""

import numpy as np
import pytest

from taylorglo_tf import taylor
from taylorglo_tf.spec import checkpoint_steps
from taylorglo_tf.training import Task
from tests.helpers.training import taylor_losses

PAPER_THETA = np.array(taylor.PAPER_MNIST_THETA)
FLAT_THETA = [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # a constant loss: never learns
DIGITS = Task(dataset="digits", model="tiny", steps=40, seed=0)


@pytest.fixture(scope="module")
def evaluator():
    from taylorglo_tf.training import Evaluator

    return Evaluator(progress_every=10)


def recorder(events, slot):
    def hook(index, steps, accuracy):
        events.append(("checkpoint", slot, index, steps, accuracy))

    return hook


# ------------------------------------------------------------------- where checkpoints fall (no training)


@pytest.mark.parametrize(
    ("fractions", "total", "steps"),
    [
        ([0.25, 0.5], 40, [10, 20]),
        ([1 / 8, 1 / 4, 1 / 2], 2000, [250, 500, 1000]),
        ([0.001, 1.0], 10, [1, 10]),  # never step 0, never past the last step
        ([0.3, 0.31], 3, [1, 1]),  # a short run may put two at one step
    ],
)
def test_a_checkpoint_falls_on_the_rounded_fraction_of_the_steps_between_1_and_the_last(fractions, total, steps):
    assert checkpoint_steps(fractions, total) == steps


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ([0.0], "got 0.0"),
        ([1.5], "got 1.5"),
        ([float("nan")], "got nan"),
        ([0.5, 0.25], r"ascending order, got \[0.5, 0.25\]"),
        (["half"], "half"),
        ([0.01] * 17, "at most 16"),
    ],
)
def test_bad_checkpoints_are_refused_naming_them(evaluator, fractions, message):
    with pytest.raises(ValueError, match=message):
        checkpoint_steps(fractions, 100)
    with pytest.raises(ValueError, match=message):
        evaluator.evaluate_many(taylor_losses([PAPER_THETA]), DIGITS, checkpoints=fractions)


def test_one_hook_per_loss_or_none(evaluator):
    with pytest.raises(ValueError, match="on_checkpoint has 1 hooks for 2 losses"):
        evaluator.evaluate_many(
            taylor_losses([PAPER_THETA, PAPER_THETA]), DIGITS, checkpoints=[0.5], on_checkpoint=[None]
        )


# ---------------------------------------------------------------------------------------- training


def test_each_hook_hears_its_validation_accuracy_at_the_checkpoint_steps_then_progress_is_called(evaluator):
    """The value at a checkpoint is what validating the model trained that far gives: partial training is
    the first steps of the full run, so a run of ``steps`` steps scores the same weights."""
    events = []

    def progress(slot):
        return lambda done, total: events.append(("progress", slot, done))

    thetas = [PAPER_THETA, PAPER_THETA * 0.8]
    results = evaluator.evaluate_many(
        taylor_losses(thetas),
        DIGITS,
        progress=[progress(0), progress(1)],
        checkpoints=[0.125, 0.5, 1.0],
        on_checkpoint=[recorder(events, 0), recorder(events, 1)],
    )
    heard = [e for e in events if e[0] == "checkpoint"]
    assert [(slot, index, steps) for _, slot, index, steps, _ in heard] == [
        (0, 0, 5),
        (1, 0, 5),
        (0, 1, 20),
        (1, 1, 20),
        (0, 2, 40),
        (1, 2, 40),
    ]
    # a checkpoint's step is a report step: both hooks first, then both progress calls
    at_5 = [e[:3] for e in events if (e[0] == "checkpoint" and e[3] == 5) or (e[0] == "progress" and e[2] == 5)]
    assert at_5 == [("checkpoint", 0, 0), ("checkpoint", 1, 0), ("progress", 0, 5), ("progress", 1, 5)]
    for slot, result in enumerate(results):
        assert result.status == "ok"
        assert result.checkpoints == tuple((i, s, a) for _, k, i, s, a in heard if k == slot)
        assert result.checkpoints[-1][2] == pytest.approx(result.val_accuracy)  # the last is at the end
        for index, steps, accuracy in result.checkpoints[:2]:
            shorter = evaluator.evaluate(taylor_losses([thetas[slot]])[0], DIGITS.replace(steps=steps))
            assert accuracy == pytest.approx(shorter.val_accuracy, abs=1e-6), (slot, index)


def test_checkpoints_change_no_candidates_result(evaluator):
    thetas = [PAPER_THETA, PAPER_THETA * 0.8, PAPER_THETA * 1.2]
    plain = evaluator.evaluate_many(taylor_losses(thetas), DIGITS)
    measured = evaluator.evaluate_many(taylor_losses(thetas), DIGITS, checkpoints=[0.25, 0.5])
    for one_plain, one_measured in zip(plain, measured):
        assert one_plain.checkpoints == ()
        assert [steps for _, steps, _ in one_measured.checkpoints] == [10, 20]
        assert (one_measured.status, one_measured.steps) == (one_plain.status, one_plain.steps)
        assert one_measured.val_accuracy == pytest.approx(one_plain.val_accuracy, abs=1e-6)
        assert one_measured.val_loss == pytest.approx(one_plain.val_loss, rel=1e-4)


def test_stopping_one_candidate_at_a_checkpoint_leaves_the_others_as_without_stopping(evaluator):
    """The middle one of three is stopped where it reports its first checkpoint (as a trainer does on the
    coordinator's word): it keeps the accuracy it had there, the others train on unchanged."""
    thetas = [PAPER_THETA, PAPER_THETA * 0.8, PAPER_THETA * 1.2]
    unstopped = evaluator.evaluate_many(taylor_losses(thetas), DIGITS, checkpoints=[0.25, 0.5])
    heard = []

    def stop_after_first_checkpoint(done, total):
        return not heard

    stopped = evaluator.evaluate_many(
        taylor_losses(thetas),
        DIGITS,
        progress=[None, stop_after_first_checkpoint, None],
        checkpoints=[0.25, 0.5],
        on_checkpoint=[None, lambda index, steps, accuracy: heard.append(accuracy), None],
    )
    assert (stopped[1].status, stopped[1].steps, stopped[1].fitness) == ("aborted", 10, 0.0)
    assert stopped[1].checkpoints == unstopped[1].checkpoints[:1]
    assert stopped[1].val_accuracy == pytest.approx(heard[0], abs=1e-6)  # its weights stayed where it stopped
    for k in (0, 2):
        assert (stopped[k].status, stopped[k].steps) == ("ok", DIGITS.steps)
        assert stopped[k].val_accuracy == pytest.approx(unstopped[k].val_accuracy, abs=1e-6)
        assert stopped[k].val_loss == pytest.approx(unstopped[k].val_loss, rel=1e-4)
        assert [s for _, s, _ in stopped[k].checkpoints] == [10, 20]
        assert [a for _, _, a in stopped[k].checkpoints] == pytest.approx([a for _, _, a in unstopped[k].checkpoints])


def test_a_retried_candidate_reports_the_checkpoints_of_its_last_attempt(evaluator):
    """The abort rule restarts from step 1: the hooks hear each attempt, the result keeps the last one's."""
    task = DIGITS.replace(steps=100, abort_threshold=0.5, abort_check_epoch=1.0, abort_attempts=2)
    events = []
    [result] = evaluator.evaluate_many(
        taylor_losses([FLAT_THETA]), task, checkpoints=[0.1, 0.9], on_checkpoint=[recorder(events, 0)]
    )
    assert (result.status, result.attempts) == ("aborted", 2)
    # 0.9 * 100 = step 90 lies past the abort check (one epoch, 37 steps): reached by neither attempt
    assert [(index, steps) for _, _, index, steps, _ in events] == [(0, 10), (0, 10)]
    assert [(index, steps) for index, steps, _ in result.checkpoints] == [(0, 10)]


def test_checkpoint_passes_are_timed_apart_from_the_train_steps(evaluator):
    waits = []

    def slow_progress(done, total):  # a trainer waiting for a decision: not training time
        if done == 20:
            import time

            time.sleep(0.3)
            waits.append(done)

    evaluator.evaluate_many(taylor_losses([PAPER_THETA]), DIGITS, progress=[slow_progress], checkpoints=[0.25, 0.5])
    timings = evaluator.last_timings
    assert timings["checkpoint_passes"] == 2.0
    assert 0 < timings["checkpoint_s"] < timings["total_s"]
    assert timings["checkpoint_cpu_s"] > 0
    assert timings["checkpoint_wait_s"] >= 0.3 and waits == [20]
    assert timings["train_steps_s"] < timings["total_s"] - 0.3
    evaluator.evaluate_many(taylor_losses([PAPER_THETA]), DIGITS)
    assert evaluator.last_timings["checkpoint_passes"] == 0.0 and evaluator.last_timings["checkpoint_s"] == 0.0
