"""Persistence of experiments, generations, candidates, leases and optimizer state.

:class:`Storage` is the interface the scheduler relies on (every backend passes
``tests/coordinator/test_storage_contract.py``); :func:`open_storage` picks a backend by URL:
``sqlite:///path/to/file.db`` (or a plain path), ``:memory:`` (SQLite in
memory) and ``memory://`` (:class:`~taylorglo_tf.coordinator.memory_storage.MemoryStorage`,
Python dictionaries); in memory nothing survives the process (tests, notebooks, dry runs).
:class:`SqliteStorage` implements it on one SQLite file in WAL mode. Every method is one transaction, so
what the scheduler does in one call (e.g. "record generation g's summary, insert
generation g+1's candidates, save the CMA-ES state") is all-or-nothing: a
coordinator killed at any moment finds a consistent database on restart.

Durability: ``synchronous=NORMAL`` with WAL survives a killed process (the
coordinator's failure mode) but may lose the last transactions on power loss;
pass ``synchronous="FULL"`` to trade lease throughput for that.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from taylorglo_tf.rpc import types_pb2

from .defaults import DB_BUSY_TIMEOUT_S, DB_LOCKED_RETRY_S
from .errors import StorageUnavailable
from .model import (
    FINAL_EXPERIMENT_STATES,
    CandidateRecord,
    ExperimentRecord,
    GenerationRecord,
    LeaseRecord,
)

# The oldest SQLite the coordinator runs on: ``INSERT ... ON CONFLICT DO UPDATE`` (upsert) is 3.24.
MIN_SQLITE_VERSION = (3, 24, 0)

# Each migration takes the schema from the version before it to its own version, in
# one transaction; a database is migrated in place from whatever version it has, on
# an SQLite no older than the step's (``DROP COLUMN`` is 3.35). Add a step for every
# schema change, never edit a released one, and change _SCHEMA to match (a test
# compares a new file's schema with a migrated one's).
_MIGRATIONS: tuple[tuple[int, tuple[int, int, int], str], ...] = (
    (
        1,
        MIN_SQLITE_VERSION,
        """
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
""",
    ),
    # The optimizer state gets a table of its own: SQLite rewrites (or at least reads and
    # compares) a whole row when any column changes, so a multi-MiB state in the experiments
    # row made every report's counter update cost as much as writing the state.
    (
        2,
        (3, 35, 0),
        """
CREATE TABLE optimizer_states (
    experiment_id TEXT PRIMARY KEY,
    state BLOB NOT NULL
);
INSERT INTO optimizer_states (experiment_id, state) SELECT id, es_state FROM experiments;
ALTER TABLE experiments DROP COLUMN es_state;
""",
    ),
    # Early stopping: each candidate's checkpoint values, the rule's decision and, while it
    # waits for one, the status it reported.
    (
        3,
        MIN_SQLITE_VERSION,
        """
ALTER TABLE candidates ADD COLUMN checkpoints BLOB;
ALTER TABLE candidates ADD COLUMN stopped_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE candidates ADD COLUMN held_status INTEGER NOT NULL DEFAULT 0;
""",
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]

# A new file is created at SCHEMA_VERSION directly (no migration runs on it, so any
# SQLite from MIN_SQLITE_VERSION on can create one).
_SCHEMA = """
CREATE TABLE experiments (
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
    error TEXT NOT NULL
);
CREATE TABLE candidates (
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
    checkpoints BLOB,
    stopped_at INTEGER NOT NULL DEFAULT 0,
    held_status INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, generation, idx)
);
CREATE TABLE generations (
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
CREATE TABLE leases (
    lease_id TEXT PRIMARY KEY,
    experiment_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    trainer_id TEXT NOT NULL,
    grant_time REAL NOT NULL
);
CREATE INDEX leases_by_candidate ON leases (experiment_id, generation, idx);
CREATE TABLE optimizer_states (
    experiment_id TEXT PRIMARY KEY,
    state BLOB NOT NULL
);
"""
_TABLES = frozenset({"experiments", "candidates", "generations", "leases", "optimizer_states", "sqlite_sequence"})


class DatabaseFileError(OSError):
    """The database file cannot be used: not SQLite, corrupt, another application's, or busy.

    Its message is one line naming the file; the commands print it and exit 2.
    """


class StorageConflict(ValueError):
    """A write that breaks a uniqueness rule (a lease id granted twice): refused whole, nothing written."""


class Storage(Protocol):
    """What the scheduler needs from persistence (each call is atomic).

    A call that fails changes nothing: :class:`StorageConflict` for a uniqueness rule,
    ``StorageUnavailable`` for a fault a retry may cure (disk full, locked).
    """

    def insert_experiment(self, experiment: ExperimentRecord, candidates: Sequence[CandidateRecord]) -> None:
        """A new experiment together with its first generation's candidates."""

    def advance_generation(
        self, experiment: ExperimentRecord, summary: GenerationRecord, candidates: Sequence[CandidateRecord]
    ) -> None:
        """Record a finished generation's summary, the next generation's candidates (none when the
        experiment finished), the experiment row (generation, state) and the optimizer state:
        the only write of the optimizer state besides :meth:`insert_experiment`."""

    def update_experiment(self, experiment: ExperimentRecord) -> None:
        """Rewrite the experiment row (state changes such as cancel or failure), not its optimizer state."""

    def grant_leases(self, grants: Sequence[tuple[LeaseRecord, CandidateRecord]]) -> None:
        """Record leases and the candidates they were granted for (status, attempts, lease id)."""

    def update_candidate(self, candidate: CandidateRecord, experiment: ExperimentRecord | None = None) -> None:
        """Rewrite a candidate; with ``experiment``, also its progress counters and best so far."""

    def update_candidates(
        self, candidates: Sequence[CandidateRecord], experiment: ExperimentRecord | None = None
    ) -> None:
        """:meth:`update_candidate` for several candidates at once (one transaction)."""

    def delete_experiment(self, experiment_id: str) -> None:
        """An experiment with its candidates, generations, leases and optimizer state."""

    def load_experiments(self) -> list[ExperimentRecord]:
        """In submission order; the optimizer state only for unfinished experiments (else b"")."""

    def load_candidates(
        self, experiment_id: str, generation: int | None = None, *, offset: int = 0, limit: int | None = None
    ) -> list[CandidateRecord]:
        """Ordered by (generation, index); ``offset``/``limit`` select a page of that order."""

    def load_generations(
        self, experiment_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[GenerationRecord]:
        """Ordered by generation; ``offset``/``limit`` select a page of that order."""

    def load_leases(self, experiment_id: str, generation: int) -> list[LeaseRecord]: ...

    def find_lease(self, lease_id: str) -> LeaseRecord | None: ...

    def close(self) -> None: ...


class SqliteUnavailable(StorageUnavailable, sqlite3.OperationalError):
    """A retryable SQLite error (still an OperationalError for callers that know SQLite)."""


# The Storage methods that write (what a fault or a timing wrapper of a storage watches).
WRITE_METHODS = frozenset(
    {
        "insert_experiment",
        "advance_generation",
        "update_experiment",
        "grant_leases",
        "update_candidate",
        "update_candidates",
        "delete_experiment",
    }
)


def open_storage(url: str | os.PathLike[str], **options) -> Storage:
    """The storage a URL names: ``sqlite:///relative/path.db`` (``sqlite:////abs/path.db`` is
    absolute), a plain file path, ``:memory:`` (SQLite) or ``memory://`` (no SQLite).
    ``options`` go to the SQLite backend."""
    text = str(url)
    if text == "memory://":
        from .memory_storage import MemoryStorage

        if options:
            raise ValueError(f"memory:// takes no storage options, got {sorted(options)}")
        return MemoryStorage()
    if text in (":memory:", "sqlite://", "sqlite:///:memory:"):
        return SqliteStorage(":memory:", **options)
    if text.startswith("sqlite:///"):
        return SqliteStorage(text[len("sqlite:///") :], **options)
    if "://" in text:
        raise ValueError(f"database URL {text!r}: the scheme is not sqlite:/// (or use :memory: or a file path)")
    return SqliteStorage(text, **options)


# The files this process holds, by identity ((st_dev, st_ino) -> the path it was opened as).
_CLAIMED: dict[tuple[int, int], str] = {}
_CLAIMED_LOCK = threading.RLock()  # reentrant: a claim dropped by the garbage collector takes it too


class _Claim:
    """An exclusive ``flock`` on the database file itself, held while the storage is open.

    Keyed by the file, not its name: a symlink or a hard link to a database in use
    is refused (through a hard link SQLite would even use a second ``-wal`` file).
    On Linux ``flock`` locks are independent of the POSIX locks SQLite takes on the
    same file, so SQLite (and readers in other processes) work as before; the
    operating system drops the lock when the process dies, even by ``kill -9``, so a
    restart is never blocked by a stale claim, and no lock file is left beside the
    database. (On NFS ``flock`` is emulated with POSIX locks, but SQLite's WAL
    does not work over a network file system anyway.)
    """

    def __init__(self, path: Path) -> None:
        import fcntl

        with _CLAIMED_LOCK:
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if (st.st_dev, st.st_ino) in _CLAIMED:
                    # Checked before opening the file: closing a second descriptor of it would
                    # drop the POSIX locks this process's SQLite connection holds on it.
                    raise DatabaseFileError(
                        f"database {str(path)!r} is in use by another coordinator in this process "
                        f"(opened as {_CLAIMED[st.st_dev, st.st_ino]!r})"
                    )
            # read-only: claiming an existing file never changes it; a missing one is a new database
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                raise DatabaseFileError(f"cannot open database {str(path)!r}: {exc.strerror}") from None
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                st = os.fstat(self._fd)
                os.close(self._fd)  # this process holds no SQLite lock on the file: safe to close
                raise DatabaseFileError(
                    f"database {str(path)!r} is in use by another coordinator{_holder(st)}"
                ) from None
            st = os.fstat(self._fd)
            _CLAIMED[st.st_dev, st.st_ino] = str(path)
            # a storage dropped without close() frees the file when it is collected
            self.release = weakref.finalize(self, _unclaim, self._fd, (st.st_dev, st.st_ino))


def _unclaim(fd: int, key: tuple[int, int]) -> None:
    """Only after this process's SQLite connection to the file is closed (see :class:`_Claim`)."""
    with _CLAIMED_LOCK:
        os.close(fd)  # releases the flock
        _CLAIMED.pop(key, None)


def _holder(st: os.stat_result) -> str:
    """`` (process N, which opened it as '...')`` for the process holding a claim on the file
    ``st`` describes, as far as ``/proc`` shows it (Linux, same user), else ``""``."""
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as locks:
            # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (waiters are "1: -> FLOCK ...")
            pids = [f[4] for line in locks if len(f := line.split()) > 5 and f[1] == "FLOCK" and f[5] == inode]
    except OSError:
        return ""
    if not pids:
        return ""
    for link in Path("/proc", pids[0], "fd").glob("*"):
        with contextlib.suppress(OSError):
            if os.path.samestat(link.stat(), st):
                return f" (process {pids[0]}, which opened it as {os.readlink(link)!r})"
    return f" (process {pids[0]})"


def _check_sqlite_version(needed: tuple[int, int, int], why: str) -> None:
    found = sqlite3.sqlite_version_info
    if found < needed:
        raise DatabaseFileError(
            f"SQLite {'.'.join(map(str, found))} is too old {why}: it needs SQLite "
            f"{'.'.join(map(str, needed))} or later (the library Python's sqlite3 module is built with)"
        )


def _check_database(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is damaged, belongs to another application or is of a newer schema,
    by reading it only.

    ``quick_check`` reads every page (seconds for a large file, once per start): a
    file damaged mid-way would otherwise fail later, in the middle of a search.
    """
    report = [row[0] for row in db.execute("PRAGMA quick_check(3)").fetchall()]
    if report != ["ok"]:
        lines = [line for row in report for line in row.splitlines() if line and not line.startswith("***")]
        raise DatabaseFileError(f"database {str(path)!r} is corrupt ({'; '.join(lines[:3])})")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    foreign = sorted(tables - _TABLES)
    if foreign:
        raise DatabaseFileError(
            f"{str(path)!r} is not a TaylorGLO coordinator database "
            f"(it holds the table(s) {', '.join(foreign[:5])}); pass another --db"
        )
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise DatabaseFileError(
            f"database {str(path)!r} has schema version {version}, newer than this "
            f"coordinator's {SCHEMA_VERSION}: use a newer coordinator"
        )


def _schema_steps(db: sqlite3.Connection) -> list[tuple[int, tuple[int, int, int], str]]:
    """What brings the file to :data:`SCHEMA_VERSION`: ``_SCHEMA`` at once for a new (empty) file,
    else the migrations after its version, one transaction each."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        return [(SCHEMA_VERSION, MIN_SQLITE_VERSION, _SCHEMA)]
    return [step for step in _MIGRATIONS if step[0] > version]


def _page(offset: int, limit: int | None) -> tuple[int, int]:
    """SQL ``LIMIT ? OFFSET ?`` arguments (-1: no limit)."""
    return (-1 if limit is None else max(0, limit)), offset


def _array(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f8").copy()


def _checkpoints(blob: bytes | None) -> tuple:
    """A candidate's stored checkpoint values: rows of (index, steps, validation accuracy)."""
    if blob is None:
        return ()
    rows = _array(blob).reshape(-1, 3)
    return tuple((int(i), int(steps), float(value)) for i, steps, value in rows)


def _blob(values: np.ndarray) -> bytes:
    return np.asarray(values, dtype="<f8").tobytes()


class SqliteStorage:
    """:class:`Storage` on one SQLite file (WAL). Thread-safe: calls are serialised by a lock."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = DB_BUSY_TIMEOUT_S,
        locked_retry_s: float = DB_LOCKED_RETRY_S,
    ):
        if synchronous not in ("OFF", "NORMAL", "FULL"):
            raise ValueError(f"synchronous={synchronous!r} is not OFF, NORMAL or FULL")
        _check_sqlite_version(MIN_SQLITE_VERSION, "for a coordinator database")  # before any file is touched
        memory = str(path) == ":memory:"
        self.path = Path(path)
        if not memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._owner = None if memory or os.name != "posix" else _Claim(self.path)
        self._lock = threading.Lock()
        self._locked_retry_s = locked_retry_s
        self._locked: tuple[float, str] | None = None  # (monotonic time to try again, the error)
        db = None
        try:
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) in _tx
            db = self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row  # rows are read by column name
            # Whatever may refuse the file only reads it: a refused file is left as it was.
            if not memory:
                _check_database(db, self.path)
            steps = _schema_steps(db)
            for target, needed, _ in steps:
                _check_sqlite_version(needed, f"to bring {str(self.path)!r} to schema version {target}")
            if not memory:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            # how long a write waits for a lock held by another process before "database is locked"
            db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            for target, _, script in steps:
                db.executescript(f"BEGIN; {script}; PRAGMA user_version={target}; COMMIT;")
        except sqlite3.Error as exc:
            self._release(db)
            raise DatabaseFileError(f"cannot open database {str(self.path)!r}: {exc}") from None
        except BaseException:
            self._release(db)
            raise

    # -- transactions

    @contextlib.contextmanager
    def _unavailable(self):
        """sqlite3.OperationalError (disk full, database locked, I/O error) -> StorageUnavailable (retryable)."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise SqliteUnavailable(f"database {str(self.path)!r}: {exc}") from exc

    @contextlib.contextmanager
    def _tx(self):
        """One write transaction: committed when the block ends, rolled back (nothing kept) if it raises."""
        with self._lock, self._unavailable():
            self._begin()
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:  # a failed COMMIT (disk full) may leave it open
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError):
                    raise StorageConflict(f"database {str(self.path)!r}: {exc}") from exc
                raise

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, failing fast while another process holds the write lock: the first
        write to find it locked waits out the (short) busy timeout, the writes after it fail at
        once until ``locked_retry_s`` has passed, so a stuck lock never queues writes up."""
        if self._locked is not None:
            retry_at, error = self._locked
            if time.monotonic() < retry_at:
                raise sqlite3.OperationalError(f"{error} (by another process; trying again shortly)")
            self._locked = None
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                self._locked = (time.monotonic() + self._locked_retry_s, str(exc))
            raise

    # -- writes

    def _put_experiment(self, db: sqlite3.Connection, e: ExperimentRecord) -> None:
        db.execute(
            "INSERT INTO experiments (id, spec, state, generation, evaluations_done, best_fitness, best_theta,"
            " create_time, update_time, error) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET spec=excluded.spec, state=excluded.state, generation=excluded.generation,"
            " evaluations_done=excluded.evaluations_done, best_fitness=excluded.best_fitness,"
            " best_theta=excluded.best_theta, update_time=excluded.update_time, error=excluded.error",
            (
                e.id,
                e.spec.SerializeToString(),
                e.state,
                e.generation,
                e.evaluations_done,
                e.best_fitness,
                _blob(e.best_theta),
                e.create_time,
                e.update_time,
                e.error,
            ),
        )

    @staticmethod
    def _put_optimizer_state(db: sqlite3.Connection, e: ExperimentRecord) -> None:
        """Written once per generation (with its candidates), never on a report."""
        db.execute("INSERT OR REPLACE INTO optimizer_states (experiment_id, state) VALUES (?, ?)", (e.id, e.es_state))

    @staticmethod
    def _candidate_row(c: CandidateRecord) -> tuple:
        return (
            c.experiment_id,
            c.generation,
            c.index,
            _blob(c.theta),
            c.status,
            c.fitness,
            c.attempts,
            c.trainer_id,
            c.metrics.SerializeToString() if c.metrics is not None else None,
            c.create_time,
            c.finish_time,
            c.error,
            c.lease_id,
            _blob(np.array(c.checkpoints, dtype=np.float64).reshape(-1)) if c.checkpoints else None,
            c.stopped_at,
            c.held_status,
        )

    def _put_candidates(self, db: sqlite3.Connection, candidates: Sequence[CandidateRecord]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO candidates (experiment_id, generation, idx, theta, status, fitness, attempts,"
            " trainer_id, metrics, create_time, finish_time, error, lease_id, checkpoints, stopped_at, held_status)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [self._candidate_row(c) for c in candidates],
        )

    def insert_experiment(self, experiment: ExperimentRecord, candidates: Sequence[CandidateRecord]) -> None:
        with self._tx() as db:
            self._put_experiment(db, experiment)
            self._put_optimizer_state(db, experiment)
            self._put_candidates(db, candidates)

    def advance_generation(
        self, experiment: ExperimentRecord, summary: GenerationRecord, candidates: Sequence[CandidateRecord]
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO generations (experiment_id, generation, best_fitness, mean_fitness,"
                " best_theta, mean_theta, sigma, finish_time) VALUES (?,?,?,?,?,?,?,?)",
                (
                    summary.experiment_id,
                    summary.generation,
                    summary.best_fitness,
                    summary.mean_fitness,
                    _blob(summary.best_theta),
                    _blob(summary.mean_theta),
                    summary.sigma,
                    summary.finish_time,
                ),
            )
            self._put_candidates(db, candidates)
            self._put_experiment(db, experiment)
            self._put_optimizer_state(db, experiment)

    def update_experiment(self, experiment: ExperimentRecord) -> None:
        with self._tx() as db:
            self._put_experiment(db, experiment)

    def grant_leases(self, grants: Sequence[tuple[LeaseRecord, CandidateRecord]]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO leases (lease_id, experiment_id, generation, idx, attempt, trainer_id, grant_time)"
                " VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        lease.lease_id,
                        lease.experiment_id,
                        lease.generation,
                        lease.index,
                        lease.attempt,
                        lease.trainer_id,
                        lease.grant_time,
                    )
                    for lease, _ in grants
                ],
            )
            self._put_candidates(db, [candidate for _, candidate in grants])

    def update_candidate(self, candidate: CandidateRecord, experiment: ExperimentRecord | None = None) -> None:
        self.update_candidates([candidate], experiment)

    def update_candidates(
        self, candidates: Sequence[CandidateRecord], experiment: ExperimentRecord | None = None
    ) -> None:
        with self._tx() as db:
            self._put_candidates(db, candidates)
            if experiment is not None:
                # counters only; the optimizer state lives in its own table
                db.execute(
                    "UPDATE experiments SET evaluations_done=?, best_fitness=?, best_theta=?, update_time=? WHERE id=?",
                    (
                        experiment.evaluations_done,
                        experiment.best_fitness,
                        _blob(experiment.best_theta),
                        experiment.update_time,
                        experiment.id,
                    ),
                )

    def delete_experiment(self, experiment_id: str) -> None:
        with self._tx() as db:
            for table in ("leases", "candidates", "generations", "optimizer_states", "experiments"):
                db.execute(
                    f"DELETE FROM {table} WHERE {'id' if table == 'experiments' else 'experiment_id'}=?",
                    (experiment_id,),
                )

    # -- reads

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock, self._unavailable():
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    raise  # locked, busy, disk full: a retry may succeed
                # damage quick_check could not see (it checks structure, not every value)
                raise DatabaseFileError(f"database {str(self.path)!r} is corrupt ({exc})") from None

    def load_experiments(self) -> list[ExperimentRecord]:
        # A finished experiment's optimizer state stays on disk only: nothing resumes it, and
        # holding every one in memory would cost up to a few MiB per experiment.
        final = ",".join(str(state) for state in sorted(FINAL_EXPERIMENT_STATES))
        rows = self._query(
            f"SELECT e.*, CASE WHEN e.state IN ({final}) THEN NULL ELSE s.state END AS es_state"
            " FROM experiments e LEFT JOIN optimizer_states s ON s.experiment_id = e.id"
            " ORDER BY e.seq"
        )
        return [
            ExperimentRecord(
                id=r["id"],
                spec=types_pb2.ExperimentSpec.FromString(r["spec"]),
                state=r["state"],
                generation=r["generation"],
                evaluations_done=r["evaluations_done"],
                best_fitness=r["best_fitness"],
                best_theta=_array(r["best_theta"]),
                create_time=r["create_time"],
                update_time=r["update_time"],
                error=r["error"],
                es_state=r["es_state"] or b"",
            )
            for r in rows
        ]

    def load_candidates(
        self, experiment_id: str, generation: int | None = None, *, offset: int = 0, limit: int | None = None
    ) -> list[CandidateRecord]:
        sql = "SELECT * FROM candidates WHERE experiment_id=?"
        args: tuple = (experiment_id,)
        if generation is not None:
            sql += " AND generation=?"
            args += (generation,)
        rows = self._query(sql + " ORDER BY generation, idx LIMIT ? OFFSET ?", args + _page(offset, limit))
        return [
            CandidateRecord(
                experiment_id=r["experiment_id"],
                generation=r["generation"],
                index=r["idx"],
                theta=_array(r["theta"]),
                status=r["status"],
                fitness=r["fitness"],
                attempts=r["attempts"],
                trainer_id=r["trainer_id"],
                metrics=types_pb2.EvaluationMetrics.FromString(r["metrics"]) if r["metrics"] is not None else None,
                create_time=r["create_time"],
                finish_time=r["finish_time"],
                error=r["error"],
                lease_id=r["lease_id"],
                checkpoints=_checkpoints(r["checkpoints"]),
                stopped_at=r["stopped_at"],
                held_status=r["held_status"],
            )
            for r in rows
        ]

    def load_generations(
        self, experiment_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[GenerationRecord]:
        rows = self._query(
            "SELECT * FROM generations WHERE experiment_id=? ORDER BY generation LIMIT ? OFFSET ?",
            (experiment_id, *_page(offset, limit)),
        )
        return [
            GenerationRecord(
                experiment_id=r["experiment_id"],
                generation=r["generation"],
                best_fitness=r["best_fitness"],
                mean_fitness=r["mean_fitness"],
                best_theta=_array(r["best_theta"]),
                mean_theta=_array(r["mean_theta"]),
                sigma=r["sigma"],
                finish_time=r["finish_time"],
            )
            for r in rows
        ]

    @staticmethod
    def _lease(r: sqlite3.Row) -> LeaseRecord:
        return LeaseRecord(
            lease_id=r["lease_id"],
            experiment_id=r["experiment_id"],
            generation=r["generation"],
            index=r["idx"],
            attempt=r["attempt"],
            trainer_id=r["trainer_id"],
            grant_time=r["grant_time"],
        )

    def load_leases(self, experiment_id: str, generation: int) -> list[LeaseRecord]:
        rows = self._query(
            "SELECT * FROM leases WHERE experiment_id=? AND generation=? ORDER BY grant_time",
            (experiment_id, generation),
        )
        return [self._lease(r) for r in rows]

    def find_lease(self, lease_id: str) -> LeaseRecord | None:
        rows = self._query("SELECT * FROM leases WHERE lease_id=?", (lease_id,))
        return self._lease(rows[0]) if rows else None

    def close(self) -> None:
        with self._lock:
            self._release(self._db)

    def _release(self, db: sqlite3.Connection | None) -> None:
        """Close the connection, then give up the claim: in this order (see :class:`_Claim`)."""
        if db is not None:
            db.close()
        if self._owner is not None:
            self._owner.release()
            self._owner = None
