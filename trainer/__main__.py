"""``python -m trainer``: the same as ``taylorglo trainer``."""

import argparse
import sys

from taylorglo_tf.commands import trainer as command


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=command.__doc__.splitlines()[0])
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
