"""SIGTERM and Ctrl-C during training: stop cleanly at the next step boundary, never mid-write.

While :func:`stop_on_signals` is active (``train()`` holds it), SIGINT and SIGTERM only set a
flag and print one line; the training loop looks at :func:`stop_requested` before every
optimizer step and raises :class:`Interrupted` there. So a signal never lands inside a
checkpoint or metrics write, the last checkpoint stays the newest complete one, and the
message says how to continue (``cnnlab train --resume RUN``). A second Ctrl-C stops at
once (a plain KeyboardInterrupt; atomic writes still leave no torn file). The CLI exits
with 128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM (the shell convention).

Handlers can only be installed from the main thread; elsewhere (a study's worker thread)
this is a no-op and the default behaviour applies.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_requested: list[int] = []  # signal numbers received while active (process-wide, as signals are)
_active = 0


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal; ``exit_code`` is 128 + its number. Not a CnnlabError: a study
    stops with it instead of going on to its next run."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def _handle(signum: int, frame) -> None:
    if signum == signal.SIGINT and _requested:  # asked twice: stop now
        raise KeyboardInterrupt
    _requested.append(signum)
    print(f"cnnlab: {signal.Signals(signum).name} received: stopping at the next step boundary"
          f"{' (Ctrl-C again to stop at once)' if signum == signal.SIGINT else ''}", file=sys.stderr, flush=True)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Defer SIGINT/SIGTERM to step boundaries while the block runs (nested uses are fine)."""
    global _active
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _handle) for s in (signal.SIGINT, signal.SIGTERM)}
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        for s, h in old.items():
            signal.signal(s, h)
        if not _active:
            _requested.clear()


def stop_requested() -> int | None:
    """The first signal received while active, or ``None``."""
    return _requested[0] if _requested else None


def interrupted(where: str, resume_hint: str) -> Interrupted:
    """The exception to raise once the loop has stopped: what happened, what is kept, how to go on."""
    signum = stop_requested() or signal.SIGINT
    return Interrupted(f"stopped by {signal.Signals(signum).name} {where}; continue with: {resume_hint}", signum)
