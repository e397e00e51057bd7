"""Choosing candidates per step and XLA by measurement (taylorglo_tf.training.tuning)."""

import json

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


def test_auto_measures_at_most_eight_candidates_per_step_on_a_cpu_and_all_on_a_gpu(monkeypatch):
    monkeypatch.setattr(tuning, "device_name", lambda: "CPU x2")
    assert tuning.auto_candidates() == (1, 2, 4, 8) and tuning.CPU_MAX_CANDIDATES == 8
    monkeypatch.setattr(tuning, "device_name", lambda: "NVIDIA H200")
    assert tuning.auto_candidates() == tuning.DEFAULT_CANDIDATES == (1, 2, 4, 8, 16, 32)
