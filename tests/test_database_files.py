"""Bad database files: a coordinator database damaged mid-file, or another application's SQLite file.

Both must be refused before anything is written, with one line naming the file
and exit status 2 from ``taylorglo coordinator`` and ``taylorglo run --db``,
like the other bad-file cases.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.coordinator.scheduler import Scheduler
from taylorglo_tf.coordinator.storage import DatabaseFileError, SqliteStorage


def coordinator_database_damaged_mid_file(path: Path) -> Path:
    """A real coordinator database (several experiments), then 16 KiB of its middle overwritten."""
    storage = SqliteStorage(path)
    scheduler = Scheduler(storage)
    scheduler.start(reaper=False)
    for i in range(12):
        scheduler.submit(
            spec_lib.load_spec(
                {
                    "name": f"search {i}",
                    "task": {"dataset": "digits", "model": "tiny", "steps": 10},
                    "search": {"population": 50, "generations": 3},
                }
            )
        )
    scheduler.stop()
    storage.close()
    for suffix in ("-wal", "-shm"):  # checkpointed on close: the damage is in the main file
        assert not Path(f"{path}{suffix}").exists() or Path(f"{path}{suffix}").stat().st_size == 0
    size = path.stat().st_size
    assert size > 200_000
    with open(path, "r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(b"\xa5" * 16384)
    return path


def another_applications_database(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    db.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(100)])
    db.commit()
    db.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_database_damaged_mid_file_is_refused_naming_it(tmp_path):
    path = coordinator_database_damaged_mid_file(tmp_path / "search.db")
    with pytest.raises(DatabaseFileError, match=r"search\.db.*corrupt"):
        SqliteStorage(path)
    with pytest.raises(DatabaseFileError, match="corrupt"):  # the failed attempt left no claim behind
        SqliteStorage(path)


def test_another_applications_sqlite_file_is_refused_and_left_untouched(tmp_path):
    path = another_applications_database(tmp_path / "notes.db")
    before = digest(path)
    with pytest.raises(DatabaseFileError, match=r"notes\.db.* is not a TaylorGLO coordinator database.*notes"):
        SqliteStorage(path)
    assert digest(path) == before
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"notes"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TAYLORGLO_TRAINER_TOKEN="", TAYLORGLO_CLIENT_TOKEN="")
    return subprocess.run(
        [sys.executable, "-m", "taylorglo_tf", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "make", [coordinator_database_damaged_mid_file, another_applications_database], ids=["damaged", "foreign"]
)
def test_the_coordinator_command_refuses_a_bad_database_in_one_line_with_exit_2(tmp_path, make):
    path = make(tmp_path / "bad.db")
    done = run_cli("coordinator", "--db", str(path), "--listen", "127.0.0.1:0", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("taylorglo coordinator: ") and str(path) in done.stderr


@pytest.mark.parametrize(
    "make", [coordinator_database_damaged_mid_file, another_applications_database], ids=["damaged", "foreign"]
)
def test_run_refuses_a_bad_database_in_one_line_with_exit_2(tmp_path, make):
    path = make(tmp_path / "bad.db")
    done = run_cli("run", "--db", str(path), "--trainers", "1", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("taylorglo run: error: ") and str(path) in done.stderr
