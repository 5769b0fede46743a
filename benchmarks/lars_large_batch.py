"""Large-batch training: plain momentum SGD vs LARS at the same batch size and epochs.

You, Gitman & Ginsburg (2017) train with batch sizes up to 32k by giving every layer its own
rate from the trust ratio ||w|| / (||g|| + beta ||w||) (cnnlab.optim.LARS), with a polynomial
(power 2) decay and a warm-up. This script trains the same model twice, from the same
initialization and data order, once with ``sgd`` and once with ``lars`` (both through
``cnnlab.create_optimizer`` and the ``poly`` schedule with warm-up), and reports test accuracy.

    python benchmarks/lars_large_batch.py --data-dir ~/data/mnist            # MNIST, batch 8192
    python benchmarks/lars_large_batch.py --data digits --model fastnet --batch-size 512 --epochs 30

The last line of output is one JSON object with both results. The loop is deliberately
independent of the trainer (no augmentation, no EMA): the only difference between the two runs
is the optimizer.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

import cnnlab
from cnnlab.optim import create_optimizer, create_scheduler


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="mnist", help="dataset name (mnist needs the four IDX files in --data-dir)")
    ap.add_argument("--data-dir", default=None, help="folder with the dataset files")
    ap.add_argument("--download", action="store_true", help="allow the dataset loader to download")
    ap.add_argument("--model", default="lenet5", help="model from cnnlab.create_model (lenet5, fastnet, ...)")
    ap.add_argument("--image-size", type=int, default=None, help="resize images to this side (e.g. 16 for digits)")
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--epochs", type=float, default=10)
    ap.add_argument("--sgd-lr", type=float, default=0.8, help="SGD peak rate (linear scaling from 0.025 @ 256)")
    ap.add_argument("--lars-lr", type=float, default=8.0, help="LARS global rate gamma (peak of the schedule)")
    ap.add_argument("--trust-coef", type=float, default=0.001, help="LARS eta")
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--warmup-epochs", type=float, default=2.0)
    ap.add_argument("--warmup-power", type=float, default=2.0, help="polynomial warm-up exponent (1 = linear)")
    ap.add_argument("--power", type=float, default=2.0, help="polynomial decay exponent")
    ap.add_argument("--train-subset", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("sgd", "lars"), default=None, help="run just one of the two")
    return ap.parse_args(argv)


def prepare(images: torch.Tensor, mean, std, size: int | None, device) -> torch.Tensor:
    x = images.to(device=device, dtype=torch.float32).div_(255)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return (x - m) / s


@torch.no_grad()
def accuracy(model, x, y, batch: int = 4096) -> float:
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def train_once(opt_name: str, args, data, device) -> dict:
    xtr, ytr, xte, yte, num_classes = data
    torch.manual_seed(args.seed)
    model = cnnlab.create_model(args.model, num_classes, xtr.shape[1], image_size=xtr.shape[-1]).to(device)
    n = len(xtr)
    batch = min(args.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total = max(1, round(args.epochs * steps_per_epoch))
    if opt_name == "lars":
        opt = create_optimizer("lars", model, args.lars_lr, args.weight_decay, momentum=args.momentum,
                               trust_coef=args.trust_coef)
        lr = args.lars_lr
    else:
        opt = create_optimizer("sgd", model, args.sgd_lr, args.weight_decay, momentum=args.momentum)
        lr = args.sgd_lr
    sched = create_scheduler("poly", opt, total, steps_per_epoch, warmup_steps=round(args.warmup_epochs * steps_per_epoch),
                             power=args.power, warmup_power=args.warmup_power)
    gen = torch.Generator().manual_seed(args.seed)  # same data order for both optimizers
    t0 = time.perf_counter()
    step, last_loss = 0, float("nan")
    while step < total:
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, batch):
            if step >= total:
                break
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            last_loss = loss.item() if step % steps_per_epoch == 0 or step == total else last_loss
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"test_acc": accuracy(model, xte, yte), "train_acc": accuracy(model, xtr, ytr),
            "final_train_loss": last_loss, "lr": lr, "steps": total, "seconds": round(seconds, 2)}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) or args.device == "cuda"
                          else "cpu")
    try:
        ds = cnnlab.load_dataset(args.data, data_dir=args.data_dir, download=args.download)
    except cnnlab.CnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tr_x, tr_y = ds.train_images, ds.train_labels
    if args.train_subset:
        tr_x, tr_y = tr_x[:args.train_subset], tr_y[:args.train_subset]
    xtr = prepare(tr_x, ds.mean, ds.std, args.image_size, device)
    xte = prepare(ds.test_images, ds.mean, ds.std, args.image_size, device)
    data = (xtr, tr_y.to(device), xte, ds.test_labels.to(device), ds.num_classes)
    batch = min(args.batch_size, len(xtr))
    print(f"{args.data}: {len(xtr)} train / {len(xte)} test, {tuple(xtr.shape[1:])}; model {args.model}; "
          f"batch {batch}, {args.epochs:g} epochs, poly(power {args.power:g}) with {args.warmup_epochs:g} warm-up "
          f"epochs; device {device}")
    results = {}
    for name in ("sgd", "lars"):
        if args.only and name != args.only:
            continue
        r = train_once(name, args, data, device)
        results[name] = r
        print(f"{name:>4}: lr {r['lr']:g}  test acc {100 * r['test_acc']:.2f}%  train acc {100 * r['train_acc']:.2f}%"
              f"  final loss {r['final_train_loss']:.4f}  ({r['steps']} steps, {r['seconds']:.1f} s)")
    print(json.dumps({"benchmark": "lars_large_batch", "data": args.data, "model": args.model, "batch_size": batch,
                      "epochs": args.epochs, "trust_coef": args.trust_coef, "device": str(device), **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
