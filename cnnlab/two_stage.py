"""Two-stage classification (the two-stage paper): a classifier trained on a frozen autoencoder's codes.

Stage 1 is an ordinary run: an autoencoder (``--model autoencoder --objective reconstruct``,
optionally denoising). Stage 2 is another ordinary run with ``--features-from RUN1``:

1. the autoencoder run is loaded (it must have finished), frozen, and its encoder computes the
   codes of every training and test image once (:func:`encode_dataset`), in float32, held in
   memory as a dataset of [N, D, 1, 1] features; every image first gets the autoencoder's own
   input scaling, from its ``meta.json``;
2. the classifier trains on those codes like on any dataset (the loop does not know), scaled by
   the classifier run's own ``--input-scaling`` (fitted on the training codes: by default each
   code dimension standardized, which the Gaussian-Bernoulli RBM of ``dbn`` assumes);
3. ``meta.json`` records under ``features`` which autoencoder (and ``--denoiser``) the run
   depends on: the path (absolute, and relative to the run folder so that moving a whole tree of
   runs keeps working) and a fingerprint, the SHA-256 of the stage's final weights and of the
   ``meta.json`` facts that define its input (model, options, shape, scaling);
4. ``cnnlab eval`` / ``cnnlab predict`` / :func:`cnnlab.inference.load_run` rebuild the pipeline
   raw pixels -> [denoiser ->] encoder -> code scaling -> classifier (:func:`compose_run`), so
   they take images like any run; they (and ``--resume``) refuse an autoencoder whose
   fingerprint changed, since the codes it computes are not the ones the classifier learned.

``--denoiser RUN`` (a denoising autoencoder, e.g. ``--objective reconstruct:denoise=salt-pepper:0.2``)
puts that autoencoder's reconstruction in front of the encoder, in training and in use;
``cnnlab eval --denoiser RUN`` adds one at evaluation time only (:func:`with_denoiser`).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from . import runs
from .data.base import ArrayDataset
from .data.loader import per_channel_or_element
from .data.scaling import as_unit_float, fit_scaling
from .errors import CnnlabError
from .sizes import size_value

if TYPE_CHECKING:
    from .config import TrainConfig
    from .device import Runtime

# the meta.json facts that decide what a stage computes from an image (with its weights)
FINGERPRINT_KEYS = ("model", "model_options", "in_channels", "image_size", "mean", "std")
ENCODE_BATCH = 4096


# --------------------------------------------------------------------------- stages


@dataclass
class Stage:
    """A finished autoencoder run, frozen: its model, meta.json and fingerprint."""

    role: str  # "autoencoder" or "denoiser"
    run_dir: Path
    meta: dict[str, Any]
    model: nn.Module
    fingerprint: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return runs.input_shape(self.meta)  # (C, H, W), or (C, L) for 1-D signals

    def record(self, relative_to: Path) -> dict[str, str]:
        """What a dependent run's meta.json keeps of this stage."""
        here = self.run_dir.resolve()
        return {"run": str(here), "relative": os.path.relpath(here, Path(relative_to).resolve()),
                "fingerprint": self.fingerprint}


def fingerprint(run_dir: Path, meta: dict[str, Any]) -> str:
    """SHA-256 of a run's final weights and of the meta.json facts that define its input."""
    h = hashlib.sha256()
    with open(Path(run_dir) / runs.WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    facts = {k: meta.get(k) for k in FINGERPRINT_KEYS}
    if meta.get("length"):  # 1-D signals (only then, so image runs keep their fingerprints)
        facts["length"] = meta["length"]
    h.update(json.dumps(facts, sort_keys=True).encode())
    return h.hexdigest()


def load_stage(path: str | Path, flag: str, role: str = "autoencoder") -> Stage:
    """A finished autoencoder run as a frozen stage, or a :class:`CnnlabError` naming ``flag``."""
    from .config import TrainConfig

    run_dir = Path(path).expanduser()
    try:
        runs.check_run_dir(run_dir)
    except CnnlabError as e:
        raise CnnlabError(f"{flag}: {e}") from None
    if not (run_dir / runs.SUMMARY).is_file() or not (run_dir / runs.WEIGHTS).is_file():
        raise CnnlabError(f"{flag} {run_dir}: the run has not finished (no {runs.SUMMARY} / {runs.WEIGHTS}); "
                          f"finish it first with: cnnlab train --resume {run_dir}")
    cfg = TrainConfig.from_yaml(run_dir / runs.CONFIG)
    objective = cfg.objective.partition(":")[0]
    meta = runs.read_meta(run_dir)
    if objective != "reconstruct":
        raise CnnlabError(f"{flag} {run_dir}: needs an autoencoder run (--model autoencoder --objective "
                          f"reconstruct), but that run trained {meta['model']!r} with --objective {objective}")
    model = runs.load_model(run_dir, meta)
    if not hasattr(model, "encode"):
        raise CnnlabError(f"{flag} {run_dir}: model {meta['model']!r} has no encoder (encode method)")
    model.eval().requires_grad_(False)
    return Stage(role, run_dir, meta, model, fingerprint(run_dir, meta))


def find_recorded(record: dict[str, str], run_dir: Path, role: str) -> Stage:
    """The stage a run's meta.json recorded, found relative to the run first, then at its absolute
    path; refused when its fingerprint is not the recorded one."""
    candidates = [Path(run_dir) / record["relative"], Path(record["run"])]
    where = next((p for p in candidates if p.is_dir()), None)
    if where is None:
        raise CnnlabError(f"{run_dir} depends on the {role} run {record['run']}, which is not there (moved or "
                          f"deleted?); restore it, or train the classifier again")
    stage = load_stage(where, f"{run_dir}: the {role}", role)
    check_fingerprint(stage, record, run_dir)
    return stage


def check_fingerprint(stage: Stage, record: dict[str, str], run_dir: Path) -> None:
    if stage.fingerprint != record["fingerprint"]:
        raise CnnlabError(f"{run_dir} was trained on the codes of the {stage.role} run {stage.run_dir} with "
                          f"fingerprint {record['fingerprint'][:12]}, but that run now has fingerprint "
                          f"{stage.fingerprint[:12]} (other weights or input scaling): its codes are not the ones "
                          f"the classifier learned; restore that run or train the classifier again")


# --------------------------------------------------------------------------- the pipeline's modules


class Scaling(nn.Module):
    """A run's input scaling (x - mean) / std as buffers, for inputs of shape ``shape`` (C, H, W)."""

    def __init__(self, mean, std, shape: tuple[int, int, int]):
        super().__init__()
        # the loader's rule: one value per channel, or per element (cnnlab.data.loader.per_channel_or_element)
        like = torch.empty(1, *shape, device="meta")
        for name, values in (("mean", mean), ("std", std)):
            t = torch.as_tensor(values, dtype=torch.float32).view(1, -1, 1, 1)
            self.register_buffer(name, per_channel_or_element(t, like).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class Denoise(nn.Module):
    """Pixels in [0, 1] -> the denoiser's reconstruction, as pixels in [0, 1] (its scaling applied and undone)."""

    def __init__(self, stage: Stage):
        super().__init__()
        self.scaling = Scaling(stage.meta["mean"], stage.meta["std"], stage.input_shape)
        self.autoencoder = stage.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling.undo(self.autoencoder(self.scaling(x))).clamp(0.0, 1.0)


class Encode(nn.Module):
    """Pixels in [0, 1] -> the autoencoder's codes [B, D] (its input scaling first)."""

    def __init__(self, stage: Stage):
        super().__init__()
        self.scaling = Scaling(stage.meta["mean"], stage.meta["std"], stage.input_shape)
        self.autoencoder = stage.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(self.scaling(x))


class ScaledClassifier(nn.Module):
    """Inputs in the classifier run's unscaled units (pixels in [0, 1], or codes [B, D]) -> class scores."""

    def __init__(self, model: nn.Module, meta: dict[str, Any]):
        super().__init__()
        self.scaling = Scaling(meta["mean"], meta["std"], runs.input_shape(meta))
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # codes [B, D] -> the [B, D, 1, 1] features the classifier was trained on
            x = x[:, :, None, None]
        return self.model(self.scaling(x))


def feature_extractor(autoencoder: Stage, denoiser: Stage | None = None) -> nn.Module:
    """Pixels in [0, 1] -> codes: [denoiser ->] encoder."""
    return nn.Sequential(*([Denoise(denoiser)] if denoiser else []), Encode(autoencoder)).eval()


def _check_shapes(first: Stage, then: Stage | None, shape: tuple[int, int, int], what: str, flag: str) -> None:
    for stage in (first, then):
        if stage is not None and stage.input_shape != shape:
            kind = "images" if len(stage.input_shape) == 3 else "signals"
            raise CnnlabError(f"{flag} {stage.run_dir}: the {stage.role} takes {'x'.join(map(str, stage.input_shape))} "
                              f"{kind}, but {what} gives {'x'.join(map(str, shape))}")


# --------------------------------------------------------------------------- training: codes computed once


def encode_dataset(cfg: "TrainConfig", ds: ArrayDataset, runtime: "Runtime", run_dir: Path,
                   expect: dict[str, Any] | None = None) -> tuple[ArrayDataset, dict[str, Any]]:
    """The codes of ``ds``'s images under ``cfg.features_from`` (and ``cfg.denoiser``), as a dataset of
    float [N, D, 1, 1] features scaled by ``cfg.input_scaling``; and the record for meta.json.

    ``expect`` is the record of an earlier start of the same run (``--resume``): the stages must
    still have the recorded fingerprints.
    """
    if cfg.denoiser and not cfg.features_from:
        raise CnnlabError("--denoiser needs --features-from (the denoiser feeds an autoencoder's encoder); "
                          "to evaluate any classifier through a denoiser use: cnnlab eval RUN --denoiser DAE_RUN")
    autoencoder = load_stage(cfg.features_from, "--features-from", "autoencoder")
    denoiser = load_stage(cfg.denoiser, "--denoiser", "denoiser") if cfg.denoiser else None
    shape = (ds.in_channels, *ds.image_size)
    _check_shapes(autoencoder, denoiser, shape, f"--data {cfg.data}", "--features-from")
    for stage in (autoencoder, denoiser):
        if stage is not None and expect and expect.get(stage.role):
            check_fingerprint(stage, expect[stage.role], run_dir)
    start = time.perf_counter()
    extractor = feature_extractor(autoencoder, denoiser).to(runtime.device)
    train_codes = encode_images(extractor, ds.train_images, runtime.device)
    test_codes = encode_images(extractor, ds.test_images, runtime.device)
    val_codes = encode_images(extractor, ds.val_images, runtime.device) if ds.num_val else None
    seconds = time.perf_counter() - start
    mean, std = fit_scaling(cfg.input_scaling, train_codes)
    d = train_codes.shape[1]
    source = f"{autoencoder.run_dir.name}" + (f" after denoiser {denoiser.run_dir.name}" if denoiser else "")
    size = "x".join(map(str, train_codes.shape[1:])) if train_codes.dim() == 3 else f"{d}-d"  # signal codes: DxL'
    codes = ArrayDataset(f"{ds.name} codes ({size}, {source})", train_codes, ds.train_labels, test_codes,
                         ds.test_labels, ds.classes, mean, std, flip_ok=False,
                         extra={"images": ds.describe(), **{k: v for k, v in ds.extra.items()
                                                            if k in ("evaluated_on", "validation")}},
                         val_images=val_codes, val_labels=ds.val_labels if ds.num_val else None)
    record = {"autoencoder": autoencoder.record(run_dir), "denoiser": denoiser.record(run_dir) if denoiser else None,
              "code_size": d, "input": {"in_channels": shape[0],
                                        "image_size": size_value(shape[1:]) if len(shape) == 3 else shape[1]},
              "encode_seconds": seconds}
    return codes, record


@torch.no_grad()
def encode_images(extractor: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images [N, C, H, W] -> float32 codes [N, D, 1, 1] on the CPU, in float32 (no autocast:
    computed once, they should not carry reduced-precision rounding into every epoch)."""
    out = [extractor(as_unit_float(chunk.to(device))).float().cpu() for chunk in images.split(ENCODE_BATCH)]
    codes = torch.cat(out) if out else torch.empty(0, 0)
    if codes.dim() == 3:  # a convolutional encoder's code of a 1-D signal stays a signal [N, D, L'] (cae1d)
        return codes.contiguous()
    return codes[:, :, None, None].contiguous()


# --------------------------------------------------------------------------- use: the composed pipeline


def compose_run(run_dir: Path, meta: dict[str, Any], classifier: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A two-stage run's model as the pipeline pixels -> [denoiser ->] encoder -> scaled classifier,
    and its meta.json as seen from the images (their shape; scaling: none, the pipeline scales)."""
    record = meta["features"]
    autoencoder = find_recorded(record["autoencoder"], run_dir, "autoencoder")
    denoiser = find_recorded(record["denoiser"], run_dir, "denoiser") if record.get("denoiser") else None
    model = nn.Sequential(feature_extractor(autoencoder, denoiser), ScaledClassifier(classifier, meta))
    return model.eval(), _as_image_meta(meta, denoiser or autoencoder)


def with_denoiser(model: nn.Module, meta: dict[str, Any], denoiser: Stage, run_dir: Path
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Any classifier (a two-stage pipeline from :func:`compose_run` or a plain run's model) behind a
    denoiser: pixels -> denoiser -> the classifier's own input scaling -> classifier."""
    shape = runs.input_shape(meta)
    _check_shapes(denoiser, None, shape, f"the classifier {run_dir}", "--denoiser")
    if _is_pipeline(meta):  # already takes pixels in [0, 1]
        piped = nn.Sequential(Denoise(denoiser), model)
    else:
        piped = nn.Sequential(Denoise(denoiser), ScaledClassifier(model, meta))
    return piped.eval(), _as_image_meta(meta, denoiser)


def _is_pipeline(meta: dict[str, Any]) -> bool:
    return meta.get("pipeline", False)


def _as_image_meta(meta: dict[str, Any], first: Stage) -> dict[str, Any]:
    c, size = first.meta["in_channels"], first.meta["image_size"]
    signal = {"length": first.meta["length"]} if first.meta.get("length") else {"length": None}
    return {**meta, "in_channels": c, "image_size": size, **signal, "mean": [0.0] * c, "std": [1.0] * c,
            "pipeline": True,
            "classifier_input": meta.get("classifier_input") or {
                **{k: meta[k] for k in ("in_channels", "image_size", "mean", "std")},
                **({"length": meta["length"]} if meta.get("length") else {})}}
