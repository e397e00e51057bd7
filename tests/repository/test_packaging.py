"""Packaging by role: a slim base install, one extra per role, exact versions in constraints.txt.

The clean-venv test installs the package with the ``coordinator`` extra into a
new virtual environment (pip reaches the package index, as in CI) and checks
what came in and what the coordinator can do there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from taylorglo_tf import extras

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# distributions a coordinator must not install (the training stack)
TRAINING_STACK = {"tensorflow", "keras", "tensorflow-datasets", "scikit-learn", "scipy", "matplotlib", "tensorboard"}


def _name(requirement: str) -> str:
    """The distribution name of a requirement string, normalised (PEP 503)."""
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def test_the_base_install_and_the_coordinator_extra_hold_none_of_the_training_stack():
    project = PYPROJECT["project"]
    extras_ = project["optional-dependencies"]
    coordinator = {_name(r) for r in project["dependencies"] + extras_["coordinator"]}
    assert not coordinator & TRAINING_STACK
    assert {_name(r) for r in extras_["train"]} >= TRAINING_STACK
    assert extras_["all"] == ["taylorglo-tf[coordinator,train]"]


def test_library_dependencies_are_ranges_and_the_exact_versions_live_in_constraints():
    project = PYPROJECT["project"]
    extras_ = project["optional-dependencies"]
    runtime = project["dependencies"] + extras_["coordinator"] + extras_["train"]
    assert not [r for r in runtime if "==" in r]
    pinned = {}
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pinned[_name(name)] = version
    assert pinned["tensorflow"]
    # every runtime dependency is pinned for CI and the images
    assert {_name(r) for r in runtime} <= set(pinned)


def test_every_module_of_an_extra_has_its_distribution_in_that_extra():
    extras_ = PYPROJECT["project"]["optional-dependencies"]
    distribution = {
        "sklearn": "scikit-learn",
        "tensorflow_datasets": "tensorflow-datasets",
        "grpc_reflection": "grpcio-reflection",
        "prometheus_client": "prometheus-client",
    }
    for module, extra in extras.EXTRA_OF.items():
        assert distribution.get(module, module) in {_name(r) for r in extras_[extra]}, module


_WITHOUT = """
import importlib.abc, sys
ABSENT = {absent!r}
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ABSENT:
            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)
sys.meta_path.insert(0, Absent())
"""


def _run_without(absent: list[str], code: str) -> subprocess.CompletedProcess:
    program = _WITHOUT.format(absent=absent) + code
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_a_missing_training_stack_is_an_import_error_naming_the_extra():
    result = _run_without(
        ["tensorflow", "keras"],
        (
            "for statement in ('from taylorglo_tf import TaylorGLOLoss',\n"
            "                  'import taylorglo_tf.losses',\n"
            "                  'from taylorglo_tf.training import Evaluator', 'from taylorglo_tf.data import "
            "pipeline',\n"
            "                  'from taylorglo_tf import models; models.build(\"tiny\", (8, 8, 1), 10)'):\n"
            "    try:\n"
            "        exec(statement)\n"
            "    except ImportError as error:\n"
            "        print(error)\n"
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    for line in lines:
        assert line.endswith("install it with: pip install 'taylorglo-tf[train]'"), line


@pytest.mark.parametrize(
    ("command", "absent", "extra"),
    [
        (["trainer", "--coordinator", "127.0.0.1:1"], ["tensorflow", "keras"], "train"),
        (["coordinator", "--listen", "127.0.0.1:0"], ["cma"], "coordinator"),
    ],
)
def test_a_command_without_its_extra_says_which_extra_to_install(command, absent, extra, tmp_path):
    argv = [*command, "--db", str(tmp_path / "c.db")] if command[0] == "coordinator" else command
    result = _run_without(absent, (f"from taylorglo_tf.cli import main\nsys.exit(main({argv!r}))\n"))
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].endswith(f"install it with: pip install 'taylorglo-tf[{extra}]'")


@pytest.mark.packaging
def test_the_coordinator_extra_installs_in_a_clean_venv_without_the_training_stack(tmp_path):
    """``pip install 'taylorglo-tf[coordinator]'``: no TensorFlow, Keras, TFDS, scikit-learn; the coordinator runs."""
    source = tmp_path / "source"  # what the coordinator image copies (docker/Dockerfile.coordinator)
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, source / name)
    for name in ("taylorglo_tf", "coordinator", "trainer"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    report = tmp_path / "report.json"
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--report",
            str(report),
            "-c",
            str(source / "constraints.txt"),
            f"{source}[coordinator]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    installed = {_name(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
    assert {"taylorglo-tf", "cma", "grpcio", "grpcio-reflection"} <= installed
    assert not installed & TRAINING_STACK, installed & TRAINING_STACK

    check = subprocess.run(
        [
            str(python),
            "-c",
            (
                "import importlib.util, pathlib, sys\n"
                "for name in ('tensorflow', 'keras', 'tensorflow_datasets', 'sklearn'):\n"
                "    assert importlib.util.find_spec(name) is None, name\n"
                "import taylorglo_tf\n"
                "for name in ('coordinator', 'trainer'):  # inside the package, not generic top-level names\n"
                "    assert importlib.util.find_spec(name) is None, name\n"
                "assert (pathlib.Path(taylorglo_tf.__file__).parent / 'py.typed').is_file()\n"
                "from taylorglo_tf.coordinator.server import serve\n"
                "from taylorglo_tf.cli import main\n"
                "try:\n"
                "    import taylorglo_tf.losses\n"
                "except ImportError as error:\n"
                "    print(error)\n"
                "try:\n"
                "    main(['coordinator', '--help'])\n"
                "except SystemExit as done:\n"
                "    assert done.code == 0, done.code\n"
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=environment,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert "pip install 'taylorglo-tf[train]'" in check.stdout
    assert "--listen" in check.stdout


def test_the_package_list_names_every_package_folder():
    """pyproject.toml lists the packages (the package-dir mapping needs a list): none may be missing."""
    setuptools_config = PYPROJECT["tool"]["setuptools"]
    folders = {"taylorglo_tf": "taylorglo_tf", **setuptools_config["package-dir"]}
    expected = set()
    for installed, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            expected.add(".".join([installed, *init.parent.relative_to(ROOT / folder).parts]))
    assert sorted(setuptools_config["packages"]) == sorted(expected)
