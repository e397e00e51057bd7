"""The Storage contract, run against every backend open_storage offers.

Two backends: SQLite (on a file in WAL mode, and in memory, which has no WAL and
no file lock) and MemoryStorage (Python dictionaries). A new backend is added to
BACKENDS and must pass all of it: bit-exact round trips, one transaction per call
(all or nothing), reads in a defined order, records that are copies.
"""

import numpy as np
import pytest

from taylorglo_tf.coordinator.memory_storage import MemoryStorage
from taylorglo_tf.coordinator.model import GenerationRecord, LeaseRecord
from taylorglo_tf.coordinator.storage import SqliteStorage, StorageConflict, open_storage
from taylorglo_tf.rpc import types_pb2
from tests.helpers.records import candidates, experiment

BACKENDS = {
    "sqlite-file": lambda tmp: f"sqlite:///{tmp / 'contract.db'}",
    "sqlite-memory": lambda tmp: ":memory:",
    "memory": lambda tmp: "memory://",
}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request, tmp_path):
    s = open_storage(BACKENDS[request.param](tmp_path))
    yield s
    s.close()


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("sqlite:///{tmp}/a.db", SqliteStorage),
        ("{tmp}/a.db", SqliteStorage),
        (":memory:", SqliteStorage),
        ("sqlite:///:memory:", SqliteStorage),
        ("memory://", MemoryStorage),
    ],
)
def test_each_url_form_names_its_backend(url, backend, tmp_path):
    storage = open_storage(url.format(tmp=tmp_path))
    try:
        assert type(storage) is backend
    finally:
        storage.close()


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
    with pytest.raises(StorageConflict, match="lease"):
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


def test_records_are_copies_a_caller_cannot_change_what_is_stored(storage):
    cands = candidates(n=2)
    storage.insert_experiment(experiment(), cands)
    cands[0].theta[0] = 42.0
    loaded = storage.load_candidates("e1")
    assert loaded[0].theta[0] != 42.0
    loaded[0].theta[1] = 43.0
    loaded[0].status = types_pb2.CANDIDATE_STATUS_FAILED
    again = storage.load_candidates("e1")[0]
    assert again.theta[1] != 43.0 and again.status == types_pb2.CANDIDATE_STATUS_QUEUED


def test_an_experiment_update_keeps_its_creation_time_and_optimizer_state(storage):
    storage.insert_experiment(experiment(create_time=1.0), candidates())
    storage.update_experiment(
        experiment(state=types_pb2.EXPERIMENT_STATE_CANCELLED, create_time=99.0, update_time=5.0, es_state=b"not-this")
    )
    [loaded] = storage.load_experiments()
    assert (loaded.state, loaded.create_time, loaded.update_time) == (types_pb2.EXPERIMENT_STATE_CANCELLED, 1.0, 5.0)
    assert loaded.es_state == b""  # cancelled: final, so its state is not loaded
    storage.update_experiment(experiment(state=types_pb2.EXPERIMENT_STATE_RUNNING, es_state=b"not-this"))
    assert storage.load_experiments()[0].es_state == b"strategy-0"


def test_pages_follow_generation_then_index_order(storage):
    storage.insert_experiment(experiment(), candidates(n=3))
    summary = GenerationRecord("e1", 0, 0.9, 0.5, np.ones(8), np.zeros(8), 1.1, 6.0)
    storage.advance_generation(experiment(generation=1), summary, candidates(n=3, generation=1))
    keys = [(c.generation, c.index) for c in storage.load_candidates("e1")]
    assert keys == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    page = storage.load_candidates("e1", offset=2, limit=3)
    assert [(c.generation, c.index) for c in page] == keys[2:5]
    assert storage.load_candidates("e1", offset=5, limit=10)[0].index == 2
    assert storage.load_candidates("e1", limit=0) == []
    assert [g.generation for g in storage.load_generations("e1", offset=0, limit=1)] == [0]
    assert storage.load_generations("e1", offset=1) == []


def test_leases_load_in_grant_order_and_an_unknown_one_is_none(storage):
    storage.insert_experiment(experiment(), candidates(n=3))
    leased = candidates(n=3)
    grants = []
    for c, (lease_id, time) in zip(leased, [("La", 7.0), ("Lb", 5.0), ("Lc", 6.0)]):
        c.status, c.attempts, c.lease_id = types_pb2.CANDIDATE_STATUS_LEASED, 1, lease_id
        grants.append((LeaseRecord(lease_id, "e1", 0, c.index, 1, "t", time), c))
    storage.grant_leases(grants)
    assert [l.lease_id for l in storage.load_leases("e1", 0)] == ["Lb", "Lc", "La"]
    assert storage.load_leases("e1", 1) == []
    assert storage.find_lease("nope") is None


def test_deleting_an_experiment_removes_all_of_it_and_nothing_else(storage):
    for exp_id in ("gone", "kept"):
        storage.insert_experiment(experiment(exp_id), candidates(exp_id))
        c = candidates(exp_id)[0]
        c.status, c.attempts, c.lease_id = types_pb2.CANDIDATE_STATUS_LEASED, 1, f"L-{exp_id}"
        storage.grant_leases([(LeaseRecord(c.lease_id, exp_id, 0, 0, 1, "t", 4.0), c)])
        summary = GenerationRecord(exp_id, 0, 0.9, 0.5, np.ones(8), np.zeros(8), 1.1, 6.0)
        storage.advance_generation(experiment(exp_id, generation=1), summary, candidates(exp_id, generation=1))
    storage.delete_experiment("gone")
    assert [e.id for e in storage.load_experiments()] == ["kept"]
    assert storage.load_candidates("gone") == [] and storage.load_generations("gone") == []
    assert storage.find_lease("L-gone") is None and storage.find_lease("L-kept") is not None
    assert len(storage.load_candidates("kept")) == 4 and len(storage.load_generations("kept")) == 1


def test_a_whole_search_runs_on_the_backend(storage):
    """The scheduler needs nothing beyond the contract: a search drains to the end on every backend."""
    from taylorglo_tf.coordinator.scheduler import Scheduler
    from tests.coordinator.test_scheduler import drain, make_spec

    scheduler = Scheduler(storage, prescreen=lambda theta, n: True)
    scheduler.start(reaper=False)
    exp = scheduler.submit(make_spec(population=4, generations=2))
    assert drain(scheduler) == 8
    assert scheduler.get(exp.id).state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
    assert [g.generation for g in storage.load_generations(exp.id)] == [0, 1]


def test_the_write_methods_are_the_contract_s_every_method_but_reads_and_close():
    """What wraps a storage to watch its writes (fault injection, timings) reads this one list."""
    from taylorglo_tf.coordinator.storage import WRITE_METHODS, Storage

    methods = {name for name in vars(Storage) if not name.startswith("_") and callable(getattr(Storage, name))}
    assert methods - {"close"} - {m for m in methods if m.startswith(("load_", "find_"))} == WRITE_METHODS
