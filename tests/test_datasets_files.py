"""File-based datasets (MNIST, Fashion-MNIST, CIFAR) against small files in the official formats.

Files are generated in tmp_path and served by a local HTTP server; the dataset
modules' RESOURCES are monkeypatched to point at it and $CNNLAB_DATA at a
temporary cache, so nothing touches the network or the user's cache.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import struct
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cnnlab.data import cifar, idx, load_dataset
from cnnlab.data.download import Resource, download_file, safe_extract_tar, verify_md5
from cnnlab.errors import CnnlabError

N_TRAIN, N_TEST = 50, 20


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_DATA", str(path))
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    return path


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/www that records the paths it was asked for."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{httpd.server_port}/", requests=requests)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def dead_url() -> str:
    """A URL on a port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def serve(server, monkeypatch, module, name: str, files: dict[str, bytes], urls_before: tuple[str, ...] = ()):
    """Put ``files`` on the server under <name>/ and point ``module.RESOURCES[name]`` at them."""
    (server.root / name).mkdir(exist_ok=True)
    resources = []
    for filename, data in files.items():
        (server.root / name / filename).write_bytes(data)
        urls = tuple(u + filename for u in urls_before) + (f"{server.url}{name}/{filename}",)
        resources.append(Resource(filename, md5_of(data), len(data), urls))
    monkeypatch.setitem(module.RESOURCES, name, resources if module is idx else resources[0])
    return resources


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


# ---------------------------------------------------------------- IDX files


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def make_idx(seed: int = 0) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """The four gzipped IDX files of a tiny MNIST-like dataset, and the arrays in them."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(N_TEST) % 10)[::-1].astype(np.uint8),
    }
    return {name: gzip.compress(idx_bytes(a), mtime=0) for name, a in arrays.items()}, arrays


def check_idx_dataset(ds, arrays, name="mnist"):
    assert ds.name == name
    assert ds.train_images.shape == (N_TRAIN, 1, 28, 28) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (N_TEST, 1, 28, 28)
    assert torch.equal(ds.train_images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte.gz"]))
    assert ds.train_labels.tolist() == arrays["train-labels-idx1-ubyte.gz"].tolist()
    assert ds.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte.gz"].tolist()
    assert ds.train_labels.dtype == torch.int64 and ds.num_classes == 10


def test_mnist_downloads_verifies_and_loads(cache, server, monkeypatch):
    files, arrays = make_idx()
    serve(server, monkeypatch, idx, "mnist", files)
    ds = load_dataset("mnist")
    check_idx_dataset(ds, arrays)
    assert ds.classes == [str(i) for i in range(10)] and ds.flip_ok is False
    assert abs(ds.mean[0] - arrays["train-images-idx3-ubyte.gz"].mean() / 255) < 1e-4
    assert leftovers(cache / "mnist") == sorted(files)  # verified files only, no temporary ones
    assert len(server.requests) == 4

    again = load_dataset("mnist")  # from the cache: no new request
    assert len(server.requests) == 4
    assert torch.equal(again.train_images, ds.train_images)


def test_fashion_mnist_classes_and_flip(cache, server, monkeypatch):
    files, arrays = make_idx(seed=1)
    serve(server, monkeypatch, idx, "fashion-mnist", files)
    ds = load_dataset("fashion-mnist")
    check_idx_dataset(ds, arrays, "fashion-mnist")
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and ds.flip_ok is True


def test_falls_back_to_the_next_mirror(cache, server, monkeypatch, dead_url):
    files, arrays = make_idx()
    serve(server, monkeypatch, idx, "mnist", files, urls_before=(dead_url,))
    check_idx_dataset(load_dataset("mnist"), arrays)


def test_cnnlab_mirror_is_tried_first(cache, server, monkeypatch, dead_url):
    files, arrays = make_idx()
    serve(server, monkeypatch, idx, "mnist", files)
    monkeypatch.setitem(idx.RESOURCES, "mnist",
                        [Resource(r.filename, r.md5, r.size, (dead_url + r.filename,)) for r in idx.RESOURCES["mnist"]])
    monkeypatch.setenv("CNNLAB_MIRROR", server.url)  # serves <mirror>/mnist/<file>
    check_idx_dataset(load_dataset("mnist"), arrays)
    assert sorted(server.requests) == sorted(f"/mnist/{f}" for f in files)


def test_wrong_md5_is_refused_and_nothing_is_kept(cache, server, monkeypatch):
    files, _ = make_idx()
    resources = serve(server, monkeypatch, idx, "mnist", files)
    resources[0] = Resource(resources[0].filename, "0" * 32, resources[0].size, resources[0].urls)
    monkeypatch.setitem(idx.RESOURCES, "mnist", resources)
    with pytest.raises(CnnlabError, match="md5") as err:
        load_dataset("mnist")
    assert "train-images-idx3-ubyte.gz" in str(err.value) and "0" * 32 in str(err.value)
    assert leftovers(cache / "mnist") == []


def test_wrong_size_is_refused(cache, server, monkeypatch, tmp_path):
    files, _ = make_idx()
    resources = serve(server, monkeypatch, idx, "mnist", files)
    r = resources[1]
    with pytest.raises(CnnlabError, match=f"{r.size + 1} bytes"):
        download_file(r.urls, tmp_path / "out" / r.filename, r.md5, r.size + 1)
    assert leftovers(tmp_path / "out") == []


def test_offline_error_says_where_to_put_the_files(cache, monkeypatch, dead_url, tmp_path):
    monkeypatch.setitem(idx.RESOURCES, "mnist", [Resource(r.filename, r.md5, r.size, (dead_url + r.filename,))
                                                  for r in idx.RESOURCES["mnist"]])
    with pytest.raises(CnnlabError) as err:
        load_dataset("mnist", data_dir=tmp_path / "mine")
    message = str(err.value)
    assert "could not be downloaded" in message
    for name in idx.FILES:
        assert name in message
    assert str(tmp_path / "mine") in message and str(cache / "mnist") in message
    assert leftovers(cache / "mnist") == []


def test_download_disabled_lists_missing_files(cache, tmp_path):
    with pytest.raises(CnnlabError, match="downloading is disabled") as err:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert all(name in str(err.value) for name in idx.FILES)


@pytest.mark.parametrize("form", ["gz", "raw", "subfolder"])
def test_loads_from_data_dir_without_network(cache, server, monkeypatch, tmp_path, form):
    files, arrays = make_idx()
    serve(server, monkeypatch, idx, "mnist", files)
    data_dir = tmp_path / "mine"
    folder = data_dir / "mnist" if form == "subfolder" else data_dir
    folder.mkdir(parents=True)
    for name, data in files.items():
        if form == "raw":
            (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
        else:
            (folder / name).write_bytes(data)
    check_idx_dataset(load_dataset("mnist", data_dir=data_dir, download=False), arrays)
    assert server.requests == []


def test_fashion_mnist_refuses_mnist_files(cache, server, monkeypatch, tmp_path):
    files, _ = make_idx()
    serve(server, monkeypatch, idx, "mnist", files)  # makes these files the "official" MNIST ones
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(CnnlabError, match="official mnist file"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("damage, expected", [
    (lambda b: b[: len(b) // 2], "corrupt or truncated"),  # truncated gzip stream
    (lambda b: gzip.compress(gzip.decompress(b)[:-100]), "truncated or corrupt"),  # valid gzip, short payload
    (lambda b: gzip.compress(b"\x00\x00\x0d\x03" + gzip.decompress(b)[4:]), "not an IDX file"),  # wrong type
])
def test_corrupt_idx_file_is_named(cache, tmp_path, damage, expected):
    files, _ = make_idx()
    files["train-images-idx3-ubyte.gz"] = damage(files["train-images-idx3-ubyte.gz"])
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(CnnlabError, match=expected) as err:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert "train-images-idx3-ubyte.gz" in str(err.value)


def test_mismatched_image_and_label_counts(cache, tmp_path):
    files, arrays = make_idx()
    files["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(arrays["t10k-labels-idx1-ubyte.gz"][:-1]))
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(CnnlabError, match="do not belong together"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------- CIFAR


class Py2Pickler(pickle._Pickler):
    """Writes pickles like the official CIFAR files, made by Python 2's cPickle.

    Strings become Python 2 byte strings (read back as bytes with
    encoding="bytes") and numpy globals get their numpy 1.x module names.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


CIFAR_PER_BATCH = 3


def make_cifar_folder(root: Path, name: str, seed: int = 0) -> dict:
    """An extracted CIFAR folder under ``root`` with a few images per batch; returns what is in it."""
    rng = np.random.default_rng(seed)
    layout = cifar.LAYOUTS[name]
    folder = root / layout.folder
    folder.mkdir(parents=True)
    contents = {}
    for filename in (*layout.train_files, layout.test_file):
        n = CIFAR_PER_BATCH
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"batch_label": b"batch",
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        if name == "cifar10":
            batch[b"labels"] = rng.integers(0, 10, n).tolist()
        else:
            batch[b"fine_labels"] = rng.integers(0, 100, n).tolist()
            batch[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
        (folder / filename).write_bytes(py2_pickle(batch))
        contents[filename] = batch
    meta = ({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": 10000}
            if name == "cifar10" else
            {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
             b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    (folder / layout.meta_file).write_bytes(py2_pickle(meta))
    return contents


def tar_gz(source: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source, arcname=arcname)
    return buffer.getvalue()


def make_cifar_tarball(tmp_path: Path, name: str) -> tuple[bytes, dict]:
    contents = make_cifar_folder(tmp_path / "src", name)
    folder = cifar.LAYOUTS[name].folder
    return tar_gz(tmp_path / "src" / folder, folder), contents


def check_cifar(ds, contents, name, label_key=b"labels"):
    layout = cifar.LAYOUTS[name]
    n_train = CIFAR_PER_BATCH * len(layout.train_files)
    assert ds.train_images.shape == (n_train, 3, 32, 32) and ds.test_images.shape == (CIFAR_PER_BATCH, 3, 32, 32)
    first = contents[layout.train_files[0]]
    assert torch.equal(ds.train_images[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)))
    assert ds.train_labels[:CIFAR_PER_BATCH].tolist() == first[label_key]
    assert ds.test_labels.tolist() == contents[layout.test_file][label_key]
    assert ds.flip_ok is True


def test_cifar10_downloads_extracts_and_loads(cache, server, monkeypatch):
    data, contents = make_cifar_tarball(server.root.parent, "cifar10")
    serve(server, monkeypatch, cifar, "cifar10", {"cifar-10-python.tar.gz": data})
    ds = load_dataset("cifar10")
    check_cifar(ds, contents, "cifar10")
    assert ds.classes == [f"c{i}" for i in range(10)]
    assert (cache / "cifar10" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not [p for p in (cache / "cifar10").iterdir() if p.name.startswith(".")]  # no staging left

    load_dataset("cifar10")  # from the extracted cache
    assert len(server.requests) == 1


@pytest.mark.parametrize("label_mode, key, n_classes", [("fine", b"fine_labels", 100),
                                                         ("coarse", b"coarse_labels", 20)])
def test_cifar100_label_modes(cache, server, monkeypatch, label_mode, key, n_classes):
    data, contents = make_cifar_tarball(server.root.parent, "cifar100")
    serve(server, monkeypatch, cifar, "cifar100", {"cifar-100-python.tar.gz": data})
    ds = load_dataset("cifar100", label_mode=label_mode)
    check_cifar(ds, contents, "cifar100", key)
    assert ds.num_classes == n_classes and ds.classes[1] == f"{label_mode}1"


def test_cifar_bad_label_mode(cache):
    with pytest.raises(CnnlabError, match="label_mode"):
        load_dataset("cifar100", label_mode="medium")


def test_cifar_extracted_folder_in_data_dir_needs_no_network(cache, tmp_path, monkeypatch, dead_url):
    contents = make_cifar_folder(tmp_path / "mine", "cifar10")
    monkeypatch.setitem(cifar.RESOURCES, "cifar10", Resource("cifar-10-python.tar.gz", "0" * 32, None, (dead_url,)))
    check_cifar(load_dataset("cifar10", data_dir=tmp_path / "mine", download=False), contents, "cifar10")
    # also when --data-dir is the batch folder itself
    check_cifar(load_dataset("cifar10", data_dir=tmp_path / "mine" / "cifar-10-batches-py"), contents, "cifar10")


def test_cifar_tarball_in_data_dir_is_checked_then_extracted_into_cache(cache, tmp_path, monkeypatch, dead_url):
    data, contents = make_cifar_tarball(tmp_path, "cifar10")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "cifar-10-python.tar.gz").write_bytes(data)
    monkeypatch.setitem(cifar.RESOURCES, "cifar10", Resource("cifar-10-python.tar.gz", md5_of(data), None, (dead_url,)))
    check_cifar(load_dataset("cifar10", data_dir=tmp_path / "mine", download=False), contents, "cifar10")
    assert (cache / "cifar10" / "cifar-10-batches-py").is_dir()
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["cifar-10-python.tar.gz"]

    monkeypatch.setitem(cifar.RESOURCES, "cifar10", Resource("cifar-10-python.tar.gz", "0" * 32, None, (dead_url,)))
    for p in (cache / "cifar10").iterdir():
        p.rename(tmp_path / p.name)  # empty the cache: the tarball is now checked again and fails
    with pytest.raises(CnnlabError, match="md5") as err:
        load_dataset("cifar10", data_dir=tmp_path / "mine", download=False)
    assert "cifar-10-python.tar.gz" in str(err.value)


def test_cifar_offline_error(cache, monkeypatch, dead_url):
    monkeypatch.setitem(cifar.RESOURCES, "cifar10", Resource("cifar-10-python.tar.gz", "0" * 32, None,
                                                             (dead_url + "cifar-10-python.tar.gz",)))
    with pytest.raises(CnnlabError, match="could not be downloaded") as err:
        load_dataset("cifar10")
    assert "cifar-10-python.tar.gz" in str(err.value) and str(cache / "cifar10") in str(err.value)


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(cache, tmp_path):
    make_cifar_folder(tmp_path / "mine", "cifar10")
    marker = tmp_path / "pwned"
    batch = tmp_path / "mine" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": []}))
    with pytest.raises(CnnlabError, match="refusing to load") as err:
        load_dataset("cifar10", data_dir=tmp_path / "mine", download=False)
    assert str(batch) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_modern_numpy_pickles(tmp_path, protocol):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": array, b"labels": [1, 2, 3], b"x": np.uint8(7)}, protocol=protocol)
                     if protocol > 2 else py2_pickle({b"data": array, b"labels": [1, 2, 3]}))
    batch = cifar.read_pickle(path)
    assert np.array_equal(batch[b"data"], array) and batch[b"labels"] == [1, 2, 3]


# ---------------------------------------------------------------- tar safety


def add_member(tar: tarfile.TarFile, name: str, type_=tarfile.REGTYPE, linkname: str = "", data: bytes = b"x"):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, linkname
    info.size = len(data) if type_ == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if type_ == tarfile.REGTYPE else None)


@pytest.mark.parametrize("name, type_, linkname, reason", [
    ("../escape.txt", tarfile.REGTYPE, "", "outside"),
    ("ok/../../escape.txt", tarfile.REGTYPE, "", "outside"),
    ("/tmp/cnnlab-absolute.txt", tarfile.REGTYPE, "", "absolute"),
    ("folder/link", tarfile.SYMTYPE, "/etc/passwd", "link"),
    ("folder/hard", tarfile.LNKTYPE, "folder/good.txt", "link"),
    ("folder/dev", tarfile.CHRTYPE, "", "device"),
    ("folder/fifo", tarfile.FIFOTYPE, "", "FIFO"),
])
def test_unsafe_tar_members_are_rejected(tmp_path, name, type_, linkname, reason):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, "folder/good.txt")
        add_member(tar, name, type_, linkname)
    dest = tmp_path / "dest"
    with pytest.raises(CnnlabError, match=reason) as err:
        safe_extract_tar(archive, dest)
    assert str(archive) in str(err.value) and repr(name) in str(err.value)
    assert leftovers(dest) == []  # not even the good member
    assert not (tmp_path / "escape.txt").exists()


def test_unsafe_tarball_via_download_is_rejected(cache, server, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        add_member(tar, "cifar-10-batches-py/../../../escape.txt")
    serve(server, monkeypatch, cifar, "cifar10", {"cifar-10-python.tar.gz": buffer.getvalue()})
    with pytest.raises(CnnlabError, match="refusing to extract"):
        load_dataset("cifar10")
    assert not (cache.parent / "escape.txt").exists()


def test_truncated_tar_is_reported_and_cleaned_up(tmp_path):
    data, _ = make_cifar_tarball(tmp_path, "cifar10")
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(data[: len(data) * 2 // 3])
    dest = tmp_path / "dest"
    with pytest.raises(CnnlabError, match="truncated or corrupt") as err:
        safe_extract_tar(archive, dest)
    assert str(archive) in str(err.value)
    assert leftovers(dest) == []


def test_safe_extract_replaces_a_stale_folder(tmp_path):
    data, _ = make_cifar_tarball(tmp_path, "cifar10")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(data)
    dest = tmp_path / "dest"
    (dest / "cifar-10-batches-py").mkdir(parents=True)
    (dest / "cifar-10-batches-py" / "stale").write_bytes(b"")
    assert safe_extract_tar(archive, dest) == [dest / "cifar-10-batches-py"]
    assert not (dest / "cifar-10-batches-py" / "stale").exists()
    assert (dest / "cifar-10-batches-py" / "test_batch").is_file()


def test_verify_md5(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    verify_md5(path, md5_of(b"hello"))
    with pytest.raises(CnnlabError, match="md5") as err:
        verify_md5(path, "0" * 32)
    assert str(path) in str(err.value) and md5_of(b"hello") in str(err.value)
