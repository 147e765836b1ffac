"""Reading the real image sets in ../shared/data for the probe and the shipped profiles.

Uses ``imagesets.read_imageset`` when it exists (so shipped profiles see images exactly as a
user's target will be read); otherwise a minimal reader of the shared npz layout
(images, labels, split?, class_names) with the same LANCZOS resize. Nothing here is needed at
run time: only the build scripts call it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from imagesets import Card, ImageSet
from meta_features._common import PROFILE_SIDE, MetaFeatureError, resize_images


def shared_data_dir() -> Path:
    """``$CATSCANS_SHARED_DATA`` or ../shared/data next to the repository."""
    env = os.environ.get("CATSCANS_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not root.is_dir():
        raise MetaFeatureError(f"shared data folder not found: {root}")
    return root


def shared_stems() -> list[str]:
    return sorted(p.stem for p in shared_data_dir().glob("*.npz"))


def read_shared(stem: str, side: int = PROFILE_SIDE) -> tuple[ImageSet, str]:
    """One shared set at ``side`` px, channels kept; returns (imageset, reader used)."""
    path = shared_data_dir() / f"{stem}.npz"
    try:
        from imagesets import read_imageset  # type: ignore[attr-defined]
    except ImportError:
        read_imageset = None
    if read_imageset is not None:
        return read_imageset(path, side=side, channels="keep", name=stem), "imagesets.read_imageset"
    return _read_npz(path, side), "meta_features._shared_data._read_npz (LANCZOS)"


def _read_npz(path: Path, side: int) -> ImageSet:
    z = np.load(path, allow_pickle=False)
    images = z["images"]
    native = np.tile(np.array(images.shape[1:3], dtype=np.int32), (len(images), 1))
    if images.ndim == 3:
        images = images[..., None]
    images = resize_images(images, side)
    labels = z["labels"].astype(np.int64).reshape(-1)
    names = [str(c) for c in z["class_names"]]
    split = z["split"].astype(str) if "split" in z.files else None
    h, w = native[0]
    card = Card(
        name=path.stem, n_images=len(images), n_classes=len(names),
        class_counts={names[k]: int(v) for k, v in sorted(Counter(labels.tolist()).items())},
        channels=int(images.shape[-1]),
        native_size={"h_min": float(h), "h_median": float(h), "h_max": float(h),
                     "w_min": float(w), "w_median": float(w), "w_max": float(w)},
        bit_depths={"8": len(images)}, file_formats={"npz": len(images)}, modalities={},
        splits=dict(Counter(split.tolist())) if split is not None else {}, labelled=True,
        n_skipped=0, skipped_reasons={}, source=str(path), side=side,
    )
    return ImageSet(path.stem, images, labels, names, split, [f"npz:{i}" for i in range(len(images))],
                    card, native)


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
