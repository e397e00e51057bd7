"""Comparisons of two losses: paired runs, the Welch test, and `taylorglo compare` end to end on digits."""

import json
import subprocess
import sys

import pytest

from taylorglo_tf import stats
from taylorglo_tf.compare import compare
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
        return EvaluationResult(accuracy, accuracy, 0.1, task.steps, 0.01, 1, "ok", test_accuracy=accuracy, test_loss=0.1)


def test_compare_pairs_seeds_and_tests_the_loss_against_the_baseline():
    accuracies = {"L": [0.99, 0.98, 0.995, 0.985], "B": [0.97, 0.975, 0.98, 0.96]}
    evaluator = ScriptedEvaluator(accuracies)
    steps_seen = []
    result = compare("L", "B", Task(steps=5, seed=7), runs=4, evaluator=evaluator,
                     progress=lambda side, run, done, total: steps_seen.append((side, run, done, total)))
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


def test_taylorglo_compare_end_to_end_on_digits_prints_the_table_and_writes_json(tmp_path, capsys):
    from taylorglo_tf import losses, taylor

    loss_path = tmp_path / "taylor_ce.json"
    losses.save_json(losses.TaylorGLOLoss(taylor.PAPER_MNIST_THETA), loss_path)
    task_path = tmp_path / "task.yaml"
    task_path.write_text("dataset: digits\nmodel: tiny\nsteps: 300\nseed: 0\n")
    out = tmp_path / "comparison.json"
    rc = _cli("--loss", str(loss_path), "--baseline", "cross_entropy", "--runs", "3",
              "--task", str(task_path), "--steps", "80", "--json", str(out))
    printed = capsys.readouterr().out
    assert rc == 0
    for text in ("side", "mean", "std", "taylor_ce", "cross_entropy", "Welch", "p ="):
        assert text in printed
    written = json.loads(out.read_text())
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
    ],
)
def test_taylorglo_compare_reports_bad_arguments_by_name(argv, message, capsys):
    assert _cli(*argv) == 2
    assert message in capsys.readouterr().err.replace("\n", "")


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


@pytest.mark.parametrize(("name", "text"), [("task.yaml", "dataset: [digits\n"), ("task.json", "{\"steps\": 5,}")])
def test_a_task_file_that_cannot_be_parsed_is_rejected_by_name(tmp_path, capsys, name, text):
    task_path = tmp_path / name
    task_path.write_text(text)
    assert _cli("--loss", "cross_entropy", "--task", str(task_path)) == 2
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "cannot be parsed" in err and name in err
