"""The optional ``paper`` block of a spec: validated, and printed beside the measured row."""

from __future__ import annotations

import pytest

from taylorglo_tf import spec as spec_module
from taylorglo_tf.paper import table_row
from taylorglo_tf.spec import SpecError

BASE = {"task": {"dataset": "digits", "model": "tiny", "steps": 10}}
TABLE_1_MNIST = {
    "table": "Table 1, MNIST, Basic CNN",
    "taylorglo": 0.9951,
    "taylorglo_std": 0.0005,
    "baseline": 0.9899,
    "baseline_std": 0.0003,
    "p_value": 2.95e-15,
}


def measured(loss_mean, loss_std, base_mean, base_std, pvalue, n=10):
    return {
        "summary": {
            "loss": {"n": n, "mean": loss_mean, "std": loss_std},
            "baseline": {"n": n, "mean": base_mean, "std": base_std},
        },
        "welch": {"statistic": 3.0, "df": 17.0, "pvalue": pvalue, "alternative": "greater"},
    }


def test_a_spec_carries_the_papers_numbers_unchanged():
    spec = spec_module.load_spec({**BASE, "paper": TABLE_1_MNIST})
    assert spec.paper.table == "Table 1, MNIST, Basic CNN"
    assert (spec.paper.taylorglo, spec.paper.baseline, spec.paper.p_value) == (0.9951, 0.9899, 2.95e-15)


def test_a_spec_without_the_block_has_none():
    assert not spec_module.load_spec(BASE).HasField("paper")


@pytest.mark.parametrize(
    "paper, field, words",
    [
        ({"taylorglo": 0.99}, "spec.paper.table", "required"),
        ({"table": "  ", "taylorglo": 0.99}, "spec.paper.table", "required"),
        ({"table": "T1", "taylorglo": 99.51}, "spec.paper.taylorglo", "fractions"),
        ({"table": "T1", "baseline_std": -0.1}, "spec.paper.baseline_std", "outside [0, 1]"),
        ({"table": "T1", "p_value": float("nan")}, "spec.paper.p_value", "outside [0, 1]"),
        ({"table": "T1", "note": "x" * 501}, "spec.paper.note", "at most 500"),
        ({"table": "T1", "accuracy": 0.9}, "spec.paper.accuracy", "unknown field"),
    ],
)
def test_a_bad_paper_block_is_refused_naming_the_field(paper, field, words):
    with pytest.raises(SpecError) as error:
        spec_module.load_spec({**BASE, "paper": paper})
    assert error.value.field == field
    assert words in error.value.message


def test_the_table_row_puts_the_measured_numbers_under_the_papers():
    paper = spec_module.load_spec({**BASE, "paper": TABLE_1_MNIST}).paper
    text = table_row(paper, measured(0.9712, 0.0040, 0.9650, 0.0050, 0.0123))
    lines = text.splitlines()
    assert lines[0] == "Table 1, MNIST, Basic CNN: test accuracy, mean (std)"
    assert lines[2].split() == ["paper", "0.9951", "(0.0005)", "0.9899", "(0.0003)", "2.95e-15", "10", "+", "10"]
    assert lines[3].split() == ["measured", "0.9712", "(0.0040)", "0.9650", "(0.0050)", "0.0123", "10", "+", "10"]


def test_numbers_the_paper_does_not_report_show_as_dashes_and_the_note_follows():
    paper = spec_module.load_spec(
        {**BASE, "paper": {"table": "Figure 6, MNIST, 10% of the data", "note": "read off a figure"}}
    ).paper
    text = table_row(paper, measured(0.9, 0.01, 0.8, 0.02, float("nan"), n=3))
    assert text.splitlines()[2].split() == ["paper", "-", "-", "-", "10", "+", "10"]
    assert text.splitlines()[3].split() == ["measured", "0.9000", "(0.0100)", "0.8000", "(0.0200)", "-", "3", "+", "3"]
    assert text.splitlines()[-1] == "paper note: read off a figure"


def test_a_measured_accuracy_of_zero_is_shown_not_taken_for_missing():
    paper = spec_module.load_spec({**BASE, "paper": TABLE_1_MNIST}).paper
    row = table_row(paper, measured(0.0, 0.0, 0.5, 0.1, 1.0, n=2)).splitlines()[3]
    assert row.split() == ["measured", "0.0000", "(0.0000)", "0.5000", "(0.1000)", "1.0000", "2", "+", "2"]
