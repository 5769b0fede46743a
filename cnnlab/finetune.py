"""Fine-tuning: start from saved weights (``--init-from``), freeze layers (``--freeze``), scale the
learning rate per parameter group (``--lr-mult``).

Weights are read without unpickling code: ``.safetensors`` files, or ``.pt``/``.pth`` state dicts
through ``torch.load(weights_only=True)``. A run folder gives its best weights (chosen on its
validation split), else its final ones.

Names are matched first; where they differ but the layouts agree -- the same tensors with the same
shapes in the same order, as a state dict saved from torchvision's ResNet, VGG or MobileNet has
against cnnlab's model of the same depth -- tensors are matched by position. The classifier head
(the model's last layer with parameters) is the one place shapes may differ: when the class count
differs it keeps its fresh initialisation, and the start line says so. Any other disagreement is
an error that names the first tensor that does not fit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import CnnlabError, first_line

SKIPPED = ("num_batches_tracked",)  # counters, not weights: torchvision and cnnlab may keep them or not


def read_state(source: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict at ``source`` (run folder, .safetensors, .pt/.pth) and how to name it in messages."""
    from . import runs
    from .checkpoint import load_weights

    path = Path(source).expanduser()
    if path.is_dir():
        runs.check_run_dir(path)
        for name in (runs.BEST_WEIGHTS, runs.WEIGHTS):
            if (path / name).is_file():
                return load_weights(path / name), f"{path}/{name}"
        if (path / runs.CHECKPOINT).is_file():
            return _unwrap(_torch_load(path / runs.CHECKPOINT)), f"{path}/{runs.CHECKPOINT}"
        raise CnnlabError(f"--init-from {path}: the run has no weights yet")
    if not path.is_file():
        raise CnnlabError(f"--init-from {path}: no such run folder or weights file")
    if path.suffix == ".safetensors":
        return load_weights(path), str(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return _unwrap(_torch_load(path)), str(path)
    raise CnnlabError(f"--init-from {path}: expected a run folder, a .safetensors file or a .pt/.pth state dict")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, or not a torch file at all
        raise CnnlabError(f"--init-from {path}: not a weights-only state dict ({type(e).__name__}: "
                          f"{first_line(e)})") from None


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """A state dict from a bare state dict, a cnnlab checkpoint (``model``/``ema``) or ``{"state_dict": ...}``."""
    if isinstance(obj, dict) and isinstance(obj.get("ema"), dict) and obj["ema"]:
        return {k[len("module."):]: v for k, v in obj["ema"].items() if k.startswith("module.")}
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CnnlabError("--init-from: the file holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # saved from DDP: "module." prefixes


def head_prefix(model: torch.nn.Module) -> str:
    """The name of the model's last module with parameters of its own: its classifier head."""
    last = ""
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    return last


def match_state(model: torch.nn.Module, loaded: dict[str, torch.Tensor], source: str
                ) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """``(tensors to load, head keys left at their initialisation, how they were matched)``."""
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(SKIPPED)}
    theirs = {k: v for k, v in loaded.items() if not k.endswith(SKIPPED)}
    head = head_prefix(model)
    in_head = (lambda k: k.startswith(head + ".")) if head else (lambda k: False)
    if sum(k in theirs for k in own) >= len(own) / 2:
        how, pairs = "by name", [(k, theirs.get(k)) for k in own]
    elif len(own) == len(theirs):  # another layout's names: the same tensors in the same order?
        how, pairs = "by position (same layout, other names)", list(zip(own, theirs.values()))
    else:
        raise CnnlabError(f"--init-from {source}: {len(theirs)} tensors, none named as in this model's {len(own)} "
                          f"and not the same layout; the model and the weights differ")
    take, reinit = {}, []
    for key, value in pairs:
        if value is not None and tuple(value.shape) == tuple(own[key].shape):
            take[key] = value
        elif in_head(key):  # another class count: the head starts fresh
            reinit.append(key)
        else:
            got = "missing" if value is None else f"shape {tuple(value.shape)}"
            raise CnnlabError(f"--init-from {source}: {key} of shape {tuple(own[key].shape)} is {got} in the "
                              f"weights; the model and the weights differ")
    return take, reinit, how


def init_from(model: torch.nn.Module, source: str) -> str:
    """Load ``source``'s weights into ``model`` (see the module doc); returns the line for the start of the run."""
    loaded, name = read_state(source)
    take, reinit, how = match_state(model, loaded, name)
    model.load_state_dict(take, strict=False)
    head = (f"; classifier head {head_prefix(model)!r} re-initialised ({', '.join(reinit)}: other class count)"
            if reinit else "")
    return f"init from {name}: {len(take)} tensors matched {how}{head}"


def freeze(model: torch.nn.Module, spec: str | None) -> str:
    """``--freeze``: layer-name prefixes, or ``stages:N`` (the first N top-level blocks with parameters).
    Frozen parameters get no gradient (batch-norm statistics in them still update in training mode)."""
    if not spec:
        return ""
    if spec.startswith("stages:"):
        n = spec.partition(":")[2]
        if not n.isdigit():
            raise CnnlabError(f"--freeze {spec}: expected stages:N with N a whole number")
        children = [name for name, m in model.named_children() if any(True for _ in m.parameters())]
        prefixes = children[:int(n)]
    else:
        prefixes = [p.strip() for p in spec.split(",") if p.strip()]
    names = [n for n, _ in model.named_parameters()]
    count = 0
    for p in prefixes:
        hit = [n for n in names if n == p or n.startswith(p + ".")]
        if not hit:
            from .errors import suggest

            tops = sorted({n.split(".")[0] for n in names})
            hint = suggest(p, tops)
            raise CnnlabError(f"--freeze {p}: no parameter of the model is named so{f' ({hint})' if hint else ''}; "
                              f"top-level names: {', '.join(tops)}")
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(False)
            count += param.numel()
    return f"frozen {', '.join(prefixes)}: {count:,} parameters"


def apply_lr_mult(optimizer: torch.optim.Optimizer, model: torch.nn.Module, mult: dict[str, Any]) -> None:
    """Split every parameter group by ``--lr-mult PREFIX=MULT`` (the longest matching prefix wins) and scale
    each part's rate; done before the schedule is built, so it scales the scheduled rate throughout."""
    if not mult:
        return
    names = {id(p): n for n, p in model.named_parameters()}
    prefixes = sorted(((str(k), float(v)) for k, v in mult.items()), key=lambda kv: -len(kv[0]))
    tops = ", ".join(sorted({n.split(".")[0] for n in names.values()}))
    for k, v in prefixes:
        if v < 0 or not any(n == k or n.startswith(k + ".") for n in names.values()):
            raise CnnlabError(f"--lr-mult {k}={v}: " + ("the multiplier must be >= 0" if v < 0 else
                                                        f"no parameter is named so (top-level: {tops})"))

    def factor(p: torch.Tensor) -> float:
        n = names.get(id(p), "")
        return next((v for k, v in prefixes if n == k or n.startswith(k + ".")), 1.0)

    groups = []
    for g in optimizer.param_groups:
        by: dict[float, list] = {}
        for p in g["params"]:
            by.setdefault(factor(p), []).append(p)
        for f, params in by.items():
            groups.append({**g, "params": params, "lr": g["lr"] * f, "lr_mult": f})
    optimizer.param_groups = groups


def prepare(cfg: Any, model: torch.nn.Module, resuming: bool) -> str:
    """``--init-from`` (a fresh run only: a resumed one restores its own weights) and ``--freeze``; the text
    for the start line ("" when neither is set)."""
    said = []
    if cfg.init_from and not resuming:
        said.append(init_from(model, cfg.init_from))
    if cfg.freeze:
        said.append(freeze(model, cfg.freeze))
    if cfg.lr_mult:
        said.append("lr multipliers " + ", ".join(f"{k} x{v:g}" for k, v in cfg.lr_mult.items()))
    return "; ".join(said)
