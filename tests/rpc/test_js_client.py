"""A client in another language uses the coordinator from ``protos/`` alone.

``tests/js_client/client.js`` is a Node.js program that loads ``protos/`` at run
time with ``@grpc/proto-loader`` (no generated code, nothing from the Python
package), submits a spec to a loopback coordinator with the client token, reads
it back, and leases and reports a candidate with the trainer token. The npm
packages (pinned in ``tests/js_client/package-lock.json``) are installed once
per lock file into the system's temporary folder; the test is skipped, saying
why, where node or npm is missing or the npm registry cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from taylorglo_tf import spec as spec_module
from taylorglo_tf.connection import connect
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "tests" / "js_client"
TRAINER_TOKEN = "js-trainer-token-0123456789"
CLIENT_TOKEN = "js-client-token-0123456789"
# What the JavaScript client submits (snake_case, as in the proto files).
SPEC = {
    "name": "from node",
    "task": {"dataset": "digits", "model": "tiny", "steps": 20, "seed": 3},
    "search": {"population": 2, "generations": 1, "sigma0": 0.5, "seed": 7, "invariant_prescreen": False},
}


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The client's npm packages, installed with ``npm ci`` once per lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the JavaScript client (Debian: apt-get install nodejs npm)")
    manifests = [CLIENT_DIR / "package.json", CLIENT_DIR / "package-lock.json"]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in manifests)).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"taylorglo-js-client-{digest}"
    if not (target / "node_modules" / "@grpc" / "proto-loader").is_dir():
        staging = Path(tempfile.mkdtemp(prefix="taylorglo-js-client-"))
        for path in manifests:
            shutil.copy(path, staging)
        install = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if install.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.skip(f"npm ci of tests/js_client failed (registry unreachable?): {install.stderr.strip()[-500:]}")
        try:
            staging.rename(target)  # atomic: a parallel run either wins or reuses ours
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "node_modules"


@pytest.fixture
def coordinator(tmp_path):
    server = serve(tmp_path / "js.db", trainer_token=TRAINER_TOKEN, client_token=CLIENT_TOKEN)
    yield server
    server.stop(grace=0)


def test_a_node_client_built_from_the_protos_submits_reads_back_leases_and_reports(node_modules, coordinator):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAYLORGLO_")}
    env.update(NODE_PATH=str(node_modules), TAYLORGLO_CLIENT_TOKEN=CLIENT_TOKEN, TAYLORGLO_TRAINER_TOKEN=TRAINER_TOKEN)
    run = subprocess.run(
        ["node", str(CLIENT_DIR / "client.js"), str(ROOT / "protos"), coordinator.address],
        input=json.dumps(SPEC),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout)

    # Roles and validation reach a JavaScript client as standard status codes.
    assert seen["wrong_role"]["code"] == "PERMISSION_DENIED"
    assert seen["invalid"]["code"] == "INVALID_ARGUMENT"
    assert seen["invalid"]["details"].startswith("spec.search.population")

    # Submitted and read back: the same experiment, with the spec as sent.
    submitted, fetched = seen["submitted"], seen["fetched"]["value"]
    assert fetched["id"] == submitted["id"] and len(submitted["id"]) > 0
    assert fetched["state"] in {"EXPERIMENT_STATE_PENDING", "EXPERIMENT_STATE_RUNNING"}
    assert fetched["spec"]["name"] == "from node"
    assert fetched["spec"]["task"]["seed"] == 3 and fetched["spec"]["search"]["seed"] == 7
    assert fetched["evaluations_total"] == 2

    # As a trainer it leased a candidate of that experiment and its report counted.
    lease = seen["lease"]
    assert lease["experiment_id"] == submitted["id"] and len(lease["theta"]) == 8
    assert lease["task"]["model"] == "tiny" and lease["ttl_s"] > 0
    assert seen["report"]["value"]["accepted"] is True

    # The Python side sees exactly what the JavaScript client sent.
    experiments = es_grpc.ExperimentServiceStub(connect(coordinator.address, token=CLIENT_TOKEN))
    result = experiments.GetResult(es.GetResultRequest(experiment_id=submitted["id"]))
    assert result.experiment.spec == spec_module.load_spec(SPEC)
    reported = [c for c in result.candidates if c.trainer_id == "js-trainer"]
    assert len(reported) == 1
    assert reported[0].status == types_pb2.CANDIDATE_STATUS_SUCCEEDED and reported[0].fitness == 0.5
    assert reported[0].metrics.val_loss == 1.25 and reported[0].metrics.steps == 20
    assert list(reported[0].theta) == lease["theta"]
