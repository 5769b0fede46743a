"""Using a finished (or interrupted) run: reload its model, evaluate it, predict image files."""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from . import runs
from .config import TrainConfig
from .data.prepare import prepare_data
from .device import Runtime
from .errors import CnnlabError
from .predict import predict_probs
from .sizes import as_hw


@dataclass
class LoadedRun:
    run_dir: Path
    config: TrainConfig
    meta: dict[str, Any]
    model: torch.nn.Module
    runtime: Runtime

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def precision(self) -> str:
        return self.runtime.precision


def load_run(run_dir: str | Path, device: str = "auto", denoiser: str | Path | None = None,
             weights: str = "auto") -> LoadedRun:
    """Rebuild a run's model from its config and weights (``weights``: see :data:`WEIGHT_CHOICES`).

    A two-stage run (``--features-from``) comes back as its whole pipeline, images -> [denoiser ->]
    encoder -> classifier, and ``meta`` describes the images it takes
    (:func:`cnnlab.two_stage.compose_run`); the autoencoder runs it depends on must still be there,
    unchanged. ``denoiser`` (a finished autoencoder run) puts that autoencoder's reconstruction in
    front of any classifier (:func:`cnnlab.two_stage.with_denoiser`).
    """
    from .two_stage import compose_run, load_stage, with_denoiser

    run_dir = runs.check_run_dir(run_dir)
    cfg = TrainConfig.from_yaml(run_dir / runs.CONFIG)
    meta = runs.read_meta(run_dir)
    model = runs.load_model(run_dir, meta)
    if weights == "auto" and (run_dir / runs.BEST_WEIGHTS).is_file():
        weights = "best"  # the weights chosen on validation, which the summary's test figures come from
    if weights != "auto":
        _load_chosen_weights(model, run_dir, weights, meta)
    if meta.get("features"):
        model, meta = compose_run(run_dir, meta, model)
    if denoiser is not None:
        if is_autoencoder(cfg):
            raise CnnlabError(f"--denoiser {denoiser}: {run_dir} is an autoencoder; a denoiser goes in front of a "
                              f"classifier run")
        if (meta.get("features") or {}).get("denoiser"):
            raise CnnlabError(f"--denoiser {denoiser}: {run_dir} already passes its images through the denoiser "
                              f"{meta['features']['denoiser']['run']}")
        model, meta = with_denoiser(model, meta, load_stage(denoiser, "--denoiser", "denoiser"), run_dir)
    runtime = Runtime.resolve(device, cfg.precision, cfg.channels_last, training=False)
    model.to(runtime.device).eval()
    return LoadedRun(run_dir, cfg, meta, model, runtime)


# which of a run's weights to use: auto = the best on validation (best.safetensors, what the summary's test
# figures come from), else the final weights, else the last checkpoint (what eval and predict use)
WEIGHT_CHOICES = ("auto", "final", "last", "best")


def _load_chosen_weights(model: torch.nn.Module, run_dir: Path, weights: str, meta: dict[str, Any]) -> None:
    """``final``: model.safetensors, written when training ends; ``last``: checkpoint.pt, the last saved epoch
    (its EMA weights when the run keeps an average); ``best``: best.safetensors, the best epoch on validation."""
    from .checkpoint import load_checkpoint

    if weights not in WEIGHT_CHOICES:
        raise CnnlabError(f"--weights must be one of {', '.join(WEIGHT_CHOICES[1:])}, got {weights!r}")
    if weights == "best":
        if not (run_dir / runs.BEST_WEIGHTS).is_file():
            raise CnnlabError(f"--weights best: {run_dir} has no {runs.BEST_WEIGHTS} (trained with --val-split 0, or "
                              f"before its first validation); use --weights final or last")
        from .checkpoint import load_weights

        try:
            model.load_state_dict(load_weights(run_dir / runs.BEST_WEIGHTS))
        except RuntimeError as e:
            raise CnnlabError(f"{run_dir / runs.BEST_WEIGHTS}: weights do not match model {meta['model']!r} "
                              f"({str(e).splitlines()[0]})") from None
        return
    if weights == "final":
        if not (run_dir / runs.WEIGHTS).exists():
            raise CnnlabError(f"{run_dir}: no {runs.WEIGHTS} (the run has not finished); use --weights last for its "
                              f"last checkpoint")
        return  # runs.load_model prefers them
    if not (run_dir / runs.CHECKPOINT).exists():
        raise CnnlabError(f"{run_dir}: no {runs.CHECKPOINT} to take the last weights from; use --weights final")
    ckpt = load_checkpoint(run_dir / runs.CHECKPOINT)
    state = ckpt["model"] if ckpt.get("ema") is None else runs._ema_weights(ckpt["ema"])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CnnlabError(f"{run_dir / runs.CHECKPOINT}: weights do not match model {meta['model']!r} "
                          f"({str(e).splitlines()[0]})") from None


def is_autoencoder(cfg: TrainConfig) -> bool:
    """Was the run trained to reconstruct its input (an autoencoder) rather than to classify?"""
    return cfg.objective.partition(":")[0] == "reconstruct"


def evaluate_run(run_dir: str | Path, data: str | None = None, data_dir: str | None = None, tta: str | None = None,
                 device: str = "auto", batch_size: int = 1024, as_json: bool = False, corrupt: str | None = None,
                 corrupt_seed: int = 0, denoiser: str | Path | None = None, output: str | None = None,
                 overwrite: bool = False, weights: str = "auto") -> dict[str, Any]:
    """All metrics of a run's model on the test split; printed, and saved as eval.json + eval-confusion.png.

    ``corrupt`` (``KIND:LEVEL``, :mod:`cnnlab.data.corrupt`) evaluates on a corrupted copy of the test
    split (seeded by ``corrupt_seed``), ``denoiser`` through a denoising autoencoder run. Such an
    evaluation (or any with ``output``) is a *named* one: it goes to ``evals/<name>.json`` (+
    ``<name>-confusion.png``), never over the run's own eval.json, and an existing one is kept unless
    ``overwrite``. An autoencoder run reports its reconstruction error instead (against the clean
    test images when corrupted: the denoising error).
    """
    from .data.corrupt import corrupt_images, parse_corruption
    from .metrics import evaluate_predictions, format_report, plot_confusion

    corruption = parse_corruption(corrupt) if corrupt else None
    run_dir = runs.check_run_dir(run_dir)
    name = eval_name(corruption, denoiser, output)
    # eval's own files: the run's confusion.png is training's final report and stays as it was
    path, confusion_path = run_dir / "eval.json", run_dir / "eval-confusion.png"
    if name is not None:
        path, confusion_path = run_dir / runs.EVALS / f"{name}.json", run_dir / runs.EVALS / f"{name}-confusion.png"
        if path.exists() and not overwrite:
            raise CnnlabError(f"{path} exists (an earlier evaluation); keep it and choose another --output NAME, or "
                              f"replace it with --overwrite")
    run = load_run(run_dir, device, denoiser, weights=weights)
    # the images as stored: the model (or the two-stage pipeline) applies its own scaling
    cfg = run.config.replace(data=data or run.config.data, data_dir=data_dir or run.config.data_dir,
                             train_subset=None, test_subset=None, features_from=None, denoiser=None,
                             input_scaling="standard")
    ds = prepare_data(cfg)
    want = runs.input_shape(run.meta)
    got = (ds.in_channels, ds.length) if ds.is_signal else (ds.in_channels, *ds.image_size)
    if got != want:  # (C, H, W) images or (C, L) 1-D signals
        kind = "signals" if ds.is_signal else "images"
        raise CnnlabError(f"--data {cfg.data}: {kind} are {'x'.join(map(str, got))} but the model takes "
                          f"{'x'.join(map(str, want))}")
    if list(ds.classes) != list(run.meta["classes"]):  # the same names in the same order, not just as many
        theirs, ours = list(ds.classes), list(run.meta["classes"])
        diff = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        raise CnnlabError(f"--data {cfg.data}: its classes ({len(theirs)}) are not the model's ({len(ours)}): "
                          f"class {diff} is {theirs[diff] if diff < len(theirs) else 'missing'!r} in the data, "
                          f"{ours[diff] if diff < len(ours) else 'missing'!r} in the model")
    images = corrupt_images(ds.test_images, corruption, corrupt_seed) if corruption else ds.test_images
    context = {"dataset": cfg.data, "evaluated_on": ds.extra.get("evaluated_on", "test split"),
               "corrupt": str(corruption) if corruption else None,
               "corrupt_seed": corrupt_seed if corruption else None,
               "denoiser": str(Path(denoiser).resolve()) if denoiser else None}
    if is_autoencoder(run.config):
        from .objectives import EvalSetup
        from .objectives.reconstruct import reconstruction_error

        setup = EvalSetup(run.runtime, run.meta["mean"], run.meta["std"], "none", batch_size)
        m = {**reconstruction_error(run.model, images, ds.test_images, setup), **context}
        runs.write_json(path, m)
        print(json.dumps(m) if as_json else f"reconstruction error against the clean test images: SSE "
              f"{m['test_loss']:.4g} per image, MSE {m['test_mse']:.4g} per pixel" +
              (f" (inputs corrupted by {corruption})" if corruption else ""))
        return m
    tta = tta or run.config.tta
    probs = predict_probs(run.model, images, run.meta["mean"], run.meta["std"], run.runtime, tta, batch_size)
    m = evaluate_predictions(probs, ds.test_labels, ds.num_classes, run.meta["classes"])
    m.update(tta=tta, **context)
    runs.write_json(path, m)
    plot_confusion(m["confusion"], run.meta["classes"], confusion_path)
    print(json.dumps(m) if as_json else format_report(m))
    return m


def eval_name(corruption, denoiser: str | Path | None, output: str | None) -> str | None:
    """The name of a named evaluation (``evals/<name>.json``): ``output``, else derived from the
    corruption and the denoiser, e.g. ``salt-pepper-0.3+denoiser-dae``; None for the plain one."""
    if output is not None:
        if not output or output in (".", "..") or "/" in output or "\\" in output:
            raise CnnlabError(f"--output must be a plain name (it becomes evals/NAME.json), got {output!r}")
        return output
    parts = ([corruption.label] if corruption else []) + ([f"denoiser-{Path(denoiser).name}"] if denoiser else [])
    return "+".join(parts) or None


def collect_images(paths: list[str]) -> list[tuple[Path, bool]]:
    """Expand folders (recursively) into image files, each paired with "named explicitly by the user".

    A missing path is an error naming it.
    """
    from .data.folder import IMAGE_EXTENSIONS

    files: list[tuple[Path, bool]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not found:
                raise CnnlabError(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files += [(f, False) for f in found]
        elif p.is_file():
            files.append((p, True))
        else:
            raise CnnlabError(f"{p}: no such file or folder")
    return files


def decode_images(files: list[tuple[Path, bool]], size, channels: int) -> tuple[list[Path], torch.Tensor | None]:
    """Decode images as the training data was; an unreadable file found in a folder is skipped with a
    warning naming it, one the user named explicitly is an error. ``(kept files, uint8 [N,C,H,W] or None)``."""
    import warnings

    from .data.folder import load_image

    kept, images = [], []
    for f, explicit in files:
        try:
            images.append(load_image(f, size, channels))
        except CnnlabError as e:
            if explicit:
                raise
            warnings.warn(f"skipped {e}")
            continue
        kept.append(f)
    return kept, (torch.stack(images) if images else None)


def read_images(files: list[tuple[Path, bool]], size, channels: int) -> tuple[list[Path], torch.Tensor]:
    """:func:`decode_images` of every file at once; at least one must be readable."""
    kept, images = decode_images(files, size, channels)
    if images is None:
        raise CnnlabError("no readable images among the given paths")
    return kept, images


# --------------------------------------------------------------------------- predictors: a run or an exported file

BACKENDS = ("auto", "torch", "onnxruntime")
EXPORTED_SUFFIXES = (".onnx", ".pt2")


def require(*modules: str, extra: str = "export") -> None:
    """Check that optional packages are installed; the error names the extra that brings them."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CnnlabError(f"this needs {', '.join(missing)} (the {extra} extra): pip install 'cnnlab[{extra}]'")


def onnx_session(path: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session (``threads``: intra-op threads; default torch's thread count)."""
    require("onnxruntime")
    import onnxruntime as ort

    from .errors import first_line

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path) if isinstance(path, Path) else path, sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  onnxruntime raises its own types for unreadable models
        raise CnnlabError(f"{path}: onnxruntime cannot load it ({first_line(e)})") from None


def top_classes(probs: torch.Tensor, classes: list[str], top_k: int) -> list[dict[str, Any]]:
    """The ``top_k`` most probable classes of one image: ``[{"class": name, "probability": p}, ...]``."""
    top = torch.topk(probs, min(top_k, len(classes)))
    return [{"class": classes[i], "probability": round(float(v), 6)} for v, i in zip(top.values, top.indices)]


class Predictor:
    """uint8 images [N, C, H, W] -> class probabilities [N, K], from a run folder or an exported file.

    ``predict``, ``serve`` and the benchmarks use this one interface; every implementation takes
    images exactly as :func:`cnnlab.data.folder.load_image` decodes them.
    """

    source: Path
    backend: str
    classes: list[str]
    in_channels: int
    image_size: int | list[int] | None  # as meta.json stores it: S (square) or [H, W]; None for signals
    info: dict[str, Any]
    length: int | None = None  # a run on 1-D signals [C, length] (cnnlab.data.signals) takes float32 signals

    def probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        raise NotImplementedError

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the images the model takes."""
        return as_hw(self.image_size)

    def describe(self) -> dict[str, Any]:
        """What a client needs to know: classes, input shape, where the model comes from."""
        shape = [self.in_channels, self.length] if self.length else [self.in_channels, *self.image_hw]
        return {"source": str(self.source), "backend": self.backend, "classes": list(self.classes),
                "input": {"dtype": "float32" if self.length else "uint8", "shape": ["batch", *shape]}, **self.info}


class TorchPredictor(Predictor):
    """A run folder's model in PyTorch: :func:`cnnlab.predict.predict_probs` (every TTA mode)."""

    def __init__(self, run: LoadedRun, batch_size: int = 256):
        if is_autoencoder(run.config):
            raise CnnlabError(f"{run.run_dir} is an autoencoder (--objective reconstruct): it has no classes to "
                              f"predict; train a classifier on its codes with --features-from {run.run_dir}")
        self.run, self.batch_size = run, batch_size
        self.source, self.backend = run.run_dir, "torch"
        self.classes, self.in_channels, self.image_size = run.meta["classes"], run.meta["in_channels"], \
            run.meta["image_size"]
        self.length = run.meta.get("length")
        self.info = {"model": run.meta["model"], "run": str(run.run_dir.resolve()), "device": str(run.device),
                     "precision": run.precision}

    def probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        m = self.run.meta
        return predict_probs(self.run.model, images, m["mean"], m["std"], self.run.runtime, tta, self.batch_size)


def read_exported_metadata(path: Path, raw: str | None) -> dict[str, Any]:
    if raw is None:
        raise CnnlabError(f"{path}: no cnnlab metadata in the file; predict and serve take files written by "
                          f"`cnnlab export`")
    try:
        meta = json.loads(raw)
        for key in ("classes", "in_channels", "image_size", "task", "normalization"):
            meta[key]
    except (ValueError, KeyError, TypeError) as e:
        raise CnnlabError(f"{path}: damaged cnnlab metadata ({e})") from None
    if meta["normalization"] != "in-graph":
        raise CnnlabError(f"{path}: unknown normalization {meta['normalization']!r} in its metadata")
    return meta


class ExportedPredictor(Predictor):
    """A file written by ``cnnlab export``: ONNX on onnxruntime, or a .pt2 program on PyTorch.

    The graph normalizes and applies softmax itself, so uint8 images go in as they are. TTA: ``none`` and
    ``flip`` (the mirror of the pixels equals the mirror of the normalized input when the normalization
    is per channel); the shifted views zero-pad the *normalized* input, which cannot be fed to a graph
    that takes pixels, so ``shift`` modes need the run folder.
    """

    def __init__(self, path: str | Path, batch_size: int = 256, threads: int | None = None):
        path = Path(path)
        self.source, self.batch_size = path, batch_size
        if path.suffix == ".onnx":
            self.session = onnx_session(path, threads)
            self.backend = "onnxruntime"
            meta = read_exported_metadata(path, self.session.get_modelmeta().custom_metadata_map.get("cnnlab"))
            self.input_name = self.session.get_inputs()[0].name
        else:
            from .errors import first_line

            extra = {"cnnlab.json": ""}
            try:
                program = torch.export.load(path, extra_files=extra)
            except Exception as e:  # noqa: BLE001  a damaged or foreign file
                raise CnnlabError(f"{path}: not a readable torch.export program ({first_line(e)})") from None
            self.module = program.module()
            self.backend = "torch.export"
            meta = read_exported_metadata(path, extra["cnnlab.json"] or None)
        if meta["task"] != "classify":
            raise CnnlabError(f"{path} is an exported {meta['task']} model (an autoencoder): it has no classes to "
                              f"predict")
        self.meta = meta
        self.classes, self.in_channels, self.image_size = meta["classes"], meta["in_channels"], meta["image_size"]
        self.info = {"model": meta.get("model"), "run": meta.get("source_run"), "weights": meta.get("weights"),
                     "int8": meta.get("int8", False), "file": str(path.resolve())}

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.backend == "onnxruntime":
            return torch.from_numpy(self.session.run(None, {self.input_name: images.contiguous().numpy()})[0])
        with torch.no_grad():
            return self.module(images).float()

    def probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        if tta not in ("none", "flip"):
            raise CnnlabError(f"--tta {tta}: an exported model ({self.source.name}) takes pixels and normalizes "
                              f"inside; its shifted views cannot be reproduced. Use --tta none or flip, or the run "
                              f"folder ({self.meta.get('source_run')})")
        if tta == "flip" and len(self.meta.get("mean", [])) != self.in_channels:
            raise CnnlabError(f"--tta flip: {self.source.name} normalizes per pixel, so mirrored pixels are not its "
                              f"mirrored input; use the run folder ({self.meta.get('source_run')})")
        if images.dtype != torch.uint8 or images.shape[1:] != (self.in_channels, *self.image_hw):
            raise CnnlabError(f"expected uint8 images [N, {self.in_channels}, {', '.join(map(str, self.image_hw))}], "
                              f"got {images.dtype} {list(images.shape)}")
        out = []
        for chunk in images.split(self.batch_size):
            p = self._forward(chunk)
            if tta == "flip":
                p = (p + self._forward(chunk.flip(3))) / 2
            out.append(p.float())
        return torch.cat(out) if out else torch.empty(0, len(self.classes))


def load_predictor(source: str | Path, backend: str = "auto", device: str = "auto", weights: str = "auto",
                   batch_size: int = 256) -> Predictor:
    """A run folder (PyTorch, or its exported model.onnx with ``backend="onnxruntime"``), a ``.onnx`` file
    (onnxruntime) or a ``.pt2`` file (PyTorch) as a :class:`Predictor`."""
    if backend not in BACKENDS:
        raise CnnlabError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be >= 1, got {batch_size}")
    path = Path(source)
    if path.is_dir():
        if backend == "onnxruntime":
            exported = path / "model.onnx"
            if not exported.is_file():
                raise CnnlabError(f"--backend onnxruntime: {path} holds no exported model.onnx; write it with "
                                  f"`cnnlab export {path}` (or pass the .onnx file itself)")
            return ExportedPredictor(exported, batch_size)
        return TorchPredictor(load_run(path, device, weights=weights), batch_size)
    if not path.exists():
        raise CnnlabError(f"{path}: run folder not found (nor an exported model file)")
    if path.suffix not in EXPORTED_SUFFIXES:
        raise CnnlabError(f"{path}: expected a run folder, a .onnx file or a .pt2 file (from `cnnlab export`)")
    if weights not in ("auto", None):
        raise CnnlabError(f"--weights applies to a run folder; {path.name} holds the weights it was exported with")
    if path.suffix == ".onnx" and backend == "torch":
        raise CnnlabError(f"--backend torch: {path.name} is an ONNX file, run by onnxruntime; pass the run folder "
                          f"or a .pt2 export to use PyTorch")
    if path.suffix == ".pt2" and backend == "onnxruntime":
        raise CnnlabError(f"--backend onnxruntime: {path.name} is a torch.export program; pass a .onnx export")
    return ExportedPredictor(path, batch_size)


def iter_predictions(predictor: Predictor, paths: list[str], top_k: int = 5, tta: str = "none",
                     batch_size: int = 64) -> Iterator[dict[str, Any]]:
    """``{"file", "top"}`` per readable image, decoded and predicted ``batch_size`` files at a time, so memory
    stays that of one batch however large the folders are."""
    if top_k < 1:
        raise CnnlabError(f"--top-k must be >= 1, got {top_k}")
    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be >= 1, got {batch_size}")
    if predictor.length:  # a signal run: every file (.npy/.npz/.csv) holds one or more signals
        yield from iter_signal_predictions(predictor, paths, top_k, tta)
        return
    files = collect_images(paths)
    seen = 0
    for start in range(0, len(files), batch_size):
        kept, images = decode_images(files[start:start + batch_size], predictor.image_hw, predictor.in_channels)
        if images is None:
            continue
        for f, p in zip(kept, predictor.probabilities(images, tta)):
            seen += 1
            # a file name that is not UTF-8 is shown with \x escapes: printing it must not fail under a
            # strict UTF-8 stdout, nor the CSV writer
            yield {"file": os.fsencode(f).decode("utf-8", "backslashreplace"),
                   "top": top_classes(p, predictor.classes, top_k)}
    if not seen:
        raise CnnlabError("no readable images among the given paths")


def iter_signal_predictions(predictor: Predictor, paths: list[str], top_k: int = 5, tta: str = "none"
                            ) -> Iterator[dict[str, Any]]:
    """``{"file": "PATH:INDEX", "top"}`` per signal of each file (``INDEX``: the row, or the CSV line),
    resampled to the run's length (:func:`cnnlab.data.signals.read_signal_file`)."""
    from .data.signals import read_signal_file

    for path in paths:
        if not Path(path).is_file():
            raise CnnlabError(f"{path}: no such signal file (.npy, .npz or .csv)")
        names, signals = read_signal_file(path, predictor.length, predictor.in_channels)
        for name, p in zip(names, predictor.probabilities(signals, tta)):
            yield {"file": name, "top": top_classes(p, predictor.classes, top_k)}


def predict_files(source: str | Path, paths: list[str], top_k: int = 5, tta: str = "none", device: str = "auto",
                  as_json: bool = False, backend: str = "auto", batch_size: int = 64,
                  csv_path: str | Path | None = None, weights: str = "auto",
                  collect: bool = True) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image, preprocessed exactly as the run's training data.

    ``source``: a run folder or a file from ``cnnlab export``. Results are printed as they come (one JSON
    object per line with ``as_json``) and, with ``csv_path``, written to a CSV file (``file, class_1,
    probability_1, ...``; it appears complete or not at all). ``collect=False`` returns an empty list so that
    memory does not grow with the number of files.
    """
    import csv

    from .files import atomic_path

    predictor = load_predictor(source, backend, device, weights, batch_size=max(batch_size, 1))
    results: list[dict[str, Any]] = []
    k = min(top_k, len(predictor.classes))
    with contextlib.ExitStack() as stack:
        writer = None
        if csv_path is not None:
            if Path(csv_path).is_dir():
                raise CnnlabError(f"--csv {csv_path}: is a folder; give a file name")
            if not Path(csv_path).parent.exists():
                raise CnnlabError(f"--csv {csv_path}: folder {Path(csv_path).parent} does not exist")
            tmp = stack.enter_context(atomic_path(csv_path))
            handle = stack.enter_context(open(tmp, "w", newline=""))
            writer = csv.writer(handle)
            writer.writerow(["file"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "probability")])
        for row in iter_predictions(predictor, paths, top_k, tta, batch_size):
            if as_json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{row['file']}: " + ", ".join(f"{r['class']} {100 * r['probability']:.1f}%"
                                                     for r in row["top"]), flush=True)
            if writer is not None:
                writer.writerow([row["file"]] + [v for r in row["top"] for v in (r["class"], r["probability"])])
            if collect:
                results.append(row)
    return results
