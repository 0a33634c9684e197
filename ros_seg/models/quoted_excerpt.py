"""Short, escaped excerpts of untrusted values for error messages.

An error about a file's content names what was wrong and where, and quotes at
most a few dozen characters of it with control characters escaped, so a message
never reproduces a file (a config whose `_base_` names /etc/shadow, a 4 MiB
string) or writes terminal control sequences.
"""
from __future__ import annotations

import reprlib
from typing import Any

EXCERPT_CHARS = 60

_REPR = reprlib.Repr()  # Python 3.11's Repr takes no arguments
_REPR.maxlevel = 2
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = EXCERPT_CHARS


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """An escaped repr of `value` of at most about `limit` characters: long strings and containers are cut (with
    '...') before they are turned into text, so a huge value costs no more than a small one."""
    text = _REPR.repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    # repr escapes strings, but other objects' reprs (a tensor's) may hold line breaks or control characters
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
