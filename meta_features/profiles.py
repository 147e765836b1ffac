"""Dataset profiles: meta-features + probe embeddings, saved as small npz + json pairs.

A profile is everything the similarity functions need about one dataset, so a recommender
can compare a user's target with every shipped source without the source images. Shipped
profiles keep <= 500 embeddings as float16 (artifacts stay small); the reference scaler for
meta-feature distances is fit over the shipped (source-side) profiles only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imagesets import ImageSet
from meta_features._common import PROFILE_MAX_IMAGES, MetaFeatureError
from meta_features._extract import extract_meta_features
from meta_features._prepare import prepare

SHIPPED_EMBEDDINGS = 500


@dataclass
class DatasetProfile:
    """One dataset's meta-features and (subsampled, canonical-order) probe embeddings."""

    name: str
    meta: pd.Series
    embeddings: np.ndarray  # <= PROFILE_MAX_IMAGES x d
    labels: np.ndarray | None
    fingerprint: str
    info: dict | None = None  # provenance: reader, card, n images, probe

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def profiles_dir() -> Path:
    """``artifacts/profiles`` (follows ``$CATSCANS_ARTIFACTS``)."""
    from imagesets import artifacts_dir

    return artifacts_dir() / "profiles"


def profile_dataset(imageset: ImageSet, random_state: int = 0, probe: str = "default") -> DatasetProfile:
    """Meta-features (all groups) and embeddings of the same seeded canonical subsample."""
    prep = prepare(imageset, random_state, PROFILE_MAX_IMAGES, probe=probe)
    meta = extract_meta_features(imageset, None, random_state, probe=probe, prepared=prep)
    info = {"n_images": len(imageset), "side_read": imageset.side, "probe": probe,
            "card": imageset.card.to_dict() if imageset.card is not None else {}}
    return DatasetProfile(imageset.name, meta, prep.embeddings, prep.labels, imageset.fingerprint(), info)


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    base = p.with_suffix("") if p.suffix in {".npz", ".json"} else p
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def save_profile(
    p: DatasetProfile, path: str | Path, max_embeddings: int | None = SHIPPED_EMBEDDINGS, random_state: int = 0
) -> Path:
    """Write ``<path>.npz`` (float16 embeddings, labels) + ``<path>.json`` (meta, provenance)."""
    npz, js = _paths(path)
    emb, labels = p.embeddings, p.labels
    if max_embeddings is not None and len(emb) > max_embeddings:
        keep = np.sort(np.random.default_rng(random_state).choice(len(emb), max_embeddings, replace=False))
        emb = emb[keep]
        labels = None if labels is None else labels[keep]
    npz.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"embeddings": emb.astype(np.float16)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    np.savez_compressed(npz, **arrays)
    meta = {k: (None if not math.isfinite(v) else float(v)) for k, v in p.meta.items()}
    doc = {"name": p.name, "fingerprint": p.fingerprint, "meta_features": meta, "info": p.info or {},
           "n_embeddings": int(len(emb)), "embeddings_dtype": "float16"}
    js.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return js


def load_profile(path: str | Path) -> DatasetProfile:
    """Read a profile written by :func:`save_profile` (either file name, or the stem)."""
    npz, js = _paths(path)
    try:
        doc = json.loads(js.read_text())
        with np.load(npz, allow_pickle=False) as z:
            emb = z["embeddings"].astype(np.float32)
            labels = z["labels"] if "labels" in z.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise MetaFeatureError(f"cannot read profile {js.with_suffix('')}: {exc}") from exc
    meta = pd.Series({k: (math.nan if v is None else float(v)) for k, v in doc["meta_features"].items()},
                     dtype=float)
    return DatasetProfile(doc["name"], meta, emb, labels, doc["fingerprint"], doc.get("info", {}))


def list_profiles(root: Path | None = None) -> list[str]:
    root = root or profiles_dir()
    return sorted(p.stem for p in root.glob("*.npz")) if root.exists() else []


def load_shipped_profiles(root: Path | None = None) -> dict[str, DatasetProfile]:
    root = root or profiles_dir()
    return {name: load_profile(root / name) for name in list_profiles(root)}


# -- reference scaler ---------------------------------------------------------
def fit_scaler(profiles: list[DatasetProfile], min_values: int = 3) -> dict:
    """Per-feature mean/std over SOURCE-side profiles; constant or sparse features dropped.

    Never include a held-out target here: its own values would shape the scale it is
    compared on.
    """
    df = pd.DataFrame({p.name: p.meta for p in profiles}).T
    stats = {}
    for col in df.columns:
        v = df[col].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if len(v) >= min_values and v.std() > 1e-12:
            stats[col] = [float(v.mean()), float(v.std())]
    return {"fit_on": sorted(df.index), "note": "fit on the reference sets only (natural, never a KB target)",
            "features": stats}


def save_scaler(scaler: dict, path: Path | None = None) -> Path:
    path = path or profiles_dir() / "scaler.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scaler, indent=1) + "\n")
    return path


def load_scaler(path: Path | None = None) -> dict:
    path = path or profiles_dir() / "scaler.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MetaFeatureError(
            f"meta-feature scaler missing or unreadable: {path} (run catscans kb attach)"
        ) from exc
