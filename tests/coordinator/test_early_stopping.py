"""Early stopping on the coordinator: the rules, their stored decisions, and what trainers are told.

Trainers are simulated: a candidate's validation accuracy at checkpoint k is
``fitness * (0.5 + 0.5 * fraction_k)`` (the synthetic trainer's), so candidates rank
the same at every checkpoint.
"""

from __future__ import annotations

import pytest

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.coordinator import early_stopping
from taylorglo_tf.coordinator.grpc_util import InvalidArgument
from taylorglo_tf.coordinator.model import CandidateRecord
from taylorglo_tf.coordinator.scheduler import Beat, Report
from taylorglo_tf.coordinator.servicers import checkpoint_values
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.leasing import take_leases
from tests.helpers.scheduling import Clock, make_spec, open_scheduler, synthetic_fitness, trajectory

STEPS = 10  # make_spec's task.steps
STOPPED = types_pb2.CANDIDATE_STATUS_STOPPED
SUCCEEDED = types_pb2.CANDIDATE_STATUS_SUCCEEDED


def value(lease, index: int) -> float:
    return synthetic_fitness(lease.theta) * (0.5 + 0.5 * early_stopping.CHECKPOINTS[index])


def checkpoint(lease, index: int) -> tuple[int, int, float]:
    return (index, max(1, round(early_stopping.CHECKPOINTS[index] * STEPS)), value(lease, index))


def metrics(lease, reached: int, steps: int = STEPS) -> types_pb2.EvaluationMetrics:
    return types_pb2.EvaluationMetrics(
        val_accuracy=synthetic_fitness(lease.theta),
        steps=steps,
        checkpoints=[
            types_pb2.CheckpointValue(index=i, steps=s, val_accuracy=v)
            for i, s, v in (checkpoint(lease, i) for i in range(reached))
        ],
    )


def beat(scheduler, leases, index: int):
    """One heartbeat for ``leases``, each at checkpoint ``index`` (with the values before it)."""
    beats = [Beat(lease.lease_id, STEPS, tuple(checkpoint(lease, i) for i in range(index + 1))) for lease in leases]
    return scheduler.heartbeat_many("t", beats)


def finish(scheduler, lease, answer_stop: bool, reached: int):
    """What a trainer does at the end: STOPPED when told to stop, else OK with its accuracy."""
    if answer_stop:
        status, fitness, steps = ws.EVALUATION_STATUS_STOPPED, 0.0, checkpoint(lease, reached - 1)[1] + 1
    else:
        status, fitness, steps = ws.EVALUATION_STATUS_OK, synthetic_fitness(lease.theta), STEPS
    return scheduler.report(Report(lease.lease_id, "t", status, fitness, metrics(lease, reached, steps)))


def run_in_lockstep(scheduler, experiment_id: str, population: int) -> None:
    """A fleet that holds a whole generation: every candidate reaches each checkpoint together."""
    while leases := take_leases(scheduler, "t", max_candidates=population):
        going = list(leases)
        for index in range(len(early_stopping.CHECKPOINTS)):
            answers = beat(scheduler, going, index)
            for lease, answer in zip(going, answers):
                if answer.stop:
                    assert finish(scheduler, lease, True, index + 1) == (True, "")
            going = [lease for lease, answer in zip(going, answers) if not answer.stop]
        for lease in going:
            assert finish(scheduler, lease, False, len(early_stopping.CHECKPOINTS)) == (True, "")


def run_one_at_a_time(scheduler, experiment_id: str) -> None:
    """A fleet of one slot: each candidate trains in full before the next starts (no heartbeat at all)."""
    while leases := take_leases(scheduler, "t"):
        [lease] = leases
        assert finish(scheduler, lease, False, len(early_stopping.CHECKPOINTS)) == (True, "")


def statuses(scheduler, experiment_id: str, generation: int = 0) -> list[int]:
    return [c.status for c in scheduler.result(experiment_id).candidates if c.generation == generation]


# --------------------------------------------------------------------------- the rules


def record(index: int, values=(), status=types_pb2.CANDIDATE_STATUS_LEASED, stopped_at=0) -> CandidateRecord:
    import numpy as np

    checkpoints = tuple((i, 1 + i, v) for i, v in enumerate(values))
    return CandidateRecord("e", 0, index, np.zeros(2), status=status, checkpoints=checkpoints, stopped_at=stopped_at)


def test_successive_halving_keeps_the_best_half_then_the_best_quarter():
    first = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4]
    candidates = [record(i, [v]) for i, v in enumerate(first)]
    assert early_stopping.halving(candidates) == {1: 1, 3: 1, 5: 1, 7: 1}
    second = {0: 0.95, 2: 0.5, 4: 0.9, 6: 0.1}
    candidates = [
        record(i, [v, second[i]] if i in second else [v], stopped_at=0 if i in second else 1)
        for i, v in enumerate(first)
    ]
    assert early_stopping.halving(candidates) == {2: 2, 6: 2}


def test_successive_halving_decides_nothing_until_every_candidate_reached_the_checkpoint():
    candidates = [record(0, [0.9]), record(1, [0.1]), record(2, [], status=types_pb2.CANDIDATE_STATUS_QUEUED)]
    assert early_stopping.halving(candidates) == {}
    assert early_stopping.waits(early_stopping.HALVING, candidates, candidates[1])


def test_a_candidate_that_ended_before_a_checkpoint_takes_no_place_among_those_that_reached_it():
    diverged = record(2, [], status=types_pb2.CANDIDATE_STATUS_DIVERGED)
    candidates = [record(0, [0.2]), record(1, [0.1]), diverged, record(3, [0.05]), record(4, [0.3])]
    # four reached the checkpoint: the best two go on; the diverged one is decided by nobody
    assert early_stopping.halving(candidates) == {1: 1, 3: 1}


def test_half_rounds_down_but_one_always_goes_on():
    assert early_stopping.halving([record(i, [0.1 * i]) for i in range(5)]) == {0: 1, 1: 1, 2: 1}
    assert early_stopping.halving([record(0, [0.5])]) == {}


def test_ties_go_to_the_lower_index():
    assert early_stopping.halving([record(i, [0.5]) for i in range(4)]) == {2: 1, 3: 1}


def test_median_stops_below_the_median_once_enough_values_are_in():
    candidates = [record(i, [v]) for i, v in enumerate([0.5, 0.6, 0.7, 0.2])]
    history = {0: [0.4, 0.8]}
    assert early_stopping.median(candidates, [(3, 0)], history) == {3: 1}
    assert early_stopping.median(candidates, [(3, 0)], {}) == {}  # only 3 other values: too few
    assert early_stopping.median(candidates, [(2, 0)], history) == {}  # above the median


def test_a_stopped_candidate_ranks_below_every_full_training_and_by_how_far_it_got():
    fitness = [early_stopping.stopped_fitness(at, v) for at, v in ((1, 0.1), (1, 0.9), (2, 0.1), (2, 1.0))]
    assert fitness == sorted(fitness)
    assert all(-1.0 <= f <= 0.0 for f in fitness)


# --------------------------------------------------------------------------- the scheduler


def test_successive_halving_in_a_search_stops_half_then_a_quarter(tmp_path):
    scheduler = open_scheduler(tmp_path / "db.sqlite")
    exp = scheduler.submit(make_spec(population=8, generations=2, early_stopping="successive_halving"))
    leases = take_leases(scheduler, "t", max_candidates=8)
    assert [list(lease.checkpoints) for lease in leases] == [list(early_stopping.CHECKPOINTS)] * 8
    answers = beat(scheduler, leases, 0)
    ranked = sorted(range(8), key=lambda i: -value(leases[i], 0))
    assert {i for i, a in enumerate(answers) if a.stop} == set(ranked[4:])
    assert all(not a.keep_going for a in answers if a.stop)
    run_in_lockstep_rest(scheduler, leases, answers, second_stops=2)
    result = scheduler.result(exp.id)
    gen0 = [c for c in result.candidates if c.generation == 0]
    assert sorted(c.stopped_at for c in gen0) == [0, 0, 1, 1, 1, 1, 2, 2]
    assert all((c.status == STOPPED) == bool(c.stopped_at) for c in gen0)
    stopped = [c for c in gen0 if c.status == STOPPED]
    full = [c for c in gen0 if c.status == SUCCEEDED]
    assert max(c.fitness for c in stopped) < min(c.fitness for c in full)
    for c in stopped:  # the fitness of its value at the checkpoint; the steps it trained
        assert c.fitness == pytest.approx(early_stopping.stopped_fitness(c.stopped_at, c.checkpoints[-1].val_accuracy))
        assert c.metrics.steps == c.checkpoints[c.stopped_at - 1].steps + 1
    assert result.generations[0].mean_fitness == pytest.approx(sum(c.fitness for c in full) / len(full))


def run_in_lockstep_rest(scheduler, leases, first_answers, second_stops):
    going = []
    for lease, answer in zip(leases, first_answers):
        if answer.stop:
            assert finish(scheduler, lease, True, 1) == (True, "")
        else:
            going.append(lease)
    answers = beat(scheduler, going, 1)
    assert sum(a.stop for a in answers) == second_stops
    for lease, answer in zip(going, answers):
        assert finish(scheduler, lease, answer.stop, 2) == (True, "")


def test_the_same_spec_gives_the_same_search_however_trainers_are_timed(tmp_path):
    spec = make_spec(population=6, generations=3, early_stopping="successive_halving")
    lockstep = open_scheduler(tmp_path / "a.sqlite")
    a = lockstep.submit(spec)
    run_in_lockstep(lockstep, a.id, 6)
    one_at_a_time = open_scheduler(tmp_path / "b.sqlite")
    b = one_at_a_time.submit(spec)
    run_one_at_a_time(one_at_a_time, b.id)
    assert lockstep.get(a.id).state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
    assert trajectory(lockstep, a.id) == trajectory(one_at_a_time, b.id)
    assert STOPPED in statuses(one_at_a_time, b.id)


def test_a_candidate_that_ran_ahead_waits_for_the_decision(tmp_path):
    scheduler = open_scheduler(tmp_path / "db.sqlite")
    exp = scheduler.submit(make_spec(population=4, generations=1, early_stopping="successive_halving"))
    [first] = take_leases(scheduler, "t")
    assert finish(scheduler, first, False, 2) == (True, "")
    assert statuses(scheduler, exp.id)[first.index] == types_pb2.CANDIDATE_STATUS_WAITING
    assert scheduler.get(exp.id).evaluations_done == 0
    run_one_at_a_time(scheduler, exp.id)
    assert types_pb2.CANDIDATE_STATUS_WAITING not in statuses(scheduler, exp.id)
    assert scheduler.get(exp.id).state == types_pb2.EXPERIMENT_STATE_SUCCEEDED


def test_a_trainer_holds_at_a_checkpoint_only_while_the_rest_of_the_generation_is_training(tmp_path):
    scheduler = open_scheduler(tmp_path / "db.sqlite")
    scheduler.submit(make_spec(population=4, generations=1, early_stopping="successive_halving"))
    first = take_leases(scheduler, "t", max_candidates=2)
    assert [(a.keep_going, a.hold) for a in beat(scheduler, first, 0)] == [(True, False)] * 2  # two still queued
    take_leases(scheduler, "t", max_candidates=2)
    assert [(a.keep_going, a.hold) for a in beat(scheduler, first, 0)] == [(True, True)] * 2


def test_stop_decisions_are_stored_and_a_restart_keeps_them(tmp_path):
    path = tmp_path / "db.sqlite"
    scheduler = open_scheduler(path)
    exp = scheduler.submit(make_spec(population=4, generations=2, early_stopping="successive_halving"))
    leases = take_leases(scheduler, "t", max_candidates=4)
    stopped = {lease.lease_id for lease, a in zip(leases, beat(scheduler, leases, 0)) if a.stop}
    assert len(stopped) == 2
    scheduler._storage.close()  # "kill": no orderly stop
    restarted = open_scheduler(path)
    # the stored decision stands: the same leases are told to stop, whatever values come now
    answers = restarted.heartbeat_many("t", [Beat(lease.lease_id, STEPS) for lease in leases])
    assert {lease.lease_id for lease, a in zip(leases, answers) if a.stop} == stopped
    run_in_lockstep_rest(restarted, leases, answers, second_stops=1)
    run_in_lockstep(restarted, exp.id, 4)
    uninterrupted = open_scheduler(tmp_path / "other.sqlite")
    other = uninterrupted.submit(make_spec(population=4, generations=2, early_stopping="successive_halving"))
    run_in_lockstep(uninterrupted, other.id, 4)
    assert trajectory(restarted, exp.id) == trajectory(uninterrupted, other.id)


def test_a_stopped_candidate_whose_lease_expires_or_comes_back_is_stopped_not_trained_again(tmp_path):
    clock = Clock()
    scheduler = open_scheduler(tmp_path / "db.sqlite", clock=clock, ttl=5.0)
    exp = scheduler.submit(make_spec(population=4, generations=2, early_stopping="successive_halving"))
    leases = take_leases(scheduler, "t", max_candidates=4)
    answers = beat(scheduler, leases, 0)
    to_stop = [lease for lease, a in zip(leases, answers) if a.stop]
    assert scheduler.return_lease(to_stop[0].lease_id, "t", "trainer shutting down")
    clock.now += 6.0  # the other stopped trainer died
    for lease, a in zip(leases, answers):
        if not a.stop:
            scheduler.heartbeat(lease.lease_id, "t", STEPS)
    scheduler.expire_leases()
    gen0 = [c for c in scheduler.result(exp.id).candidates if c.generation == 0]
    for lease in to_stop:
        c = gen0[lease.index]
        assert c.status == STOPPED and c.attempts == 1
        assert c.metrics.steps == checkpoint(lease, 0)[1]  # what is known: it reached the checkpoint


def test_a_stopped_report_without_a_decision_is_refused_and_changes_nothing(tmp_path):
    scheduler = open_scheduler(tmp_path / "db.sqlite")
    exp = scheduler.submit(make_spec(population=4, generations=1, early_stopping="successive_halving"))
    [lease] = take_leases(scheduler, "t")
    before = scheduler.result(exp.id)
    accepted, reason = scheduler.report(Report(lease.lease_id, "t", ws.EVALUATION_STATUS_STOPPED, 0.0, None))
    assert not accepted and "no early-stopping decision" in reason
    assert scheduler.result(exp.id) == before


def test_median_stops_a_candidate_below_the_median_of_earlier_values(tmp_path):
    scheduler = open_scheduler(tmp_path / "db.sqlite")
    exp = scheduler.submit(make_spec(population=4, generations=3, early_stopping="median"))
    run_in_lockstep(scheduler, exp.id, 1)  # one lease at a time: each decided on arrival
    candidates = scheduler.result(exp.id).candidates
    assert all(c.status == SUCCEEDED for c in candidates[:4])  # too few values in generation 0
    stopped = [c for c in candidates if c.status == STOPPED]
    assert stopped, "some later candidate is below the median"
    for c in stopped:
        earlier = [
            o.checkpoints[c.stopped_at - 1].val_accuracy
            for o in candidates
            if (o.generation, o.index) < (c.generation, c.index) and len(o.checkpoints) >= c.stopped_at
        ]
        assert len(earlier) >= early_stopping.MEDIAN_MIN_VALUES


def test_without_early_stopping_leases_carry_no_checkpoints_and_old_specs_mean_none(tmp_path):
    assert spec_lib.load_spec({"task": {"dataset": "digits", "model": "tiny", "steps": 10}}).search.early_stopping == (
        spec_lib.DEFAULT_EARLY_STOPPING
    )
    stored = make_spec(population=2, generations=1)
    stored.search.early_stopping = ""  # an experiment stored before the field existed
    assert early_stopping.rule_of(stored) == "none"
    scheduler = open_scheduler(tmp_path / "db.sqlite")
    scheduler.submit(make_spec(population=2, generations=1, early_stopping="none"))
    assert [list(lease.checkpoints) for lease in take_leases(scheduler, "t", max_candidates=2)] == [[], []]


def test_an_unknown_rule_is_refused_naming_the_field():
    with pytest.raises(spec_lib.SpecError, match="search.early_stopping.*'hyperband'"):
        make_spec(early_stopping="hyperband")


@pytest.mark.parametrize(
    "values, field",
    [
        ([types_pb2.CheckpointValue(index=-1, steps=1, val_accuracy=0.5)], "c[0].index"),
        ([types_pb2.CheckpointValue(index=0, steps=0, val_accuracy=0.5)], "c[0].steps"),
        ([types_pb2.CheckpointValue(index=0, steps=1, val_accuracy=float("nan"))], "c[0].val_accuracy"),
        ([types_pb2.CheckpointValue(index=0, steps=1, val_accuracy=1.5)], "c[0].val_accuracy"),
        ([types_pb2.CheckpointValue(index=0, steps=1, val_accuracy=0.5)] * 2, "c"),
        ([types_pb2.CheckpointValue(index=i, steps=1, val_accuracy=0.5) for i in range(17)], "c"),
    ],
)
def test_bad_checkpoint_values_are_invalid_argument_naming_the_field(values, field):
    with pytest.raises(InvalidArgument) as error:
        checkpoint_values(values, "c")
    assert error.value.field == field


def test_with_a_rule_on_a_failed_candidate_is_told_below_every_stopped_one():
    """A failure (fitness 0) above the stopped candidates (fitness in [-1, 0]) would pull CMA-ES towards
    thetas that cannot train, such as the ones the pre-screen rejects."""
    for status in (types_pb2.CANDIDATE_STATUS_INVALID, types_pb2.CANDIDATE_STATUS_DIVERGED):
        failed = record(0, status=status)
        assert early_stopping.told_fitness(early_stopping.HALVING, failed) < early_stopping.stopped_fitness(1, 0.0)
        assert early_stopping.told_fitness(early_stopping.MEDIAN, failed) < early_stopping.stopped_fitness(1, 0.0)
        assert early_stopping.told_fitness(early_stopping.NONE, failed) == 0.0  # the paper's ranking


def test_the_optimizer_is_told_failures_below_stopped_candidates(tmp_path, monkeypatch):
    from taylorglo_tf.coordinator import optimizers

    told = []
    real_tell = optimizers.CmaEs.tell

    def tell(self, thetas, fitness):
        told.append(list(fitness))
        return real_tell(self, thetas, fitness)

    monkeypatch.setattr(optimizers.CmaEs, "tell", tell)
    calls = []

    def prescreen(theta, num_classes):  # rejects the first candidate only
        calls.append(theta)
        return len(calls) > 1

    scheduler = open_scheduler(tmp_path / "db.sqlite", prescreen=prescreen)
    spec = make_spec(population=6, generations=1, early_stopping="successive_halving", invariant_prescreen=True)
    exp = scheduler.submit(spec)
    run_in_lockstep(scheduler, exp.id, 6)
    candidates = scheduler.result(exp.id).candidates
    [invalid] = [c for c in candidates if c.status == types_pb2.CANDIDATE_STATUS_INVALID]
    assert invalid.fitness == 0.0  # stored as ever
    assert told[0][invalid.index] == early_stopping.FAILURE_FITNESS
    assert told[0][invalid.index] < min(told[0][c.index] for c in candidates if c.status == STOPPED)


def test_a_value_and_the_decision_it_brings_are_stored_together_or_not_at_all(tmp_path, monkeypatch):
    """A database that refuses the write leaves no value without its median decision: the trainer's
    next heartbeat repeats the value, and the decision comes then."""
    from taylorglo_tf.coordinator.errors import StorageUnavailable

    scheduler = open_scheduler(tmp_path / "db.sqlite")
    exp = scheduler.submit(make_spec(population=4, generations=3, early_stopping="median"))
    while scheduler.get(exp.id).generation < 1:  # generation 0 gives the median its history
        [lease] = take_leases(scheduler, "t")
        beat(scheduler, [lease], 1)
        finish(scheduler, lease, False, 2)
    leases = take_leases(scheduler, "t", max_candidates=4)
    worst = min(leases, key=lambda lease: value(lease, 0))
    storage = scheduler._storage._inner
    real = storage.update_candidates

    def refuse(*args, **kwargs):
        raise StorageUnavailable("disk full")

    monkeypatch.setattr(storage, "update_candidates", refuse)
    with pytest.raises(StorageUnavailable):
        beat(scheduler, [worst], 0)
    assert scheduler.result(exp.id).candidates[4 + worst.index].checkpoints == []  # nothing stored
    monkeypatch.setattr(storage, "update_candidates", real)
    others = [lease for lease in leases if lease is not worst]
    beat(scheduler, others, 0)
    [answer] = beat(scheduler, [worst], 0)
    assert answer.stop  # decided on the repeated value, as if the first write had gone through
