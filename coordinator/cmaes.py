"""pycma set-up for one experiment: x0 = 0, sigma0, population and seed from the spec.

Each strategy samples from its own seeded NumPy Generator (pycma's ``randn``
option) instead of NumPy's global RNG, so several experiments in one process do
not disturb each other, and ``pickle.dumps(es)`` captures the RNG state with the
rest of the strategy: a coordinator restored from the database asks for exactly
the candidates an uninterrupted one would have.
"""

from __future__ import annotations

import pickle
from typing import Sequence

import cma
import numpy as np


class SeededNormal:
    """``randn(lam, n)`` for pycma from a private ``numpy.random.Generator`` (picklable)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


def new_strategy(dimension: int, sigma0: float, population: int, seed: int) -> cma.CMAEvolutionStrategy:
    """CMA-ES over ``dimension`` parameters from x0 = 0 with step size ``sigma0``; minimises."""
    options = {
        "popsize": population,
        "randn": SeededNormal(seed),
        "seed": float("nan"),  # pycma: "do nothing" to NumPy's global RNG
        "verbose": -9,
        "verb_log": 0,
        "verb_disp": 0,
    }
    # The spec's generation count ends a search; pycma's stop() is never consulted.
    return cma.CMAEvolutionStrategy(np.zeros(dimension), sigma0, options)


def ask(es: cma.CMAEvolutionStrategy) -> list[np.ndarray]:
    """One generation of candidate thetas (float64 arrays)."""
    return [np.asarray(x, dtype=np.float64) for x in es.ask()]


def tell(es: cma.CMAEvolutionStrategy, thetas: Sequence[np.ndarray], fitness: Sequence[float]) -> None:
    """Update with validation accuracies in [0, 1]; CMA-ES minimises ``1 - accuracy``."""
    es.tell([np.asarray(t, dtype=np.float64) for t in thetas], [1.0 - float(f) for f in fitness])


def dumps(es: cma.CMAEvolutionStrategy) -> bytes:
    return pickle.dumps(es, protocol=pickle.HIGHEST_PROTOCOL)


def loads(blob: bytes) -> cma.CMAEvolutionStrategy:
    # The blob comes only from this coordinator's own database, never from a client.
    return pickle.loads(blob)
