"""The notebook API (cnnlab.api): train on arrays in memory, load a run, predict on arrays and PIL images."""
import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab.data.builtin import load_synthetic
from cnnlab.errors import CnnlabError
from cnnlab.logs import csv_text


def test_train_on_numpy_arrays_then_predict_probabilities(tmp_path):
    ds = load_synthetic(size=12, train_size=256, test_size=64)
    x_train = ds.train_images.permute(0, 2, 3, 1).numpy()  # channels last, as numpy users hold images
    x_test = ds.test_images[:, 0].numpy().astype(np.float32) / 255  # [N, H, W] floats in [0, 1]
    summary = cnnlab.train({"model": "fastnet", "model_options": {"widths": [4, 4, 8]}, "epochs": 3,
                            "batch_size": 32, "out": str(tmp_path), "name": "arrays", "progress": False,
                            "threads": 1}, data=(x_train, ds.train_labels.numpy()), test=(x_test, ds.test_labels))
    assert summary["dataset"] == "arrays" and summary["test_acc"] > 0.5
    run = cnnlab.load_run(summary["run_dir"])
    probs = run.predict(x_test)
    assert probs.shape == (64, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == ds.test_labels.numpy()).mean() == pytest.approx(summary["test_acc"])
    pil = [Image.fromarray(a) for a in ds.test_images[:3, 0].numpy()]
    assert np.allclose(run.predict(pil), probs[:3], atol=1e-5)
    assert run.predict_classes(x_test[:2]) == [run.classes[i] for i in probs[:2].argmax(1)]
    with pytest.raises(CnnlabError, match="data: expected images"):
        cnnlab.train({"out": str(tmp_path)}, data=(np.zeros(5), np.zeros(5, dtype=int)))
    with pytest.raises(CnnlabError, match="labels must be 3 integers"):
        cnnlab.train({"out": str(tmp_path)}, data=(np.zeros((3, 8, 8), np.uint8), [0, 1]))


def test_csv_log_has_every_key():
    text = csv_text([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.4, "val_acc": 0.9}])
    assert text.splitlines() == ["epoch,train_loss,val_acc", "1,0.5,", "2,0.4,0.9"]


def test_run_logger_writes_csv_and_tensorboard_events_when_installed(tmp_path):
    from cnnlab.logs import RunLogger, tensorboard_available

    logger = RunLogger(tmp_path, "metrics.csv", "tb", tensorboard=True)
    logger.epoch([{"epoch": 1, "step": 4, "train_loss": 1.0, "val_acc": 0.5}])
    logger.finish({"steps": 4, "test_acc": 0.6})
    assert (tmp_path / "metrics.csv").read_text().startswith("epoch,step,train_loss,val_acc")
    if not tensorboard_available():
        pytest.skip("tensorboard is not installed (pip install cnnlab[tensorboard])")
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
