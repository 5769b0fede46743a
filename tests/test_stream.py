"""The stream data path: per-epoch order, disjoint shard subsets per process, mid-epoch resume, workers, training."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import train
from cnnlab.config import TrainConfig
from cnnlab.data import stream as stream_module
from cnnlab.data.augment import AugmentConfig
from cnnlab.data.shards import read_manifest
from cnnlab.data.stream import (SampleIndex, StreamLoader, buffer_shuffle, choose_data_path, epoch_order,
                                index_shards, random_resized_crop_box)
from cnnlab.errors import CnnlabError
from cnnlab.pack import pack


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards") / "syn"
    pack("synthetic", root, shard_size_mb=0.1, log=lambda s: None)  # 512 train images in 6 shards
    return root


def train_index(root) -> SampleIndex:
    return index_shards(root, read_manifest(root)["splits"]["train"]["shards"])


def loader(index, workers=0, **kw):
    return StreamLoader(index, 32, 12, 1, [0.5], [0.25], augment=AugmentConfig(flip=True), scale_min=0.3,
                        workers=workers, seed=7, **kw)


def test_every_epoch_reads_each_sample_once_in_a_new_order(shards):
    index = train_index(shards)
    assert len(index) == 512 and len(index.shard_samples) >= 4
    one, two = epoch_order(index, 0, 1), epoch_order(index, 0, 2)
    assert sorted(one) == sorted(two) == list(range(512))
    assert not np.array_equal(one, two) and np.array_equal(one, epoch_order(index, 0, 1))
    ids = np.arange(1000)
    out = buffer_shuffle(ids, 64, np.random.default_rng(0))
    assert sorted(out) == list(ids) and not np.array_equal(out, ids)


def test_each_process_reads_its_own_shards_and_together_all(shards):
    index = train_index(shards)
    shard_of = index.file_of
    seen = [epoch_order(index, 0, 3, rank, 2) for rank in range(2)]
    assert sorted(np.concatenate(seen)) == list(range(512))
    assert set(shard_of[seen[0]]).isdisjoint(shard_of[seen[1]])
    assert set(shard_of[seen[0]]) == set(range(0, len(index.shard_samples), 2))  # the same subset every epoch
    entries = read_manifest(shards)["splits"]["train"]["shards"]
    own = [index_shards(shards, entries, rank=r, world=2) for r in range(2)]  # a process indexes its shards only
    assert set(own[1].file_of) == set(range(1, len(entries), 2)) and len(own[0]) + len(own[1]) == 512
    assert np.array_equal(own[1].labels[epoch_order(own[1], 0, 3, 1, 2)], index.labels[seen[1]])
    ddp = [loader(own[r], rank=r, world_size=2) for r in range(2)]
    assert len(ddp[0]) == len(ddp[1])  # every process takes the same number of steps


def test_a_resumed_epoch_sees_each_remaining_sample_once_whatever_the_workers(shards):
    index = train_index(shards)
    whole = loader(index)
    whole.set_epoch(2)
    batches = list(whole)
    assert len(batches) == len(whole) == 16
    resumed = loader(index, workers=2)  # a restarted run, with more workers: the same batches
    resumed.set_epoch(2, skip=5)
    rest = list(resumed)
    assert len(rest) == 11
    for (x, y), (rx, ry) in zip(batches[5:], rest):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    order = whole.batches(2).order
    done, remaining = order[:5 * 32], np.concatenate([resumed.batches(2, 5).batch_ids(j) for j in range(5, 16)])
    assert sorted(np.concatenate([done, remaining])) == list(range(512))  # once each, none twice


def test_random_resized_crop_stays_inside_and_scale_one_is_the_central_square():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(64, 40, 0.08, rng)
        assert 0 <= left < right <= 64 and 0 <= top < bottom <= 40
    assert random_resized_crop_box(64, 40, 1.0, rng) == (12, 0, 52, 40)


def test_a_folder_streams_and_an_unreadable_image_is_named(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray((rng.random((20, 30)) * 255).astype(np.uint8)).save(tmp_path / c / f"{i}.png")
    cfg = TrainConfig.from_dict({"data": "folder", "data_dir": str(tmp_path), "data_path": "stream",
                                 "image_size": 8, "data_workers": 1, "batch_size": 4})
    s = stream_module.open_stream(cfg)
    assert s.channels == 1 and len(s.index) == 16 and tuple(s.dataset.test_images.shape) == (4, 1, 8, 8)
    assert "streamed" in s.dataset.describe()
    bad = s.index.files[int(epoch_order(s.index, 0, 1)[0])]
    bad.write_bytes(b"garbage")
    with pytest.raises(CnnlabError, match=rf"^{bad}: cannot read image"):
        list(s.loader(cfg, "cpu", AugmentConfig(), __import__("cnnlab.distributed").distributed.DistInfo()))


def test_the_path_is_chosen_by_size_and_can_be_forced(shards, monkeypatch):
    cfg = {"data": "shards", "data_dir": str(shards)}
    assert choose_data_path(TrainConfig.from_dict(cfg)) == "memory"
    monkeypatch.setattr(stream_module, "MEMORY_FRACTION", 1e-9)
    assert choose_data_path(TrainConfig.from_dict(cfg)) == "stream"
    assert choose_data_path(TrainConfig.from_dict({**cfg, "data_path": "memory"})) == "memory"
    with pytest.raises(CnnlabError, match="--data-path stream reads a folder or packed shards"):
        choose_data_path(TrainConfig.from_dict({"data": "digits", "data_path": "stream"}))


def test_training_streams_shards_end_to_end_and_eval_reads_the_test_split_only(shards, tmp_path, capsys):
    summary = train({"data": "shards", "data_dir": str(shards), "data_path": "stream", "model": "mlp",
                     "epochs": 3, "batch_size": 32, "train_subset": 192, "test_subset": 128, "crop_scale": 0.6,
                     "data_workers": 1, "precision": "fp32", "threads": 1, "lr": 0.05, "out": str(tmp_path),
                     "name": "s", "progress": False})
    assert summary["steps"] == 18 and summary["test_acc"] > 0.4  # 4 learnable classes, chance is 0.25
    from cnnlab.cli import main

    capsys.readouterr()
    assert main(["eval", str(tmp_path / "s"), "--json"]) == 0  # the saved config says stream: eval does too
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["acc"] > 0.4 and sum(c["support"] for c in report["per_class"]) == 256  # the whole test split


def test_datasets_reports_what_each_path_costs(shards, capsys):
    from cnnlab.cli import main

    assert main(["datasets", "--data-dir", str(shards)]) == 0
    out = capsys.readouterr().out
    assert "data path cost" in out and f"{shards} (768 images at 1x16x16)" in out
    mnist = next(line for line in out.splitlines() if line.startswith("mnist ") and "MB" in line)
    assert "54.9 MB" in mnist  # 70,000 x 28 x 28 bytes in memory
