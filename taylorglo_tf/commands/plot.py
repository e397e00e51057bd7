"""``taylorglo plot LOSS.json [...] [--out FILE.png]``: the paper's binary-classification view of losses."""

from __future__ import annotations

import argparse
from pathlib import Path

from taylorglo_tf.commands.arguments import EXIT_BAD_INPUT, EXIT_OK, print_error
from taylorglo_tf.commands.quiet import import_tensorflow_quietly


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "losses",
        nargs="+",
        metavar="LOSS",
        help="loss JSON file(s) (as written by losses.save_json or a search result) "
        "or names: cross_entropy, baikal, poly1",
    )
    parser.add_argument("--out", type=Path, default=None, help="image file to write (default: first LOSS with .png)")
    parser.add_argument("--title", default=None, help="figure title")


def run(args: argparse.Namespace) -> int:
    if not all(name.endswith(".json") for name in args.losses):
        # Baseline names load Keras; keep TensorFlow's start-up lines off the terminal.
        import_tensorflow_quietly()
    from taylorglo_tf import plotting  # matplotlib only when the command runs

    first = Path(args.losses[0])
    out = args.out or (first.with_suffix(".png") if first.suffix == ".json" else Path("loss.png"))
    try:
        path = plotting.plot_loss(list(args.losses), out, title=args.title)
    except (ValueError, OSError) as exc:  # a loss file that is missing or not a loss
        print_error("plot", exc)
        return EXIT_BAD_INPUT
    print(path)
    return EXIT_OK
