"""The one atomic writer: a file is replaced whole or left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from taylorglo_tf import atomic

ROOT = Path(__file__).resolve().parent.parent


def test_a_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old, longer content\n")
    assert atomic.write_text(path, "new\n") == path
    assert path.read_text() == "new\n"
    atomic.write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_write_that_fails_halfway_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "comparison.json"
    path.write_text("complete\n")
    with pytest.raises(RuntimeError, match="disk gone"), atomic.replacing(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk gone")
    assert path.read_text() == "complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.json"]


def test_the_temporary_is_hidden_from_globs_of_the_folder(tmp_path):
    with atomic.replacing(tmp_path / "events.out.tfevents.1.host") as tmp:
        tmp.write_bytes(b"")
        assert tmp.name.startswith(".") and list(tmp_path.glob("events.out.tfevents.*")) == []
    assert [p.name for p in tmp_path.glob("events.out.tfevents.*")] == ["events.out.tfevents.1.host"]


def test_no_other_module_renames_files_into_place():
    """Every atomic write goes through taylorglo_tf.atomic, so there is one way it can go wrong."""
    writers = [
        str(path.relative_to(ROOT))
        for package in ("taylorglo_tf", "coordinator", "trainer")
        for path in sorted((ROOT / package).rglob("*.py"))
        if "os.replace(" in path.read_text(encoding="utf-8")
    ]
    assert writers == ["taylorglo_tf/atomic.py"]
