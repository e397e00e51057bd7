"""``LossSearch`` across processes: a script killed and run again, and copies of one script
sharing a coordinator beside a generic trainer.

The scripts are ``tests/helpers/loss_search.py`` run with ``python -m``, each a process of
its own (TensorFlow, the in-process trainer, and on one machine the coordinator).
"""

from __future__ import annotations

import csv
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from taylorglo_tf import connection
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.trainer.synthetic import SyntheticEvaluator
from taylorglo_tf.trainer.worker import Worker

REPO = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, "-m", "tests.helpers.loss_search"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAYLORGLO_")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **extra}


def _run(directory: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*SCRIPT, str(directory), *args], cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _candidates(directory: Path) -> list[tuple[str, ...]]:
    """(generation, index, fitness, theta...) of every candidate: what the search found, not who or when."""
    with open(directory / "candidates.csv") as table:
        return [
            (row["generation"], row["index"], row["status"], row["fitness"])
            + tuple(v for k, v in row.items() if k.startswith("theta_"))
            for row in csv.DictReader(table)
        ]


def test_a_search_killed_after_its_first_generation_resumes_to_the_same_candidates(tmp_path):
    _run(tmp_path / "whole", "3")
    interrupted = subprocess.Popen(
        [*SCRIPT, str(tmp_path / "killed"), "3"],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert interrupted.stdout is not None
        for line in interrupted.stdout:
            if line.startswith("generation 0:"):
                break
        else:
            pytest.fail("the search ended before its first generation")
        interrupted.send_signal(signal.SIGKILL)  # no clean-up at all: leases held, database mid-search
    finally:
        interrupted.wait(30)
    assert not (tmp_path / "killed" / "candidates.csv").exists()  # the result folder is written at the end
    resumed = _run(tmp_path / "killed", "3")
    assert "resumed experiment" in resumed.stdout
    assert _candidates(tmp_path / "killed") == _candidates(tmp_path / "whole")


def test_two_copies_of_a_script_share_one_experiment_and_a_generic_trainer_leases_none_of_it(tmp_path):
    token = secrets.token_urlsafe(24)
    server = serve(tmp_path / "coordinator.db", "127.0.0.1:0", trainer_token=token, client_token=token)
    generic_calls: list[str] = []

    def generic_evaluate(lease, heartbeat):
        generic_calls.append(lease.experiment_id)
        return SyntheticEvaluator()(lease, heartbeat)

    try:
        with connection.connect(server.address, token=token) as channel:
            generic = Worker(channel, generic_evaluate, "generic", wait_ms=500)
            generic_thread = threading.Thread(target=generic.run, daemon=True)
            generic_thread.start()
            env = _env(TAYLORGLO_COORDINATOR=server.address, TAYLORGLO_TOKEN=token)
            copies = [
                subprocess.Popen(
                    [*SCRIPT, str(tmp_path / f"copy-{role}"), "3", "40"],
                    cwd=REPO,
                    env={**env, "TAYLORGLO_ROLE": role},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for role in ("chief", "worker")
            ]
            outputs = [copy.communicate(timeout=300) for copy in copies]
            for copy, (stdout, stderr) in zip(copies, outputs):
                assert copy.returncode == 0, stdout[-2000:] + stderr[-4000:]
            generic.request_stop(0.0)
            generic_thread.join(10)
        experiments = server.scheduler.list()
        assert len(experiments) == 1 and experiments[0].state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
        experiment_id = experiments[0].id
        assert f"submitted experiment {experiment_id}" in outputs[0][0]
        assert f"joined experiment {experiment_id}" in outputs[1][0]
        assert generic_calls == [] and generic.returned == 0  # never offered one
        trainers = {c.trainer_id for c in server.scheduler.result(experiment_id).candidates}
        assert "generic" not in trainers and trainers  # trained by the copies only
        # both copies wrote the same result folder
        assert _candidates(tmp_path / "copy-chief") == _candidates(tmp_path / "copy-worker")
    finally:
        server.stop(0)


def test_a_script_copy_that_is_not_the_chief_says_which_role_to_start_when_none_submits(tmp_path, monkeypatch):
    from taylorglo_tf import search as search_module
    from tests.helpers.loss_search import wine_search, wine_splits

    token = secrets.token_urlsafe(24)
    server = serve(tmp_path / "coordinator.db", "127.0.0.1:0", trainer_token=token, client_token=token)
    try:
        for name, value in _env(TAYLORGLO_COORDINATOR=server.address, TAYLORGLO_TOKEN=token).items():
            if name.startswith("TAYLORGLO_"):
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("TAYLORGLO_ROLE", "worker")
        monkeypatch.setattr(search_module, "FIND_TIMEOUT_S", 0.5)
        (x, y), validation, _ = wine_splits()
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="TAYLORGLO_ROLE=chief"):
            wine_search(tmp_path / "w").search(x, y, validation_data=validation)
        assert time.monotonic() - started < 10
    finally:
        server.stop(0)
