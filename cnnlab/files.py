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
import re
import secrets
import socket
import urllib.error
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import CnnlabError, first_line

# what temp_path() names look like: .<name>.<pid>.<8 hex>.tmp
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")
# the words serializers (torch.save, safetensors, Pillow) use when the disk refuses a write
# (torch's zip writer: "file write failed", or "inline_container.cc: unexpected pos" for a short write)
_IO_WORDS = re.compile(r"write|space|quota|too large|IoError|I/O|disk|inline_container", re.IGNORECASE)


def temp_path(path: str | Path) -> Path:
    """A fresh hidden name beside ``path`` (same folder, so the final rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _is_refused_write(e: BaseException) -> bool:
    """Whether the writer failed because the file system refused the write (not because, say, the network
    a download writer reads from did: urllib's errors are OSErrors too and keep their own messages)."""
    if isinstance(e, (urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror)):
        return False
    return isinstance(e, OSError) or (isinstance(e, RuntimeError) and bool(_IO_WORDS.search(str(e))))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``path``.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` is untouched. A refused
    write (disk full, file too large, permission, read-only file system) becomes one CnnlabError
    naming ``path``, whichever serializer met it (torch.save reports a full disk as a RuntimeError).
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies, as for open()
        mode = tmp.stat().st_mode & 0o7777
    except OSError as e:
        raise CnnlabError(f"{path}: cannot write ({e.strerror or first_line(e)})") from None
    try:
        yield tmp
        if tmp.stat().st_mode & 0o7777 != mode:  # a writer that recreated the file (safetensors makes it 0600)
            os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if _is_refused_write(e):
            if isinstance(e, OSError):
                reason = e.strerror or first_line(e)
            else:  # a serializer's wording (torch: "[enforce fail at inline_container.cc:672] . unexpected pos")
                detail = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?\s*", "", first_line(e))
                reason = f"the write failed or was cut short: {detail}; is the disk full?"
            raise CnnlabError(f"{path}: cannot write ({reason}); the previous {path.name}, if any, is "
                              "unchanged") from None
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


def clean_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writer is dead (a kill mid-write leaves one,
    up to a whole checkpoint in size); returns what was removed. A live writer's file is kept."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP_NAME.match(p.name)
        if m and p.is_file() and not _alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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
