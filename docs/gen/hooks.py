"""MkDocs hooks: the generated reference pages (mkdocs.yml ``hooks:``).

The pages under ``reference/`` that :data:`GENERATED` names are written at every
build from the code and the protos (see the modules beside this one), never
stored, so they cannot fall behind what they describe.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))

import clidoc
import doctest_fences
import protodoc
import resultdoc

# page (relative to docs/) -> the function that writes it
GENERATED: dict[str, Callable[[], str]] = {
    "reference/cli.md": clidoc.page,
    "reference/spec.md": protodoc.spec_page,
    "reference/grpc.md": protodoc.grpc_page,
    "reference/result-folder.md": resultdoc.page,
}


@event_priority(100)  # before mkdocstrings reads the Markdown extensions
def on_config(config):
    config.markdown_extensions.append(doctest_fences.DoctestFences())
    return config


def on_files(files: Files, config) -> Files:
    for path, render in GENERATED.items():
        files.append(File.generated(config, path, content=render()))
    return files
