"""Coordinator and trainers as real processes on loopback, with faults.

Each test starts ``python -m taylorglo_tf coordinator`` and ``python -m
taylorglo_tf trainer --evaluator synthetic`` processes, submits a search over
gRPC and checks the recorded result. The synthetic evaluator is deterministic,
so every fitness can be recomputed from its theta.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from taylorglo_tf import spec as spec_module
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc, types_pb2
from taylorglo_tf.trainer.synthetic import synthetic_fitness

REPO = Path(__file__).resolve().parents[2]
SUCCEEDED = types_pb2.CANDIDATE_STATUS_SUCCEEDED
LEASED = types_pb2.CANDIDATE_STATUS_LEASED
CLI = [sys.executable, "-m", "taylorglo_tf"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Starts and cleans up the processes of one test; logs go to files under ``workdir``."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.processes: list[tuple[str, subprocess.Popen]] = []

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (the process writes it until it ends)
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("TAYLORGLO_TOKEN", None)
        process = subprocess.Popen([*CLI, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append((name, process))
        return process

    def coordinator(self, db: str, port: int, lease_ttl: float = 30.0) -> subprocess.Popen:
        process = self._spawn(
            f"coordinator-{port}",
            [
                "coordinator",
                "--listen",
                f"127.0.0.1:{port}",
                "--db",
                str(self.workdir / db),
                "--lease-ttl",
                str(lease_ttl),
            ],
        )
        stub = self.stub(port)
        deadline = time.monotonic() + 60
        while True:  # ready when it answers
            try:
                stub.ListExperiments(es.ListExperimentsRequest(), timeout=1)
                return process
            except grpc.RpcError:
                assert process.poll() is None, f"coordinator exited:\n{self.logs()}"
                assert time.monotonic() < deadline, f"coordinator not ready:\n{self.logs()}"
                time.sleep(0.1)

    def trainer(self, port: int, trainer_id: str, sleep_s: float) -> subprocess.Popen:
        return self._spawn(
            trainer_id,
            [
                "trainer",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--evaluator",
                "synthetic",
                "--synthetic-sleep",
                str(sleep_s),
                "--trainer-id",
                trainer_id,
                "--wait-ms",
                "500",
                "--grace",
                "0",
                "--log-level",
                "WARNING",
            ],
        )

    @staticmethod
    def stub(port: int) -> experiment_service_pb2_grpc.ExperimentServiceStub:
        return experiment_service_pb2_grpc.ExperimentServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.workdir.glob("*.log")))

    def close(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                process.kill()
        for _, process in self.processes:
            process.wait(10)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def submit(stub, population: int, generations: int, seed: int) -> str:
    spec = spec_module.load_spec(
        {
            "name": f"synthetic p{population} g{generations} s{seed}",
            "task": {"dataset": "digits", "model": "tiny", "steps": 10},
            "search": {"population": population, "generations": generations, "seed": seed},
        }
    )
    return stub.SubmitExperiment(es.SubmitExperimentRequest(spec=spec), timeout=10).id


def wait_until(predicate, timeout: float, what: str, cluster: Cluster, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except grpc.RpcError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{cluster.logs()}"
        time.sleep(interval)


def finished_result(stub, experiment_id: str, cluster: Cluster, timeout: float = 60) -> es.ExperimentResult:
    def done():
        experiment = stub.GetExperiment(es.GetExperimentRequest(experiment_id=experiment_id), timeout=5)
        return experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED

    wait_until(done, timeout, f"experiment {experiment_id} to succeed", cluster, interval=0.2)
    return stub.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=10)


def assert_every_candidate_accounted_for(result: es.ExperimentResult, population: int, generations: int):
    keys = [(c.generation, c.index) for c in result.candidates]
    assert keys == [(g, i) for g in range(generations) for i in range(population)]
    assert all(c.status == SUCCEEDED for c in result.candidates)
    for c in result.candidates:  # the trainer's honest, recomputable score
        assert c.fitness == pytest.approx(synthetic_fitness(c.theta), rel=1e-12)
    assert result.experiment.evaluations_done == population * generations
    assert [g.generation for g in result.generations] == list(range(generations))
    assert result.best_fitness == pytest.approx(max(c.fitness for c in result.candidates))


def test_a_search_completes_with_every_candidate_accounted_for(cluster):
    port = _free_port()
    cluster.coordinator("search.db", port)
    trainer_ids = ["trainer-a", "trainer-b", "trainer-c"]
    for trainer_id in trainer_ids:
        cluster.trainer(port, trainer_id, sleep_s=0.02)
    stub = cluster.stub(port)
    experiment_id = submit(stub, population=6, generations=3, seed=3)
    result = finished_result(stub, experiment_id, cluster)
    assert_every_candidate_accounted_for(result, population=6, generations=3)
    assert {c.trainer_id for c in result.candidates} <= set(trainer_ids)
    assert all(c.attempts == 1 for c in result.candidates)
    # stdout and stderr share one log here: the address is announced once, not twice
    assert (cluster.workdir / f"coordinator-{port}.log").read_text().count("listening on") == 1


def test_a_killed_trainers_candidate_is_released_and_the_search_completes(cluster):
    port = _free_port()
    cluster.coordinator("kill-trainer.db", port, lease_ttl=2.0)
    stub = cluster.stub(port)
    experiment_id = submit(stub, population=4, generations=2, seed=5)
    doomed = cluster.trainer(port, "doomed", sleep_s=30.0)  # never finishes on its own

    def leased_candidate():
        result = stub.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=5)
        return next(((c.generation, c.index) for c in result.candidates if c.status == LEASED), None)

    killed = wait_until(leased_candidate, 60, "the first lease", cluster)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    cluster.trainer(port, "survivor", sleep_s=0.02)
    result = finished_result(stub, experiment_id, cluster)
    assert_every_candidate_accounted_for(result, population=4, generations=2)
    (candidate,) = [c for c in result.candidates if (c.generation, c.index) == killed]
    # Re-leased after the lease expired (a heavily loaded machine may have expired
    # the doomed trainer's lease once more before the kill, hence >= 2).
    assert candidate.attempts >= 2 and candidate.trainer_id == "survivor"
    assert {c.trainer_id for c in result.candidates} == {"survivor"}


def _trajectory(result: es.ExperimentResult):
    return [
        (list(g.mean_theta), g.sigma, list(g.best_theta), g.best_fitness, g.mean_fitness) for g in result.generations
    ]


def test_a_coordinator_killed_mid_generation_resumes_on_its_database_with_the_same_trajectory(cluster):
    population, generations, seed = 6, 4, 11
    # Reference: an uninterrupted search with the same seed.
    reference_port, port = _free_port(), _free_port()
    cluster.coordinator("reference.db", reference_port)
    cluster.coordinator("restarted.db", port)
    for i in range(2):
        cluster.trainer(reference_port, f"reference-{i}", sleep_s=0.02)
        cluster.trainer(port, f"trainer-{i}", sleep_s=0.15)
    reference_stub, stub = cluster.stub(reference_port), cluster.stub(port)
    reference_id = submit(reference_stub, population, generations, seed)
    experiment_id = submit(stub, population, generations, seed)

    def mid_generation():
        experiment = stub.GetExperiment(es.GetExperimentRequest(experiment_id=experiment_id), timeout=5)
        done = experiment.evaluations_done
        return population < done < 3 * population and done % population != 0

    wait_until(mid_generation, 60, "the search to be inside its second or third generation", cluster, 0.01)
    coordinator = cluster.processes[1][1]
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait(10)
    time.sleep(0.5)  # trainers now fail to reach it and back off
    cluster.coordinator("restarted.db", port)

    result = finished_result(stub, experiment_id, cluster)
    reference = finished_result(reference_stub, reference_id, cluster)
    assert_every_candidate_accounted_for(result, population, generations)
    assert len(result.candidates) == generations * population
    assert [list(c.theta) for c in result.candidates] == [list(c.theta) for c in reference.candidates]
    assert _trajectory(result) == _trajectory(reference)


def test_watch_follows_an_experiment_across_a_coordinator_restart(cluster):
    port = _free_port()
    cluster.coordinator("watched.db", port)
    cluster.trainer(port, "trainer", sleep_s=0.2)
    stub = cluster.stub(port)
    experiment_id = submit(stub, population=4, generations=3, seed=7)
    watch_log = cluster.workdir / "watch.out"
    with open(watch_log, "wb") as out:
        watcher = subprocess.Popen(
            [*CLI, "watch", experiment_id, "--coordinator", f"127.0.0.1:{port}", "--reconnect-timeout", "120"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    cluster.processes.append(("watch", watcher))

    def some_done():
        experiment = stub.GetExperiment(es.GetExperimentRequest(experiment_id=experiment_id), timeout=5)
        return 0 < experiment.evaluations_done < 8

    wait_until(some_done, 60, "the first results", cluster, 0.05)
    coordinator = cluster.processes[0][1]
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait(10)
    time.sleep(1.0)  # the watch sees the coordinator gone
    assert watcher.poll() is None, watch_log.read_text()
    cluster.coordinator("watched.db", port)

    assert watcher.wait(120) == 0, watch_log.read_text()
    output = watch_log.read_text()
    assert "lost the coordinator" in output and "reconnected to the coordinator" in output
    assert f"experiment {experiment_id} succeeded" in output
