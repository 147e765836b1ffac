"""Task2Vec's probe: which network, what input it takes, which of its layers the Fisher covers.

Split out of :mod:`meta_features.task2vec` (the embedding and its Fisher live there, the
distances in :mod:`meta_features._task2vec_distance`). Probes: None/"default" = the shipped
ProbeNet (28 px grey), an ``experiments.models`` name, a checkpoint path, or any ``nn.Module``
with ``forward_features`` and an ``nn.Linear`` ``head``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from meta_features._common import PROFILE_SIDE, MetaFeatureError, grey_of, resize_images


class Task2VecError(MetaFeatureError):
    """A set or option Task2Vec cannot work with (one-line message)."""


# -- the probe and its input ---------------------------------------------------------------
@dataclass
class _Probe:
    model: nn.Module
    name: str
    relu_features: bool  # ProbeNet applies ReLU between its embedding and its head
    kind: str  # "probenet" | "model"
    side: int
    in_chans: int
    meta: dict


def _first_conv_in(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def _resolve_probe(probe, n_classes: int, seed: int, side: int | None, pretrained: bool) -> _Probe:
    from meta_features._probe import ProbeNet, load_probe

    if probe is None or (isinstance(probe, str) and probe == "default"):
        return _Probe(load_probe("default"), "default", True, "probenet", PROFILE_SIDE, 1, {})
    if isinstance(probe, nn.Module):
        if isinstance(probe, ProbeNet):
            return _Probe(probe, "ProbeNet", True, "probenet", PROFILE_SIDE, 1, {})
        _check_surface(probe, type(probe).__name__)
        name = str(getattr(probe, "arch", type(probe).__name__))
        return _Probe(probe, name, False, "model", int(side or PROFILE_SIDE), _first_conv_in(probe), {})
    if isinstance(probe, (str, Path)):
        p = Path(probe)
        if p.suffix in (".safetensors", ".pt", ".pth") and p.exists():
            from meta_features._checkpoint_features import load_source

            model, meta = load_source(p)
            _check_surface(model, str(p))
            return _Probe(model, f"{meta.get('arch', 'checkpoint')}:{p.name}", False, "model",
                          int(side or meta.get("side") or PROFILE_SIDE),
                          int(meta.get("in_chans", _first_conv_in(model))), meta)
        from experiments.models import create_model, list_models

        if str(probe) not in list_models():
            raise Task2VecError(f"unknown Task2Vec probe '{probe}' (use 'default', a checkpoint path or "
                                f"one of: {', '.join(list_models())})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(str(probe), max(n_classes, 1), in_chans=3, pretrained=pretrained)
        return _Probe(model, str(probe) + (":pretrained" if pretrained else f":init{seed}"), False,
                      "model", int(side or PROFILE_SIDE), 3, {})
    raise Task2VecError(f"probe must be None, a name, a checkpoint path or an nn.Module, got {type(probe).__name__}")


def _check_surface(model: nn.Module, what: str) -> None:
    if not hasattr(model, "forward_features") or not isinstance(getattr(model, "head", None), nn.Linear):
        raise Task2VecError(f"probe {what} needs forward_features(x) and an nn.Linear head")


def _inputs(images: np.ndarray, pr: _Probe) -> torch.Tensor:
    """uint8 N x H x W x C -> the float NCHW tensor the probe was trained on."""
    if pr.kind == "probenet":
        from meta_features._probe import to_tensor

        return to_tensor(grey_of(resize_images(images, PROFILE_SIDE)))
    from meta_features._checkpoint_features import conform_images, normalise

    x = conform_images(images, pr.side, pr.in_chans)
    return normalise(torch.from_numpy(np.ascontiguousarray(x)), pr.meta).contiguous()


class _Net(nn.Module):
    """body.forward_features -> (ReLU) -> head; holds the probe by reference, never mutates it."""

    def __init__(self, body: nn.Module, head: nn.Linear, relu: bool) -> None:
        super().__init__()
        self.body, self.head, self.relu = body, head, relu

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body.forward_features(x)
        return F.relu(z) if self.relu else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _layer_params(body: nn.Module, layers: str | Sequence[str]) -> list[tuple[str, str, int]]:
    """(module name, parameter name in _Net, n filters) for the chosen weighted layers."""
    head = getattr(body, "head", None)
    skip = set()
    if isinstance(head, nn.Module):
        skip = {id(m) for m in head.modules()}
    found = []
    for name, m in body.named_modules():
        if id(m) in skip:
            continue
        w = getattr(m, "weight", None)
        if isinstance(w, nn.Parameter) and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
                                                          nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm,
                                                          nn.LayerNorm)):
            found.append((name, f"body.{name}.weight" if name else "body.weight", int(w.shape[0])))
    if isinstance(layers, str):
        if layers != "all":
            raise Task2VecError(f"layers must be 'all' or a list of module names, got {layers!r}")
        if not found:
            raise Task2VecError("the probe has no weighted layer outside its head")
        return found
    want = list(layers)
    known = {t[0] for t in found}
    bad = [n for n in want if n not in known]
    if bad or not want:
        raise Task2VecError(f"unknown probe layer(s) {bad or want} (weighted layers: {', '.join(n for n, *_ in found)})")
    return [t for t in found if t[0] in set(want)]
