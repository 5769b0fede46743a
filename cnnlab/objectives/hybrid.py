"""``energy-hybrid``: classification plus the energy head's generative likelihood, by persistent CD.

sadie Sec. 3.2 ends with "we can use the Markov chain [Tieleman (2008)] to complete the
optimization steps". Read with Larochelle & Bengio's (2008) hybrid DRBM, the objective is

    loss = -log p(y | x)  +  weight * (-log p(x, y))

where x are the features entering the energy head (:class:`cnnlab.models.energy.EnergyHead`),
p(y | x) = softmax_y(-F(x, y)) and p(x, y) = exp(-F_gen(x, y)) / Z is the head's RBM as a
generative model (Gaussian visible units of unit variance, binary hidden units). The gradient of
-log p(x, y) is dF_gen(x, y)/dtheta - E_model[dF_gen/dtheta]; Z (and so the second term) is
intractable, and persistent contrastive divergence (PCD, Tieleman 2008) estimates it with a set
of Markov chains over (x, y) that are kept from one mini-batch to the next, each advanced by
``gibbs_steps`` steps of block Gibbs sampling (h | x, y, then x | h and y | h) per update.

What is exact and what is not:

* exact: the classification term and its gradient (closed-form free energy, no sampling);
  the positive phase dF_gen(x_data, y_data)/dtheta;
* approximate: the negative phase is a Monte-Carlo average over ``chains`` samples that are
  not exactly from the current model (the chains lag behind the parameters; PCD's bias shrinks
  with the learning rate). The loss *value* of the generative part, F_gen(data) - F_gen(chains),
  is a surrogate whose gradient is the PCD estimate; it is not -log p(x, y) (log Z is unknown).
  ``train_loss`` of an energy-hybrid run is therefore classification NLL + weight x that gap;
  ``train_ce`` is the classification part alone.
* a choice: the generative term trains the head's parameters only (the features are detached
  for it). Through the features it would reward the network for mapping every image to a
  high-density point (a density of the network's outputs has no Jacobian term), collapsing them.

The chains (x [chains, n_v], y [chains]) are the objective's state: saved in every checkpoint
and restored on resume, and advanced with torch's global RNG (also saved), so a resumed run
repeats an uninterrupted one exactly.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import CnnlabError
from . import register_objective
from .classify import Classify


@register_objective("energy-hybrid")
class EnergyHybrid(Classify):
    """Softmax cross-entropy on -F(x, y) + weight x the energy head's generative NLL, trained by PCD."""

    name = "energy-hybrid"

    def __init__(self, label_smoothing: float = 0.0, weight: float = 0.01, chains: int = 100, gibbs_steps: int = 1):
        super().__init__(label_smoothing)
        self.weight = _number(weight, "weight", lambda v: v >= 0, ">= 0")
        self.chains = int(_number(chains, "chains", lambda v: v >= 1 and float(v).is_integer(), "an integer >= 1"))
        self.gibbs_steps = int(_number(gibbs_steps, "gibbs_steps", lambda v: v >= 1 and float(v).is_integer(),
                                       "an integer >= 1"))
        self.head = None
        self.chain_x: torch.Tensor | None = None  # persistent chains, created at the first step
        self.chain_y: torch.Tensor | None = None
        self._features: torch.Tensor | None = None  # the head's input in the current training step
        self._last: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg, weight: float = 0.01, chains: int = 100, gibbs_steps: int = 1) -> "EnergyHybrid":
        return cls(cfg.label_smoothing, weight, chains, gibbs_steps)

    def bind(self, model: torch.nn.Module) -> None:
        from ..models.energy import EnergyHead

        heads = [m for m in model.modules() if isinstance(m, EnergyHead)]
        if not heads:
            raise CnnlabError("--objective energy-hybrid needs a model with an energy head: add --head energy "
                              "(or use sadie110 / sadie152)")
        if heads[-1].units != "binary":
            raise CnnlabError("--objective energy-hybrid needs --head-options units=binary: with rectified Gaussian "
                              "hidden units and Gaussian visible units the joint model is not normalizable in general")
        self.head = heads[-1]
        # the head's input is captured on every training forward; evaluation passes are ignored
        self.head.register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        if module.training:
            self._features = inputs[0]

    # ------------------------------------------------------------------ the loss
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = super().loss(output, target)
        if self._features is None:
            raise CnnlabError("energy-hybrid: the energy head did not run in this training step")
        # the generative term trains the head only (module docstring); energies in the head's precision
        x = self._features.detach().to(self.head.visible_bias.dtype)
        self._features = None
        chain_x, chain_y = self.advance_chains(x)
        gap = (self.head.generative_free_energy(x, target).mean()
               - self.head.generative_free_energy(chain_x, chain_y).mean())
        self._last = {"ce": ce.detach(), "gap": gap.detach()}
        return ce + self.weight * gap

    @torch.no_grad()
    def advance_chains(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``gibbs_steps`` block-Gibbs steps of every persistent chain; the chains start at N(a, I), uniform y."""
        head = self.head
        if self.chain_x is None:
            a = head.visible_bias.detach()
            self.chain_x = a + torch.randn(self.chains, x.shape[1], device=x.device, dtype=a.dtype)
            self.chain_y = torch.randint(0, head.num_classes, (self.chains,), device=x.device)
        xs, ys = self.chain_x.to(x.device), self.chain_y.to(x.device)
        for _ in range(self.gibbs_steps):
            h = head.sample_hidden(xs, ys)
            xs, ys = head.sample_visible(h), head.sample_class(h)
        self.chain_x, self.chain_y = xs, ys
        return xs, ys

    # ------------------------------------------------------------------ metrics
    def batch_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        n = len(target)
        return {**super().batch_sums(output, target), "ce": self._last["ce"] * n,
                "free_energy_gap": self._last["gap"] * n}

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        seen = max(seen, 1)
        return {**super().train_metrics(sums, seen), "train_ce": sums["ce"] / seen,
                "train_free_energy_gap": sums["free_energy_gap"] / seen}

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        if self.chain_x is None:
            return {}
        return {"chain_x": self.chain_x.detach().cpu(), "chain_y": self.chain_y.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.chain_x, self.chain_y = state["chain_x"], state["chain_y"]


def _number(value: Any, option: str, ok, expect: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise CnnlabError(f"--objective energy-hybrid: option {option} must be {expect}, got {value!r}")
    return float(value)
