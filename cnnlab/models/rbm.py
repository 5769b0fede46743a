"""Restricted Boltzmann machines and contrastive divergence (CD-k), the layers of a deep belief net.

An RBM has visible units v (V of them), binary hidden units h (H), weights W [H, V], visible
biases b and hidden biases c. Two kinds of visible units:

* **Bernoulli-Bernoulli** (``visible="bernoulli"``, binary v, data in [0, 1] read as probabilities):
  E(v, h) = -b.v - c.h - h.W v;  p(h_j = 1 | v) = sigmoid(c_j + W_j. v),
  p(v_i = 1 | h) = sigmoid(b_i + W_.i h);  free energy F(v) = -b.v - sum_j softplus(c_j + W_j. v).
* **Gaussian-Bernoulli** (``visible="gaussian"``, real v with unit variance: standardize the inputs):
  E(v, h) = |v - b|^2 / 2 - c.h - h.W v;  p(h | v) as above,  v | h ~ N(b + W^T h, I);
  F(v) = |v - b|^2 / 2 - sum_j softplus(c_j + W_j. v).

p(v) = exp(-F(v)) / Z, and the log-likelihood gradient is a data term minus a model term,
d log p(v) / dW = p(h | v) v^T - E_model[p(h | v') v'^T] (likewise b with v, c with p(h | v)).
CD-k (Hinton 2002) replaces the model expectation by the end of a k-step Gibbs chain started at
the data: v0 -> h0 -> v1 -> h1 -> ... -> vk, every state sampled, and uses
p(h | v0) v0^T - p(h | vk) vk^T (the hidden states averaged analytically, "Rao-Blackwellized").
Its expectation tends to the exact gradient as k grows; tests/test_rbm.py checks both the exact
expectation of CD-1 and the k -> infinity limit against gradients computed by enumerating all
states of a tiny RBM.

The weights and hidden biases live in an ``nn.Linear`` (so the deep belief net's feed-forward
pass, sigmoid(linear(v)), is the same layer with the same parameters, and cost counters see it);
the visible biases are a buffer: fine-tuning by backpropagation never uses them, but they are
saved with the model and moved by CD.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CnnlabError

VISIBLE_KINDS = ("bernoulli", "gaussian")


class RBM(nn.Module):
    def __init__(self, n_visible: int, n_hidden: int, visible: str = "bernoulli"):
        super().__init__()
        if visible not in VISIBLE_KINDS:
            raise CnnlabError(f"RBM visible units must be one of {', '.join(VISIBLE_KINDS)}, got {visible!r}")
        self.visible = visible
        self.linear = nn.Linear(n_visible, n_hidden)  # weight W [H, V], bias c
        self.register_buffer("visible_bias", torch.zeros(n_visible))

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def hidden_bias(self) -> torch.Tensor:
        return self.linear.bias

    # ------------------------------------------------------------------ conditionals
    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | v) [B, H]."""
        return torch.sigmoid(self.linear(v))

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h] [B, V]: sigmoid(b + W^T h) (Bernoulli) or b + W^T h (Gaussian)."""
        pre = F.linear(h, self.weight.t(), self.visible_bias)
        return torch.sigmoid(pre) if self.visible == "bernoulli" else pre

    def sample_from_mean(self, mean: torch.Tensor) -> torch.Tensor:
        """A visible sample given E[v | h]: Bernoulli draws, or the mean plus N(0, 1) noise."""
        return torch.bernoulli(mean) if self.visible == "bernoulli" else mean + torch.randn_like(mean)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) [B] (see the module docstring), so that p(v) = exp(-F(v)) / Z."""
        hidden_term = F.softplus(self.linear(v)).sum(1)
        if self.visible == "bernoulli":
            return -(v @ self.visible_bias) - hidden_term
        return 0.5 * (v - self.visible_bias).pow(2).sum(1) - hidden_term

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.hidden_probs(v)

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def cd_gradient(self, v0: torch.Tensor, k: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The CD-k estimate of the mean log-likelihood gradient over the batch ``v0`` [B, V].

        Returns ``(ascent, stats)``: ``ascent`` maps ``weight``, ``hidden_bias``, ``visible_bias``
        to the estimated d(mean log p(v0))/d(parameter) (to climb: the optimizer gets its
        negative as the gradient); ``stats`` holds per-sample ``sq_err`` sums (|v0 - E[v | h0]|^2,
        the one-step reconstruction error) for the epoch's metrics.
        """
        if k < 1:
            raise CnnlabError(f"--cd-k must be >= 1, got {k}")
        ph0 = self.hidden_probs(v0)
        recon = self.visible_mean(torch.bernoulli(ph0))  # E[v1 | h0]
        mean = recon
        for step in range(k):  # v_{s+1} ~ p(v | h_s), then p(h | v_{s+1}) and, unless last, h_{s+1}
            v = self.sample_from_mean(mean)
            phk = self.hidden_probs(v)
            if step < k - 1:
                mean = self.visible_mean(torch.bernoulli(phk))
        n = v0.shape[0]
        ascent = {"weight": (ph0.t() @ v0 - phk.t() @ v) / n,
                  "hidden_bias": (ph0 - phk).mean(0),
                  "visible_bias": (v0 - v).mean(0)}
        stats = {"sq_err": (v0 - recon).pow(2).sum()}
        return ascent, stats

    @torch.no_grad()
    def pseudo_log_likelihood(self, v: torch.Tensor) -> torch.Tensor:
        """Stochastic pseudo-log-likelihood of binary ``v`` [B, V] (Bernoulli visible units only):
        V * log sigmoid(F(v~) - F(v)), with v~ = v with one random unit per sample flipped
        (an unbiased estimate of sum_i log p(v_i | v_-i)); returns the batch sum."""
        b, n = v.shape
        flip = torch.randint(0, n, (b,), device=v.device)
        v_bin = (v > 0.5).to(v.dtype)  # the data may be probabilities: score its most likely binary state
        flipped = v_bin.clone()
        flipped[torch.arange(b, device=v.device), flip] = 1 - flipped[torch.arange(b, device=v.device), flip]
        return (n * F.logsigmoid(self.free_energy(flipped) - self.free_energy(v_bin))).sum()

