"""Choosing candidates per step and XLA by measurement (taylorglo_tf.training.tuning)."""

import json
import subprocess
import sys
import threading
import time

import pytest

from taylorglo_tf import runtime
from taylorglo_tf.training import Task, tuning


def test_the_fastest_setting_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TAYLORGLO_CACHE_DIR", str(tmp_path))
    task = Task(dataset="digits", model="tiny", steps=10)
    choice = tuning.choose(task, candidates=(1, 2), jit=(False,), steps=2)
    assert set(choice.rates) == {"1/off", "2/off"} and all(rate > 0 for rate in choice.rates.values())
    best = max(choice.rates, key=choice.rates.get)
    assert f"{choice.candidates_per_step}/off" == best and choice.jit_compile is False
    cached = json.loads((tmp_path / "tuning.json").read_text())
    assert list(cached.values()) == [
        {"candidates_per_step": choice.candidates_per_step, "jit_compile": False, "rates": choice.rates}
    ]

    from taylorglo_tf.training.evaluator import Evaluator

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(Evaluator, "step_rate", no_measuring)
    assert tuning.choose(task, candidates=(1, 2), jit=(False,), steps=2) == choice


def test_a_choice_measured_with_one_cpu_kernel_setting_is_not_reused_with_the_other(tmp_path, monkeypatch):
    monkeypatch.setenv("TAYLORGLO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "device_name", lambda: "CPU x2")
    measured = []
    from taylorglo_tf.training.evaluator import Evaluator

    monkeypatch.setattr(Evaluator, "step_rate", lambda self, task, k, steps: measured.append(k) or float(k))
    task = Task(dataset="digits", model="tiny", steps=10)
    monkeypatch.setenv(runtime.ONEDNN_ENV, "0")
    tuning.choose(task, candidates=(1,), jit=(False,))
    tuning.choose(task, candidates=(1,), jit=(False,))  # cached
    monkeypatch.setenv(runtime.ONEDNN_ENV, "1")
    tuning.choose(task, candidates=(1,), jit=(False,))
    assert measured == [1, 1]


def test_auto_measures_at_most_eight_candidates_per_step_on_a_cpu_and_all_on_a_gpu(monkeypatch):
    monkeypatch.setattr(tuning, "device_name", lambda: "CPU x2")
    assert tuning.auto_candidates() == (1, 2, 4, 8) and tuning.CPU_MAX_CANDIDATES == 8
    monkeypatch.setattr(tuning, "device_name", lambda: "NVIDIA H200")
    assert tuning.auto_candidates() == tuning.DEFAULT_CANDIDATES == (1, 2, 4, 8, 16, 32)


# Candidate-steps/s of the fake single-trainer probes by (oneDNN setting, K).
PROBE_RATES = {("0", "1"): 10.0, ("0", "2"): 14.0, ("0", "4"): 16.0, ("0", "8"): 15.0}
PROBE_RATES |= {("1", "1"): 20.0, ("1", "2"): 24.0, ("1", "4"): 23.0, ("1", "8"): 22.0}


class FakeProbe:
    """A probe process that is never started: its rates come from ``PROBE_RATES``."""

    def __init__(self, candidates, env, parties):
        self.candidates, self.onednn, self.parties = candidates, env[runtime.ONEDNN_ENV], parties

    def poll(self):
        return 0  # already ended

    def wait(self):
        return 0

    def rates(self):
        # Parallel probes (parties > 1) each get 9 candidate-steps/s.
        if self.parties > 1:
            return {"1": 9.0}
        return {k: PROBE_RATES[(self.onednn, k)] for k in self.candidates.split(",")}


def fake_probes(monkeypatch):
    started = []

    def start(task, candidates, seconds, env, barrier="", parties=1):
        started.append(FakeProbe(candidates, env, parties))
        return started[-1]

    monkeypatch.setattr(tuning, "_start_probe", start)
    monkeypatch.setattr(tuning, "_probe_rates", lambda probe: probe.rates())
    return started


def test_the_local_layout_measures_k_up_to_the_cpu_cap_and_both_onednn_settings_and_picks_the_fastest(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TAYLORGLO_CACHE_DIR", str(tmp_path))
    started = fake_probes(monkeypatch)
    task = Task(dataset="digits", model="tiny", steps=10)
    layout = tuning.local_layout(task, 2)
    assert {(p.onednn, p.candidates, p.parties) for p in started} == {
        ("0", "1,2,4,8", 1),
        ("0", "1", 2),
        ("1", "1,2,4,8", 1),
        ("1", "1", 2),
    }
    assert (layout["trainers"], layout["candidates_per_step"], layout["onednn"]) == (1, 2, "1")
    assert layout["rates"]["2 trainers, K=1, oneDNN off"] == 18.0
    assert layout["rates"]["1 trainer, K=4, oneDNN off"] == 16.0
    count = len(started)
    assert tuning.local_layout(task, 2) == layout and len(started) == count  # cached


def test_the_local_layout_measures_only_the_onednn_setting_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("TAYLORGLO_CACHE_DIR", str(tmp_path))
    started = fake_probes(monkeypatch)
    layout = tuning.local_layout(Task(dataset="digits", model="tiny", steps=10), 2, onednn=("0",))
    assert {p.onednn for p in started} == {"0"}
    assert (layout["trainers"], layout["candidates_per_step"], layout["onednn"]) == (2, 1, "0")
    assert set(layout["rates"]) == {f"1 trainer, K={k}" for k in (1, 2, 4, 8)} | {"2 trainers, K=1"}


def sleeping_process(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"], stdout=subprocess.PIPE)


def test_a_stuck_probe_is_killed_and_reported(monkeypatch):
    monkeypatch.setattr(tuning, "PROBE_TIMEOUT_S", 0.5)
    stuck = sleeping_process(60)
    with pytest.raises(RuntimeError, match="took over 0.5 s"):
        tuning._probe_rates(stuck)
    assert stuck.poll() is not None  # killed and reaped


def test_when_one_parallel_probe_fails_the_others_are_killed_and_the_layout_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TAYLORGLO_CACHE_DIR", str(tmp_path))
    started = []

    def start(task, candidates, seconds, env, barrier="", parties=1):
        if parties == 1:  # the single-trainer probe works
            process = subprocess.Popen(
                [sys.executable, "-c", "print('{\"1\": 5.0}')"], stdout=subprocess.PIPE, text=True
            )
        elif len(started) == 1:  # the first parallel probe fails, the second would wait at the barrier
            process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], stdout=subprocess.PIPE)
        else:
            process = sleeping_process(60)
        started.append(process)
        return process

    monkeypatch.setattr(tuning, "_start_probe", start)
    with pytest.raises(RuntimeError, match="exit 3"):
        tuning.local_layout(Task(dataset="digits", model="tiny", steps=10), 2, onednn=("1",))
    assert all(process.poll() is not None for process in started)


def test_two_writers_of_the_cache_at_once_keep_both_entries(tmp_path, monkeypatch):
    """Read, change and write are one step under a lock: with a slow read (the widest window),
    two threads storing different keys at the same time both find their entry afterwards."""
    path = tmp_path / "tuning.json"
    read = tuning._read

    def slow_read(p):
        value = read(p)
        time.sleep(0.2)
        return value

    monkeypatch.setattr(tuning, "_read", slow_read)
    writers = [threading.Thread(target=tuning._store, args=(path, key, {"k": key})) for key in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert json.loads(path.read_text()) == {"a": {"k": "a"}, "b": {"k": "b"}}


def test_two_processes_storing_measurements_at_once_keep_every_entry(tmp_path):
    """As two ``taylorglo run``s started together do, in fresh processes."""
    path = tmp_path / "tuning.json"
    script = (
        "import sys\nfrom pathlib import Path\nfrom taylorglo_tf.training import tuning\n"
        "for i in range(40):\n"
        "    tuning._store(Path(sys.argv[1]), f'{sys.argv[2]}-{i}', {'i': i})\n"
    )
    names = ("one", "two", "three")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in names]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0]
    assert sorted(json.loads(path.read_text())) == sorted(f"{n}-{i}" for n in names for i in range(40))


def test_a_registered_models_setting_is_measured_on_its_own_data_and_never_cached(tmp_path, monkeypatch):
    """A script: name does not pin an architecture from run to run; it has no data URI to load either."""
    import keras
    import numpy as np

    from taylorglo_tf.training import sources

    monkeypatch.setenv("TAYLORGLO_CACHE_DIR", str(tmp_path))
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = np.arange(64) % 2
    build = lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])  # noqa: E731
    sources.register("script:tune", build, lambda: keras.optimizers.SGD(0.1), train=(x, y), validation=(x, y))
    try:
        choice = tuning.choose(
            Task(dataset="script:tune", model="script:tune", steps=5), candidates=(1, 2), jit=(False,), steps=2
        )
    finally:
        sources.unregister("script:tune")
    assert set(choice.rates) == {"1/off", "2/off"}
    assert not (tmp_path / "tuning.json").exists()
