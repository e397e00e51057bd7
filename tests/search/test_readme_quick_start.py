"""The README's ``LossSearch`` example runs as written and leaves the result folder it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _loss_search_block() -> str:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "LossSearch" in b]
    return block


def test_the_readme_example_is_at_most_15_lines():
    assert len(_loss_search_block().strip().splitlines()) <= 15


@pytest.mark.slow
def test_the_readme_loss_search_example_runs(tmp_path):
    """About a minute on 2 cores: a 48-candidate search and 10 + 10 comparison runs with tuning."""
    completed = subprocess.run(
        [sys.executable, "-c", _loss_search_block()], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    folder = tmp_path / "results" / "wine"
    assert (folder / "best_loss.json").is_file() and (folder / "comparison.txt").is_file()
    assert "against the tuned baseline" in completed.stdout
