"""One writer per run folder: a lock file holding the owner's PID.

Two ``cnnlab train`` processes given the same run folder (the same ``--name``, or ``--resume`` of a
run that is still training) would overwrite each other's checkpoint, metrics and config. The first
one to open the folder takes ``<run>/.lock``; the second is refused with the owner's PID.

The lock is an ``fcntl.flock`` on that file, held for the run's lifetime. The kernel drops it when
the owner exits, however it exits (SIGKILL, a power cut), so a lock file left behind by a dead
process is recognised as stale by the next opener, which takes it over: no manual clean-up, and no
guessing from PIDs, which the system reuses. The PID, host and start time written into the file
are for the message only.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from .errors import CnnlabError

LOCK = ".lock"


class RunLock:
    """An exclusive hold on one run folder (:meth:`acquire`), until :meth:`release` or process exit."""

    def __init__(self, folder: Path, fd: int, stale_owner: str | None):
        self.folder, self.path, self._fd = folder, folder / LOCK, fd
        self.stale_owner = stale_owner  # what a dead previous owner had written ("pid 123 on host"), if any

    @classmethod
    def acquire(cls, folder: str | Path) -> "RunLock":
        """Take ``folder``'s lock, or raise a CnnlabError naming the process that holds it."""
        folder = Path(folder)
        path = folder / LOCK
        for _ in range(10):  # retried only when the owner released (unlinked) the file under us
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as for every run file
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise CnnlabError(f"{folder}: run folder is in use by another cnnlab process ({owner}); wait for "
                                  f"it to finish, or choose another --name") from None
            except OSError as e:  # a file system without locks: refuse rather than write unguarded
                os.close(fd)
                raise CnnlabError(f"{path}: cannot lock the run folder ({e.strerror})") from None
            try:  # the file we locked must still be the one at `path` (not one a releasing owner unlinked)
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            stale = _read_owner(fd) or None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
            return cls(folder, fd, stale)
        raise CnnlabError(f"{path}: could not take the run folder's lock (it kept changing); try again")

    def release(self) -> None:
        """Remove the lock file and drop the lock (unlink first: a waiter then finds a fresh file)."""
        if self._fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


class RunGuard:
    """What one ``train()`` call holds on its run folder: the lock, and whether it created the folder.

    :meth:`open` checks ``--out`` before anything is built (a file, or a folder this user cannot
    write, is refused at once), creates the run folder, takes its lock and removes temporary files
    that a killed writer left behind (the lock says no other writer is live). :meth:`close` drops
    the lock; after a failed start it also removes the run folder it created when nothing was
    written into it, so a mistyped flag leaves no empty folder behind.
    """

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.lock: RunLock | None = None
        self.created = False

    def open(self, folder: str | Path, resume: bool) -> Path:
        from .files import clean_stale_temp_files

        folder = Path(folder)
        check_writable_parent(folder.parent)
        if folder.exists() and not folder.is_dir():
            raise CnnlabError(f"{folder}: exists and is not a folder; choose another --name")
        if not resume and folder.is_dir() and any(p.name != LOCK for p in folder.iterdir()):
            raise CnnlabError(f"{folder}: run folder already exists; continue it with --resume {folder} "
                              f"or choose another --name")
        try:
            folder.mkdir(parents=True)
            self.created = True
        except FileExistsError:
            pass
        except OSError as e:
            raise CnnlabError(f"{folder}: cannot create the run folder ({e.strerror})") from None
        self.folder = folder
        try:
            self.lock = RunLock.acquire(folder)
        except BaseException:
            self.close(failed=True)
            raise
        clean_stale_temp_files(folder)
        return folder

    def close(self, failed: bool = False) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if failed and self.created and self.folder is not None:
            try:
                self.folder.rmdir()  # only if empty: whatever was written stays
            except OSError:
                pass


def check_writable_parent(out: Path) -> None:
    """``--out``: a folder this process can create run folders in (created when missing), or a CnnlabError."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise CnnlabError(f"--out {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CnnlabError(f"--out {out}: {probe} is not writable by this user")
