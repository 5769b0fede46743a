"""Greedy layer-wise pre-training: a deep belief net's RBMs, one at a time, by contrastive divergence.

A stage the engine (:func:`cnnlab.train.train`) runs before the first fine-tuning epoch when
``--pretrain-epochs N`` is above 0 and the model has RBM layers (``dbn``, :mod:`cnnlab.models.dbn`).
For RBM l = 1 .. L, bottom up, N epochs over the training split: every batch, scaled exactly as
for fine-tuning (no augmentation), is turned into the hidden probabilities of RBMs 1 .. l-1
(mean field, the usual DBN recipe), and RBM l takes one CD-k step on them
(:meth:`cnnlab.models.rbm.RBM.cd_gradient`, ``--cd-k``): the CD estimate of the log-likelihood
gradient, negated, is handed to a fresh optimizer of the fine-tuning's kind (``--opt`` with its
momentum/options and ``--weight-decay`` on the weights) at rate ``--pretrain-lr``, constant.
Under torchrun the estimate is averaged over the processes, each working on its slice of the
batch, as DDP does with gradients.

The stage has its own

* progress: one line per epoch (``pretrain rbm 1/2 epoch 3/5: recon 0.118 ...``);
* metrics: ``pretrain.jsonl``, one row per layer and epoch: ``recon_error`` (mean squared
  difference per visible unit between the data and E[v | h0], h0 sampled from p(h | v): the
  one-step reconstruction), ``pseudo_ll`` (Bernoulli visible units only: the stochastic
  pseudo-log-likelihood per sample, :meth:`~cnnlab.models.rbm.RBM.pseudo_log_likelihood`,
  averaged over the epoch's batches), ``seconds``; and ``pretrain.png``;
* checkpoint: ``pretrain.pt`` after every epoch (the model, the layer's optimizer, where it
  stands, every RNG and the metrics rows so far), written atomically. ``cnnlab train --resume``
  continues from it exactly as if never interrupted; once fine-tuning has written
  ``checkpoint.pt`` that holds everything, and the stage is not run again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from . import runs
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data.base import ArrayDataset
from .data.loader import BatchLoader
from .distributed import DistInfo, all_reduce_sum
from .errors import CnnlabError
from .models.rbm import RBM
from .optim import create_optimizer, momentum_options

PRETRAIN_FORMAT = "cnnlab-pretrain-1"


def has_stage(model: nn.Module) -> bool:
    """Does ``model`` have layers to pre-train (a stack of RBMs with ``propagate``)?"""
    return isinstance(getattr(model, "rbms", None), nn.ModuleList) and hasattr(model, "propagate")


def check_stage(cfg, model: nn.Module) -> None:
    if cfg.pretrain_epochs and not has_stage(model):
        raise CnnlabError(f"--pretrain-epochs {cfg.pretrain_epochs}: model {cfg.model!r} has no pre-training "
                          f"stage (RBM layers: --model dbn); leave --pretrain-epochs at 0")


class _RBMParameters(nn.Module):
    """The tensors CD moves, as the parameters of one module, so the optimizer factory treats them
    as usual (weights decayed, biases not). The visible bias is the RBM's buffer, shared (the same
    storage): its updates land in the model."""

    def __init__(self, rbm: RBM):
        super().__init__()
        self.weight = rbm.linear.weight
        self.hidden_bias = rbm.linear.bias
        self.visible_bias = nn.Parameter(rbm.visible_bias)


def pretrain(cfg, model: nn.Module, ds: ArrayDataset, device: torch.device, run_dir: Path,
             dist_info: DistInfo = DistInfo(), resume: bool = False,
             log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or, with ``resume``, continue from ``pretrain.pt``) the pre-training stage; returns its rows."""
    rbms: list[RBM] = list(model.rbms)
    path = run_dir / runs.PRETRAIN_CHECKPOINT
    layer, epoch, state = 0, 0, None
    rows: list[dict[str, Any]] = []
    if resume and path.exists():
        state = load_checkpoint(path)
        if state.get("format") != PRETRAIN_FORMAT:
            raise CnnlabError(f"{path}: not a cnnlab pre-training checkpoint")
        model.load_state_dict(state["model"])
        layer, epoch = state["layer"], state["epoch"]
        set_rng_state(state["rng"])
        rows = list(state["rows"])
        if layer >= len(rbms):
            return rows
        log(f"resuming pre-training at RBM {layer + 1}/{len(rbms)} after epoch {epoch}")
    loader = BatchLoader(ds.train_images, ds.train_labels, cfg.batch_size, ds.mean, ds.std, device, shuffle=True,
                         channels_last=False, rank=dist_info.rank, world_size=dist_info.world_size)
    world = dist_info.world_size
    was_training = model.training
    model.eval()  # no dropout in the layers below; CD itself is written out, not a forward pass
    try:
        while layer < len(rbms):
            rbm = rbms[layer]
            params = _RBMParameters(rbm)
            optimizer = create_optimizer(cfg.opt, params, cfg.pretrain_lr, cfg.weight_decay, cfg.decay_norm_bias,
                                         **{**momentum_options(cfg.opt, cfg.momentum, cfg.nesterov),
                                            **_stage_options(cfg.opt_options)})
            if state is not None and state.get("optimizer") is not None and epoch > 0:
                optimizer.load_state_dict(state["optimizer"])
            state = None
            while epoch < cfg.pretrain_epochs:
                start = time.perf_counter()
                totals = torch.zeros(3, dtype=torch.float64)  # squared error, pseudo-LL, samples
                for x, _ in loader:
                    v = model.propagate(x, layer)
                    if layer == 0 and rbm.visible == "bernoulli":
                        _check_unit_range(v, cfg)
                    ascent, stats = rbm.cd_gradient(v, cfg.cd_k)
                    optimizer.zero_grad(set_to_none=True)
                    for name, p in params.named_parameters():
                        p.grad = -all_reduce_sum(ascent[name], dist_info) / world
                    optimizer.step()
                    pll = rbm.pseudo_log_likelihood(v) if rbm.visible == "bernoulli" else torch.zeros(())
                    totals += torch.stack([stats["sq_err"].double().cpu(), pll.double().cpu(),
                                           torch.tensor(float(len(v)), dtype=torch.float64)])
                totals = all_reduce_sum(totals, dist_info)
                epoch += 1
                seen = max(totals[2].item(), 1.0)
                row = {"layer": layer + 1, "epoch": epoch, "visible": rbm.visible,
                       "recon_error": totals[0].item() / (seen * rbm.linear.in_features),
                       **({"pseudo_ll": totals[1].item() / seen} if rbm.visible == "bernoulli" else {}),
                       "seconds": time.perf_counter() - start}
                rows.append(row)
                done = epoch >= cfg.pretrain_epochs
                if dist_info.is_main:  # checkpoint first, then the metrics it vouches for
                    save_checkpoint({"format": PRETRAIN_FORMAT, "layer": layer + 1 if done else layer,
                                     "epoch": 0 if done else epoch, "model": model.state_dict(),
                                     "optimizer": None if done else optimizer.state_dict(), "rng": rng_state(),
                                     "rows": rows}, path)
                    runs.write_metrics(run_dir, rows, runs.PRETRAIN_METRICS)
                log(describe_row(row, len(rbms), cfg.pretrain_epochs))
            layer, epoch = layer + 1, 0
    finally:
        model.train(was_training)
    if dist_info.is_main:
        plot_pretraining(rows, run_dir / runs.PRETRAIN_CURVES)
    return rows


def _stage_options(options: dict[str, Any]) -> dict[str, Any]:
    """--opt-options that make sense for a constant-rate stage (an Adam->SGD switch point does not)."""
    return {k: v for k, v in options.items() if not k.startswith(("force_switch", "switch"))}


def _check_unit_range(v: torch.Tensor, cfg) -> None:
    lo, hi = v.min().item(), v.max().item()
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise CnnlabError(f"model {cfg.model!r} with visible=bernoulli needs inputs in [0, 1] (probabilities), but "
                          f"the scaled inputs span [{lo:.3g}, {hi:.3g}]: use --input-scaling minmax:0,1, or "
                          f"--model-options visible=gaussian for real-valued inputs")


def describe_row(row: dict[str, Any], layers: int, epochs: int) -> str:
    pll = f" pseudo-LL {row['pseudo_ll']:.2f}" if "pseudo_ll" in row else ""
    return (f"pretrain rbm {row['layer']}/{layers} epoch {row['epoch']}/{epochs}: recon error "
            f"{row['recon_error']:.4g}{pll} ({row['seconds']:.1f}s)")


def total_seconds(run_dir: Path) -> float:
    """Time spent pre-training, from ``pretrain.jsonl`` (0 when the run had no such stage)."""
    return sum(r.get("seconds", 0.0) for r in runs.read_metrics(run_dir, runs.PRETRAIN_METRICS))


def plot_pretraining(rows: list[dict[str, Any]], path: Path) -> None:
    """Reconstruction error (and pseudo-log-likelihood, when reported) per epoch, one line per RBM."""
    if not rows:
        return
    from .plots import pyplot, save_figure

    plt = pyplot()
    keys = ["recon_error"] + (["pseudo_ll"] if any("pseudo_ll" in r for r in rows) else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for layer in sorted({r["layer"] for r in rows}):
            pts = [(r["epoch"], r[key]) for r in rows if r["layer"] == layer and key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"RBM {layer}")
        ax.set(xlabel="epoch", title={"recon_error": "reconstruction error per unit",
                                      "pseudo_ll": "pseudo-log-likelihood per sample"}[key])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("greedy layer-wise pre-training (contrastive divergence)")
    fig.tight_layout()
    save_figure(fig, path)
