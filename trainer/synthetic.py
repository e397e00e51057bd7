"""A deterministic synthetic evaluator: fitness is a smooth function of theta.

Used by the multi-process tests, the coordinator benchmark and ``taylorglo
trainer --evaluator synthetic``; no TensorFlow, no data. The same theta always
gets the same outcome, so a search's CMA-ES trajectory depends only on its seed.

    fitness(theta) = exp(-||theta - target||^2 / scale)         in (0, 1]

with ``target_i = 0.5 * sin(i + 1)`` and ``scale = len(theta)`` by default.
Optionally a candidate diverges (status ``"diverged"``, fitness 0) when
``max_i |theta_i| > diverge_above``, and every evaluation takes ``sleep_s``
seconds of wall time, heartbeating as it goes.

Early stopping: with ``lease.checkpoints`` (fractions f of the steps), a candidate
reports at the step ``min(steps, max(1, round(f * steps)))`` of each the value

    checkpoint value(f) = fitness * (0.5 + 0.5 * f)

(deterministic and in the order of the final fitness, as a rule needs) through
``heartbeat.checkpoint`` when the heartbeat has it, then calls ``heartbeat(step)``.
Stopped there by the early-stopping rule (``heartbeat.stopped_early``), it ends
with status ``"stopped"``, ``steps`` that checkpoint's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from taylorglo_tf import spec

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
        theta = list(lease.theta)
        diverges = self.diverge_above is not None and max(abs(v) for v in theta) > self.diverge_above
        fitness = 0.0 if diverges else synthetic_fitness(theta, self.target, self.scale)
        # (step, index, value) still to report, in order; a diverging candidate reaches none
        pending = [] if diverges else checkpoint_values(fitness, lease.checkpoints, steps)
        reached: list[tuple[int, int, float]] = []
        report = getattr(heartbeat, "checkpoint", None)
        while True:
            now = time.monotonic()
            progress = 1.0 if self.sleep_s == 0 else min(1.0, (now - started) / self.sleep_s)
            done = int(progress * steps)
            while pending and pending[0][0] <= done:
                step, index, value = pending.pop(0)
                reached.append((index, step, value))
                if report is not None:
                    report(index, step, value)
                if not heartbeat(step):
                    return self._stopped(heartbeat, reached, started)
            if not heartbeat(done):
                return self._stopped(heartbeat, reached, started)
            if now >= end:
                break
            time.sleep(min(self.heartbeat_every_s, end - now))
        wall = time.monotonic() - started
        if diverges:
            return Outcome(status="diverged", fitness=0.0, steps=steps, wall_time_s=wall)
        return Outcome(
            status="ok",
            fitness=fitness,
            val_accuracy=fitness,
            val_loss=-math.log(max(fitness, 1e-300)),
            steps=steps,
            wall_time_s=wall,
            checkpoints=tuple(reached),
        )

    @staticmethod
    def _stopped(heartbeat: Heartbeat, reached: list[tuple[int, int, float]], started: float) -> Outcome:
        """A stop: status ``"stopped"`` at the last checkpoint when the early-stopping rule said so, else
        :class:`EvaluationStopped` (lease lost, shutdown: not reported)."""
        if not (reached and getattr(heartbeat, "stopped_early", False)):
            raise EvaluationStopped()
        _, step, value = reached[-1]
        return Outcome(
            status="stopped",
            val_accuracy=value,
            val_loss=-math.log(max(value, 1e-300)),
            steps=step,
            wall_time_s=time.monotonic() - started,
            checkpoints=tuple(reached),
        )


def checkpoint_values(fitness: float, checkpoints: Sequence[float], steps: int) -> list[tuple[int, int, float]]:
    """``(step, index, value)`` of each checkpoint fraction f: its step (:func:`taylorglo_tf.spec.checkpoint_steps`),
    value ``fitness * (0.5 + 0.5 * f)``; ValueError names a bad fraction."""
    fractions = spec.check_checkpoints(checkpoints)
    return [
        (step, index, fitness * (0.5 + 0.5 * fraction))
        for index, (step, fraction) in enumerate(zip(spec.checkpoint_steps(fractions, steps), fractions))
    ]
