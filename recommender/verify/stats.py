"""Paired bootstrap over test images and seeds for measured AUCs.

Every candidate of one round is fine-tuned on the same training subsample per seed and
tested on the same images, so the comparison is paired: one resample draws test images
(multinomial weights, shared by every candidate and by every seed that tested those images)
and seeds (with replacement), and each candidate's mean AUC is recomputed under it. The
interval of a difference then carries the image noise and the seed noise once each.

The AUC under bootstrap weights is computed exactly (weighted Mann-Whitney with ties at ½)
by sorting once per candidate and seed and summing weights per tied group, so 1,000
resamples of a 2,000-image test set cost a few matrix passes, not 1,000 sklearn calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

__all__ = ["weighted_auc", "Measurement", "BootResult", "paired_bootstrap", "compare", "Comparison"]

_CHUNK = 256  # resamples per pass: bounds memory at a few x chunk x n floats


def _binary_auc(score: np.ndarray, pos: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted ROC-AUC of ``score`` for labels ``pos`` (bool) under each row of ``w`` (B x n)."""
    order = np.argsort(score, kind="mergesort")
    s, y = score[order], pos[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    out = np.empty(len(w))
    for i in range(0, len(w), _CHUNK):
        wb = w[i:i + _CHUNK][:, order]
        gp = np.add.reduceat(wb * y, starts, axis=1)
        gn = np.add.reduceat(wb * ~y, starts, axis=1)
        below = np.cumsum(gn, axis=1) - gn
        den = gp.sum(1) * gn.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i:i + _CHUNK] = (gp * (below + 0.5 * gn)).sum(1) / den
    return out


def weighted_auc(proba: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """ROC-AUC as ``experiments.training.roc_auc`` defines it (binary: positive class; multi-class:
    one-vs-rest weighted by prevalence), under each row of image weights ``w`` (default: all 1)."""
    w = np.ones((1, len(y))) if w is None else np.atleast_2d(w).astype(np.float64)
    if proba.shape[1] == 2:
        return _binary_auc(proba[:, 1], y == 1, w)
    total, acc = np.zeros(len(w)), np.zeros(len(w))
    for k in np.unique(y):
        prev = w[:, y == k].sum(1)
        a = _binary_auc(proba[:, k], y == k, w)
        ok = np.isfinite(a)
        acc[ok] += prev[ok] * a[ok]
        total[ok] += prev[ok]
    with np.errstate(invalid="ignore", divide="ignore"):
        return acc / total


@dataclass
class Measurement:
    """One candidate's test predictions per seed: {repeat: (proba, labels, test-rows digest)}."""

    name: str
    seeds: dict[int, tuple[np.ndarray, np.ndarray, str]]


@dataclass
class BootResult:
    names: list[str]
    repeats: list[int]
    point: np.ndarray  # (C,) mean AUC over seeds, full test set
    per_seed: np.ndarray  # (C, m) AUC per seed
    boot: np.ndarray  # (C, B) mean AUC under each joint resample
    n_test: int


def paired_bootstrap(ms: list[Measurement], n_boot: int = 1000, seed: int = 0) -> BootResult:
    """Joint resamples of test images and seeds, shared by every candidate in ``ms``.

    Only seeds every candidate has are used; seeds that tested the same images (same digest)
    share one image resample, so a crossed design (seeds x images) is resampled as crossed.
    """
    common = sorted(set.intersection(*(set(m.seeds) for m in ms)))
    if not common:
        raise ValueError("no seed is shared by all candidates")
    rng = np.random.default_rng(seed)
    digests = {r: ms[0].seeds[r][2] for r in common}
    for m in ms:
        for r in common:
            if m.seeds[r][2] != digests[r] or len(m.seeds[r][1]) != len(ms[0].seeds[r][1]):
                raise ValueError(f"{m.name} seed {r} predicts other test images than {ms[0].name}")
    weights = {}
    for d in dict.fromkeys(digests.values()):
        n = len(ms[0].seeds[next(r for r in common if digests[r] == d)][1])
        weights[d] = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(np.float64)
    pick = rng.integers(0, len(common), size=(n_boot, len(common)))
    per_seed = np.empty((len(ms), len(common)))
    boot = np.empty((len(ms), n_boot))
    for c, m in enumerate(ms):
        a = np.empty((len(common), n_boot))
        for j, r in enumerate(common):
            p, y, _ = m.seeds[r]
            per_seed[c, j] = weighted_auc(p, y)[0]
            a[j] = weighted_auc(p, y, weights[digests[r]])
        boot[c] = a[pick, np.arange(n_boot)[:, None]].mean(1)
    n_test = len(ms[0].seeds[common[0]][1])
    return BootResult([m.name for m in ms], common, per_seed.mean(1), per_seed, boot, n_test)


@dataclass
class Comparison:
    """``a − b`` paired: mean difference, 95% percentile interval, P(a > b), Wilcoxon p over seeds."""

    a: str
    b: str
    diff: float
    lo: float
    hi: float
    p_a_beats_b: float
    wilcoxon_p: float | None
    n_seeds: int
    n_test: int

    @property
    def detectable(self) -> str:
        """'higher', 'lower' or 'none': whether the 95% interval excludes 0."""
        return "higher" if self.lo > 0 else "lower" if self.hi < 0 else "none"


def compare(res: BootResult, a: str, b: str) -> Comparison:
    ia, ib = res.names.index(a), res.names.index(b)
    d = res.boot[ia] - res.boot[ib]
    per = res.per_seed[ia] - res.per_seed[ib]
    p = None
    if len(per) >= 2 and np.any(per != 0):
        p = float(wilcoxon(per).pvalue)
    lo, hi = np.nanpercentile(d, [2.5, 97.5])
    return Comparison(a, b, float(res.point[ia] - res.point[ib]), float(lo), float(hi),
                      float(np.mean(d > 0) + 0.5 * np.mean(d == 0)), p, len(per), res.n_test)


def interval(res: BootResult, name: str) -> tuple[float, float]:
    """95% percentile interval of one candidate's mean AUC."""
    lo, hi = np.nanpercentile(res.boot[res.names.index(name)], [2.5, 97.5])
    return float(lo), float(hi)
