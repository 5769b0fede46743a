"""Atomic writes: the umask is honoured, a failed write keeps the old file, no temporary file is left."""
import os
import stat

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.files import (atomic_path, atomic_write, atomic_write_bytes, atomic_write_text, clean_stale_temp_files,
                          temp_path)

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")


@pytest.fixture
def umask():
    """Set the process umask for one test; the old one is always restored (it is process-wide)."""
    old = os.umask(0o022)
    os.umask(old)
    try:
        yield os.umask
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


WRITERS = {
    "text": lambda p: atomic_write_text(p, "hello"),
    "bytes": lambda p: atomic_write_bytes(p, b"\x00\x01"),
    # a writer that opens the path itself, as torch.save or fig.savefig do
    "callback": lambda p: atomic_write(p, lambda tmp: open(tmp, "wb").close()),
}


@posix_only
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_mode_follows_the_umask_as_for_open(tmp_path, umask, mask, mode, writer):
    umask(mask)
    target = tmp_path / "out.bin"
    WRITERS[writer](target)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    assert _mode(target) == _mode(plain) == mode


@posix_only
def test_overwriting_also_follows_the_umask(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o644


@pytest.mark.parametrize("error, raised", [(RuntimeError("disk full"), CnnlabError),
                                           (OSError(28, "No space left on device"), CnnlabError),
                                           (KeyboardInterrupt(), KeyboardInterrupt)])
def test_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path, error, raised):
    target = tmp_path / "checkpoint.pt"
    atomic_write_text(target, "old contents")

    def write(tmp):
        tmp.write_text("half a checkpo")
        raise error

    with pytest.raises(raised) as caught:
        atomic_write(target, write)
    if raised is CnnlabError:  # a refused write: one line naming the file, not the temp file
        assert str(caught.value).startswith(f"{target}: cannot write (")
    assert target.read_text() == "old contents"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]


def test_failing_first_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "new.txt") as tmp:
            tmp.write_text("partial")
            raise ValueError("bad value")
    assert os.listdir(tmp_path) == []


def test_repeated_writes_leave_no_hidden_temp_files(tmp_path):
    target = tmp_path / "metrics.jsonl"
    for i in range(5):
        atomic_write_text(target, f"{i}\n")
    atomic_write_bytes(tmp_path / "model.safetensors", b"w")
    assert target.read_text() == "4\n"
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "model.safetensors"]


def test_missing_parent_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    atomic_write_text(target, "x")
    assert target.read_text() == "x" and os.listdir(target.parent) == ["c.txt"]


def test_temp_path_is_hidden_unique_and_beside_the_target(tmp_path):
    target = tmp_path / "summary.json"
    a, b = temp_path(target), temp_path(target)
    assert a != b
    assert a.parent == b.parent == tmp_path
    assert a.name.startswith(".summary.json.") and a.name.endswith(".tmp")


def test_the_temp_file_is_not_the_target_until_the_end(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.exists() and tmp.read_bytes() == b""  # created up front (with the umask applied)
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new" and not tmp.exists()


def test_stale_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".checkpoint.pt.{dead.pid}.0123abcd.tmp"
    live = tmp_path / f".metrics.jsonl.{os.getpid()}.89abcdef.tmp"
    keep = tmp_path / ".notes.tmp"  # not a name cnnlab makes
    for p in (stale, live, keep):
        p.write_text("x")
    assert clean_stale_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, keep.name])
