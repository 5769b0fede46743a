"""One exception type for every user-facing mistake, and the one "did you mean" helper.

Anything a user can cause (a bad flag, a missing file, an unknown model name,
a corrupt archive) raises :class:`CnnlabError` with a message that names the
file, field or flag and says what was expected. The CLI prints that message on
one line and exits with status 2; library callers can catch it like any
``ValueError``.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class CnnlabError(ValueError):
    """A problem with the user's input, data or configuration (not a bug)."""


def suggest(name: object, choices: Iterable[str], n: int = 1) -> str:
    """``"did you mean a, b?"`` naming the closest of ``choices`` to ``name``, or ``""`` when none is close.

    Every "unknown X" message in cnnlab (registry names, config keys, spec keys, metrics, options)
    uses this, so the hints read the same everywhere.
    """
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n)
    return f"did you mean {', '.join(close)}?" if close else ""


def unknown_names(names: Iterable[object], choices: Iterable[str], quote: bool = False) -> str:
    """``"a (did you mean b?), c"``: the unknown ``names`` for one error message, each with its hint."""
    choices = list(choices)
    shown = repr if quote else str
    return ", ".join(f"{shown(k)} ({hint})" if (hint := suggest(k, choices)) else shown(k) for k in names)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty
    (some libraries raise bare ``EOFError()``: an error message must never itself crash)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
