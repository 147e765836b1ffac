"""Batched forward passes of a source checkpoint over target images: features and source probs.

Every transferability estimator needs the same two arrays per (source, target) pair —
penultimate features (n x d) and the source head's softmax (n x Z) — so they are computed
once here, without gradients and with at most 2 torch threads (the machine is shared).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imagesets import ImageSet, UserError

MAX_THREADS = 2


class CheckpointFeatureError(UserError):
    """A checkpoint or image set that cannot be embedded (e.g. no labels, wrong shape)."""


@dataclass
class SourceOutputs:
    """What one source checkpoint produced on one target sample."""

    features: np.ndarray  # n x d float32, penultimate layer
    probs: np.ndarray  # n x Z float64, softmax of the source head
    labels: np.ndarray  # n target labels


def load_source(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """``experiments.load_checkpoint`` in eval mode (BatchNorm/Dropout frozen for embedding)."""
    from experiments.models import load_checkpoint

    model, meta = load_checkpoint(Path(path))
    model.eval()
    return model, meta


def channel_policy(meta: dict) -> str:
    """The ``read_imageset`` channel policy matching a checkpoint's input channels."""
    return "grey" if int(meta.get("in_chans", 3)) == 1 else "rgb"


def conform_images(images: np.ndarray, side: int, in_chans: int) -> np.ndarray:
    """uint8 N x S x S x C -> uint8 N x side x side x in_chans (bilinear, antialiased;
    grey replicated to RGB, RGB to ITU-R 601 luminance) so any target fits any checkpoint."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise CheckpointFeatureError(f"images must be uint8 N x H x W x C, got {images.dtype} {images.shape}")
    x = images
    c = x.shape[-1]
    if c != in_chans:
        if in_chans == 3 and c == 1:
            x = np.repeat(x, 3, axis=-1)
        elif in_chans == 1 and c == 3:
            grey = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
            x = np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None]
        else:
            raise CheckpointFeatureError(f"cannot map {c} image channels to a {in_chans}-channel model")
    if x.shape[1] != side or x.shape[2] != side:
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        x = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return x


INPUT_SCALE, INPUT_SHIFT = 1 / 63.75, 2.0
"""The training input transform x * scale - shift ([0, 255] -> [-2, 2]) of
``experiments.training.normalise``; copied, not imported (meta_features may import only the
model factory from experiments); a test checks the two agree."""


def normalise(batch: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
    """uint8 NHWC -> float NCHW as the checkpoint saw it in training (meta ``mean``/``std``
    on [0, 1] pixels override the default transform when a checkpoint records them)."""
    meta = meta or {}
    x = batch.permute(0, 3, 1, 2).float()
    mean, std = meta.get("mean"), meta.get("std")
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=x.dtype).reshape(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype).reshape(1, -1, 1, 1)
        return (x / 255.0 - m) / s
    return x.mul_(INPUT_SCALE).sub_(INPUT_SHIFT)


def extract(
    model: nn.Module, images: np.ndarray, meta: dict | None = None, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Features (n x d float32) and source-head probabilities (n x Z float64) for uint8 images
    already at the model's side and channels."""
    meta = meta or {}
    prev = torch.get_num_threads()
    torch.set_num_threads(min(prev, MAX_THREADS))
    feats, probs = [], []
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                x = normalise(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])), meta)
                f = model.forward_features(x)
                feats.append(f.float().numpy())
                probs.append(torch.softmax(model.head(f).double(), dim=1).numpy())
    finally:
        torch.set_num_threads(prev)
    d = getattr(model.head, "in_features", 0)
    z = getattr(model.head, "out_features", 0)
    f_all = np.concatenate(feats) if feats else np.zeros((0, d), np.float32)
    p_all = np.concatenate(probs) if probs else np.zeros((0, z))
    return f_all, p_all


def sample_rows(labels: np.ndarray, max_n: int, random_state: int = 0) -> np.ndarray:
    """Seeded, stratified (proportional, every class kept) row subsample of at most ``max_n``."""
    n = len(labels)
    if n <= max_n:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    classes, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = np.maximum(1, np.floor(counts * max_n / n)).astype(int)
    while quota.sum() > max_n:  # more classes than room: trim the largest quotas
        quota[np.argmax(quota)] -= 1
    picked = [rng.choice(np.flatnonzero(inv == c), size=q, replace=False) for c, q in enumerate(quota)]
    return np.sort(np.concatenate(picked))


def source_outputs(
    model: nn.Module,
    meta: dict,
    imageset: ImageSet,
    *,
    max_images: int = 1000,
    random_state: int = 0,
    batch_size: int = 256,
) -> SourceOutputs:
    """Embed a labelled ImageSet (seeded subsample ≤ ``max_images``) with one source checkpoint."""
    if imageset.labels is None:
        raise CheckpointFeatureError(f"target '{imageset.name}' has no labels: transferability needs them")
    rows = sample_rows(imageset.labels, max_images, random_state)
    side = int(meta.get("side", imageset.side))
    in_chans = int(meta.get("in_chans", imageset.channels))
    images = conform_images(imageset.images[rows], side, in_chans)
    feats, probs = extract(model, images, meta, batch_size=batch_size)
    return SourceOutputs(features=feats, probs=probs, labels=np.asarray(imageset.labels)[rows])
