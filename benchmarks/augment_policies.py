"""Per-batch cost of cnnlab's batched policies (cnnlab/data/policies.py) against kornia's, on one thread.

    python benchmarks/augment_policies.py        # kornia is optional: without it only cnnlab's column

The figures decided issue 12's choice (hand-written ops, no kornia dependency); docs/training.md has them.
"""
import sys
import time

import torch

from cnnlab.data import policies as P


def bench(fn, x, reps=30):
    for _ in range(3):
        fn(x)
    t = time.perf_counter()
    for _ in range(reps):
        fn(x)
    return (time.perf_counter() - t) / reps * 1000


def main() -> None:
    torch.set_num_threads(1)
    try:
        import kornia.augmentation as K
    except ImportError:
        K = None
        print("kornia not installed: cnnlab's ops only", file=sys.stderr)
    for shape in [(128, 3, 32, 32), (32, 1, 64, 64), (128, 1, 28, 28)]:
        x = torch.rand(*shape)
        c = shape[1]
        rows = [
            ("colour jitter 0.4", lambda x: P.color_jitter(x, 0.4),
             K and K.ColorJiggle(0.4, 0.4, 0.4 if c == 3 else 0.0, p=1.0)),
            ("random-resized crop", lambda x: P.random_resized_crop(x, 0.35),
             K and K.RandomResizedCrop(shape[2:], scale=(0.35, 1.0))),
            ("random erasing p=0.5", lambda x: P.random_erasing(x, 0.5), K and K.RandomErasing(p=0.5)),
            ("randaugment 2,9", lambda x: P.apply_policy(x, ("randaugment", 2, 9.0)), K and K.auto.RandAugment(n=2, m=9)),
            ("trivialaugment", lambda x: P.apply_policy(x, ("trivialaugment", 1, -1.0)), K and K.auto.TrivialAugment()),
        ]
        for name, ours, theirs in rows:
            try:
                ks = f"{bench(theirs, x):8.2f} ms" if theirs else "n/a"
            except Exception as e:  # kornia's RandAugment takes RGB only
                ks = f"not supported ({type(e).__name__})"
            print(f"{str(shape):18} {name:22} cnnlab {bench(ours, x):7.2f} ms  kornia {ks}")


if __name__ == "__main__":
    main()
