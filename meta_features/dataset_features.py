"""Dataset-level, size, deep (probe) and label-aware meta-features.

``size`` and ``dataset`` describe the whole set (native shapes and card, all rows), while
``deep`` and ``label`` use probe embeddings of the canonical subsample. Values that need
labels are NaN for an unlabelled set, and a modality is a code only when it is known (DICOM
tags or a KB card); nothing is guessed.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import pairwise_distances, silhouette_score

from imagesets.modality import CANONICAL, modality_list
from meta_features._prepare import Prepared
from meta_features._registry import register

# Ordinal modality code: the position in the one shared vocabulary (imagesets.modality), so
# the code, ``similarity.domain_distance`` and the meta-dataset's same-modality features agree.
MODALITY_CODES: dict[str, int] = {m: i for i, m in enumerate(CANONICAL)}


def modality_code(modality: str | None) -> float:
    """Map a modality string (KB card or DICOM tag) to an ordinal code; NaN when unknown.

    The first modality written counts ("ct/mr/ultrasound" -> ct); a term outside the
    vocabulary is "other"."""
    mods = modality_list(modality)
    if not mods:
        return math.nan
    return float(MODALITY_CODES.get(mods[0], MODALITY_CODES["other"]))


@register("size")
def native_size(prep: Prepared) -> dict[str, float]:
    """Native size/aspect distribution from per-image shapes, else the card's min/median/max."""
    shapes = np.asarray(prep.imageset.native_shapes, dtype=float)
    if shapes.ndim == 2 and len(shapes) and shapes.shape[1] == 2 and np.all(shapes > 0):
        h, w = shapes[:, 0], shapes[:, 1]
        aspect = w / h
        return {
            "height_median": float(np.median(h)), "width_median": float(np.median(w)),
            "log_area_median": float(np.median(np.log(h * w))), "log_area_std": float(np.log(h * w).std()),
            "aspect_mean": float(aspect.mean()), "aspect_std": float(aspect.std()),
            "non_square_fraction": float((np.abs(aspect - 1) > 0.02).mean()),
        }
    ns = prep.imageset.card.native_size or {}
    h, w = ns.get("h_median", math.nan), ns.get("w_median", math.nan)
    return {
        "height_median": float(h), "width_median": float(w),
        "log_area_median": float(np.log(h * w)) if h > 0 and w > 0 else math.nan,
        "log_area_std": math.nan, "aspect_mean": float(w / h) if h > 0 else math.nan,
        "aspect_std": math.nan, "non_square_fraction": math.nan,
    }


def class_balance(counts: np.ndarray) -> dict[str, float]:
    """Imbalance ratio (max/min) and normalised class entropy (1 = balanced)."""
    counts = counts[counts > 0].astype(float)
    if len(counts) < 2:
        return {"imbalance_ratio": math.nan, "class_entropy": math.nan}
    p = counts / counts.sum()
    return {
        "imbalance_ratio": float(counts.max() / counts.min()),
        "class_entropy": float(-(p * np.log(p)).sum() / np.log(len(p))),
    }


@register("dataset")
def dataset_level(prep: Prepared) -> dict[str, float]:
    """Counts, class balance, bit depth, channels and modality code of the whole set."""
    s = prep.imageset
    card = s.card
    out = {"log10_n_images": float(np.log10(max(len(s), 1)))}
    if s.labels is not None:
        counts = np.bincount(np.asarray(s.labels, dtype=np.int64), minlength=max(s.n_classes, 1))
        out["n_classes"] = float(s.n_classes)
        out.update(class_balance(counts))
    else:
        out.update({"n_classes": math.nan, "imbalance_ratio": math.nan, "class_entropy": math.nan})
    depths = {int(k): v for k, v in (card.bit_depths or {}).items() if str(k).isdigit() and v}
    out["bit_depth"] = float(max(depths)) if depths else math.nan
    out["channels"] = float(s.channels)
    mods = card.modalities or {}
    out["modality_code"] = modality_code(max(mods, key=mods.get)) if mods else math.nan
    return out


def spectrum_stats(emb: np.ndarray) -> dict[str, float]:
    """Norm and covariance-spectrum summaries of an embedding matrix (n x d)."""
    if len(emb) < 3:
        keys = ["mean_norm", "norm_std", "centroid_norm", "total_variance", "top_eig_fraction",
                "eig90_fraction", "effective_rank", "participation_ratio"]
        return dict.fromkeys(keys, math.nan)
    e = emb.astype(np.float64)
    norms = np.linalg.norm(e, axis=1)
    ev = np.clip(np.linalg.eigvalsh(np.cov(e, rowvar=False))[::-1], 0, None)
    tot = ev.sum()
    p = ev / tot if tot > 0 else np.full_like(ev, math.nan)
    pz = p[p > 0]
    return {
        "mean_norm": float(norms.mean()), "norm_std": float(norms.std()),
        "centroid_norm": float(np.linalg.norm(e.mean(axis=0))), "total_variance": float(tot),
        "top_eig_fraction": float(p[0]),
        "eig90_fraction": float((np.searchsorted(np.cumsum(p), 0.9) + 1) / len(p)),
        "effective_rank": float(np.exp(-(pz * np.log(pz)).sum())),
        "participation_ratio": float(tot**2 / (ev**2).sum()) if tot > 0 else math.nan,
    }


@register("deep")
def deep_stats(prep: Prepared) -> dict[str, float]:
    """Probe-embedding statistics (the same embeddings the Frechet/MMD/OTDD distances use)."""
    return spectrum_stats(prep.embeddings)


def separability(emb: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """Fisher ratio tr(S_b)/tr(S_w), leave-one-out 1-NN accuracy, silhouette on embeddings."""
    nan = {"fisher_ratio": math.nan, "nn1_accuracy": math.nan, "silhouette": math.nan}
    if labels is None or len(emb) < 3:
        return nan
    labels = np.asarray(labels)
    classes, inv = np.unique(labels, return_inverse=True)
    if len(classes) < 2 or len(classes) >= len(labels):
        return nan
    e = emb.astype(np.float64)
    mu = e.mean(axis=0)
    sb = sw = 0.0
    for k in range(len(classes)):
        ek = e[inv == k]
        sb += len(ek) * float(((ek.mean(axis=0) - mu) ** 2).sum())
        sw += float(((ek - ek.mean(axis=0)) ** 2).sum())
    d = pairwise_distances(e)
    np.fill_diagonal(d, np.inf)
    nn1 = float((inv[np.argmin(d, axis=1)] == inv).mean())  # ties -> first in canonical order
    np.fill_diagonal(d, 0.0)
    sil = float(silhouette_score(d, inv, metric="precomputed"))
    return {"fisher_ratio": sb / sw if sw > 0 else math.nan, "nn1_accuracy": nn1, "silhouette": sil}


@register("label")
def label_stats(prep: Prepared) -> dict[str, float]:
    """Class separability on probe features (only when labelled, else NaN)."""
    if prep.labels is None:
        return separability(np.zeros((0, 1)), None)
    return separability(prep.embeddings, prep.labels)
