"""The README fits on two screens, links only to files that exist, and its Keras example runs."""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import ROOT

README = ROOT / "README.md"
MAX_LINES = 150  # about two screens; everything else lives on the site's pages


def test_the_readme_fits_on_two_screens():
    assert len(README.read_text().splitlines()) <= MAX_LINES


def test_the_readme_gives_the_two_commands_and_links_into_the_site():
    text = README.read_text()
    assert "make run" in text and "make test" in text and "make docs" in text
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert any(link.startswith("docs/tutorials/") for link in local)
    for link in local:
        assert (ROOT / link).is_file(), f"the README links to {link}, which does not exist"


def test_the_readme_keras_example_runs(tmp_path):
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "model.keras" in b]
    completed = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "model.keras").is_file()
