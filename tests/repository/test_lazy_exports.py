"""The lazily loaded public names: each resolves, and type checkers see each through a TYPE_CHECKING import."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["taylorglo_tf", "taylorglo_tf.data", "taylorglo_tf.training"]


def _type_checking_names(package: str) -> set[str]:
    """Names imported under ``if TYPE_CHECKING:`` in the package's ``__init__.py``."""
    path = ROOT / package.replace(".", "/") / "__init__.py"
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    names |= {alias.asname or alias.name for alias in statement.names}
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_lazy_name_is_imported_for_type_checkers(package):
    module = importlib.import_module(package)
    lazy = set(module._LAZY) | set(getattr(module, "_SUBMODULES", ()))
    assert lazy == _type_checking_names(package)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, name
