"""One home for each default and limit: a value written in two modules can drift.

Read from the source (``ast``; docstrings left out) of every module of the three
packages. Other modules import the value from its home.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from taylorglo_tf import connection, limits, spec, taylor
from taylorglo_tf.rpc import types_pb2

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    path
    for package in ("taylorglo_tf", "coordinator", "trainer")
    for path in (ROOT / package).rglob("*.py")
    if not path.name.endswith(("_pb2.py", "_pb2_grpc.py"))
)

#: value -> the one module that writes it
HOMES = {
    "127.0.0.1:50051": "taylorglo_tf/connection.py",  # the default coordinator address
    limits.MAX_WAIT_MS: "taylorglo_tf/limits.py",
    limits.MAX_ERROR_CHARS: "taylorglo_tf/limits.py",
    "TAYLORGLO_TOKEN": "taylorglo_tf/connection.py",
    "TAYLORGLO_COORDINATOR": "taylorglo_tf/commands/arguments.py",
    "TAYLORGLO_DATA_DIR": "taylorglo_tf/commands/arguments.py",
    0.15: "taylorglo_tf/training/task.py",  # the paper's abort threshold
    130: "taylorglo_tf/commands/arguments.py",  # the exit status of an interrupted command
    ("x", "y"): "taylorglo_tf/taylor.py",  # the paper's loss inputs
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _literals(tree: ast.AST):
    """(value, line) of every constant and every tuple of constants outside docstrings."""
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings and not isinstance(node.value, bool):
            yield node.value, node.lineno
        elif isinstance(node, ast.Tuple) and node.elts and all(isinstance(e, ast.Constant) for e in node.elts):
            yield tuple(e.value for e in node.elts), node.lineno


def where_written() -> dict[object, set[str]]:
    found: dict[object, set[str]] = defaultdict(set)
    for path in SOURCES:
        for value, line in _literals(ast.parse(path.read_text(encoding="utf-8"))):
            key = next((home for home in HOMES if type(home) is type(value) and home == value), None)
            if key is not None:
                found[key].add(f"{path.relative_to(ROOT)}:{line}")
    return found


@pytest.mark.parametrize("value", list(HOMES), ids=repr)
def test_each_default_and_limit_is_written_in_its_home_only(value):
    places = where_written()[value]
    assert {place.rsplit(":", 1)[0] for place in places} == {HOMES[value]}, sorted(places)


def test_an_upper_case_constant_gets_its_value_in_one_module_and_is_imported_elsewhere():
    valued: dict[str, set[str]] = defaultdict(set)
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        statements = list(tree.body) + [s for c in tree.body if isinstance(c, ast.ClassDef) for s in c.body]
        for statement in statements:
            if not isinstance(statement, (ast.Assign, ast.AnnAssign)) or statement.value is None:
                continue
            if isinstance(statement.value, (ast.Name, ast.Attribute)):
                continue  # an alias of a value defined elsewhere
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                for name in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(name, ast.Name) and name.id.isupper() and not name.id.startswith("_"):
                        valued[name.id].add(str(path.relative_to(ROOT)))
    assert {name: sorted(paths) for name, paths in valued.items() if len(paths) > 1} == {}


def test_the_loss_form_defaults_of_a_spec_are_the_loss_classes_defaults():
    from taylorglo_tf import results

    empty = types_pb2.ExperimentSpec()
    assert spec.loss_form(empty.loss) == results.loss_form(empty) == (taylor.DEFAULT_ORDER, taylor.DEFAULT_INPUTS)
    assert spec.loss_form(types_pb2.LossSpec(order=2, inputs=["x", "y", "t"])) == (2, ("x", "y", "t"))
    assert spec.apply_defaults(empty).loss.order == taylor.DEFAULT_ORDER


def test_the_standalone_health_check_uses_the_default_address():
    """docker/healthcheck.py imports nothing of the package (the image runs it bare): a test keeps it equal."""
    tree = ast.parse((ROOT / "docker" / "healthcheck.py").read_text(encoding="utf-8"))
    values = {
        target.id: statement.value.value
        for statement in tree.body
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
        for target in statement.targets
        if isinstance(target, ast.Name)
    }
    assert values["DEFAULT_ADDRESS"] == connection.DEFAULT_ADDRESS


def test_each_shutdown_grace_default_is_the_same_from_the_api_and_the_command_line():
    """A trainer's grace was 60 s from ``taylorglo trainer`` and 30 s from ``Worker``."""
    import inspect

    from taylorglo_tf import cli
    from taylorglo_tf.coordinator.server import CoordinatorServer
    from taylorglo_tf.trainer.worker import Worker

    parser = cli.build_parser()
    assert inspect.signature(Worker).parameters["grace_s"].default == limits.DEFAULT_TRAINER_GRACE_S
    assert parser.parse_args(["trainer"]).grace == limits.DEFAULT_TRAINER_GRACE_S
    assert inspect.signature(CoordinatorServer.stop).parameters["grace"].default == limits.DEFAULT_COORDINATOR_GRACE_S
    assert parser.parse_args(["coordinator"]).grace == limits.DEFAULT_COORDINATOR_GRACE_S


def _mentions_a_ttl(node: ast.AST) -> bool:
    return any(
        "ttl" in (n.id if isinstance(n, ast.Name) else n.attr).lower()
        for n in ast.walk(node)
        if isinstance(n, (ast.Name, ast.Attribute))
    )


def test_no_module_falls_back_to_a_ttl_of_its_own():
    """``ttl if ttl > 0 else 30.0`` was written twice in the worker: the assumed TTL has one home."""
    fallbacks = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.IfExp) and _mentions_a_ttl(node.test) and isinstance(node.orelse, ast.Constant):
                fallbacks.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            ttl_or_constant = (
                isinstance(node, ast.BoolOp)
                and isinstance(node.op, ast.Or)
                and _mentions_a_ttl(node.values[0])
                and isinstance(node.values[-1], ast.Constant)
            )
            if ttl_or_constant:
                fallbacks.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert fallbacks == []


@pytest.mark.parametrize(
    "message, default, maximum",
    [
        ("ListExperimentsRequest", limits.DEFAULT_LIST_PAGE_SIZE, limits.MAX_LIST_PAGE_SIZE),
        ("GetResultRequest", limits.DEFAULT_RESULT_PAGE_SIZE, limits.MAX_RESULT_PAGE_SIZE),
    ],
)
def test_the_page_sizes_the_proto_states_are_those_of_limits(message, default, maximum):
    text = (ROOT / "protos" / "taylorglo" / "v1" / "experiment_service.proto").read_text(encoding="utf-8")
    block = re.search(r"\nmessage " + message + r" \{\n(.*?)\n\}", text, re.S).group(1)
    stated = re.search(r"0\.\.(\d+); 0 = (\d+)\.", " ".join(line.strip("/ ") for line in block.splitlines()))
    assert (int(stated.group(2)), int(stated.group(1))) == (default, maximum)
