"""The optimizer-path figure's optimizers (cnnlab.optim.paths, through cnnlab's factory) move as their equations
say: two steps on the quadratic f = 0.5 (a x^2 + b y^2), recomputed here by hand from each method's update rule."""
import math

import pytest
import torch

from cnnlab.optim.paths import OPTIMIZERS, SURFACES, Surface, draw, trajectory

A, B = 1.0, 10.0
QUAD = Surface("quad", lambda x, y: 0.5 * (A * x ** 2 + B * y ** 2), (1.0, 1.0), (-2, 2, -2, 2), (0.0, 0.0))
LR = 0.05


def grad(p):
    return [A * p[0], B * p[1]]


def by_hand(opt: str, steps: int = 2) -> list[list[float]]:
    p = list(QUAD.start)
    points = [p[:]]
    state = [dict(v=0.0, s=0.0, m=0.0, u=0.0, d=0.0, mu_prod=1.0) for _ in p]
    for t in range(1, steps + 1):
        g = grad(p)
        for i in range(2):
            st, gi = state[i], g[i]
            if opt == "sgd":  # theta -= lr g
                p[i] -= LR * gi
            elif opt == "momentum":  # thesis eq. 2.14-2.15: v = mu v + g; theta -= lr v
                st["v"] = 0.9 * st["v"] + gi if t > 1 else gi
                p[i] -= LR * st["v"]
            elif opt == "nag":  # eq. 2.16-2.17 (Sutskever form): v = mu v + g; theta -= lr (g + mu v)
                st["v"] = 0.9 * st["v"] + gi if t > 1 else gi
                p[i] -= LR * (gi + 0.9 * st["v"])
            elif opt == "adagrad":  # s += g^2; theta -= lr g / (sqrt(s) + eps)
                st["s"] += gi ** 2
                p[i] -= LR * gi / (math.sqrt(st["s"]) + 1e-10)
            elif opt == "adadelta":  # Zeiler 2012, rho 0.9, eps 1e-6
                st["s"] = 0.9 * st["s"] + 0.1 * gi ** 2
                delta = math.sqrt(st["d"] + 1e-6) / math.sqrt(st["s"] + 1e-6) * gi
                st["d"] = 0.9 * st["d"] + 0.1 * delta ** 2
                p[i] -= LR * delta
            elif opt == "rmsprop":  # E[g^2] = alpha E + (1 - alpha) g^2, alpha 0.99; theta -= lr g / (sqrt(E) + eps)
                st["s"] = 0.99 * st["s"] + 0.01 * gi ** 2
                p[i] -= LR * gi / (math.sqrt(st["s"]) + 1e-8)
            elif opt in ("adam", "adamax", "nadam"):
                st["m"] = 0.9 * st["m"] + 0.1 * gi
                if opt == "adam":  # bias-corrected m / (sqrt(v) + eps)
                    st["s"] = 0.999 * st["s"] + 0.001 * gi ** 2
                    m_hat, v_hat = st["m"] / (1 - 0.9 ** t), st["s"] / (1 - 0.999 ** t)
                    p[i] -= LR * m_hat / (math.sqrt(v_hat) + 1e-8)
                elif opt == "adamax":  # u = max(beta2 u, |g| + eps); theta -= lr / (1 - beta1^t) m / u
                    st["u"] = max(0.999 * st["u"], abs(gi) + 1e-8)
                    p[i] -= LR / (1 - 0.9 ** t) * st["m"] / st["u"]
                else:  # Nadam (Dozat 2016) with PyTorch's momentum schedule mu_t = beta1 (1 - 0.5 * 0.96^(0.004 t))
                    mu_t = 0.9 * (1 - 0.5 * 0.96 ** (0.004 * t))
                    mu_next = 0.9 * (1 - 0.5 * 0.96 ** (0.004 * (t + 1)))
                    st["mu_prod"] *= mu_t
                    st["s"] = 0.999 * st["s"] + 0.001 * gi ** 2
                    v_hat = st["s"] / (1 - 0.999 ** t)
                    m_hat = (mu_next * st["m"] / (1 - st["mu_prod"] * mu_next)
                             + (1 - mu_t) * gi / (1 - st["mu_prod"]))
                    p[i] -= LR * m_hat / (math.sqrt(v_hat) + 1e-8)
        points.append(p[:])
    return points


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_each_optimizer_moves_as_its_equation_says(opt):
    got = trajectory(opt, QUAD, steps=2, lr=LR)
    want = by_hand(opt)
    assert len(got) == 3
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-9, abs=1e-12), (opt, got, want)


def test_the_figures_story_on_the_saddle_and_the_valley(tmp_path):
    # near the ridge of x^2 - y^2 the adaptive methods leave the saddle much sooner than plain SGD
    def escape_step(opt):
        pts = trajectory(opt, "saddle", steps=60)
        return next((i for i, (_, y) in enumerate(pts) if abs(y) > 0.5), 999)
    assert escape_step("adam") < escape_step("sgd") and escape_step("rmsprop") < escape_step("sgd")
    # in the long valley momentum gets much further down than plain SGD in the same number of steps
    f = SURFACES["valley"].f
    loss = {o: float(f(*torch.tensor(trajectory(o, "valley", 100)[-1]))) for o in ("sgd", "momentum")}
    assert loss["momentum"] < 0.1 * loss["sgd"]
    record = draw(tmp_path, steps=5, surfaces=("valley",))
    assert (tmp_path / "paths_valley.png").stat().st_size > 0 and (tmp_path / "paths.json").is_file()
    assert set(record["valley"]) == set(OPTIMIZERS)
