"""Dataset similarities and distances between two profiles (and between two cards).

Why several: the literature (shared docs, anchors §B) finds no single distance that predicts
transfer; the meta-model weighs them. Every distance is 0 for a dataset against itself and
symmetric, except the one marked ``symmetric=False`` (``dist_task2vec_asym``, source -> target);
cosine similarity is 1 against itself.

- ``sim_cosine_meta`` / ``dist_euclid_meta``: on meta-features standardised by the reference
  scaler (``artifacts/profiles/scaler.json``, fit on the shipped source-side profiles only,
  never on a held-out target); features missing on either side are skipped, and the
  Euclidean distance is the RMS over the features used (comparable when some are missing).
- ``dist_frechet``: Frechet distance between Gaussians fit to probe embeddings (as FID).
- ``dist_mmd``: RBF-kernel MMD (biased V-statistic, so d(X, X) = 0 exactly), bandwidth by the
  median heuristic on the pooled sample.
- ``dist_otdd``: label-aware OT dataset distance (Alvarez-Melis & Fusi 2020): exact OT (POT
  ``emd2``) with ground cost ||x - x'||^2 + W2^2 between the class-conditional Gaussians of y
  and y', debiased as d(A,B) - (d(A,A) + d(B,B)) / 2. NaN when either side is unlabelled;
  ``dist_ot`` is the same without labels and is always given.
- ``dist_task2vec_cos`` / ``dist_task2vec_ncos`` / ``dist_task2vec_asym``: on the profiles'
  Task2Vec embeddings (``meta_features.task2vec``): the plain cosine the seed study used, the
  task2vec library's normalised cosine, and the paper's asymmetric source -> target distance
  ``ncos(s, t) - alpha * ncos(s, t0_s)`` (t0_s: the source's trivial embedding), which is
  negative for a dataset against itself and not symmetric. NaN when either profile has no
  embedding (unlabelled, a profile older than Task2Vec, no t0 for the source), or when the two
  come from different probes (different digests or sizes: not comparable).

They live in one registry, :data:`SIMILARITIES`: adding one is a function
``fn(source, target, scaler) -> float`` decorated with :func:`register_similarity` here.
Its name says its direction (``sim_*``: higher = closer; ``dist_*``: lower = closer, 0 for
a dataset against itself unless registered ``symmetric=False``), which is how the
meta-dataset orients pair features.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ot
from scipy.spatial.distance import cdist
from sklearn.covariance import LedoitWolf
from threadpoolctl import threadpool_limits

from meta_features.profiles import DatasetProfile, load_scaler
from meta_features.task2vec import (
    Task2VecEmbedding,
    asymmetric_distance,
    cosine_distance,
    normalized_cosine_distance,
)

MAX_POINTS = 500  # per side, for MMD and OT (seeded subsample)

SimilarityFn = Callable[[DatasetProfile, DatasetProfile, "dict | None"], float]


@dataclass(frozen=True)
class Similarity:
    """One registered profile similarity; ``needs_labels``: NaN unless both sides are labelled."""

    name: str
    fn: SimilarityFn
    needs_labels: bool = False
    symmetric: bool = True  # False: fn(source, target) is a direction (and may be < 0 on itself)

    @property
    def higher_is_closer(self) -> bool:
        return self.name.startswith("sim_")


SIMILARITIES: dict[str, Similarity] = {}


def register_similarity(name: str, *, needs_labels: bool = False,
                        symmetric: bool = True) -> Callable[[SimilarityFn], SimilarityFn]:
    """Decorator: add ``fn(source, target, scaler) -> float`` to :data:`SIMILARITIES`."""
    if not name.startswith(("sim_", "dist_")):
        raise ValueError(f"similarity {name!r}: name it sim_* (higher = closer) or dist_* (lower = closer)")

    def deco(fn: SimilarityFn) -> SimilarityFn:
        if name in SIMILARITIES:
            raise ValueError(f"similarity {name!r} is already registered")
        SIMILARITIES[name] = Similarity(name, fn, needs_labels, symmetric)
        return fn

    return deco


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _bures_cross(s1: np.ndarray, s2: np.ndarray, r1: np.ndarray | None = None,
                 r2: np.ndarray | None = None) -> float:
    """tr((S1^1/2 S2 S1^1/2)^1/2), averaged over both orders so the result is symmetric.

    ``r1``/``r2`` are precomputed PSD square roots (OTDD reuses them over class pairs).
    """

    def one(r: np.ndarray, b: np.ndarray) -> float:
        m = r @ b @ r
        w = np.linalg.eigvalsh((m + m.T) / 2)
        return float(np.sqrt(np.clip(w, 0, None)).sum())

    r1 = _psd_sqrt(s1) if r1 is None else r1
    r2 = _psd_sqrt(s2) if r2 is None else r2
    return 0.5 * (one(r1, s2) + one(r2, s1))


def gaussian_w2sq(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray,
                  r1: np.ndarray | None = None, r2: np.ndarray | None = None) -> float:
    """Squared 2-Wasserstein (Frechet) distance between N(m1, S1) and N(m2, S2); >= 0."""
    d = float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * _bures_cross(s1, s2, r1, r2))
    return max(d, 0.0)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance (squared units, as FID) between embedding sets."""
    if len(x) < 2 or len(y) < 2:
        return math.nan
    x, y = x.astype(np.float64), y.astype(np.float64)
    return gaussian_w2sq(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


def _sub(x: np.ndarray, labels: np.ndarray | None, n: int, seed: int = 0):
    if len(x) <= n:
        return x, labels
    keep = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    return x[keep], (None if labels is None else labels[keep])


def mmd_rbf(x: np.ndarray, y: np.ndarray) -> float:
    """sqrt of the biased RBF MMD^2, gamma = 1 / median pooled squared distance."""
    x, _ = _sub(x.astype(np.float64), None, MAX_POINTS)
    y, _ = _sub(y.astype(np.float64), None, MAX_POINTS)
    z = np.vstack([x, y])
    d2 = cdist(z, z, "sqeuclidean")
    off = d2[~np.eye(len(z), dtype=bool)]
    med = float(np.median(off)) if off.size else 0.0
    if med <= 0:
        med = float(off.mean()) if off.size and off.mean() > 0 else 1.0
    k = np.exp(-d2 / med)
    n = len(x)
    mmd2 = k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
    return float(math.sqrt(max(mmd2, 0.0)))


def _class_gaussians(x: np.ndarray, y: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """class -> (mean, Ledoit-Wolf covariance, its PSD square root)."""
    out = {}
    d = x.shape[1]
    for c in np.unique(y):
        xc = x[y == c]
        cov = LedoitWolf().fit(xc).covariance_ if len(xc) >= 2 else np.zeros((d, d))
        out[int(c)] = (xc.mean(0), cov, _psd_sqrt(cov))
    return out


def _cost_matrix(xa, ya, xb, yb) -> np.ndarray:
    m = cdist(xa, xb, "sqeuclidean")
    if ya is not None and yb is not None:
        ga, gb = _class_gaussians(xa, ya), _class_gaussians(xb, yb)
        ca, cb = sorted(ga), sorted(gb)
        w = np.array([[gaussian_w2sq(ga[i][0], ga[i][1], gb[j][0], gb[j][1], ga[i][2], gb[j][2])
                       for j in cb] for i in ca])
        m = m + w[np.searchsorted(ca, ya)][:, np.searchsorted(cb, yb)]
    return m


def _self_cost(x, y) -> float:
    """OT cost of a sample against itself: the identity coupling is optimal (costs >= 0 and the
    diagonal is the only possible zero), so it is the mean of the diagonal (~0, W2 of a class
    Gaussian with itself) without solving an LP."""
    if y is None:
        return 0.0  # ||x_i - x_i||^2
    g = _class_gaussians(x, y)
    classes, counts = np.unique(y, return_counts=True)
    w = [gaussian_w2sq(g[int(c)][0], g[int(c)][1], g[int(c)][0], g[int(c)][1], g[int(c)][2], g[int(c)][2])
         for c in classes]
    return float(np.dot(counts, w) / counts.sum())


def ot_distance(xa: np.ndarray, xb: np.ndarray, ya: np.ndarray | None = None,
                yb: np.ndarray | None = None) -> float:
    """Debiased (label-aware when both label arrays are given) exact-OT dataset distance."""
    xa, ya = _sub(xa.astype(np.float64), ya, MAX_POINTS)
    xb, yb = _sub(xb.astype(np.float64), yb, MAX_POINTS)
    if len(xa) < 2 or len(xb) < 2:
        return math.nan
    if _order_key(xa, ya) > _order_key(xb, yb):  # one LP per pair, same one for (b, a): symmetric
        xa, ya, xb, yb = xb, yb, xa, ya
    m = _cost_matrix(xa, ya, xb, yb)
    a = np.full(len(xa), 1.0 / len(xa))
    b = np.full(len(xb), 1.0 / len(xb))
    ab = float(ot.emd2(a, b, m, numItermax=1_000_000))
    return max(ab - 0.5 * _self_cost(xa, ya) - 0.5 * _self_cost(xb, yb), 0.0)


def _order_key(x: np.ndarray, y: np.ndarray | None) -> str:
    h = hashlib.blake2b(x.tobytes(), digest_size=8)
    if y is not None:
        h.update(np.asarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


def meta_similarity(a, b, scaler: dict | None = None) -> tuple[float, float]:
    """(cosine similarity, Euclidean distance) of scaler-standardised meta-features."""
    feats = (scaler or load_scaler())["features"]
    names = [k for k in feats if k in a.index and k in b.index]
    mu = np.array([feats[k][0] for k in names])
    sd = np.array([feats[k][1] for k in names])
    va = (a.reindex(names).to_numpy(float) - mu) / sd
    vb = (b.reindex(names).to_numpy(float) - mu) / sd
    ok = np.isfinite(va) & np.isfinite(vb)
    if not ok.any():
        return math.nan, math.nan
    va, vb = va[ok], vb[ok]
    dist = float(np.linalg.norm(va - vb) / math.sqrt(ok.sum()))  # RMS, comparable across gaps
    den = np.linalg.norm(va) * np.linalg.norm(vb)
    cos = float(np.clip(va @ vb / den, -1, 1)) if den > 0 else math.nan
    if np.array_equal(va, vb):
        cos, dist = (1.0 if den > 0 else math.nan), 0.0
    return cos, dist


def pair_similarities(source: DatasetProfile, target: DatasetProfile, scaler: dict | None = None) -> dict[str, float]:
    """All profile-based similarities/distances between two datasets (see module docstring).

    Runs with one BLAS thread: these are many small (64-d) eigendecompositions, and 2-thread
    OpenBLAS was measured 50x slower than 1 thread on this kind of machine under load.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _pair_similarities(source, target, scaler)


def _pair_similarities(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> dict[str, float]:
    labelled = source.labels is not None and target.labels is not None
    scaler = scaler or (load_scaler() if any(n.endswith("_meta") for n in SIMILARITIES) else None)
    return {name: (float(sim.fn(source, target, scaler)) if labelled or not sim.needs_labels else math.nan)
            for name, sim in SIMILARITIES.items()}


@register_similarity("sim_cosine_meta")
def _sim_cosine_meta(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> float:
    return meta_similarity(source.meta, target.meta, scaler)[0]


@register_similarity("dist_euclid_meta")
def _dist_euclid_meta(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> float:
    return meta_similarity(source.meta, target.meta, scaler)[1]


@register_similarity("dist_frechet")
def _dist_frechet(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> float:
    return frechet_distance(source.embeddings, target.embeddings)


@register_similarity("dist_mmd")
def _dist_mmd(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> float:
    return mmd_rbf(source.embeddings, target.embeddings)


@register_similarity("dist_otdd", needs_labels=True)
def _dist_otdd(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> float:
    return ot_distance(source.embeddings, target.embeddings, source.labels, target.labels)


@register_similarity("dist_ot")
def _dist_ot(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> float:
    return ot_distance(source.embeddings, target.embeddings)


def _comparable(*es: Task2VecEmbedding | None) -> bool:
    """All present, same size, and (where recorded) the same probe digest."""
    if any(e is None for e in es):
        return False
    digests = {e.info.get("probe_digest", e.probe_name) for e in es}
    return len({e.hessian.size for e in es}) == 1 and len(digests) == 1


@register_similarity("dist_task2vec_cos", needs_labels=True)
def _dist_task2vec_cos(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> float:
    if not _comparable(source.task2vec, target.task2vec):
        return math.nan
    return cosine_distance(source.task2vec, target.task2vec)


@register_similarity("dist_task2vec_ncos", needs_labels=True)
def _dist_task2vec_ncos(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> float:
    if not _comparable(source.task2vec, target.task2vec):
        return math.nan
    return normalized_cosine_distance(source.task2vec, target.task2vec)


@register_similarity("dist_task2vec_asym", needs_labels=True, symmetric=False)
def _dist_task2vec_asym(source: DatasetProfile, target: DatasetProfile, scaler: dict | None) -> float:
    if not _comparable(source.task2vec, target.task2vec, source.task2vec_trivial):
        return math.nan
    return asymmetric_distance(source.task2vec, target.task2vec, source.task2vec_trivial)


def _norm(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip().lower()
    return s or None


def domain_distance(card_a: dict, card_b: dict) -> float:
    """Expert-style ordinal distance 0-6 from cards (as the seed study's expert scale).

    domain natural/medical differs: +3; modality differs: +2; channels differ: +1.
    0 for identical cards; NaN when either domain is unknown. A missing modality or channel
    count on either side contributes nothing (unknown is not evidence of a difference).
    """
    from imagesets.modality import same_modality  # the one modality comparison (DICOM CR = x-ray)

    da, db = _norm(card_a.get("domain")), _norm(card_b.get("domain"))
    if da is None or db is None:
        return math.nan
    d = 3.0 * (da != db)
    same = same_modality(card_a.get("modality"), card_b.get("modality"))
    if math.isfinite(same):
        d += 2.0 * (1.0 - same)
    ch_a, ch_b = card_a.get("channels"), card_b.get("channels")
    try:
        if ch_a is not None and ch_b is not None and math.isfinite(float(ch_a)) and math.isfinite(float(ch_b)):
            d += 1.0 * (int(float(ch_a)) != int(float(ch_b)))
    except (TypeError, ValueError):
        pass
    return d
