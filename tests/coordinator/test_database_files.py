"""Bad database files: a coordinator database damaged mid-file, another application's SQLite
file, a newer schema's, or one in use by another coordinator (under any of its names).

Each must be refused before anything is written (the file left byte-identical, nothing
left beside it), with one line naming the file and exit status 2 from ``taylorglo
coordinator`` and ``taylorglo run --db``, like the other bad-file cases.
"""

from __future__ import annotations

import gc
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


def newer_schema_database(path: Path, *, wal: bool = False) -> Path:
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE experiments (id TEXT)")
    db.execute("PRAGMA user_version=99")
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
    "make",
    [coordinator_database_damaged_mid_file, another_applications_database, newer_schema_database],
    ids=["damaged", "foreign", "schema-99"],
)
def test_the_coordinator_command_refuses_a_bad_database_in_one_line_with_exit_2(tmp_path, make):
    path = make(tmp_path / "bad.db")
    done = run_cli("coordinator", "--db", str(path), "--listen", "127.0.0.1:0", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("taylorglo coordinator: ") and str(path) in done.stderr


@pytest.mark.parametrize(
    "make",
    [coordinator_database_damaged_mid_file, another_applications_database, newer_schema_database],
    ids=["damaged", "foreign", "schema-99"],
)
def test_run_refuses_a_bad_database_in_one_line_with_exit_2(tmp_path, make):
    path = make(tmp_path / "bad.db")
    done = run_cli("run", "--db", str(path), "--trainers", "1", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("taylorglo run: error: ") and str(path) in done.stderr


# -- one coordinator per database, whatever the path


def link(kind: str, target: Path, name: Path) -> Path:
    if kind == "symlink":
        name.symlink_to(target)
    else:
        os.link(target, name)
    return name


@pytest.mark.parametrize("kind", ["symlink", "hard link"])
def test_a_second_coordinator_through_a_link_is_refused_naming_both_paths(tmp_path, kind):
    real = tmp_path / "search.db"
    first = SqliteStorage(real)
    other = link(kind, real, tmp_path / "other-name.db")
    with pytest.raises(DatabaseFileError, match=r"other-name\.db.* in use by another coordinator.*search\.db"):
        SqliteStorage(other)
    first.close()
    SqliteStorage(other).close()  # free again once the first one is gone


def posix_locks(path: Path) -> list[str]:
    """This process's POSIX (SQLite's) locks on ``path``'s file, from /proc/locks."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as locks:
        return [" ".join(line.split()[1:]) for line in locks if f" {os.getpid()} {inode} " in line and "POSIX" in line]


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_a_refused_second_open_in_the_same_process_keeps_the_first_ones_sqlite_locks(tmp_path):
    """Closing any descriptor of a file drops all of the process's POSIX locks on it, SQLite's too:
    the refusal must come before a second descriptor is opened."""
    real = tmp_path / "search.db"
    first = SqliteStorage(real)
    first.load_experiments()
    held = posix_locks(real)
    assert held, "SQLite holds a shared lock on a WAL database while it is open"
    with pytest.raises(DatabaseFileError):
        SqliteStorage(link("hard link", real, tmp_path / "hard.db"))
    assert posix_locks(real) == held
    first.close()


@pytest.mark.parametrize("kind", ["symlink", "hard link"])
def test_the_coordinator_command_through_a_link_to_a_database_in_use_exits_2_naming_both_paths(tmp_path, kind):
    """In a fresh process, as an operator would start it: the holder and its path are named."""
    real = tmp_path / "search.db"
    first = SqliteStorage(real)
    try:
        other = link(kind, real, tmp_path / "other-name.db")
        done = run_cli("coordinator", "--db", str(other), "--listen", "127.0.0.1:0", cwd=tmp_path)
    finally:
        first.close()
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"database {str(other)!r} is in use by another coordinator" in done.stderr
    assert f"(process {os.getpid()}, which opened it as {str(real.resolve())!r})" in done.stderr


def test_a_coordinator_holding_a_database_lets_other_processes_read_it(tmp_path):
    """The claim (flock) is independent of SQLite's own (POSIX) locks: inspection tools still work."""
    path = tmp_path / "search.db"
    storage = SqliteStorage(path)
    try:
        query = "SELECT count(*) FROM experiments"
        script = f"import sqlite3; print(sqlite3.connect({str(path)!r}).execute({query!r}).fetchone()[0])"
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        storage.close()
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


# -- a refused file is left exactly as it was


def not_a_database(path: Path) -> Path:
    path.write_text("not a database, just text " * 100)
    return path


@pytest.mark.parametrize(
    "make",
    [
        newer_schema_database,
        lambda path: newer_schema_database(path, wal=True),
        coordinator_database_damaged_mid_file,
        another_applications_database,
        not_a_database,
    ],
    ids=["schema-99", "schema-99-wal", "damaged", "foreign", "not-sqlite"],
)
def test_a_refused_file_is_byte_identical_after_and_nothing_is_left_beside_it(tmp_path, make):
    path = make(tmp_path / "refused.db")
    before, listing = digest(path), sorted(os.listdir(tmp_path))
    with pytest.raises(DatabaseFileError, match=r"refused\.db"):
        SqliteStorage(path)
    assert digest(path) == before
    assert sorted(os.listdir(tmp_path)) == listing  # no .lock, -wal or -shm


def test_a_storage_dropped_without_closing_frees_its_database_once_collected(tmp_path):
    SqliteStorage(tmp_path / "search.db")  # never closed
    gc.collect()
    SqliteStorage(tmp_path / "search.db").close()


def test_a_directory_given_as_the_database_is_refused_naming_it(tmp_path):
    (tmp_path / "search.db").mkdir()
    with pytest.raises(DatabaseFileError, match=r"search\.db.*[Ii]s a directory"):
        SqliteStorage(tmp_path / "search.db")
