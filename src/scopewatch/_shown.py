"""A short, printable ``repr`` for values from configuration, safe for one log line.

Configuration comes from users and files: a value may be a 1 MB string, a YAML alias bomb
whose full ``repr`` never ends, an object whose ``__repr__`` raises, or text with control
characters and undecodable bytes. :func:`shown` bounds all of that.
"""

from __future__ import annotations

import reprlib

LIMIT = 80
"""Characters a shown value takes at most."""

_repr = reprlib.Repr()
_repr.maxstring = LIMIT
_repr.maxother = LIMIT
_repr.maxlong = LIMIT
_repr.maxlevel = 2
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = _repr.maxfrozenset = 4


def printable(text: str, limit: int = LIMIT) -> str:
    """``text`` with non-printable characters escaped, cut to ``limit`` characters."""
    if not text.isprintable():
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def shown(value: object, limit: int = LIMIT) -> str:
    """A ``repr`` of ``value`` of at most ``limit`` printable characters; never raises."""
    try:
        text = _repr.repr(value)
    except Exception:  # reprlib guards instances, not every container walk
        text = f"<{type(value).__name__}>"
    return printable(text, limit)
