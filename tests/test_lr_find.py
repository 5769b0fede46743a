"""cnnlab lr-find: the sweep with the real engine and its suggestion."""
import json

from cnnlab.config import TrainConfig
from cnnlab.lr_find import lr_find, suggest


def test_suggestion_on_digits_is_in_a_sane_range(tmp_path):
    cfg = TrainConfig.from_dict(dict(data="digits", model="fastnet", model_options={"widths": [8, 8, 16]},
                                     threads=1, precision="fp32"))
    result = lr_find(cfg, steps=60, out=tmp_path / "lr.png", log=lambda *a: None)
    assert 1e-4 <= result["suggested_lr"] <= 0.5, result["suggested_lr"]
    assert (tmp_path / "lr.png").stat().st_size > 1000
    assert json.loads((tmp_path / "lr.json").read_text())["suggested_lr"] == result["suggested_lr"]


def test_suggest_picks_the_steepest_descent_before_the_minimum():
    lrs = [10 ** (-6 + i * 0.1) for i in range(60)]
    losses = [2.0] * 20 + [2.0 - 0.1 * i for i in range(15)] + [0.5] * 10 + [0.5 + 0.3 * i for i in range(15)]
    assert lrs[20] <= suggest(lrs, losses) <= lrs[34]
