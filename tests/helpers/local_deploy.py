"""Run a deployment's containers as local processes: no Docker, Kubernetes or Slurm.

Shared by the compose, Kubernetes and Slurm tests. A container's command,
arguments and environment are taken as the deployment file gives them; only
what the engine would provide is mapped: the coordinator's service names and
``0.0.0.0`` become 127.0.0.1 with a free port, volumes become temporary
folders, files the Dockerfiles copy (``/opt/taylorglo/healthcheck.py``) their
source in the repository, and ``taylorglo``/``python`` the ones of this
environment.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
CONTAINER_PORT = "50051"
# Files the Dockerfiles COPY into the images -> their source in the repository.
IMAGE_FILES = {"/opt/taylorglo/healthcheck.py": str(DOCKER / "healthcheck.py")}
TAYLORGLO = str(Path(sys.executable).parent / "taylorglo")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_environment() -> dict[str, str]:
    """This process's environment without any TAYLORGLO_* setting of the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TAYLORGLO_")}


class Host:
    """What the engine would provide: name resolution, volumes, the images' files, the PATH."""

    def __init__(
        self,
        tmp_path: Path,
        port: int,
        service_names: Iterable[str] = ("coordinator",),
        other_ports: Iterable[str] = (),
    ):
        self.port = port
        # Container port -> local port: the coordinator's, and any other it listens on.
        self.ports = {CONTAINER_PORT: port, **{other: free_port() for other in other_ports}}
        self.folder = tmp_path / "volumes"
        # Longest first: a short name may be the tail of a longer one.
        self.dialled = sorted({*service_names, "0.0.0.0", "127.0.0.1"}, key=len, reverse=True)
        self.mounts: dict[str, str] = {}

    def volume(self, name: str) -> Path:
        """The local folder standing for the volume ``name`` (the same folder for every mount of it)."""
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def mount(self, target: str, source: str | Path) -> None:
        self.mounts[target] = str(source)

    def with_own_mounts(self) -> Host:
        """The same host for a container whose mounts are its own (a pod's emptyDir at /tmp, ...)."""
        other = copy.copy(self)
        other.mounts = {}
        return other

    def localize(self, text: str) -> str:
        for name in self.dialled:
            for container_port, local_port in self.ports.items():
                text = text.replace(f"{name}:{container_port}", f"127.0.0.1:{local_port}")
        # The deepest mount holding the path, once (a local folder may itself lie under /tmp).
        paths = {**IMAGE_FILES, **self.mounts}
        for container_path in sorted(paths, key=len, reverse=True):
            if text == container_path or text.startswith(container_path + "/"):
                return paths[container_path] + text[len(container_path) :]
        return text

    def argv(self, command: list[str]) -> list[str]:
        argv = [self.localize(str(arg)) for arg in command]
        if argv[0] == "taylorglo":  # the console script the images install
            argv[0] = TAYLORGLO
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        return argv

    def environment(self, variables: Mapping[str, object]) -> dict[str, str]:
        env = clean_environment()
        env.update({key: self.localize(str(value)) for key, value in variables.items()})
        return env


class Processes:
    """Started processes with their logs in a folder; whatever still runs on exit is killed."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.running: dict[str, subprocess.Popen] = {}
        self._logs: list = []

    def start(self, name: str, argv: list[str], env: Mapping[str, str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 (closed with the processes)
        self._logs.append(log)
        process = subprocess.Popen(argv, env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=cwd or self.folder)
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str, timeout_s: float = 60) -> None:
    """Poll ``ready()`` until it is true; fail if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert process.poll() is None, f"{what}: the process exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{what}: not ready after {timeout_s:g} s"
        time.sleep(0.3)


def client(host: Host, token: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """A ``taylorglo`` client command against the host's coordinator, with ``token``."""
    env = clean_environment()
    env.update(TAYLORGLO_TOKEN=token, COLUMNS="120")
    return subprocess.run(
        [TAYLORGLO, *args, "--coordinator", f"127.0.0.1:{host.port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
