"""Atomic file writes: the one way cnnlab writes a file that must never be seen half-written.

Every checkpoint, metrics file, summary, plot, report and download goes to a temporary
file in the same folder, is flushed to disk, then renamed over the old file: a crash
never leaves a torn file in place of a good one, and readers see the old or the new.

The temporary file is created with mode 0o666 through ``os.open``, so the kernel applies
the process umask exactly as for a plain ``open(path, "w")`` (``tempfile.mkstemp`` would
make it private, 0o600, and reading the umask means briefly changing it for the whole
process, which is not thread-safe).
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def temp_path(path: str | Path) -> Path:
    """A fresh hidden name beside ``path`` (same folder, so the final rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``path``.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies, as for open()
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` (e.g. ``torch.save`` or ``fig.savefig``), then atomically rename to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
