"""Shared constants and the one canonical preparation every meta-feature starts from.

Meta-features must not depend on file order, channel policy or the side a set was read
at, or two readings of the same data would look like two datasets. So every extractor
sees the same thing: images sorted by content digest, a seeded subsample of at most
``PROFILE_MAX_IMAGES``, brought to ``PROFILE_SIDE`` px, plus a rounded grey copy that is
bit-identical for a grey set and its 3-channel replica.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from imagesets import ImageSet, UserError

PROFILE_SIDE: int = 28
"""Side (px) every dataset is brought to for meta-features, as MedMNIST does."""

PROFILE_MAX_IMAGES: int = 2000
"""Seeded subsample size for image-level and deep meta-features."""

# The probe is trained, and the meta-feature scaler fit, on these natural-image sets only:
# none is a target in any shipped KB (or a twin of one), so in leave-one-target-out no held-out
# target's images, labels or normalisation statistics shape the features that rank it — the
# same position an ImageNet probe is in. A test checks this against every KB's targets.
REFERENCE_STEMS = ("cifar10_subset", "dtd_10class", "fashion_mnist_subset", "kmnist_test10k", "mnist_test10k")

FEATURES_VERSION = "1"
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


@dataclass
class Prepared:
    """The canonical view of a dataset that extractors read (see module docstring)."""

    imageset: ImageSet
    index: np.ndarray  # rows of imageset in the subsample, canonical order
    images: np.ndarray  # n x PROFILE_SIDE x PROFILE_SIDE x C uint8 (C = 1 or 3)
    grey: np.ndarray  # n x PROFILE_SIDE x PROFILE_SIDE float32 in [0, 255]
    labels: np.ndarray | None
    random_state: int
    probe: str = "default"
    _emb: np.ndarray | None = field(default=None, repr=False)

    @property
    def rgb(self) -> np.ndarray:
        """n x s x s x 3 float32 (grey replicated), so colour features treat grey and RGB alike."""
        x = self.images.astype(np.float32)
        return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x

    @property
    def embeddings(self) -> np.ndarray:
        """Probe embeddings of the subsample (computed once, lazily)."""
        if self._emb is None:
            from meta_features._probe import embed_grey

            self._emb = embed_grey(self.grey, probe=self.probe)
        return self._emb


def prepare(
    imageset: ImageSet,
    random_state: int = 0,
    max_images: int = PROFILE_MAX_IMAGES,
    probe: str = "default",
) -> Prepared:
    """Canonical order -> seeded subsample -> PROFILE_SIDE px -> rounded grey."""
    if len(imageset) == 0:
        raise MetaFeatureError(f"dataset '{imageset.name}' has no images")
    idx = canonical_subsample(imageset, max_images, random_state)
    images = resize_images(imageset.images[idx], PROFILE_SIDE)
    labels = None if imageset.labels is None else np.asarray(imageset.labels)[idx]
    return Prepared(imageset, idx, images, grey_of(images), labels, random_state, probe)
