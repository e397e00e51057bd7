"""Older database files are migrated in place, and the optimizer state is written once per generation.

``tests/fixtures/schema-v1.db`` was written by the coordinator of schema version
1 with cma 4.5 (the pinned major version; ``tests/fixtures/make_schema_v1.py``):
a search of 3 generations x 4 stopped in generation 1 with one lease in flight.

That file was written on another machine. pycma samples through NumPy, whose
vectorised kernels (and the C library's ``exp``/``log``) may round the last bit
differently on another CPU, so nothing here compares a number this machine
computes with one the fixture holds bit for bit: what the file stores must come
through the migration unchanged (bytes against bytes), and what this coordinator
computes next is compared with what this machine computes from the same stored
state. The fixture's search matches a fresh one only to rounding (a tolerance).
"""

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.coordinator import optimizers
from taylorglo_tf.coordinator.scheduler import Report, Scheduler
from taylorglo_tf.coordinator.storage import SCHEMA_VERSION, SqliteStorage
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.records import candidates, experiment
from tests.helpers.scheduling import drain, make_spec, open_scheduler, synthetic_fitness

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema-v1.db"
FIXTURE_SPEC = {
    "name": "fixture",
    "task": {"dataset": "digits", "model": "tiny", "steps": 10},
    "search": {"population": 4, "generations": 3, "seed": 3},
}
# Rounding differences between CPUs start at the last bit, and CMA-ES's covariance
# update (an eigendecomposition) amplifies them: 7e-11 was measured between an AMD
# EPYC and the machine that wrote the fixture (generation 0 equal, generations 1-2
# not). A different search (another seed, a lost report, a second ask) differs by
# O(1): this tolerance leaves three orders of margin above the one and six below
# the other.
ACROSS_MACHINES = {"rtol": 1e-6, "atol": 1e-7}


def _stored(path: Path) -> tuple[dict, dict, bytes]:
    """The fixture's rows as stored: candidate thetas, generation summaries and the optimizer state."""
    raw = sqlite3.connect(path)
    try:
        thetas = {(g, i): theta for g, i, theta in raw.execute("SELECT generation, idx, theta FROM candidates")}
        summaries = {
            g: (mean, sigma) for g, mean, sigma in raw.execute("SELECT generation, mean_theta, sigma FROM generations")
        }
        [(state,)] = raw.execute("SELECT es_state FROM experiments").fetchall()
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        raw.close()
    return thetas, summaries, state


def _migrate_and_finish(path: Path):
    """Opens the schema-1 file with this coordinator, lets the trainer in flight report, runs the search out."""
    s = Scheduler(SqliteStorage(path), prescreen=lambda theta, n: True)
    s.start(reaper=False)
    [record] = s._storage.load_experiments()
    [leased] = [c for c in s.result(record.id).candidates if c.status == types_pb2.CANDIDATE_STATUS_LEASED]
    [lease] = [l for l in s._storage.load_leases(record.id, 1) if l.index == leased.index]
    assert s.report(Report(lease.lease_id, "t", ws.EVALUATION_STATUS_OK, synthetic_fitness(leased.theta), None))[0]
    drain(s)
    return s, record.id


def test_a_schema_1_file_is_migrated_with_its_rows_intact(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    thetas, summaries, state = _stored(path)

    s = Scheduler(SqliteStorage(path), prescreen=lambda theta, n: True)
    s.start(reaper=False)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [record] = s._storage.load_experiments()
    assert record.es_state == state  # the cma 4.5 pickle, moved intact
    assert record.spec.name == "fixture"
    assert record.generation == 1 and record.evaluations_done == 5
    result = s.result(record.id)
    assert {(c.generation, c.index): np.array(c.theta, dtype="<f8").tobytes() for c in result.candidates} == thetas
    assert {g.generation: (np.array(g.mean_theta, dtype="<f8").tobytes(), g.sigma) for g in result.generations} == (
        summaries
    )


def test_a_migrated_search_continues_exactly_from_its_stored_state(tmp_path):
    """Generation 2 is what the stored optimizer, told generation 1's results, asks for: nothing asked twice."""
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    thetas, _, state = _stored(path)

    s, exp_id = _migrate_and_finish(path)
    assert s.get(exp_id).state == types_pb2.EXPERIMENT_STATE_SUCCEEDED

    # The same continuation, computed on this machine straight from the stored bytes.
    spec = spec_lib.load_spec(FIXTURE_SPEC)
    optimizer = optimizers.restore(spec, state)
    generation_1 = [np.frombuffer(thetas[(1, i)], dtype="<f8") for i in range(4)]
    optimizer.tell(generation_1, [synthetic_fitness(t) for t in generation_1])
    expected_2 = [t.tobytes() for t in optimizer.ask()]

    result = s.result(exp_id)
    assert [np.array(c.theta, dtype="<f8").tobytes() for c in result.candidates if c.generation == 2] == expected_2
    summary_1 = next(g for g in result.generations if g.generation == 1)
    assert np.array(summary_1.mean_theta, dtype="<f8").tobytes() == optimizer.mean.tobytes()
    assert summary_1.sigma == optimizer.sigma


def test_the_fixture_holds_the_search_this_coordinator_runs_up_to_rounding(tmp_path):
    """The schema-1 coordinator and this one run the same search; the fixture's CPU rounds differently."""
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    s, exp_id = _migrate_and_finish(path)
    reference = open_scheduler(tmp_path / "reference.db")
    ref = reference.submit(spec_lib.load_spec(FIXTURE_SPEC))
    drain(reference)

    migrated, fresh = s.result(exp_id), reference.result(ref.id)
    assert [(c.generation, c.index) for c in migrated.candidates] == [(c.generation, c.index) for c in fresh.candidates]
    np.testing.assert_allclose(
        [c.theta for c in migrated.candidates], [c.theta for c in fresh.candidates], **ACROSS_MACHINES
    )
    np.testing.assert_allclose(
        [g.mean_theta for g in migrated.generations], [g.mean_theta for g in fresh.generations], **ACROSS_MACHINES
    )
    np.testing.assert_allclose(
        [g.sigma for g in migrated.generations], [g.sigma for g in fresh.generations], **ACROSS_MACHINES
    )


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
