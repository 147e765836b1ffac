"""Task2Vec distances: the seed study's plain cosine, the task2vec library's normalised cosine,
and the paper's asymmetric source -> target distance (re-exported by :mod:`meta_features.task2vec`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import distance as _sdist

from meta_features._task2vec_probe import Task2VecError

ASYM_ALPHA = 0.15


def _vec(e) -> np.ndarray:
    h = e.hessian if hasattr(e, "hessian") else e
    h = np.asarray(h, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(h)):
        raise Task2VecError("Task2Vec embedding has non-finite values")
    return h


def _sizes(e) -> list[int] | None:
    return list(e.layer_sizes) if hasattr(e, "hessian") else None


def _layerwise(h: np.ndarray, sizes: list[int] | None) -> np.ndarray:
    if not sizes:
        raise Task2VecError("layerwise=True needs Task2VecEmbedding inputs (layer sizes)")
    out, i = [], 0
    for k in sizes:
        block = h[i : i + k]
        m = block.mean()
        out.append(block / m if m > 0 else block)
        i += k
    return np.concatenate(out)


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 and nv == 0:
        return 0.0
    if nu == 0 or nv == 0:
        return 1.0
    if np.array_equal(u, v):
        return 0.0
    return float(np.clip(_sdist.cosine(u, v), 0.0, 2.0))


def cosine_distance(a, b, *, layerwise: bool = False) -> float:
    """Plain cosine distance of the raw Fisher diagonals (the seed study's
    ``scipy.spatial.distance.cosine`` on ``hessian``). ``layerwise=True`` first divides each
    layer's block by its mean so no layer dominates by magnitude alone."""
    ha, hb = _vec(a), _vec(b)
    if ha.shape != hb.shape:
        raise Task2VecError(f"Task2Vec embeddings differ in size ({ha.size} vs {hb.size}): different probes?")
    if layerwise:
        ha, hb = _layerwise(ha, _sizes(a)), _layerwise(hb, _sizes(b))
    return _cos(ha, hb)


def normalized_cosine_distance(a, b) -> float:
    """The task2vec library's distance: cosine of h_a/(h_a+h_b) vs h_b/(h_a+h_b).

    Symmetric, 0 for identical inputs and for h_b = c * h_a, in [0, 1] (both vectors are
    non-negative). An entry where both Fishers are 0 (a dead filter) is left out, as the
    library's ``+ 1e-8`` does, without an epsilon that would swamp small Fisher values."""
    ha, hb = _vec(a), _vec(b)
    if ha.shape != hb.shape:
        raise Task2VecError(f"Task2Vec embeddings differ in size ({ha.size} vs {hb.size}): different probes?")
    s = ha + hb
    pos = s > 0
    ua = np.where(pos, ha / np.where(pos, s, 1.0), 0.0)
    ub = np.where(pos, hb / np.where(pos, s, 1.0), 0.0)
    return _cos(ua, ub)


def asymmetric_distance(source, target, trivial, alpha: float = ASYM_ALPHA) -> float:
    """The paper's d_asym(source -> target) = d_sym(source, target) - alpha * d_sym(source, t0).

    d_sym is :func:`normalized_cosine_distance`; ``trivial`` (t0) is the source's trivial
    embedding (:func:`trivial_embedding`: the source images with shuffled labels). Not
    symmetric; can be negative; lower = a better source for the target."""
    return normalized_cosine_distance(source, target) - alpha * normalized_cosine_distance(source, trivial)
