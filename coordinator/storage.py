"""Persistence of experiments, generations, candidates, leases and CMA-ES state.

:class:`Storage` is the interface the scheduler relies on; :class:`SqliteStorage`
implements it on one SQLite file in WAL mode. Every method is one transaction, so
what the scheduler does in one call (e.g. "record generation g's summary, insert
generation g+1's candidates, save the CMA-ES state") is all-or-nothing: a
coordinator killed at any moment finds a consistent database on restart.

Durability: ``synchronous=NORMAL`` with WAL survives a killed process (the
coordinator's failure mode) but may lose the last transactions on power loss;
pass ``synchronous="FULL"`` to trade lease throughput for that.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from coordinator.model import CandidateRecord, ExperimentRecord, GenerationRecord, LeaseRecord
from taylorglo_tf.rpc import types_pb2

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    spec BLOB NOT NULL,
    state INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    evaluations_done INTEGER NOT NULL,
    best_fitness REAL NOT NULL,
    best_theta BLOB NOT NULL,
    create_time REAL NOT NULL,
    update_time REAL NOT NULL,
    error TEXT NOT NULL,
    es_state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    experiment_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    theta BLOB NOT NULL,
    status INTEGER NOT NULL,
    fitness REAL NOT NULL,
    attempts INTEGER NOT NULL,
    trainer_id TEXT NOT NULL,
    metrics BLOB,
    create_time REAL NOT NULL,
    finish_time REAL NOT NULL,
    error TEXT NOT NULL,
    lease_id TEXT NOT NULL,
    PRIMARY KEY (experiment_id, generation, idx)
);
CREATE TABLE IF NOT EXISTS generations (
    experiment_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    best_fitness REAL NOT NULL,
    mean_fitness REAL NOT NULL,
    best_theta BLOB NOT NULL,
    mean_theta BLOB NOT NULL,
    sigma REAL NOT NULL,
    finish_time REAL NOT NULL,
    PRIMARY KEY (experiment_id, generation)
);
CREATE TABLE IF NOT EXISTS leases (
    lease_id TEXT PRIMARY KEY,
    experiment_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    trainer_id TEXT NOT NULL,
    grant_time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_candidate ON leases (experiment_id, generation, idx);
"""


class Storage(Protocol):
    """What the scheduler needs from persistence (each call is atomic)."""

    def insert_experiment(self, experiment: ExperimentRecord, candidates: Sequence[CandidateRecord]) -> None:
        """A new experiment together with its first generation's candidates."""

    def advance_generation(
        self, experiment: ExperimentRecord, summary: GenerationRecord, candidates: Sequence[CandidateRecord]
    ) -> None:
        """Record a finished generation's summary, the next generation's candidates (none when the
        experiment finished) and the experiment row (generation, state, CMA-ES state)."""

    def update_experiment(self, experiment: ExperimentRecord) -> None:
        """Rewrite the experiment row (state changes such as cancel or failure)."""

    def grant_lease(self, lease: LeaseRecord, candidate: CandidateRecord) -> None:
        """Record a lease and the candidate it was granted for (status, attempts, lease id)."""

    def update_candidate(self, candidate: CandidateRecord, experiment: ExperimentRecord | None = None) -> None:
        """Rewrite a candidate; with ``experiment``, also its progress counters and best so far."""

    def load_experiments(self) -> list[ExperimentRecord]: ...

    def load_candidates(self, experiment_id: str, generation: int | None = None) -> list[CandidateRecord]: ...

    def load_generations(self, experiment_id: str) -> list[GenerationRecord]: ...

    def load_leases(self, experiment_id: str, generation: int) -> list[LeaseRecord]: ...

    def find_lease(self, lease_id: str) -> LeaseRecord | None: ...

    def close(self) -> None: ...


def _claim(path: Path):
    """Hold an exclusive lock on ``<db>.lock`` for this process's lifetime.

    Two coordinators dispatching from one database would lease the same
    candidates twice; the operating system drops the lock when a process dies,
    even by ``kill -9``, so a restart is never blocked by a stale claim.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no claim
        return None
    handle = open(path.with_name(path.name + ".lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise OSError(f"database {str(path)!r} is in use by another coordinator") from None
    return handle


def _array(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f8").copy()


def _blob(values: np.ndarray) -> bytes:
    return np.asarray(values, dtype="<f8").tobytes()


class SqliteStorage:
    """:class:`Storage` on one SQLite file (WAL). Thread-safe: calls are serialised by a lock."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL"):
        if synchronous not in ("OFF", "NORMAL", "FULL"):
            raise ValueError(f"synchronous={synchronous!r} is not OFF, NORMAL or FULL")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._owner = _claim(self.path)
        self._lock = threading.Lock()
        try:
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) in _tx
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA busy_timeout=5000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise RuntimeError(
                    f"database {str(self.path)!r} has schema version {version}; this coordinator reads {SCHEMA_VERSION}")
            self._db.executescript("BEGIN;" + _SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        except sqlite3.Error as exc:
            self._release()
            raise OSError(f"cannot open database {str(self.path)!r}: {exc}") from None
        except BaseException:
            self._release()
            raise

    # -- transactions

    class _Tx:
        def __init__(self, owner: "SqliteStorage"):
            self.owner = owner

        def __enter__(self) -> sqlite3.Connection:
            self.owner._lock.acquire()
            self.owner._db.execute("BEGIN IMMEDIATE")
            return self.owner._db

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.owner._db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.owner._lock.release()

    def _tx(self) -> "_Tx":
        return SqliteStorage._Tx(self)

    # -- writes

    def _put_experiment(self, db: sqlite3.Connection, e: ExperimentRecord) -> None:
        db.execute(
            "INSERT INTO experiments (id, spec, state, generation, evaluations_done, best_fitness, best_theta,"
            " create_time, update_time, error, es_state) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET spec=excluded.spec, state=excluded.state, generation=excluded.generation,"
            " evaluations_done=excluded.evaluations_done, best_fitness=excluded.best_fitness,"
            " best_theta=excluded.best_theta, update_time=excluded.update_time, error=excluded.error,"
            " es_state=excluded.es_state",
            (e.id, e.spec.SerializeToString(), e.state, e.generation, e.evaluations_done, e.best_fitness,
             _blob(e.best_theta), e.create_time, e.update_time, e.error, e.es_state),
        )

    @staticmethod
    def _candidate_row(c: CandidateRecord) -> tuple:
        return (c.experiment_id, c.generation, c.index, _blob(c.theta), c.status, c.fitness, c.attempts,
                c.trainer_id, c.metrics.SerializeToString() if c.metrics is not None else None,
                c.create_time, c.finish_time, c.error, c.lease_id)

    def _put_candidates(self, db: sqlite3.Connection, candidates: Sequence[CandidateRecord]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO candidates (experiment_id, generation, idx, theta, status, fitness, attempts,"
            " trainer_id, metrics, create_time, finish_time, error, lease_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [self._candidate_row(c) for c in candidates],
        )

    def insert_experiment(self, experiment: ExperimentRecord, candidates: Sequence[CandidateRecord]) -> None:
        with self._tx() as db:
            self._put_experiment(db, experiment)
            self._put_candidates(db, candidates)

    def advance_generation(
        self, experiment: ExperimentRecord, summary: GenerationRecord, candidates: Sequence[CandidateRecord]
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO generations VALUES (?,?,?,?,?,?,?,?)",
                (summary.experiment_id, summary.generation, summary.best_fitness, summary.mean_fitness,
                 _blob(summary.best_theta), _blob(summary.mean_theta), summary.sigma, summary.finish_time),
            )
            self._put_candidates(db, candidates)
            self._put_experiment(db, experiment)

    def update_experiment(self, experiment: ExperimentRecord) -> None:
        with self._tx() as db:
            self._put_experiment(db, experiment)

    def grant_lease(self, lease: LeaseRecord, candidate: CandidateRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO leases VALUES (?,?,?,?,?,?,?)",
                (lease.lease_id, lease.experiment_id, lease.generation, lease.index, lease.attempt,
                 lease.trainer_id, lease.grant_time),
            )
            self._put_candidates(db, [candidate])

    def update_candidate(self, candidate: CandidateRecord, experiment: ExperimentRecord | None = None) -> None:
        with self._tx() as db:
            self._put_candidates(db, [candidate])
            if experiment is not None:
                # counters only: rewriting the CMA-ES blob on every report would be wasted I/O
                db.execute(
                    "UPDATE experiments SET evaluations_done=?, best_fitness=?, best_theta=?, update_time=? WHERE id=?",
                    (experiment.evaluations_done, experiment.best_fitness, _blob(experiment.best_theta),
                     experiment.update_time, experiment.id),
                )

    # -- reads

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def load_experiments(self) -> list[ExperimentRecord]:
        rows = self._query(
            "SELECT id, spec, state, generation, evaluations_done, best_fitness, best_theta, create_time,"
            " update_time, error, es_state FROM experiments ORDER BY seq"
        )
        return [
            ExperimentRecord(
                id=r[0], spec=types_pb2.ExperimentSpec.FromString(r[1]), state=r[2], generation=r[3],
                evaluations_done=r[4], best_fitness=r[5], best_theta=_array(r[6]), create_time=r[7],
                update_time=r[8], error=r[9], es_state=r[10],
            )
            for r in rows
        ]

    def load_candidates(self, experiment_id: str, generation: int | None = None) -> list[CandidateRecord]:
        sql = ("SELECT experiment_id, generation, idx, theta, status, fitness, attempts, trainer_id, metrics,"
               " create_time, finish_time, error, lease_id FROM candidates WHERE experiment_id=?")
        args: tuple = (experiment_id,)
        if generation is not None:
            sql += " AND generation=?"
            args += (generation,)
        rows = self._query(sql + " ORDER BY generation, idx", args)
        return [
            CandidateRecord(
                experiment_id=r[0], generation=r[1], index=r[2], theta=_array(r[3]), status=r[4], fitness=r[5],
                attempts=r[6], trainer_id=r[7],
                metrics=types_pb2.EvaluationMetrics.FromString(r[8]) if r[8] is not None else None,
                create_time=r[9], finish_time=r[10], error=r[11], lease_id=r[12],
            )
            for r in rows
        ]

    def load_generations(self, experiment_id: str) -> list[GenerationRecord]:
        rows = self._query("SELECT * FROM generations WHERE experiment_id=? ORDER BY generation", (experiment_id,))
        return [
            GenerationRecord(experiment_id=r[0], generation=r[1], best_fitness=r[2], mean_fitness=r[3],
                             best_theta=_array(r[4]), mean_theta=_array(r[5]), sigma=r[6], finish_time=r[7])
            for r in rows
        ]

    def load_leases(self, experiment_id: str, generation: int) -> list[LeaseRecord]:
        rows = self._query(
            "SELECT lease_id, experiment_id, generation, idx, attempt, trainer_id, grant_time FROM leases"
            " WHERE experiment_id=? AND generation=? ORDER BY grant_time",
            (experiment_id, generation),
        )
        return [LeaseRecord(*r) for r in rows]

    def find_lease(self, lease_id: str) -> LeaseRecord | None:
        rows = self._query("SELECT lease_id, experiment_id, generation, idx, attempt, trainer_id, grant_time"
                           " FROM leases WHERE lease_id=?", (lease_id,))
        return LeaseRecord(*rows[0]) if rows else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._release()

    def _release(self) -> None:
        if self._owner is not None:
            self._owner.close()  # releases the claim
            self._owner = None
