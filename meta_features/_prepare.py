"""The one canonical preparation every meta-feature starts from.

Every extractor sees the same thing: images sorted by content digest, a seeded subsample of
at most ``PROFILE_MAX_IMAGES``, brought to ``PROFILE_SIDE`` px, plus a rounded grey copy that
is bit-identical for a grey set and its 3-channel replica (see ``_common`` for why).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from imagesets import ImageSet
from meta_features._common import (
    PROFILE_MAX_IMAGES,
    PROFILE_SIDE,
    MetaFeatureError,
    canonical_subsample,
    grey_of,
    resize_images,
)
from meta_features._probe import embed_grey


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
