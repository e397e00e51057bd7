"""A spec whose model is a ``python:`` builder, trained by a ``taylorglo trainer`` process.

The trainer imports the builder from its own environment (here the repository on
its path, as a user's package installed in the trainer image would be); only the
reference crosses the wire. A builder the trainer cannot import fails the
experiment after its attempts, with the trainer's message, said once in its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taylorglo_tf import spec as spec_module
from taylorglo_tf.connection import connect
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2

REPO = Path(__file__).resolve().parents[2]
RECIPE = {"learning_rate": 0.05, "momentum": 0.9, "steps": 400, "batch_size": 32}
FINAL = {
    types_pb2.EXPERIMENT_STATE_SUCCEEDED,
    types_pb2.EXPERIMENT_STATE_FAILED,
    types_pb2.EXPERIMENT_STATE_CANCELLED,
}


def _spec(model: str) -> types_pb2.ExperimentSpec:
    return spec_module.load_spec(
        {
            "name": "python model",
            "task": {"dataset": "digits", "model": model, "steps": 20, "recipe": RECIPE},
            "search": {"population": 2, "generations": 1, "max_attempts": 2},
        }
    )


@pytest.fixture
def coordinator(tmp_path):
    server = serve(tmp_path / "c.db", "127.0.0.1:0", lease_ttl_s=30)
    yield server
    server.stop(1.0)


def _run_until_final(coordinator, model: str, log: Path) -> es.ExperimentResult:
    """Submits ``model``'s search, trains it with one keras trainer process, returns the final result."""
    with connect(coordinator.address) as channel:
        stub = es_grpc.ExperimentServiceStub(channel)
        experiment_id = stub.SubmitExperiment(es.SubmitExperimentRequest(spec=_spec(model)), timeout=10).id
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
        with open(log, "wb") as out:
            trainer = subprocess.Popen(
                [sys.executable, "-m", "taylorglo_tf", "trainer", "--coordinator", coordinator.address]
                + ["--evaluator", "keras", "--candidates-per-step", "1", "--xla", "off", "--wait-ms", "200"]
                + ["--grace", "0"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 300
                while stub.GetExperiment(es.GetExperimentRequest(experiment_id=experiment_id), timeout=5).state not in (
                    FINAL
                ):
                    assert trainer.poll() is None, f"trainer exited:\n{log.read_text()[-3000:]}"
                    assert time.monotonic() < deadline, f"no result in 300 s:\n{log.read_text()[-3000:]}"
                    time.sleep(0.5)
            finally:
                trainer.terminate()
                trainer.wait(60)
        return stub.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=10)


def test_a_python_builder_named_in_a_spec_is_trained_by_a_trainer_process(coordinator, tmp_path):
    result = _run_until_final(coordinator, "python:tests.helpers.user_models:small_mlp", tmp_path / "trainer.log")
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED, result.experiment.error
    trained = (types_pb2.CANDIDATE_STATUS_SUCCEEDED, types_pb2.CANDIDATE_STATUS_DIVERGED)
    # Random losses of a first generation need not learn in 20 steps; what matters is that they trained.
    assert all(c.status in trained for c in result.candidates), [c.status for c in result.candidates]
    assert all(c.metrics.steps == 20 for c in result.candidates if c.status == types_pb2.CANDIDATE_STATUS_SUCCEEDED)


def test_a_builder_the_trainer_cannot_import_fails_the_experiment_naming_it(coordinator, tmp_path):
    log = tmp_path / "trainer.log"
    result = _run_until_final(coordinator, "python:no_such_package.models:build", log)
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_FAILED
    assert "no_such_package.models" in result.experiment.error, result.experiment.error
    assert all(c.status == types_pb2.CANDIDATE_STATUS_FAILED for c in result.candidates)
    # Four leases failed alike: the adapter explains the import error once and the worker logs the
    # failure in full once; the other leases refer to the first.
    lines = [line for line in log.read_text().splitlines() if "does not import" in line]
    assert len(lines) == 2, lines
    assert log.read_text().count("failed as ") == 3
