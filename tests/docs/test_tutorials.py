"""Every command and code block of the tutorials runs, in page order, as a reader would run it.

A page's blocks run in one fresh folder that holds the checkout's ``Makefile``,
``pyproject.toml``, ``constraints.txt``, ``.venv`` and ``docs/`` (links), so the
commands run from "the checkout's root" as the pages say, and what they write
stays in the temporary folder:

- ``sh`` blocks run with ``bash -euo pipefail``;
- ``python`` blocks run with this interpreter; consecutive ones (with only prose,
  output or files between them) share one process, as in a reader's session;
- ``text`` blocks are output and ``yaml`` blocks show a file of the repository
  (they must include it with a ``--8<--`` snippet, so they show the real file).

A block a test cannot run here says so on the line before it:
``<!-- test: slow (why) -->`` runs under ``-m slow`` only;
``<!-- test: needs HARDWARE (why) -->`` (a GPU, a cluster) never runs here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ROOT

TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
RUN = {"sh", "python"}
SHOWN = {"text", "yaml"}
# Paths of the checkout that the tutorials' commands use, linked into the run folder.
CHECKOUT = ("Makefile", "pyproject.toml", "constraints.txt", ".venv", "docs")

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_MARKER = re.compile(r"^<!-- test: (slow|needs [^(]+) \((.+)\) -->$")


@dataclass
class Block:
    language: str
    code: str
    line: int  # 1-based, of the opening fence
    marker: str = ""  # "", "slow" or "needs ..."
    reason: str = ""


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` with the marker on the line before each."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, language = match.groups()
        start = i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :])
            i += 1
        i += 1
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(previous)
        found.append(
            Block(
                language,
                "\n".join(body) + "\n",
                start + 1,
                marker.group(1).strip() if marker else "",
                marker.group(2) if marker else "",
            )
        )
    return found


def test_the_tutorials_hold_only_blocks_a_test_runs_or_marks_with_a_reason():
    assert TUTORIALS, "no tutorials found"
    for page in TUTORIALS:
        page_blocks = blocks(page)
        assert any(b.language in RUN for b in page_blocks), page
        for block in page_blocks:
            where = f"{page.name}:{block.line}"
            assert block.language in RUN | SHOWN, f"{where}: a ```{block.language} block is neither run nor shown"
            if block.language == "yaml":
                assert block.code.startswith("--8<-- "), f"{where}: a YAML block must include the real file"
            if block.marker:
                assert block.language in RUN and block.reason.strip(), where


def run_page(page: Path, folder: Path, *, slow: bool) -> list[str]:
    """Run the page's blocks in ``folder``; returns what each runnable block printed."""
    for name in CHECKOUT:
        (folder / name).symlink_to(ROOT / name)
    # `make` never rebuilds the environment from here: the tests use the one they run in (its
    # stamp may be older than pyproject.toml in a working tree, and the folder holds no package).
    tools = folder / ".test-bin"
    tools.mkdir()
    (tools / "make").write_text(f'#!/bin/sh\nexec {shutil.which("make")} -o .venv/.installed "$@"\n')
    (tools / "make").chmod(0o755)
    path = os.pathsep.join([str(tools), str(ROOT / ".venv" / "bin"), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "MPLBACKEND": "Agg"}
    outputs = []
    pending: list[Block] = []  # consecutive python blocks: one process

    def flush_python():
        if pending:
            code = "\n".join(b.code for b in pending)
            outputs.append(_run([sys.executable, "-c", code], folder, env, f"{page.name}:{pending[0].line}"))
            pending.clear()

    for block in blocks(page):
        if block.language not in RUN or block.marker.startswith("needs") or (block.marker == "slow" and not slow):
            continue
        if block.language == "python":
            pending.append(block)
            continue
        flush_python()
        outputs.append(_run(["bash", "-euo", "pipefail", "-c", block.code], folder, env, f"{page.name}:{block.line}"))
    flush_python()
    return outputs


def _run(args: list[str], folder: Path, env: dict[str, str], where: str) -> str:
    completed = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, f"{where} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    return completed.stdout


def test_the_first_search_tutorial_runs(tmp_path):
    """The dry run, the result folder's files and the Python that reads them (``make run`` is slow)."""
    outputs = run_page(ROOT / "docs" / "tutorials" / "first-search.md", tmp_path, slow=False)
    assert "result folder: results/dry-run" in outputs[0]
    assert "best_loss.json" in outputs[1]
    assert "TaylorGLOLoss" in outputs[2] and (tmp_path / "loss.png").is_file()


def test_the_keras_loss_tutorial_runs(tmp_path):
    (output,) = run_page(ROOT / "docs" / "tutorials" / "keras-loss.md", tmp_path, slow=False)
    accuracy = float(re.search(r"test accuracy (\S+)", output).group(1))
    assert accuracy > 0.5, output
    assert "TaylorGLOLoss True" in output and "ValueError: theta has shape (2,)" in output
    assert re.search(r"^ok 0\.\d+", output, re.M), output


@pytest.mark.slow
@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: p.stem)
def test_every_block_of_a_tutorial_runs_including_the_slow_ones(page, tmp_path):
    run_page(page, tmp_path, slow=True)
