"""The documentation site builds strictly, offline, and renders docstring examples as code."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import markdown
import yaml
from doctest_fences import DoctestFences

from .conftest import ROOT


def test_the_site_builds_strictly_into_a_folder_in_well_under_a_minute(tmp_path):
    """What CI runs (``make docs``): a broken link or anchor, a page left out of the nav or an
    API reference to a missing name is a warning, and ``--strict`` fails on any."""
    started = time.monotonic()
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "WARNING" not in completed.stderr, completed.stderr[-3000:]
    assert time.monotonic() - started < 60
    for page in (
        "reference/cli",
        "reference/spec",
        "reference/grpc",
        "reference/result-folder",
        "tutorials/first-search",
    ):
        assert (tmp_path / "site" / page / "index.html").is_file(), page
    html = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "--candidates-per-step" in html


def test_the_site_fetches_nothing_from_the_web():
    """No web fonts or remote assets: the site is built and read offline."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["theme"]["font"] is False  # Material would link Google Fonts
    plugins = {next(iter(p)) if isinstance(p, dict) else p for p in config["plugins"]}
    assert not plugins & {"privacy", "social", "optimize"}, plugins


def test_a_doctest_session_in_a_docstring_becomes_a_code_block():
    text = "Example:\n\n>>> [round(v, 2) for v in (0.651, 0.3)]\n[0.65, 0.3]\n\nAfter.\n"
    html = markdown.markdown(text, extensions=["fenced_code", DoctestFences()])
    assert '<code class="language-pycon">&gt;&gt;&gt; [round(v, 2)' in html
    assert "[0.65, 0.3]\n</code>" in html and "<p>After.</p>" in html


def test_a_fenced_block_that_holds_a_session_is_left_alone():
    text = "```python\n>>> 1 + 1\n2\n```\n"
    html = markdown.markdown(text, extensions=["fenced_code", DoctestFences()])
    assert html.count("<code") == 1 and "language-python" in html
