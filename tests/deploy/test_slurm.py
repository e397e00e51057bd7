"""The Slurm deployment (docker/slurm/), without a Slurm cluster.

Both scripts pass shellcheck (Debian's package; CI installs it in .ci/run).
start-coordinator.sh starts a coordinator on loopback (tokens and a TLS
certificate created on first start), and trainers.sbatch runs as plain bash
with the variables Slurm sets for one task of a job array: its trainer finds
the coordinator through the shared folder, completes candidates and, on
SIGTERM (what scancel and --signal send), returns its lease: the coordinator
queues the candidate again without spending an attempt, at once, instead of
letting the lease expire.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from taylorglo_tf.connection import connect
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.spec import load_spec
from tests.helpers.local_deploy import DOCKER, Processes, clean_environment, free_port, wait_until

SLURM = DOCKER / "slurm"
SCRIPTS = [SLURM / "trainers.sbatch", SLURM / "start-coordinator.sh"]
# What Slurm sets in task 3 of `sbatch --array=0-3` (job 4242) with --gres=gpu:1.
ARRAY_TASK = {
    "SLURM_JOB_ID": "4245",
    "SLURM_ARRAY_JOB_ID": "4242",
    "SLURM_ARRAY_TASK_ID": "3",
    "SLURM_ARRAY_TASK_COUNT": "4",
    "SLURM_ARRAY_TASK_MIN": "0",
    "SLURM_ARRAY_TASK_MAX": "3",
    "SLURM_JOB_NAME": "taylorglo-trainer",
    "SLURM_CPUS_PER_TASK": "4",
    "SLURM_JOB_GPUS": "1",
    "CUDA_VISIBLE_DEVICES": "0",
    "SLURM_SUBMIT_DIR": str(SLURM),
}
SUCCEEDED, LEASED, QUEUED = (
    types_pb2.CANDIDATE_STATUS_SUCCEEDED,
    types_pb2.CANDIDATE_STATUS_LEASED,
    types_pb2.CANDIDATE_STATUS_QUEUED,
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_passes_shellcheck(script):
    binary = shutil.which("shellcheck")
    if binary is None:
        pytest.skip("shellcheck is not installed (CI installs Debian's package in .ci/run)")
    result = subprocess.run([binary, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_job_script_asks_for_one_gpu_per_array_task_and_signals_before_the_time_limit():
    directives = [
        line.split(None, 1)[1]
        for line in (SLURM / "trainers.sbatch").read_text().splitlines()
        if line.startswith("#SBATCH ")
    ]
    assert "--gres=gpu:1" in directives
    # The batch shell is the trainer (exec), so B: signals reach it.
    assert any(d.startswith("--signal=B:TERM@") for d in directives)
    assert "exec " in (SLURM / "trainers.sbatch").read_text()


def _environment(home: Path, **extra: str) -> dict[str, str]:
    env = clean_environment()
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    env.update(TAYLORGLO_HOME=str(home), TAYLORGLO_VENV=sys.prefix, **extra)
    return env


def _run_job_script(tmp_path):
    """The array job's script as one array task runs it, with ``tmp_path`` as its home."""
    return subprocess.run(
        ["bash", str(SLURM / "trainers.sbatch")],
        env={**_environment(tmp_path), **ARRAY_TASK},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_job_script_names_what_is_missing(tmp_path):
    result = _run_job_script(tmp_path)
    assert result.returncode == 2
    assert "TAYLORGLO_COORDINATOR" in result.stderr and str(tmp_path / "coordinator.address") in result.stderr
    (tmp_path / "coordinator.address").write_text("127.0.0.1:1\n")
    result = _run_job_script(tmp_path)
    assert result.returncode == 2 and str(tmp_path / "trainer.token") in result.stderr


def _candidates(results, experiment_id: str) -> list[types_pb2.Candidate]:
    return list(results.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=10).candidates)


def test_an_array_task_trains_candidates_and_returns_its_lease_on_sigterm(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl (start-coordinator.sh makes a certificate)")
    home, port = tmp_path / "taylorglo", free_port()
    with Processes(tmp_path) as processes:
        coordinator = processes.start(
            "coordinator",
            ["bash", str(SLURM / "start-coordinator.sh")],
            _environment(home, TAYLORGLO_LISTEN=f"127.0.0.1:{port}", TAYLORGLO_ADVERTISE=f"127.0.0.1:{port}"),
        )
        wait_until(lambda: "coordinator listening" in processes.log("coordinator"), coordinator, "coordinator")
        for name in ("trainer.token", "client.token", "server.key"):  # secrets: this user only
            assert (home / name).stat().st_mode & 0o077 == 0, name
        assert (home / "coordinator.address").read_text().strip() == f"127.0.0.1:{port}"

        # The client's side: TLS with the created CA, the client token.
        channel = connect(
            f"127.0.0.1:{port}", token=(home / "client.token").read_text().strip(), tls_ca=str(home / "ca.crt")
        )
        results = es_grpc.ExperimentServiceStub(channel)
        spec = load_spec(
            {"task": {"dataset": "digits", "model": "tiny", "steps": 20}, "search": {"population": 4, "generations": 3}}
        )
        experiment_id = results.SubmitExperiment(es.SubmitExperimentRequest(spec=spec), timeout=30).id

        # One array task, as Slurm starts it (the synthetic evaluator: 1 s per candidate, no TensorFlow).
        job = processes.start(
            "trainer",
            ["bash", str(SLURM / "trainers.sbatch")],
            {
                **_environment(
                    home,
                    TAYLORGLO_EVALUATOR="synthetic",
                    TAYLORGLO_GRACE="0",
                    TAYLORGLO_TRAINER_ARGS="--synthetic-sleep 1",
                ),
                **ARRAY_TASK,
            },
        )
        trainer_id = f"slurm-4242_3@{socket.gethostname().split('.')[0]}"

        def working_on_a_third() -> bool:
            candidates = _candidates(results, experiment_id)
            return sum(c.status == SUCCEEDED for c in candidates) >= 2 and any(c.status == LEASED for c in candidates)

        wait_until(working_on_a_third, job, "two candidates trained and a third leased", timeout_s=90)
        [held] = [c for c in _candidates(results, experiment_id) if c.status == LEASED]
        assert held.attempts == 1
        job.send_signal(signal.SIGTERM)  # scancel, or --signal=B:TERM before the time limit
        assert job.wait(timeout=30) == 0, processes.log("trainer")

        candidates = _candidates(results, experiment_id)
        trained = [c for c in candidates if c.status == SUCCEEDED]
        assert len(trained) >= 2 and {c.trainer_id for c in trained} == {trainer_id}
        again = next(c for c in candidates if (c.generation, c.index) == (held.generation, held.index))
        # Returned: queued again at once, its attempt not spent, no error. (An
        # expired lease would stay LEASED for the 60 s TTL, then cost an attempt.)
        assert (again.status, again.attempts, again.error) == (QUEUED, 0, "")
        log = processes.log("trainer")
        assert f"trainer {trainer_id} on GPU(s) 0 for 127.0.0.1:{port}" in log
        assert "(synthetic evaluator, auto candidates per step," in log  # K measured per device
        assert "1 leases returned" in log

        coordinator.send_signal(signal.SIGTERM)
        assert coordinator.wait(timeout=30) == 0
