"""Older database files are migrated in place, and the optimizer state is written once per generation.

``tests/fixtures/schema-v1.db`` was written by the coordinator of schema version
1 with cma 4.5 (the pinned major version; ``tests/fixtures/make_schema_v1.py``):
a search of 3 generations x 4 stopped in generation 1 with one lease in flight.
"""

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.coordinator.scheduler import Report, Scheduler
from taylorglo_tf.coordinator.storage import SCHEMA_VERSION, SqliteStorage
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.test_coordinator_scheduler import drain, make_spec, open_scheduler, synthetic_fitness
from tests.test_storage import candidates, experiment

FIXTURE = Path(__file__).parent / "fixtures" / "schema-v1.db"
FIXTURE_SPEC = {
    "name": "fixture",
    "task": {"dataset": "digits", "model": "tiny", "steps": 10},
    "search": {"population": 4, "generations": 3, "seed": 3},
}


def trajectory(scheduler, experiment_id):
    result = scheduler.result(experiment_id)
    return (
        [(c.generation, c.index, np.array(c.theta).tobytes()) for c in result.candidates],
        [(g.generation, np.array(g.mean_theta).tobytes(), g.sigma) for g in result.generations],
    )


def test_a_schema_1_file_is_migrated_and_its_search_continues_exactly(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    [(exp_id, stored_state)] = raw.execute("SELECT id, es_state FROM experiments").fetchall()
    raw.close()

    s = Scheduler(SqliteStorage(path), prescreen=lambda theta, n: True)
    s.start(reaper=False)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert s._storage.load_experiments()[0].es_state == stored_state  # the cma 4.5 pickle, moved intact
    record = s.get(exp_id)
    assert record.spec.name == "fixture"
    assert record.generation == 1 and record.evaluations_done == 5
    # the trainer that held a lease when that coordinator stopped reports to this one
    [leased] = [c for c in s.result(exp_id).candidates if c.status == types_pb2.CANDIDATE_STATUS_LEASED]
    [lease] = [l for l in s._storage.load_leases(exp_id, 1) if l.index == leased.index]
    assert s.report(Report(lease.lease_id, "t", ws.EVALUATION_STATUS_OK, synthetic_fitness(leased.theta), None))[0]
    drain(s)
    assert s.get(exp_id).state == types_pb2.EXPERIMENT_STATE_SUCCEEDED

    reference = open_scheduler(tmp_path / "reference.db")
    ref = reference.submit(spec_lib.load_spec(FIXTURE_SPEC))
    drain(reference)
    assert trajectory(s, exp_id) == trajectory(reference, ref.id)


def test_a_report_does_not_rewrite_the_optimizer_state(tmp_path):
    """SQLite rewrites a row whose column changes: the state must not share a row with the counters."""
    storage = SqliteStorage(tmp_path / "db.sqlite")
    storage._db.execute("PRAGMA wal_autocheckpoint=0")  # let the write-ahead log show every write
    state = os.urandom(4 << 20)
    storage.insert_experiment(experiment(es_state=state), candidates())
    wal = Path(f"{tmp_path / 'db.sqlite'}-wal")
    before = wal.stat().st_size
    for i in range(10):
        done = candidates()[0]
        done.status, done.fitness = types_pb2.CANDIDATE_STATUS_SUCCEEDED, 0.5
        storage.update_candidate(done, experiment(evaluations_done=i + 1, best_fitness=0.5, update_time=3.0 + i))
    written_per_report = (wal.stat().st_size - before) / 10
    assert written_per_report < 64 * 1024, f"{written_per_report:.0f} bytes written per report"
    assert storage.load_experiments()[0].es_state == state


def test_the_optimizer_state_is_written_once_per_generation(tmp_path, monkeypatch):
    writes = []
    real = SqliteStorage._put_optimizer_state
    monkeypatch.setattr(
        SqliteStorage, "_put_optimizer_state", staticmethod(lambda db, e: (writes.append(e.generation), real(db, e)))
    )
    s = open_scheduler(tmp_path / "c.db")
    s.submit(make_spec(population=6, generations=3))
    assert drain(s) == 18
    assert writes == [0, 1, 2, 3]  # at submission, then with each generation's step
