"""Reading docker/kubernetes/: its plain manifests, Kustomize's rendering, pod templates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.local_deploy import DOCKER

KUBERNETES = DOCKER / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = {"base": BASE, "cpu": KUBERNETES / "overlays" / "cpu", "tls": KUBERNETES / "overlays" / "tls"}
SUBMIT_EXAMPLE = KUBERNETES / "examples" / "submit-job.yaml"
POD_TEMPLATE_KINDS = ("Deployment", "StatefulSet", "Job")


def tool(name: str) -> str:
    """A command of the `dev` extra (this environment's bin first), or skip saying how CI gets it."""
    binary = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed (part of the dev extra: pip install -e '.[dev]')")
    return binary


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def plain_base() -> list[dict]:
    """The base's objects as its files hold them (what `kubectl apply -f` applies)."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load(BASE / name)]


def render(overlay: str) -> list[dict]:
    """`kubectl kustomize` of an overlay (Kustomize is built into kubectl)."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(OVERLAYS[overlay])], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_specs(objects: list[dict]) -> Iterator[tuple[str, dict]]:
    """(KIND/NAME, pod spec) of every object that runs pods."""
    for obj in objects:
        if obj["kind"] in POD_TEMPLATE_KINDS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def flag(command: list[str], name: str) -> str:
    """The value after ``name`` in a container's command."""
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]
