"""The deep energy model output head of SADIE (sadie-stochastic-depth-energy-model.md eq. 3.5-3.11).

The paper's notation is loose; this module reads it as the discriminative restricted
Boltzmann machine (DRBM) of Larochelle & Bengio (2008), placed on the network's last
features x (the "visible" units, n_v of them), the class y (one-hot e_y over K classes) and
n_h hidden units h. docs/sadie.md gives the full reading; in short:

* Energy (eq. 3.5, with the signs of the standard RBM and the hidden bias c that eq. 3.5 leaves out)::

      E(x, y, h) = -h^T W x - h^T U e_y - b^T e_y - a^T x - c^T h   (+ 1/2 |h|^2 for "relu" units)

  W: visible-hidden weights, U: class-hidden weights, b: class biases, a: visible biases,
  c: hidden biases. (Eq. 3.5 prints +h W x; flipping the sign of W is a reparameterization.)
* Free energy (eq. 3.6/3.8: expected energy minus the entropy of p(h | x, y), i.e.
  F = -log sum_h exp(-E)); the hidden units are independent given (x, y), so the sum
  factorizes and, with t_jy = c_j + (W x)_j + U_jy,

      F(x, y) = -a^T x - b_y - sum_j g(t_jy)

  ``units="binary"``  h_j in {0, 1}:       g(t) = log(1 + e^t) = softplus(t)   (exact)
  ``units="relu"``    h_j in [0, inf) with the extra 1/2 h_j^2 energy (a rectified Gaussian unit):
                      g(t) = log int_0^inf exp(t h - h^2/2) dh = t^2/2 + log Phi(t) + log sqrt(2 pi)   (exact)

  g'(t) is the unit's mean activation E[h_j | x, y]: sigmoid(t) for binary units, and for
  rectified Gaussian units t + phi(t)/Phi(t), a smooth ReLU (-> max(0, t) as |t| grows). That
  is our reading of eq. 3.7, "P(h = 1 | x, y) = f(x w + u) with f the ReLU": a ReLU cannot be a
  probability, but it is (up to smoothing) this unit's expected activation.
* p(y | x) = exp(-F(x, y)) / sum_y' exp(-F(x, y')), so the head's output, the logits, is
  -F(x, y) and softmax cross-entropy (the ``classify`` objective) is exactly the negative
  log-likelihood -log p(y | x). Its gradient is eq. 3.9's sum over classes of
  (target - probability) x gradient of the class score, which autograd computes exactly;
  prediction (eq. 3.11) is argmax_y -F(x, y) = argmin_y F(x, y).

The head also exposes the RBM's Gibbs conditionals, which the optional hybrid objective
(:mod:`cnnlab.objectives.hybrid`) uses to train the joint model p(x, y) with persistent
contrastive divergence. Energies are computed in float32 even under autocast: the softplus
of a bf16 pre-activation loses the small differences between classes.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CnnlabError

HEADS = ("linear", "energy")
HIDDEN_UNITS = ("binary", "relu")
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def hidden_log_partition(t: torch.Tensor, units: str) -> torch.Tensor:
    """g(t) = log of the sum (binary) or integral (relu) over one hidden unit's values of exp(t h - extra(h))."""
    if units == "binary":
        return F.softplus(t)
    return 0.5 * t * t + torch.special.log_ndtr(t) + _LOG_SQRT_2PI


def hidden_mean(t: torch.Tensor, units: str) -> torch.Tensor:
    """E[h_j | x, y] = g'(t): sigmoid(t), or the rectified Gaussian's mean t + phi(t) / Phi(t)."""
    if units == "binary":
        return torch.sigmoid(t)
    # phi(t) / Phi(t) = exp(log phi(t) - log Phi(t)), stable far into the negative tail
    log_phi = -0.5 * t * t - _LOG_SQRT_2PI
    return t + torch.exp(log_phi - torch.special.log_ndtr(t))


class EnergyHead(nn.Module):
    """Class scores -F(x, y) of a discriminative RBM on the features x (see the module docstring).

    ``in_features`` = n_v, ``hidden`` = n_h, ``units``: "binary" or "relu" hidden units.
    ``forward(x)`` returns logits [N, K]; ``free_energy(x)`` the free energies F(x, y) [N, K].
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, units: str = "binary"):
        super().__init__()
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise CnnlabError(f"energy head: option hidden (number of hidden units) must be an integer >= 1, "
                              f"got {hidden!r}")
        if units not in HIDDEN_UNITS:
            raise CnnlabError(f"energy head: option units must be one of {', '.join(HIDDEN_UNITS)}, got {units!r}")
        self.in_features, self.num_classes, self.hidden, self.units = in_features, num_classes, hidden, units
        self.visible_to_hidden = nn.Linear(in_features, hidden)  # W [n_h, n_v] and the hidden biases c
        self.class_to_hidden = nn.Parameter(torch.empty(hidden, num_classes))  # U [n_h, K]
        self.class_bias = nn.Parameter(torch.zeros(num_classes))  # b [K]
        self.visible_bias = nn.Parameter(torch.zeros(in_features))  # a [n_v]
        # W and U both start as nn.Linear's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)): fan_in = n_v for W
        # and K for U (a linear map of the one-hot class); c starts at 0. The class-dependent part of
        # the gradient that reaches the features is sum_j sigmoid'(t_j)(U_jy - U_jy') W_j, so a much
        # smaller U (Larochelle & Bengio's 1/sqrt(max(n_h, K))) starves the network below the head:
        # ResNet-20 (width 1/4) on 5000 MNIST images reached 39% test accuracy after 2 epochs with
        # it and 75% with this scale (a linear head: 85%).
        nn.init.zeros_(self.visible_to_hidden.bias)
        bound = 1 / math.sqrt(num_classes)
        nn.init.uniform_(self.class_to_hidden, -bound, bound)

    def hidden_input(self, x: torch.Tensor) -> torch.Tensor:
        """t_jy = c_j + (W x)_j + U_jy for every class: [N, n_h, K]."""
        return self.visible_to_hidden(x).unsqueeze(-1) + self.class_to_hidden

    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        """F(x, y) = -a^T x - b_y - sum_j g(t_jy) for every class y: [N, K] (float32 or float64)."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.float() if x.dtype not in (torch.float32, torch.float64) else x
            t = self.hidden_input(x)
            return -(x @ self.visible_bias).unsqueeze(-1) - self.class_bias - hidden_log_partition(t, self.units).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.free_energy(x)

    # ------------------------------------------------ Gibbs conditionals (used by the hybrid objective)
    def class_hidden_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """t_j for the given classes y [N]: [N, n_h]."""
        return self.visible_to_hidden(x) + self.class_to_hidden.t()[y]

    def sample_hidden(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """h ~ p(h | x, y): Bernoulli(sigmoid(t)) for binary units, N(t, 1) truncated to [0, inf) for relu units."""
        t = self.class_hidden_input(x, y)
        if self.units == "binary":
            return torch.bernoulli(torch.sigmoid(t))
        return sample_rectified_gaussian(t)

    def generative_free_energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F_gen(x, y) = 1/2 |x|^2 + F(x, y) for the given classes y [N]: [N].

        The free energy of the joint model p(x, y) = exp(-F_gen) / Z with Gaussian visible units of
        unit variance: eq. 3.5 is linear in x, which for real-valued features would not be a
        normalizable distribution; the quadratic term does not depend on y, so p(y | x) is unchanged.
        """
        x = x.float() if x.dtype not in (torch.float32, torch.float64) else x
        t = self.class_hidden_input(x, y)
        return (0.5 * (x * x).sum(1) - x @ self.visible_bias - self.class_bias[y]
                - hidden_log_partition(t, self.units).sum(1))

    def sample_visible(self, h: torch.Tensor) -> torch.Tensor:
        """x ~ p(x | h) = N(a + W^T h, I): the Gaussian visible units of the generative model (docs/sadie.md)."""
        mean = self.visible_bias + h @ self.visible_to_hidden.weight
        return mean + torch.randn_like(mean)

    def sample_class(self, h: torch.Tensor) -> torch.Tensor:
        """y ~ p(y | h) = softmax(b + U^T h)."""
        return torch.multinomial(torch.softmax(self.class_bias + h @ self.class_to_hidden, dim=1), 1).squeeze(1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, hidden={self.hidden}, units={self.units}"


def sample_rectified_gaussian(t: torch.Tensor) -> torch.Tensor:
    """h ~ N(t, 1) truncated to [0, inf), by inverting the CDF: h = t - Phi^-1(v Phi(t)), v ~ U(0, 1).

    Computed in float64 with t clamped at -30 (Phi(-30) ~ 5e-198 is still a float64 number), so the
    inverse stays finite; below that the truncated normal is within 1e-3 of an exponential anyway.
    """
    t64 = t.double().clamp_min(-30.0)
    v = torch.rand_like(t64).clamp_min(1e-16)  # v = 0 (probability 2^-53) would give h = inf
    h = t64 - torch.special.ndtri(v * torch.special.ndtr(t64))
    return h.clamp_min(0.0).to(t.dtype)


def make_head(kind: str, in_features: int, num_classes: int, **options) -> nn.Module:
    """An output head by name: ``"linear"`` (nn.Linear, no options) or ``"energy"`` (:class:`EnergyHead`)."""
    from ..registry import check_options

    if kind == "linear":
        if options:
            raise CnnlabError(f"head 'linear' takes no head_options, got {', '.join(sorted(options))} "
                              f"(use --head energy for hidden=..., units=...)")
        return nn.Linear(in_features, num_classes)
    if kind == "energy":
        check_options(EnergyHead.__init__, options, "head 'energy'", skip=("self", "in_features", "num_classes"))
        return EnergyHead(in_features, num_classes, **options)
    raise CnnlabError(f"option head must be one of {', '.join(HEADS)}, got {kind!r}")

