"""Non-square inputs (--image-size H W) end to end: config and flags, datasets, augmentation, the stream
path, pack, run folders, eval/predict/TTA, export, serve and the Python API."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import runs
from cnnlab.cli import build_parser, _config_from_args
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.sizes import as_hw, is_stored_size, size_text, size_value

H, W = 12, 20  # rows, columns: every test checks that the two are never swapped


def test_sizes_read_every_spelling_and_store_square_as_an_int():
    assert as_hw(32) == (32, 32) and as_hw("48x64") == (48, 64) and as_hw("48 64") == (48, 64)
    assert as_hw([48, 64]) == (48, 64) and as_hw((7,)) == (7, 7) and as_hw(np.int64(9)) == (9, 9)
    assert size_value((32, 32)) == 32 and size_value("48x64") == [48, 64] and size_text(5) == "5x5"
    assert is_stored_size(32) and is_stored_size([48, 64])  # what meta.json and manifests may hold
    assert not any(is_stored_size(v) for v in (0, "32", [48], [48, 0], [48, True], True, 2.0, None, (48, 64)))
    for bad in (0, -3, "a", "3x", [1, 2, 3], 2.5, True, None, [4, 0], ["4", None]):
        with pytest.raises(CnnlabError, match="image size must be"):
            as_hw(bad)


@pytest.mark.parametrize("flags, expected", [(["32"], 32), (["48", "64"], [48, 64]), (["48x64"], [48, 64]),
                                             (["64", "64"], 64)])
def test_the_image_size_flag_takes_one_or_two_numbers(flags, expected):
    args = build_parser().parse_args(["train", "--image-size", *flags])
    assert _config_from_args(args).image_size == expected


def test_config_files_and_bad_sizes():
    assert TrainConfig.from_dict({"image_size": [48, 64]}).image_size == [48, 64]
    assert TrainConfig.from_dict({"image_size": "48x48"}).image_size == 48
    with pytest.raises(CnnlabError, match="image_size must be at least 4 pixels on each side"):
        TrainConfig.from_dict({"image_size": [2, 50]})
    with pytest.raises(CnnlabError, match=r"config: image_size: expected a side S or a height and width"):
        TrainConfig.from_dict({"image_size": "big"})
    with pytest.raises(CnnlabError, match="flags: image_size: expected a side S"):  # three numbers
        _config_from_args(build_parser().parse_args(["train", "--image-size", "1", "2", "3"]))


def make_folder(root, per_class=8, shape=(30, 40)):
    """Two classes of RGB images (rows x columns = shape): bright top vs bright bottom (a mirror keeps the class)."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("top", "bottom")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 60, (*shape, 3), dtype=np.uint8)
            rows = slice(0, shape[0] // 2) if label == 0 else slice(shape[0] // 2, None)
            a[rows] += 180
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def test_a_folder_is_fitted_to_h_by_w_keeping_the_aspect_ratio(tmp_path):
    from cnnlab.data.folder import load_folder, load_image

    # a 30x50 (rows x columns) picture with a marked centre column: fitting to 12x20 (same aspect) crops nothing
    a = np.zeros((30, 50), dtype=np.uint8)
    a[:, 25] = 255
    Image.fromarray(a).save(tmp_path / "p.png")
    x = load_image(tmp_path / "p.png", (H, W), 1)
    assert x.shape == (1, H, W) and int(x[0, :, W // 2 - 1:W // 2 + 1].float().mean()) > 40
    ds = load_folder(make_folder(tmp_path / "f"), size=(H, W))
    assert ds.train_images.shape[1:] == (3, H, W) and ds.test_images.shape[1:] == (3, H, W)
    with pytest.raises(CnnlabError, match=r"folder dataset: size \(--image-size\) must be"):
        load_folder(tmp_path / "f", size=[3, 0])


def test_builtin_datasets_resize_to_h_by_w():
    from cnnlab.data.prepare import prepare_data

    ds = prepare_data(TrainConfig(data="digits", image_size=[H, W], val_split=0))
    assert ds.train_images.shape[1:] == (1, H, W) and ds.image_size == (H, W)
    syn = prepare_data(TrainConfig(data="synthetic", image_size=[H, W], val_split=0))
    assert syn.test_images.shape[1:] == (1, H, W)


def test_every_batch_augmentation_keeps_h_by_w():
    from cnnlab.data.augment import AugmentConfig, augment_batch, tta_views

    cfg = AugmentConfig(crop_padding=2, flip=True, vflip=True, translate=0.1, rotate=15, scale=0.1, shear=5,
                        noise=0.05, cutout=4, color_jitter=0.2, resized_crop=0.5, erase=0.5,
                        policy="randaugment")
    x = torch.rand(6, 3, H, W)
    assert augment_batch(x, cfg).shape == x.shape
    for mode in ("flip", "shift", "flip-shift", "random:3"):
        assert all(v.shape == x.shape for v in tta_views(x, mode))


def test_the_stream_path_crops_to_the_output_aspect(tmp_path):
    from cnnlab.data.stream import StreamLoader, SampleIndex, random_resized_crop_box

    rng = np.random.default_rng(0)
    aspects = []
    for _ in range(300):
        left, top, right, bottom = random_resized_crop_box(400, 400, 0.3, rng, out_aspect=W / H)
        aspects.append((right - left) / (bottom - top))
    # log-uniform in [3/4, 4/3] times W/H: the median crop has the output's shape, so nothing is squashed on average
    assert np.median(aspects) == pytest.approx(W / H, rel=0.1)
    # no random crop: the largest central crop of the output's aspect (what ImageOps.fit keeps)
    assert random_resized_crop_box(100, 100, 1.0, rng, out_aspect=2.0) == (0, 25, 100, 75)
    folder = make_folder(tmp_path / "f")
    paths = sorted(folder.rglob("*.png"))
    index = SampleIndex("folder", paths, np.array([0 if "top" in str(p) else 1 for p in paths]))
    loader = StreamLoader(index, 4, (H, W), 3, [0.5] * 3, [0.25] * 3, scale_min=0.5, workers=0)
    x, _ = next(iter(loader))
    assert x.shape == (4, 3, H, W)


def test_pack_stores_h_by_w_and_reads_it_back(tmp_path):
    from cnnlab.data.shards import load_shards, read_manifest
    from cnnlab.pack import pack

    out = tmp_path / "shards"
    pack(str(make_folder(tmp_path / "f")), out, image_size=f"{H}x{W}", log=lambda s: None)
    assert read_manifest(out)["image_size"] == [H, W]
    ds = load_shards(out)
    assert ds.train_images.shape[1:] == (3, H, W)
    with pytest.raises(CnnlabError, match="pack: --image-size must be >= 4 on each side"):
        pack(str(tmp_path / "f"), tmp_path / "other", image_size="2x8", log=lambda s: None)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from cnnlab import train

    root = tmp_path_factory.mktemp("nonsquare")
    folder = make_folder(root / "images", per_class=20)
    cfg = TrainConfig(data="folder", data_dir=str(folder), image_size=[H, W], model="fastnet",
                      model_options={"widths": [8, 8, 16]}, epochs=6, batch_size=8, lr=0.05, flip=True,
                      out=str(root / "runs"), name="ns", progress=False, threads=1, precision="fp32", val_split=0)
    return root, train(cfg)["run_dir"]


def test_the_run_folder_records_h_and_w(run_dir):
    _, path = run_dir
    meta = runs.read_meta(path)
    assert meta["image_size"] == [H, W] and runs.input_shape(meta) == (3, H, W)
    # a run folder from before non-square inputs holds a single side, and still reads as S x S
    assert runs.input_shape({**meta, "image_size": 16}) == (3, 16, 16)
    meta_file = Path(path) / runs.META
    saved = meta_file.read_text()
    try:
        for bad in ([12, 0], "12x20", [12, 20, 3]):  # a hand-edited meta.json is named, not a traceback
            meta_file.write_text(json.dumps({**meta, "image_size": bad}))
            with pytest.raises(CnnlabError, match=r"meta.json: field 'image_size' must be a positive integer or"):
                runs.read_meta(path)
    finally:
        meta_file.write_text(saved)


def test_eval_predict_and_tta_on_h_by_w(run_dir, tmp_path):
    from cnnlab.inference import evaluate_run, iter_predictions, load_predictor

    root, path = run_dir
    for tta in ("none", "flip-shift"):
        assert evaluate_run(path, tta=tta, output=f"e-{tta}")["acc"] >= 0.75
    # random views turn images upside down, which changes these classes: only that it runs at H x W
    assert 0 <= evaluate_run(path, tta="random:2", output="e-random")["acc"] <= 1
    photo = tmp_path / "wide.png"
    Image.fromarray(np.zeros((50, 90, 3), dtype=np.uint8)).save(photo)  # any size in: fitted to H x W
    (row,) = iter_predictions(load_predictor(path), [str(photo)], top_k=1)
    assert row["top"][0]["class"] in ("top", "bottom")


def test_export_onnx_parity_and_serve_shapes(run_dir):
    pytest.importorskip("onnxruntime")
    from cnnlab.export import export_run
    from cnnlab.inference import load_predictor

    root, path = run_dir
    record = export_run(path)
    assert record["parity"]["passed"]
    exported = load_predictor(Path(path) / "model.onnx")
    assert exported.describe()["input"]["shape"] == ["batch", 3, H, W]
    torch_pred = load_predictor(path)
    x = torch.randint(0, 256, (3, 3, H, W), dtype=torch.uint8)
    assert torch.allclose(exported.probabilities(x), torch_pred.probabilities(x), atol=1e-4)
    with pytest.raises(CnnlabError, match=rf"expected uint8 images \[N, 3, {H}, {W}\]"):
        exported.probabilities(torch.zeros(1, 3, W, H, dtype=torch.uint8))  # swapped sides are refused
    pytest.importorskip("fastapi")
    from cnnlab.serve import RequestError, images_from_json

    images, _ = images_from_json({"images": x.tolist()}, exported, 8)
    assert torch.stack(images).shape == (3, 3, H, W)
    with pytest.raises(RequestError, match=rf"\[3, {H}, {W}\]"):
        images_from_json({"images": x.transpose(2, 3).tolist()}, exported, 8)


def test_the_python_api_fits_any_picture_to_h_by_w(run_dir):
    import cnnlab

    _, path = run_dir
    run = cnnlab.load_run(path)
    picture = Image.fromarray(np.zeros((33, 70, 3), dtype=np.uint8))
    probs = run.predict([picture, picture])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert run.predict(np.zeros((2, 3, 40, 40), dtype=np.uint8)).shape == (2, 2)  # arrays are resized too
