"""SQLite storage: round trips, atomic transactions, WAL, schema version."""

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from taylorglo_tf.coordinator.model import GenerationRecord, LeaseRecord
from taylorglo_tf.coordinator.storage import SCHEMA_VERSION, DatabaseFileError, SqliteStorage
from taylorglo_tf.rpc import types_pb2
from tests.helpers.records import candidates, experiment


@pytest.fixture
def storage(tmp_path):
    s = SqliteStorage(tmp_path / "db.sqlite")
    yield s
    s.close()


def test_an_experiment_and_its_candidates_round_trip_bit_exactly(storage, tmp_path):
    cands = candidates()
    cands[0].theta[0] = 0.1 + 0.2  # not representable in decimal: must survive exactly
    storage.insert_experiment(experiment(), cands)
    storage.close()
    reopened = SqliteStorage(tmp_path / "db.sqlite")
    [loaded] = reopened.load_experiments()
    assert loaded.id == "e1" and loaded.spec.name == "s" and loaded.es_state == b"strategy-0"
    assert loaded.state == types_pb2.EXPERIMENT_STATE_RUNNING and loaded.create_time == 1.5
    back = reopened.load_candidates("e1", 0)
    assert [c.index for c in back] == [0, 1]
    assert all(np.array_equal(a.theta, b.theta) for a, b in zip(cands, back))
    assert back[0].theta[0] == 0.1 + 0.2
    reopened.close()


def test_a_lease_and_its_candidate_are_recorded_together(storage):
    storage.insert_experiment(experiment(), candidates())
    leased = candidates()[1]
    leased.status, leased.attempts, leased.lease_id = types_pb2.CANDIDATE_STATUS_LEASED, 1, "L1"
    storage.grant_leases([(LeaseRecord("L1", "e1", 0, 1, 1, "trainer-a", 4.0), leased)])
    assert storage.find_lease("L1") == LeaseRecord("L1", "e1", 0, 1, 1, "trainer-a", 4.0)
    assert storage.find_lease("L2") is None
    assert storage.load_leases("e1", 0)[0].trainer_id == "trainer-a"
    stored = storage.load_candidates("e1", 0)[1]
    assert (stored.status, stored.attempts, stored.lease_id) == (types_pb2.CANDIDATE_STATUS_LEASED, 1, "L1")


def test_a_finished_candidate_updates_the_experiment_counters_but_not_the_strategy(storage):
    storage.insert_experiment(experiment(), candidates())
    done = candidates()[0]
    done.status, done.fitness, done.finish_time = types_pb2.CANDIDATE_STATUS_SUCCEEDED, 0.75, 5.0
    done.metrics = types_pb2.EvaluationMetrics(val_accuracy=0.75, steps=3)
    progressed = experiment(evaluations_done=1, best_fitness=0.75, best_theta=done.theta, es_state=b"ignored")
    storage.update_candidate(done, progressed)
    [loaded] = storage.load_experiments()
    assert loaded.evaluations_done == 1 and loaded.best_fitness == 0.75
    assert np.array_equal(loaded.best_theta, done.theta) and loaded.es_state == b"strategy-0"
    assert storage.load_candidates("e1")[0].metrics.steps == 3


def test_advancing_a_generation_is_all_or_nothing(storage, monkeypatch):
    storage.insert_experiment(experiment(), candidates())
    summary = GenerationRecord("e1", 0, 0.9, 0.5, np.ones(8), np.zeros(8), 1.1, 6.0)
    nxt = experiment(generation=1, es_state=b"strategy-1")

    def fail(db, e):
        raise sqlite3.OperationalError("disk full")

    monkeypatch.setattr(storage, "_put_experiment", fail)
    with pytest.raises(sqlite3.OperationalError):
        storage.advance_generation(nxt, summary, candidates(generation=1))
    monkeypatch.undo()
    # neither the summary nor the new candidates were kept
    assert storage.load_generations("e1") == []
    assert storage.load_candidates("e1", 1) == []
    assert storage.load_experiments()[0].es_state == b"strategy-0"

    storage.advance_generation(nxt, summary, candidates(generation=1))
    [gen] = storage.load_generations("e1")
    assert gen.sigma == 1.1 and np.array_equal(gen.best_theta, np.ones(8))
    assert len(storage.load_candidates("e1", 1)) == 2
    assert storage.load_experiments()[0].generation == 1


def test_experiments_load_in_submission_order(storage):
    for exp_id in ("b", "a", "c"):
        storage.insert_experiment(experiment(exp_id), candidates(exp_id))
    assert [e.id for e in storage.load_experiments()] == ["b", "a", "c"]


def test_the_database_uses_write_ahead_logging(storage):
    assert storage._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_database_from_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(DatabaseFileError, match=r"future\.db.* schema version 99, newer than this coordinator's"):
        SqliteStorage(path)


def test_an_unknown_synchronous_mode_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="EXTRA"):
        SqliteStorage(tmp_path / "x.db", synchronous="EXTRA")


def test_a_database_serves_one_coordinator_at_a_time(tmp_path):
    first = SqliteStorage(tmp_path / "one.db")
    with pytest.raises(OSError, match="in use by another coordinator"):
        SqliteStorage(tmp_path / "one.db")
    first.close()
    SqliteStorage(tmp_path / "one.db").close()  # free again once the first one is gone


def test_a_file_that_is_not_a_database_is_an_error_naming_it(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("not a database, just text " * 100)
    with pytest.raises(OSError, match="notes.db"):
        SqliteStorage(path)
    path.unlink()
    SqliteStorage(path).close()  # the failed attempt left no claim behind


def schema(path: Path) -> dict:
    """Every table's columns (name, type, not null, default, key) and every index's definition."""
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {
            "version": db.execute("PRAGMA user_version").fetchone()[0],
            "columns": {t: db.execute(f"PRAGMA table_xinfo({t})").fetchall() for t in tables},
            "indexes": sorted(
                " ".join(r[0].replace("IF NOT EXISTS ", "").split())
                for r in db.execute("SELECT sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")
            ),
        }
    finally:
        db.close()


def test_a_new_file_is_created_at_the_latest_schema_which_equals_a_migrated_ones(tmp_path):
    """New files skip the migrations (DROP COLUMN needs SQLite 3.35), so the two paths must agree."""
    migrated = tmp_path / "migrated.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "schema-v1.db", migrated)
    SqliteStorage(migrated).close()
    SqliteStorage(tmp_path / "new.db").close()
    assert schema(tmp_path / "new.db") == schema(migrated)
    assert schema(migrated)["version"] == SCHEMA_VERSION


def test_a_new_file_runs_no_migration(tmp_path, monkeypatch):
    """No ALTER TABLE (DROP COLUMN needs SQLite 3.35) on a new file: it is created at the latest schema."""
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        db = connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite3, "connect", traced)
    SqliteStorage(tmp_path / "new.db").close()
    assert any("CREATE TABLE" in s for s in statements)
    assert not [s for s in statements if "ALTER TABLE" in s.upper()]


def test_an_sqlite_older_than_the_coordinator_needs_is_refused_naming_both_versions(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 22, 0))
    with pytest.raises(DatabaseFileError, match=r"SQLite 3\.22\.0 is too old .* needs SQLite 3\.24\.0 or later"):
        SqliteStorage(tmp_path / "new.db")
    assert not list(tmp_path.iterdir())  # refused before any file was made


def test_a_new_file_needs_no_sqlite_3_35_but_migrating_an_old_one_does(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))  # Ubuntu 20.04's
    SqliteStorage(tmp_path / "new.db").close()
    old = tmp_path / "old.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "schema-v1.db", old)
    before = old.read_bytes()
    with pytest.raises(DatabaseFileError, match=r"SQLite 3\.31\.1 is too old to bring .*old\.db.* to schema version 2"):
        SqliteStorage(old)
    assert old.read_bytes() == before  # refused before anything was written
