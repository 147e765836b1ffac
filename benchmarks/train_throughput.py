"""Training throughput: our ``train_epoch`` vs a bare PyTorch loop, same model, data and run.

Run by hand: ``.venv/bin/python benchmarks/train_throughput.py [--arch resnet-mini] [--threads 1]``.
Goal: ratio >= 0.9 on CPU (>= 0.85 on a GPU). The two loops alternate (A B A B ...) so
a loaded machine slows both alike; the median images/s of each is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from experiments.models import create_model
from experiments.training import (
    make_optimizer,
    normalise,
    pick_device,
    to_uint8_tensor,
    train_epoch,
)


def bare_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
               batch_size: int, gen: torch.Generator, device: str) -> None:
    """The textbook loop on pre-normalised float tensors (no augmentation, no bookkeeping)."""
    model.train()
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), batch_size):
        idx = perm[i:i + batch_size]
        xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="resnet-mini")
    ap.add_argument("--side", type=int, default=28)
    ap.add_argument("--n", type=int, default=2048, help="images per epoch")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5, help="epochs per loop (alternating)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = pick_device()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (a.n, a.side, a.side, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, a.n)
    x_u8, y = to_uint8_tensor(images, dev), torch.from_numpy(labels)
    x_f = normalise(x_u8, dev)  # the bare loop gets ready floats (device-resident on CUDA): its best case
    torch.manual_seed(0)
    ours_m, bare_m = create_model(a.arch, 10).to(dev.type), create_model(a.arch, 10).to(dev.type)
    if dev.cuda:
        ours_m = ours_m.to(memory_format=torch.channels_last)
    ours_opt = make_optimizer(ours_m, "adamw", 1e-3, 0.0)
    bare_opt = make_optimizer(bare_m, "adamw", 1e-3, 0.0)
    loss_fn = nn.CrossEntropyLoss()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    train_epoch(ours_m, x_u8, y, ours_opt, loss_fn, a.batch, g1, dev, False)  # warm-up
    bare_epoch(bare_m, x_f, y.to(x_f.device), bare_opt, a.batch, g2, dev.type)
    ours, bare, ours_aug = [], [], []
    for _ in range(a.reps):
        for name, fn in (("ours", lambda: train_epoch(ours_m, x_u8, y, ours_opt, loss_fn, a.batch, g1, dev, False)),
                         ("bare", lambda: bare_epoch(bare_m, x_f, y.to(x_f.device), bare_opt, a.batch, g2, dev.type)),
                         ("aug", lambda: train_epoch(ours_m, x_u8, y, ours_opt, loss_fn, a.batch, g1, dev, True))):
            if dev.cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if dev.cuda:
                torch.cuda.synchronize()
            rate = a.n / (time.perf_counter() - t0)
            {"ours": ours, "bare": bare, "aug": ours_aug}[name].append(rate)
    o, b, g = statistics.median(ours), statistics.median(bare), statistics.median(ours_aug)
    print(f"device={dev.type} arch={a.arch} side={a.side} batch={a.batch} threads={a.threads} "
          f"n={a.n} images x {a.reps} alternating epochs each (median images/s)")
    print(f"ours (train_epoch, uint8->float per batch): {o:9.1f} img/s")
    print(f"bare PyTorch loop (pre-normalised floats):  {b:9.1f} img/s")
    print(f"ratio ours/bare: {o / b:.3f}  (goal >= 0.9 on CPU)   "
          f"[ours with flip+shift augmentation: {g:.1f} img/s, {g / b:.3f} of bare]")
    print(f"per-epoch spread: ours {min(ours):.0f}-{max(ours):.0f}, bare {min(bare):.0f}-{max(bare):.0f} img/s")


if __name__ == "__main__":
    main()
