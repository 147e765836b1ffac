"""The correlation report: does any single similarity or meta-feature track transfer?

Pooled over every measured (source, target) pair of a KB, each pair feature (study
similarities, expert distance, transferability estimates, card comparisons, |src − tgt|
meta-feature differences) is correlated with the transfer outcome: the AUC, and — where
the KB has per-fold ``transfer_score`` records (cats-scans) — the AUC gain, the mean
score over folds. With these definitions the cats-scans study's own figures come out
(Task2Vec r = −0.11, p = 0.61; expert r = +0.24, p = 0.26; 24 pairs).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, pearsonr, spearmanr

from experiments.knowledge_base import KnowledgeBase
from recommender.model import MetaDataset, build_meta_dataset

GAIN_METRIC = "transfer_score"
COLUMNS = ["feature", "kind", "outcome", "n", "pearson_r", "pearson_p", "pearson_lo", "pearson_hi",
           "spearman_rho", "spearman_p", "kendall_tau", "kendall_p"]


def gain_table(kb: KnowledgeBase) -> pd.Series | None:
    """AUC gain per (source, target): mean of the per-fold transfer_score records, or None."""
    r = kb.records
    r = r[r["metric"] == GAIN_METRIC]
    if r.empty:
        return None
    return r.groupby(["source", "target"])["value"].mean().rename("gain")


def correlate(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Pearson (with Fisher-z 95% CI), Spearman and Kendall τ-b with p-values over finite pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(len(x))
    nan = dict.fromkeys(COLUMNS[4:], math.nan)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": n} | nan
    pr = pearsonr(x, y)
    if n > 3:
        ci = pr.confidence_interval(0.95)  # Fisher z transform
        lo, hi = float(ci.low), float(ci.high)
    else:
        lo = hi = math.nan
    sr, kt = spearmanr(x, y), kendalltau(x, y)
    return {"n": n, "pearson_r": float(pr.statistic), "pearson_p": float(pr.pvalue),
            "pearson_lo": lo, "pearson_hi": hi,
            "spearman_rho": float(sr.statistic), "spearman_p": float(sr.pvalue),
            "kendall_tau": float(kt.statistic), "kendall_p": float(kt.pvalue)}


def _feature_kind(col: str, md: MetaDataset) -> str:
    name = col.removeprefix("pair_")
    if name in md.pair_kinds:
        return md.pair_kinds[name] or "pair"
    if name.startswith("absdiff_"):
        return "meta-feature difference"
    return "card"


def correlation_report(kb: KnowledgeBase, md: MetaDataset | None = None) -> pd.DataFrame:
    """One row per (pair feature, outcome) with Pearson/Spearman/Kendall, p-values and n."""
    md = md or build_meta_dataset(kb)
    rows = md.rows
    outcomes = {"auc": rows["auc"].to_numpy(dtype=float)}
    gain = gain_table(kb)
    if gain is not None:
        idx = pd.MultiIndex.from_arrays([rows["source"], rows["target"]])
        outcomes["gain"] = gain.reindex(idx).to_numpy(dtype=float)
    study = [f"pair_{f}" for f in md.pair_features]
    others = [c for c in rows.columns if c.startswith("pair_") and c not in study]
    out = []
    for col in [*study, *others]:
        x = rows[col].to_numpy(dtype=float)
        if np.isfinite(x).sum() < 3:
            continue
        for outcome, y in outcomes.items():
            res = correlate(x, y)
            if res["n"] < 3:
                continue
            out.append({"feature": col.removeprefix("pair_"), "kind": _feature_kind(col, md),
                        "outcome": outcome} | res)
    return pd.DataFrame(out, columns=COLUMNS)
