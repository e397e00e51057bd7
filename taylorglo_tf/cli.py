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
from typing import Sequence

# subcommand -> (module under taylorglo_tf.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "all-in-one local search: coordinator + local trainers + result folder"),
    "coordinator": ("coordinator", "start the gRPC coordinator (CMA-ES, persistence, leases)"),
    "trainer": ("trainer", "start a trainer that leases candidates from a coordinator"),
    "submit": ("client", "submit an experiment spec (YAML or JSON)"),
    "status": ("client", "show one experiment or list all"),
    "watch": ("client", "follow an experiment's progress live"),
    "result": ("client", "download an experiment's result folder"),
    "cancel": ("client", "cancel an experiment"),
    "delete": ("client", "delete a finished or cancelled experiment"),
    "compare": ("compare", "train two losses N times and compare with a Welch t-test"),
    "plot": ("plot", "plot a loss in the paper's binary-classification view"),
}


def _command_module(name: str):
    module_name, _ = COMMANDS[name]
    return importlib.import_module(f"taylorglo_tf.commands.{module_name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taylorglo",
        description="Discover loss functions with TaylorGLO (CMA-ES over Taylor expansions).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = _command_module(name)
        # Modules that serve several subcommands take the subcommand name.
        adder = module.add_arguments
        if adder.__code__.co_argcount == 2:
            adder(command_parser, name)
        else:
            adder(command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # e.g. for trainer --gpus to start its children
    module = _command_module(args.command)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
