"""Deployable files from a run: ONNX (onnxruntime), ``torch.export`` programs (.pt2) and int8 ONNX.

What an exported file computes (the same for every format)::

    uint8 images [batch, C, H, W]  ->  /255, (x - mean) / std  ->  model  ->  softmax  ->  probabilities [batch, K]

* **Normalization is inside the graph**: the file takes decoded pixels exactly as
  :func:`cnnlab.data.folder.load_image` produces them (resized and centre-cropped to the run's
  side, the run's channels) and applies the run's mean/std itself, with the very function training
  uses (:func:`cnnlab.data.loader.to_model_input`). A phone app or another runtime feeds pixels and
  cannot get the normalization wrong. The mean/std, class names, input shape, source run and
  weights are also recorded in the file's metadata (ONNX ``metadata_props["cnnlab"]``; a .pt2
  holds them as the extra file ``cnnlab.json``) for information and for ``cnnlab predict``/``serve``.
* Classifiers end in a softmax (output ``probabilities``); an autoencoder run exports its
  reconstruction (output ``reconstruction``, in normalized units). The batch size is dynamic.
* After every export a **parity check** runs the written file (onnxruntime, or the loaded .pt2
  program) on real images from the run's test split and compares it with PyTorch
  (:func:`cnnlab.predict.predict_probs`, eager fp32): the largest absolute difference of a
  probability and the top-1 agreement. They are printed and stored in ``export.json`` beside the
  file; beyond the tolerance the export fails (:class:`CnnlabError`) and no file is left at the
  target path.
* ``int8``: static quantization (QDQ, per-channel int8 weights, uint8 activations) with
  onnxruntime's quantizer, calibrated on a few hundred training images; test accuracy, size and
  latency of the fp32 graph and the int8 graph are measured and recorded side by side.

The ONNX path uses ``torch.onnx.export``'s dynamo exporter (``torch.export`` -> ONNX via
onnxscript's torchlib). Building the torchlib registry costs several seconds per call (it parses the
source of ~500 functions), so it is built once per process and opset and reused through the
exporter's own ``_core.export``; if that internal entry point is missing (another torch), the
public ``torch.onnx.export`` is used instead.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from . import runs
from .errors import CnnlabError, first_line
from .inference import onnx_session, require

FORMATS = ("onnx", "pt2")
WEIGHT_CHOICES = ("final", "last", "best")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2"}
RECORD = "export.json"          # parity and int8 figures of every file exported into a folder, by file name
METADATA_KEY = "cnnlab"          # ONNX metadata_props key / .pt2 extra file stem holding the metadata JSON
METADATA_VERSION = 1
INPUT_NAME = "images"
PARITY_IMAGES = 256              # test images the parity check runs
CALIBRATION_IMAGES = 256         # training images that calibrate int8 activations
TOLERANCE = 1e-3                 # fp32 graphs: max |p_exported - p_torch| over the parity images (fp32 rounding
                                 # in a 110-layer net reaches 1e-4; a wrong normalization or layer, 1e-2 and more)
MIN_AGREEMENT = 0.99             # fp32 graphs: top-1 agreement (only near-ties can flip under TOLERANCE)
INT8_MIN_AGREEMENT = 0.90        # int8: top-1 agreement with fp32 PyTorch; its accuracy is reported besides
MAX_BATCH = 1 << 16              # the dynamic batch dimension's upper bound


def default_opset() -> int:
    """The opset torch's exporter targets natively (``torch.onnx`` TORCHLIB_OPSET, 18 for torch 2.13)."""
    try:
        from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET
        return int(TORCHLIB_OPSET)
    except ImportError:  # pragma: no cover - another torch layout
        return 18


# --------------------------------------------------------------------------- the graph that is exported


class Deployable(nn.Module):
    """uint8 images [B, C, H, W] -> probabilities [B, K] (or the raw output for a non-classifier).

    Normalization and softmax are part of the module, computed by the functions ``predict`` and
    training use, so the exported graph is the whole prediction path.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], softmax: bool = True):
        super().__init__()
        self.model = model
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(shape).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(shape).clone())
        self.softmax = softmax

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from .data.loader import to_model_input

        out = self.model(to_model_input(images, self.mean, self.std)).float()
        return torch.softmax(out, dim=1) if self.softmax else out


def output_name(task: str) -> str:
    return "probabilities" if task == "classify" else "reconstruction"


# --------------------------------------------------------------------------- exporting any module


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs one warning per torchvision op it cannot find and prints progress lines;
    neither concerns a cnnlab user. Real failures still raise."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch.fx",
                                              "torch._dynamo", "torch._functorch", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.(onnx|export|_export)")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def inference_form(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with train-time-random layers replaced by what they compute in eval mode.

    ``nn.RReLU`` (thesis eq. 5.6-5.7) is a leaky ReLU of slope (l + u) / 2 at inference, but
    ``torch.export`` records it as ``rrelu_with_noise``, which has no ONNX translation. The copy
    computes exactly the same function (the parity check confirms it); the run's model is untouched.
    """
    import copy

    if not any(isinstance(m, nn.RReLU) for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    for name, m in list(module.named_modules()):
        if isinstance(m, nn.RReLU):
            module.set_submodule(name, nn.LeakyReLU((m.lower + m.upper) / 2, inplace=m.inplace))
    return module


def root_cause(error: BaseException) -> str:
    """The innermost message of an exporter error chain (the outer ones are generic "step 3/3 failed")."""
    seen, e = [], error
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    inner = seen[-1]
    return f"{type(inner).__name__}: {first_line(inner)}"


def check_deterministic(module: nn.Module, example: torch.Tensor, name: str) -> None:
    """A graph freezes what the module computes once; a module that answers the same input differently in
    eval mode (a random op left on at inference) cannot be exported faithfully, so say so now."""
    with torch.no_grad():
        a, b = module(example), module(example)
    if not torch.equal(a, b):
        raise CnnlabError(f"model {name!r} cannot be exported: it gives different outputs for the same input in eval "
                          f"mode (a random operation runs at inference, max difference "
                          f"{(a - b).abs().max().item():.3g}), so no fixed graph can reproduce it")


def trace(module: nn.Module, example: torch.Tensor, name: str) -> torch.export.ExportedProgram:
    """``torch.export`` with a dynamic batch dimension; a failure becomes one line saying why."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with _quiet_exporter():
            return torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as e:  # noqa: BLE001  torch.export raises many types; all mean "cannot be exported"
        raise CnnlabError(f"model {name!r} cannot be exported with torch.export: {root_cause(e)}") from e


_REGISTRIES: dict[int, Any] = {}


def _onnx_program(program: torch.export.ExportedProgram, example: torch.Tensor, opset: int, out_name: str):
    """ExportedProgram -> torch.onnx.ONNXProgram, reusing one torchlib registry per opset (see the module doc)."""
    names = {"input_names": [INPUT_NAME], "output_names": [out_name]}
    try:
        from torch.onnx._internal.exporter import _constants, _core, _registration
    except ImportError:  # pragma: no cover - the public path
        return torch.onnx.export(program, (example,), dynamo=True, opset_version=opset, verbose=False, **names)
    registry_opset = max(opset, _constants.TORCHLIB_OPSET)  # lower opsets are converted afterwards
    if registry_opset not in _REGISTRIES:
        _REGISTRIES[registry_opset] = _registration.ONNXRegistry.from_torchlib(opset_version=registry_opset)
    return _core.export(program, (example,), registry=_REGISTRIES[registry_opset], opset_version=opset,
                        verbose=False, optimize=True, **names)


def check_opset(opset: int) -> int:
    require("onnx")
    import onnx.defs

    top = onnx.defs.onnx_opset_version()
    if not 7 <= int(opset) <= top:
        raise CnnlabError(f"--opset {opset}: the installed onnx {onnx.__version__} writes opsets 7..{top}; "
                          f"torch exports natively at {default_opset()}")
    return int(opset)


def export_module(module: nn.Module, path: str | Path, fmt: str, example: torch.Tensor, metadata: dict[str, Any],
                  name: str = "model", opset: int | None = None, out_name: str = "probabilities") -> Path:
    """Write ``module`` (eval mode, CPU, fp32) to ``path`` as ONNX or .pt2 with a dynamic batch size.

    ``example`` is one input batch (its batch size is not baked in); ``metadata`` is stored in the
    file. Nothing is checked against PyTorch here: :func:`export_run` does that.
    """
    if fmt not in FORMATS:
        raise CnnlabError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    module = inference_form(module.eval().cpu().float())
    check_deterministic(module, example, name)
    program = trace(module, example, name)
    meta_json = json.dumps(metadata)
    from .files import atomic_write, atomic_write_bytes

    if fmt == "pt2":
        import io

        buffer = io.BytesIO()  # torch.export.save wants a name ending in .pt2 or a buffer, not our temp name
        torch.export.save(program, buffer, extra_files={f"{METADATA_KEY}.json": meta_json})
        atomic_write_bytes(path, buffer.getvalue())
        return path
    require("onnx", "onnxscript")
    opset = check_opset(opset if opset is not None else default_opset())
    try:
        with _quiet_exporter():
            onnx_program = _onnx_program(program, example, opset, out_name)
    except Exception as e:  # noqa: BLE001  an op without an ONNX translation, a failed opset conversion
        raise CnnlabError(f"model {name!r} cannot be converted to ONNX (opset {opset}): {root_cause(e)}") from e
    proto = onnx_program.model_proto
    import onnx

    onnx.helper.set_model_props(proto, {METADATA_KEY: meta_json})
    proto.producer_name, proto.doc_string = "cnnlab", f"cnnlab export of {metadata.get('model', name)}"
    atomic_write(path, lambda p: onnx.save(proto, str(p)))
    return path


# --------------------------------------------------------------------------- exporting a run


def _resolve_out(run_dir: Path, fmt: str, int8: bool, out: str | Path | None) -> Path:
    if out is None:
        return run_dir / ("model.int8.onnx" if int8 else f"model{SUFFIX[fmt]}")
    out = Path(out)
    if out.is_dir():
        raise CnnlabError(f"--out {out}: is a folder; give a file name ending in {SUFFIX[fmt]}")
    if out.suffix != SUFFIX[fmt]:
        raise CnnlabError(f"--out {out}: a {fmt} file must end in {SUFFIX[fmt]}")
    if not out.parent.exists():
        raise CnnlabError(f"--out {out}: folder {out.parent} does not exist")
    return out


def _sample(images: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images (all when fewer), the same ones every time."""
    if len(images) <= n:
        return images
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx.sort().values]


def compare(reference: torch.Tensor, got: torch.Tensor, task: str) -> dict[str, Any]:
    """max |difference| and, for classifiers, the share of images whose top-1 class agrees."""
    got = torch.as_tensor(got, dtype=torch.float32)
    if got.shape != reference.shape:
        raise CnnlabError(f"exported output has shape {tuple(got.shape)}, PyTorch's {tuple(reference.shape)}")
    diff = (got - reference).abs()
    result = {"images": len(reference), "max_abs_diff": float(diff.max()) if diff.numel() else 0.0}
    if task == "classify":
        result["top1_agreement"] = float((got.argmax(1) == reference.argmax(1)).float().mean())
    return result


def _check_parity(parity: dict[str, Any], tolerance: float | None, min_agreement: float | None, what: str) -> None:
    parity.update(tolerance=tolerance, min_agreement=min_agreement)
    problems = []
    if tolerance is not None and parity["max_abs_diff"] > tolerance:
        problems.append(f"max |difference| {parity['max_abs_diff']:.3g} > tolerance {tolerance:g}")
    agreement = parity.get("top1_agreement")
    if min_agreement is not None and agreement is not None and agreement < min_agreement:
        problems.append(f"top-1 agreement {100 * agreement:.2f}% < {100 * min_agreement:.2f}%")
    parity["passed"] = not problems
    if problems:
        raise CnnlabError(f"parity check failed for {what}: " + "; ".join(problems) +
                          f" on {parity['images']} test images (see export.json)")


def _describe_parity(parity: dict[str, Any]) -> str:
    s = f"max |p - p_torch| {parity['max_abs_diff']:.2e}"
    if parity.get("top1_agreement") is not None:
        s += f", top-1 agreement {100 * parity['top1_agreement']:.2f}%"
    return s + f" on {parity['images']} test images"


def run_onnx(session, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Outputs of an exported ONNX graph for uint8 images [N, C, H, W], in batches."""
    name = session.get_inputs()[0].name
    outs = [torch.from_numpy(session.run(None, {name: chunk.contiguous().numpy()})[0])
            for chunk in images.split(batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def run_program(module: Callable, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    with torch.no_grad():
        outs = [module(chunk).float() for chunk in images.split(batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def latency_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _file_facts(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"torch": torch.__version__}
    for pkg in ("onnx", "onnxscript", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    from . import __version__
    out["cnnlab"] = __version__
    return out


def cpu_name() -> str:
    """The CPU model and the flags that decide fast paths here (quoted with every speed figure)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of avx2/avx512'}"


def update_record(path: Path, record: dict[str, Any]) -> None:
    """Add ``record`` under the file's name to export.json beside it (other files' records are kept)."""
    record_path = path.parent / RECORD
    records = {}
    if record_path.exists():
        try:
            records = json.loads(record_path.read_text())
        except ValueError:
            records = {}
        if not isinstance(records, dict):
            records = {}
    records[path.name] = record
    runs.write_json(record_path, records)


def export_run(run_dir: str | Path, fmt: str = "onnx", weights: str = "auto", opset: int | None = None,
               int8: bool = False, out: str | Path | None = None, data_dir: str | None = None,
               tolerance: float | None = None, min_agreement: float | None = None,
               parity_images: int = PARITY_IMAGES, calibration_images: int = CALIBRATION_IMAGES,
               eval_images: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Export a run's model (``weights``: final, last or best) to ``out`` and check it against PyTorch.

    Returns the record also written to ``export.json`` beside the file. Raises :class:`CnnlabError`
    when the model cannot be exported (saying why) or when the parity check fails.
    """
    from .data.prepare import prepare_data
    from .device import Runtime
    from .inference import is_autoencoder, load_run
    from .predict import predict_probs

    if fmt not in FORMATS:
        raise CnnlabError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if int8 and fmt != "onnx":
        raise CnnlabError("--int8 quantizes an ONNX graph with onnxruntime; use it with --format onnx")
    if fmt == "onnx":
        require("onnx", "onnxscript", "onnxruntime")
        opset = check_opset(opset if opset is not None else default_opset())
    elif opset is not None:
        raise CnnlabError("--opset applies to --format onnx only")
    for flag, value in (("--parity-images", parity_images), ("--calibration-images", calibration_images)):
        if int(value) < 1:
            raise CnnlabError(f"{flag} must be >= 1, got {value}")
    say = (lambda *a: None) if quiet else print
    started = time.time()
    if weights == "auto":  # the weights chosen on validation when kept, else the final ones (never silently the last)
        weights = "best" if (Path(run_dir) / "best.safetensors").is_file() else "final"
    run = load_run(run_dir, "cpu", weights=weights)
    if run.meta.get("length"):
        raise CnnlabError(f"{run.run_dir}: a run on 1-D signals ({run.meta['model']}); export takes image models "
                          f"only for now (predict and eval take the run folder; docs/signals.md)")
    path = _resolve_out(run.run_dir, fmt, int8, out)
    task = "reconstruct" if is_autoencoder(run.config) else "classify"
    meta, name = run.meta, run.meta["model"]
    cfg = run.config.replace(data_dir=data_dir or run.config.data_dir, train_subset=None, test_subset=None,
                             features_from=None, denoiser=None, input_scaling="standard")
    try:
        ds = prepare_data(cfg)
    except CnnlabError as e:
        raise CnnlabError(f"the parity check runs the exported file on the run's test images, which could not be "
                          f"loaded: {e} (point --data-dir at the dataset's files)") from None
    shape = runs.input_shape(meta)  # (C, H, W)
    if (ds.in_channels, *ds.image_size) != shape:
        raise CnnlabError(f"the run's dataset {cfg.data} now gives {ds.in_channels}x{ds.image_size[0]}x"
                          f"{ds.image_size[1]} images but the model takes {'x'.join(map(str, shape))}")
    probe = _sample(ds.test_images, parity_images)
    module = Deployable(run.model, meta["mean"], meta["std"], softmax=task == "classify").eval()
    cpu = Runtime(torch.device("cpu"), "fp32", False)
    if task == "classify":
        reference = predict_probs(run.model, probe, meta["mean"], meta["std"], cpu)
    else:
        reference = run_program(module, probe)
    metadata = {
        "format_version": METADATA_VERSION, "task": task, "classes": list(meta["classes"]),
        "in_channels": meta["in_channels"], "image_size": meta["image_size"],
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", *shape]},
        "output": {"name": output_name(task), "shape": ["batch", len(meta["classes"])] if task == "classify"
                   else ["batch", *shape]},
        "normalization": "in-graph", "mean": list(meta["mean"]), "std": list(meta["std"]),
        "model": name, "model_options": meta.get("model_options", {}), "dataset": meta.get("dataset"),
        "source_run": str(run.run_dir.resolve()), "weights": weights, "int8": bool(int8),
    }
    example = probe[: min(2, len(probe))]
    if len(example) < 2:  # the batch dimension must not be specialized to 1
        example = example.repeat(2, 1, 1, 1)
    # the fp32 graph is held to the fp32 bounds (also when it is only the base of an int8 file); the flags
    # --tolerance/--min-agreement set the bounds of the file written, whose int8 defaults are looser
    fp32_bounds = (TOLERANCE if task == "classify" else 1e-3, MIN_AGREEMENT)
    if not int8:
        fp32_bounds = (tolerance if tolerance is not None else fp32_bounds[0],
                       min_agreement if min_agreement is not None else fp32_bounds[1])
    int8_bounds = (tolerance, min_agreement if min_agreement is not None else INT8_MIN_AGREEMENT)
    record: dict[str, Any] = {"file": path.name, "format": fmt, "opset": opset, "int8": bool(int8),
                              "source_run": metadata["source_run"], "model": name, "weights": weights, "task": task,
                              "normalization": "in-graph", "input": metadata["input"], "output": metadata["output"],
                              "classes": metadata["classes"], "versions": _versions()}
    with tempfile.TemporaryDirectory(prefix="cnnlab-export-") as tmp:
        staged = Path(tmp) / ("model.fp32.onnx" if int8 else path.name)
        export_module(module, staged, fmt, example, {**metadata, "int8": False}, name, opset, output_name(task))
        if fmt == "pt2":
            program = torch.export.load(staged).module()
            got = run_program(program, probe)
        else:
            got = run_onnx(onnx_session(staged), probe)
        parity = {**compare(reference, got, task), "split": "test",
                  "reference": "PyTorch eager fp32 (cnnlab.predict.predict_probs)"}
        what = f"{path.name} (fp32 graph)" if int8 else path.name
        try:
            _check_parity(parity, *fp32_bounds, what)
        finally:
            record["parity"] = parity
            if not parity.get("passed", False):
                update_record(path, {**record, "passed": False})
        if int8:
            record["fp32_parity"] = record.pop("parity")
            final = Path(tmp) / "model.int8.onnx"
            record["int8_report"] = quantize(staged, final, ds, metadata, task, calibration_images, eval_images)
            got = run_onnx(onnx_session(final), probe)
            parity = {**compare(reference, got, task), "split": "test",
                      "reference": "PyTorch eager fp32 (cnnlab.predict.predict_probs)"}
            try:
                _check_parity(parity, *int8_bounds, f"{path.name} (int8)")
            finally:
                record["parity"] = parity
                if not parity.get("passed", False):
                    update_record(path, {**record, "passed": False})
            staged = final
        from .files import atomic_write_bytes

        atomic_write_bytes(path, staged.read_bytes())
    record.update(_file_facts(path), passed=True, seconds=round(time.time() - started, 2),
                  created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    update_record(path, record)
    kind = f"onnx{' int8' if int8 else ''}, opset {opset}" if fmt == "onnx" else "pt2"
    say(f"exported {path} ({record['bytes'] / 1e6:.3f} MB, {kind}) in {record['seconds']:.1f} s")
    say(f"parity vs PyTorch: {_describe_parity(record['parity'])} -- passed")
    if int8:
        say(format_int8_report(record["int8_report"]))
    say(f"record: {path.parent / RECORD}")
    return record


# --------------------------------------------------------------------------- int8


INT8_FORMAT = "QDQ, int8 per-channel weights, uint8 activations"


def quantize_onnx(fp32_path: Path, out_path: Path, calibration: torch.Tensor, metadata: dict[str, Any] | None = None,
                  name: str = "model") -> None:
    """Static int8 quantization (:data:`INT8_FORMAT`, min-max calibration) of an exported fp32 graph, its
    activation ranges measured on ``calibration`` (uint8 images [N, C, H, W]); ``metadata`` is put back
    into the int8 file (the quantizer drops it)."""
    require("onnx", "onnxruntime")
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{INPUT_NAME: c.contiguous().numpy()} for c in calibration.split(32)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="cnnlab-int8-") as tmp, _quiet_exporter():
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference and graph clean-up, as onnxruntime recommends before quantizing
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001  an optimization only
            prepared = fp32_path
        try:
            quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as e:  # noqa: BLE001
            raise CnnlabError(f"onnxruntime could not quantize model {name!r}: {root_cause(e)}") from e
    if metadata is not None:
        proto = onnx.load(str(out_path))
        onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps({**metadata, "int8": True})})
        onnx.save(proto, str(out_path))


def quantize(fp32_path: Path, out_path: Path, ds, metadata: dict[str, Any], task: str,
             calibration_images: int = CALIBRATION_IMAGES, eval_images: int | None = None) -> dict[str, Any]:
    """:func:`quantize_onnx` calibrated on ``calibration_images`` training images of ``ds``; returns the
    before/after report (test accuracy, size, latency at batch 1 and 64)."""
    calibration = _sample(ds.train_images, calibration_images, seed=1)
    quantize_onnx(fp32_path, out_path, calibration, metadata, metadata.get("model", "model"))
    report: dict[str, Any] = {"calibration": {"split": "train", "images": len(calibration), "method": "minmax",
                                              "format": INT8_FORMAT},
                              "cpu": cpu_name(), "threads": torch.get_num_threads()}
    test_images, test_labels = ds.test_images, ds.test_labels
    if eval_images is not None:
        test_images, test_labels = test_images[:eval_images], test_labels[:eval_images]
    one, batch = test_images[:1], _sample(test_images, 64).contiguous()
    if len(batch) < 64:
        batch = batch.repeat((64 + len(batch) - 1) // len(batch), 1, 1, 1)[:64]
    for key, file in (("fp32", fp32_path), ("int8", out_path)):
        session = onnx_session(file)
        entry: dict[str, Any] = {"bytes": file.stat().st_size}
        if task == "classify":
            probs = run_onnx(session, test_images)
            entry["test_accuracy"] = float((probs.argmax(1) == test_labels).float().mean())
            entry["test_images"] = len(test_images)
        x1, x64 = {INPUT_NAME: one.numpy()}, {INPUT_NAME: batch.numpy()}
        entry["latency_ms_batch1"] = latency_ms(lambda: session.run(None, x1), repeats=50)
        entry["latency_ms_batch64"] = latency_ms(lambda: session.run(None, x64), repeats=10, warmup=2)
        entry["images_per_s_batch64"] = 64 / entry["latency_ms_batch64"] * 1000
        report[key] = entry
    return report


def format_int8_report(r: dict[str, Any]) -> str:
    rows = [("", "fp32", "int8")]
    if "test_accuracy" in r["fp32"]:
        rows.append((f"test accuracy ({r['fp32']['test_images']} images)",
                     f"{100 * r['fp32']['test_accuracy']:.2f}%", f"{100 * r['int8']['test_accuracy']:.2f}%"))
    rows += [("size", f"{r['fp32']['bytes'] / 1e6:.3f} MB", f"{r['int8']['bytes'] / 1e6:.3f} MB"),
             ("latency, batch 1 (median)", f"{r['fp32']['latency_ms_batch1']:.3f} ms",
              f"{r['int8']['latency_ms_batch1']:.3f} ms"),
             ("latency, batch 64 (median)", f"{r['fp32']['latency_ms_batch64']:.2f} ms",
              f"{r['int8']['latency_ms_batch64']:.2f} ms")]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return (f"int8 (calibrated on {r['calibration']['images']} training images) vs fp32, onnxruntime, "
            f"{r['threads']} thread(s), {r['cpu']}:\n" + "\n".join("  " + ln for ln in lines))
