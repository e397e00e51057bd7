"""The Storage contract, run against every backend open_storage offers (each URL form).

A new backend is added to BACKENDS and must pass all of it: bit-exact round
trips, one transaction per call (all or nothing), reads in a defined order.
"""

import numpy as np
import pytest

from taylorglo_tf.coordinator.model import GenerationRecord, LeaseRecord
from taylorglo_tf.coordinator.storage import open_storage
from taylorglo_tf.rpc import types_pb2
from tests.test_storage import candidates, experiment

BACKENDS = {
    "memory": lambda tmp: ":memory:",
    "sqlite-url": lambda tmp: f"sqlite:///{tmp / 'contract.db'}",
    "sqlite-path": lambda tmp: str(tmp / "contract.db"),
}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request, tmp_path):
    s = open_storage(BACKENDS[request.param](tmp_path))
    yield s
    s.close()


def test_experiments_and_candidates_round_trip_bit_exactly(storage):
    cands = candidates(n=3)
    cands[1].theta[3] = 0.1 + 0.2
    storage.insert_experiment(experiment(), cands)
    [loaded] = storage.load_experiments()
    assert (loaded.id, loaded.es_state, loaded.spec.search.population) == ("e1", b"strategy-0", 2)
    back = storage.load_candidates("e1")
    assert [c.index for c in back] == [0, 1, 2]
    assert all(np.array_equal(a.theta, b.theta) for a, b in zip(cands, back))


def test_leases_are_granted_with_their_candidates_in_one_transaction(storage):
    storage.insert_experiment(experiment(), candidates(n=3))
    leased = candidates(n=3)
    grants = []
    for c in leased[:2]:
        c.status, c.attempts, c.lease_id = types_pb2.CANDIDATE_STATUS_LEASED, 1, f"L{c.index}"
        grants.append((LeaseRecord(c.lease_id, "e1", 0, c.index, 1, "t", 4.0), c))
    duplicate = (LeaseRecord("L0", "e1", 0, 2, 1, "t", 4.0), leased[2])  # a lease id used twice: refused
    with pytest.raises(Exception):  # noqa: B017 (each backend raises its own integrity error)
        storage.grant_leases(grants + [duplicate])
    assert storage.find_lease("L0") is None and storage.find_lease("L1") is None
    assert {c.status for c in storage.load_candidates("e1")} == {types_pb2.CANDIDATE_STATUS_QUEUED}
    storage.grant_leases(grants)
    assert [l.lease_id for l in storage.load_leases("e1", 0)] == ["L0", "L1"]
    assert storage.find_lease("L1") == LeaseRecord("L1", "e1", 0, 1, 1, "t", 4.0)
    assert [c.lease_id for c in storage.load_candidates("e1", 0)] == ["L0", "L1", ""]


def test_a_generation_advances_with_its_summary_candidates_and_state_together(storage):
    storage.insert_experiment(experiment(), candidates())
    summary = GenerationRecord("e1", 0, 0.9, 0.5, np.ones(8), np.zeros(8), 1.1, 6.0)
    storage.advance_generation(experiment(generation=1, es_state=b"strategy-1"), summary, candidates(generation=1))
    [gen] = storage.load_generations("e1")
    assert (gen.generation, gen.best_fitness, gen.sigma) == (0, 0.9, 1.1)
    assert len(storage.load_candidates("e1", 1)) == 2
    [loaded] = storage.load_experiments()
    assert (loaded.generation, loaded.es_state) == (1, b"strategy-1")


def test_a_report_updates_the_counters_and_keeps_the_optimizer_state(storage):
    storage.insert_experiment(experiment(), candidates())
    done = candidates()[0]
    done.status, done.fitness = types_pb2.CANDIDATE_STATUS_SUCCEEDED, 0.5
    storage.update_candidate(done, experiment(evaluations_done=1, best_fitness=0.5, es_state=b"not-this"))
    [loaded] = storage.load_experiments()
    assert (loaded.evaluations_done, loaded.best_fitness, loaded.es_state) == (1, 0.5, b"strategy-0")
    assert storage.load_candidates("e1")[0].fitness == 0.5


def test_experiments_load_in_submission_order(storage):
    for exp_id in ("b", "a", "c"):
        storage.insert_experiment(experiment(exp_id), candidates(exp_id))
    assert [e.id for e in storage.load_experiments()] == ["b", "a", "c"]


def test_an_unknown_url_scheme_is_an_error_naming_it():
    with pytest.raises(ValueError, match="postgres://db"):
        open_storage("postgres://db")


def test_a_finished_experiments_optimizer_state_stays_on_disk(storage):
    storage.insert_experiment(experiment("running"), candidates("running"))
    storage.insert_experiment(experiment("done"), candidates("done"))
    summary = GenerationRecord("done", 0, 0.9, 0.5, np.ones(8), np.zeros(8), 1.1, 6.0)
    storage.advance_generation(
        experiment("done", state=types_pb2.EXPERIMENT_STATE_SUCCEEDED, generation=2, es_state=b"final"), summary, []
    )
    loaded = {e.id: e for e in storage.load_experiments()}
    assert loaded["running"].es_state == b"strategy-0"  # needed to resume
    assert loaded["done"].es_state == b"" and loaded["done"].state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
