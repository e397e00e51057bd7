"""docker/compose.yaml's wiring, exercised without a Docker engine.

The coordinator and trainer services' commands, environments and health checks
are read from compose.yaml (interpolated like compose does, with tokens as an
operator's docker/.env would give them) and run as local processes. Only what a
container provides is mapped: the service name ``coordinator`` and the
container's ``0.0.0.0`` become 127.0.0.1 with a free port, named volumes become
temporary folders, files the Dockerfiles copy (``/opt/taylorglo/healthcheck.py``)
their source in the repository. Then a client submits a small search with the
client token, as the Compose guide (docs/how-to/compose.md) says, and sees it complete on the Keras trainer.
The TLS override (compose.tls.yaml, merged by docker-compose itself) is run the
same way with a certificate in docker/certs/: health checks and clients over TLS.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.certificates import self_signed
from tests.helpers.local_deploy import DOCKER, Host, Processes, client, free_port, wait_until

TOKENS = {
    "TAYLORGLO_TRAINER_TOKEN": "compose-trainer-token-0123",
    "TAYLORGLO_CLIENT_TOKEN": "compose-client-token-4567",
}

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` substitution, recursively."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, op, arg = match.group("name", "op", "arg")
        current = env.get(name, "")
        if op == ":?" and not current:
            raise ValueError(f"{name}: {arg}")
        return current or (arg if op == ":-" else "")

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose():
    raw = yaml.safe_load((DOCKER / "compose.yaml").read_text())  # YAML merge keys resolved here
    return interpolate({"services": raw["services"], "volumes": raw["volumes"]}, dict(TOKENS))


def duration_s(text: str) -> float:
    """Compose durations used here: ``30s``, ``2m``."""
    value, unit = float(text[:-1]), text[-1]
    return value * {"s": 1, "m": 60}[unit]


def mount(host: Host, service: dict, named_volumes) -> None:
    """Named volumes -> their temporary folder; bind mounts (absolute paths) stay as they are."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:  # the long form, as `docker compose config` (v2) prints it
            source, target = volume["source"], volume["target"]
        host.mount(target, host.volume(source) if source in named_volumes else source)


def compose_host(tmp_path: Path, config: dict) -> Host:
    host = Host(tmp_path, free_port(), service_names=["coordinator"])
    for name in ("coordinator", "trainer"):
        mount(host, config["services"][name], config["volumes"])
    return host


def healthcheck_argv(host: Host, service: dict) -> list[str]:
    test = service["healthcheck"]["test"] if "healthcheck" in service else None
    if test is None:  # the image's HEALTHCHECK (Dockerfile.trainer)
        text = (DOCKER / "Dockerfile.trainer").read_text()
        test = ["CMD", *yaml.safe_load(re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])", text).group(1))]
    assert test[0] == "CMD"
    return host.argv(test[1:])


def healthy(host: Host, service: dict) -> bool:
    check = subprocess.run(
        healthcheck_argv(host, service),
        env=host.environment(service.get("environment", {})),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return check.returncode == 0


def test_compose_services_run_locally_complete_a_search_and_stop_cleanly(compose, tmp_path):
    services = compose["services"]
    coordinator_service, trainer_service = services["coordinator"], services["trainer"]
    host = compose_host(tmp_path, compose)
    with Processes(tmp_path) as processes:
        coordinator = processes.start(
            "coordinator",
            host.argv(coordinator_service["command"]),
            host.environment(coordinator_service["environment"]),
        )
        # depends_on: coordinator service_healthy
        assert trainer_service["depends_on"]["coordinator"]["condition"] == "service_healthy"
        wait_until(lambda: healthy(host, coordinator_service), coordinator, "coordinator health check")
        trainer = processes.start(
            "trainer", host.argv(trainer_service["command"]), host.environment(trainer_service["environment"])
        )
        wait_until(lambda: healthy(host, trainer_service), trainer, "trainer health check")

        spec = tmp_path / "spec.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "name": "compose wiring",
                    "task": {"dataset": "digits", "model": "tiny", "steps": 20},
                    "search": {"population": 3, "generations": 2},
                }
            )
        )
        # The trainer's token cannot submit: roles are wired separately.
        refused = client(host, TOKENS["TAYLORGLO_TRAINER_TOKEN"], "submit", str(spec), timeout=60)
        assert refused.returncode == 1 and "permission denied" in refused.stderr
        submitted = client(host, TOKENS["TAYLORGLO_CLIENT_TOKEN"], "submit", str(spec), "--watch")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert re.search(r"experiment \w+ succeeded: best fitness 0\.\d+", submitted.stdout)
        experiment_id = re.search(r"experiment (\w+) succeeded", submitted.stdout).group(1)

        result = client(
            host, TOKENS["TAYLORGLO_CLIENT_TOKEN"], "result", experiment_id, "--out", str(tmp_path / "result")
        )
        assert result.returncode == 0, result.stderr
        candidates = (tmp_path / "result" / "candidates.csv").read_text().splitlines()
        assert len(candidates) == 1 + 6
        # The trainer trained them (Keras evaluator, as in the image).
        trainer_ids = {line.split(",")[5] for line in candidates[1:]}
        assert len(trainer_ids) == 1 and "" not in trainer_ids

        # The database lives on the coordinator's volume.
        database = coordinator_service["command"][coordinator_service["command"].index("--db") + 1]
        assert Path(host.localize(database)).is_file()
        assert str(host.volume("coordinator-data")) in host.localize(database)

        # docker compose stop: SIGTERM, then the stop_grace_period.
        for name in ("trainer", "coordinator"):
            processes.running[name].send_signal(signal.SIGTERM)
            assert processes.running[name].wait(timeout=duration_s(services[name]["stop_grace_period"])) == 0


def test_compose_trainer_on_a_three_gpu_host_runs_one_pinned_worker_per_gpu(compose, tmp_path):
    """The trainer service's command on a host whose visible GPUs are faked as 0,1,2."""
    services = compose["services"]
    coordinator_service, trainer_service = services["coordinator"], services["trainer"]
    host = compose_host(tmp_path, compose)
    command = host.argv(trainer_service["command"])
    # The synthetic evaluator keeps this about the wiring (no TensorFlow per worker).
    command[command.index("--evaluator") + 1] = "synthetic"
    command += ["--synthetic-sleep", "0.5"]
    with Processes(tmp_path) as processes:
        coordinator = processes.start(
            "coordinator",
            host.argv(coordinator_service["command"]),
            host.environment(coordinator_service["environment"]),
        )
        wait_until(lambda: healthy(host, coordinator_service), coordinator, "coordinator health check")
        trainer = processes.start(
            "trainer", command, {**host.environment(trainer_service["environment"]), "CUDA_VISIBLE_DEVICES": "0,1,2"}
        )
        wait_until(lambda: processes.log("trainer").count("working for") == 3, trainer, "three GPU workers", 120)
        workers = dict(re.findall(r"worker on GPU (\d+) \(pid (\d+)\)", processes.log("trainer")))
        assert sorted(workers) == ["0", "1", "2"]  # every GPU once
        for gpu, pid in workers.items():
            environ = dict(
                item.split("=", 1)
                for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
                if "=" in item
            )
            assert environ["CUDA_VISIBLE_DEVICES"] == gpu  # pinned to its GPU alone
            assert environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"

        spec = tmp_path / "spec.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "name": "one worker per GPU",
                    "task": {"dataset": "digits", "model": "tiny", "steps": 20},
                    "search": {"population": 6, "generations": 1},
                }
            )
        )
        submitted = client(host, TOKENS["TAYLORGLO_CLIENT_TOKEN"], "submit", str(spec), "--watch")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        experiment_id = re.search(r"experiment (\w+) succeeded", submitted.stdout).group(1)
        result = client(
            host, TOKENS["TAYLORGLO_CLIENT_TOKEN"], "result", experiment_id, "--out", str(tmp_path / "result")
        )
        assert result.returncode == 0, result.stderr
        candidates = (tmp_path / "result" / "candidates.csv").read_text().splitlines()[1:]
        assert len(candidates) == 6 and all(line.split(",")[5] for line in candidates)

        # docker compose stop: the SIGTERM reaches every worker, and all exit cleanly.
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(timeout=duration_s(trainer_service["stop_grace_period"])) == 0
        for pid in workers.values():
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def _make_certificate(certs: Path) -> None:
    """A self-signed server certificate that is also the CA, for the names the several-machines guide lists."""
    self_signed(certs / "server.crt", certs / "server.key", ["coordinator"])
    shutil.copy(certs / "server.crt", certs / "ca.crt")


def test_compose_tls_override_serves_health_checks_and_clients_over_tls_only(tmp_path):
    """compose.yaml + compose.tls.yaml, merged by docker-compose itself, with certificates in docker/certs/."""
    binary = shutil.which("docker-compose")
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs docker-compose (to merge the override) and openssl (to make a certificate)")
    project = tmp_path / "docker"
    (project / "certs").mkdir(parents=True)
    for name in ("compose.yaml", "compose.tls.yaml"):
        shutil.copy(DOCKER / name, project / name)
    _make_certificate(project / "certs")
    (project / ".env").write_text("")  # the operator's .env: tokens come from the environment here
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAYLORGLO_", "COMPOSE_"))}
    merged = subprocess.run(
        [binary, "-f", "compose.yaml", "-f", "compose.tls.yaml", "config"],
        cwd=project,
        env={**env, **TOKENS},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    config = yaml.safe_load(merged.stdout)
    coordinator_service, trainer_service = config["services"]["coordinator"], config["services"]["trainer"]
    host = compose_host(tmp_path, config)
    with Processes(tmp_path) as processes:
        coordinator = processes.start(
            "coordinator",
            host.argv(coordinator_service["command"]),
            host.environment(coordinator_service["environment"]),
        )
        # Both health checks speak TLS (TAYLORGLO_TLS_CA from the override), trusting ca.crt.
        wait_until(lambda: healthy(host, coordinator_service), coordinator, "coordinator health check")
        assert healthy(host, trainer_service)
        # The trainer's command dials the coordinator with the mounted CA.
        trainer_argv = host.argv(trainer_service["command"])
        assert (
            Path(trainer_argv[trainer_argv.index("--tls-ca") + 1]).read_bytes()
            == (project / "certs" / "ca.crt").read_bytes()
        )

        spec = tmp_path / "spec.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "task": {"dataset": "digits", "model": "tiny", "steps": 20},
                    "search": {"population": 2, "generations": 1},
                }
            )
        )
        ca = str(project / "certs" / "ca.crt")
        submitted = client(host, TOKENS["TAYLORGLO_CLIENT_TOKEN"], "submit", str(spec), "--tls-ca", ca, timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        experiment_id = submitted.stdout.strip()
        status = client(host, TOKENS["TAYLORGLO_CLIENT_TOKEN"], "status", experiment_id, "--tls-ca", ca, timeout=60)
        assert status.returncode == 0 and experiment_id in status.stdout, status.stderr
        # Without TLS the same coordinator cannot be reached.
        plaintext = client(host, TOKENS["TAYLORGLO_CLIENT_TOKEN"], "status", timeout=60)
        assert plaintext.returncode != 0

        coordinator.send_signal(signal.SIGTERM)
        assert coordinator.wait(timeout=duration_s(coordinator_service["stop_grace_period"])) == 0
