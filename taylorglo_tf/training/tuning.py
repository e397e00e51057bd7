"""Pick candidates per step (K) and XLA on/off for a task by a short measurement, cached per device.

``choose(task)`` times a few batched train steps (``Evaluator.step_rate``) for
each K in ``candidates`` (doubling, stopping once K more candidates per step
gain less than ``min_gain``) and each XLA setting, and returns the setting with
the most candidate-steps per second. The answer is kept in a JSON file keyed by
device, model, input shape and batch size, so a trainer measures once per
machine and task shape (``$TAYLORGLO_CACHE_DIR``, default ``~/.cache/taylorglo``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from taylorglo_tf.training.task import Task

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = (1, 2, 4, 8, 16, 32)
PROBE_STEPS = 3
# A larger K must beat the best smaller one by this factor to be worth its memory and latency.
MIN_GAIN = 1.05


@dataclasses.dataclass(frozen=True)
class Choice:
    candidates_per_step: int
    jit_compile: bool
    # "K/xla" -> candidate-steps per second, as measured
    rates: dict


def cache_file() -> Path:
    return Path(os.environ.get("TAYLORGLO_CACHE_DIR") or Path.home() / ".cache" / "taylorglo") / "tuning.json"


def device_name() -> str:
    """The accelerator this process trains on ("CPU" when none), as TensorFlow names it."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU x{os.cpu_count()}"
    details = tf.config.experimental.get_device_details(gpus[0])
    return str(details.get("device_name", gpus[0].name))


def choose(task: Task, *, candidates: Sequence[int] = DEFAULT_CANDIDATES, jit: Sequence[bool] = (False, True),
           steps: int = PROBE_STEPS, use_cache: bool = True) -> Choice:
    """The fastest (K, XLA) for ``task`` on this device, measured (or read from the cache)."""
    from taylorglo_tf import data, models

    recipe = models.recipe(task.model, task.dataset)
    shape = data.load(task.dataset, data_dir=task.data_dir, fraction=task.fraction, seed=task.seed).input_shape
    key = json.dumps([device_name(), task.model, list(shape), task.batch_size or recipe.batch_size,
                      list(candidates), list(jit)])
    path = cache_file()
    cached = _read(path)
    if use_cache and key in cached:
        return Choice(**cached[key])
    rates: dict[str, float] = {}
    best = (0.0, 1, False)
    for jit_compile in jit:
        from taylorglo_tf.training.evaluator import Evaluator

        evaluator = Evaluator(jit_compile=jit_compile)
        best_here = 0.0
        for k in candidates:
            rate = evaluator.step_rate(task, k, steps)
            rates[f"{k}/{'on' if jit_compile else 'off'}"] = rate
            log.info("tuning %s: K=%d XLA %s: %.1f candidate-steps/s", task.model, k, jit_compile, rate)
            if rate > best[0]:
                best = (rate, k, jit_compile)
            if rate < best_here * MIN_GAIN:
                break
            best_here = max(best_here, rate)
    choice = Choice(candidates_per_step=best[1], jit_compile=best[2], rates=rates)
    if use_cache:
        cached[key] = dataclasses.asdict(choice)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cached, indent=1))
        except OSError as error:  # a read-only home costs a re-measurement, nothing else
            log.warning("cannot cache the tuning in %s: %s", path, error)
    return choice


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
