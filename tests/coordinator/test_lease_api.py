"""Leasing without a thread per waiting call: wait_for_leases tickets, long polls, batch grants."""

import threading

import pytest

from taylorglo_tf.coordinator.scheduler import Scheduler
from taylorglo_tf.coordinator.storage import SqliteStorage
from taylorglo_tf.rpc import types_pb2
from tests.helpers.leasing import take_lease, take_leases
from tests.helpers.scheduling import make_spec, open_scheduler, report


class CountingStorage(SqliteStorage):
    """Counts grant transactions and the leases in each."""

    def __init__(self, path):
        super().__init__(path)
        self.grant_batches: list[int] = []

    def grant_leases(self, grants):
        self.grant_batches.append(len(grants))
        super().grant_leases(grants)


def counting_scheduler(path):
    storage = CountingStorage(path)
    scheduler = Scheduler(storage, prescreen=lambda theta, n: True)
    scheduler.start(reaper=False)
    return scheduler, storage


def test_a_lease_call_that_does_not_wait_returns_nothing_without_work(tmp_path):
    s = open_scheduler(tmp_path / "c.db")
    assert take_leases(s, "t") == []
    exp = s.submit(make_spec(population=3, generations=1))
    [lease] = take_leases(s, "t")
    assert lease.experiment_id == exp.id and lease.attempt == 1


def test_a_lease_call_is_granted_up_to_max_candidates_of_one_experiment_in_one_transaction(tmp_path):
    s, storage = counting_scheduler(tmp_path / "c.db")
    a = s.submit(make_spec(population=3, generations=1, seed=1))
    b = s.submit(make_spec(population=3, generations=1, seed=2))
    first = take_leases(s, "t", max_candidates=5)
    assert [l.experiment_id for l in first] == [a.id] * 3  # one experiment's candidates, all it has
    assert len({l.lease_id for l in first}) == 3
    second = take_leases(s, "t", max_candidates=2)
    assert [l.experiment_id for l in second] == [b.id] * 2  # round-robin: the other experiment next
    assert storage.grant_batches == [3, 2]


def test_a_new_generation_is_granted_to_every_waiting_call_in_one_transaction(tmp_path):
    s, storage = counting_scheduler(tmp_path / "c.db")
    granted = []
    tickets = [s.wait_for_leases(f"t{i}", granted.append) for i in range(5)]
    assert granted == [] and storage.grant_batches == []
    exp = s.submit(make_spec(population=4, generations=2))
    assert storage.grant_batches == [4]  # the first four waiting calls, first come first served
    assert [len(g) for g in granted] == [1, 1, 1, 1]
    assert [t.done for t in tickets] == [True, True, True, True, False]
    for i, g in enumerate(list(granted)):
        assert report(s, g[0], trainer=f"t{i}") == (True, "")
    # generation 1 goes out in one transaction too; the fifth call got its candidate with it
    assert storage.grant_batches == [4, 1]
    assert [len(g) for g in granted] == [1, 1, 1, 1, 1] and granted[4][0].generation == 1
    assert s.get(exp.id).generation == 1


def test_long_polls_waiting_together_are_granted_in_one_transaction(tmp_path):
    s, storage = counting_scheduler(tmp_path / "c.db")
    got, threads = [], []
    for i in range(6):
        threads.append(threading.Thread(target=lambda i=i: got.append(take_lease(s, f"t{i}", wait_s=10))))
        threads[-1].start()
    while len(s._dispatcher.waiting) < 6:  # every call is waiting
        threading.Event().wait(0.01)
    s.submit(make_spec(population=6, generations=1))
    for t in threads:
        t.join(10)
    assert len(got) == 6 and all(lease is not None for lease in got)
    assert len({lease.index for lease in got}) == 6
    assert storage.grant_batches == [6]


def test_a_cancelled_ticket_is_granted_nothing_and_a_granted_one_cannot_be_cancelled(tmp_path):
    s = open_scheduler(tmp_path / "c.db")
    granted = []
    gone = s.wait_for_leases("gone", granted.append)
    kept = s.wait_for_leases("kept", granted.append)
    assert gone.cancel() is True
    exp = s.submit(make_spec(population=2, generations=1))
    assert len(granted) == 1 and len(granted[0]) == 1
    assert kept.cancel() is False  # granted already: the caller owns the lease
    assert s.return_lease(granted[0][0].lease_id, "kept")
    statuses = [c.status for c in s.result(exp.id).candidates]
    assert statuses == [types_pb2.CANDIDATE_STATUS_QUEUED] * 2


def test_a_waiting_caller_that_hung_up_is_granted_nothing(tmp_path):
    s = open_scheduler(tmp_path / "c.db")
    active = threading.Event()
    active.set()
    granted = []
    s.wait_for_leases("gone", granted.append, is_active=active.is_set)
    active.clear()
    exp = s.submit(make_spec(population=2, generations=1))
    assert granted == [[]]  # told: nothing, the wait is over
    assert [c.status for c in s.result(exp.id).candidates] == [types_pb2.CANDIDATE_STATUS_QUEUED] * 2


def test_stopping_ends_every_waiting_call_with_nothing(tmp_path):
    s = open_scheduler(tmp_path / "c.db")
    granted = []
    s.wait_for_leases("t", granted.append)
    s.stop()
    assert granted == [[]]
    s.wait_for_leases("late", granted.append)
    assert granted == [[], []]


def test_a_failed_grant_commit_leaves_calls_waiting_and_is_retried(tmp_path, monkeypatch):
    s = open_scheduler(tmp_path / "c.db")
    granted = []
    s.wait_for_leases("t", granted.append)
    real = s._storage.grant_leases

    def full(grants):
        raise OSError("disk full")

    monkeypatch.setattr(s._storage, "grant_leases", full)
    exp = s.submit(make_spec(population=2, generations=1))
    assert granted == []
    assert [c.status for c in s.result(exp.id).candidates] == [types_pb2.CANDIDATE_STATUS_QUEUED] * 2
    monkeypatch.setattr(s._storage, "grant_leases", real)
    s.retry_stalled()  # the reaper's periodic pass
    assert len(granted) == 1 and granted[0][0].experiment_id == exp.id


def test_max_candidates_must_be_positive(tmp_path):
    s = open_scheduler(tmp_path / "c.db")
    with pytest.raises(ValueError, match="max_candidates=0"):
        s.wait_for_leases("t", lambda leases: None, max_candidates=0)
