"""The training engine: one function, ``train(config)``, from data to a finished run folder.

Read top to bottom it is the whole recipe: resolve device and precision, load the
data once, build model / optimizer / schedule from their registries, then loop over
epochs (train with batched augmentation, evaluate, log, checkpoint) and finally
write the summary, plots and deployable weights. The loss is the softmax cross
entropy (NLL of the softmax, thesis eq. 2.2 and 2.8), optionally label-smoothed.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import runs
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, save_weights, set_rng_state
from .config import TrainConfig
from .data import ArrayDataset, load_dataset
from .data.augment import AugmentConfig, predict_tta
from .data.base import DATASETS
from .data.loader import BatchLoader, to_model_input
from .distributed import DistInfo, all_reduce_sum, broadcast_object, init_distributed, shutdown
from .errors import CnnlabError
from .models import count_parameters, create_model
from .models.registry import model_size_mb
from .optim import create_optimizer, create_scheduler, momentum_options

# --------------------------------------------------------------------------- device and precision


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 autocast is both fast and correct."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on recent GPUs and bf16-capable CPUs, fp16 on older GPUs, fp32 otherwise."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


# --------------------------------------------------------------------------- data


def prepare_data(cfg: TrainConfig) -> ArrayDataset:
    """Load the configured dataset once, then resize / convert channels if the config asks for it."""
    spec = DATASETS.get(cfg.data)
    accepted = inspect.signature(spec.load).parameters
    # The run's seed picks the folder dataset's validation split (as in a seeded random split),
    # but never regenerates `synthetic`, whose images stay fixed across seeds.
    wanted = {"size": cfg.image_size, "channels": cfg.channels, "val_split": cfg.val_split,
              "strict": cfg.strict, "seed": cfg.seed if cfg.data == "folder" else None}
    options = {k: v for k, v in wanted.items() if v is not None and k in accepted}
    options.update(cfg.data_options)
    bad = [k for k in cfg.data_options if k not in accepted]
    if bad:
        raise CnnlabError(f"dataset {cfg.data!r} has no option {', '.join(bad)}")
    ds = load_dataset(cfg.data, cfg.data_dir, cfg.download, **options)
    ds = convert_dataset(ds, cfg.image_size, cfg.channels)
    if cfg.train_subset is not None and cfg.train_subset < len(ds.train_labels):
        ds.train_images = ds.train_images[: cfg.train_subset]
        ds.train_labels = ds.train_labels[: cfg.train_subset]
    if cfg.test_subset is not None and cfg.test_subset < len(ds.test_labels):
        ds.test_images = ds.test_images[: cfg.test_subset]
        ds.test_labels = ds.test_labels[: cfg.test_subset]
    return ds


def convert_images(x: torch.Tensor, size: int | None, channels: int | None) -> torch.Tensor:
    """Resize (bilinear, antialiased) and convert grey<->RGB a uint8 batch, once, in chunks."""
    if channels is not None and x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        else:  # ITU-R 601 luma, as Pillow's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if size is not None and tuple(x.shape[2:]) != (size, size):
        out = [F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
               for c in x.split(4096)]
        x = torch.cat(out).round().clamp(0, 255).to(torch.uint8)
    return x


def convert_dataset(ds: ArrayDataset, size: int | None, channels: int | None) -> ArrayDataset:
    if (size is None or ds.image_size == (size, size)) and (channels is None or ds.in_channels == channels):
        return ds
    from .data.base import channel_stats

    ds.train_images = convert_images(ds.train_images, size, channels)
    ds.test_images = convert_images(ds.test_images, size, channels)
    ds.mean, ds.std = channel_stats(ds.train_images)
    return ds


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: torch.Tensor, mean, std, device: torch.device,
                  precision: str = "fp32", channels_last: bool = False, tta: str = "none",
                  batch_size: int = 1024) -> torch.Tensor:
    """Softmax probabilities [N, classes] (float32, CPU) for uint8 images, with optional TTA."""
    was_training = model.training
    model.eval()
    shape = (1, -1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(shape)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(shape)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            return model(x).float()

    out = []
    for chunk in images.split(batch_size):
        x = to_model_input(chunk.to(device), mean_t, std_t, channels_last)
        if tta == "none":
            out.append(torch.softmax(forward(x), dim=1).cpu())
        else:
            out.append(predict_tta(forward, x, tta).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def quick_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    labels = labels.cpu()
    nll = -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).mean().item()
    acc = (probs.argmax(1) == labels).float().mean().item()
    return {"test_loss": nll, "test_acc": acc}


# --------------------------------------------------------------------------- the run


class TrainState:
    """Everything that changes during training and must survive a restart."""

    def __init__(self):
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.train_seconds = 0.0  # time spent in training steps (evaluation excluded)
        self.images_seen = 0
        self.best_test_acc = 0.0
        self.reached_target_at: dict[str, float] | None = None
        self.rows: list[dict[str, Any]] = []


def _prepare_run_dir(cfg: TrainConfig, resume: bool, dist_info: DistInfo) -> tuple[Path, bool]:
    """Create or reopen the run folder; never overwrite a run by accident.

    Under DDP process 0 decides (name, existence) and tells the others, so a refusal
    stops every process instead of leaving them waiting for each other.
    """
    if cfg.name is None:
        cfg.name = broadcast_object(runs.default_run_name(cfg.data, cfg.model), dist_info)
    run_dir = Path(cfg.out) / cfg.name
    error = None
    if dist_info.is_main:
        if run_dir.exists() and any(run_dir.iterdir()) and not resume:
            error = (f"{run_dir}: run folder already exists; continue it with --resume {run_dir} "
                     f"or choose another --name")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
    error = broadcast_object(error, dist_info)
    if error:
        raise CnnlabError(error)
    return run_dir, resume and (run_dir / runs.CHECKPOINT).exists()


def train(config: TrainConfig | dict, resume: bool = False,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train one model as configured; returns the summary (also written to ``summary.json``).

    ``resume=True`` continues the run in ``<out>/<name>`` from its last checkpoint (or
    returns its summary if it already finished). ``on_epoch`` is called with each
    epoch's metrics row after the checkpoint of that epoch is safely written.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device)
    try:
        summary = _train(cfg, resume, on_epoch, device, dist_info)
    except BaseException:
        shutdown(dist_info, clean=False)
        raise
    shutdown(dist_info)
    return summary


def _train(cfg: TrainConfig, resume: bool, on_epoch, device: torch.device, dist_info: DistInfo) -> dict[str, Any]:
    """The recipe itself; runs once per process (one process unless launched by torchrun)."""
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    run_dir, resuming = _prepare_run_dir(cfg, resume, dist_info)
    if resume and (run_dir / runs.SUMMARY).exists():
        return runs.read_json(run_dir / runs.SUMMARY)
    main = dist_info.is_main
    say = print if main else (lambda *a, **k: None)  # start and end lines
    log = say if cfg.progress else (lambda *a, **k: None)  # per-epoch lines

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device)
    if precision == "fp16" and device.type == "cpu":
        raise CnnlabError("--precision fp16 is not supported on CPU (use bf16, fp32 or auto)")
    seed_everything(cfg.seed, cfg.deterministic)

    ds = prepare_data(cfg)
    c, (h, w) = ds.in_channels, ds.image_size
    if h != w:
        raise CnnlabError(f"{cfg.data}: images are {h}x{w}; models take square inputs (set --image-size)")
    model = create_model(cfg.model, ds.num_classes, c, image_size=h, **cfg.model_kwargs())
    check_model_input(model, cfg.model, c, h)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    flip = ds.flip_ok if cfg.flip is None else cfg.flip
    augment = AugmentConfig.from_config(cfg, flip=flip)
    loader = BatchLoader(ds.train_images, ds.train_labels, cfg.batch_size, ds.mean, ds.std, device,
                         shuffle=True, augment=augment, channels_last=cfg.channels_last,
                         rank=dist_info.rank, world_size=dist_info.world_size)
    steps_per_epoch = len(loader)
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    num_epochs = math.ceil(total_steps / steps_per_epoch)

    opt_options = dict(cfg.opt_options)
    if "force_switch_epoch" in opt_options:  # the Adam->SGD switch counts steps, the user counts epochs
        opt_options["force_switch_step"] = round(float(opt_options.pop("force_switch_epoch")) * steps_per_epoch)
    optimizer = create_optimizer(cfg.opt, model, cfg.lr, cfg.weight_decay, cfg.decay_norm_bias,
                                 **{**momentum_options(cfg.opt, cfg.momentum, cfg.nesterov), **opt_options})
    scheduler = create_scheduler(cfg.sched, optimizer, total_steps, steps_per_epoch,
                                 warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), **cfg.sched_options)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    ema = None
    if cfg.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    train_model = model
    if dist_info.enabled:  # gradients are averaged across processes after every backward pass
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    state = TrainState()
    if resuming:
        ckpt = load_checkpoint(run_dir / runs.CHECKPOINT)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        for k in ("epoch", "step", "train_seconds", "images_seen", "best_test_acc", "reached_target_at"):
            setattr(state, k, ckpt["state"][k])
        state.rows = [r for r in runs.read_metrics(run_dir) if r["epoch"] <= state.epoch]
        set_rng_state(ckpt["rng"])
        say(f"resuming {run_dir} after epoch {state.epoch} (step {state.step})")
    elif main:
        cfg.to_yaml(run_dir / runs.CONFIG)
        runs.write_json(run_dir / runs.META, {
            "model": cfg.model, "model_options": cfg.model_kwargs(), "dataset": cfg.data,
            "classes": ds.classes, "in_channels": c, "image_size": h, "mean": list(ds.mean), "std": list(ds.std)})
    params = count_parameters(model)
    ddp = f"; DDP x{dist_info.world_size} (global batch {loader.global_batch})" if dist_info.enabled else ""
    say(f"{ds.describe()}\nmodel {cfg.model}: {params:,} parameters; {cfg.opt} lr {cfg.lr}, {cfg.sched}; "
        f"{device.type} {precision}{' channels-last' if cfg.channels_last else ''}{ddp}; run folder {run_dir}")

    target = cfg.target_fraction()
    eval_model = ema.module if ema is not None else model
    try:
        while state.epoch < num_epochs and state.reached_target_at is None:
            epoch = state.epoch + 1
            steps_this_epoch = min(steps_per_epoch, total_steps - state.step)
            row = train_one_epoch(train_model, loader, optimizer, scheduler, scaler, ema, cfg, device, precision,
                                  epoch, steps_this_epoch, state, dist_info)
            if epoch % cfg.eval_every == 0 or epoch == num_epochs or target is not None:
                probs = predict_probs(eval_model, ds.test_images, ds.mean, ds.std, device, precision,
                                      cfg.channels_last, cfg.tta, cfg.eval_batch_size)
                row.update(quick_metrics(probs, ds.test_labels))
                state.best_test_acc = max(state.best_test_acc, row["test_acc"])
                if target is not None and row["test_acc"] >= target:
                    state.reached_target_at = {"epoch": epoch, "seconds": state.train_seconds}
            if hasattr(optimizer, "metrics"):
                row.update(optimizer.metrics())
            if hasattr(scheduler, "observe"):
                scheduler.observe(row["train_loss"])
            state.rows.append(row)
            state.epoch = epoch
            if main:
                if epoch % cfg.save_every == 0 or epoch == num_epochs or state.reached_target_at:
                    save_checkpoint(_checkpoint(model, optimizer, scheduler, ema, scaler, state, cfg),
                                    run_dir / runs.CHECKPOINT)
                runs.write_metrics(run_dir, state.rows)
            log(_epoch_line(row, num_epochs))
            if on_epoch is not None and main:
                on_epoch(row)
    except KeyboardInterrupt:
        raise CnnlabError(f"interrupted after epoch {state.epoch}; continue with: cnnlab train --resume {run_dir}") from None

    summary = finish_run(run_dir, cfg, ds, eval_model, state, device, precision, params, dist_info.world_size) \
        if main else None
    summary = broadcast_object(summary, dist_info)
    say(f"test accuracy {100 * summary['test_acc']:.2f}% (best {100 * summary['best_test_acc']:.2f}%) "
        f"in {summary['train_seconds']:.1f}s of training, {summary['images_per_second']:.0f} images/s -> {run_dir}")
    return summary


def check_model_input(model: torch.nn.Module, name: str, channels: int, side: int) -> None:
    """One tiny forward pass so a shape mismatch is reported clearly before training starts."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, channels, side, side))
    except RuntimeError as e:
        raise CnnlabError(f"model {name!r} cannot take {channels}x{side}x{side} inputs "
                          f"({str(e).splitlines()[0]}); try --image-size") from None
    finally:
        model.train(was_training)


def train_one_epoch(model, loader, optimizer, scheduler, scaler, ema, cfg: TrainConfig, device: torch.device,
                    precision: str, epoch: int, steps: int, state: TrainState,
                    dist_info: DistInfo = DistInfo()) -> dict[str, Any]:
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = _progress(steps, epoch, cfg.progress and dist_info.is_main)
    start = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if i >= steps:
            break
        with autocast(precision, device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        state.step += 1
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if bar is not None and (i % 10 == 0 or i == steps - 1):
            dt = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}",
                            ips=f"{seen / max(dt, 1e-9):.0f}", refresh=False)
            bar.update(i + 1 - bar.n)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    if dist_info.enabled:  # epoch figures over all processes
        totals = all_reduce_sum(torch.stack([loss_sum.float(), correct.float(),
                                             torch.tensor(float(seen), device=device)]), dist_info)
        loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
    state.train_seconds += seconds
    state.images_seen += seen
    return {"epoch": epoch, "step": state.step, "train_loss": loss_sum.item() / max(seen, 1),
            "train_acc": correct.item() / max(seen, 1), "lr": optimizer.param_groups[0]["lr"],
            "images_per_second": seen / max(seconds, 1e-9), "epoch_seconds": seconds,
            "elapsed": state.train_seconds}


def _progress(steps: int, epoch: int, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=steps, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)


def _epoch_line(row: dict[str, Any], num_epochs: int) -> str:
    test = f" test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:.2f}%" if "test_acc" in row else ""
    return (f"epoch {row['epoch']}/{num_epochs}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"
            f"{test} lr {row['lr']:.3g} {row['images_per_second']:.0f} img/s {row['elapsed']:.1f}s")


def _checkpoint(model, optimizer, scheduler, ema, scaler, state: TrainState, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "format": "cnnlab-checkpoint-1",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "state": {k: getattr(state, k) for k in ("epoch", "step", "train_seconds", "images_seen", "best_test_acc",
                                                 "reached_target_at")},
        "rng": rng_state(),
        "config": cfg.to_dict(),
    }


def finish_run(run_dir: Path, cfg: TrainConfig, ds: ArrayDataset, model, state: TrainState, device, precision: str,
               params: int, world_size: int = 1) -> dict[str, Any]:
    """Final evaluation with all metrics, plots, weights and summary.json (written last)."""
    from .metrics import evaluate_predictions, plot_confusion

    probs = predict_probs(model, ds.test_images, ds.mean, ds.std, device, precision, cfg.channels_last, cfg.tta,
                          cfg.eval_batch_size)
    m = evaluate_predictions(probs, ds.test_labels, ds.num_classes, ds.classes)
    save_weights(model.state_dict(), run_dir / runs.WEIGHTS, {"model": cfg.model, "dataset": cfg.data})
    runs.plot_curves(state.rows, run_dir / runs.CURVES, f"{cfg.model} on {cfg.data}")
    plot_confusion(m["confusion"], ds.classes, run_dir / runs.CONFUSION)
    summary = {
        "test_acc": m["acc"], "best_test_acc": max(state.best_test_acc, m["acc"]),
        "top5": m["top5"], "nll": m["nll"], "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
        "bep": m["bep"], "epochs": state.epoch, "steps": state.step,
        "train_seconds": state.train_seconds,
        "images_per_second": state.images_seen / max(state.train_seconds, 1e-9),
        "reached_target": state.reached_target_at,
        "model": cfg.model, "dataset": cfg.data, "params": params, "size_mb": model_size_mb(model),
        "dtype": precision, "device": str(device), "world_size": world_size, "tta": cfg.tta, "seed": cfg.seed, "run_dir": str(run_dir),
    }
    runs.write_json(run_dir / runs.SUMMARY, summary)
    return summary
