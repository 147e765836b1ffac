"""Dataset profiles: meta-features + probe embeddings, saved as small npz + json pairs.

A profile is everything the similarity functions need about one dataset, so a recommender
can compare a user's target with every shipped source without the source images. Shipped
profiles keep <= 500 embeddings as float16 (artifacts stay small); the reference scaler for
meta-feature distances is fit over the shipped (source-side) profiles only.

A labelled set's profile also carries its Task2Vec embedding and its trivial embedding t0
(``meta_features.task2vec``, default probe, seeded, default caps), stored bit-identical
(float32) in the npz under the prefixes ``task2vec_`` / ``task2vec_t0_``: the Task2Vec
distances need the source's t0 and a shipped source has no images at run time. An
unlabelled set gets neither and a note in ``info["task2vec"]``; a profile written before
Task2Vec existed loads with neither (its Task2Vec distances are NaN), while an embedding
that is present but damaged is a one-line :class:`MetaFeatureError`, as any corrupt profile.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imagesets import ImageSet, atomic_path, atomic_write_text
from meta_features._common import PROFILE_MAX_IMAGES, MetaFeatureError
from meta_features._extract import extract_meta_features
from meta_features._prepare import prepare
from meta_features.task2vec import (
    Task2VecEmbedding,
    Task2VecError,
    task2vec_embedding,
    trivial_embedding,
)

SHIPPED_EMBEDDINGS = 500
T2V_PREFIX, T2V_T0_PREFIX = "task2vec_", "task2vec_t0_"
NEEDS_LABELS_NOTE = "not computed: Task2Vec needs labels (this set is unlabelled)"


@dataclass
class DatasetProfile:
    """One dataset's meta-features and (subsampled, canonical-order) probe embeddings."""

    name: str
    meta: pd.Series
    embeddings: np.ndarray  # <= PROFILE_MAX_IMAGES x d
    labels: np.ndarray | None
    fingerprint: str
    info: dict | None = None  # provenance: reader, card, n images, probe
    task2vec: Task2VecEmbedding | None = None  # None: unlabelled, or a profile older than Task2Vec
    task2vec_trivial: Task2VecEmbedding | None = None  # t0 (shuffled labels), for the asymmetric distance

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def profiles_dir() -> Path:
    """``artifacts/profiles`` (follows ``$CATSCANS_ARTIFACTS``)."""
    from imagesets import artifacts_dir

    return artifacts_dir() / "profiles"


def profile_dataset(imageset: ImageSet, random_state: int = 0, probe: str = "default", *,
                    task2vec: bool = True, task2vec_trivial: bool = False) -> DatasetProfile:
    """Meta-features (all groups) and embeddings of the same seeded canonical subsample, plus
    (``task2vec``, labelled sets only) the Task2Vec embedding and (``task2vec_trivial``) its
    t0. Only a source needs t0 (the asymmetric distance's source side), so a user's target
    skips it and the shipped profiles (``build_shipped_profiles``) compute it."""
    prep = prepare(imageset, random_state, PROFILE_MAX_IMAGES, probe=probe)
    meta = extract_meta_features(imageset, None, random_state, probe=probe, prepared=prep)
    info = {"n_images": len(imageset), "side_read": imageset.side, "probe": probe,
            "card": imageset.card.to_dict() if imageset.card is not None else {}}
    p = DatasetProfile(imageset.name, meta, prep.embeddings, prep.labels, imageset.fingerprint(), info)
    if task2vec:
        attach_task2vec(p, imageset, random_state, probe, trivial=task2vec_trivial)
    return p


def attach_task2vec(p: DatasetProfile, imageset: ImageSet, random_state: int = 0, probe: str = "default",
                    trivial: bool = True) -> DatasetProfile:
    """Set ``p.task2vec`` (and t0) from ``imageset``; a set Task2Vec cannot use (no labels,
    one class) leaves them None with the reason in ``p.info["task2vec"]`` instead of failing."""
    p.info = dict(p.info or {})
    if imageset.labels is None:
        p.task2vec = p.task2vec_trivial = None
        p.info["task2vec"] = NEEDS_LABELS_NOTE
        return p
    try:
        p.task2vec = task2vec_embedding(imageset, probe, seed=random_state)
        p.task2vec_trivial = trivial_embedding(imageset, probe, seed=random_state) if trivial else None
    except Task2VecError as exc:
        p.task2vec = p.task2vec_trivial = None
        p.info["task2vec"] = f"not computed: {exc}"
        return p
    cost = p.task2vec.cost_s + (p.task2vec_trivial.cost_s if p.task2vec_trivial is not None else 0.0)
    p.info["task2vec"] = (f"{p.task2vec.n_images} images, {p.task2vec.info.get('n_classes')} classes, probe "
                          f"{p.task2vec.probe_name}, seed {random_state}, "
                          f"{'with' if p.task2vec_trivial is not None else 'no'} t0, {cost:.1f} s")
    return p


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
    for emb_t2v, prefix in ((p.task2vec, T2V_PREFIX), (p.task2vec_trivial, T2V_T0_PREFIX)):
        if emb_t2v is not None:  # float32 as computed: the round trip is bit-identical
            arrays.update(emb_t2v.to_npz_dict(prefix))
    with atomic_path(npz) as tmp, open(tmp, "wb") as fh:  # unique temp + rename, as every writer
        np.savez_compressed(fh, **arrays)
    meta = {k: (None if not math.isfinite(v) else float(v)) for k, v in p.meta.items()}
    doc = {"name": p.name, "fingerprint": p.fingerprint, "meta_features": meta, "info": p.info or {},
           "n_embeddings": int(len(emb)), "embeddings_dtype": "float16",
           "task2vec": p.task2vec is not None, "task2vec_t0": p.task2vec_trivial is not None}
    atomic_write_text(js, json.dumps(doc, indent=1, default=str) + "\n")
    return js


def load_profile(path: str | Path) -> DatasetProfile:
    """Read a profile written by :func:`save_profile` (either file name, or the stem)."""
    npz, js = _paths(path)
    where = js.with_suffix("")
    try:
        doc = json.loads(js.read_text())
        with np.load(npz, allow_pickle=False) as z:
            emb = z["embeddings"].astype(np.float32)
            labels = z["labels"] if "labels" in z.files else None
            t2v, problem = _load_task2vec(z, T2V_PREFIX)
            t0, problem_t0 = _load_task2vec(z, T2V_T0_PREFIX)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise MetaFeatureError(f"cannot read profile {where}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    problem = _profile_problem(doc, emb, labels) or problem or problem_t0
    if problem is None and (t2v is not None or t0 is not None) and labels is None:
        problem = "a Task2Vec embedding is stored for an unlabelled set"
    if problem is None and t2v is not None and t0 is not None and t2v.hessian.shape != t0.hessian.shape:
        problem = f"Task2Vec t0 has {t0.hessian.size} values, the embedding {t2v.hessian.size}"
    if problem:  # validated on load: a damaged profile is one clear line, not a wrong distance
        raise MetaFeatureError(f"profile {where} is corrupt: {problem} (rebuild: catscans kb attach)")
    meta = pd.Series({k: (math.nan if v is None else float(v)) for k, v in doc["meta_features"].items()},
                     dtype=float)
    return DatasetProfile(doc["name"], meta, emb, labels, doc["fingerprint"], doc.get("info", {}), t2v, t0)


def _load_task2vec(z, prefix: str) -> tuple[Task2VecEmbedding | None, str | None]:
    """(embedding, None), (None, None) when none is stored (a profile older than Task2Vec), or
    (None, what is wrong) for a stored one that cannot be trusted."""
    keys = [k for k in z.files if k.startswith(prefix) and (prefix != T2V_PREFIX or not k.startswith(T2V_T0_PREFIX))]
    if not keys:
        return None, None
    what = "Task2Vec t0" if prefix == T2V_T0_PREFIX else "Task2Vec embedding"
    try:
        e = Task2VecEmbedding.from_npz_dict(z, prefix)
    except (Task2VecError, KeyError, ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"{what} unreadable ({msg})"
    h = e.hessian
    if h.ndim != 1 or h.size == 0 or not np.isfinite(h).all() or (h < 0).any():
        return None, f"{what} must be a finite non-negative vector, got shape {h.shape}"
    if sum(e.layer_sizes) != h.size or len(e.layer_sizes) != len(e.layers):
        return None, f"{what} has {h.size} values but its layers add up to {sum(e.layer_sizes)}"
    return e, None


def _profile_problem(doc: object, emb: np.ndarray, labels: np.ndarray | None) -> str | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("meta_features"), dict):
        return "the json lacks its meta_features object"
    if not isinstance(doc.get("name"), str) or not isinstance(doc.get("fingerprint"), str):
        return "the json lacks name / fingerprint"
    if any(v is not None and not isinstance(v, (int, float)) for v in doc["meta_features"].values()):
        return "a meta-feature value is not a number"
    if emb.ndim != 2 or len(emb) < 2 or not np.isfinite(emb).all():
        return f"embeddings must be a finite n x d array (n >= 2), got shape {emb.shape}"
    if labels is not None and (labels.ndim != 1 or len(labels) != len(emb)
                               or not np.issubdtype(labels.dtype, np.integer)):
        return f"labels must be {len(emb)} integers, got {labels.dtype} {labels.shape}"
    return None


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
    return {"fit_on": sorted(df.index), "note": "fit on the reference sets only (never a KB target)",
            "features": stats}


def save_scaler(scaler: dict, path: Path | None = None) -> Path:
    path = path or profiles_dir() / "scaler.json"
    atomic_write_text(path, json.dumps(scaler, indent=1) + "\n")
    return path


def load_scaler(path: Path | None = None) -> dict:
    path = path or profiles_dir() / "scaler.json"
    try:
        scaler = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MetaFeatureError(
            f"meta-feature scaler missing or unreadable: {path} (run catscans kb attach)"
        ) from exc
    feats = scaler.get("features") if isinstance(scaler, dict) else None
    ok = isinstance(feats, dict) and all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
        and v[1] > 0 for v in feats.values())
    if not ok:  # a zero or missing sd would turn every meta-feature distance into inf/NaN
        raise MetaFeatureError(f"meta-feature scaler {path} is corrupt: 'features' must map names to "
                               "[mean, sd > 0] (run catscans kb attach)")
    return scaler
