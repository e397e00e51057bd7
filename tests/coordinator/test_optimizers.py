"""Search algorithms behind ask/tell/state: CMA-ES and random search, chosen by spec.search.algorithm."""

import numpy as np
import pytest

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.coordinator import optimizers
from taylorglo_tf.rpc import types_pb2
from tests.helpers.scheduling import drain, make_spec, open_scheduler, synthetic_fitness


@pytest.mark.parametrize("algorithm", spec_lib.SEARCH_ALGORITHMS)
def test_a_restored_optimizer_continues_exactly_like_the_uninterrupted_one(algorithm):
    spec = make_spec(population=5, algorithm=algorithm)
    alone, restored = optimizers.create(spec), None
    for _generation in range(3):
        thetas = alone.ask()
        restored = optimizers.restore(spec, alone.state())  # as a restart right after ask() would
        fitness = [synthetic_fitness(t) for t in thetas]
        alone.tell(thetas, fitness)
        restored.tell(thetas, fitness)
        assert all(np.array_equal(a, b) for a, b in zip(alone.ask(), restored.ask()))
        alone = optimizers.restore(spec, alone.state())  # keep both in step for the next round


def test_random_search_samples_around_zero_with_sigma0_and_its_seed():
    spec = make_spec(population=400, algorithm="random", sigma0=0.5, seed=9)
    draws = np.array(optimizers.create(spec).ask())
    assert draws.shape == (400, 8)
    assert abs(draws.mean()) < 0.05 and abs(draws.std() - 0.5) < 0.03
    assert np.array_equal(draws, np.array(optimizers.create(spec).ask()))
    other = np.array(optimizers.create(make_spec(population=400, algorithm="random", sigma0=0.5, seed=10)).ask())
    assert not np.array_equal(draws, other)


def test_random_search_learns_nothing_from_fitness():
    spec = make_spec(population=4, algorithm="random")
    a, b = optimizers.create(spec), optimizers.create(spec)
    thetas = a.ask()
    b.ask()
    a.tell(thetas, [1.0, 0.0, 0.0, 0.0])
    b.tell(thetas, [0.0, 0.0, 0.0, 1.0])
    assert all(np.array_equal(x, y) for x, y in zip(a.ask(), b.ask()))


def test_a_random_search_runs_through_the_scheduler(tmp_path):
    s = open_scheduler(tmp_path / "r.db")
    exp = s.submit(make_spec(population=4, generations=3, algorithm="random", sigma0=0.7))
    assert drain(s) == 12
    result = s.result(exp.id)
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
    assert result.experiment.spec.search.algorithm == "random"
    assert [g.sigma for g in result.generations] == [0.7] * 3
    assert all(list(g.mean_theta) == [0.0] * 8 for g in result.generations)


def test_the_algorithm_defaults_to_cma_es_and_an_unknown_one_is_refused():
    assert make_spec().search.algorithm == "cmaes"
    with pytest.raises(spec_lib.SpecError, match=r"spec\.search\.algorithm.*'bayes'.*cmaes, random"):
        make_spec(algorithm="bayes")


def test_a_spec_stored_before_the_algorithm_field_is_searched_with_cma_es():
    spec = make_spec()
    spec.search.ClearField("algorithm")  # as read back from an older database
    assert isinstance(optimizers.create(spec), optimizers.CmaEs)
