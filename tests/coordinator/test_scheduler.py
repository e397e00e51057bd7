"""Scheduler rules without gRPC: store before dispatch, leases, idempotent reports, fairness, restart."""

import threading
import time

import numpy as np
import pytest

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.coordinator import cmaes
from taylorglo_tf.coordinator import scheduler as scheduler_module
from taylorglo_tf.coordinator.grpc_util import FailedPrecondition, NotFound
from taylorglo_tf.coordinator.model import result_proto
from taylorglo_tf.coordinator.scheduler import Report, Scheduler
from taylorglo_tf.coordinator.storage import SqliteStorage
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.leasing import hang_up_while_waiting, take_lease
from tests.helpers.scheduling import OK, Clock, drain, make_spec, open_scheduler, report, synthetic_fitness, trajectory


@pytest.fixture
def db(tmp_path):
    return tmp_path / "coordinator.db"


def test_a_search_runs_generations_times_population_evaluations_and_succeeds(db):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=5, generations=3))
    assert drain(s) == 15
    result = s.result(exp.id)
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
    assert result.experiment.evaluations_done == 15 and result.experiment.generation == 3
    assert [(c.generation, c.index) for c in result.candidates] == [(g, i) for g in range(3) for i in range(5)]
    assert result.best_fitness == max(c.fitness for c in result.candidates)
    assert [g.generation for g in result.generations] == [0, 1, 2]
    assert all(len(c.theta) == 8 for c in result.candidates)  # paper form: 8 parameters


def test_the_first_generation_starts_at_theta_zero_with_the_spec_sigma(db):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=6, generations=1, sigma0=0.5))
    thetas = np.array([take_lease(s, "t").theta for _ in range(6)])
    # x0 = 0: the sample mean of a symmetric Gaussian population is near 0 at scale sigma0
    assert np.all(np.abs(thetas) < 0.5 * 6)
    es = cmaes.loads(s._storage.load_experiments()[0].es_state)
    assert es.sigma0 == 0.5 and np.all(es.mean == 0) and es.popsize == 6
    assert exp.evaluations_total == 6


def test_the_same_seed_gives_the_same_trajectory_and_another_seed_a_different_one(tmp_path):
    runs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        s = open_scheduler(tmp_path / f"{name}.db")
        exp = s.submit(make_spec(seed=seed))
        drain(s)
        runs.append(trajectory(s, exp.id))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_candidates_and_strategy_are_stored_before_any_lease(db):
    events = []
    storage = SqliteStorage(db)
    original_insert, original_grant = storage.insert_experiment, storage.grant_leases

    def insert(experiment, candidates):
        events.append(("insert", len(candidates), bool(experiment.es_state)))
        original_insert(experiment, candidates)

    def grant(grants):
        for _lease, candidate in grants:
            # the candidate being leased is already in the database
            stored = storage.load_candidates(candidate.experiment_id, candidate.generation)
            events.append(("grant", candidate.index in [c.index for c in stored]))
        original_grant(grants)

    storage.insert_experiment, storage.grant_leases = insert, grant
    s = Scheduler(storage, prescreen=lambda t, n: True)
    s.start(reaper=False)
    s.submit(make_spec(population=3, generations=1))
    take_lease(s, "t")
    assert events == [("insert", 3, True), ("grant", True)]


def test_cma_es_is_told_exactly_once_per_generation_despite_duplicate_reports(db, monkeypatch):
    told = []
    real_tell = cmaes.tell
    monkeypatch.setattr(cmaes, "tell", lambda es, thetas, fit: (told.append(len(thetas)), real_tell(es, thetas, fit)))
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=3, generations=2))
    leases = [take_lease(s, "t") for _ in range(3)]
    for lease in leases:
        assert report(s, lease) == (True, "")
    for lease in leases:  # duplicates, including one with a different fitness
        accepted, reason = report(s, lease, fitness=0.99)
        assert not accepted and "already has a final result" in reason
    assert told == [3]
    result = s.result(exp.id)
    assert [c.fitness for c in result.candidates if c.generation == 0] == [synthetic_fitness(l.theta) for l in leases]


def test_an_expired_lease_is_released_to_another_trainer_and_spends_an_attempt(db):
    clock = Clock()
    s = open_scheduler(db, clock=clock, ttl=10)
    s.submit(make_spec(population=2, generations=1))
    first = take_lease(s, "lost")
    clock.now += 11
    assert s.expire_leases() == 1
    assert s.heartbeat(first.lease_id, "lost") == (False, 0.0)
    again = [take_lease(s, "b"), take_lease(s, "b")]
    retry = next(l for l in again if l.index == first.index)
    assert retry.attempt == 2 and retry.lease_id != first.lease_id and list(retry.theta) == list(first.theta)


def test_heartbeats_keep_a_lease_alive_past_its_ttl(db):
    clock = Clock()
    s = open_scheduler(db, clock=clock, ttl=10)
    s.submit(make_spec(population=2, generations=1))
    lease = take_lease(s, "t")
    for _ in range(5):
        clock.now += 8
        assert s.heartbeat(lease.lease_id, "t") == (True, 10)
        assert s.expire_leases() == 0
    assert s.heartbeat(lease.lease_id, "someone-else") == (False, 0.0)
    assert report(s, lease) == (True, "")


def test_after_max_attempts_a_candidate_fails_with_fitness_zero_and_the_generation_completes(db):
    clock = Clock()
    s = open_scheduler(db, clock=clock, ttl=5)
    exp = s.submit(make_spec(population=2, generations=1, max_attempts=2))
    doomed = take_lease(s, "t")
    other = take_lease(s, "t")
    assert report(s, other) == (True, "")
    for attempt in (1, 2):
        clock.now += 6
        s.expire_leases()
        if attempt == 1:
            doomed = take_lease(s, "t")
            assert doomed.attempt == 2
    assert take_lease(s, "t") is None
    result = s.result(exp.id)
    failed = result.candidates[doomed.index]
    assert failed.status == types_pb2.CANDIDATE_STATUS_FAILED and failed.fitness == 0.0 and failed.attempts == 2
    assert "lease expired" in failed.error
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED


def test_a_stale_report_from_an_expired_lease_counts_if_it_is_the_first(db):
    clock = Clock()
    s = open_scheduler(db, clock=clock, ttl=5)
    exp = s.submit(make_spec(population=2, generations=1))
    slow = take_lease(s, "slow")
    clock.now += 6
    s.expire_leases()
    fresh = take_lease(s, "fast")
    assert fresh.index == slow.index
    assert report(s, slow, trainer="slow") == (True, "")
    assert s.heartbeat(fresh.lease_id, "fast") == (False, 0.0)  # told to stop: work already done
    accepted, reason = report(s, fresh, trainer="fast", fitness=0.1)
    assert not accepted and "final result" in reason
    assert s.result(exp.id).candidates[slow.index].trainer_id == "slow"


def test_an_error_report_retries_the_candidate_then_fails_it(db):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=2, generations=1, max_attempts=2))
    lease = take_lease(s, "t")
    assert report(s, lease, status=ws.EVALUATION_STATUS_ERROR, error="disk on fire") == (True, "")
    retry = take_lease(s, "t")
    assert retry.index == lease.index and retry.attempt == 2
    assert report(s, retry, status=ws.EVALUATION_STATUS_ERROR, error="still on fire") == (True, "")
    candidate = s.result(exp.id).candidates[lease.index]
    assert candidate.status == types_pb2.CANDIDATE_STATUS_FAILED and "still on fire" in candidate.error


def test_diverged_and_aborted_candidates_get_fitness_zero_whatever_the_report_says(db):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=2, generations=1))
    a, b = take_lease(s, "t"), take_lease(s, "t")
    report(s, a, status=ws.EVALUATION_STATUS_DIVERGED, fitness=0.9)
    report(s, b, status=ws.EVALUATION_STATUS_ABORTED, fitness=0.8)
    by_index = {c.index: c for c in s.result(exp.id).candidates}
    assert (by_index[a.index].status, by_index[a.index].fitness) == (types_pb2.CANDIDATE_STATUS_DIVERGED, 0.0)
    assert (by_index[b.index].status, by_index[b.index].fitness) == (types_pb2.CANDIDATE_STATUS_ABORTED, 0.0)


def test_returning_a_lease_requeues_without_spending_an_attempt(db):
    s = open_scheduler(db)
    s.submit(make_spec(population=2, generations=1, max_attempts=1))
    lease = take_lease(s, "t")
    assert s.return_lease(lease.lease_id, "t")
    assert not s.return_lease(lease.lease_id, "t")  # already returned
    again = take_lease(s, "t")
    assert again.index == lease.index and again.attempt == 1


def test_the_invariant_prescreen_scores_invalid_candidates_without_leasing_them(db):
    checked = []

    def prescreen(theta, num_classes):
        checked.append(num_classes)
        return theta[2] > 0  # "valid" when c_y > 0: about half the population

    s = open_scheduler(db, prescreen=prescreen)
    exp = s.submit(make_spec(population=8, generations=2, invariant_prescreen=True))
    leased = drain(s)
    result = s.result(exp.id)
    invalid = [c for c in result.candidates if c.status == types_pb2.CANDIDATE_STATUS_INVALID]
    assert invalid and all(c.fitness == 0.0 and c.attempts == 0 and c.theta[2] <= 0 for c in invalid)
    assert leased == 16 - len(invalid)
    assert set(checked) == {10}  # digits: 10 classes
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED


def test_the_prescreen_is_skipped_for_loss_forms_other_than_the_papers(db):
    s = open_scheduler(db, prescreen=lambda theta, n: pytest.fail("pre-screen called"))
    spec = spec_lib.load_spec(
        {
            "task": {"dataset": "digits", "model": "tiny", "steps": 5},
            "loss": {"order": 2},
            "search": {"population": 2, "generations": 1, "invariant_prescreen": True},
        }
    )
    s.submit(spec)
    assert drain(s) == 2


def test_two_experiments_share_trainers_round_robin(db):
    s = open_scheduler(db)
    a = s.submit(make_spec(population=6, generations=1))
    b = s.submit(make_spec(population=6, generations=1))
    owners = [take_lease(s, "t").experiment_id for _ in range(6)]
    assert owners == [a.id, b.id] * 3


def test_cancel_stops_dispatch_and_discards_late_reports(db):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=3, generations=2))
    lease = take_lease(s, "t")
    cancelled = s.cancel(exp.id)
    assert cancelled.state == types_pb2.EXPERIMENT_STATE_CANCELLED
    assert take_lease(s, "t") is None
    assert s.heartbeat(lease.lease_id, "t") == (False, 0.0)
    accepted, reason = report(s, lease)
    assert not accepted and "CANCELLED" in reason
    with pytest.raises(FailedPrecondition, match=exp.id):
        s.cancel(exp.id)
    with pytest.raises(NotFound, match="nope"):
        s.cancel("nope")


def test_unknown_and_foreign_leases_change_nothing(db):
    s = open_scheduler(db)
    s.submit(make_spec(population=2, generations=1))
    lease = take_lease(s, "owner")
    assert s.report(Report("no-such-lease", "t", OK, 0.5, None)) == (False, "unknown lease")
    accepted, reason = report(s, lease, trainer="intruder")
    assert not accepted and "owner" in reason
    assert s.heartbeat(lease.lease_id, "owner")[0]


def test_long_poll_returns_as_soon_as_work_is_submitted(db):
    s = open_scheduler(db)
    got = []
    waiter = threading.Thread(target=lambda: got.append((take_lease(s, "t", wait_s=10), time.monotonic())))
    waiter.start()
    time.sleep(0.2)
    submitted = time.monotonic()
    s.submit(make_spec(population=2, generations=1))
    waiter.join(5)
    lease, when = got[0]
    assert lease is not None and when - submitted < 1.0


def test_a_long_poll_whose_caller_hung_up_is_granted_nothing_when_work_arrives(db):
    s = open_scheduler(db)
    hang_up_while_waiting(s, "gone")  # the trainer cancelled its call (shutting down)
    exp = s.submit(make_spec(population=2, generations=1))
    assert [c.status for c in s.result(exp.id).candidates] == [types_pb2.CANDIDATE_STATUS_QUEUED] * 2
    assert take_lease(s, "t") is not None


def test_building_a_result_does_not_hold_up_leases(db, monkeypatch):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=4, generations=2))
    building, release = threading.Event(), threading.Event()

    def slow_result_proto(*args):
        building.set()
        release.wait(10)
        return result_proto(*args)

    monkeypatch.setattr(scheduler_module, "result_proto", slow_result_proto)
    results = []
    reader = threading.Thread(target=lambda: results.append(s.result(exp.id)))
    reader.start()
    assert building.wait(10)
    leases = []
    leaser = threading.Thread(target=lambda: leases.append(take_lease(s, "t")))
    leaser.start()
    leaser.join(5)
    release.set()
    reader.join(10)
    assert leases and leases[0].experiment_id == exp.id
    assert len(results[0].candidates) == 4


def test_a_long_poll_without_work_times_out_empty(db):
    s = open_scheduler(db)
    start = time.monotonic()
    assert take_lease(s, "t", wait_s=0.3) is None
    assert 0.25 < time.monotonic() - start < 2.0


def test_watch_streams_a_snapshot_then_every_event_and_ends_after_the_final_state(db):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=2, generations=2))
    events = []
    watcher = threading.Thread(target=lambda: events.extend(s.watch(exp.id)))
    watcher.start()
    time.sleep(0.2)
    drain(s)
    watcher.join(5)
    kinds = [e.kind for e in events]
    K = events[0].__class__
    assert kinds == [
        K.KIND_SNAPSHOT,
        K.KIND_CANDIDATE_FINISHED,
        K.KIND_CANDIDATE_FINISHED,
        K.KIND_GENERATION_FINISHED,
        K.KIND_CANDIDATE_FINISHED,
        K.KIND_CANDIDATE_FINISHED,
        K.KIND_GENERATION_FINISHED,
        K.KIND_EXPERIMENT_FINISHED,
    ]
    assert events[-1].experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
    assert [e.generation.generation for e in events if e.kind == K.KIND_GENERATION_FINISHED] == [0, 1]
    # watching a finished experiment: its snapshot and the final event
    assert [e.kind for e in s.watch(exp.id)] == [K.KIND_SNAPSHOT, K.KIND_EXPERIMENT_FINISHED]


def test_restart_mid_generation_resumes_with_the_uninterrupted_trajectory(tmp_path):
    reference = open_scheduler(tmp_path / "ref.db")
    ref_exp = reference.submit(make_spec(population=4, generations=3, seed=3))
    drain(reference)

    s = open_scheduler(tmp_path / "run.db")
    exp = s.submit(make_spec(population=4, generations=3, seed=3))
    for _ in range(5):  # generation 0 complete, generation 1 started
        report(s, take_lease(s, "t"))
    in_flight = take_lease(s, "t")  # leased when the coordinator dies
    s._storage.close()  # "kill": no orderly stop
    np.random.seed(999)  # a new process would not share NumPy's global RNG state either

    resumed = open_scheduler(tmp_path / "run.db")
    assert resumed.get(exp.id).generation == 1
    # the trainer that held a lease reports to the new coordinator: it counts
    assert report(resumed, in_flight) == (True, "")
    drain(resumed)
    assert resumed.get(exp.id).state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
    assert trajectory(resumed, exp.id) == trajectory(reference, ref_exp.id)


def test_a_crash_between_the_last_report_and_the_next_generation_is_repaired_on_restart(tmp_path, monkeypatch):
    reference = open_scheduler(tmp_path / "ref.db")
    ref_exp = reference.submit(make_spec(population=3, generations=2, seed=5))
    drain(reference)

    s = open_scheduler(tmp_path / "run.db")
    exp = s.submit(make_spec(population=3, generations=2, seed=5))
    leases = [take_lease(s, "t") for _ in range(3)]
    for lease in leases[:2]:
        report(s, lease)

    def crash(*args):
        raise RuntimeError("killed before the generation was committed")

    monkeypatch.setattr(s._storage, "advance_generation", crash)
    with pytest.raises(RuntimeError, match="killed"):
        report(s, leases[2])  # its result is committed, the next generation is not
    s._storage.close()

    resumed = open_scheduler(tmp_path / "run.db")
    assert resumed.get(exp.id).generation == 1
    assert report(resumed, leases[2])[0] is False  # already recorded before the crash
    drain(resumed)
    assert trajectory(resumed, exp.id) == trajectory(reference, ref_exp.id)


def test_open_leases_get_a_fresh_ttl_after_restart(tmp_path):
    clock = Clock()
    s = open_scheduler(tmp_path / "run.db", clock=clock, ttl=10)
    s.submit(make_spec(population=2, generations=1))
    lease = take_lease(s, "t")
    s._storage.close()
    clock.now += 9
    resumed = open_scheduler(tmp_path / "run.db", clock=clock, ttl=10)
    clock.now += 5
    assert resumed.expire_leases() == 0
    assert resumed.heartbeat(lease.lease_id, "t") == (True, 10)


def test_a_strategy_that_cannot_continue_fails_the_experiment_with_its_error(db, monkeypatch):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=2, generations=2))

    def broken(es, thetas, fitness):
        raise ValueError("broken strategy")

    monkeypatch.setattr(cmaes, "tell", broken)
    drain(s)
    record = s.get(exp.id)
    assert record.state == types_pb2.EXPERIMENT_STATE_FAILED and "broken strategy" in record.error


def test_interleaved_experiments_follow_the_same_trajectories_as_alone(tmp_path):
    alone = []
    for seed in (21, 22):
        s = open_scheduler(tmp_path / f"alone{seed}.db")
        exp = s.submit(make_spec(seed=seed))
        drain(s)
        alone.append(trajectory(s, exp.id))
    s = open_scheduler(tmp_path / "shared.db")
    a, b = s.submit(make_spec(seed=21)), s.submit(make_spec(seed=22))
    np.random.seed(5)  # nor may anything else using NumPy's global RNG
    drain(s)
    assert [trajectory(s, a.id), trajectory(s, b.id)] == alone


def test_a_failed_generation_commit_is_retried_without_losing_the_results(db, monkeypatch):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=2, generations=2))
    leases = [take_lease(s, "t"), take_lease(s, "t")]
    report(s, leases[0])
    real = s._storage.advance_generation
    monkeypatch.setattr(s._storage, "advance_generation", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        report(s, leases[1])
    assert take_lease(s, "t") is None  # nothing to hand out while the step is pending
    monkeypatch.setattr(s._storage, "advance_generation", real)
    s.retry_stalled()  # the reaper's periodic pass
    assert s.get(exp.id).generation == 1
    assert drain(s) == 2
    assert s.get(exp.id).state == types_pb2.EXPERIMENT_STATE_SUCCEEDED


def test_the_default_prescreen_is_the_loss_librarys_invariant(db):
    from taylorglo_tf.invariant import is_valid

    s = Scheduler(SqliteStorage(db))  # default pre-screen
    s.start(reaper=False)
    exp = s.submit(make_spec(population=10, generations=2, invariant_prescreen=True))
    drain(s)
    result = s.result(exp.id)
    for c in result.candidates:
        assert (c.status == types_pb2.CANDIDATE_STATUS_INVALID) == (not is_valid(np.array(c.theta), 10))
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED


def test_a_cancel_during_the_generation_step_wins(db, monkeypatch):
    s = open_scheduler(db)
    exp = s.submit(make_spec(population=2, generations=3))
    real_step = s._compute_step

    def step_with_a_concurrent_cancel(record, candidates):
        result = real_step(record, candidates)
        s.cancel(exp.id)  # another client, while the step was computed outside the lock
        return result

    monkeypatch.setattr(s, "_compute_step", step_with_a_concurrent_cancel)
    drain(s)
    record = s.get(exp.id)
    assert record.state == types_pb2.EXPERIMENT_STATE_CANCELLED and record.generation == 0
    assert s._storage.load_generations(exp.id) == []
    assert s._storage.load_experiments()[0].state == types_pb2.EXPERIMENT_STATE_CANCELLED
