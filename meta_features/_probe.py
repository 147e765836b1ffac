"""The probe network whose embeddings feed the deep/label meta-features and the distances.

Why a project-trained probe: the default must work offline at 28 px grey, and it must never
have seen a dataset a KB evaluates on. It is a small CNN trained (seeded) as a classifier over
the 50 classes of five procedural reference sets (``meta_features._synthetic``: gratings,
shapes, textures, blob counts, scan-like scenes) and shipped as
``artifacts/probe/probe.safetensors`` + ``probe.json``. Training and loading need neither
../shared nor the network. ``probe="torchvision-resnet18"`` swaps in ImageNet
weights (downloaded lazily; a clear error when offline and not cached).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from meta_features._common import PROFILE_SIDE, MetaFeatureError, grey_of, resize_images

EMBED_DIM = 64
BATCH = 512
_MEAN, _STD = 0.45, 0.25  # rough grey statistics of the training union; fixed, not fitted


class ProbeError(MetaFeatureError):
    """The requested probe cannot be loaded."""


class ProbeNet(nn.Module):
    """Three conv blocks (16/32/64) -> global average pool -> 64-d embedding (-> linear head when training)."""

    def __init__(self, n_classes: int = 0, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(
            block(1, 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.embed = nn.Linear(64, embed_dim)
        self.head = nn.Linear(embed_dim, n_classes) if n_classes else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.forward_features(x)
        return self.head(F.relu(z)) if self.head is not None else z


def probe_dir() -> Path:
    from imagesets import artifacts_dir

    return artifacts_dir() / "probe"


def to_tensor(grey: np.ndarray) -> torch.Tensor:
    """N x s x s grey in [0, 255] -> normalised N x 1 x s x s float tensor."""
    x = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32))[:, None] / 255.0
    return (x - _MEAN) / _STD


def probe_digest() -> str:
    """Short hash of the shipped weights, part of every cache key (new probe -> new features)."""
    p = probe_dir() / "probe.safetensors"
    return hashlib.blake2b(p.read_bytes(), digest_size=8).hexdigest() if p.exists() else "none"


@lru_cache(maxsize=2)
def load_probe(probe: str = "default") -> nn.Module:
    """The probe in eval mode; ``default`` = the shipped CNN, or ``torchvision-resnet18``."""
    if probe == "default":
        from safetensors.torch import load_file

        path = probe_dir() / "probe.safetensors"
        if not path.exists():
            raise ProbeError(f"default probe missing: {path} (run python -m meta_features._probe_train)")
        net = ProbeNet(n_classes=0)
        try:  # a truncated or foreign file is one line, not a safetensors/torch traceback
            state = load_file(str(path))
            net.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, RuntimeError (shapes)
            raise ProbeError(f"default probe {path} is corrupt: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''} "
                             "(restore it or run python -m meta_features._probe_train)") from exc
        return net.eval()
    if probe == "torchvision-resnet18":
        return _load_resnet18().eval()
    raise ProbeError(f"unknown probe '{probe}' (use 'default' or 'torchvision-resnet18')")


def _load_resnet18() -> nn.Module:
    from torchvision.models import ResNet18_Weights, resnet18

    try:
        net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    except Exception as exc:  # offline, proxy, corrupt cache: one line for the user
        raise ProbeError(
            f"cannot load torchvision ImageNet ResNet-18 weights (offline?): {type(exc).__name__}: {exc}"
        ) from exc
    net.fc = nn.Identity()
    return net


def embed_grey(grey: np.ndarray, probe: str = "default") -> np.ndarray:
    """Embed N x s x s grey images (s = PROFILE_SIDE) in batches -> N x d float32."""
    net = load_probe(probe)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, len(grey), BATCH):
                x = to_tensor(grey[i : i + BATCH])
                if probe == "torchvision-resnet18":
                    x = F.interpolate(x * _STD + _MEAN, size=64, mode="bilinear", align_corners=False)
                    x = (x.repeat(1, 3, 1, 1) - 0.449) / 0.226
                    out.append(net(x).float().numpy())
                else:
                    out.append(net.forward_features(x).float().numpy())
    finally:
        torch.set_num_threads(threads)
    d = out[0].shape[1] if out else EMBED_DIM
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, d), np.float32)


def embed(imageset, probe: str = "default") -> np.ndarray:
    """Probe embeddings of every image of ``imageset`` (in its own order) -> n x d float32.

    Images are brought to PROFILE_SIDE px grey first, exactly as the meta-features see them.
    """
    grey = grey_of(resize_images(imageset.images, PROFILE_SIDE))
    return embed_grey(grey, probe=probe)


def probe_info() -> dict:
    """The shipped ``probe.json`` (architecture, training data, accuracy), or {} if absent."""
    p = probe_dir() / "probe.json"
    return json.loads(p.read_text()) if p.exists() else {}
