"""RBMs and contrastive divergence checked against exact gradients (all states enumerated), and the
deep belief net's pre-training stage through cnnlab.train: metrics, checkpoint, resume, errors."""
import itertools
import math

import pytest
import torch

from cnnlab import runs
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.rbm import RBM
from cnnlab.train import train

V, H = 4, 3


def states(n: int) -> torch.Tensor:
    """All 2^n binary vectors [2^n, n]."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


def tiny_rbm(visible: str, n_visible: int = V, scale: float = 0.7, seed: int = 0) -> RBM:
    torch.manual_seed(seed)
    rbm = RBM(n_visible, H, visible)
    with torch.no_grad():
        rbm.linear.weight.copy_(scale * torch.randn(H, n_visible))
        rbm.linear.bias.copy_(0.3 * torch.randn(H))
        rbm.visible_bias.copy_(0.3 * torch.randn(n_visible))
    return rbm


def exact_bernoulli_log_likelihood(W, b, c, data):
    """mean log p(data) with Z summed over every (v, h): E(v, h) = -b.v - c.h - h.W v."""
    vs, hs = states(W.shape[1]), states(W.shape[0])
    neg_energy = vs @ b[:, None] + (hs @ c)[None, :] + vs @ W.t() @ hs.t()  # [2^V, 2^H]
    log_z = torch.logsumexp(neg_energy.flatten(), 0)
    data_neg_energy = data @ b[:, None] + (hs @ c)[None, :] + data @ W.t() @ hs.t()
    return (torch.logsumexp(data_neg_energy, 1) - log_z).mean()


def exact_gaussian_log_likelihood(W, b, c, data):
    """Unit-variance Gaussian visible units: log p(v) = -F(v) - log Z, with v integrated out of Z
    analytically for each of the 2^H hidden states:
    Z = (2 pi)^(V/2) sum_h exp(c.h + |b + W^T h|^2 / 2 - |b|^2 / 2)."""
    hs = states(W.shape[0])
    n_visible = W.shape[1]
    log_z = n_visible / 2 * math.log(2 * math.pi) + torch.logsumexp(
        hs @ c + 0.5 * (b[None, :] + hs @ W).pow(2).sum(1) - 0.5 * b.pow(2).sum(), 0)
    free_energy = 0.5 * (data - b).pow(2).sum(1) - torch.nn.functional.softplus(data @ W.t() + c).sum(1)
    return (-free_energy - log_z).mean()


def exact_gradient(rbm: RBM, data: torch.Tensor) -> dict[str, torch.Tensor]:
    W = rbm.weight.detach().clone().requires_grad_()
    b = rbm.visible_bias.detach().clone().requires_grad_()
    c = rbm.hidden_bias.detach().clone().requires_grad_()
    exact = exact_bernoulli_log_likelihood if rbm.visible == "bernoulli" else exact_gaussian_log_likelihood
    exact(W, b, c, data).backward()
    return {"weight": W.grad, "visible_bias": b.grad, "hidden_bias": c.grad}


def monte_carlo_cd(rbm: RBM, data: torch.Tensor, k: int, copies: int) -> dict[str, torch.Tensor]:
    """The CD-k estimate over ``copies`` chains per data vector: its mean over chains is the estimate's
    expectation up to Monte Carlo error ~ 1 / sqrt(copies * len(data))."""
    torch.manual_seed(1)
    ascent, _ = rbm.cd_gradient(data.repeat(copies, 1), k)
    return ascent


BINARY_DATA = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1.0]])


def test_free_energy_is_the_hidden_states_summed_out():
    rbm = tiny_rbm("bernoulli")
    W, b, c = rbm.weight.detach(), rbm.visible_bias, rbm.hidden_bias.detach()
    vs, hs = states(V), states(H)
    neg_energy = vs @ b[:, None] + (hs @ c)[None, :] + vs @ W.t() @ hs.t()
    torch.testing.assert_close(-rbm.free_energy(vs).detach(), torch.logsumexp(neg_energy, 1))


def test_cd1_expectation_equals_its_exact_value_by_enumeration():
    """E[CD-1] = p(h|v0) v0^T - sum_h0 p(h0|v0) sum_v1 p(v1|h0) p(h|v1) v1^T, all states enumerated."""
    rbm = tiny_rbm("bernoulli")
    vs, hs = states(V), states(H)
    with torch.no_grad():
        ph_data = rbm.hidden_probs(BINARY_DATA)  # [N, H]
        p_h0 = (ph_data[:, None, :] ** hs * (1 - ph_data[:, None, :]) ** (1 - hs)).prod(2)  # [N, 2^H]
        pv = rbm.visible_mean(hs)  # [2^H, V]
        p_v1 = (pv[:, None, :] ** vs * (1 - pv[:, None, :]) ** (1 - vs)).prod(2)  # [2^H, 2^V]
        p_v1_given_data = p_h0 @ p_v1  # [N, 2^V]
        ph_v1 = rbm.hidden_probs(vs)  # [2^V, H]
        n = len(BINARY_DATA)
        exact = {"weight": (ph_data.t() @ BINARY_DATA - torch.einsum("nv,vh,vi->hi", p_v1_given_data, ph_v1, vs)) / n,
                 "hidden_bias": (ph_data - p_v1_given_data @ ph_v1).mean(0),
                 "visible_bias": (BINARY_DATA - p_v1_given_data @ vs).mean(0)}
    estimate = monte_carlo_cd(rbm, BINARY_DATA, k=1, copies=20000)
    for name in exact:
        torch.testing.assert_close(estimate[name], exact[name], atol=0.01, rtol=0, msg=name)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_cd_k_tends_to_the_exact_log_likelihood_gradient(visible):
    """With a long chain (k = 40) the CD-k estimate matches d mean log p(data) / d theta computed exactly
    (autograd through the enumerated partition function); CD-1 on the same RBM is visibly biased."""
    if visible == "bernoulli":
        rbm, data = tiny_rbm("bernoulli"), BINARY_DATA
    else:
        rbm = tiny_rbm("gaussian", n_visible=3, scale=0.5)
        data = torch.tensor([[0.5, -1.0, 0.2], [1.5, 0.3, -0.4], [-0.8, 0.9, 1.1], [0.1, 0.1, -1.5]])
    exact = exact_gradient(rbm, data)
    long_chain = monte_carlo_cd(rbm, data, k=40, copies=12000)
    for name in exact:
        torch.testing.assert_close(long_chain[name], exact[name], atol=0.03, rtol=0, msg=name)
    one_step = monte_carlo_cd(rbm, data, k=1, copies=12000)
    bias = max((one_step[n] - exact[n]).abs().max().item() for n in exact)
    assert bias > 0.05, "CD-1 should differ from the exact gradient on this RBM (else the test proves little)"


def test_pseudo_log_likelihood_estimates_the_exact_one():
    """E over the flipped unit of V log sigmoid(F(v~) - F(v)) = sum_i log p(v_i | v_-i)."""
    rbm = tiny_rbm("bernoulli")
    with torch.no_grad():
        exact = 0.0
        for v in BINARY_DATA:
            for i in range(V):
                flipped = v.clone()
                flipped[i] = 1 - flipped[i]
                gap = rbm.free_energy(flipped[None]) - rbm.free_energy(v[None])
                exact += torch.nn.functional.logsigmoid(gap).item()
        torch.manual_seed(0)
        estimate = rbm.pseudo_log_likelihood(BINARY_DATA.repeat(5000, 1)).item() / 5000
    assert estimate == pytest.approx(exact, rel=0.02)


# --------------------------------------------------------------------------- the DBN through the engine


def dbn_config(tiny_config, **changes):
    """A DBN on the 8x8 digits' pixels / 255 (Bernoulli visible units need inputs in [0, 1])."""
    base = dict(data="digits", model="dbn", model_options={"hidden": [16, 16], "visible": "bernoulli"},
                input_scaling="none", opt="adam", lr=0.01, sched="constant", weight_decay=0.0, epochs=1,
                batch_size=32, pretrain_epochs=2, pretrain_lr=0.01, cd_k=1, channels_last=False)
    return tiny_config(**{**base, **changes})


@pytest.fixture(scope="module")
def pretrained_and_scratch(tmp_path_factory):
    """The same three-layer sigmoid net (64-64-64) with the same short fine-tuning (2 epochs of Adam),
    once after 5 epochs of greedy CD-1 pre-training per layer, once from its random initialization."""
    from cnnlab.config import TrainConfig

    out = tmp_path_factory.mktemp("dbn")
    common = dict(data="digits", model="dbn", model_options={"hidden": [64, 64, 64], "visible": "bernoulli"},
                  input_scaling="none", opt="adam", lr=0.01, sched="constant", weight_decay=0.0, epochs=2,
                  batch_size=32, pretrain_lr=0.01, cd_k=1, channels_last=False, out=str(out), progress=False,
                  threads=1, precision="fp32")
    pretrained = train(TrainConfig.from_dict({**common, "name": "pretrained", "pretrain_epochs": 5}))
    scratch = train(TrainConfig.from_dict({**common, "name": "scratch", "pretrain_epochs": 0}))
    return pretrained, scratch


def test_dbn_pretraining_writes_its_own_metrics_and_checkpoint_then_fine_tunes(pretrained_and_scratch):
    summary, _ = pretrained_and_scratch
    run_dir = runs.Path(summary["run_dir"])
    rows = runs.read_metrics(run_dir, runs.PRETRAIN_METRICS)
    assert [(r["layer"], r["epoch"]) for r in rows] == [(layer, e) for layer in (1, 2, 3) for e in range(1, 6)]
    assert all(r["visible"] == "bernoulli" and "pseudo_ll" in r for r in rows)
    first_layer = [r["recon_error"] for r in rows if r["layer"] == 1]
    assert first_layer[-1] < 0.8 * first_layer[0]  # CD learns: the one-step reconstruction improves
    for name in (runs.PRETRAIN_CHECKPOINT, runs.PRETRAIN_CURVES, runs.CHECKPOINT, runs.SUMMARY):
        assert (run_dir / name).is_file(), name
    assert summary["pretrain_seconds"] > 0 and len(runs.read_metrics(run_dir)) == 2  # then 2 fine-tuning epochs


def test_pretraining_then_fine_tuning_beats_random_init(pretrained_and_scratch):
    """The premise of DBN pre-training on a small problem: with the same short fine-tuning, the
    pre-trained net is clearly better than the same net from its random initialization (seen
    here: 67-72% against 47-58% test accuracy over seeds 0-2)."""
    pretrained, scratch = pretrained_and_scratch
    assert pretrained["test_acc"] > scratch["test_acc"] + 0.05, (pretrained["test_acc"], scratch["test_acc"])


class Crash(Exception):
    pass


def test_pretraining_resumes_exactly_after_a_crash(tiny_config, monkeypatch):
    full = train(dbn_config(tiny_config, name="full"))
    import cnnlab.pretrain as pretrain_module

    real_save, saved = pretrain_module.save_checkpoint, []

    def crash_after_third_epoch(state, path):  # layer 2, epoch 1 done
        real_save(state, path)
        saved.append(path)
        if len(saved) == 3:
            raise Crash

    monkeypatch.setattr(pretrain_module, "save_checkpoint", crash_after_third_epoch)
    with pytest.raises(Crash):
        train(dbn_config(tiny_config, name="crashed"))
    monkeypatch.setattr(pretrain_module, "save_checkpoint", real_save)
    resumed = train(dbn_config(tiny_config, name="crashed"), resume=True)
    timing = ("seconds", "images_per_second", "epoch_seconds", "elapsed")
    for name in (runs.PRETRAIN_METRICS, runs.METRICS):
        a, b = (runs.read_metrics(runs.Path(s["run_dir"]), name) for s in (full, resumed))
        assert [{k: v for k, v in r.items() if k not in timing} for r in a] == \
            [{k: v for k, v in r.items() if k not in timing} for r in b], name
    wa = torch.load(f"{full['run_dir']}/{runs.CHECKPOINT}", weights_only=True)["model"]
    wb = torch.load(f"{resumed['run_dir']}/{runs.CHECKPOINT}", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pretraining_errors_name_the_flag(tiny_config):
    with pytest.raises(CnnlabError, match="--pretrain-epochs 2: model 'mlp' has no pre-training stage"):
        train(tiny_config(model="mlp", model_options={}, pretrain_epochs=2))
    with pytest.raises(CnnlabError, match=r"visible=bernoulli needs inputs in \[0, 1\].*--input-scaling minmax"):
        train(dbn_config(tiny_config, input_scaling="standard"))
    with pytest.raises(CnnlabError, match="visible must be one of bernoulli, gaussian"):
        create_model("dbn", 10, 64, image_size=1, visible="binary")
