"""pycma set-up for one experiment: x0 = 0, sigma0, population and seed from the spec.

Each strategy samples from its own seeded NumPy Generator (pycma's ``randn``
option) instead of NumPy's global RNG, so several experiments in one process do
not disturb each other, and ``pickle.dumps(es)`` captures the RNG state with the
rest of the strategy: a coordinator restored from the database asks for exactly
the candidates an uninterrupted one would have.

pycma files the solutions it hands out (``sent_solutions``, and its other
solution archives) under Python's ``hash()`` of their bytes, which differs from
process to process. :func:`loads` files them again under this process's hash,
so that ``tell`` in a restarted coordinator recognises the solutions that the
stored strategy asked for, as the uninterrupted one does; :func:`tell` refuses
solutions the strategy does not recognise rather than silently change the search.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import cma
import numpy as np
from cma.utilities.utils import SolutionDict


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


def tell(es: cma.CMAEvolutionStrategy, thetas: Sequence[np.ndarray], fitness: Sequence[float] | np.ndarray) -> None:
    """Update with validation accuracies in [0, 1]; CMA-ES minimises ``1 - accuracy``."""
    solutions = [np.asarray(t, dtype=np.float64) for t in thetas]
    unknown = [i for i, x in enumerate(solutions) if x not in es.sent_solutions]
    if unknown:
        # pycma would treat them as injected solutions and take another step than it should
        raise RuntimeError(f"CMA-ES does not recognise candidates {unknown} of the generation it asked for")
    es.tell(solutions, [1.0 - float(f) for f in fitness])


def dumps(es: cma.CMAEvolutionStrategy) -> bytes:
    return pickle.dumps(es, protocol=pickle.HIGHEST_PROTOCOL)


def loads(blob: bytes) -> cma.CMAEvolutionStrategy:
    # The blob comes only from this coordinator's own database, never from a client.
    es = pickle.loads(blob)
    for solutions in _solution_dicts(es):
        _rehash(solutions)
    return es


def _solution_dicts(root: object) -> list[SolutionDict]:
    """Every pycma SolutionDict reachable from ``root`` through pycma objects' attributes."""
    found, seen, todo = [], set(), [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, SolutionDict):
            found.append(obj)
        elif type(obj).__module__.startswith("cma") and hasattr(obj, "__dict__"):
            todo.extend(vars(obj).values())
    return found


def _rehash(solutions: SolutionDict) -> None:
    """Re-file a SolutionDict's entries under this process's hash of their solutions, in order."""
    unhashed = solutions._unhashed_keys
    key = {
        old: solutions.key(unhashed[old]) if old in unhashed else old
        for old in [*solutions.data, *solutions.data_with_same_key]
    }
    solutions.data = {key[old]: entry for old, entry in solutions.data.items()}
    solutions.data_with_same_key = {key[old]: entries for old, entries in solutions.data_with_same_key.items()}
    solutions._unhashed_keys = {key.get(old, old): x for old, x in unhashed.items()}
