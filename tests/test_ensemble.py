"""`cnnlab eval RUN1 RUN2 ...`: the members' probabilities averaged (optimizer paper Table 2), checked members."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from cnnlab.ensemble import evaluate_ensemble
from cnnlab.errors import CnnlabError
from cnnlab.inference import load_run
from cnnlab.predict import predict_probs
from cnnlab.train import train


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    from cnnlab.config import TrainConfig

    out = tmp_path_factory.mktemp("runs")
    dirs = []
    for seed in (0, 1):
        cfg = TrainConfig.from_dict(dict(data="synthetic", model="fastnet", model_options={"widths": [8, 8, 16]},
                                         epochs=1, train_subset=128, batch_size=64, lr=0.05, out=str(out),
                                         name=f"m{seed}", seed=seed,
                                         progress=False, threads=1, precision="fp32"))
        dirs.append(Path(train(cfg)["run_dir"]))
    return dirs


def test_ensemble_is_the_mean_of_the_members_probabilities(members):
    m = evaluate_ensemble(members, device="cpu", quiet=True)
    assert m["ensemble"] == 2 and len(m["members"]) == 2
    from cnnlab.data.prepare import prepare_data

    probs = []
    for d in members:
        run = load_run(d, device="cpu")
        ds = prepare_data(run.config.replace(train_subset=None, test_subset=None))
        probs.append(predict_probs(run.model, ds.test_images, run.meta["mean"], run.meta["std"], run.runtime))
    mean = (probs[0] + probs[1]) / 2
    assert m["acc"] == pytest.approx((mean.argmax(1) == ds.test_labels).float().mean().item())
    assert m["nll"] == pytest.approx(-mean.gather(1, ds.test_labels[:, None]).log().mean().item(), rel=1e-4)
    assert [x["acc"] for x in m["members"]] == [pytest.approx((p.argmax(1) == ds.test_labels).float().mean().item())
                                                  for p in probs]


def test_ensemble_writes_only_with_output_into_every_member(members):
    for d in members:
        assert not (d / "evals" / "ens.json").exists()
    evaluate_ensemble(members, device="cpu", quiet=True, output="ens")
    for d in members:
        assert json.loads((d / "evals" / "ens.json").read_text())["ensemble"] == 2
    with pytest.raises(CnnlabError, match="exists"):
        evaluate_ensemble(members, device="cpu", quiet=True, output="ens")


def test_members_must_share_classes_and_runs_must_differ(members, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(members[1], other)
    meta = json.loads((other / "meta.json").read_text())
    meta["classes"] = [f"x{c}" for c in meta["classes"]]
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CnnlabError, match="classes .* differ"):
        evaluate_ensemble([members[0], other], device="cpu", quiet=True)
    with pytest.raises(CnnlabError, match="same run folder twice"):
        evaluate_ensemble([members[0], members[0]], device="cpu", quiet=True)
    with pytest.raises(CnnlabError, match="at least two"):
        evaluate_ensemble([members[0]], device="cpu", quiet=True)


def test_cli_eval_with_several_runs(members, capsys):
    from cnnlab.cli import main

    assert main(["eval", *map(str, members), "--json", "--device", "cpu"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["ensemble"] == 2 and "member_mean_acc" in m
    assert torch.tensor(m["confusion"]).sum().item() > 0
