"""Downloading dataset files safely: mirrors, checksums, atomic writes, safe tar extraction.

A dataset file lands in the cache only after its size and md5 match the
published values, so everything under the cache can be trusted later (the CIFAR
loader unpickles it). Downloads stream into a temporary file next to the
destination and are renamed into place, so an interrupted download never leaves
a half-written file under the real name. When no mirror can be reached the error
says which files to fetch by hand and where to put them.

Each dataset module describes its files as :class:`Resource` objects in a
module-level dict (``idx.RESOURCES``, ``cifar.RESOURCES``) that tests can
monkeypatch. ``$CNNLAB_MIRROR`` (e.g. ``http://mirror.local/cnnlab``) adds a
mirror tried before the official URLs, laid out as ``<mirror>/<dataset>/<file>``.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

from tqdm import tqdm

from ..errors import CnnlabError
from ..files import atomic_path
from .base import default_cache_dir

TIMEOUT_S = 30.0  # per connection attempt and per read: a stalled mirror fails over instead of hanging
CHUNK = 1 << 20
MIRROR_ENV = "CNNLAB_MIRROR"


@dataclass(frozen=True)
class Resource:
    """One published file: its name, checksum, size in bytes (None = unknown) and URLs tried in order."""

    filename: str
    md5: str
    size: int | None
    urls: tuple[str, ...]


class DownloadError(CnnlabError):
    """No URL could be reached (network problem, not a bad file); callers add where to put the file."""


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_md5(path: Path, md5: str) -> None:
    """Raise a CnnlabError naming ``path`` unless its md5 is ``md5``."""
    actual = md5sum(path)
    if actual != md5:
        raise CnnlabError(f"{path}: md5 checksum mismatch (expected {md5}, got {actual}); "
                          "the file is corrupt or not the official one: delete it and download it again")


def resource_urls(dataset: str, resource: Resource) -> list[str]:
    """The URLs to try for a resource: ``$CNNLAB_MIRROR/<dataset>/<file>`` first when set, then the official ones."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    urls = [f"{mirror.rstrip('/')}/{dataset}/{resource.filename}"] if mirror else []
    return urls + list(resource.urls)


def download_file(urls: str | Sequence[str], dest: Path, md5: str, size: int | None = None,
                  timeout: float = TIMEOUT_S) -> Path:
    """Download the first URL that works to ``dest``, verified against ``md5`` and ``size``.

    Streams into a temporary file in ``dest``'s folder and renames it into place
    only after the checks pass. A file that fails the checks is deleted and the
    next URL is tried; when all fail, a checksum failure raises CnnlabError and
    pure network failures raise :class:`DownloadError`.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    network_errors: list[str] = []
    bad_file: str | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(dest.parent, os.W_OK)
    except OSError as e:
        writable, why = False, str(e)
    if not writable:
        raise CnnlabError(f"cannot write to {dest.parent} ({locals().get('why', 'permission denied')}); "
                          f"set $CNNLAB_DATA to a writable folder")
    for url in urls:
        try:
            with atomic_path(dest) as tmp:  # a unique temporary name: parallel runs may download the same file
                with open(tmp, "wb") as out:
                    actual_md5, actual_size = _stream(url, out, dest.name, timeout)
                if (size is not None and actual_size != size) or actual_md5 != md5:
                    raise _FailedVerification(
                        f"{dest.name} downloaded from {url} failed verification: expected md5 {md5}"
                        f"{f' and {size} bytes' if size is not None else ''}, got md5 {actual_md5} "
                        f"and {actual_size} bytes; nothing was saved to {dest.parent}")
        except _FailedVerification as e:
            bad_file = str(e)
            continue
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # URLError/timeouts are OSErrors
            network_errors.append(f"{url}: {_reason(e)}")
            continue
        return dest
    if bad_file:
        raise CnnlabError(bad_file)
    raise DownloadError(f"could not download {dest.name} ({'; '.join(network_errors)})")


class _FailedVerification(Exception):
    """A download that arrived but does not match its checksum (the next mirror is tried)."""


def _reason(e: Exception) -> str:
    """'HTTP Error 404: Not Found' for HTTP errors, the underlying socket error for other URLErrors."""
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _stream(url: str, out: BinaryIO, label: str, timeout: float) -> tuple[str, int]:
    """Copy ``url`` into the open file ``out``; return its md5 and byte count."""
    h, n = hashlib.md5(), 0
    request = urllib.request.Request(url, headers={"User-Agent": "cnnlab"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = getattr(response, "length", None)  # None without Content-Length (and for file:// URLs)
        with tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False,
                  disable=not sys.stderr.isatty()) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                h.update(chunk)
                n += len(chunk)
                bar.update(len(chunk))
    return h.hexdigest(), n


def where_to_put(dataset: str, resources: Sequence[Resource], data_dir: Path | None) -> str:
    """The sentence telling a user which files to fetch by hand and which folders are searched."""
    names = ", ".join(r.filename for r in resources)
    origins = sorted({url.rsplit("/", 1)[0] + "/" for r in resources for url in r.urls[:1]})
    target = f"--data-dir {data_dir} (or {data_dir / dataset})" if data_dir else "--data-dir DIR"
    return (f"put {names} (from {', '.join(origins)}) into {target} "
            f"or into {default_cache_dir() / dataset}")


def fetch_resources(dataset: str, resources: Sequence[Resource], data_dir: Path | None) -> Path:
    """Download every resource missing from ``<cache>/<dataset>`` and return that folder.

    Files already there were verified when they were downloaded and are reused as they are.
    """
    cache = default_cache_dir() / dataset
    for r in resources:
        dest = cache / r.filename
        if dest.exists():
            continue
        try:
            download_file(resource_urls(dataset, r), dest, r.md5, r.size)
        except DownloadError as e:
            raise CnnlabError(f"{dataset}: the dataset could not be downloaded: {e}. To use it offline, "
                              f"{where_to_put(dataset, resources, data_dir)}") from e
    return cache


def safe_extract_tar(archive: Path, dest: Path) -> list[Path]:
    """Extract ``archive`` into ``dest`` refusing anything that could write outside it.

    Rejects absolute names, names that resolve outside ``dest``, symlinks,
    hardlinks and device/FIFO members (checked here, so the protection does not
    depend on the Python version; tarfile's ``data`` filter is applied on top when
    available). Everything is extracted into a hidden staging folder first and moved
    into ``dest`` only when the whole archive read cleanly, so a truncated or corrupt
    archive leaves nothing behind. Top-level entries replace same-named entries of
    ``dest``, which must therefore be a folder cnnlab owns (the cache).
    Returns the top-level paths created in ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    except OSError as e:
        raise CnnlabError(f"cannot extract {archive.name} into {dest} ({e}); set $CNNLAB_DATA to a writable "
                          "folder") from e
    root = os.path.realpath(staging)
    extract_kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    _check_member(archive, member, root)
                    tar.extract(member, staging, **extract_kwargs)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:  # gzip.BadGzipFile is an OSError
            if isinstance(e, getattr(tarfile, "FilterError", ())):  # the data filter caught what we did not
                raise CnnlabError(f"{archive}: refusing to extract it ({e}); the archive is unsafe") from e
            raise CnnlabError(f"{archive}: the archive is truncated or corrupt ({e}); delete it and "
                              "download it again") from e
        created = []
        for entry in sorted(staging.iterdir()):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
            created.append(target)
        return created
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_member(archive: Path, member: tarfile.TarInfo, root: str) -> None:
    name = member.name
    if name.startswith(("/", "\\")) or os.path.isabs(name):
        reason = "absolute path"
    elif member.issym() or member.islnk():
        reason = f"link to {member.linkname!r}"
    elif not (member.isfile() or member.isdir()):
        reason = "device, FIFO or other special file"
    elif os.path.commonpath([root, os.path.realpath(os.path.join(root, name))]) != root:
        reason = "path outside the destination folder"
    else:
        return
    raise CnnlabError(f"{archive}: refusing to extract member {name!r} ({reason}); the archive is unsafe")
