"""The ``taylorglo`` command line.

Each subcommand lives in its own module under :mod:`taylorglo_tf.commands` and
exposes ``add_arguments(parser)`` and ``run(args) -> int``. Command modules must
not import TensorFlow at module level: ``taylorglo coordinator`` and
``taylorglo --help`` have to start fast on machines without it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

from taylorglo_tf import extras, runtime
from taylorglo_tf.commands.arguments import EXIT_ERROR, EXIT_INTERRUPTED, print_error


class Command(NamedTuple):
    """A subcommand: its module under :mod:`taylorglo_tf.commands` and its one-line help.

    ``shared``: the module serves several subcommands, so its ``add_arguments``
    takes the subcommand's name as a second argument.
    """

    module: str
    help: str
    shared: bool = False


COMMANDS: dict[str, Command] = {
    "run": Command("run", "all-in-one local search: coordinator + local trainers + result folder"),
    "coordinator": Command("coordinator", "start the gRPC coordinator (CMA-ES, persistence, leases)"),
    "trainer": Command("trainer", "start a trainer that leases candidates from a coordinator"),
    "submit": Command("client", "submit an experiment spec (YAML or JSON)", shared=True),
    "status": Command("client", "show one experiment or list all", shared=True),
    "trainers": Command("client", "list the trainers a coordinator has seen, and each search's pace", shared=True),
    "watch": Command("client", "follow an experiment's progress live", shared=True),
    "result": Command("client", "download an experiment's result folder", shared=True),
    "cancel": Command("client", "cancel an experiment", shared=True),
    "delete": Command("client", "delete a finished or cancelled experiment", shared=True),
    "compare": Command("compare", "train two losses N times and compare with a Welch t-test"),
    "plot": Command("plot", "plot a loss in the paper's binary-classification view"),
}


def _command_module(name: str):
    return importlib.import_module(f"taylorglo_tf.commands.{COMMANDS[name].module}")


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations anywhere: an abbreviated option (``--gpu`` for ``--gpus``) slips past
    # code that looks for the full spelling, and one added option can change what another means.
    parser = argparse.ArgumentParser(
        prog="taylorglo",
        description="Discover loss functions with TaylorGLO (CMA-ES over Taylor expansions).",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help, description=command.help, allow_abbrev=False)
        module = _command_module(name)
        if command.shared:
            module.add_arguments(command_parser, name)
        else:
            module.add_arguments(command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    runtime.set_tensorflow_defaults()  # before any command loads TensorFlow; inherited by the processes it starts
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # e.g. for trainer --gpus to start its children
    module = _command_module(args.command)
    try:
        with extras.needs(f"taylorglo {args.command}"):
            return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as error:
        if extras.install_hint(error.name or "") is None:
            raise
        print_error(args.command, error)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
