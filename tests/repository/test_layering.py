"""Imports run one way: command line -> services -> library -> data, models, protos -> foundation.

Read statically (``ast``) from every module of the three packages: ``import``
and ``from ... import`` anywhere in a module (inside functions and
``if TYPE_CHECKING:`` blocks too), and the module names a module passes to
``importlib`` (the lazy exports' tables and f-string prefixes). The rule is
:data:`LAYERS` below; docs/ARCHITECTURE.md describes the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: source folder -> the package it installs as (pyproject.toml's [tool.setuptools.package-dir])
PACKAGES = {
    "taylorglo_tf": "taylorglo_tf",
    "coordinator": "taylorglo_tf.coordinator",
    "trainer": "taylorglo_tf.trainer",
}

#: Highest first. A module belongs to the layer of the longest prefix that names
#: it, and may import modules of its own layer or of a lower one. Within a layer
#: the units (a tuple's prefixes) are separate: coordinator and trainer never
#: import each other, nor do data, models and the protos.
LAYERS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    # LossSearch (taylorglo_tf.search) is an entry point like `taylorglo run`: a coordinator and a trainer in a script
    ("command line", (("taylorglo_tf.cli", "taylorglo_tf.__main__", "taylorglo_tf.commands", "taylorglo_tf.search"),)),
    ("services", (("taylorglo_tf.coordinator",), ("taylorglo_tf.trainer",))),
    ("library", (("taylorglo_tf",),)),
    ("data, models, protos", (("taylorglo_tf.data",), ("taylorglo_tf.models",), ("taylorglo_tf.rpc",))),
    ("foundation", (("taylorglo_tf.extras",),)),  # what every layer may use; it imports nothing of the project
)


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def place(name: str) -> tuple[int, int]:
    """(layer index, unit index) of a project module: its longest matching prefix."""
    best: tuple[int, int, int] | None = None
    for layer, (_, units) in enumerate(LAYERS):
        for unit, prefixes in enumerate(units):
            for prefix in prefixes:
                if _within(name, prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), layer, unit)
    assert best is not None, f"{name} is in no layer; add it to LAYERS"
    return best[1], best[2]


def _project_module(name: str) -> str | None:
    """The project module ``name`` refers to (a module, or the module holding a name), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, source: str, *, is_package: bool = False) -> set[tuple[str, int]]:
    """(project module imported, line) for every import in ``source``, wherever it stands."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: set[tuple[str, int]] = set()

    def add(name: str, line: int) -> None:
        target = _project_module(name)
        if target is not None and target != module:
            found.add((target, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                add(f"{base}.{alias.name}", node.lineno)  # a submodule, or a name defined in ``base``
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES:
            if "." in node.value:  # importlib.import_module("taylorglo_tf.losses"), a lazy-export table
                add(node.value, node.lineno)
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            prefix = str(node.values[0].value).rstrip(".")  # f"taylorglo_tf.commands.{name}"
            if prefix in MODULES and prefix.split(".")[0] != prefix:
                add(prefix, node.lineno)
    return found


#: (module, target) imports allowed upward: the package's lazy export of ``LossSearch``
#: (``taylorglo_tf.LossSearch``, the public name), loaded only when a script uses it.
LAZY_ENTRY_POINTS = {("taylorglo_tf", "taylorglo_tf.search")}


def _parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def upward_imports(module: str, source: str, where: str, *, is_package: bool = False) -> list[str]:
    """One line per import of ``module`` (whose text is ``source``, file ``where``) that breaks :data:`LAYERS`."""
    layer, unit = place(module)
    wrong = []
    for target, line in sorted(imports_of(module, source, is_package=is_package)):
        if target in _parents(module) or (module, target) in LAZY_ENTRY_POINTS:  # __init__ runs first anyway
            continue
        target_layer, target_unit = place(target)
        if target_layer < layer:
            wrong.append(
                f"{where}:{line}: {module} ({LAYERS[layer][0]}) imports "
                f"{target} ({LAYERS[target_layer][0]}), a higher layer"
            )
        elif target_layer == layer and target_unit != unit:
            wrong.append(f"{where}:{line}: {module} imports {target}, another unit of the {LAYERS[layer][0]} layer")
    return wrong


def test_every_module_is_in_a_layer():
    assert len(MODULES) > 50
    for module in MODULES:
        place(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer_or_another_unit_of_its_own(module):
    path = MODULES[module]
    source = path.read_text(encoding="utf-8")
    assert upward_imports(module, source, str(path.relative_to(ROOT)), is_package=path.name == "__init__.py") == []


def test_imports_inside_functions_relative_ones_and_importlib_names_all_count():
    source = (
        "import importlib\n"
        "def later(name):\n"
        "    from taylorglo_tf.commands import client\n"
        "    from ..commands.run import run\n"
        "    importlib.import_module('taylorglo_tf.coordinator.server')\n"
        "    importlib.import_module(f'taylorglo_tf.commands.{name}')\n"
    )
    found = {target for target, _ in imports_of("taylorglo_tf.training.later", source)}
    assert found == {
        "taylorglo_tf.commands.client",
        "taylorglo_tf.commands.run",
        "taylorglo_tf.coordinator.server",
        "taylorglo_tf.commands",
    }


def test_an_upward_import_and_a_sibling_service_import_are_reported_by_file_and_line():
    lazy = "def f():\n    from taylorglo_tf.trainer.worker import Worker\n"
    assert upward_imports("taylorglo_tf.fake", lazy, "taylorglo_tf/fake.py") == [
        "taylorglo_tf/fake.py:2: taylorglo_tf.fake (library) imports taylorglo_tf.trainer.worker (services), a higher "
        "layer"
    ]
    assert upward_imports(
        "taylorglo_tf.coordinator.fake", "import taylorglo_tf.trainer.worker\n", "coordinator/fake.py"
    ) == [
        "coordinator/fake.py:1: taylorglo_tf.coordinator.fake imports taylorglo_tf.trainer.worker, another unit of the "
        "services layer"
    ]
    assert upward_imports("taylorglo_tf.data.fake", "from taylorglo_tf import spec\n", "d.py") == [
        "d.py:1: taylorglo_tf.data.fake (data, models, protos) imports taylorglo_tf.spec (library), a higher layer"
    ]
    assert (
        upward_imports("taylorglo_tf.commands.fake", "import taylorglo_tf.coordinator.server\n", "c.py") == []
    )  # downward
