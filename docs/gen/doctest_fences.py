"""A Markdown extension that shows docstring examples (``>>>`` sessions) as code.

The docstrings follow Keras's form: an ``Example:`` heading, then doctest
sessions as plain paragraphs, which Markdown would render as prose (and whose
``[...]`` outputs look like links). Each run of lines that starts with ``>>>``,
up to the next blank line, becomes a ``pycon`` code block.
"""

from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor

_FENCE = re.compile(r"^\s*(```|~~~)")


class _DoctestFences(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        in_fence = in_session = False
        for line in lines:
            if in_session and not line.strip():
                out.append("```")
                in_session = False
            if not in_session and _FENCE.match(line):
                in_fence = not in_fence
            elif not in_fence and not in_session and line.lstrip().startswith(">>>"):
                out += ["", "```pycon"]
                in_session = True
            out.append(line)
        if in_session:
            out.append("```")
        return out


class DoctestFences(Extension):
    def extendMarkdown(self, md) -> None:
        # Before the fenced-code preprocessor (priority 25) turns the new fences into code.
        md.preprocessors.register(_DoctestFences(md), "doctest_fences", 30)
