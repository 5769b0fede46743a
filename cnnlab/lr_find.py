"""``cnnlab lr-find``: an exponential learning-rate sweep with the real engine (Smith 2017, Sec. 3.3).

The configured model, objective, optimizer and data (augmentation, MixUp, class weights,
fine-tuning included) train for ``steps`` optimizer steps while the rate grows geometrically from
``start`` to ``end``; the loss is smoothed with an exponential moving average (bias-corrected,
:data:`BETA`) and the sweep stops early once it exceeds 4x its best (divergence). The
suggested rate is where the smoothed loss falls fastest per decade of rate, looked for before its
minimum -- a rate still on the way down, not the edge of divergence. Nothing of a run folder is
written: the plot and the figures go to ``--out`` (default ``lr_find.png``/``.json``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .errors import CnnlabError

BETA = 0.9  # smoothing of the loss: a window of ~10 of the ~100 steps (fastai's 0.98 lags a short sweep)
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times its best


def lr_find(config: TrainConfig | dict, start: float = 1e-6, end: float = 1.0, steps: int = 100,
            out: str | Path | None = "lr_find.png", log=print) -> dict[str, Any]:
    """Run the sweep; returns ``{"suggested_lr", "min_loss_lr", "lrs", "losses", "smoothed", ...}``."""
    from . import finetune
    from .data.augment import AugmentConfig
    from .data.loader import BatchLoader
    from .data.prepare import prepare_data
    from .device import Runtime, resolve_device, seed_everything
    from .objectives import create_objective
    from .optim import create_optimizer, momentum_options
    from .train import build_model

    cfg = TrainConfig.from_dict(config.to_dict() if isinstance(config, TrainConfig) else dict(config))
    if not 0 < start < end:
        raise CnnlabError(f"lr-find: need 0 < --start-lr < --end-lr, got {start:g} and {end:g}")
    if steps < 10:
        raise CnnlabError(f"lr-find: --num-steps must be >= 10, got {steps}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runtime = Runtime.resolve(resolve_device(cfg.device), cfg.precision, cfg.channels_last)
    seed_everything(cfg.seed, cfg.deterministic)
    ds = prepare_data(cfg)
    objective = create_objective(cfg)
    objective.prepare(ds)
    model = build_model(cfg, ds, runtime)
    tuned = finetune.prepare(cfg, model, resuming=False)
    objective.bind(model)
    optimizer = create_optimizer(cfg.opt, model, start, cfg.weight_decay, cfg.decay_norm_bias,
                                 **{**momentum_options(cfg.opt, cfg.momentum, cfg.nesterov), **cfg.opt_options})
    finetune.apply_lr_mult(optimizer, model, cfg.lr_mult)
    mults = [g.get("lr_mult", 1.0) for g in optimizer.param_groups]
    augment = AugmentConfig.from_config(cfg, flip=ds.flip_ok if cfg.flip is None else cfg.flip)
    loader = BatchLoader(ds.train_images, ds.train_labels, cfg.batch_size, ds.mean, ds.std, runtime.device,
                         augment=augment, channels_last=cfg.channels_last, balanced=cfg.balanced_sampler)
    log(f"lr-find: {cfg.model} on {ds.describe()}; {cfg.opt}, rate {start:g} -> {end:g} over {steps} steps"
        + (f"; {tuned}" if tuned else ""))
    gamma = (end / start) ** (1 / (steps - 1))
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    model.train()

    def batches():
        while True:
            yield from loader

    source = batches()
    for t in range(steps):
        lr = start * gamma ** t
        for g, m in zip(optimizer.param_groups, mults):
            g["lr"] = lr * m
        optimizer.zero_grad(set_to_none=True)
        for _ in range(cfg.accum_steps):
            x, y = next(source)
            inputs, target = objective.inputs_and_targets(x, y)
            with runtime.autocast():
                output = model(inputs)
            loss = objective.loss(output, target)
            (loss / cfg.accum_steps).backward()
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optimizer.step()
        value = float(loss.detach())
        avg = BETA * avg + (1 - BETA) * value
        s = avg / (1 - BETA ** (t + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(s)
        if not math.isfinite(s) or s > DIVERGED * best:
            break
        best = min(best, s)
    result = {"suggested_lr": suggest(lrs, smoothed), "min_loss_lr": lrs[min(range(len(smoothed)),
                                                                          key=lambda i: smoothed[i])],
              "steps_run": len(lrs), "lrs": lrs, "losses": losses, "smoothed": smoothed,
              "model": cfg.model, "dataset": cfg.data, "opt": cfg.opt, "batch_size": cfg.batch_size}
    if out:
        _plot(result, Path(out))
        from .files import atomic_write_text
        import json

        atomic_write_text(Path(out).with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    log(f"suggested --lr {result['suggested_lr']:.3g} (steepest descent of the smoothed loss; its minimum was at "
        f"{result['min_loss_lr']:.3g}){f' -> {out}' if out else ''}")
    return result


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The rate where the smoothed loss falls fastest per unit of log rate, before its minimum (skipping the
    first tenth of the sweep, where the average is still settling)."""
    n = len(smoothed)
    lo = max(1, n // 10)
    hi = min(range(n), key=lambda i: smoothed[i])
    if hi - lo < 2:
        return lrs[hi] / 10
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
              for i in range(lo, hi)]
    return lrs[lo + min(range(len(slopes)), key=lambda j: slopes[j])]


def _plot(result: dict[str, Any], path: Path) -> None:
    from .plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["lrs"], result["losses"], alpha=0.3, label="loss")
    ax.plot(result["lrs"], result["smoothed"], label="smoothed loss")
    ax.axvline(result["suggested_lr"], color="tab:red", linestyle="--",
               label=f"suggested {result['suggested_lr']:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
           title=f"lr-find: {result['model']} on {result['dataset']} ({result['opt']})")
    top = min(max(result["smoothed"]), 4 * min(result["smoothed"]))
    ax.set_ylim(top=top * 1.05 if top > 0 else None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
