"""Two-stage runs: a classifier trained on a frozen autoencoder's codes (computed once), used on images
by eval/predict, bound to the autoencoder it was trained with; test-time corruption and denoisers."""
import json
import shutil

import pytest

from cnnlab import runs
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.inference import evaluate_run, load_run, predict_files
from cnnlab.train import train

FAST = dict(progress=False, threads=1, precision="fp32", channels_last=False, opt="adam", sched="constant",
            weight_decay=0.0, batch_size=32, data="digits")


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    """A small autoencoder and a denoising one on the 8x8 digits (MinMax scaling, as the paper)."""
    out = tmp_path_factory.mktemp("two-stage")
    ae = dict(FAST, model="autoencoder", model_options={"hidden": [32, 16]}, objective="reconstruct",
              input_scaling="minmax", lr=0.01, epochs=4, out=str(out))
    train(TrainConfig.from_dict({**ae, "name": "ae"}))
    train(TrainConfig.from_dict({**ae, "name": "dae", "objective": "reconstruct:denoise=salt-pepper:0.2"}))
    return out


def classifier(out, name, **changes):
    base = dict(FAST, model="dnn", model_options={"hidden": [32]}, lr=0.01, epochs=5, out=str(out), name=name,
                features_from=str(out / "ae"))
    return TrainConfig.from_dict({**base, **changes})


@pytest.fixture(scope="module")
def two_stage_run(stage_one):
    """A DNN on the autoencoder's codes; ``summary["encoded"]``: the images the encoder saw, per call."""
    import cnnlab.two_stage as two_stage

    calls, real = [], two_stage.encode_images
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(two_stage, "encode_images", lambda *a: calls.append(len(a[1])) or real(*a))
        summary = train(classifier(stage_one, "dnn-on-codes"))
    return {**summary, "encoded": calls}


def test_the_classifier_trains_on_codes_computed_once(stage_one, two_stage_run):
    summary = two_stage_run
    assert summary["encoded"] == [1211, 450, 136]  # the training, test and validation split, once each
    meta = json.loads((runs.Path(summary["run_dir"]) / runs.META).read_text())
    assert (meta["in_channels"], meta["image_size"]) == (16, 1)  # the classifier's input: 16-d codes
    record = meta["features"]
    assert record["autoencoder"]["run"] == str((stage_one / "ae").resolve())
    assert record["autoencoder"]["relative"] == "../ae" and len(record["autoencoder"]["fingerprint"]) == 64
    assert summary["features"]["code_size"] == 16 and summary["test_acc"] > 0.5


def test_eval_and_predict_go_through_the_encoder(two_stage_run, tmp_path):
    run_dir = runs.Path(two_stage_run["run_dir"])
    run = load_run(run_dir, device="cpu")
    assert (run.meta["in_channels"], run.meta["image_size"]) == (1, 8)  # it takes images now
    m = evaluate_run(run_dir, device="cpu")
    assert m["acc"] == pytest.approx(two_stage_run["test_acc"], abs=1 / 450)  # same pipeline as in training
    from PIL import Image

    from cnnlab.data.prepare import prepare_data

    ds = prepare_data(TrainConfig(data="digits"))
    for i in range(3):
        Image.fromarray(ds.test_images[i, 0].numpy()).save(tmp_path / f"d{i}.png")
    predicted = predict_files(run_dir, [str(tmp_path)], top_k=1, device="cpu")
    assert len(predicted) == 3 and all(p["top"][0]["class"] in run.meta["classes"] for p in predicted)


def test_a_changed_or_missing_autoencoder_is_refused(stage_one, two_stage_run, tmp_path):
    copy = tmp_path / "copy"  # a private copy of the stage-one runs and the classifier, to damage
    for name in ("ae", "dnn-on-codes"):
        shutil.copytree(stage_one / name, copy / name)
    clf = copy / "dnn-on-codes"
    evaluate_run(clf, device="cpu")  # found by its relative path: the copy of ae, unchanged
    weights = runs.Path(copy / "ae" / runs.WEIGHTS)
    from cnnlab.checkpoint import load_weights, save_weights

    state = load_weights(weights)
    state["encoder.0.weight"] = state["encoder.0.weight"] + 0.01
    save_weights(state, weights)
    with pytest.raises(CnnlabError, match="was trained on the codes of the autoencoder run .* fingerprint"):
        evaluate_run(clf, device="cpu")
    (clf / runs.SUMMARY).unlink()  # an interrupted run: resuming it would mix the codes of two encoders
    with pytest.raises(CnnlabError, match="fingerprint"):
        train(TrainConfig.from_dict({**TrainConfig.from_yaml(clf / runs.CONFIG).to_dict(), "out": str(copy),
                                     "features_from": str(copy / "ae")}), resume=True)
    shutil.rmtree(copy / "ae")
    meta = json.loads((clf / runs.META).read_text())
    meta["features"]["autoencoder"]["run"] = str(tmp_path / "gone")
    (clf / runs.META).write_text(json.dumps(meta))
    with pytest.raises(CnnlabError, match="depends on the autoencoder run .*gone, which is not there"):
        evaluate_run(clf, device="cpu")


def test_features_from_must_be_a_finished_autoencoder_of_the_right_shape(stage_one, tmp_path):
    with pytest.raises(CnnlabError, match="--features-from: .*run folder not found"):
        train(classifier(tmp_path, "a", features_from=str(tmp_path / "nope")))
    with pytest.raises(CnnlabError, match="--features-from .*needs an autoencoder run"):
        train(classifier(tmp_path, "b", features_from=str(stage_one / "dnn-on-codes")))
    with pytest.raises(CnnlabError, match="the autoencoder takes 1x8x8 images, but --data synthetic gives 1x16x16"):
        train(classifier(tmp_path, "c", data="synthetic", features_from=str(stage_one / "ae")))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(stage_one / "ae", unfinished)
    (unfinished / runs.SUMMARY).unlink()
    with pytest.raises(CnnlabError, match="has not finished .*cnnlab train --resume"):
        train(classifier(tmp_path, "d", features_from=str(unfinished)))
    with pytest.raises(CnnlabError, match="augmentation and --tta do not apply"):
        train(classifier(tmp_path, "e", noise=0.1, features_from=str(stage_one / "ae")))
    with pytest.raises(CnnlabError, match="--denoiser needs --features-from"):
        train(classifier(tmp_path, "f", features_from=None, denoiser=str(stage_one / "dae")))


def test_eval_corrupt_writes_a_named_output_and_keeps_the_runs_own(two_stage_run, stage_one):
    run_dir = runs.Path(two_stage_run["run_dir"])
    evaluate_run(run_dir, device="cpu")
    own = (run_dir / "eval.json").read_bytes(), (run_dir / runs.SUMMARY).read_bytes()
    noisy = evaluate_run(run_dir, device="cpu", corrupt="salt-pepper:0.3")
    path = run_dir / runs.EVALS / "salt-pepper-0.3.json"
    assert path.is_file() and (run_dir / runs.EVALS / "salt-pepper-0.3-confusion.png").is_file()
    assert ((run_dir / "eval.json").read_bytes(), (run_dir / runs.SUMMARY).read_bytes()) == own
    assert noisy["corrupt"] == "salt-pepper:0.3" and noisy["acc"] < two_stage_run["test_acc"]
    with pytest.raises(CnnlabError, match="salt-pepper-0.3.json exists .*--overwrite"):
        evaluate_run(run_dir, device="cpu", corrupt="salt-pepper:0.3")
    again = evaluate_run(run_dir, device="cpu", corrupt="salt-pepper:0.3", overwrite=True)
    assert again["acc"] == noisy["acc"]  # the same corrupted test set: seeded
    denoised = evaluate_run(run_dir, device="cpu", corrupt="salt-pepper:0.3", denoiser=stage_one / "dae")
    assert (run_dir / runs.EVALS / "salt-pepper-0.3+denoiser-dae.json").is_file()
    assert denoised["denoiser"] == str((stage_one / "dae").resolve())
    with pytest.raises(CnnlabError, match="--output must be a plain name"):
        evaluate_run(run_dir, device="cpu", corrupt="gaussian:0.1", output="../x")


def test_a_denoiser_set_at_training_is_part_of_the_run(stage_one):
    summary = train(classifier(stage_one, "with-dae", epochs=2, denoiser=str(stage_one / "dae")))
    run_dir = runs.Path(summary["run_dir"])
    record = json.loads((run_dir / runs.META).read_text())["features"]
    assert record["denoiser"]["relative"] == "../dae"
    m = evaluate_run(run_dir, device="cpu")
    assert m["acc"] == pytest.approx(summary["test_acc"], abs=1 / 450)
    with pytest.raises(CnnlabError, match="already passes its images through the denoiser"):
        evaluate_run(run_dir, device="cpu", denoiser=stage_one / "dae", output="twice")


def test_the_cli_trains_two_stage_and_evaluates_corrupted(stage_one, capsys):
    out = stage_one / "cli"
    rc = main(["train", "--data", "digits", "--model", "perceptron", "--features-from", str(stage_one / "ae"),
               "--opt", "adam", "--lr", "0.01", "--epochs", "2", "--out", str(out), "--name", "p", "--threads", "1",
               "--no-progress", "--precision", "fp32"])
    assert rc == 0
    assert main(["eval", str(out / "p"), "--corrupt", "gaussian:0.2", "--json"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("{")][-1]
    assert json.loads(line)["corrupt"] == "gaussian:0.2"
    assert main(["eval", str(out / "p"), "--corrupt", "blur:0.2"]) == 2
    assert "--corrupt 'blur:0.2': unknown kind 'blur'" in capsys.readouterr().err
    assert main(["predict", str(stage_one / "ae"), str(stage_one / "ae" / runs.CURVES)]) == 2
    assert "is an autoencoder" in capsys.readouterr().err


def test_the_folder_path_with_a_generated_face_folder(tmp_path):
    """The paper's second data set is a folder of people; the generated stand-in has its shape."""
    from cnnlab.data.faces import make_face_folder

    make_face_folder(tmp_path / "faces", people=4, photos=5, size=16, seed=0)
    assert sorted(p.name for p in (tmp_path / "faces").iterdir()) == ["person01", "person02", "person03", "person04"]
    folder = dict(FAST, data="folder", data_dir=str(tmp_path / "faces"), image_size=16, channels=1, batch_size=4,
                  out=str(tmp_path), epochs=2, flip=False)
    train(TrainConfig.from_dict({**folder, "name": "ae", "model": "autoencoder", "model_options": {"hidden": [16, 8]},
                                 "objective": "reconstruct", "input_scaling": "minmax"}))
    summary = train(TrainConfig.from_dict({**folder, "name": "clf", "model": "perceptron",
                                           "features_from": str(tmp_path / "ae")}))
    assert summary["features"]["code_size"] == 8 and summary["dataset"] == "folder"
    m = evaluate_run(tmp_path / "clf", device="cpu", corrupt="salt-pepper:0.5")
    assert len(m["per_class"]) == 4 and m["corrupt"] == "salt-pepper:0.5"
