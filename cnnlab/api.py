"""The notebook API: train on arrays already in memory, load a run, predict on arrays or PIL images.

::

    import cnnlab
    summary = cnnlab.train({"model": "fastnet", "epochs": 5}, data=(x_train, y_train), test=(x_test, y_test))
    run = cnnlab.load_run(summary["run_dir"])
    probs = run.predict(x_test)          # numpy [N, classes], the best weights (chosen on validation)

Arrays may be numpy arrays or tensors: images [N, H, W], [N, H, W, C] or [N, C, H, W] (uint8 0..255, or
floats in [0, 1]), or codes/features [N, D] (float, trained as [N, D, 1, 1]); labels are integers
0..K-1. They become a registered in-memory dataset (:func:`register_arrays`, also usable by name in a
config), so the run goes through exactly the CLI's path: the same config checks, validation split,
selection and errors. A config file cannot bring the arrays back: a run trained on arrays is
resumed or evaluated by passing them again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import CnnlabError

ARRAYS = "arrays"  # the dataset name `train(config, data=...)` registers
TEST_FRACTION = 0.2  # held out as the test split when `test=` is not given (stratified, seed 0)
_STORE: dict[str, dict[str, Any]] = {}


def as_images(x: Any, what: str = "data") -> torch.Tensor:
    """Images as uint8 [N, C, H, W], or features as float32 [N, D, 1, 1] (see the module doc)."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach().cpu()
    if t.dim() == 2:  # codes / features
        return t.float().reshape(*t.shape, 1, 1).contiguous()
    if t.dim() == 3:
        t = t[:, None]
    if t.dim() != 4:
        raise CnnlabError(f"{what}: expected images [N,H,W], [N,H,W,C] or [N,C,H,W], or features [N,D]; "
                          f"got shape {tuple(t.shape)}")
    if t.shape[1] not in (1, 3) and t.shape[-1] in (1, 3):  # channels last (numpy / PIL layout)
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] not in (1, 3):
        raise CnnlabError(f"{what}: images need 1 or 3 channels, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.contiguous()
    if t.is_floating_point():
        if len(t) and (float(t.min()) < 0 or float(t.max()) > 1):
            raise CnnlabError(f"{what}: float images must be in [0, 1] (or pass uint8 0..255); got "
                              f"[{float(t.min()):.3g}, {float(t.max()):.3g}]")
        return (t * 255).round().to(torch.uint8).contiguous()
    if len(t) and (int(t.min()) < 0 or int(t.max()) > 255):
        raise CnnlabError(f"{what}: integer images must be in 0..255")
    return t.to(torch.uint8).contiguous()


def as_labels(y: Any, n: int, what: str) -> torch.Tensor:
    t = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if t.dim() != 1 or len(t) != n or t.is_floating_point() or t.dtype == torch.bool:
        raise CnnlabError(f"{what}: labels must be {n} integers (one per image), got {t.dtype} {tuple(t.shape)}")
    if n and int(t.min()) < 0:
        raise CnnlabError(f"{what}: labels must be >= 0")
    return t.long()


def _pair(value: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise CnnlabError(f"{what}: expected a pair (images, labels)")
    x = as_images(value[0], what)
    return x, as_labels(value[1], len(x), what)


def register_arrays(name: str, data: tuple[Any, Any], test: tuple[Any, Any] | None = None,
                    classes: Sequence[str] | None = None, flip_ok: bool = False) -> str:
    """Register (or replace) an in-memory dataset called ``name``; train on it with ``{"data": name}``.

    ``test`` missing: a stratified :data:`TEST_FRACTION` of ``data`` is held out as the test split.
    ``flip_ok``: whether a horizontal flip keeps the label (default False: flips stay off unless asked).
    """
    from .data.base import DATASETS, DatasetSpec, register_dataset

    tr_x, tr_y = _pair(data, "data")
    if test is None:
        from .data.split import validation_indices

        held = validation_indices(tr_y, TEST_FRACTION, seed=0)
        keep = torch.ones(len(tr_y), dtype=torch.bool)
        keep[held] = False
        te_x, te_y, tr_x, tr_y = tr_x[held], tr_y[held], tr_x[keep], tr_y[keep]
    else:
        te_x, te_y = _pair(test, "test")
    if te_x.shape[1:] != tr_x.shape[1:] or te_x.dtype != tr_x.dtype:
        raise CnnlabError(f"test: images {tuple(te_x.shape[1:])} {te_x.dtype} differ from data's "
                          f"{tuple(tr_x.shape[1:])} {tr_x.dtype}")
    k = int(max(tr_y.max() if len(tr_y) else 0, te_y.max() if len(te_y) else 0)) + 1
    classes = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(classes) < k:
        raise CnnlabError(f"classes: {len(classes)} names for labels up to {k - 1}")
    _STORE[name] = {"train": (tr_x, tr_y), "test": (te_x, te_y), "classes": classes, "flip_ok": flip_ok}
    if name not in DATASETS:
        register_dataset(DatasetSpec(name, _loader(name), "arrays given in Python (cnnlab.register_arrays)",
                                     source="arrays", notes={"splits": "as given"}))
    elif DATASETS.get(name).source != "arrays":
        raise CnnlabError(f"register_arrays: {name!r} is a built-in dataset; choose another name")
    return name


def _loader(name: str):
    def load(data_dir: Path | None = None, download: bool = True):
        from .data.base import ArrayDataset, channel_stats

        if name not in _STORE:
            raise CnnlabError(f"dataset {name!r} lives in a Python session: pass the arrays again "
                              f"(cnnlab.train(config, data=(x, y)) or cnnlab.register_arrays)")
        entry = _STORE[name]
        (tr_x, tr_y), (te_x, te_y) = entry["train"], entry["test"]
        if tr_x.dtype == torch.uint8:
            mean, std = channel_stats(tr_x)
        else:  # features: standardised per dimension, like codes (cnnlab.two_stage)
            mean, std = tuple(tr_x.mean((0, 2, 3)).tolist()), tuple(tr_x.std((0, 2, 3)).clamp_min(1e-3).tolist())
        return ArrayDataset(name, tr_x.clone(), tr_y.clone(), te_x.clone(), te_y.clone(), list(entry["classes"]),
                            mean, std, flip_ok=entry["flip_ok"])

    return load


def train(config: Any = None, resume: bool = False, on_epoch=None, *, data: tuple[Any, Any] | None = None,
          test: tuple[Any, Any] | None = None, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """``cnnlab.train``: train as configured; with ``data=(x, y)`` on those arrays (see the module doc)."""
    from .config import TrainConfig
    from .train import train as train_config

    values = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
    if data is not None:
        values["data"] = register_arrays(values.get("data") if values.get("data") in _STORE else ARRAYS,
                                         data, test, classes)
    elif test is not None:
        raise CnnlabError("train: test=(x, y) needs data=(x, y) too")
    return train_config(values, resume=resume, on_epoch=on_epoch)


class Run:
    """A finished (or interrupted) run, loaded for prediction: ``run.predict(x)`` -> probabilities."""

    def __init__(self, path: str | Path, weights: str = "auto", device: str = "auto"):
        from .inference import load_run as load

        self.loaded = load(path, device, weights=weights)
        self.meta = self.loaded.meta
        self.classes: list[str] = list(self.meta["classes"])
        self.summary = _read_summary(self.loaded.run_dir)

    @property
    def run_dir(self) -> Path:
        return self.loaded.run_dir

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    def images(self, x: Any) -> torch.Tensor:
        """``x`` (arrays, tensors, a PIL image or a list of them, image files) as the model's uint8 input."""
        from . import runs
        from .data.prepare import convert_images

        c, side = self.meta["in_channels"], runs.image_hw(self.meta)
        if isinstance(x, (str, Path)) or _is_pil(x):
            x = [x]
        if isinstance(x, (list, tuple)) and x and (isinstance(x[0], (str, Path)) or _is_pil(x[0])):
            return torch.stack([_one_image(v, side, c) for v in x])
        images = as_images(x, "predict")
        if images.dtype != torch.uint8:  # features: as given
            return images
        return convert_images(images, side, c)

    def predict(self, x: Any, tta: str | None = None, batch_size: int = 256) -> np.ndarray:
        """Class probabilities, numpy [N, classes] (float32), preprocessed exactly as in training."""
        from .predict import predict_probs

        images = self.images(x)
        probs = predict_probs(self.loaded.model, images, self.meta["mean"], self.meta["std"], self.loaded.runtime,
                              tta or "none", batch_size)
        return probs.numpy()

    def predict_classes(self, x: Any, **kw: Any) -> list[str]:
        return [self.classes[i] for i in self.predict(x, **kw).argmax(1)]


def load_run(path: str | Path, weights: str = "auto", device: str = "auto") -> Run:
    """``cnnlab.load_run``: a run folder ready to predict (``weights``: auto = best on validation, else final)."""
    return Run(path, weights, device)


def _read_summary(run_dir: Path) -> dict[str, Any]:
    from . import runs

    path = Path(run_dir) / runs.SUMMARY
    return runs.read_json(path) if path.is_file() else {}


def _is_pil(x: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(x, Image.Image)


def _one_image(v: Any, size: tuple[int, int], channels: int) -> torch.Tensor:
    """A file or PIL image, preprocessed as ``cnnlab predict`` does (cnnlab.data.folder)."""
    from .data import folder

    if not _is_pil(v):
        return folder.load_image(v, size, channels)
    return torch.from_numpy(folder.fit_image(v, size, channels)).permute(2, 0, 1).contiguous()
