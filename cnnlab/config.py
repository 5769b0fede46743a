"""The training configuration: one dataclass, YAML in and out, validated with clear errors.

A run folder's ``config.yaml`` is ``TrainConfig.to_dict()``; ``TrainConfig.from_dict``
reads it back, so any run can be repeated with ``cnnlab train --config runs/x/config.yaml``.
Command-line flags override config-file values (see :mod:`cnnlab.cli`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import CnnlabError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
TTA_MODES = ("none", "flip", "shift", "flip-shift")


@dataclass
class TrainConfig:
    # data
    data: str = "digits"
    data_dir: str | None = None
    download: bool = True
    image_size: int | None = None  # resize (folder) / upsample (digits) to this side; None = native
    channels: int | None = None  # folder: 1 (grey) or 3 (RGB); None = as stored
    val_split: float = 0.2  # folder: fraction held out as the evaluation split
    strict: bool = False  # folder: fail on an unreadable image instead of skipping it
    data_options: dict[str, Any] = field(default_factory=dict)  # extra dataset options
    train_subset: int | None = None  # use only the first N training images (smoke runs)
    test_subset: int | None = None  # evaluate on the first N test images only (smoke runs)
    # model
    model: str = "fastnet"
    act: str | None = None  # activation name passed to the model builder, if set
    norm: str | None = None
    init: str | None = None
    dropout: float | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    # optimization
    epochs: float = 10  # may be fractional: the run stops after round(epochs * steps_per_epoch) steps
    batch_size: int = 128
    opt: str = "sgd"
    lr: float = 0.05
    momentum: float | None = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_norm_bias: bool = False
    opt_options: dict[str, Any] = field(default_factory=dict)
    sched: str = "onecycle"
    warmup_epochs: float = 0.0
    sched_options: dict[str, Any] = field(default_factory=dict)
    label_smoothing: float = 0.0
    clip_grad: float | None = None
    ema: float | None = None  # EMA decay of weights, e.g. 0.999; evaluated with the EMA weights
    # augmentation (on whole batches, see cnnlab.data.augment)
    crop_padding: int = 0
    flip: bool | None = None  # None = the dataset's default (off for digits, MNIST)
    translate: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    noise: float = 0.0
    salt_pepper: float = 0.0
    cutout: int = 0
    tta: str = "none"
    # engine
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    deterministic: bool = False
    target_acc: float | None = None  # stop once test accuracy (percent or fraction) reaches this
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    eval_batch_size: int = 1024
    # output
    out: str = "runs"
    name: str | None = None
    save_every: int = 1  # checkpoint every N epochs
    progress: bool = True

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        if not isinstance(values, dict):
            raise CnnlabError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
        known = set(cls.field_names())
        values = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            import difflib

            hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, known, 1)) else k
                     for k in unknown]
            raise CnnlabError(f"{source}: unknown key {', '.join(hints)}")
        cfg = cls(**values)
        cfg.validate(source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_yaml(path), str(path))

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------ validate
    def validate(self, source: str = "config") -> None:
        """Type-check every field against its annotation and range-check the numeric ones."""
        hints = {f.name: f.type for f in dataclasses.fields(self)}
        for name, kind in hints.items():
            value = getattr(self, name)
            setattr(self, name, _coerce(value, str(kind), f"{source}: {name}"))

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise CnnlabError(f"{source}: {what}")

        need(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.ema is None or 0 < self.ema < 1, f"ema must be a decay in (0, 1), got {self.ema}")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        need(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        need(self.tta in TTA_MODES, f"tta must be one of {', '.join(TTA_MODES)}, got {self.tta!r}")
        need(0 < self.val_split < 1, f"val_split must be in (0, 1), got {self.val_split}")
        need(self.channels in (None, 1, 3), f"channels must be 1 or 3, got {self.channels}")
        need(self.image_size is None or self.image_size >= 4, f"image_size must be >= 4, got {self.image_size}")
        need(self.eval_every >= 1 and self.save_every >= 1, "eval_every and save_every must be >= 1")
        need(self.train_subset is None or self.train_subset >= 1, "train_subset must be >= 1")
        need(self.test_subset is None or self.test_subset >= 1, "test_subset must be >= 1")
        for k in ("crop_padding", "cutout"):
            need(getattr(self, k) >= 0, f"{k} must be >= 0")
        for k in ("translate", "scale", "noise", "salt_pepper"):
            need(0 <= getattr(self, k) < 1, f"{k} must be in [0, 1), got {getattr(self, k)}")
        if self.target_acc is not None:
            need(0 < self.target_acc <= 100, f"target_acc must be a percentage or fraction, got {self.target_acc}")
        if self.name is not None:
            need(self.name not in ("", ".", "..") and "/" not in self.name, f"name must be a plain folder name, got {self.name!r}")

    def target_fraction(self) -> float | None:
        if self.target_acc is None:
            return None
        return self.target_acc / 100 if self.target_acc > 1 else self.target_acc

    def model_kwargs(self) -> dict[str, Any]:
        """Options for the model builder: model_options plus the act/norm/init/dropout shortcuts when set."""
        kw = dict(self.model_options)
        for k in ("act", "norm", "init", "dropout"):
            if getattr(self, k) is not None:
                kw[k] = getattr(self, k)
        return kw


def _coerce(value: Any, kind: str, where: str) -> Any:
    """Check/convert a YAML or CLI value to the annotated type; raise a CnnlabError naming the field."""
    if value is None:
        if "None" in kind:
            return None
        raise CnnlabError(f"{where}: must not be empty")
    base = kind.replace(" | None", "")
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "str":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if base.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        raise CnnlabError(f"{where}: expected {base}, got {value!r}") from None
    return value


def read_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CnnlabError(f"{p}: config file not found")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise CnnlabError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
