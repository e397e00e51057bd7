"""Runs a script or module with the code of a source tree (a checkout), not the installed package.

Installing the package maps the tree's ``coordinator/`` and ``trainer/`` folders to
``taylorglo_tf.coordinator`` and ``taylorglo_tf.trainer`` (pyproject.toml); a bare tree
does not. :func:`use` puts the tree first on ``sys.path`` and lets its ``taylorglo_tf``
find the two folders, so before/after benchmarks run each tree's own code:

    python benchmarks/checkout.py TREE -m taylorglo_tf coordinator --listen ...
    python benchmarks/checkout.py TREE benchmarks/lease_burst.py --_one 100
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def use(tree: str | Path) -> None:
    """Import ``taylorglo_tf`` (with its coordinator and trainer) from ``tree`` from now on."""
    root = str(Path(tree).resolve())
    sys.path.insert(0, root)
    import taylorglo_tf

    if root not in taylorglo_tf.__path__:
        taylorglo_tf.__path__.append(root)  # taylorglo_tf.coordinator -> TREE/coordinator


def main() -> None:
    tree, *command = sys.argv[1:]
    use(tree)
    if command[0] == "-m":
        sys.argv = [command[1], *command[2:]]
        runpy.run_module(command[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = command
        runpy.run_path(command[0], run_name="__main__")


if __name__ == "__main__":
    main()
