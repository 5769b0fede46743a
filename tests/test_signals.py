"""1-D signals: the file loaders (NPZ, NPY, CSV; malformed files named by line), the `spectra` stand-in,
the signal models (cae1d with tied weights, cnn1d, dnn/mlp/perceptron on signals), batched signal
augmentation, and the pipeline end to end (train, resume, eval, two-stage, predict on a signal file,
models --info)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import load_dataset
from cnnlab.data.signal_augment import augment_signals, check_signal_augment, shift_stretch
from cnnlab.data.signals import read_signal_file, resample
from cnnlab.data.spectra import generate
from cnnlab.errors import CnnlabError
from cnnlab.models import count_parameters, create_model


def write_csv(path, rows):
    path.write_text("\n".join(",".join(str(v) for v in row) for row in rows) + "\n")


def signals_of(n, length, classes=3, seed=0):
    """Learnable signals: class k has a bump at position (k + 1) / (classes + 1) of the length, plus noise."""
    g = np.random.default_rng(seed)
    y = np.arange(n) % classes
    t = np.arange(length)
    x = np.exp(-0.5 * ((t[None] - (y[:, None] + 1) * length / (classes + 1)) / (length / 20)) ** 2)
    return (x + 0.05 * g.normal(size=(n, length))).astype(np.float32), y


# --------------------------------------------------------------------------- loaders
def test_csv_files_load_with_header_and_string_labels(tmp_path):
    x, y = signals_of(12, 50)
    names = np.array(["oat", "rye", "wheat"])[y]
    write_csv(tmp_path / "train.csv", [["label"] + [f"v{i}" for i in range(50)]]
              + [[n, *row] for n, row in zip(names, x.round(4))])
    write_csv(tmp_path / "test.csv", [[n, *row] for n, row in zip(names[:6], x[:6].round(4))])
    ds = load_dataset("signals", tmp_path)
    assert ds.is_signal and ds.train_images.shape == (12, 1, 50) and ds.train_images.dtype == torch.float32
    assert ds.classes == ["oat", "rye", "wheat"] and len(ds.test_labels) == 6 and ds.length == 50
    assert torch.allclose(ds.train_images[:, 0], torch.from_numpy(x.round(4)), atol=1e-6)
    assert "12 train / 6 test signals, 1x50, 3 classes" in ds.describe()


@pytest.mark.parametrize("bad, message", [
    ("ragged", r"signals\.csv line 4: 49 values, but line 1 has 50"),
    ("text", r"signals\.csv line 3, column 7: 'abc' is not a finite number"),
    ("nan", r"signals\.csv line 2, column 2: 'nan' is not a finite number"),
])
def test_malformed_csv_names_the_line(tmp_path, bad, message):
    x, y = signals_of(6, 50)
    rows = [[int(label), *row] for label, row in zip(y, x.round(3))]
    if bad == "ragged":
        rows[3] = rows[3][:-1]
    elif bad == "text":
        rows[2][6] = "abc"
    else:
        rows[1][1] = "nan"
    write_csv(tmp_path / "signals.csv", rows)
    with pytest.raises(CnnlabError, match=message):
        load_dataset("signals", tmp_path)


def test_ragged_csv_is_resampled_with_length_and_split_per_class(tmp_path):
    rows = []
    for i in range(20):
        n = 40 + i  # every line another length
        rows.append([i % 2, *np.linspace(0, 1, n).round(4)])
    write_csv(tmp_path / "signals.csv", rows)
    ds = load_dataset("signals", tmp_path, length=32, test_split=0.2)
    assert ds.train_images.shape == (16, 1, 32) and ds.test_images.shape == (4, 1, 32)
    assert torch.bincount(ds.test_labels).tolist() == [2, 2]  # stratified
    assert torch.allclose(ds.train_images[0, 0], torch.linspace(0, 1, 32), atol=1e-3)  # a ramp stays a ramp


def test_npz_and_npy_layouts(tmp_path):
    x, y = signals_of(9, 30)
    multi = np.stack([x, -x], 1)  # 2 channels
    np.savez(tmp_path / "train.npz", x=multi, y=y, classes=np.array(["a", "b", "c"]))
    np.savez(tmp_path / "test.npz", x=multi[:3], y=y[:3], classes=np.array(["a", "b", "c"]))
    ds = load_dataset("signals", tmp_path)
    assert ds.train_images.shape == (9, 2, 30) and ds.classes == ["a", "b", "c"] and len(ds.mean) == 2
    other = tmp_path / "npy"
    other.mkdir()
    np.save(other / "x.npy", x)
    np.save(other / "y.npy", y + 10)  # integer labels become class names in numeric order
    ds = load_dataset("signals", other, test_split=0.34)
    assert ds.classes == ["10", "11", "12"] and len(ds.train_labels) + len(ds.test_labels) == 9
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "signals.npz", signals=x, labels=y)
    with pytest.raises(CnnlabError, match=r"needs arrays 'x' \(signals\) and 'y' \(labels\); missing x, y"):
        load_dataset("signals", bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnlabError, match="none of the layouts"):
        load_dataset("signals", tmp_path / "empty")


def test_signals_refuse_image_options():
    from cnnlab.config import TrainConfig
    from cnnlab.data.prepare import prepare_data

    cfg = TrainConfig.from_dict({"data": "spectra", "image_size": 32, "val_split": 0,
                                 "data_options": {"classes": 2, "length": 200, "samples": 200}})
    with pytest.raises(CnnlabError, match="--image-size and --channels apply to images"):
        prepare_data(cfg)


def test_resample_keeps_end_points():
    x = torch.linspace(0, 1, 11).view(1, 1, 11)
    assert torch.allclose(resample(x, 21)[0, 0, [0, -1]], torch.tensor([0.0, 1.0]))


# --------------------------------------------------------------------------- the generated stand-in
def test_spectra_stand_in_is_deterministic_and_nested():
    a = generate(classes=5, samples=500, length=400, seed=0)
    b = generate(classes=5, samples=500, length=400, seed=0)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert a[0].shape[1] == 400 and set(a[1]) == set(range(5)) and set(a[3]) == set(range(5))
    two = generate(classes=2, samples=500, length=400, seed=0)
    first_two = np.isin(a[1], [0, 1])
    assert sorted(map(tuple, two[0].round(5))) == sorted(map(tuple, a[0][first_two].round(5)))  # same signals
    c = generate(classes=5, samples=500, length=400, seed=1)
    assert not np.array_equal(a[0][:10], c[0][:10])
    ds = load_dataset("spectra", classes=3, length=400, samples=500)
    assert ds.classes == ["sort01", "sort02", "sort03"] and ds.extra["stand_in"]


# --------------------------------------------------------------------------- models
def test_cae1d_has_315_parameters_and_tied_weights_share_storage():
    model = create_model("cae1d", 10, 1, length=4000)
    assert count_parameters(model) == 315
    assert count_parameters(create_model("cae1d", 10, 1, length=4000, tied=False)) == 609
    n = len(model.encoder)
    for i in range(n):
        assert model.decoder_weight(i).data_ptr() == model.encoder[n - 1 - i].weight.data_ptr()
    x = torch.randn(2, 1, 1000)
    assert model(x).shape == x.shape and model.encode(x).shape == (2, 8, 16)
    # the tied decoder layer is the transposed convolution of the encoder's kernel (computed as a conv)
    h = torch.randn(2, 8, 16)
    w = model.encoder[2].weight
    ref = F.conv_transpose1d(F.interpolate(h, scale_factor=4), w, model.decoder_biases[0], padding=3)
    with torch.no_grad():
        up = F.interpolate(h, scale_factor=4)
        got = F.conv1d(up, w.flip(-1).transpose(0, 1), model.decoder_biases[0], padding=3)
    assert torch.allclose(got, ref, atol=1e-5)
    model(x).square().sum().backward()  # gradients of both uses add up in the one tensor
    assert model.encoder[0].weight.grad is not None


@pytest.mark.parametrize("name, options", [("cae1d", {"pool": 2}), ("cnn1d", {"channels": [4, 8], "hidden": 16}),
                                           ("dnn", {"hidden": [32]}), ("mlp", {"hidden": [32]}),
                                           ("perceptron", {"hidden": 32})])
def test_every_signal_model_lowers_its_loss(name, options):
    torch.manual_seed(0)
    x, y = signals_of(48, 128)
    x, y = torch.from_numpy(x)[:, None], torch.from_numpy(y)
    x = (x - x.mean()) / x.std()
    model = create_model(name, 3, 1, length=128, **options)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(8):
        out = model(x)
        loss = (out - x).pow(2).flatten(1).sum(1).mean() if name == "cae1d" else F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < (0.9 if name == "cae1d" else 0.7) * losses[0], (name, losses)


def test_image_and_signal_models_refuse_the_other_kind():
    with pytest.raises(CnnlabError, match="takes images"):
        create_model("lenet5", 10, 1, length=4000)
    with pytest.raises(CnnlabError, match="takes 1-D signals"):
        create_model("cnn1d", 10, 1, image_size=28)


def test_models_info_takes_a_1d_input(capsys):
    from cnnlab.cli import main

    main(["models", "--info", "cae1d", "--input", "1x4000"])
    out = capsys.readouterr().out
    assert "cae1d @ 1x4000" in out and "315" in out and "conv1d k7" in out
    main(["models", "--info", "dnn", "--input", "1x4000"])
    assert "1,231,410" in capsys.readouterr().out  # 4000*300 + 300*100 + 100*10 weights + biases


# --------------------------------------------------------------------------- augmentation
def test_signal_augmentation_is_batched_and_shifts():
    from cnnlab.data.augment import AugmentConfig

    x = torch.zeros(4, 1, 100)
    x[:, 0, 50] = 1.0
    torch.manual_seed(0)
    moved = shift_stretch(x, translate=0.1)
    peaks = moved[:, 0].argmax(1)
    assert ((peaks - 50).abs() <= 10).all() and len(set(peaks.tolist())) > 1  # each sample its own shift
    assert shift_stretch(x, 0.0, 0.0) is x
    cfg = AugmentConfig(translate=0.05, scale=0.05, noise=0.1)
    out = augment_signals(torch.randn(8, 2, 64), cfg)
    assert out.shape == (8, 2, 64)
    with pytest.raises(CnnlabError, match="--rotate, --cutout: image augmentations"):
        check_signal_augment(AugmentConfig(rotate=10, cutout=4))


# --------------------------------------------------------------------------- end to end
FAST = dict(progress=False, threads=1, precision="fp32", channels_last=False, opt="adam", sched="constant",
            weight_decay=0.0, batch_size=32, data="spectra", val_split=0.0,
            data_options={"classes": 4, "length": 256, "samples": 1500})


def test_signal_pipeline_end_to_end(tmp_path):
    """cae1d -> cnn1d and dnn on its codes; resume, eval (P/R/F1/BEP, confusion), predict on signal files."""
    import json

    from cnnlab.config import TrainConfig
    from cnnlab.inference import evaluate_run, predict_files
    from cnnlab.train import train

    out = str(tmp_path)
    ae = train(TrainConfig.from_dict(dict(FAST, model="cae1d", model_options={"pool": 2}, objective="reconstruct",
                                          input_scaling="minmax", lr=0.01, epochs=3, out=out, name="cae")))
    assert ae["params"] == 315 and (tmp_path / "cae" / "reconstructions.png").exists()
    meta = json.loads((tmp_path / "cae" / "meta.json").read_text())
    assert meta["length"] == 256 and meta["image_size"] is None
    cnn = dict(FAST, model="cnn1d", model_options={"channels": [8, 16], "hidden": 32}, lr=0.01, out=out,
               features_from=str(tmp_path / "cae"), translate=0.02, noise=0.05)
    with pytest.raises(CnnlabError, match="augmentation and --tta do not apply"):
        train(TrainConfig.from_dict(dict(cnn, epochs=1, name="aug")))
    cnn.update(translate=0.0, noise=0.0)
    train(TrainConfig.from_dict(dict(cnn, epochs=1, name="cnn")))
    summary = train(TrainConfig.from_dict(dict(cnn, epochs=6, name="cnn")), resume=True)  # resume to 6 epochs
    assert summary["epochs"] == 6 and summary["test_acc"] > 0.5
    dnn = train(TrainConfig.from_dict(dict(cnn, model="dnn", model_options={"hidden": [32]}, epochs=6, name="dnn")))
    assert dnn["test_acc"] > 0.5
    m = evaluate_run(tmp_path / "cnn", as_json=True)
    assert {"precision", "recall", "f1", "bep", "confusion"} <= set(m) and m["acc"] == pytest.approx(summary["test_acc"])
    assert (tmp_path / "cnn" / "confusion.png").exists()
    # predict on the test signals written as a file: the same answers as the evaluation
    ds = load_dataset("spectra", **FAST["data_options"])
    np.save(tmp_path / "test.npy", ds.test_images[:5].numpy())
    rows = predict_files(tmp_path / "cnn", [str(tmp_path / "test.npy")], top_k=1)
    assert [r["file"] for r in rows] == [f"{tmp_path / 'test.npy'}:{i}" for i in range(5)]
    names, signals = read_signal_file(tmp_path / "test.npy", 256, 1)
    assert torch.equal(signals, ds.test_images[:5])
    # a signal run on augmented raw signals
    raw = train(TrainConfig.from_dict(dict(FAST, model="cnn1d", model_options={"channels": [8], "hidden": 16},
                                           lr=0.003, epochs=2, out=out, name="raw", translate=0.02, scale=0.02,
                                           noise=0.05)))
    assert raw["test_acc"] > 0.25
    with pytest.raises(CnnlabError, match="test-time augmentation"):
        evaluate_run(tmp_path / "raw", tta="flip")


@pytest.mark.parametrize("budget", ["smoke", "small", "full"])
def test_spectra_study_plans_table3_and_figure5(budget, tmp_path):
    from cnnlab import study

    spec = study.load_spec("spectra")
    plan = study.plan_study(spec, budget, out=tmp_path, threads=1)
    by_variant = {r.variant: r.config for r in plan.runs}
    assert set(by_variant) == {"cae", "raw-dnn-50"} | {f"{m}-{n:02d}" for m in ("cnn", "dnn")
                                                      for n in (5, 10, 20, 30, 40, 50)}
    assert by_variant["cae"].model == "cae1d" and by_variant["cnn-05"].data_options == {"classes": 5}
    assert by_variant["dnn-50"].features_from.endswith("cae-seed0")
    assert by_variant["cnn-50"].epochs == {"smoke": 1, "small": 15, "full": 150}[budget]
