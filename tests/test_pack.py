"""cnnlab pack: shards round-trip byte-exact, checksums name a bad shard, packing resumes, nothing half-written."""
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import pack as pack_module
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.data.shards import MANIFEST, read_manifest, verify_shards
from cnnlab.errors import CnnlabError
from cnnlab.pack import PARTIAL, iter_unpacked, pack

QUIET = {"log": lambda s: None}


def pairs(x: torch.Tensor, y: torch.Tensor) -> list:
    """Images with their labels as a sorted list: shards are shuffled, so compare as multisets."""
    return sorted((bytes(xi.flatten().tolist()), int(yi)) for xi, yi in zip(x, y))


def make_folder(root, size=(12, 12), per_class=6, classes=("ant", "bee", "cat"), ext="png"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(root / c / f"{i}.{ext}")
    return root


def test_builtin_dataset_round_trip_is_byte_exact(tmp_path):
    manifest = pack("synthetic", tmp_path / "s", shard_size_mb=0.05, **QUIET)
    source, packed = load_dataset("synthetic"), load_dataset("shards", tmp_path / "s")
    assert pairs(source.train_images, source.train_labels) == pairs(packed.train_images, packed.train_labels)
    assert pairs(source.test_images, source.test_labels) == pairs(packed.test_images, packed.test_labels)
    assert packed.classes == source.classes and manifest["channels"] == 1 and manifest["image_size"] == 16
    train = manifest["splits"]["train"]
    assert len(train["shards"]) > 1 and train["count"] == 512 and sum(train["class_counts"]) == 512
    assert all(len(e["sha256"]) == 64 for e in train["shards"])
    # the layout is WebDataset's: <key>.png + <key>.cls members, adjacent
    with tarfile.open(tmp_path / "s" / train["shards"][0]["name"]) as tar:
        names = tar.getnames()
    assert names[0].endswith(".png") and names[1] == names[0].replace(".png", ".cls")


def test_folder_round_trip_at_its_own_size_matches_the_folder_dataset(tmp_path):
    root = make_folder(tmp_path / "imgs")
    pack(root, tmp_path / "p", image_size=12, **QUIET)
    folder, packed = load_dataset("folder", root, size=12), load_dataset("shards", tmp_path / "p")
    assert packed.classes == ["ant", "bee", "cat"]
    assert pairs(folder.train_images, folder.train_labels) == pairs(packed.train_images, packed.train_labels)
    assert pairs(folder.test_images, folder.test_labels) == pairs(packed.test_images, packed.test_labels)


def test_keep_size_stores_the_files_untouched_and_skips_unreadable_ones(tmp_path):
    root = make_folder(tmp_path / "imgs", size=(10, 14), ext="jpg")
    (root / "ant" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        manifest = pack(root, tmp_path / "p", keep_size=True, **QUIET)
    stored = sorted(data for split in ("train", "test") for _, ext, data, _ in iter_unpacked(tmp_path / "p", split))
    originals = sorted(p.read_bytes() for p in root.rglob("*.jpg") if p.name != "broken.jpg")
    assert stored == originals
    assert manifest["image_size"] is None and any("broken.jpg" in s for s in manifest["skipped"])


def test_a_bad_checksum_is_reported_by_shard_name(tmp_path, capsys):
    pack("synthetic", tmp_path / "s", shard_size_mb=0.3, **QUIET)
    manifest = read_manifest(tmp_path / "s")
    assert verify_shards(tmp_path / "s") > 0
    bad = tmp_path / "s" / manifest["splits"]["train"]["shards"][1]["name"]
    data = bytearray(bad.read_bytes())
    data[700] ^= 0xFF  # same size: only the checksum can tell
    bad.write_bytes(bytes(data))
    with pytest.raises(CnnlabError, match=rf"{bad.name}: bad checksum"):
        verify_shards(tmp_path / "s")
    assert main(["pack", str(tmp_path / "s"), "--verify"]) == 2
    assert bad.name in capsys.readouterr().err
    bad.write_bytes(bytes(data[:-512]))  # truncated: found without reading every shard
    with pytest.raises(CnnlabError, match=rf"{bad.name}: shard is .* bytes, the manifest says"):
        read_manifest(tmp_path / "s")


def test_an_interrupted_pack_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    whole = pack("synthetic", tmp_path / "whole", shard_size_mb=0.1, **QUIET)
    real, calls = pack_module.write_shard, []

    def dies_on_the_fourth(path, samples):
        calls.append(path)
        if len(calls) == 4:
            list(samples)
            raise KeyboardInterrupt  # a kill mid-shard
        return real(path, samples)

    monkeypatch.setattr(pack_module, "write_shard", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        pack("synthetic", tmp_path / "cut", shard_size_mb=0.1, **QUIET)
    cut = tmp_path / "cut"
    assert not (cut / MANIFEST).exists() and (cut / PARTIAL).exists()
    assert sorted(p.name for p in cut.glob("*.tar")) == [p.name for p in calls[:3]]  # no half-written shard
    with pytest.raises(CnnlabError, match="not a packed dataset.*run the same `cnnlab pack` again"):
        read_manifest(cut)
    with pytest.raises(CnnlabError, match="other options"):
        pack("synthetic", cut, shard_size_mb=0.5, **QUIET)
    monkeypatch.setattr(pack_module, "write_shard", real)
    resumed = pack("synthetic", cut, shard_size_mb=0.1, **QUIET)
    assert resumed["splits"] == whole["splits"]  # the same shards, byte for byte (sha256)
    assert not (cut / PARTIAL).exists() and not list(cut.glob(".*.tmp"))


def test_pack_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["pack", "digitz", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "neither a folder nor a dataset name" in err and "did you mean digits" in err
    assert main(["pack", "digits", "--out", str(tmp_path / "x"), "--shard-size", "0"]) == 2
    assert "--shard-size must be > 0" in capsys.readouterr().err
    assert main(["pack", "synthetic", "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / MANIFEST).read_text())["splits"]["train"]["count"] == 512
