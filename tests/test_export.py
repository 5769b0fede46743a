"""`cnnlab export` (ONNX, .pt2, int8) with its parity check, and `cnnlab predict` of exported files.

A tiny fastnet trained for two epochs on the synthetic data is exported once per format (module
fixtures); the CLI runs in-process through :func:`cnnlab.cli.main` (one subprocess checks the real
entry point). The zoo test exports one network per kind of layer at tiny width; every registered
model is exported by the same test with ``CNNLAB_EXPORT_ZOO=1`` (minutes: see docs/deploy.md).
"""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'cnnlab[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'cnnlab[export]'")

import onnx  # noqa: E402

from cnnlab import cli  # noqa: E402
from cnnlab.errors import CnnlabError  # noqa: E402
from cnnlab.export import Deployable, export_module, export_run, run_onnx  # noqa: E402
from cnnlab.inference import ExportedPredictor, load_predictor, onnx_session  # noqa: E402


def run_cli(capsys, *args):
    """``cnnlab ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse's own checks (e.g. a flag's type) exit from inside the parser
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def run_dir():
    from deploy_run import trained_run

    return trained_run()


@pytest.fixture(scope="module")
def onnx_export(run_dir):
    from deploy_run import exported_onnx

    return exported_onnx()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of test images as PNG files, plus one unreadable file."""
    from cnnlab.data import load_dataset

    folder = tmp_path_factory.mktemp("imgs")
    ds = load_dataset("synthetic")
    for i in range(5):
        Image.fromarray(ds.test_images[i, 0].numpy()).save(folder / f"{i}.png")
    (folder / "broken.png").write_text("not an image")
    return folder


def test_onnx_export_checks_parity_and_records_it(run_dir, onnx_export):
    path, record = onnx_export
    assert path.is_file() and record["passed"] and record["format"] == "onnx" and record["opset"] == 18
    parity = record["parity"]
    assert parity["images"] == 256 and parity["split"] == "test"  # the synthetic test split has 256 images
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] >= 0.99
    saved = json.loads((run_dir / "export.json").read_text())
    assert saved["model.onnx"]["sha256"] == record["sha256"] and saved["model.onnx"]["bytes"] == path.stat().st_size
    # metadata travels in the file; normalization is in the graph (uint8 in, probabilities out)
    model = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["cnnlab"])
    assert meta["normalization"] == "in-graph" and meta["classes"] == ["class0", "class1", "class2", "class3"]
    assert meta["input"] == {"name": "images", "dtype": "uint8", "shape": ["batch", 1, 16, 16]}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_onnx_batch_is_dynamic_and_matches_pytorch(run_dir, onnx_export):
    from cnnlab.data import load_dataset
    from cnnlab.inference import load_run
    from cnnlab.predict import predict_probs

    run = load_run(run_dir, "cpu")
    x = load_dataset("synthetic").test_images[:7]
    session = onnx_session(onnx_export[0])
    ref = predict_probs(run.model, x, run.meta["mean"], run.meta["std"], run.runtime)
    for batch in (x[:1], x):
        got = run_onnx(session, batch)
        assert got.shape == (len(batch), 4)
        torch.testing.assert_close(got, ref[: len(batch)], atol=1e-5, rtol=0)


def test_predict_accepts_the_onnx_file_and_streams_to_csv(run_dir, onnx_export, images, tmp_path, capsys):
    csv_path = tmp_path / "out.csv"
    code, out, err = run_cli(capsys, "predict", onnx_export[0], images, "-b", "2", "-k", "2", "--json",
                             "--csv", csv_path)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [os.path.basename(r["file"]) for r in rows] == [f"{i}.png" for i in range(5)]
    assert "skipped" in err and "broken.png" in err  # named, not fatal
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "file,class_1,probability_1,class_2,probability_2" and len(lines) == 6
    # the same answers as the run folder through PyTorch
    code, out2, _ = run_cli(capsys, "predict", run_dir, images, "-k", "2", "--json")
    for a, b in zip(rows, [json.loads(line) for line in out2.splitlines()]):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert np.allclose([t["probability"] for t in a["top"]], [t["probability"] for t in b["top"]], atol=1e-4)
    # a run folder on onnxruntime uses its exported model.onnx
    code, out3, err = run_cli(capsys, "predict", run_dir, images, "-k", "2", "--json", "--backend", "onnxruntime")
    assert code == 0 and out3 == out, err


def test_predict_streams_in_batches():
    from cnnlab.inference import Predictor, iter_predictions

    class Spy(Predictor):
        classes, in_channels, image_size, batches = ["a", "b"], 1, 8, []

        def probabilities(self, x, tta="none"):
            self.batches.append(len(x))
            return torch.full((len(x), 2), 0.5)

    folder = __import__("tempfile").mkdtemp()
    for i in range(7):
        Image.fromarray(np.full((8, 8), i * 30, np.uint8)).save(os.path.join(folder, f"{i}.png"))
    spy = Spy()
    rows = iter_predictions(spy, [folder], top_k=1, batch_size=3)
    assert next(rows)["top"] == [{"class": "a", "probability": 0.5}] and spy.batches == [3]  # lazily, batch by batch
    assert len(list(rows)) == 6 and spy.batches == [3, 3, 1]
    shutil.rmtree(folder)


def test_predict_errors_name_the_flag(run_dir, onnx_export, images, capsys):
    cases = [
        (["predict", onnx_export[0], images, "--tta", "shift"], "--tta shift"),
        (["predict", onnx_export[0], images, "--backend", "torch"], "--backend torch"),
        (["predict", onnx_export[0], images, "--weights", "last"], "--weights"),
        (["predict", run_dir, images, "-b", "0"], "--batch-size: must be >= 1"),
        (["predict", run_dir / "config.yaml", images], "expected a run folder, a .onnx file or a .pt2 file"),
        (["predict", run_dir, images, "--csv", run_dir], "--csv"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)


def test_pt2_export_and_predict(run_dir, images, capsys):
    code, out, err = run_cli(capsys, "export", run_dir, "--format", "pt2", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["passed"] and record["parity"]["max_abs_diff"] <= 1e-5 and (run_dir / "model.pt2").is_file()
    assert "model.onnx" in json.loads((run_dir / "export.json").read_text())  # both records kept
    predictor = load_predictor(run_dir / "model.pt2")
    assert predictor.backend == "torch.export" and predictor.classes == ["class0", "class1", "class2", "class3"]
    code, out, err = run_cli(capsys, "predict", run_dir / "model.pt2", images, "--tta", "flip")
    assert code == 0 and out.count("class") == 5 * 4, err


def test_int8_reports_accuracy_size_and_latency(run_dir, tmp_path, images, capsys):
    out_file = tmp_path / "tiny.int8.onnx"
    code, out, err = run_cli(capsys, "export", run_dir, "--int8", "--out", out_file, "--calibration-images", "128")
    assert code == 0, err
    assert "int8" in out and "test accuracy" in out and "latency, batch 1" in out
    record = json.loads((tmp_path / "export.json").read_text())["tiny.int8.onnx"]
    report = record["int8_report"]
    assert report["calibration"] == {"split": "train", "images": 128, "method": "minmax",
                                     "format": "QDQ, int8 per-channel weights, uint8 activations"}
    for key in ("fp32", "int8"):
        assert 0 <= report[key]["test_accuracy"] <= 1 and report[key]["latency_ms_batch1"] > 0
        assert report[key]["images_per_s_batch64"] > 0 and report[key]["test_images"] == 256
    assert abs(report["int8"]["test_accuracy"] - report["fp32"]["test_accuracy"]) < 0.1
    assert report["int8"]["bytes"] > 0 and report["fp32"]["bytes"] > 0
    assert record["parity"]["top1_agreement"] >= 0.9 and record["fp32_parity"]["max_abs_diff"] <= 1e-4
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out_file)).graph.node)
    predictor = ExportedPredictor(out_file)
    assert predictor.info["int8"] is True
    code, out, err = run_cli(capsys, "predict", out_file, images)
    assert code == 0 and out.count(".png") == 5, err


def test_a_failed_parity_check_is_loud_and_leaves_no_file(run_dir, tmp_path, monkeypatch, capsys):
    import cnnlab.export as ex

    real = ex.run_program  # an exporter bug, simulated: the exported program mixes up the classes
    monkeypatch.setattr(ex, "run_program", lambda module, x, *a: real(module, x, *a).roll(1, dims=1))
    target = tmp_path / "wrong.pt2"
    code, _, err = run_cli(capsys, "export", run_dir, "--format", "pt2", "--out", target)
    assert code == 2 and "parity check failed for wrong.pt2" in err and "top-1 agreement" in err
    assert not target.exists()
    record = json.loads((tmp_path / "export.json").read_text())["wrong.pt2"]
    assert record["passed"] is False and record["parity"]["passed"] is False


def test_export_errors_name_the_flag_or_file(run_dir, tmp_path, capsys):
    cases = [
        # --weights best of a run without best.safetensors: tests/test_selection.py
        (["export", run_dir, "--format", "pt2", "--int8"], "--int8"),
        (["export", run_dir, "--format", "pt2", "--opset", "17"], "--opset"),
        (["export", run_dir, "--opset", "99"], "--opset 99"),
        (["export", run_dir, "--out", tmp_path / "model.pt2"], "must end in .onnx"),
        (["export", run_dir, "--out", tmp_path / "no" / "m.onnx"], "does not exist"),
        (["export", run_dir, "--parity-images", "0"], "--parity-images must be >= 1"),
        (["export", tmp_path / "nothing"], "run folder not found"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)


def test_weights_last_and_final(run_dir, tmp_path, capsys):
    copy = tmp_path / "interrupted"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("model.*", "best.*", "export.json"))
    code, _, err = run_cli(capsys, "export", copy, "--format", "pt2")
    assert code == 2 and "no model.safetensors" in err and "--weights last" in err
    code, out, err = run_cli(capsys, "export", copy, "--format", "pt2", "--weights", "last", "--json")
    assert code == 0 and json.loads(out)["weights"] == "last", err


# --------------------------------------------------------------------------- the zoo

# A few networks at tiny width (the trained run above is a fastnet): TinyNet (the thesis's phone
# model), RReLU (ndsb1: torch.export records it as a random op; cnnlab exports its exact eval form),
# an autoencoder (a reconstruction output) and SADIE's energy head (here on a fastnet).
# CNNLAB_EXPORT_ZOO=1 exports every registered model, and trained autoencoder and two-stage runs.
REPRESENTATIVE = ["tinynet-cifar", "ndsb1", "autoencoder", "fastnet+energy"]
ZOO_ENV = pytest.mark.skipif(os.environ.get("CNNLAB_EXPORT_ZOO") != "1",
                             reason="minutes on 2 cores; set CNNLAB_EXPORT_ZOO=1 (docs/deploy.md)")


def tiny_options(name: str) -> dict:
    import inspect

    from cnnlab.models import MODELS

    params = inspect.signature(MODELS.get(name)).parameters
    options = {}
    if "width" in params:
        options["width"] = 0.0625
    if "alpha" in params:
        options["alpha"] = 0.125
    if "widths" in params:
        options["widths"] = [4, 4, 8]
    if "hidden" in params:
        options["hidden"] = (8, 4) if isinstance(params["hidden"].default, tuple) else 8
    return options


def export_tiny(key: str, tmp_path):
    from cnnlab.models import MODELS, create_model
    from cnnlab.models.catalog import default_input

    name, _, head = key.partition("+")
    channels, side = default_input(name)
    if side > 1:
        side = max(MODELS.entry(name).meta.get("min_size", 1), 16)
    model = create_model(name, 5, channels, image_size=side, **tiny_options(name), **({"head": head} if head else {}))
    x = torch.randint(0, 256, (3, channels, side, side), dtype=torch.uint8)
    module = Deployable(model, [0.5] * channels, [0.25] * channels, softmax=name != "autoencoder")
    with torch.no_grad():  # batch-norm statistics of real activations, as after training (at random init
        module.train()     # a 152-layer net's logits grow to 1e4 and fp32 rounding decides the top class)
        for _ in range(3):
            module(torch.randint(0, 256, (16, channels, side, side), dtype=torch.uint8))
    module.eval()
    path = export_module(module, tmp_path / f"{name}.onnx", "onnx", x[:2], {"model": name}, name)
    with torch.no_grad():
        ref = module(x)
    got = run_onnx(onnx_session(path), x)
    tolerance = 1e-3 * (1.0 if name != "autoencoder" else max(1.0, ref.abs().max().item()))  # cnnlab.export's
    assert (got - ref).abs().max().item() <= tolerance, name


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_representative_zoo_models_export(name, tmp_path):
    export_tiny(name, tmp_path)


def _all_models():
    from cnnlab.models import list_models

    return list_models()


@ZOO_ENV
@pytest.mark.parametrize("name", _all_models())
def test_every_zoo_model_exports(name, tmp_path):
    export_tiny(name, tmp_path)


@ZOO_ENV
def test_autoencoder_and_two_stage_runs_export(tmp_path):
    """An autoencoder run exports its reconstruction; a classifier trained on its codes (--features-from)
    exports the whole pipeline, pixels -> encoder -> code scaling -> classifier, parity-checked."""
    from cnnlab import TrainConfig, train

    fast = dict(progress=False, threads=1, precision="fp32", channels_last=False, opt="adam", sched="constant",
                batch_size=32, data="digits", lr=0.01, out=str(tmp_path))
    train(TrainConfig.from_dict(dict(fast, model="autoencoder", model_options={"hidden": [32, 16]},
                                     objective="reconstruct", input_scaling="minmax", epochs=3, name="ae")))
    train(TrainConfig.from_dict(dict(fast, model="dnn", model_options={"hidden": [32]}, epochs=4, name="dnn",
                                     features_from=str(tmp_path / "ae"))))
    ae = export_run(tmp_path / "ae", quiet=True)
    assert ae["passed"] and ae["task"] == "reconstruct" and ae["output"]["name"] == "reconstruction"
    two = export_run(tmp_path / "dnn", quiet=True)
    assert two["passed"] and two["parity"]["top1_agreement"] >= 0.99 and two["parity"]["max_abs_diff"] <= 1e-4
    assert ExportedPredictor(tmp_path / "dnn" / "model.onnx").in_channels == 1  # takes images, not codes


def test_models_that_cannot_be_exported_say_why(tmp_path):
    from cnnlab.models import create_model

    base = create_model("lenet5", 3, 1, image_size=16).eval()

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = base

        def forward(self, x):
            return self.net(x) + torch.rand(1)

    class DataDependent(Noisy):
        def forward(self, x):
            return self.net(x) if x.sum() > 0 else -self.net(x)

    x = torch.zeros(2, 1, 16, 16)
    with pytest.raises(CnnlabError, match="'noisy' cannot be exported: it gives different outputs for the same "
                                          "input in eval mode"):
        export_module(Noisy(), tmp_path / "n.onnx", "onnx", x, {}, "noisy")
    with pytest.raises(CnnlabError, match="'branchy' cannot be exported with torch.export: .*data-dependent"):
        export_module(DataDependent(), tmp_path / "d.pt2", "pt2", x, {}, "branchy")
    assert not list(tmp_path.iterdir())
