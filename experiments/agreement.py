"""How our measured source rankings agree with a published matrix (Spearman per target).

Only datasets both matrices contain can be compared: a target counts when it maps to
a reference target, and its sources are those that map to reference sources (the
target itself excluded). With few shared sources per target the per-target rho is
weak evidence, so a pooled rho over all shared pairs (AUC centred per target) is
reported too, each with its scipy p-value.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["JUODELYTE_NAMES", "juodelyte_matrix", "rank_agreement"]

# our shared-data stem -> the MedMNIST name used in juodelyte2024 (SOURCES.md "stands for")
JUODELYTE_NAMES = {
    "pneumoniamnist": "pneumoniamnist", "breastmnist": "breastmnist", "retinamnist": "retinamnist",
    "ham10000_derm": "dermamnist", "pbc_blood": "bloodmnist",
}


def juodelyte_matrix(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """sources x targets AUC from ``aucs_dataset.csv`` (default: ../shared/data/kb/juodelyte2024)."""
    if path is None:
        from experiments.data import default_data_dir

        path = default_data_dir() / "kb" / "juodelyte2024" / "aucs_dataset.csv"
    df = pd.read_csv(Path(path), index_col=0)
    return df.set_index("source").astype(float)


def spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Spearman ρ and its two-sided p, exact (every permutation) below 10 pairs.

    scipy's t approximation gives p ≈ 0 for a perfect ρ over 4 sources; the exact p is 1/12.
    """
    rho = float(stats.spearmanr(a, b)[0])
    if len(a) < 10:
        res = stats.pearsonr(stats.rankdata(a), stats.rankdata(b),
                             method=stats.PermutationMethod(n_resamples=np.inf))
        return rho, float(res.pvalue)
    return rho, float(stats.spearmanr(a, b)[1])


def rank_agreement(ours: pd.DataFrame, reference: pd.DataFrame,
                   names: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-target Spearman rho (n sources, p) and a pooled rho over target-centred pairs.

    ``ours``/``reference``: sources x targets mean AUC. ``names`` maps our names to the
    reference's (default :data:`JUODELYTE_NAMES`); unmapped sources (e.g. scratch) are left out.
    """
    names = names or JUODELYTE_NAMES
    rows, pooled_a, pooled_b = [], [], []
    for t, rt in names.items():
        if t not in ours.columns or rt not in reference.columns:
            continue
        pairs = [(s, names[s]) for s in ours.index if s in names and s != t and names[s] in reference.index]
        a = np.array([ours.loc[s, t] for s, _ in pairs], dtype=float)
        b = np.array([reference.loc[rs, rt] for _, rs in pairs], dtype=float)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        n = len(a)
        rho, p = spearman(a, b) if n >= 3 else (np.nan, np.nan)
        rows.append({"target": t, "reference_target": rt, "n_sources": n, "spearman_rho": float(rho),
                     "p_value": float(p), "sources": ",".join(s for (s, _), k in zip(pairs, ok, strict=True) if k),
                     "best_ours": pairs[int(np.argmax(a))][0] if n else "",
                     "best_reference": [s for (s, _), k in zip(pairs, ok, strict=True) if k][int(np.argmax(b))] if n else ""})
        if n >= 2:
            pooled_a += list(a - a.mean())
            pooled_b += list(b - b.mean())
    table = pd.DataFrame(rows)
    pooled = {"n_pairs": len(pooled_a), "n_targets": int((table["n_sources"] >= 2).sum()) if len(table) else 0}
    if len(pooled_a) >= 3:
        r, p = spearman(np.asarray(pooled_a), np.asarray(pooled_b))
        pooled.update({"spearman_rho": float(r), "p_value": float(p)})
    return table, pooled
