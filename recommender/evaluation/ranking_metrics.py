"""Per-target ranking metrics and bootstrap intervals over targets.

Every method (meta-model, baselines, an external score table) is judged by the
same function on the same (score, truth) vectors, so the numbers in a report are
comparable. Conventions follow ../shared/docs/anchors.md §4: weighted Kendall τ is
``scipy.stats.weightedtau(score, truth)`` with scipy's defaults (the figure LogME,
SFDA and Juodelyte 2024 report), regret is best AUC minus the AUC of the top pick.

Three rules keep the figures honest. A candidate a method did not score (NaN: e.g. a
similarity for a source without a profile) is left out of that method's metrics for that
target and counted (``n_unscored``), rather than ranked last, which would punish the method
for what it was never asked. NDCG@3 uses a within-target rank gain (see :func:`rank_gain`),
because raw AUCs of 0.90–0.99 as gains give a random ranking ≈ 0.97. A mean over targets
says how many targets had a finite value (``<metric>_n`` of ``n_targets``), and carries a
bootstrap interval only from :data:`MIN_CI_TARGETS` targets on.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata, spearmanr, weightedtau
from sklearn.metrics import ndcg_score

METRICS = ["tau_w", "kendall", "spearman", "top1", "top3", "regret", "ndcg3"]
RANDOM_MC_DRAWS = 2000
MIN_CI_TARGETS = 5
"""Below this many targets no bootstrap interval is given (3 resamples of 1.0 give [1, 1])."""
NO_CI = "n too small for an interval"


def _clean(score: pd.Series | np.ndarray, truth: pd.Series | np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, truths, n_unscored) over candidates with a finite truth AND a finite score."""
    s = np.asarray(score, dtype=float)
    g = np.asarray(truth, dtype=float)
    if s.shape != g.shape:
        raise ValueError("score and truth differ in length")
    ok = np.isfinite(g)
    s, g = s[ok], g[ok]
    # A missing score means "no opinion": the candidate gets no rank in this method's metrics.
    scored = ~np.isnan(s)
    return s[scored], g[scored], int((~scored).sum())


def rank_gain(truth: np.ndarray) -> np.ndarray:
    """NDCG gain within one target: (rank − 1)/(n − 1) with rank 1 = lowest AUC (ties averaged).

    The worst candidate gains 0 and the best 1, linearly in rank, whatever the AUC scale:
    a random ranking's expected NDCG@3 is then ≈ 0.5 (vs 1 for a perfect one), where raw
    AUC gains of 0.90–0.99 made every ranking look ≈ 0.97.
    """
    g = np.asarray(truth, dtype=float)
    if len(g) < 2:
        return np.zeros(len(g))
    return (rankdata(g, method="average") - 1.0) / (len(g) - 1.0)


def rank_metrics(score: pd.Series | np.ndarray, truth: pd.Series | np.ndarray) -> dict[str, float]:
    """All metrics for one target: ``score`` ranks candidates (higher = better), ``truth`` is AUC.

    top3 is a hit when the truly best candidate is among the three highest scores (SFDA's
    recall@3); best, top-1, top-3 and regret are over the scored candidates. NaN truths are
    dropped; NaN scores are left out and counted in ``n_unscored``. Needs ≥ 2 scored candidates.
    """
    s, g, n_unscored = _clean(score, truth)
    n = len(g)
    counts = {"n_sources": float(n), "n_unscored": float(n_unscored)}
    if n < 2:
        return {m: math.nan for m in METRICS} | counts
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
        "ndcg3": float(ndcg_score(rank_gain(g)[None, :], s[None, :], k=3)),
    } | counts


def random_expected_metrics(truth: pd.Series | np.ndarray, seed: int = 0,
                            draws: int = RANDOM_MC_DRAWS) -> dict[str, float]:
    """Expected metrics of a uniformly random ranking of one target's candidates.

    Exact where a closed form exists: Kendall τ and Spearman ρ are 0 by symmetry (reversing a
    permutation negates them), top-1 = (#best)/n, top-3 = P(a best one lands in 3 draws),
    regret = best − mean AUC, NDCG@3 by linearity of expectation (E[gain at each rank] = mean
    rank gain).
    τw has no simple closed form (its weights depend on both rankings), so it is the mean over
    ``draws`` seeded random permutations.
    """
    _, g, _ = _clean(np.zeros(len(np.asarray(truth))), truth)
    n = len(g)
    if n < 2:
        return {m: math.nan for m in METRICS} | {"n_sources": float(n), "n_unscored": 0.0}
    best = g.max()
    n_best = int(np.sum(g >= best))
    k = min(3, n)
    p_miss3 = math.comb(n - n_best, k) / math.comb(n, k)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    gain = rank_gain(g)
    ideal = np.sort(gain)[::-1][:k] @ disc
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
        "ndcg3": float(gain.mean() * disc.sum() / ideal) if ideal > 0 else math.nan,
        "n_sources": float(n),
        "n_unscored": 0.0,
    }


@functools.lru_cache(maxsize=256)
def _mc_tau_w(truth: tuple[float, ...] | int, seed: int, draws: int) -> float:
    g = np.arange(truth, dtype=float) if isinstance(truth, int) else np.asarray(truth, dtype=float)
    rng = np.random.default_rng(seed)
    return float(np.mean([weightedtau(rng.permutation(len(g)).astype(float), g)[0] for _ in range(draws)]))


def bootstrap_ci(values: np.ndarray | pd.Series, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95, min_n: int = MIN_CI_TARGETS) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over targets (seeded; NaNs ignored).

    (NaN, NaN) below ``min_n`` finite values: resampling 3 targets gives an "interval" that
    says nothing about the next target (three 1.0s give [1.000, 1.000])."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < max(min_n, 1):
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def format_ci(mean: float, lo: float, hi: float, fmt: str = "{:.3f}") -> str:
    """'0.556 [0.418, 0.677]', or '1.000 (n too small for an interval)' when no CI was given."""
    if mean is None or not np.isfinite(mean):
        return "—"
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{fmt.format(mean)} ({NO_CI})"
    return f"{fmt.format(mean)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def summarise(per_target: pd.DataFrame, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Mean and bootstrap 95% CI of each metric per method.

    ``per_target`` has columns ``method, target`` + METRICS. Returns one row per method with
    ``n_targets`` and ``<metric>``, ``<metric>_lo``, ``<metric>_hi``, ``<metric>_n`` (targets
    with a finite value: a NaN τw, e.g. constant scores, is left out of the mean and counted
    here, never dropped silently), and ``n_unscored`` (candidates the method gave no score,
    summed over targets); methods keep input order.
    """
    rows = []
    for method, grp in per_target.groupby("method", sort=False):
        row: dict[str, object] = {"method": method, "n_targets": int(grp["target"].nunique())}
        for m in METRICS:
            v = grp[m].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            row[m] = float(v.mean()) if len(v) else math.nan
            row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_ci(v, n_boot=n_boot, seed=seed)
            row[f"{m}_n"] = int(len(v))
        row["top1_count"] = int(np.nansum(grp["top1"].to_numpy(dtype=float)))
        row["n_unscored"] = (int(np.nansum(grp["n_unscored"].to_numpy(dtype=float)))
                             if "n_unscored" in grp else 0)
        rows.append(row)
    return pd.DataFrame(rows)


def n_used(row: pd.Series | dict, metric: str = "tau_w") -> str:
    """'11' when every target has a finite value, else 'n used/n total' (e.g. '9/11')."""
    n, tot = int(row.get(f"{metric}_n", row["n_targets"])), int(row["n_targets"])
    return str(tot) if n == tot else f"{n}/{tot}"


def comparability_notes(summary: pd.DataFrame, per_target: pd.DataFrame | None = None) -> list[str]:
    """Sentences for a report: methods evaluated on fewer targets than others, NaN τw left out
    of means, and candidates a method did not score. Methods on different target sets (or
    candidate sets) must not be compared as if they were on the same ones."""
    notes: list[str] = []
    if summary.empty:
        return notes
    full = int(summary["n_targets"].max())
    fewer = summary[summary["n_targets"] < full]
    if len(fewer):
        listed = ", ".join(f"{m} ({n})" for m, n in zip(fewer["method"], fewer["n_targets"], strict=True))
        notes.append(f"not every method was evaluated on all {full} targets: {listed}; their means are "
                     "over those targets only and are not comparable with the others' as they stand.")
    if "tau_w_n" in summary:
        nan_tau = summary[summary["tau_w_n"] < summary["n_targets"]]
        if len(nan_tau):
            listed = ", ".join(f"{m} {u}/{n}" for m, u, n in
                               zip(nan_tau["method"], nan_tau["tau_w_n"], nan_tau["n_targets"], strict=True))
            notes.append(f"τw undefined (constant scores) on some targets, left out of the mean "
                         f"(n used/n total): {listed}.")
    if "n_unscored" in summary and per_target is not None and "n_unscored" in per_target:
        un = summary[summary["n_unscored"] > 0]
        if len(un):
            tot = per_target.assign(_t=per_target["n_sources"] + per_target["n_unscored"])
            cand = tot.groupby("method")["_t"].sum()
            listed = ", ".join(f"{m} {int(u)} of {int(cand.get(m, 0))}" for m, u in
                               zip(un["method"], un["n_unscored"], strict=True))
            notes.append(f"candidates without a score were left out of that method's metrics "
                         f"(unscored of all candidate cells): {listed}.")
    return notes


def evaluate_scores(scores: pd.DataFrame, truth: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per-target metrics of a sources × targets score table against a sources × targets truth.

    Only targets present in both, and within each only sources with both a truth and a score
    (the LogME check in kb/README.md ranks 'over the sources present for that target').
    """
    rows = []
    for t in [c for c in truth.columns if c in scores.columns]:
        g = truth[t].dropna()
        s = scores[t].reindex(g.index)
        if s.notna().sum() < 2:
            continue
        rows.append({"method": method, "target": t} | rank_metrics(s, g))
    return pd.DataFrame(rows, columns=["method", "target", *METRICS, "n_sources", "n_unscored"])
