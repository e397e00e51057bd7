"""A database that cannot be written for a while (disk full, locked) loses nothing and blocks nothing.

- Memory changes only after the database has the change: a lease that expires
  while writes fail stays in the lease table until its requeue is stored.
- Storage errors answer UNAVAILABLE (retryable), through the one error-to-status
  table, and are logged as one line per distinct error, not a traceback per call.
"""

import logging
import sqlite3
import time

import grpc
import pytest

from taylorglo_tf.coordinator.errors import StorageUnavailable
from taylorglo_tf.coordinator.grpc_util import status_for
from taylorglo_tf.coordinator.ratelog import RateLimitedLog
from taylorglo_tf.coordinator.scheduler import Scheduler
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.coordinator.storage import SqliteStorage, SqliteUnavailable
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.faults import FaultyStorage
from tests.helpers.grpc_client import Client
from tests.helpers.leasing import take_lease
from tests.helpers.scheduling import Clock, drain, make_spec, report, synthetic_fitness


def statuses(scheduler, experiment_id):
    return [c.status for c in scheduler.result(experiment_id).candidates]


def test_leases_that_expire_while_the_disk_is_full_are_requeued_once_it_has_space(tmp_path):
    clock = Clock()
    storage = FaultyStorage(SqliteStorage(tmp_path / "c.db"))
    s = Scheduler(storage, lease_ttl_s=3, prescreen=lambda theta, n: True, clock=clock)
    s.start(reaper=False)
    exp = s.submit(make_spec(population=3, generations=2))
    lost = [take_lease(s, "gone"), take_lease(s, "gone")]  # trainers that die with their leases
    storage.full = True
    for _ in range(4):  # a 12 s disk-full at a 3 s TTL: every reaper pass fails
        clock.now += 3
        with pytest.raises(StorageUnavailable):
            s.expire_leases()
    assert storage.refused == 4
    assert statuses(s, exp.id).count(types_pb2.CANDIDATE_STATUS_LEASED) == 2
    storage.full = False
    assert s.expire_leases() == 2  # the pass after the disk has space requeues both
    assert drain(s) == 3 + 3
    record = s.get(exp.id)
    assert record.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED and record.evaluations_done == 6
    assert {
        c.attempts for c in s.result(exp.id).candidates if c.generation == 0 and c.index in {l.index for l in lost}
    } == {2}


def test_a_report_refused_by_a_full_disk_changes_nothing_and_counts_when_retried(tmp_path):
    storage = FaultyStorage(SqliteStorage(tmp_path / "c.db"))
    s = Scheduler(storage, prescreen=lambda theta, n: True)
    s.start(reaper=False)
    exp = s.submit(make_spec(population=2, generations=1))
    lease = take_lease(s, "t")
    storage.full = True
    with pytest.raises(StorageUnavailable):
        report(s, lease)
    assert s.get(exp.id).evaluations_done == 0
    assert s.heartbeat(lease.lease_id, "t")[0]  # the lease is still the trainer's
    storage.full = False
    assert report(s, lease) == (True, "")
    assert s.get(exp.id).evaluations_done == 1


def test_a_locked_database_is_a_retryable_storage_error_naming_the_file(tmp_path):
    path = tmp_path / "locked.db"
    storage = SqliteStorage(path, busy_timeout_s=0.05, locked_retry_s=0)
    s = Scheduler(storage, prescreen=lambda theta, n: True)
    s.start(reaper=False)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    with pytest.raises(StorageUnavailable) as raised:
        s.submit(make_spec(population=2, generations=1))
    code, details = status_for(raised.value)
    assert code is grpc.StatusCode.UNAVAILABLE
    assert "locked.db" in details and "database is locked" in details
    assert s.list() == []
    other.execute("ROLLBACK")
    assert s.submit(make_spec(population=2, generations=1)).state == types_pb2.EXPERIMENT_STATE_RUNNING


def test_over_grpc_a_full_disk_answers_unavailable_and_logs_one_line(tmp_path, caplog, monkeypatch):
    server = serve(tmp_path / "c.db")
    try:
        client = Client(server.address)
        client.submit()
        lease = client.worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t"), timeout=10).lease
        storage = server.scheduler._storage
        real = storage.update_candidate

        def full(*args, **kwargs):
            raise SqliteUnavailable(f"database {str(storage.path)!r}: database or disk is full")

        monkeypatch.setattr(storage, "update_candidate", full)
        request = ws.ReportResultRequest(
            lease_id=lease.lease_id,
            trainer_id="t",
            status=ws.EVALUATION_STATUS_OK,
            fitness=synthetic_fitness(lease.theta),
        )
        caplog.set_level(logging.WARNING, logger="taylorglo_tf.coordinator")
        for _ in range(50):
            with pytest.raises(grpc.RpcError) as raised:
                client.worker.ReportResult(request, timeout=10)
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "database or disk is full" in raised.value.details()
        lines = [r for r in caplog.records if "disk is full" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None  # one line, no traceback
        monkeypatch.setattr(storage, "update_candidate", real)
        assert client.worker.ReportResult(request, timeout=10).accepted  # the retry counts
    finally:
        server.stop(grace=0)


def test_the_rate_limited_log_counts_what_it_left_out(caplog):
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("coordinator.test"), interval_s=60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="coordinator.test")
    for _ in range(100):
        log.warning("disk full")
    log.warning("database is locked")
    now[0] = 61
    log.warning("disk full")
    assert [r.getMessage() for r in caplog.records] == [
        "disk full",
        "database is locked",
        "disk full (and 99 more times in the last 60 s)",
    ]


def test_the_lease_reaper_logs_a_full_disk_once_not_every_pass(tmp_path, caplog):
    storage = FaultyStorage(SqliteStorage(tmp_path / "c.db"))
    s = Scheduler(storage, lease_ttl_s=1.0, prescreen=lambda theta, n: True)
    s.start(reaper=True)  # a pass every 0.25 s
    try:
        s.submit(make_spec(population=2, generations=1))
        take_lease(s, "gone"), take_lease(s, "gone")
        storage.full = True  # before the leases expire
        caplog.set_level(logging.INFO, logger="taylorglo_tf.coordinator")
        deadline = time.monotonic() + 60
        while storage.refused < 8:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        lines = [r for r in caplog.records if "disk is full" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None  # eight passes failed, one line said so
        storage.full = False
        while (requeued := take_lease(s, "t")) is None:  # the next pass requeues the lost candidates
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert requeued.attempt == 2
    finally:
        s.stop()
