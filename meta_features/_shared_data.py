"""Reading the real image sets in ../shared/data for the probe and the shipped profiles.

Reads with ``imagesets.read_imageset``, so shipped profiles see images exactly as a user's
target will be read. Nothing here is needed at run time: only the build scripts call it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from imagesets import ImageSet, default_data_dir, read_imageset
from meta_features._common import PROFILE_SIDE, MetaFeatureError


def shared_data_dir() -> Path:
    """:func:`imagesets.default_data_dir`, which must exist for the build scripts."""
    root = default_data_dir()
    if not root.is_dir():
        raise MetaFeatureError(f"shared data folder not found: {root}")
    return root


def shared_stems(derived: bool = True) -> list[str]:
    """Every shared npz stem, plus (``derived``) the derived tasks cut from them
    (``experiments.derived``), which are KB targets too and need profiles of their own."""
    from experiments.derived import DERIVED, root_of

    stems = sorted(p.stem for p in shared_data_dir().glob("*.npz"))
    extra = sorted(n for n in DERIVED if root_of(n) in stems) if derived else []
    return stems + extra


def read_shared(stem: str, side: int = PROFILE_SIDE) -> tuple[ImageSet, str]:
    """One shared set at ``side`` px, channels kept, read by ``imagesets.read_imageset`` (so
    shipped profiles see images exactly as a user's target will be read); returns (imageset,
    reader name, recorded in each profile's provenance). A derived task is cut from its
    parent exactly as build-matrix cuts it."""
    from experiments.derived import DERIVED, derive

    if stem in DERIVED:
        parent, reader = read_shared(DERIVED[stem].parent, side)
        return derive(parent, DERIVED[stem]), f"{reader} + experiments.derived"
    path = shared_data_dir() / f"{stem}.npz"
    return read_imageset(path, side=side, channels="keep", name=stem), "imagesets.read_imageset"


def train_test_index(imageset: ImageSet, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Official train/test rows when the set has both; else a seeded stratified split.

    mnist/kmnist ship only their test split and ham/pbc/dtd have none (SOURCES.md), so the
    probe needs its own split for them. Validation rows are used by neither side.
    """
    n = len(imageset)
    split = imageset.split
    if split is not None and {"train", "test"} <= set(np.unique(split).tolist()):
        return np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    tr, te = train_test_split(np.arange(n), test_size=test_size, random_state=seed, stratify=imageset.labels)
    return np.sort(tr), np.sort(te)
