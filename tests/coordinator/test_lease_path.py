"""The lease path keeps its promises under hang-ups, storage faults and stuck trainers.

- A caller that hangs up never keeps a ticket or a lease: a lease granted to it in
  that instant goes back to the queue without spending an attempt.
- A write the database refuses (disk full, locked) is answered UNAVAILABLE at once,
  and time spent in such a fault does not count against a lease's TTL.
- A lease heartbeated without progress ends like a silent one, after its progress deadline.
- What a trainer says when it gives a lease back reaches the log, escaped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor

import grpc
import pytest

from taylorglo_tf.coordinator import optimizers
from taylorglo_tf.coordinator.errors import StorageUnavailable
from taylorglo_tf.coordinator.longpoll import LongPolls
from taylorglo_tf.coordinator.scheduler import Scheduler
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.coordinator.storage import SqliteStorage, SqliteUnavailable
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc
from tests.helpers.faults import FaultyStorage
from tests.helpers.grpc_client import Client
from tests.helpers.leasing import take_lease
from tests.helpers.scheduling import Clock, make_spec, open_scheduler, report

QUEUED, LEASED = types_pb2.CANDIDATE_STATUS_QUEUED, types_pb2.CANDIDATE_STATUS_LEASED


class GatedExecutor(Executor):
    """A pool whose calls start only once ``gate`` is set: a scheduler call stuck behind a commit."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=2)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def submit(self, fn, /, *args, **kwargs):
        def gated():
            self.entered.set()
            assert self.gate.wait(30)
            return fn(*args, **kwargs)

        return self._pool.submit(gated)

    def shutdown(self, wait=True, **kwargs):
        self.gate.set()
        self._pool.shutdown(wait)


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def hang_up_while_the_ticket_is_taken(scheduler, executor):
    """A LongPolls call cancelled while its ``wait_for_leases`` waits in the pool, then the pool goes on."""

    async def scenario():
        polls = LongPolls(scheduler, executor)
        call = asyncio.ensure_future(polls.lease("gone", 30.0))
        await asyncio.get_running_loop().run_in_executor(None, executor.entered.wait, 30)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        executor.gate.set()  # the ticket is taken only now, for a caller that is gone
        others = asyncio.all_tasks() - {asyncio.current_task()}
        await asyncio.gather(*others)  # the server's loop runs on: whatever withdraws the ticket finishes

    asyncio.run(scenario())


def test_a_caller_that_hangs_up_while_its_ticket_is_taken_keeps_no_ticket(tmp_path):
    scheduler = open_scheduler(tmp_path / "c.db")
    executor = GatedExecutor()
    try:
        hang_up_while_the_ticket_is_taken(scheduler, executor)
        assert not scheduler._dispatcher.waiting  # the ticket taken for nobody was withdrawn
        exp = scheduler.submit(make_spec(population=2, generations=1))
        assert [c.status for c in scheduler.result(exp.id).candidates] == [QUEUED, QUEUED]
    finally:
        executor.shutdown()
        scheduler.stop()


def test_a_lease_granted_to_a_caller_that_hung_up_while_its_ticket_was_taken_goes_back_unspent(tmp_path):
    scheduler = open_scheduler(tmp_path / "c.db")
    executor = GatedExecutor()
    try:
        exp = scheduler.submit(make_spec(population=2, generations=1))  # work is queued: the ticket grants at once
        hang_up_while_the_ticket_is_taken(scheduler, executor)
        wait_until(lambda: all(c.status == QUEUED for c in scheduler.result(exp.id).candidates))
        assert [c.attempts for c in scheduler.result(exp.id).candidates] == [0, 0]
    finally:
        executor.shutdown()
        scheduler.stop()


@pytest.fixture
def coordinator(tmp_path):
    server = serve(tmp_path / "c.db", "127.0.0.1:0", lease_ttl_s=30)
    yield server
    server.stop(grace=0)


def test_the_reason_a_lease_is_given_back_is_logged_on_one_line_with_controls_escaped(coordinator, caplog):
    client = Client(coordinator.address)
    client.submit()
    lease = client.worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t"), timeout=10).lease
    caplog.set_level(logging.INFO, logger="taylorglo_tf.coordinator")
    reason = "shutting down\n\x1b[31mFAKE: experiment deleted\u202e"
    request = ws.ReturnLeaseRequest(lease_id=lease.lease_id, trainer_id="t", reason=reason)
    assert client.worker.ReturnLease(request, timeout=10).returned
    [line] = [r.getMessage() for r in caplog.records if lease.lease_id in r.getMessage()]
    assert "shutting down\\x0a\\x1b[31mFAKE: experiment deleted\\u202e" in line
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line


@pytest.mark.slow  # 15 s of two hundred calls; the two tests above pin the same race down deterministically
def test_two_hundred_trainers_hanging_up_mid_poll_leave_no_ticket_and_no_lease_behind(tmp_path, monkeypatch):
    """Proxies that cut idle calls, at scale: 200 calls cancelled 10-500 ms into their long
    poll, over and over, while two trainers run a search. Every lease the coordinator granted
    to a call that hung up comes back at once, unspent; nothing waits out its TTL.

    One race no server can close is left out: the answer and the hang-up cross on the wire
    (measured: answered within a millisecond of the client's cancel, 8 in 4,000 answers), the
    call ends OK on the coordinator and the client library drops the answer. Such a lease is
    recognised by its answered call and excused; it goes back when its TTL runs out."""
    answered: set[str] = set()
    lease = LongPolls.lease

    async def recorded(self, *args, **kwargs):
        leases = await lease(self, *args, **kwargs)
        answered.update(granted.lease_id for granted in leases)
        return leases

    monkeypatch.setattr(LongPolls, "lease", recorded)
    ttl = 60.0
    server = serve(tmp_path / "c.db", "127.0.0.1:0", lease_ttl_s=ttl)
    hanging_up, training = threading.Event(), threading.Event()
    try:
        exp = Client(server.address).submit(population=24, generations=3)

        def hang_ups(seed: int, calls: int = 25) -> None:
            rng = random.Random(seed)
            with grpc.insecure_channel(server.address) as channel:
                worker = ws_grpc.WorkerServiceStub(channel)
                while hanging_up.is_set():
                    polls = []
                    for i in range(calls):
                        request = ws.LeaseCandidateRequest(trainer_id=f"gone-{seed}-{i}", wait_ms=30_000)
                        polls.append(
                            (rng.uniform(0.01, 0.5), request, worker.LeaseCandidate.future(request, timeout=60))
                        )
                    started = time.monotonic()
                    for after, request, poll in sorted(polls, key=lambda p: p[0]):
                        time.sleep(max(0.0, started + after - time.monotonic()))
                        if poll.cancel():
                            continue
                        # answered first: the leases reached this caller, which gives them back
                        for granted in poll.result().leases:
                            worker.ReturnLease(
                                ws.ReturnLeaseRequest(lease_id=granted.lease_id, trainer_id=request.trainer_id),
                                timeout=10,
                            )

        def train(trainer_id: str) -> None:
            client = Client(server.address)
            while training.is_set():
                client.train(trainer_id, limit=1)

        hanging_up.set()
        training.set()
        threads = [threading.Thread(target=hang_ups, args=(seed,)) for seed in range(8)]
        threads += [threading.Thread(target=train, args=(f"trainer-{k}",)) for k in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(8)
        hanging_up.clear()
        for thread in threads[:8]:
            thread.join(timeout=30)
        time.sleep(1)  # the trainers go on; the last hang-ups' withdrawals finish
        training.clear()
        for thread in threads[8:]:
            thread.join(timeout=30)

        assert not [t for t in server.scheduler._dispatcher.waiting if t.trainer_id.startswith("gone-")]
        candidates = server.scheduler._storage.load_candidates(exp.id)
        held = [c.lease_id for c in candidates if c.status == LEASED]
        stranded = [lease_id for lease_id in held if lease_id not in answered]
        assert stranded == [], f"{len(stranded)} leases granted to calls that hung up were kept"
        assert server.scheduler.get(exp.id).evaluations_done > 0  # the trainers were served meanwhile
        assert all(c.attempts <= 1 for c in candidates)  # nothing expired, nothing was spent twice
    finally:
        hanging_up.clear()
        training.clear()
        server.stop(grace=0)


def full_disk_for_grants(server, monkeypatch):
    storage = server.scheduler._storage

    def full(grants):
        raise SqliteUnavailable(f"database {str(storage.path)!r}: database or disk is full")

    monkeypatch.setattr(storage, "grant_leases", full)


def test_a_lease_call_during_a_full_disk_is_unavailable_not_no_work(coordinator, monkeypatch):
    client = Client(coordinator.address)
    client.submit()
    full_disk_for_grants(coordinator, monkeypatch)
    with pytest.raises(grpc.RpcError) as raised:
        client.worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t", wait_ms=5_000), timeout=10)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "disk is full" in raised.value.details()
    assert not coordinator.scheduler._dispatcher.waiting  # the refused call left no ticket behind


def test_a_waiting_lease_call_whose_grant_the_full_disk_refused_ends_unavailable(coordinator, monkeypatch):
    client = Client(coordinator.address)
    poll = client.worker.LeaseCandidate.future(ws.LeaseCandidateRequest(trainer_id="t", wait_ms=1_500), timeout=10)
    wait_until(lambda: len(coordinator.scheduler._dispatcher.waiting) == 1)
    full_disk_for_grants(coordinator, monkeypatch)
    client.submit()  # work arrives, but its grant cannot be stored
    with pytest.raises(grpc.RpcError) as raised:
        poll.result()
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_database_locked_by_another_process_stalls_no_read_and_expires_no_lease(tmp_path, caplog):
    """Another process holds the write lock for three TTLs. Writes fail at once with UNAVAILABLE
    (not after a busy timeout, not DEADLINE_EXCEEDED), reads are answered meanwhile, and the
    lease of the trainer whose report keeps failing does not expire: its retry counts."""
    ttl = 1.0
    server = serve(tmp_path / "c.db", "127.0.0.1:0", lease_ttl_s=ttl)
    caplog.set_level(logging.INFO, logger="taylorglo_tf.coordinator")
    try:
        client = Client(server.address)
        # a channel without the client's retry policy: each call shows the coordinator's own answer
        client.worker = ws_grpc.WorkerServiceStub(grpc.insecure_channel(server.address))
        exp = client.submit(population=2, generations=1)
        lease = client.worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t"), timeout=10).lease
        report = ws.ReportResultRequest(
            lease_id=lease.lease_id, trainer_id="t", status=ws.EVALUATION_STATUS_OK, fitness=0.5
        )
        other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        slowest = 0.0
        locked_until = time.monotonic() + 3 * ttl
        while time.monotonic() < locked_until:  # the trainer retries its report, without heartbeats
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                client.worker.ReportResult(report, timeout=5)
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE, raised.value.details()
            assert "locked" in raised.value.details()
            assert client.experiments.GetExperiment(es.GetExperimentRequest(experiment_id=exp.id), timeout=5).id
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        other.execute("ROLLBACK")
        deadline = time.monotonic() + 10
        while True:  # the first retry after the lock lifts counts
            try:
                ack = client.worker.ReportResult(report, timeout=5)
                break
            except grpc.RpcError as error:
                assert error.code() is grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
                time.sleep(0.1)
        assert ack.accepted, ack.reason
        [reported] = [c for c in server.scheduler._storage.load_candidates(exp.id) if c.index == lease.index]
        assert reported.status == types_pb2.CANDIDATE_STATUS_SUCCEEDED and reported.attempts == 1
        assert not [r for r in caplog.records if "expired" in r.getMessage()]
        assert slowest < 1.0  # a report and a read, while the database is locked
    finally:
        server.stop(grace=0)


def test_time_in_a_storage_fault_is_given_back_to_every_live_lease(tmp_path):
    clock = Clock()
    storage = FaultyStorage(SqliteStorage(tmp_path / "c.db"))
    s = Scheduler(storage, lease_ttl_s=10, prescreen=lambda theta, n: True, clock=clock)
    s.start(reaper=False)
    s.submit(make_spec(population=3, generations=1))
    quiet, beating, reporting = take_lease(s, "quiet"), take_lease(s, "beating"), take_lease(s, "reporting")
    clock.now += 4  # 6 s left on each
    storage.full = True
    with pytest.raises(StorageUnavailable):
        report(s, reporting, trainer="reporting")  # the fault begins
    clock.now += 100  # ten TTLs of failing writes
    with pytest.raises(StorageUnavailable):
        s.expire_leases()  # nothing can be requeued, and no lease ages
    assert s.heartbeat(beating.lease_id, "beating")[0]  # heartbeats need no write
    storage.full = False
    assert s.expire_leases() == 0  # the database takes writes again: the leases get their time back
    clock.now += 5.9
    assert s.expire_leases() == 0
    assert report(s, reporting, trainer="reporting") == (True, "")
    clock.now += 0.2  # past the 6 s the quiet lease had left; the heartbeated one has its full 10 s
    assert s.expire_leases() == 1
    assert s.heartbeat(beating.lease_id, "beating")[0] and not s.heartbeat(quiet.lease_id, "quiet")[0]


def test_a_lease_heartbeated_without_progress_ends_after_its_progress_deadline(tmp_path):
    clock = Clock()
    s = open_scheduler(tmp_path / "c.db", clock=clock, ttl=10)  # progress deadline: 10 TTLs = 100 s
    assert s.progress_deadline_s == 100
    exp = s.submit(make_spec(population=2, generations=1, max_attempts=3))
    stuck, working = take_lease(s, "stuck"), take_lease(s, "working")
    for step in range(1, 40):  # 195 s of heartbeats every 5 s
        clock.now += 5
        s.heartbeat(stuck.lease_id, "stuck", 7 if step >= 2 else step)  # stops at step 7 after 10 s
        s.heartbeat(working.lease_id, "working", step)
        s.expire_leases()
        if step * 5 < 10 + 100:
            assert s.heartbeat(stuck.lease_id, "stuck")[0], f"ended early, at {step * 5} s"
    assert not s.heartbeat(stuck.lease_id, "stuck", 7)[0]
    assert s.heartbeat(working.lease_id, "working", 40)[0]  # progress keeps a lease however long it runs
    [requeued] = [c for c in s._storage.load_candidates(exp.id) if c.index == stuck.index]
    assert requeued.status == QUEUED and requeued.attempts == 1  # the attempt is spent, as for a silent lease
    assert "no training progress (steps_done stayed at 7)" in requeued.error


def test_before_its_first_step_a_lease_has_twice_the_progress_deadline(tmp_path):
    """Loading data and compiling (XLA) come before the first step and may take minutes."""
    clock = Clock()
    s = open_scheduler(tmp_path / "c.db", clock=clock, ttl=10)
    s.submit(make_spec(population=2, generations=1))
    lease = take_lease(s, "t")
    while clock.now < 1000 + 195:  # heartbeats at step 0, every 5 s
        clock.now += 5
        assert s.heartbeat(lease.lease_id, "t", 0)[0]
        assert s.expire_leases() == 0
    clock.now = 1000 + 199.9
    assert s.heartbeat(lease.lease_id, "t", 0)[0] and s.expire_leases() == 0
    clock.now = 1000 + 200  # twice the 100 s progress deadline
    assert s.expire_leases() == 1 and not s.heartbeat(lease.lease_id, "t", 0)[0]


@pytest.mark.parametrize("deadline", [0.0, -1.0, float("nan"), float("inf")])
def test_a_progress_deadline_that_is_not_a_positive_time_is_refused_naming_it(tmp_path, deadline):
    with pytest.raises(ValueError, match="progress_deadline_s="):
        Scheduler(SqliteStorage(tmp_path / "c.db"), progress_deadline_s=deadline)


def test_over_grpc_heartbeats_without_new_steps_end_the_lease(tmp_path):
    server = serve(tmp_path / "c.db", "127.0.0.1:0", lease_ttl_s=30, scheduler_options={"progress_deadline_s": 0.5})
    try:
        client = Client(server.address)
        client.submit()
        lease = client.worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t"), timeout=10).lease
        beat = ws.HeartbeatRequest(lease_id=lease.lease_id, trainer_id="t", steps_done=3)
        deadline = time.monotonic() + 20
        while client.worker.Heartbeat(beat, timeout=10).keep_going:  # step 3, over and over
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert time.monotonic() < deadline
    finally:
        server.stop(grace=0)


def test_a_submit_builds_its_optimizer_and_first_generation_outside_the_scheduler_lock(tmp_path, monkeypatch):
    """Creating CMA-ES and sampling a large first generation take a while; trainers of other
    experiments must not wait for it (only the commit and the publication take the lock)."""
    s = open_scheduler(tmp_path / "c.db")
    first = s.submit(make_spec(population=2, generations=1))
    lease = take_lease(s, "t")
    building, release = threading.Event(), threading.Event()
    create = optimizers.create

    def slow_create(spec):
        building.set()
        assert release.wait(30)
        return create(spec)

    monkeypatch.setattr(optimizers, "create", slow_create)
    submitting = threading.Thread(target=s.submit, args=(make_spec(population=4, generations=1),))
    submitting.start()
    try:
        assert building.wait(10)
        answered = []
        trainer = threading.Thread(
            target=lambda: answered.append((s.heartbeat(lease.lease_id, "t")[0], take_lease(s, "t2"), s.get(first.id)))
        )
        trainer.start()
        trainer.join(timeout=5)
        assert not trainer.is_alive(), "the lease path waited for a submit's optimizer"
        [(kept, second_lease, record)] = answered
        assert kept and second_lease.experiment_id == first.id and record.id == first.id
    finally:
        release.set()
        submitting.join(timeout=30)
    assert len(s.list()) == 2


def test_the_coordinator_command_passes_its_progress_deadline_to_the_scheduler(tmp_path, monkeypatch):
    from taylorglo_tf import cli
    from taylorglo_tf.coordinator import server as server_module

    given = {}

    def fake_serve(*args, **kwargs):
        given.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(server_module, "serve", fake_serve)
    assert cli.main(["coordinator", "--db", str(tmp_path / "c.db"), "--progress-deadline", "900"]) != 0
    assert given["scheduler_options"] == {"progress_deadline_s": 900.0}


def test_a_progress_deadline_under_a_second_is_refused_by_the_command_naming_it(capsys):
    from taylorglo_tf import cli

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["coordinator", "--progress-deadline", "0.5"])
    assert "--progress-deadline" in capsys.readouterr().err


def test_a_storage_fault_does_not_count_against_a_lease_s_progress_deadline(tmp_path):
    """A finished evaluation's report may be what waited out the fault: its lease keeps its progress time."""
    clock = Clock()
    storage = FaultyStorage(SqliteStorage(tmp_path / "c.db"))
    s = Scheduler(storage, lease_ttl_s=10, progress_deadline_s=50, prescreen=lambda theta, n: True, clock=clock)
    s.start(reaper=False)
    s.submit(make_spec(population=2, generations=1))
    lease = take_lease(s, "t")
    clock.now += 5
    s.heartbeat(lease.lease_id, "t", 100)  # the last step: progress due by 55 s
    clock.now += 5
    storage.full = True
    with pytest.raises(StorageUnavailable):
        report(s, lease)  # at 10 s, 45 s of progress time left
    for _ in range(30):  # a 60 s fault; the trainer heartbeats its last step count meanwhile
        clock.now += 2
        s.heartbeat(lease.lease_id, "t", 100)
    storage.full = False
    assert s.expire_leases() == 0
    clock.now += 44
    s.heartbeat(lease.lease_id, "t", 100)
    assert s.expire_leases() == 0
    assert report(s, lease) == (True, "")


def test_a_retry_that_starts_its_steps_again_is_progress(tmp_path):
    """The abort rule retries a candidate from step 1: the lease lives on while the retry trains."""
    clock = Clock()
    s = open_scheduler(tmp_path / "c.db", clock=clock, ttl=10)  # progress deadline: 10 TTLs = 100 s
    s.submit(make_spec(population=2, generations=1))
    lease = take_lease(s, "t")
    counts = [*range(1, 41), *range(1, 41)]  # 40 steps, the abort rule fires, 40 steps of the retry
    for steps_done in counts:  # a step every 5 s: 400 s in all, four progress deadlines
        clock.now += 5
        assert s.heartbeat(lease.lease_id, "t", steps_done)[0], f"ended at steps_done={steps_done}"
        s.expire_leases()
    assert s.heartbeat(lease.lease_id, "t", 40)[0]
