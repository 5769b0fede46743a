"""What a checkpoint holds is listed once: TrainingParts + Progress round-trip through save/restore."""
import pytest
import torch

from cnnlab.checkpoint import load_checkpoint, restore_training, save_training
from cnnlab.optim import create_optimizer, create_scheduler
from cnnlab.state import CHECKPOINT_FORMAT, Progress, TrainingParts


def _parts(seed: int, ema: bool = True) -> TrainingParts:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    opt = create_optimizer("adam", model, 0.01)
    sched = create_scheduler("cosine", opt, 20, 5)
    avg = None
    if ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    return TrainingParts(model, opt, sched, None, avg)


def _steps(parts: TrainingParts, n: int) -> None:
    for _ in range(n):
        x = torch.randn(8, 3)
        loss = parts.model(x).pow(2).mean()
        parts.optimizer.zero_grad()
        loss.backward()
        parts.optimizer.step()
        parts.scheduler.step()
        parts.ema.update_parameters(parts.model)


def test_restore_continues_exactly(tmp_path):
    a = _parts(0)
    _steps(a, 3)
    progress = Progress(epoch=1, step=3, train_seconds=1.5, images_seen=24, best_value=0.5, best_epoch=1, bad_evals=0)
    save_training(tmp_path / "ckpt.pt", a, progress, {"lr": 0.01})
    _steps(a, 4)  # the uninterrupted run goes on

    b, restored = _parts(1), Progress()  # a fresh process: other initial weights, empty counters
    restore_training(tmp_path / "ckpt.pt", b, restored)
    assert restored == progress
    _steps(b, 4)
    for pa, pb in zip(a.state_dict()["model"].values(), b.state_dict()["model"].values()):
        assert torch.equal(pa, pb)
    assert torch.equal(a.eval_model[0].weight, b.eval_model[0].weight)  # the EMA weights too
    assert a.scheduler.last_epoch == b.scheduler.last_epoch


def test_checkpoint_lists_every_part_once(tmp_path):
    parts = _parts(0, ema=False)
    save_training(tmp_path / "c.pt", parts, Progress(), {})
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT
    assert set(ckpt) == set(parts.state_dict()) | {"format", "state", "rng", "config"}
    assert ckpt["ema"] is None and ckpt["scaler"] is None
    assert set(ckpt["state"]) == set(Progress().state_dict())


def test_eval_model_is_the_ema_average_when_kept():
    parts = _parts(0)
    assert parts.eval_model is parts.ema.module
    plain = _parts(0, ema=False)
    assert plain.eval_model is plain.model and plain.forward is plain.model


def test_progress_rejects_a_checkpoint_missing_a_counter():
    with pytest.raises(KeyError):
        Progress().load_state_dict({"epoch": 1})
