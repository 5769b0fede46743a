"""The training configuration: every field declared once, with everything cnnlab knows about it.

Each field of :class:`TrainConfig` carries its metadata (see :func:`setting`): the help
text, short flag, section, the rule its value must obey, and whether it changes the
result of a run. Everything else is derived from that one declaration:

- ``cnnlab train`` flags and their help (:mod:`cnnlab.cli`), grouped by section;
- which flags ``--resume`` may change (:data:`RESUME_OVERRIDABLE`);
- which keys a study may vary between invocations without invalidating finished runs
  (:data:`ENGINE_KEYS`: the fields that do not change the result);
- validation, here and in :class:`cnnlab.data.augment.AugmentConfig` (:func:`check_value`).

A run folder's ``config.yaml`` is ``TrainConfig.to_dict()``; ``TrainConfig.from_dict``
reads it back, so any run can be repeated with ``cnnlab train --config runs/x/config.yaml``.
This module imports no torch: ``cnnlab --help`` stays fast.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import CnnlabError, first_line, unknown_names
from .sizes import EXPECTED as SIZE_EXPECTED, as_hw, size_value

SIZE_KIND = "int | list[int]"  # the annotation of an image size: a side S or [H, W] (cnnlab.sizes)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
TTA_MODES = ("none", "flip", "shift", "flip-shift")  # and "random:N" (is_tta_mode): N seeded random views


def is_tta_mode(value: Any) -> bool:
    """One of :data:`TTA_MODES`, or ``random:N`` with N >= 1 (thesis Ch. 6's multi-view test)."""
    kind, sep, n = str(value).partition(":")
    return value in TTA_MODES or (kind == "random" and bool(sep) and n.isdigit() and int(n) >= 1)

SECTIONS = ("data", "validation", "model", "fine-tuning", "optimization", "augmentation", "engine", "output")


@dataclass(frozen=True)
class Rule:
    """A check on one value: ``ok(value)`` must hold, else "<field> must be <expect>, got <value>"."""

    ok: Callable[[Any], bool]
    expect: str


def at_least(lo: float) -> Rule:
    return Rule(lambda v: v >= lo, f">= {lo}")


def above(lo: float) -> Rule:
    return Rule(lambda v: v > lo, f"> {lo}")


def fraction(closed: bool = False) -> Rule:
    return Rule((lambda v: 0 <= v <= 1) if closed else (lambda v: 0 <= v < 1), "in [0, 1]" if closed else "in [0, 1)")


def _is_fold(text: str) -> bool:
    """``"I/K"`` with 1 <= I <= K and K >= 2 (``--cv-fold``)."""
    i, sep, k = str(text).partition("/")
    return bool(sep) and i.strip().isdigit() and k.strip().isdigit() and 1 <= int(i) <= int(k) and int(k) >= 2


def _is_policy(text: str) -> bool:
    """``--policy``: none, trivialaugment, randaugment or randaugment:N,M (cnnlab.data.policies)."""
    name, _, args = str(text).partition(":")
    if name in ("none", "trivialaugment") and not args:
        return True
    n, _, m = args.partition(",")
    try:
        return name == "randaugment" and (not args or (int(n) >= 1 and 0 <= float(m or 9) <= 30))
    except ValueError:
        return False


def one_of(choices: tuple[str, ...]) -> Rule:
    return Rule(lambda v: v in choices, f"one of {', '.join(choices)}")


def setting(default: Any = None, help: str = "", *, section: str, short: str | None = None, result: bool = True,
            resume: bool | None = None, rule: Rule | None = None, choices: tuple[str, ...] | None = None,
            factory: Callable[[], Any] | None = None) -> Any:
    """Declare a config field and its facts.

    result: does the value change what the run computes (weights, metrics)? Fields that do not
            (threads, device, where files go) may differ between a study's invocations.
    resume: may ``--resume`` change it? Default: exactly when it does not change the result.
    rule / choices: the value check applied by :meth:`TrainConfig.validate` (``None`` always passes).
    """
    if choices is not None:
        rule = one_of(choices)
    meta = {"help": help, "section": section, "short": short, "result": result,
            "resume": (not result) if resume is None else resume, "rule": rule, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_data = partial(setting, section="data")
_model = partial(setting, section="model")
_val = partial(setting, section="validation")
_tune = partial(setting, section="fine-tuning")
_optim = partial(setting, section="optimization")
_augment = partial(setting, section="augmentation")
_engine = partial(setting, section="engine")
_output = partial(setting, section="output")


@dataclass
class TrainConfig:
    # data
    data: str = _data("digits", "dataset name (see `cnnlab datasets`)")
    data_dir: str | None = _data(None, "folder holding the dataset's files (for `folder`: the image root, one "
                                       "sub-folder per class)", result=False)
    download: bool = _data(True, "download missing dataset files into the cache", result=False)
    image_size: int | list[int] | None = _data(
        None, "resize images once at load time to S x S (one number) or H x W (two numbers, or HxW); default: "
              "native. Stored as S when square, else [H, W] (cnnlab.sizes)",
        rule=Rule(lambda v: min(as_hw(v)) >= 4, "at least 4 pixels on each side"))
    channels: int | None = _data(None, "1 = grey, 3 = RGB, converted once at load time (default: as stored)",
                                 rule=Rule(lambda v: v in (1, 3), "1 or 3"))
    test_split: float = _data(0.2, "folder dataset without train/ and test/ sub-folders: fraction of each class "
                                   "held out as the test split", rule=Rule(lambda v: 0 < v < 1, "in (0, 1)"))
    strict: bool = _data(False, "folder dataset: fail on the first unreadable image instead of skipping it")
    data_path: str = _data("auto", "memory: decode the dataset once into memory; stream: read it (--data folder or "
                                   "shards) through DataLoader workers that decode and augment every epoch; auto: "
                                   "stream when the decoded images would take over a quarter of RAM "
                                   "(cnnlab.data.stream)",
                           choices=("auto", "memory", "stream"))
    data_options: dict[str, Any] = _data(help="extra dataset options, KEY=VALUE (repeatable)", factory=dict)
    train_subset: int | None = _data(None, "train on the first N training images only", rule=at_least(1))
    test_subset: int | None = _data(None, "evaluate on the first N test images only", rule=at_least(1))
    cv_fold: str | None = _data(None, "k-fold cross-validation: I/K trains on the training split minus its fold I "
                                      "of K (stratified, fixed folds) and evaluates on that fold instead of the test "
                                      "split", rule=Rule(lambda v: _is_fold(v), "I/K with 1 <= I <= K and K >= 2"))
    input_scaling: str = _data("standard", "input scaling fitted on the training split: standard (per-channel "
                                           "mean/std), minmax[:lo,hi] (subtract the mean image, then MinMax to "
                                           "[lo, hi], default [0, 1]; docs/two-stage.md) or none (pixels / 255)")
    features_from: str | None = _data(None, "train on the codes of this finished autoencoder run (frozen encoder, "
                                            "codes computed once); eval/predict then go through its encoder "
                                            "(docs/two-stage.md)")
    denoiser: str | None = _data(None, "with --features-from: pass the images through this (denoising) "
                                       "autoencoder run first, in training, eval and predict")
    # validation: what selection looks at (cnnlab.selection); the test split is evaluated once, at the end
    val_split: float = _val(0.1, "fraction of each class of the training split held out for validation "
                                 "(stratified, seeded by --seed, recorded in split.json); per-epoch evaluation, "
                                 "the best checkpoint, early stopping, --target-acc and the plateau schedule use it. "
                                 "0: no validation split (no selection: the last weights are tested)",
                            rule=Rule(lambda v: 0 <= v < 1, "in [0, 1)"))
    monitor: str | None = _val(None, "validation metric that chooses the best checkpoint and drives early stopping "
                                     "(default: val_acc for classifiers, else val_loss; *loss/*mse/*error: lower is "
                                     "better)",
                               rule=Rule(lambda v: v.startswith("val_"), "a val_* metric, e.g. val_acc"))
    patience: int | None = _val(None, "early stopping: stop after N evaluations without the monitored metric "
                                      "improving by more than --min-delta (default: never)", rule=at_least(1))
    min_delta: float = _val(0.0, "smallest change of the monitored metric that counts as an improvement",
                            rule=at_least(0))
    target_acc: float | None = _val(None, "stop when validation accuracy reaches this (percent or fraction)",
                                    rule=Rule(lambda v: 0 < v <= 100, "a percentage or fraction"))
    # model
    model: str = _model("fastnet", "model name (see `cnnlab models`)", short="-m")
    act: str | None = _model(None, "activation for the model (relu, lrelu:7.5, prelu, rrelu, ...)")
    norm: str | None = _model(None, "normalization: batch, lrn or none")
    init: str | None = _model(None, "weight initialization: default, xavier-uniform, xavier-normal, "
                                    "kaiming-uniform, kaiming-normal")
    dropout: float | None = _model(None, "dropout probability where the model places dropout", rule=fraction())
    model_options: dict[str, Any] = _model(help="extra model options, KEY=VALUE (repeatable), e.g. widths=16,32",
                                           factory=dict)
    head: str | None = _model(None, "output head replacing the model's final linear classifier: linear, or energy "
                                    "(SADIE's free-energy head, docs/sadie.md); default: the model's own",
                              choices=("linear", "energy"))
    head_options: dict[str, Any] = _model(help="output head options, KEY=VALUE (repeatable), e.g. hidden=64 "
                                               "units=relu", factory=dict)
    # fine-tuning (cnnlab.finetune)
    init_from: str | None = _tune(None, "start from these weights: a run folder (its best weights, else final), a "
                                        ".safetensors file or a .pt state dict (loaded weights-only); a classifier "
                                        "head with another class count is re-initialised (reported)")
    freeze: str | None = _tune(None, "keep these parameters fixed: comma-separated layer-name prefixes "
                                     "(e.g. features.0,features.1) or stages:N (the first N top-level blocks)")
    lr_mult: dict[str, Any] = _tune(help="per-group learning-rate multipliers, PREFIX=MULT (repeatable), e.g. "
                                         "features=0.1 (the longest matching prefix wins; others x1)", factory=dict)
    # optimization
    objective: str = _optim("classify", "training objective (loss and metrics): classify = softmax cross-entropy")
    epochs: float | None = _optim(None, "epochs to train; fractions allowed (the run stops after round(epochs x "
                                        "steps per epoch) steps); --resume may extend a run. Default: 10, or more "
                                        "when 10 epochs are fewer than --min-steps optimizer steps (said at the start)",
                                  short="-e", resume=True, rule=above(0))
    steps: int | None = _optim(None, "run length in optimizer steps instead of --epochs", resume=True,
                               rule=at_least(1))
    min_steps: int = _optim(500, "with neither --epochs nor --steps: train at least this many optimizer steps "
                                 "(small datasets get more than 10 epochs)", rule=at_least(0))
    accum_steps: int = _optim(1, "gradient accumulation: average the gradients of N mini-batches per optimizer step "
                                 "(schedules, --steps and --min-steps count optimizer steps)", rule=at_least(1))
    class_weights: str | None = _optim(None, "weight the loss per class: auto (inverse class frequency in the "
                                             "training split, mean 1) or a comma-separated list, one per class")
    balanced_sampler: bool = _optim(False, "draw training batches with every class equally likely (with "
                                           "replacement) instead of shuffling")
    batch_size: int = _optim(128, "mini-batch size (per process under torchrun)", short="-b", rule=at_least(1))
    opt: str = _optim("sgd", "optimizer: sgd, adam, adamw, rmsprop, adagrad, adadelta, lars, ... "
                             "(docs/optimizers.md)")
    lr: float = _optim(0.05, "base learning rate", rule=above(0))
    momentum: float | None = _optim(0.9, "momentum (SGD, RMSprop, LARS)")
    nesterov: bool = _optim(True, "Nesterov momentum for SGD (thesis eq. 2.16-2.17)")
    weight_decay: float = _optim(5e-4, "L2 weight decay lambda (thesis eq. 2.20-2.22)", rule=at_least(0))
    decay_norm_bias: bool = _optim(False, "also decay biases and normalization parameters")
    opt_options: dict[str, Any] = _optim(help="extra optimizer options, KEY=VALUE (repeatable), e.g. "
                                              "betas=[0.9,0.99]", factory=dict)
    sched: str = _optim("onecycle", "learning-rate schedule: constant, step, multistep, exponential, cosine, "
                                    "linear, onecycle, poly, plateau")
    warmup_epochs: float = _optim(0.0, "linear learning-rate warm-up length in epochs", rule=at_least(0))
    sched_options: dict[str, Any] = _optim(help="extra schedule options, KEY=VALUE (repeatable), e.g. gamma=0.7",
                                           factory=dict)
    label_smoothing: float = _optim(0.0, "label smoothing of the cross-entropy target", rule=fraction())
    pretrain_epochs: int = _optim(0, "epochs of greedy layer-wise pre-training per layer before fine-tuning, for "
                                     "models with a pre-training stage (dbn: RBMs by contrastive divergence)",
                                  rule=at_least(0))
    pretrain_lr: float = _optim(0.01, "learning rate of the pre-training stage (same optimizer kind as --opt)",
                                rule=above(0))
    cd_k: int = _optim(1, "Gibbs steps k of contrastive divergence (CD-k) in RBM pre-training", rule=at_least(1))
    clip_grad: float | None = _optim(None, "clip the gradient norm to this value", rule=above(0))
    ema: float | None = _optim(None, "keep an exponential moving average of the weights with this decay "
                                     "(e.g. 0.999) and evaluate it", rule=Rule(lambda v: 0 < v < 1, "a decay in (0, 1)"))
    # augmentation (on whole batches, see cnnlab.data.augment)
    crop_padding: int = _augment(0, "random crop after zero padding by this many pixels", rule=at_least(0))
    flip: bool | None = _augment(None, "random horizontal flips (default: on where label-preserving, off for "
                                       "digits and MNIST)")
    translate: float = _augment(0.0, "random translation, max fraction of the side", rule=fraction())
    rotate: float = _augment(0.0, "random rotation, max degrees", rule=Rule(lambda v: 0 <= v <= 180, "in [0, 180]"))
    scale: float = _augment(0.0, "random scaling, max relative change", rule=fraction())
    shear: float = _augment(0.0, "random shear, max degrees (thesis Ch. 6)",
                            rule=Rule(lambda v: 0 <= v < 90, "in [0, 90)"))
    vflip: bool = _augment(False, "random vertical flips too (only where labels allow it, e.g. plankton, thesis Ch. 6)")
    noise: float = _augment(0.0, "Gaussian noise std (pixel range 0..1)", rule=fraction())
    salt_pepper: float = _augment(0.0, "fraction of pixels set to black or white", rule=fraction())
    cutout: int = _augment(0, "zero a random square of this side", rule=at_least(0))
    color_jitter: float = _augment(0.0, "colour jitter: brightness, contrast and saturation factors uniform in "
                                        "[1 - s, 1 + s] per image (saturation: RGB only)", rule=fraction())
    resized_crop: float = _augment(0.0, "random-resized crop of the in-memory images: area fraction uniform in "
                                        "[this, 1], aspect 3/4..4/3, resized back (0: off; e.g. 0.35; the stream "
                                        "path crops at native resolution with --crop-scale)", rule=fraction())
    erase: float = _augment(0.0, "random erasing: probability per image of filling a random rectangle with noise",
                            rule=fraction(closed=True))
    policy: str | None = _augment(None, "augmentation policy: randaugment[:N,M] (N ops at magnitude M of 30, "
                                        "default 2,9) or trivialaugment (one op, random magnitude)",
                                  rule=Rule(lambda v: _is_policy(v), "none, trivialaugment or randaugment[:N,M]"))
    mixup: float = _augment(0.0, "MixUp alpha: blend pairs of training images and their labels (soft targets; "
                                 "0: off; e.g. 0.2)", rule=at_least(0))
    cutmix: float = _augment(0.0, "CutMix alpha: paste a box from another training image, labels by area (0: off; "
                                  "e.g. 1.0); with --mixup too, each batch uses one of the two", rule=at_least(0))
    crop_scale: float = _augment(0.08, "stream data path: smallest area fraction of the random-resized crop taken "
                                       "at native resolution (1: no crop, the image fitted as in memory)",
                                 rule=Rule(lambda v: 0 < v <= 1, "in (0, 1]"))
    tta: str = _augment("none", "test-time augmentation at evaluation: none, flip, shift, flip-shift, or random:N "
                                "(N seeded random views averaged, thesis Ch. 6)",
                        rule=Rule(is_tta_mode, "one of none, flip, shift, flip-shift or random:N (N >= 1)"))
    # engine
    precision: str = _engine("auto", "numeric precision (auto = bf16 where the CPU/GPU has it natively, "
                                     "else fp32)", choices=PRECISIONS)
    channels_last: bool = _engine(True, "channels-last memory format")
    compile: bool = _engine(False, "torch.compile the model (slow start, faster steps)")
    device: str = _engine("auto", "where to train", choices=DEVICES, result=False)
    threads: int | None = _engine(None, "CPU threads for torch", result=False, rule=at_least(1))
    data_workers: int = _engine(2, "stream data path: DataLoader worker processes decoding images (0: in the "
                                   "training process); the batches do not depend on it", result=False,
                                rule=at_least(0))
    seed: int = _engine(0, "random seed", rule=Rule(lambda v: 0 <= v < 2**32, "in [0, 2**32)"))  # numpy's range
    deterministic: bool = _engine(False, "use deterministic algorithms only")
    eval_every: int = _engine(1, "evaluate every N epochs (and always after the last)", resume=True,
                              rule=at_least(1))
    eval_batch_size: int = _engine(1024, "batch size for evaluation", result=False, rule=at_least(1))
    # DDP under torchrun (cnnlab.distributed, docs/distributed.md)
    dist_timeout: float = _engine(600, "DDP: seconds a process waits for the others in one collective (a gradient "
                                       "all-reduce, a broadcast) before it fails: how soon the others stop when a "
                                       "node is lost without closing its connections; also bounds their wait for "
                                       "process 0's checkpoint writes and final evaluation",
                                  result=False, rule=at_least(1))
    sync_bn: bool = _engine(True, "DDP on CUDA: batch-norm statistics over the global batch (SyncBatchNorm); on "
                                  "CPU (gloo) each process always normalizes with its own slice")
    # output
    out: str = _output("runs", "parent folder of run folders", result=False, resume=False)
    name: str | None = _output(None, "run folder name (default: <data>-<model>-<time>)", result=False, resume=False,
                               rule=Rule(lambda v: v not in ("", ".", "..") and "/" not in v, "a plain folder name"))
    save_every: int = _output(1, "write a checkpoint every N epochs", result=False, rule=at_least(1))
    progress: bool = _output(True, "progress bar and per-epoch lines", result=False)
    tensorboard: bool = _output(True, "also write TensorBoard event files (when the tensorboard package is "
                                      "installed; metrics.jsonl and metrics.csv are always written)", result=False)

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
        known = cls.field_names()
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise CnnlabError(f"{source}: unknown key {unknown_names(unknown, known)}")
        cfg = cls(**values)
        cfg.validate(source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_yaml(path), str(path))

    def to_yaml(self, path: str | Path) -> None:
        from .files import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A validated copy with ``changes`` applied (the original is left as it is)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------ validate
    def validate(self, source: str = "config") -> None:
        """Type-check every field against its annotation, then apply its declared rule."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(f.name, getattr(self, f.name), source, str(f.type)))

    def target_fraction(self) -> float | None:
        if self.target_acc is None:
            return None
        return self.target_acc / 100 if self.target_acc > 1 else self.target_acc

    def model_kwargs(self) -> dict[str, Any]:
        """Options for the model builder: model_options plus the act/norm/init/dropout/head shortcuts when set."""
        kw = dict(self.model_options)
        for k in ("act", "norm", "init", "dropout", "head"):
            if getattr(self, k) is not None:
                kw[k] = getattr(self, k)
        if self.head_options:
            kw["head_options"] = {**kw.get("head_options", {}), **self.head_options}
        return kw


# ---------------------------------------------------------------- derived facts
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
# flags a resumed run may change (its saved config holds for everything else)
RESUME_OVERRIDABLE = frozenset(k for k, f in FIELDS.items() if f.metadata["resume"])
# keys that say how (not what) to run: a study may change them without invalidating finished runs
ENGINE_KEYS = frozenset(k for k, f in FIELDS.items() if not f.metadata["result"])


def field_default(name: str) -> Any:
    f = FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def check_value(name: str, value: Any, source: str = "config", kind: str | None = None) -> Any:
    """``value`` converted to field ``name``'s type (or ``kind``) and checked against its rule.

    Raises a :class:`CnnlabError` naming ``source`` and the field. Used by
    :meth:`TrainConfig.validate` and by every other holder of the same values (e.g.
    :class:`cnnlab.data.augment.AugmentConfig`), so one field has one set of rules.
    """
    f = FIELDS[name]
    value = _coerce(value, kind or str(f.type), f"{source}: {name}")
    rule: Rule | None = f.metadata["rule"]
    if value is not None and rule is not None and not rule.ok(value):
        raise CnnlabError(f"{source}: {name} must be {rule.expect}, got {value!r}")
    return value


def parse_key_value(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(key, value)``, the value read as YAML (``3`` int, ``[1,2]`` list, ``a`` str).

    The one parser for ``--model-options``/``--opt-options``/... and ``cnnlab study --set``;
    dashes in the key become underscores (``--set eval-batch-size=64``).
    """
    if "=" not in text:
        raise CnnlabError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    if not key.strip():
        raise CnnlabError(f"expected KEY=VALUE, got {text!r} (empty key)")
    try:
        return key.strip().replace("-", "_"), yaml.safe_load(value)
    except yaml.YAMLError:
        raise CnnlabError(f"cannot parse the value of {key.strip()}: {value!r}") from None


def _coerce(value: Any, kind: str, where: str) -> Any:
    """Check/convert a YAML or CLI value to the annotated type; raise a CnnlabError naming the field."""
    if value is None:
        if "None" in kind:
            return None
        raise CnnlabError(f"{where}: must not be empty")
    base = kind.replace(" | None", "")
    if base == SIZE_KIND:  # before "int": "48x64", [48, 64] and 32 are all sizes
        try:
            return size_value(value)
        except CnnlabError:
            raise CnnlabError(f"{where}: expected {SIZE_EXPECTED}, got {value!r}") from None
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
            if isinstance(value, bool) or not math.isfinite(number := float(value)):
                raise ValueError  # inf / nan: no field means "forever" or "undefined"
            return number
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
        raise CnnlabError(f"{p}: not valid YAML: {first_line(e)}") from None
