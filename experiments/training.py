"""The training loop: in-memory tensors, seeded batches, early stopping on validation AUC.

Data are small (a few thousand images), so they live as one uint8 tensor and batches
are sliced from it with a seeded permutation: no DataLoader worker start-up cost, and
the batch order depends only on the cell seed. On CUDA the uint8 tensor is pinned and
copied non-blocking; the step runs in bf16 autocast with channels_last.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

__all__ = ["Device", "pick_device", "set_determinism", "to_uint8_tensor", "normalise", "augment_batch",
           "train_epoch", "fit", "predict_proba", "roc_auc", "FitResult", "make_optimizer"]

EpochCallback = Callable[[int, int, float], None]  # (epoch, max_epochs, val_auc)


@dataclass(frozen=True)
class Device:
    type: str  # cpu | cuda

    @property
    def cuda(self) -> bool:
        return self.type == "cuda"


def pick_device() -> Device:
    return Device("cuda" if torch.cuda.is_available() else "cpu")


def set_determinism(seed: int) -> None:
    """Seed torch/numpy and ask for deterministic kernels (cheap on CPU; warn-only elsewhere)."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False


def to_uint8_tensor(images: np.ndarray, device: Device) -> torch.Tensor:
    """N x S x S x C uint8 -> N x C x S x S uint8 tensor (pinned when CUDA will consume it)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return t.pin_memory() if device.cuda else t


def normalise(xb: torch.Tensor, device: Device) -> torch.Tensor:
    """uint8 batch -> float on the device, centred at 0 with unit-ish scale."""
    xb = xb.to(device.type, non_blocking=True).float().mul_(1 / 63.75).sub_(2.0)
    if device.cuda:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb


def augment_batch(xb: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random horizontal flip per image, and one random shift (<= ``shift`` px) per batch."""
    flip = torch.rand(xb.shape[0], generator=gen) < 0.5
    if flip.any():
        xb = xb.clone()
        xb[flip] = xb[flip].flip(-1)
    if shift > 0:
        dy, dx = (torch.randint(-shift, shift + 1, (2,), generator=gen)).tolist()
        if dy or dx:
            xb = torch.roll(xb, shifts=(dy, dx), dims=(-2, -1))
    return xb


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=lr, weight_decay=weight_decay)


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                loss_fn: nn.Module, batch_size: int, gen: torch.Generator, device: Device,
                augment: bool) -> float:
    """One pass over (x, y) in a seeded order; returns mean training loss."""
    model.train()
    perm = torch.randperm(len(x), generator=gen)
    total, n = 0.0, 0
    for i in range(0, len(x), batch_size):
        idx = perm[i:i + batch_size]
        if len(idx) < 2 and len(x) > 1:  # BatchNorm needs 2+ samples
            continue
        xb = x[idx]
        if augment:
            xb = augment_batch(xb, gen)
        xb = normalise(xb, device)
        yb = y[idx].to(device.type, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.cuda):
            loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        n += len(idx)
    return total / max(n, 1)


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, device: Device, batch_size: int = 512) -> np.ndarray:
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.cuda):
            logits = model(normalise(x[i:i + batch_size], device))
        outs.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(outs).numpy().astype(np.float64)


def roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """ROC-AUC: binary on the positive class; multi-class one-vs-rest weighted by prevalence.

    Classes absent from ``y`` are dropped (probabilities renormalised over the rest),
    so a small validation set missing a class still gives a number; NaN if < 2 classes.
    """
    from sklearn.metrics import roc_auc_score

    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    p = proba[:, present]
    p = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
    if len(present) == 2:
        return float(roc_auc_score(y == present[1], p[:, 1]))
    return float(roc_auc_score(y, p, multi_class="ovr", average="weighted", labels=present))


@dataclass
class FitResult:
    best_val_auc: float
    best_epoch: int
    epochs_run: int
    wall_s: float
    train_images_seen: int
    history: list[dict] = field(default_factory=list)


def _class_weights(y: np.ndarray, n_classes: int, mode: str) -> torch.Tensor | None:
    if mode != "balanced":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def fit(model: nn.Module, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
        cfg, seed: int, device: Device | None = None,  # noqa: ANN001 (TrainConfig)
        on_epoch: EpochCallback | None = None) -> FitResult:
    """Train with ``cfg`` (a TrainConfig); keep the weights of the best validation-AUC epoch.

    With ``cfg.patience`` > 0 training stops after that many epochs without improvement;
    test data never enters this function.
    """
    device = device or pick_device()
    t0 = time.perf_counter()
    n_classes = int(model.head.out_features)
    if device.cuda:
        model = model.to(device.type, memory_format=torch.channels_last)
    xtr, ytr = to_uint8_tensor(train[0], device), torch.from_numpy(train[1].astype(np.int64))
    xva, yva = to_uint8_tensor(val[0], device), val[1].astype(np.int64)
    w = _class_weights(train[1], n_classes, cfg.class_weights)
    loss_fn = nn.CrossEntropyLoss(weight=None if w is None else w.to(device.type))
    opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best_auc, best_epoch, best_state, bad = -np.inf, 0, None, 0
    history: list[dict] = []
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        loss = train_epoch(model, xtr, ytr, opt, loss_fn, cfg.batch_size, gen, device, cfg.augment)
        vauc = roc_auc(yva, predict_proba(model, xva, device)) if len(yva) else float("nan")
        history.append({"epoch": epoch, "train_loss": loss, "val_auc": vauc})
        if on_epoch is not None:
            on_epoch(epoch, cfg.epochs, vauc)
        score = -np.inf if np.isnan(vauc) else vauc
        if best_state is None or score > best_auc:
            best_auc, best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if cfg.patience > 0 and bad >= cfg.patience:
                break
    if best_state is not None and cfg.patience > 0:
        model.load_state_dict(best_state)
    return FitResult(best_val_auc=float(best_auc) if np.isfinite(best_auc) else float("nan"),
                     best_epoch=best_epoch, epochs_run=epoch, wall_s=time.perf_counter() - t0,
                     train_images_seen=epoch * len(xtr), history=history)
