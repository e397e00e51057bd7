"""Comparisons of two losses: paired runs, the Welch test, and `taylorglo compare` end to end on digits."""

import json
import subprocess
import sys

import pytest

from taylorglo_tf import stats
from taylorglo_tf.compare import (
    DEFAULT_LR_MULTIPLIERS,
    check_lr_multipliers,
    choose_learning_rate,
    compare,
    compare_tuned,
)
from taylorglo_tf.training import EvaluationResult, Task


class ScriptedEvaluator:
    """Returns fixed test accuracies per (loss, seed) and records the calls."""

    def __init__(self, accuracies):
        self.accuracies = accuracies  # loss -> list by run
        self.calls = []

    def evaluate(self, loss, task, progress=None, *, test=False):
        self.calls.append((loss, task.seed, test))
        if progress is not None:
            progress(task.steps, task.steps)
        accuracy = self.accuracies[loss][task.seed - 7]
        return EvaluationResult(
            accuracy, accuracy, 0.1, task.steps, 0.01, 1, "ok", test_accuracy=accuracy, test_loss=0.1
        )


def test_compare_pairs_seeds_and_tests_the_loss_against_the_baseline():
    accuracies = {"L": [0.99, 0.98, 0.995, 0.985], "B": [0.97, 0.975, 0.98, 0.96]}
    evaluator = ScriptedEvaluator(accuracies)
    steps_seen = []
    result = compare(
        "L",
        "B",
        Task(steps=5, seed=7),
        runs=4,
        evaluator=evaluator,
        progress=lambda side, run, done, total: steps_seen.append((side, run, done, total)),
    )
    # Run i trains both sides with seed 7 + i, on the test split.
    assert evaluator.calls == [(loss, 7 + i, True) for i in range(4) for loss in ("L", "B")]
    assert result.accuracies("loss") == accuracies["L"]
    assert result.accuracies("baseline") == accuracies["B"]
    assert result.welch == stats.welch_t_test(accuracies["L"], accuracies["B"], alternative="greater")
    assert result.summaries["loss"].mean == pytest.approx(0.9875)
    assert steps_seen[0] == ("loss", 0, 5, 5) and steps_seen[1] == ("baseline", 0, 5, 5)
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["welch"]["pvalue"] == pytest.approx(result.welch.pvalue)
    assert [r["seed"] for r in as_json["runs"]] == [7, 7, 8, 8, 9, 9, 10, 10]


class RateEvaluator:
    """Accuracy is a function of (loss, learning-rate scale, seed); records every call and split asked for."""

    def __init__(self, accuracy):
        self.accuracy = accuracy
        self.calls = []  # (loss, lr_scale, seed, test)

    def evaluate(self, loss, task, progress=None, *, test=False):
        self.calls.append((loss, task.lr_scale, task.seed, test))
        accuracy = self.accuracy(loss, task.lr_scale, task.seed)
        status = "ok" if accuracy > 0 else "diverged"
        return EvaluationResult(
            accuracy if status == "ok" else 0.0,
            accuracy,
            0.1,
            task.steps,
            0.01,
            1,
            status,
            test_accuracy=accuracy if test else None,
            test_loss=0.1 if test else None,
        )


def scaled_loss_world(loss, lr_scale, seed):
    """ "L" is the baseline "B" at 10x the rate; B is best at 3x, diverges at 30x and above."""
    effective = lr_scale * (10 if loss == "L" else 1)
    best = {0.3: 0.5, 1.0: 0.80, 3.0: 0.95, 10.0: 0.90}.get(round(effective, 6), 0.0)
    return best + 0.001 * (seed % 3) if best else 0.0


def test_choose_learning_rate_uses_validation_only_and_picks_the_best_mean():
    evaluator = RateEvaluator(scaled_loss_world)
    choice = choose_learning_rate("B", Task(steps=5, seed=0), seeds=[20, 21], evaluator=evaluator)
    assert choice.chosen == 3.0
    assert all(test is False for *_, test in evaluator.calls)  # the test split is never asked for
    assert [(scale, seed) for _, scale, seed, _ in evaluator.calls] == [
        (m, s) for m in DEFAULT_LR_MULTIPLIERS for s in (20, 21)
    ]
    assert choice.statuses[-1] == ("diverged", "diverged") and choice.scores[-1] == (0.0, 0.0)
    record = choice.to_dict()
    assert record["split"] == "validation"
    assert record["chosen_learning_rate"] == pytest.approx(0.05 * 3)  # tiny's recipe rate is 0.05
    assert [row["multiplier"] for row in record["grid"]] == list(DEFAULT_LR_MULTIPLIERS)
    assert record["grid"][2]["mean_validation_accuracy"] == pytest.approx(0.951)  # (0.952 + 0.950) / 2


def test_choose_learning_rate_breaks_ties_toward_the_tasks_own_rate():
    evaluator = RateEvaluator(lambda loss, scale, seed: 0.9)
    assert choose_learning_rate("B", Task(steps=5), seeds=[0], evaluator=evaluator).chosen == 1.0
    only_failures = RateEvaluator(lambda loss, scale, seed: 0.0)
    assert (
        choose_learning_rate("B", Task(steps=5), seeds=[0], multipliers=[10, 0.5, 3], evaluator=only_failures).chosen
        == 0.5
    )  # nearest 1 by ratio
    assert (
        choose_learning_rate("B", Task(steps=5), seeds=[0], multipliers=[2, 0.5], evaluator=only_failures).chosen == 0.5
    )  # then the smaller


@pytest.mark.parametrize("multipliers", [[], [1, 0], [1, -3], [1, float("nan")], [1, 1.0], "1,3"])
def test_learning_rate_multipliers_must_be_distinct_positive_numbers(multipliers):
    with pytest.raises(ValueError, match="multipliers"):
        check_lr_multipliers(multipliers)


def test_tuned_comparison_retrains_the_baseline_at_its_chosen_rate_and_keeps_the_loss_runs():
    evaluator = RateEvaluator(scaled_loss_world)
    result = compare_tuned(
        "L",
        "B",
        Task(steps=5, seed=0),
        runs=3,
        tuning_seeds=2,
        evaluator=evaluator,
        loss_name="ce_x10",
        baseline_name="ce",
    )
    tuning, comparisons = evaluator.calls[:10], evaluator.calls[10:]
    # Tuning: the baseline only, on seeds no comparison run uses, never on the test split.
    assert {(loss, seed, test) for loss, _, seed, test in tuning} == {("B", 3, False), ("B", 4, False)}
    # Then the plain comparison (both sides at x1) and the baseline alone again at x3.
    assert comparisons == [(loss, 1.0, seed, True) for seed in range(3) for loss in ("L", "B")] + [
        ("B", 3.0, seed, True) for seed in range(3)
    ]
    assert result.baseline_lr.chosen == 3.0 and result.loss_lr is None
    assert result.plain.accuracies("loss") == result.tuned.accuracies("loss")  # the same runs, kept
    assert result.plain.win == pytest.approx(0.10)
    assert result.tuned.win == pytest.approx(-0.05)
    assert result.win_shrank
    assert result.plain.welch.pvalue < 0.05 < result.tuned.welch.pvalue
    assert result.verdict() == (
        "The win is a learning-rate effect: ce_x10 beats ce by +10.00 points at the task's learning rate (0.05), "
        "but not ce at its best learning rate (x3 = 0.15) (-5.00 points)."
    )
    record = json.loads(json.dumps(result.to_dict()))
    assert [r["lr_scale"] for r in record["runs"]] == [1.0] * 6  # the plain comparison stays at the top
    assert record["tuned"]["lr_multipliers"] == {"loss": 1.0, "baseline": 3.0}
    assert record["tuned"]["learning_rates"]["baseline"] == pytest.approx(0.15)
    assert [(r["side"], r["lr_scale"]) for r in record["tuned"]["runs"]] == [("loss", 1.0), ("baseline", 3.0)] * 3
    assert record["learning_rate_tuning"]["baseline"]["chosen_multiplier"] == 3.0
    assert record["learning_rate_tuning"]["loss"] is None
    assert record["win"]["shrank_by_more_than_half"] is True
    assert record["verdict"] == result.verdict()


def test_tuning_the_loss_too_treats_both_sides_alike():
    evaluator = RateEvaluator(scaled_loss_world)
    result = compare_tuned(
        "L", "B", Task(steps=5, seed=0), runs=2, tuning_seeds=1, tune_loss_lr=True, evaluator=evaluator
    )
    assert (result.loss_lr.chosen, result.baseline_lr.chosen) == (0.3, 3.0)  # both at effective rate 3x
    assert result.tuned.accuracies("loss") == pytest.approx(result.tuned.accuracies("baseline"))
    assert result.plain.win > 0 and result.tuned.win == pytest.approx(0.0) and result.win_shrank
    assert result.verdict().endswith("In the tuned comparison loss also trains at its own best learning rate (x0.3).")


def test_a_win_that_holds_against_the_tuned_baseline_is_reported_as_holding():
    def world(loss, scale, seed):
        return (0.95 if loss == "L" else 0.89 if scale == 3.0 else 0.85) + 0.001 * seed

    result = compare_tuned(
        "L",
        "B",
        Task(steps=5),
        runs=3,
        tuning_seeds=1,
        evaluator=RateEvaluator(world),
        loss_name="found",
        baseline_name="ce",
    )
    assert result.baseline_lr.chosen == 3.0
    assert (result.plain.win, result.tuned.win) == (pytest.approx(0.10), pytest.approx(0.06))
    assert not result.win_shrank
    assert result.verdict().startswith("The win holds against a tuned baseline: found beats ce by +10.00 points")


def test_compare_needs_two_runs_per_side():
    with pytest.raises(ValueError, match="runs must be an integer >= 2"):
        compare("L", "B", Task(), runs=1, evaluator=ScriptedEvaluator({}))


def test_compare_command_module_does_not_import_tensorflow():
    code = "import sys, taylorglo_tf.commands.compare; print('tensorflow' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"


def _cli(*argv):
    """`taylorglo compare ARGV`, in-process through the `taylorglo` entry point."""
    from taylorglo_tf.cli import main

    return main(["compare", *argv])


def test_taylorglo_compare_end_to_end_on_digits_prints_both_tables_and_writes_json(tmp_path, capsys):
    from taylorglo_tf import losses, taylor

    loss_path = tmp_path / "taylor_ce.json"
    losses.save_json(losses.TaylorGLOLoss(taylor.PAPER_MNIST_THETA), loss_path)
    task_path = tmp_path / "task.yaml"
    task_path.write_text("dataset: digits\nmodel: tiny\nsteps: 300\nseed: 0\n")
    out = tmp_path / "comparison.json"
    rc = _cli(
        "--loss",
        str(loss_path),
        "--baseline",
        "cross_entropy",
        "--runs",
        "3",
        "--task",
        str(task_path),
        "--steps",
        "80",
        "--json",
        str(out),
        "--tune-baseline-lr",
        "--lr-multipliers",
        "0.3,1",
        "--tuning-seeds",
        "1",
    )
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert rc == 0
    for text in (
        "side",
        "mean",
        "std",
        "taylor_ce",
        "cross_entropy",
        "Welch",
        "p =",
        "At the task's learning rate",
        "At the tuned learning rate",
        "chosen by mean validation accuracy",
        "loss scale:",
    ):
        assert text in printed
    written = json.loads(out.read_text())
    tuning = written["learning_rate_tuning"]["baseline"]
    assert [row["multiplier"] for row in tuning["grid"]] == [0.3, 1.0] and tuning["seeds"] == [3]
    assert written["tuned"]["lr_multipliers"]["baseline"] == tuning["chosen_multiplier"]
    assert written["loss_scale"]["ratio"] > 0 and written["verdict"] in printed
    assert written["task"]["steps"] == 80  # the flag overrides the task file
    assert len(written["runs"]) == 6
    loss_accuracies = [r["test_accuracy"] for r in written["runs"] if r["side"] == "loss"]
    baseline_accuracies = [r["test_accuracy"] for r in written["runs"] if r["side"] == "baseline"]
    assert all(0.5 < a <= 1.0 for a in loss_accuracies + baseline_accuracies)  # both losses train
    assert written["summary"]["loss"]["mean"] == pytest.approx(sum(loss_accuracies) / 3)
    expected = stats.welch_t_test(loss_accuracies, baseline_accuracies)
    assert written["welch"]["pvalue"] == pytest.approx(expected.pvalue)
    assert f"p = {expected.pvalue:.4g}" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--loss", "no_such_loss"], "--loss 'no_such_loss'"),
        (["--loss", "cross_entropy", "--baseline", "missing.json"], "missing.json"),
        (["--loss", "cross_entropy", "--runs", "1"], "--runs must be >= 2"),
        (["--loss", "cross_entropy", "--fraction", "2"], "Task.fraction"),
        (["--loss", "cross_entropy", "--task", "nowhere.yaml"], "nowhere.yaml"),
        (["--loss", "cross_entropy", "--lr-scale", "-2"], "Task.lr_scale must be a positive, finite number, got -2"),
        (["--loss", "cross_entropy", "--tuning-seeds", "0"], "--tuning-seeds must be >= 1, got 0"),
    ],
)
def test_taylorglo_compare_reports_bad_arguments_by_name(argv, message, capsys):
    assert _cli(*argv) == 2
    assert message in capsys.readouterr().err.replace("\n", "")


def test_a_bad_lr_multiplier_list_is_a_usage_error_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli("--loss", "cross_entropy", "--lr-multipliers", "1,-3")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--lr-multipliers" in err and "'1,-3'" in err and "got -3.0" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "no_such_model"], "unknown model 'no_such_model'"),
        (["--dataset", "npz:missing.npz"], "npz file missing.npz not found"),
    ],
)
def test_a_model_or_dataset_that_cannot_be_opened_is_an_error_naming_it_not_a_traceback(argv, message, capsys):
    assert _cli("--loss", "cross_entropy", "--runs", "2", "--steps", "5", *argv) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert message in err and "Traceback" not in err


def test_task_file_with_an_unknown_field_is_rejected_by_name(tmp_path, capsys):
    task_path = tmp_path / "task.yaml"
    task_path.write_text("dataset: digits\nepochs: 3\n")
    assert _cli("--loss", "cross_entropy", "--task", str(task_path)) == 2
    assert "['epochs']" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "text"), [("task.yaml", "dataset: [digits\n"), ("task.json", '{"steps": 5,}')])
def test_a_task_file_that_cannot_be_parsed_is_rejected_by_name(tmp_path, capsys, name, text):
    task_path = tmp_path / name
    task_path.write_text(text)
    assert _cli("--loss", "cross_entropy", "--task", str(task_path)) == 2
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "cannot be parsed" in err and name in err


# ----------------------------------------------------------------------------- the tuned baseline on digits


def test_ten_times_cross_entropy_wins_the_plain_comparison_but_not_the_tuned_one_on_digits(monkeypatch):
    """A loss that is only cross-entropy x 10 'beats' cross-entropy at a rate too low for the step budget.

    At a tenth of the tiny recipe's rate (lr 0.005), 60 steps leave cross-entropy far behind
    10 x cross-entropy (which trains like cross-entropy at lr 0.05). Choosing cross-entropy's
    rate on the validation split (the default grid 0.3x..30x) removes the win. Measured with
    task seeds 0, 1, 2, 3 and 5: plain p <= 0.002 (+36 to +42 points); x10 or x30 chosen;
    tuned p 0.26 to 1.0 (at most +1.8 points).
    """
    import keras

    from taylorglo_tf.training import Evaluator
    from taylorglo_tf.training.session import Session
    from tests.helpers.scaled_loss import ScaledCrossEntropy

    class SplitRecorder(Evaluator):
        """The real evaluator, recording which data splits each evaluation scored."""

        def __init__(self):
            super().__init__()
            self.evaluations = []  # (lr_scale, seed, splits scored)
            self._splits = []

        def evaluate(self, loss, task, progress=None, *, test=False):
            self._splits = []
            result = super().evaluate(loss, task, progress, test=test)
            self.evaluations.append((task.lr_scale, task.seed, tuple(self._splits)))
            return result

    evaluator = SplitRecorder()
    score = Session.score

    def recording_score(session, compiled, split, active):
        evaluator._splits.append(split)
        return score(session, compiled, split, active)

    monkeypatch.setattr(Session, "score", recording_score)
    task = Task(dataset="digits", model="tiny", steps=60, seed=0, lr_scale=0.1)
    result = compare_tuned(
        ScaledCrossEntropy(10.0),
        keras.losses.CategoricalCrossentropy(),
        task,
        runs=4,
        tuning_seeds=1,
        evaluator=evaluator,
        loss_name="ce_x10",
        baseline_name="ce",
    )

    tuning = evaluator.evaluations[: len(DEFAULT_LR_MULTIPLIERS)]
    assert [(scale, seed) for scale, seed, _ in tuning] == [(0.1 * m, 4) for m in DEFAULT_LR_MULTIPLIERS]
    assert all(splits == ("val",) for *_, splits in tuning)  # the choice never touched the test split
    assert all("test" in splits for *_, splits in evaluator.evaluations[len(tuning) :])
    assert result.plain.win > 0.1 and result.plain.welch.pvalue < 0.05  # the plain comparison: a win
    assert result.baseline_lr.chosen >= 10  # the rate the scale stands for (or more)
    assert result.tuned.welch.pvalue > 0.05  # the tuned comparison: no win
    assert result.win_shrank and "learning-rate effect" in result.verdict()
