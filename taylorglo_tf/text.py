"""User-provided text on a terminal: what counts as a control character, and how it is shown.

Names, dataset URIs, errors and ids come from whoever submitted or trained. A
terminal obeys ESC sequences, carriage returns and bidirectional overrides, so
a name could rewrite the screen or hide itself. Experiment names may not hold
such characters (:func:`control_characters`); everything else is shown through
:func:`escape_controls`, which writes them as visible escapes (``\\x1b``).
"""

from __future__ import annotations

import unicodedata

# Unicode controls beyond category Cc that move or reorder what a terminal shows.
_LAYOUT_CONTROLS = frozenset(
    "\u2028\u2029"  # line and paragraph separators
    "\u202a\u202b\u202c\u202d\u202e"  # bidirectional embeddings and overrides
    "\u2066\u2067\u2068\u2069"  # bidirectional isolates
)


def is_control(ch: str) -> bool:
    """True for C0/C1 controls (NUL, ESC, newline, DEL, ...), line/paragraph separators and bidi controls."""
    return ch in _LAYOUT_CONTROLS or unicodedata.category(ch) == "Cc"


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def control_characters(text: str) -> list[str]:
    """The distinct control characters in ``text``, as escapes (``["\\\\x00", "\\\\x1b"]``), in order."""
    found: dict[str, None] = {}
    for ch in text:
        if is_control(ch):
            found.setdefault(_escape(ch))
    return list(found)


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as an escape; ``keep_newlines`` keeps ``\\n``
    (multi-line error text such as a traceback)."""
    if not any(is_control(ch) for ch in text):
        return text
    return "".join(_escape(ch) if is_control(ch) and not (keep_newlines and ch == "\n") else ch for ch in text)
