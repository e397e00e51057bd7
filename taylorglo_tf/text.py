"""User-provided text on a terminal: what counts as a control character, and how it is shown.

Names, dataset URIs, errors and ids come from whoever submitted or trained. A
terminal obeys ESC sequences, carriage returns and bidirectional overrides, and
shows nothing for zero-width and tag characters, so a name could rewrite the
screen, reorder itself or hide text. Experiment names may not hold
such characters (:func:`control_characters`); everything else is shown through
:func:`escape_controls`, which writes them as visible escapes (``\\x1b``).
"""

from __future__ import annotations

import unicodedata

# Line and paragraph separators (categories Zl, Zp): they move what a terminal shows.
_LAYOUT_CONTROLS = frozenset("\u2028\u2029")

# The format characters (category Cf) that are text: the joiners shape visible glyphs,
# ZWJ in emoji sequences (a family, a profession), ZWNJ in Persian and Indic words.
# Every other one hides or reorders text: bidirectional marks, embeddings, overrides
# and isolates (U+200E, U+200F, U+061C, U+202A-U+202E, U+2066-U+2069), ZWSP
# (U+200B), the word joiner (U+2060), the BOM (U+FEFF), the soft hyphen, invisible
# operators and tag characters (U+E0000-U+E007F, which can carry a hidden message;
# so subdivision flags such as Scotland's are refused too).
_TEXT_FORMAT_CHARACTERS = frozenset("\u200c\u200d")


def is_control(ch: str) -> bool:
    """True for what must not reach a terminal unescaped: C0/C1 controls (NUL, ESC, newline,
    DEL, ...), line/paragraph separators, and format characters that hide or reorder text
    (bidirectional controls, zero-width spaces, BOM, tag characters; every category Cf but
    the joiners ZWJ and ZWNJ)."""
    if ch in _LAYOUT_CONTROLS:
        return True
    category = unicodedata.category(ch)
    return category == "Cc" or (category == "Cf" and ch not in _TEXT_FORMAT_CHARACTERS)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"  # as Python writes them


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
