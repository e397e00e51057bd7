"""The ``taylorglo`` dispatch: every subcommand's module states how it is called, nothing is guessed."""

from __future__ import annotations

import argparse
import importlib
import inspect
from pathlib import Path

import pytest

from taylorglo_tf import cli, limits
from taylorglo_tf.commands import arguments

PACKAGE = Path(__file__).resolve().parents[2] / "taylorglo_tf"


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_module_takes_the_arguments_its_table_entry_declares(name):
    command = cli.COMMANDS[name]
    module = importlib.import_module(f"taylorglo_tf.commands.{command.module}")
    parameters = list(inspect.signature(module.add_arguments).parameters)
    assert len(parameters) == (2 if command.shared else 1), (name, parameters)
    assert callable(module.run)


def test_a_shared_module_builds_each_of_its_subcommands_own_parser():
    parser = cli.build_parser()
    assert parser.parse_args(["status"]).experiment_id is None  # status lists all without an id
    assert parser.parse_args(["result", "e1", "--out", "d"]).out == "d"
    with pytest.raises(SystemExit):
        parser.parse_args(["status", "e1", "--out", "d"])  # --out is result's only


def test_the_dispatch_does_not_introspect_code_objects():
    for path in [PACKAGE / "cli.py", *sorted((PACKAGE / "commands").glob("*.py"))]:
        assert "__code__" not in path.read_text(), path


def test_auto_or_a_positive_integer():
    assert arguments.positive_int_or_auto("auto") == "auto"
    assert arguments.positive_int_or_auto("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="must be >= 1, got 0"):
        arguments.positive_int_or_auto("0")
    with pytest.raises(ValueError):
        arguments.positive_int_or_auto("many")


def _every_parser(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                yield from _every_parser(subparser)


def test_no_parser_accepts_abbreviated_options():
    """An abbreviation (``--gpu`` for ``--gpus``) escapes code that looks for the full spelling."""
    parsers = list(_every_parser(cli.build_parser()))
    assert len(parsers) == len(cli.COMMANDS) + 1
    assert [p.prog for p in parsers if p.allow_abbrev] == []


def test_the_standalone_compare_parser_accepts_no_abbreviations(capsys):
    from taylorglo_tf.commands import compare

    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--loss", "cross_entropy", "--run", "3"])  # --runs abbreviated
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --run" in capsys.readouterr().err


BAD_INPUT = {
    "run": ["run", "{tmp}/missing.yaml"],
    "coordinator": ["coordinator", "--trainer-token-file", "{tmp}/missing"],
    "trainer": ["trainer", "--token-file", "{tmp}/missing", "--evaluator", "synthetic"],
    "submit": ["submit", "{tmp}/missing.yaml"],
    "status": ["status", "--token-file", "{tmp}/missing"],
    "trainers": ["trainers", "--token-file", "{tmp}/missing"],
    "watch": ["watch", "e1", "--token-file", "{tmp}/missing"],
    "result": ["result", "e1", "--out", "{tmp}/out", "--token-file", "{tmp}/missing"],
    "cancel": ["cancel", "e1", "--token-file", "{tmp}/missing"],
    "delete": ["delete", "e1", "--token-file", "{tmp}/missing"],
    "compare": ["compare", "--loss", "cross_entropy", "--task", "{tmp}/missing.yaml"],
    "plot": ["plot", "{tmp}/missing.json"],
}


def test_every_command_has_a_bad_input_case_below():
    assert sorted(BAD_INPUT) == sorted(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(BAD_INPUT))
def test_bad_input_exits_2_with_one_error_line_naming_the_command(name, tmp_path, capsys):
    """A missing file an argument names is bad input, as argparse's own refusals: status 2, ``error:``."""
    code = cli.main([arg.replace("{tmp}", str(tmp_path)) for arg in BAD_INPUT[name]])
    err = capsys.readouterr().err
    assert code == arguments.EXIT_BAD_INPUT, err
    assert f"taylorglo {name}: error: " in err and "missing" in err, err


def test_a_bad_argument_gets_the_same_status_and_prefix_from_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["coordinator", "--grace", "-1"])
    assert exit_info.value.code == arguments.EXIT_BAD_INPUT
    assert "taylorglo coordinator: error: argument --grace: must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["coordinator", "run"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5", "0", "0.5", "1e9", "many"])
def test_a_lease_ttl_that_is_not_a_bounded_number_of_seconds_is_refused_naming_it(command, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args([command, f"--lease-ttl={value}"])
    assert exit_info.value.code == arguments.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"taylorglo {command}: error: argument --lease-ttl: " in err and value in err, err


@pytest.mark.parametrize("command", ["coordinator", "run"])
def test_lease_ttls_at_the_bounds_are_accepted(command):
    for value in (limits.MIN_LEASE_TTL_S, limits.MAX_LEASE_TTL_S):
        assert cli.build_parser().parse_args([command, "--lease-ttl", f"{value:g}"]).lease_ttl == value


@pytest.mark.parametrize("value", ["-1", str(limits.MAX_WAIT_MS + 1)])
def test_a_lease_wait_outside_what_the_coordinator_allows_is_refused_by_the_parser(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["trainer", f"--wait-ms={value}"])
    assert exit_info.value.code == arguments.EXIT_BAD_INPUT
    assert "taylorglo trainer: error: argument --wait-ms: must be " in capsys.readouterr().err


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_no_numeric_option_of_any_command_accepts_nan(capsys):
    """A NaN compares False with every bound, so an option typed as a bare float would let it through."""
    for name, sub in _subparsers(cli.build_parser()):
        for action in sub._actions:
            if not action.option_strings or not callable(action.type) or action.type in (str, Path):
                continue
            try:
                action.type("nan")
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                continue
            pytest.fail(f"taylorglo {name} {action.option_strings[0]} accepts nan")
