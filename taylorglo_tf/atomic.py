"""Files written whole or not at all: the one atomic writer.

Everything the package writes for a user (result folders, loss JSON, comparison
JSON, the tuning cache) goes through here: the content is written to a
temporary file next to the target, then renamed over it (``os.replace``), so a
crash or a reader at the wrong moment never sees a truncated file, and two
processes writing the same file (one per GPU) never tear it. No heavy imports.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``path``, on error it is removed.

    The temporary name is hidden (a leading dot) and unique to the process and
    thread, so concurrent writers and globs over the folder never see it.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically; returns the path."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
