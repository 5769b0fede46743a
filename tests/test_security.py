"""No code runs from any file cnnlab reads, and no name in a file writes outside its folder.

Hostile inputs: a pickle payload in a checkpoint or a CIFAR batch, YAML
tags that construct Python objects (config files, study specs, ``--set``), archive members that
climb out of the extraction folder, names that would climb out of a run or study folder, and a
decompression-bomb image. Each is refused with a CnnlabError and leaves no trace of running.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import pytest

from cnnlab.errors import CnnlabError


class Payload:
    """Unpickling this runs ``os.system`` (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_carrying_a_pickle_payload_is_refused_unrun(tmp_path):
    import torch

    from cnnlab.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "evil": Payload(marker)}, path)  # torch.save pickles any object
    with pytest.raises(CnnlabError, match="not a readable cnnlab checkpoint"):
        load_checkpoint(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload(marker)))  # a bare pickle, not even a zip
    with pytest.raises(CnnlabError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_a_cifar_batch_carrying_a_pickle_payload_is_refused_unrun(tmp_path):
    from cnnlab.data import cifar

    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}))
    with pytest.raises(CnnlabError, match="refusing to load"):
        cifar.read_pickle(path)  # the reader of every CIFAR file (tests/test_datasets_files.py: via load_dataset)
    assert not marker.exists()


TAGS = ["!!python/object/apply:os.system ['touch {m}']", "!!python/object/new:os.system ['touch {m}']",
        "!!python/name:os.system"]


@pytest.mark.parametrize("tag", TAGS)
def test_yaml_tags_that_construct_python_objects_are_refused(tmp_path, tag):
    from cnnlab import study
    from cnnlab.config import TrainConfig, parse_key_value

    marker = tmp_path / "pwned"
    value = tag.format(m=marker)
    config = tmp_path / "config.yaml"
    config.write_text(f"lr: {value}\n")
    with pytest.raises(CnnlabError, match="config.yaml"):
        TrainConfig.from_yaml(config)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: s\nbase:\n  lr: {value}\n")
    with pytest.raises(CnnlabError, match="spec.yaml"):
        study.load_spec(spec)
    with pytest.raises(CnnlabError):
        parse_key_value(f"lr={value}")
    assert not marker.exists()


def _tar(path: Path, members: list[tarfile.TarInfo]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    return m


@pytest.mark.parametrize("member", [
    _member("../escaped.txt"), _member("data/../../escaped.txt"), _member("/tmp/escaped-abs.txt"),
    _member("data/link", tarfile.SYMTYPE, "../../escaped.txt"), _member("data/hard", tarfile.LNKTYPE, "/etc/passwd"),
])
def test_archive_members_outside_the_destination_are_refused(tmp_path, member):
    from cnnlab.data.download import safe_extract_tar

    archive = tmp_path / "a.tar.gz"
    _tar(archive, [_member("data/ok.txt"), member])
    dest = tmp_path / "cache" / "dataset"
    with pytest.raises(CnnlabError, match="refusing to extract member"):
        safe_extract_tar(archive, dest)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "cache" / "escaped.txt").exists()
    assert os.listdir(dest) == []  # nothing half-extracted


@pytest.mark.parametrize("name", ["..", "../../etc", "a/../../b", ""])
def test_names_that_become_folders_cannot_climb_out(tmp_path, name):
    """Run names, study variant names and eval output names become paths: traversal is refused."""
    from cnnlab import study
    from cnnlab.config import TrainConfig
    from cnnlab.inference import eval_name

    with pytest.raises(CnnlabError):
        TrainConfig.from_dict({"name": name})
    try:  # a study variant's folder is its name made safe ("../x" -> ".._x"), or the name is refused
        folder = study.parse_spec({"variants": [{"name": name, "lr": 0.1}]}).variants[0].folder
        assert "/" not in folder and folder not in (".", "..", "")
    except CnnlabError:
        pass
    with pytest.raises(CnnlabError):
        eval_name(None, None, name)


def test_class_folder_names_stay_inside_the_dataset(tmp_path):
    """A class folder is a direct sub-folder; a link named like a class that points outside the root is
    read where it points, but a name never makes a path (classes are only labels and meta.json text)."""
    from PIL import Image

    from cnnlab.data.folder import load_folder

    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(2):
        Image.new("L", (8, 8), 200).save(outside / f"{i}.png")
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    for i in range(2):
        Image.new("L", (8, 8), 0).save(root / "a" / f"{i}.png")
    (root / "b..").symlink_to(outside)  # a class reached through a link: read as data, named by the link
    ds = load_folder(root, size=8)
    files = ds.extra["train_files"] + ds.extra["test_files"]
    assert ds.classes == ["a", "b.."] and len(files) == 4 and all(Path(f).is_relative_to(root) for f in files)


def _png_header(width: int, height: int) -> bytes:
    """A PNG's signature, header chunk (8-bit grey) and end: all Pillow reads before deciding the size."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def test_a_decompression_bomb_image_is_refused_without_decoding(tmp_path):
    from cnnlab.data.folder import load_image

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(40000, 40000))  # 1.6 gigapixels declared in 45 bytes
    with pytest.raises(CnnlabError, match="bomb.png: cannot read image.*DecompressionBomb"):
        load_image(path, 8, 1)
