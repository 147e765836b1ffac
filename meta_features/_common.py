"""Shared constants, the error type, and the image helpers the canonical preparation uses.

Meta-features must not depend on file order, channel policy or the side a set was read
at, or two readings of the same data would look like two datasets. The helpers here (content
digests, an order-free subsample, resizing, a rounded grey copy) are what
:func:`meta_features._prepare.prepare` composes into the one view every extractor sees. This
module imports nothing else from meta_features, so the probe can use it too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from imagesets import ImageSet, UserError

PROFILE_SIDE: int = 28
"""Side (px) every dataset is brought to for meta-features, as MedMNIST does."""

PROFILE_MAX_IMAGES: int = 2000
"""Seeded subsample size for image-level and deep meta-features."""

# The probe is trained, and the meta-feature scaler fit, on these procedural sets only
# (meta_features._synthetic): no KB evaluates on them, so in leave-one-group-out no held-out
# target's images, labels or normalisation statistics shape the features that rank it — the
# same position an ImageNet probe is in for a medical target. (Until issue 17's session these were
# five natural shared sets, which KB local then took as targets: a leak for 5 of its 16.) A test
# checks this against every KB's targets and their twins.
REFERENCE_STEMS = ("synthetic_gratings", "synthetic_shapes", "synthetic_textures", "synthetic_counts",
                   "synthetic_scans")

FEATURES_VERSION = "2"
"""Bump when an extractor changes, so disk caches of older values are not reused."""


class MetaFeatureError(UserError):
    """A dataset or option the meta-feature code cannot work with (one-line message)."""


def cache_dir() -> Path:
    """``$CATSCANS_CACHE`` or ``~/.cache/catscans``; created on demand."""
    root = Path(os.environ.get("CATSCANS_CACHE") or Path.home() / ".cache" / "catscans")
    return root


def image_digests(imageset: ImageSet) -> list[str]:
    """Per-image content digests (with the label), used to fix an order-free canonical order.

    An RGB image whose three channels are equal is hashed as its single grey channel, so a
    grey set and its replicated 3-channel copy get the same order (and the same features).
    """
    images, labels = imageset.images, imageset.labels
    if images.shape[-1] == 3:
        grey_like = ((images[..., 0] == images[..., 1]) & (images[..., 1] == images[..., 2])).all(axis=(1, 2))
    else:
        grey_like = np.ones(len(images), dtype=bool)
    out = []
    for i, img in enumerate(images):
        data = np.ascontiguousarray(img[..., 0]) if grey_like[i] else img
        out.append(hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()
                   + ("" if labels is None else f":{int(labels[i])}"))
    return out


def canonical_subsample(imageset: ImageSet, max_images: int, random_state: int) -> np.ndarray:
    """Indices of a seeded subsample, chosen in content order so file order cannot matter."""
    order = np.argsort(np.asarray(image_digests(imageset)), kind="stable")
    if len(order) <= max_images:
        return order
    rng = np.random.default_rng(random_state)
    pick = np.sort(rng.choice(len(order), size=max_images, replace=False))
    return order[pick]


def resize_images(images: np.ndarray, side: int) -> np.ndarray:
    """N x s x s x C uint8 -> N x side x side x C uint8 with PIL LANCZOS (as MedMNIST/SOURCES.md)."""
    if images.shape[1] == side and images.shape[2] == side:
        return images
    out = np.empty((len(images), side, side, images.shape[-1]), dtype=np.uint8)
    for i, img in enumerate(images):
        if img.shape[-1] == 1:
            pil = Image.fromarray(img[..., 0], mode="L")
            out[i, ..., 0] = np.asarray(pil.resize((side, side), Image.LANCZOS))
        else:
            pil = Image.fromarray(img, mode="RGB")
            out[i] = np.asarray(pil.resize((side, side), Image.LANCZOS))
    return out


def grey_of(images: np.ndarray) -> np.ndarray:
    """Rounded luminance as float32 in [0, 255]; exactly equal for grey and replicated grey."""
    x = images.astype(np.float32)
    if x.shape[-1] == 1:  # contiguous, so reductions sum in the same order as for RGB
        return np.ascontiguousarray(x[..., 0])
    g = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    return np.clip(np.rint(g), 0, 255).astype(np.float32)
