"""The public API's docstrings: Keras's sections, and examples that run as written.

Each object's own docstring only (not its methods'), run with ``doctest``: the
examples are what a user copies, so they must print what they say they print.
"""

from __future__ import annotations

import doctest
import re

import pytest

from taylorglo_tf import compare, data, losses, models, training

# name -> (object, sections its docstring has, in Keras's form)
PUBLIC = {
    "TaylorGLOLoss": (losses.TaylorGLOLoss, ("Formula", "Args", "Raises", "Example")),
    "TaylorGLOLoss.from_loss": (losses.TaylorGLOLoss.from_loss, ("Formula", "Args", "Returns", "Raises", "Example")),
    "training.Evaluator": (training.Evaluator, ("Formula", "Args", "Raises", "Example")),
    "compare.compare": (compare.compare, ("Formula", "Args", "Returns", "Raises", "Example")),
    "models.build": (models.build, ("Args", "Returns", "Raises", "Example")),
    "data.load": (data.load, ("Args", "Returns", "Raises", "Example")),
}


def _doctest(name: str) -> doctest.DocTest:
    obj = PUBLIC[name][0]
    (test,) = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    return test


@pytest.mark.parametrize("name", PUBLIC)
def test_the_docstring_has_keras_s_sections_in_order(name):
    obj, sections = PUBLIC[name]
    headings = re.findall(r"^\s*(\w+):\s*$", obj.__doc__, flags=re.MULTILINE)
    assert [h for h in headings if h in sections] == list(sections), headings


@pytest.mark.parametrize("name", PUBLIC)
def test_the_docstring_example_runs_and_prints_what_it_shows(name):
    test = _doctest(name)
    assert len(test.examples) >= 3, f"{name} has no real example"
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    outcome = runner.run(test, out=report.append)
    assert outcome.failed == 0, "".join(report)
