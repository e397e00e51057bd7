"""Search algorithms behind one small interface: ask, tell, state.

An optimizer proposes a generation of thetas (``ask``), learns from their
fitness (``tell``, validation accuracy in [0, 1], higher is better) and
serialises itself (``state``). The scheduler stores ``state()`` right after
``ask()`` in the same transaction as the candidates, so a restarted coordinator
restores the optimizer instead of asking again; ``restore(spec, state)`` must
give an optimizer whose ``tell`` and next ``ask`` are exactly those of the
uninterrupted one.

``spec.search.algorithm`` picks the class (``taylorglo_tf.spec.SEARCH_ALGORITHMS``
names them; an empty name is CMA-ES, as in specs written before the field).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.rpc import types_pb2

from . import cmaes


class Optimizer(Protocol):
    def ask(self) -> list[np.ndarray]:
        """One generation of candidate thetas (float64), ``population`` of them."""

    def tell(self, thetas: Sequence[np.ndarray], fitness: Sequence[float] | np.ndarray) -> None:
        """The generation's fitness, in ``ask`` order (higher is better)."""

    def state(self) -> bytes:
        """Everything needed to continue exactly (see :func:`restore`)."""

    @property
    def mean(self) -> np.ndarray:
        """The centre of the search distribution (the generation summary's mean theta)."""

    @property
    def sigma(self) -> float:
        """Its overall step size."""


class CmaEs:
    """pycma's CMA-ES (see :mod:`taylorglo_tf.coordinator.cmaes`): minimises 1 - accuracy."""

    def __init__(self, es) -> None:
        self._es = es

    @classmethod
    def create(cls, search: types_pb2.SearchSpec, dimension: int) -> CmaEs:
        return cls(cmaes.new_strategy(dimension, search.sigma0, search.population, search.seed))

    @classmethod
    def restore(cls, search: types_pb2.SearchSpec, dimension: int, state: bytes) -> CmaEs:
        return cls(cmaes.loads(state))

    def ask(self) -> list[np.ndarray]:
        return cmaes.ask(self._es)

    def tell(self, thetas: Sequence[np.ndarray], fitness: Sequence[float] | np.ndarray) -> None:
        cmaes.tell(self._es, thetas, fitness)

    def state(self) -> bytes:
        return cmaes.dumps(self._es)

    @property
    def mean(self) -> np.ndarray:
        return np.array(self._es.mean, dtype=np.float64)

    @property
    def sigma(self) -> float:
        return float(self._es.sigma)


class RandomSearch:
    """The baseline: each generation draws ``population`` thetas from N(0, sigma0^2 I), learning nothing.

    Same start distribution as CMA-ES (x0 = 0, sigma0), so a comparison isolates
    what CMA-ES's adaptation adds. The state is the seeded generator's state (JSON).
    """

    def __init__(self, rng: np.random.Generator, population: int, dimension: int, sigma0: float) -> None:
        self._rng, self._population, self._dimension, self._sigma0 = rng, population, dimension, sigma0

    @classmethod
    def create(cls, search: types_pb2.SearchSpec, dimension: int) -> RandomSearch:
        return cls(np.random.default_rng(search.seed), search.population, dimension, search.sigma0)

    @classmethod
    def restore(cls, search: types_pb2.SearchSpec, dimension: int, state: bytes) -> RandomSearch:
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(state)
        return cls(rng, search.population, dimension, search.sigma0)

    def ask(self) -> list[np.ndarray]:
        draws = self._sigma0 * self._rng.standard_normal((self._population, self._dimension))
        return [np.asarray(row, dtype=np.float64) for row in draws]

    def tell(self, thetas: Sequence[np.ndarray], fitness: Sequence[float] | np.ndarray) -> None:
        if len(thetas) != len(fitness):
            raise ValueError(f"{len(thetas)} thetas but {len(fitness)} fitness values")

    def state(self) -> bytes:
        return json.dumps(self._rng.bit_generator.state).encode()

    @property
    def mean(self) -> np.ndarray:
        return np.zeros(self._dimension)

    @property
    def sigma(self) -> float:
        return float(self._sigma0)


ALGORITHMS = {"cmaes": CmaEs, "random": RandomSearch}
assert set(ALGORITHMS) == set(spec_lib.SEARCH_ALGORITHMS), "every spec algorithm needs an implementation"


def _kind(spec: types_pb2.ExperimentSpec):
    return ALGORITHMS[spec.search.algorithm or spec_lib.DEFAULT_ALGORITHM]


def create(spec: types_pb2.ExperimentSpec) -> Optimizer:
    """A fresh optimizer for a validated spec."""
    return _kind(spec).create(spec.search, spec_lib.theta_length(spec.loss))


def restore(spec: types_pb2.ExperimentSpec, state: bytes) -> Optimizer:
    """The optimizer whose :meth:`Optimizer.state` was ``state``."""
    return _kind(spec).restore(spec.search, spec_lib.theta_length(spec.loss), state)
