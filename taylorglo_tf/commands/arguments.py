"""Argument types, connection arguments, exit statuses and the error line that every command shares.

The client commands, ``taylorglo trainer``, ``taylorglo run``, ``taylorglo
coordinator`` and ``taylorglo compare`` take their argument types from here, so
a bound or an environment variable is stated once. No heavy imports.

Conventions of every command: bad input (an argument, or a file an argument
names: a spec, a token, a loss) exits with status 2, as argparse does for
what it refuses itself; any other failure exits with 1; Ctrl-C with 130. The
error goes to stderr as one line, ``taylorglo COMMAND: error: MESSAGE`` (the
form argparse uses), written by :func:`print_error`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

from taylorglo_tf import connection, limits
from taylorglo_tf.text import escape_controls

ADDRESS_ENV = "TAYLORGLO_COORDINATOR"
TOKEN_ENV = connection.TOKEN_ENV
DATA_DIR_ENV = "TAYLORGLO_DATA_DIR"

# Exit statuses: 2 is argparse's own for bad input; 130 is what shells report for Ctrl-C.
EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """A failure explained in one line for the user (exit status 1)."""


class BadInput(CommandError):
    """Bad input: an argument or a file it names (exit status 2, as argparse's own refusals)."""


def print_error(command: str, message: object) -> None:
    """Writes the one error line of every command: ``taylorglo COMMAND: error: MESSAGE`` on stderr, escaped."""
    print(f"taylorglo {command}: error: {escape_controls(str(message))}", file=sys.stderr, flush=True)


def _bounded(convert: Callable[[str], float], minimum: float, maximum: float | None = None) -> Callable[[str], float]:
    def parse(text: str):
        value = convert(text)
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {text}")
        return value

    parse.__name__ = convert.__name__  # argparse names the type in "invalid int value" messages
    return parse


def finite_float(text: str) -> float:
    """A float option whose range the value's own check states (``Task``'s): NaN and infinities are refused here."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


finite_float.__name__ = "float"  # argparse names the type in "invalid float value" messages

positive_int = _bounded(int, 1)
non_negative_int = _bounded(int, 0)
non_negative_float = _bounded(float, 0.0)
# --wait-ms: a lease call's long poll, as the coordinator bounds it.
wait_ms = _bounded(int, 0, limits.MAX_WAIT_MS)
# --lease-ttl: NaN, infinities, 0 and negative TTLs are refused by the parser.
lease_ttl = _bounded(float, limits.MIN_LEASE_TTL_S, limits.MAX_LEASE_TTL_S)


# Candidates one lease call may ask for (--candidates-per-step).
candidates_per_step = _bounded(int, 1, limits.MAX_LEASE_CANDIDATES)


def positive_int_or_auto(value: str):
    """``auto`` or a positive integer (``--trainers``)."""
    return value if value == "auto" else positive_int(value)


def candidates_per_step_or_auto(value: str):
    """``auto`` or a number of candidates per lease call, 1..``limits.MAX_LEASE_CANDIDATES``."""
    return value if value == "auto" else candidates_per_step(value)


# argparse names the type in its message: "invalid 'auto' or int value: 'x'"
positive_int_or_auto.__name__ = candidates_per_step_or_auto.__name__ = "'auto' or int"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--coordinator``, ``--token-file``, ``--tls-ca``, ``--tls-server-name``."""
    parser.add_argument(
        "--coordinator",
        default=os.environ.get(ADDRESS_ENV, connection.DEFAULT_ADDRESS),
        metavar="HOST:PORT",
        help=f"coordinator address (default: ${ADDRESS_ENV} or {connection.DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"file holding the bearer token (default: ${TOKEN_ENV})",
    )
    parser.add_argument("--tls-ca", metavar="PEM", help="CA certificate to trust; enables TLS")
    parser.add_argument(
        "--tls-server-name", metavar="NAME", help="host name to check the coordinator's certificate against"
    )


def open_channel(args: argparse.Namespace):
    """A ``grpc.Channel`` from the connection arguments; BadInput names a bad address or file."""
    try:
        token = connection.load_token(args.token_file, env=TOKEN_ENV)
        return connection.connect(
            args.coordinator, token=token, tls_ca=args.tls_ca, tls_server_name=args.tls_server_name
        )
    except ValueError as error:
        raise BadInput(str(error)) from None
