"""The command-line reference page, generated from the ``taylorglo`` argparse parsers.

:func:`page` builds the parser with :func:`taylorglo_tf.cli.build_parser`, the one
the ``taylorglo`` command parses with, so every command, flag, default and help
text on the page is the parser's own: a flag added to a command appears here at
the next build.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

USAGE_WIDTH = 88  # the page's usage blocks, whatever the terminal that builds the site


def page(parser: argparse.ArgumentParser | None = None) -> str:
    """The reference page of ``parser`` (default: the ``taylorglo`` command's)."""
    if parser is None:
        from taylorglo_tf import cli

        parser = cli.build_parser()
    lines = [
        "# Command line",
        "",
        f"Generated at build time from the argparse parsers of `{parser.prog}` "
        "(`taylorglo_tf.cli.build_parser`): what `taylorglo COMMAND --help` prints, as one page. "
        "No command accepts an abbreviated option.",
        "",
        _usage(parser),
        "",
    ]
    if parser.description:
        lines += [parser.description, ""]
    commands = dict(_subcommands(parser))
    help_of = _subcommand_help(parser)
    lines += ["| command | what it does |", "|---|---|"]
    for name in commands:
        lines.append(f"| [`{name}`](#{_anchor(name)}) | {_cell(help_of.get(name, ''))} |")
    lines.append("")
    for name, sub in commands.items():
        lines += [f"## `{sub.prog}` {{ #{_anchor(name)} }}", ""]
        if sub.description:
            lines += [sub.description, ""]
        lines += [_usage(sub), ""]
        lines += _arguments(sub)
    return "\n".join(lines)


def _anchor(name: str) -> str:
    return f"taylorglo-{name}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _subcommand_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                out[choice.dest] = choice.help or ""
    return out


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(prog=parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return "```text\n" + formatter.format_help().strip() + "\n```"


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    formatter = argparse.HelpFormatter(prog=parser.prog, width=USAGE_WIDTH)
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        rows.append(f"| {_names(action)} | {_cell(_help(formatter, action))} |")
    if not rows:
        return ["No arguments.", ""]
    return ["| argument | meaning |", "|---|---|", *rows, ""]


def _names(action: argparse.Action) -> str:
    if not action.option_strings:  # a positional argument
        return f"`{action.metavar or action.dest}`"
    takes_value = action.nargs != 0
    metavar = ""
    if takes_value:
        if action.choices is not None and action.metavar is None:
            metavar = " {" + ",".join(str(c) for c in action.choices) + "}"
        else:
            metavar = f" {action.metavar or action.dest.upper()}"
    return ", ".join(f"`{option}{metavar}`" for option in action.option_strings)


def _help(formatter: argparse.HelpFormatter, action: argparse.Action) -> str:
    text = formatter._expand_help(action) if action.help else ""
    # A default the help text does not state itself: shown as argparse's
    # ArgumentDefaultsHelpFormatter would (values that come from the environment are
    # stated in the help, so the page never shows the building machine's).
    if (
        "default" not in text.lower()
        and action.default not in (None, False, argparse.SUPPRESS)
        and action.nargs != 0
        and action.option_strings
    ):
        text = f"{text} (default: {action.default})".strip()
    return text
