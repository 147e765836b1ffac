"""Per-target ranking metrics and bootstrap intervals over targets.

Every method (meta-model, baselines, an external score table) is judged by the
same function on the same (score, truth) vectors, so the numbers in a report are
comparable. Conventions follow ../shared/docs/anchors.md §4: weighted Kendall τ is
``scipy.stats.weightedtau(score, truth)`` with scipy's defaults (the figure LogME,
SFDA and Juodelyte 2024 report), regret is best AUC minus the AUC of the top pick.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr, weightedtau
from sklearn.metrics import ndcg_score

METRICS = ["tau_w", "kendall", "spearman", "top1", "top3", "regret", "ndcg3"]
RANDOM_MC_DRAWS = 2000


def _clean(score: pd.Series | np.ndarray, truth: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=float)
    g = np.asarray(truth, dtype=float)
    if s.shape != g.shape:
        raise ValueError("score and truth differ in length")
    ok = np.isfinite(g)
    s, g = s[ok], g[ok]
    # A missing score means "no opinion": rank it below every scored candidate.
    if np.isnan(s).any():
        low = np.nanmin(s) if np.isfinite(s).any() else 0.0
        s = np.where(np.isnan(s), low - 1.0, s)
    return s, g


def rank_metrics(score: pd.Series | np.ndarray, truth: pd.Series | np.ndarray) -> dict[str, float]:
    """All metrics for one target: ``score`` ranks candidates (higher = better), ``truth`` is AUC.

    top3 is a hit when the truly best candidate is among the three highest scores (SFDA's
    recall@3). NaN truths are dropped; NaN scores rank last. Needs ≥ 2 candidates.
    """
    s, g = _clean(score, truth)
    n = len(g)
    if n < 2:
        return {m: math.nan for m in METRICS} | {"n_sources": float(n)}
    best = g.max()
    order = np.argsort(-s, kind="stable")
    top = order[0]
    const_s = np.ptp(s) == 0
    return {
        "tau_w": float(weightedtau(s, g)[0]) if not const_s else math.nan,
        "kendall": float(kendalltau(s, g)[0]) if not const_s else math.nan,
        "spearman": float(spearmanr(s, g)[0]) if not const_s else math.nan,
        "top1": float(g[top] >= best),
        "top3": float(np.any(g[order[:3]] >= best)),
        "regret": float(best - g[top]),
        "ndcg3": float(ndcg_score(g[None, :], s[None, :], k=3)),
        "n_sources": float(n),
    }


def random_expected_metrics(truth: pd.Series | np.ndarray, seed: int = 0,
                            draws: int = RANDOM_MC_DRAWS) -> dict[str, float]:
    """Expected metrics of a uniformly random ranking of one target's candidates.

    Exact where a closed form exists: Kendall τ and Spearman ρ are 0 by symmetry (reversing a
    permutation negates them), top-1 = (#best)/n, top-3 = P(a best one lands in 3 draws),
    regret = best − mean AUC, NDCG@3 by linearity of expectation (E[gain at each rank] = mean).
    τw has no simple closed form (its weights depend on both rankings), so it is the mean over
    ``draws`` seeded random permutations.
    """
    _, g = _clean(np.zeros(len(np.asarray(truth))), truth)
    n = len(g)
    if n < 2:
        return {m: math.nan for m in METRICS} | {"n_sources": float(n)}
    best = g.max()
    n_best = int(np.sum(g >= best))
    k = min(3, n)
    p_miss3 = math.comb(n - n_best, k) / math.comb(n, k)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.sort(g)[::-1][:k] @ disc
    # With untied truths the expectation depends on n only (relabelling both rankings leaves
    # τw unchanged), so it is computed once per n; tied truths are drawn against as they are.
    tied = len(np.unique(g)) < n
    tau = _mc_tau_w(tuple(g) if tied else n, seed, draws)
    return {
        "tau_w": tau,
        "kendall": 0.0,
        "spearman": 0.0,
        "top1": n_best / n,
        "top3": 1.0 - p_miss3,
        "regret": float(best - g.mean()),
        "ndcg3": float(g.mean() * disc.sum() / ideal) if ideal > 0 else math.nan,
        "n_sources": float(n),
    }


@functools.lru_cache(maxsize=256)
def _mc_tau_w(truth: tuple[float, ...] | int, seed: int, draws: int) -> float:
    g = np.arange(truth, dtype=float) if isinstance(truth, int) else np.asarray(truth, dtype=float)
    rng = np.random.default_rng(seed)
    return float(np.mean([weightedtau(rng.permutation(len(g)).astype(float), g)[0] for _ in range(draws)]))


def bootstrap_ci(values: np.ndarray | pd.Series, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over targets (seeded; NaN-free input)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def summarise(per_target: pd.DataFrame, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Mean and bootstrap 95% CI of each metric per method.

    ``per_target`` has columns ``method, target`` + METRICS. Returns one row per method with
    ``n_targets`` and ``<metric>``, ``<metric>_lo``, ``<metric>_hi``; methods keep input order.
    """
    rows = []
    for method, grp in per_target.groupby("method", sort=False):
        row: dict[str, object] = {"method": method, "n_targets": int(grp["target"].nunique())}
        for m in METRICS:
            v = grp[m].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            row[m] = float(v.mean()) if len(v) else math.nan
            row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_ci(v, n_boot=n_boot, seed=seed)
        row["top1_count"] = int(np.nansum(grp["top1"].to_numpy(dtype=float)))
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_scores(scores: pd.DataFrame, truth: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per-target metrics of a sources × targets score table against a sources × targets truth.

    Only targets present in both, and within each only sources with both a truth and a score
    (the LogME check in kb/README.md ranks 'over the sources present for that target').
    """
    rows = []
    for t in [c for c in truth.columns if c in scores.columns]:
        g = truth[t].dropna()
        s = scores[t].reindex(g.index)
        ok = s.notna()
        if ok.sum() < 2:
            continue
        rows.append({"method": method, "target": t} | rank_metrics(s[ok], g[ok]))
    return pd.DataFrame(rows, columns=["method", "target", *METRICS, "n_sources"])
