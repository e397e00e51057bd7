"""Scheduler tests' helpers: specs, a hand-driven clock, a synthetic fitness, leasing and reporting until done."""

import numpy as np

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.coordinator.scheduler import Report, Scheduler
from taylorglo_tf.coordinator.storage import SqliteStorage
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.leasing import take_lease

OK = ws.EVALUATION_STATUS_OK


def synthetic_fitness(theta) -> float:
    """Deterministic accuracy-like score in (0, 1], best at theta = 0.3."""
    return float(np.exp(-np.sum((np.asarray(theta) - 0.3) ** 2) / 8.0))


def checkpoint_metrics(value: float, steps: int = 10):
    """A full training's metrics with the checkpoint values a trainer reports (the synthetic trainer's:
    ``value * (0.5 + 0.5 * f)`` at each of the rules' fractions f; ignored without a rule)."""
    from taylorglo_tf.coordinator import early_stopping
    from taylorglo_tf.rpc import types_pb2

    return types_pb2.EvaluationMetrics(
        val_accuracy=value,
        steps=steps,
        checkpoints=[
            types_pb2.CheckpointValue(index=i, steps=max(1, round(f * steps)), val_accuracy=value * (0.5 + 0.5 * f))
            for i, f in enumerate(early_stopping.CHECKPOINTS)
        ],
    )


def make_spec(population=4, generations=3, seed=1, **search):
    return spec_lib.load_spec(
        {
            "task": {"dataset": "digits", "model": "tiny", "steps": 10},
            "search": {"population": population, "generations": generations, "seed": seed, **search},
        }
    )


class Clock:
    """A hand-driven monotonic clock for lease expiry."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def open_scheduler(path, clock=None, prescreen=lambda theta, n: True, ttl=30.0):
    scheduler = Scheduler(
        SqliteStorage(path), lease_ttl_s=ttl, prescreen=prescreen, **({"clock": clock} if clock else {})
    )
    scheduler.start(reaper=False)
    return scheduler


def report(scheduler, lease, status=OK, fitness=None, trainer="t", error=""):
    fitness = synthetic_fitness(lease.theta) if fitness is None and status == OK else (fitness or 0.0)
    return scheduler.report(Report(lease.lease_id, trainer, status, fitness, None, error))


def drain(scheduler, trainer="t", limit=10_000):
    """Lease and report until no work is left; returns the number of reports."""
    n = 0
    while (lease := take_lease(scheduler, trainer)) is not None:
        assert report(scheduler, lease) == (True, "")
        n += 1
        assert n < limit
    return n


def trajectory(scheduler, experiment_id):
    result = scheduler.result(experiment_id)
    return (
        [(c.generation, c.index, tuple(c.theta), c.fitness) for c in result.candidates],
        [(g.generation, tuple(g.mean_theta), g.sigma) for g in result.generations],
    )
