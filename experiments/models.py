"""Model factory (timm-style name -> builder registry) and safetensors checkpoints.

Every model exposes ``forward_features(x) -> (n, d)`` and an ``nn.Linear`` ``head``
so that fine-tuning (swap the head) and transferability estimators (embed, then
score) work the same for a 28 px CI network and a torchvision ResNet-50.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imagesets import UserError, atomic_path, atomic_write_text

__all__ = [
    "ModelError", "create_model", "list_models", "register_model", "save_checkpoint",
    "load_checkpoint", "replace_head", "count_params",
]


class ModelError(UserError):
    """Unknown architecture, unreadable checkpoint or unavailable pretrained weights."""


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: add a builder ``fn(num_classes, in_chans, pretrained) -> nn.Module``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, in_chans: int = 3, pretrained: bool = False,
                 **kwargs: Any) -> nn.Module:
    """Build a registered model with a fresh ``num_classes`` head."""
    if name not in _REGISTRY:
        raise ModelError(f"unknown model '{name}' (known: {', '.join(list_models())})")
    if num_classes < 1 or in_chans < 1:
        raise ModelError(f"model '{name}' needs num_classes >= 1 and in_chans >= 1")
    model = _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, pretrained=pretrained, **kwargs)
    model.arch = name  # type: ignore[attr-defined]
    return model


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A new randomly initialised head (fine-tuning keeps the backbone, never the source head)."""
    old = model.head
    model.head = nn.Linear(old.in_features, num_classes)
    return model


# -- narrow ResNets for 28-32 px ------------------------------------------------
class _Block(nn.Module):
    """torchvision-style BasicBlock, written out so widths can be tiny."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class SmallResNet(nn.Module):
    """ResNet for small images: 3x3 stem (no max-pool), stages at strides 1, 2, 2, GAP, dropout.

    ``stem_stride=2`` halves the grid first (28 -> 14 px): about 4x fewer FLOPs, which is what
    lets a full matrix run on two shared CPU cores.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 64),
                 blocks: tuple[int, ...] = (1, 1, 1), drop: float = 0.0, stem_stride: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                layers.append(_Block(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop)
        self.num_features = cin
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.layers(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x)))


@register_model("resnet-tiny")
def _resnet_tiny(num_classes: int, in_chans: int = 3, pretrained: bool = False, **kw: Any) -> nn.Module:
    _no_pretrained("resnet-tiny", pretrained)
    return SmallResNet(num_classes, in_chans, widths=(8, 16, 32), blocks=(1, 1, 1), stem_stride=2, **kw)


@register_model("resnet-mini")
def _resnet_mini(num_classes: int, in_chans: int = 3, pretrained: bool = False, **kw: Any) -> nn.Module:
    _no_pretrained("resnet-mini", pretrained)
    return SmallResNet(num_classes, in_chans, widths=(16, 32, 64), blocks=(1, 1, 1), stem_stride=2, **kw)


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ModelError(f"'{name}' has no published weights; pretrain it with build-matrix")


# -- torchvision ResNets ----------------------------------------------------------
class _TVWrapper(nn.Module):
    """A torchvision ResNet with the timm-style surface (forward_features, head)."""

    def __init__(self, net: nn.Module, drop: float = 0.0) -> None:
        super().__init__()
        self.head = net.fc
        net.fc = nn.Identity()
        self.body = net
        self.drop = nn.Dropout(drop)
        self.num_features = self.head.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x)))


def _torchvision(name: str, num_classes: int, in_chans: int, pretrained: bool, drop: float = 0.0) -> nn.Module:
    import torchvision

    builder = getattr(torchvision.models, name)
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        try:
            net = builder(weights=weights)
        except Exception as exc:  # offline, proxy, corrupt cache
            raise ModelError(f"cannot fetch ImageNet weights for {name} (offline?): {type(exc).__name__}") from exc
    else:
        net = builder(weights=None)
    if in_chans != 3:
        old = net.conv1
        net.conv1 = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        if pretrained:  # average the RGB filters into the new channel count
            with torch.no_grad():
                net.conv1.weight.copy_(old.weight.mean(1, keepdim=True).repeat(1, in_chans, 1, 1))
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return _TVWrapper(net, drop=drop)


@register_model("resnet18")
def _resnet18(num_classes: int, in_chans: int = 3, pretrained: bool = False, **kw: Any) -> nn.Module:
    return _torchvision("resnet18", num_classes, in_chans, pretrained, **kw)


@register_model("resnet50")
def _resnet50(num_classes: int, in_chans: int = 3, pretrained: bool = False, **kw: Any) -> nn.Module:
    return _torchvision("resnet50", num_classes, in_chans, pretrained, **kw)


# -- checkpoints -----------------------------------------------------------------------
def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict) -> Path:
    """Weights as safetensors plus a JSON sidecar; both written to a temp name then renamed.

    ``meta`` should carry arch, num_classes, in_chans, class_names, side, source, protocol hash;
    arch/num_classes/in_chans are filled from the model when absent.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    meta.setdefault("arch", getattr(model, "arch", type(model).__name__))
    meta.setdefault("num_classes", int(model.head.out_features))
    meta.setdefault("in_chans", _in_chans(model))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # unique temp names (imagesets.atomic_path), so concurrent saves never share one; the
    # sidecar first and the weights last: their presence means the checkpoint is complete
    atomic_write_text(_meta_path(path), json.dumps(meta, indent=2, default=str) + "\n")
    with atomic_path(path) as tmp:  # 0644: safetensors creates 0600, artifacts must be readable
        save_file(state, str(tmp), metadata={"arch": str(meta["arch"])})
    return path


def _in_chans(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model named in the sidecar JSON and load its weights (no pickle execution)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"no checkpoint at {path}")
    meta: dict = {}
    if _meta_path(path).exists():
        try:
            meta = json.loads(_meta_path(path).read_text())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"checkpoint sidecar {_meta_path(path)} is unreadable: "
                             f"{str(exc).splitlines()[0]}") from exc
        if not isinstance(meta, dict):
            raise ModelError(f"checkpoint sidecar {_meta_path(path)} must hold a JSON object")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device=map_location)
        elif path.suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location=map_location, weights_only=True)
            if isinstance(obj, dict) and "state_dict" in obj:
                meta = {**obj.get("meta", {}), **meta}
                obj = obj["state_dict"]
            state = obj
        else:
            raise ModelError(f"unsupported checkpoint type {path.suffix} (use .safetensors or .pt)")
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    for key in ("arch", "num_classes"):
        if key not in meta:
            raise ModelError(f"checkpoint {path} has no '{key}' in its JSON sidecar")
    try:
        n_classes, in_chans = int(meta["num_classes"]), int(meta.get("in_chans", 3))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"checkpoint {path}: num_classes / in_chans in its sidecar are not integers") from exc
    model = create_model(str(meta["arch"]), n_classes, in_chans)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {path} does not match arch {meta['arch']}: {exc}") from exc
    return model, meta
