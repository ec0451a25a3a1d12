"""Short, safe excerpts of client values for error messages.

An error message quotes what the client sent so that the client learns what was wrong, but never
the whole value: a 2 MB request must not earn a 10 MB error reply, and a value nested 1000 deep
must not make ``repr()`` raise RecursionError. ``quote`` is bounded in depth, in elements and in
characters, and never raises.
"""

from __future__ import annotations

import reprlib
from typing import Any

DEFAULT_QUOTE_CHARS = 60

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxdict = 4
_REPR.maxlist = 6
_REPR.maxtuple = 6
_REPR.maxset = 4
_REPR.maxstring = 40
_REPR.maxlong = 40
_REPR.maxother = 40


def quote(value: Any, max_chars: int = DEFAULT_QUOTE_CHARS) -> str:
    """``repr(value)`` cut to at most ``max_chars`` characters (``...`` marks a cut)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a hostile __repr__ cannot come off the wire, but never fail an error path
        text = f"<{type(value).__name__}>"
    if len(text) > max_chars:
        text = text[: max(0, max_chars - 3)] + "..."
    return text
