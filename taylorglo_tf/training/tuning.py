"""Pick candidates per step (K) and XLA on/off for a task by a short measurement, cached per device.

``choose(task)`` times a few batched train steps (``Evaluator.step_rate``) for
each K in ``candidates`` (doubling, stopping once K more candidates per step
gain less than ``min_gain``) and each XLA setting, and returns the setting with
the most candidate-steps per second. The answer is kept in a JSON file keyed by
device, model, input shape and batch size, so a trainer measures once per
machine and task shape (``$TAYLORGLO_CACHE_DIR``, default ``~/.cache/taylorglo``).

``local_layout(task, cores)`` is ``taylorglo run``'s choice on a CPU: trainer
processes, K, and oneDNN off or on, measured in probe processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from taylorglo_tf import atomic, runtime
from taylorglo_tf.training.task import Task

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = (1, 2, 4, 8, 16, 32)
# On a CPU a K above this only adds memory: batched K=8 already fills the cores
# (docs/BENCHMARKS.md, "Many candidates per step"), so ``auto`` measures no more.
CPU_MAX_CANDIDATES = 8
PROBE_STEPS = 3
# A probe process (TensorFlow start-up, data, tracing, timing) that takes longer is stuck.
PROBE_TIMEOUT_S = 600
# TF_ENABLE_ONEDNN_OPTS values the local layout measures: off, on.
ONEDNN_SETTINGS = ("0", "1")
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


def auto_candidates() -> tuple[int, ...]:
    """The Ks that ``--candidates-per-step auto`` measures on this device (at most
    :data:`CPU_MAX_CANDIDATES` on a CPU)."""
    if device_name().startswith("CPU"):
        return tuple(k for k in DEFAULT_CANDIDATES if k <= CPU_MAX_CANDIDATES)
    return DEFAULT_CANDIDATES


def choose(
    task: Task,
    *,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    jit: Sequence[bool] = (False, True),
    steps: int = PROBE_STEPS,
    use_cache: bool = True,
) -> Choice:
    """The fastest (K, XLA) for ``task`` on this device, measured (or read from the cache)."""
    from taylorglo_tf import data, models
    from taylorglo_tf.training import sources

    shape: tuple[int, ...] = ()
    if sources.kind(task.model) == "zoo":
        batch_size = task.batch_size or models.recipe(task.model, task.dataset).batch_size
        shape = data.load(task.dataset, data_dir=task.data_dir, fraction=task.fraction, seed=task.seed).input_shape
    else:  # a user's model: its name does not pin its architecture from run to run, so nothing is cached
        use_cache = False
        batch_size = task.batch_size
    device = device_name()
    # On a CPU the kernels (oneDNN or not) change the answer; the variable is read when TensorFlow loads.
    kernels = os.environ.get(runtime.ONEDNN_ENV, "") if device.startswith("CPU") else ""
    key = json.dumps([device, task.model, list(shape), batch_size, list(candidates), list(jit), kernels])
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
        _store(path, key, dataclasses.asdict(choice))
    return choice


def _store(path: Path, key: str, value: dict) -> None:
    """Add one measurement to the cache file: re-read, changed and written under an exclusive lock,
    so that entries other processes (two ``taylorglo run``s, one trainer per GPU) store meanwhile are kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            cached = _read(path)
            cached[key] = value
            atomic.write_text(path, json.dumps(cached, indent=1))  # a reader never sees it torn
    except OSError as error:  # a read-only home costs a re-measurement, nothing else
        log.warning("cannot cache the measurement in %s: %s", path, error)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<path>.lock`` (the cache file itself is replaced on each write,
    so it cannot carry the lock); waits for the holder, whose read and write take milliseconds."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------ local layout (CPU)


def local_layout(
    task: Task,
    cores: int,
    *,
    onednn: Sequence[str] = ONEDNN_SETTINGS,
    seconds: float = 0.5,
    use_cache: bool = True,
) -> dict:
    """The fastest local layout here: one trainer with K candidates per step or ``cores`` trainers
    of one candidate, each with TensorFlow's oneDNN CPU kernels off or on (``onednn``).

    Two TensorFlow processes on two cores fight over the threads, one process
    may not fill the cores either, and oneDNN trains the paper's convnets much
    faster but tiny ones slower (docs/BENCHMARKS.md), so each is measured as it
    would run: per oneDNN setting, one probe process timing K = 1, 2, 4, 8
    (:data:`CPU_MAX_CANDIDATES`), and ``cores`` probe processes timing one
    candidate each at the same time (they start the clock together). Returns
    ``{"trainers", "candidates_per_step", "onednn", "rates"}``; cached like ``choose``.
    Runs in subprocesses: the caller imports no TensorFlow.
    """
    import tempfile

    # Steps, seed and the abort rule do not change the cost of a step.
    key = json.dumps(
        [
            "layout",
            f"CPU x{os.cpu_count()}",
            cores,
            task.dataset,
            task.model,
            task.batch_size,
            task.fraction,
            task.augmentation,
            list(onednn),
        ],
        sort_keys=True,
    )
    path = cache_file()
    cached = _read(path)
    if use_cache and key in cached:
        return cached[key]
    candidates = ",".join(str(k) for k in DEFAULT_CANDIDATES if k <= CPU_MAX_CANDIDATES)
    rates: dict[str, float] = {}
    layouts: list[tuple[float, dict[str, Any]]] = []
    for setting in onednn:
        env = {runtime.ONEDNN_ENV: setting}
        label = f", oneDNN {'on' if setting == '1' else 'off'}" if len(onednn) > 1 else ""
        for k, rate in _probe_rates(_start_probe(task, candidates, seconds, env)).items():
            rates[f"1 trainer, K={k}{label}"] = rate
            layouts.append((rate, {"trainers": 1, "candidates_per_step": int(k), "onednn": setting}))
        with tempfile.TemporaryDirectory() as barrier:
            probes = [_start_probe(task, "1", seconds, env, barrier, cores) for _ in range(cores)]
            try:
                parallel = sum(rate for probe in probes for rate in _probe_rates(probe).values())
            finally:  # one failed: the others would wait at the barrier
                for probe in probes:
                    _end(probe)
        rates[f"{cores} trainers, K=1{label}"] = parallel
        layouts.append((parallel, {"trainers": cores, "candidates_per_step": 1, "onednn": setting}))
    layout = {**max(layouts, key=lambda measured: measured[0])[1], "rates": rates}
    if use_cache:
        _store(path, key, layout)
    return layout


def _start_probe(
    task: Task, candidates: str, seconds: float, env: dict[str, str], barrier: str = "", parties: int = 1
) -> subprocess.Popen:
    """A probe process timing ``task``'s step at each K of ``candidates`` (see ``_probe_main``)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taylorglo_tf.training.tuning",
            json.dumps(task.to_dict()),
            candidates,
            str(seconds),
            barrier,
            str(parties),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env),
    )


def _probe_rates(process: subprocess.Popen) -> dict[str, float]:
    """A probe's candidate-steps per second by K; RuntimeError if it failed or took over
    ``PROBE_TIMEOUT_S`` (it is then killed)."""
    try:
        out, _ = process.communicate(timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _end(process)
        raise RuntimeError(f"a tuning probe process took over {PROBE_TIMEOUT_S} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"a tuning probe process failed (exit {process.returncode})")
    try:
        return json.loads(out)
    except ValueError:
        raise RuntimeError(f"a tuning probe process wrote no rates: {out[-200:]!r}") from None


def _end(process: subprocess.Popen) -> None:
    """Kill ``process`` if it still runs, and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait()


def _probe_main(argv: Sequence[str]) -> int:
    """``python -m taylorglo_tf.training.tuning TASK_JSON K,K,.. SECONDS [BARRIER_DIR PARTIES]``: rates as JSON."""
    import time

    from taylorglo_tf.training.evaluator import Evaluator

    task = Task.from_dict(json.loads(argv[0]))
    candidates = [int(k) for k in argv[1].split(",")]
    seconds = float(argv[2])
    barrier, parties = (argv[3], int(argv[4])) if len(argv) > 4 and argv[3] else ("", 1)

    def ready() -> None:
        if not barrier:
            return
        Path(barrier, f"{os.getpid()}").touch()
        deadline = time.monotonic() + 300
        while len(os.listdir(barrier)) < parties and time.monotonic() < deadline:
            time.sleep(0.05)

    evaluator = Evaluator(jit_compile=False)
    rates = {str(k): evaluator.step_rate(task, k, seconds=seconds, ready=ready) for k in candidates}
    sys.stdout.write(json.dumps(rates))
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))
