"""A deterministic synthetic evaluator: fitness is a smooth function of theta.

Used by the multi-process tests, the coordinator benchmark and ``taylorglo
trainer --evaluator synthetic``; no TensorFlow, no data. The same theta always
gets the same outcome, so a search's CMA-ES trajectory depends only on its seed.

    fitness(theta) = exp(-||theta - target||^2 / scale)         in (0, 1]

with ``target_i = 0.5 * sin(i + 1)`` and ``scale = len(theta)`` by default.
Optionally a candidate diverges (status ``"diverged"``, fitness 0) when
``max_i |theta_i| > diverge_above``, and every evaluation takes ``sleep_s``
seconds of wall time, heartbeating as it goes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from .worker import EvaluationStopped, Heartbeat, Outcome


def default_target(dimension: int) -> np.ndarray:
    """The default optimum: ``target_i = 0.5 * sin(i + 1)``, i = 0..dimension-1."""
    return 0.5 * np.sin(np.arange(1, dimension + 1, dtype=np.float64))


def synthetic_fitness(
    theta: Sequence[float], target: Sequence[float] | None = None, scale: float | None = None
) -> float:
    """``exp(-||theta - target||^2 / scale)``; ValueError names a theta with NaN/inf or a bad shape."""
    x = np.asarray(theta, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"theta must be a non-empty vector, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"theta must be finite, got {x.tolist()}")
    t = default_target(x.size) if target is None else np.asarray(target, dtype=np.float64)
    if t.shape != x.shape:
        raise ValueError(f"target has {t.size} entries but theta has {x.size}")
    s = float(x.size) if scale is None else float(scale)
    if not s > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return float(math.exp(-float(np.sum((x - t) ** 2)) / s))


class SyntheticEvaluator:
    """Callable ``(lease, heartbeat) -> Outcome`` for :class:`taylorglo_tf.trainer.worker.Worker`.

    ``sleep_s``: wall time per evaluation in seconds (slept in slices of at most
    ``heartbeat_every_s``, calling ``heartbeat`` after each). ``diverge_above``:
    divergence threshold on ``max |theta_i|`` (None: never). ``target``/``scale``:
    see :func:`synthetic_fitness`.
    """

    def __init__(
        self,
        *,
        sleep_s: float = 0.0,
        diverge_above: float | None = None,
        target: Sequence[float] | None = None,
        scale: float | None = None,
        heartbeat_every_s: float = 0.1,
    ) -> None:
        if not (math.isfinite(sleep_s) and sleep_s >= 0):
            raise ValueError(f"sleep_s must be a finite number >= 0, got {sleep_s}")
        if diverge_above is not None and not diverge_above > 0:
            raise ValueError(f"diverge_above must be > 0, got {diverge_above}")
        if not heartbeat_every_s > 0:
            raise ValueError(f"heartbeat_every_s must be > 0, got {heartbeat_every_s}")
        self.sleep_s = sleep_s
        self.diverge_above = diverge_above
        self.target = None if target is None else list(target)
        self.scale = scale
        self.heartbeat_every_s = heartbeat_every_s

    def __call__(self, lease, heartbeat: Heartbeat) -> Outcome:
        started = time.monotonic()
        steps = max(1, int(lease.task.steps))
        end = started + self.sleep_s
        while True:
            now = time.monotonic()
            progress = 1.0 if self.sleep_s == 0 else min(1.0, (now - started) / self.sleep_s)
            if not heartbeat(int(progress * steps)):
                raise EvaluationStopped()
            if now >= end:
                break
            time.sleep(min(self.heartbeat_every_s, end - now))
        theta = list(lease.theta)
        wall = time.monotonic() - started
        if self.diverge_above is not None and max(abs(v) for v in theta) > self.diverge_above:
            return Outcome(status="diverged", fitness=0.0, steps=steps, wall_time_s=wall)
        fitness = synthetic_fitness(theta, self.target, self.scale)
        return Outcome(
            status="ok",
            fitness=fitness,
            val_accuracy=fitness,
            val_loss=-math.log(max(fitness, 1e-300)),
            steps=steps,
            wall_time_s=wall,
        )
