"""The noise ceiling of a KB: how well its own measured rankings agree with themselves.

From the per-seed (or per-fold) records of every cell: for each target, split the
replicates at random into two halves, rank the sources by their mean AUC in each half,
and take the weighted Kendall τ between the two rankings; average over many random
splits and correct the half-length figure to the full length with Spearman–Brown
(r_full = 2r / (1 + r)). That is the τw two independent full measurements of the KB
would reach — the best a method scored against one of them can expect. A KB without
replicate records has no ceiling; a KB whose per-run records are hyper-parameter
settings (juodelyte2024's grid) has none either, and says so.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import weightedtau

N_SPLITS = 200
MIN_SOURCES = 3


def replicate_records(kb) -> pd.DataFrame:  # noqa: ANN001 - KnowledgeBase
    """Records of the KB's metric that are one replicate each (seed ≥ 0 or fold ≥ 0)."""
    r = kb.records
    r = r[r["metric"] == kb.metric]
    seed = pd.to_numeric(r.get("seed", pd.Series(-1, index=r.index)), errors="coerce").fillna(-1)
    fold = pd.to_numeric(r.get("fold", pd.Series(-1, index=r.index)), errors="coerce").fillna(-1)
    keep = (seed >= 0) | (fold >= 0)
    out = r[keep].copy()
    out["replicate"] = seed[keep].astype(int).astype(str) + "/" + fold[keep].astype(int).astype(str)
    return out


def split_half_tau(cells: pd.DataFrame, n_splits: int = N_SPLITS, seed: int = 0) -> dict:
    """Mean split-half τw of one target's ranking (``source, replicate, value``) and its correction."""
    wide = cells.pivot_table(index="source", columns="replicate", values="value", aggfunc="mean")
    reps = list(wide.columns)
    if len(reps) < 2 or len(wide) < MIN_SOURCES:
        return {"n_replicates": len(reps), "n_sources": int(len(wide)), "half_tau_w": math.nan,
                "tau_w": math.nan}
    rng = np.random.default_rng(seed)
    vals = wide.to_numpy(dtype=float)
    taus = []
    for _ in range(n_splits):
        perm = rng.permutation(len(reps))
        a, b = perm[: len(reps) // 2], perm[len(reps) // 2:]
        ma, mb = np.nanmean(vals[:, a], axis=1), np.nanmean(vals[:, b], axis=1)
        ok = np.isfinite(ma) & np.isfinite(mb)
        if ok.sum() >= MIN_SOURCES and np.ptp(ma[ok]) > 0 and np.ptp(mb[ok]) > 0:
            taus.append(weightedtau(ma[ok], mb[ok])[0])
    r = float(np.mean(taus)) if taus else math.nan
    full = 2 * r / (1 + r) if math.isfinite(r) and r > -1 else math.nan
    return {"n_replicates": len(reps), "n_sources": int(len(wide)), "half_tau_w": r, "tau_w": full}


def noise_ceiling(kb, n_splits: int = N_SPLITS, seed: int = 0) -> dict:  # noqa: ANN001
    """The KB's noise ceiling (mean over targets), per-target values and a sentence saying what it is."""
    rec = replicate_records(kb)
    out: dict = {"status": "none", "ceiling": math.nan, "n_targets": 0, "per_target": []}
    if rec.empty:
        run = kb.manifest.get("run_metric")
        if run and (kb.records["metric"] == run).any():
            out["status"] = "hyperparameter_runs"
            out["note"] = kb.manifest.get("run_metric_note", "")
            out["text"] = (f"per-run records ({run}) are hyper-parameter settings, not seeds: no noise "
                           "ceiling (their spread is hyper-parameter sensitivity, not measurement noise)")
        else:
            out["text"] = "no per-seed records: ceiling unknown"
        return out
    rows = []
    for i, (t, g) in enumerate(rec.groupby("target", sort=True)):
        rows.append({"target": t} | split_half_tau(g, n_splits=n_splits, seed=seed + i))
    per = pd.DataFrame(rows)
    ok = per[np.isfinite(per["tau_w"])]
    out["per_target"] = per.to_dict(orient="records")
    if ok.empty:
        out["text"] = "per-seed records too few per cell (need ≥ 2 replicates and ≥ 3 sources): ceiling unknown"
        return out
    n_rep = f"{int(ok['n_replicates'].min())}–{int(ok['n_replicates'].max())}"
    if ok["n_replicates"].min() == ok["n_replicates"].max():
        n_rep = str(int(ok["n_replicates"].min()))
    kind = "seeds" if (pd.to_numeric(rec["seed"], errors="coerce") >= 0).any() else "folds"
    out.update({"status": "ok", "ceiling": float(ok["tau_w"].mean()), "n_targets": int(len(ok)),
                "replicates": n_rep, "replicate_kind": kind,
                "text": (f"noise ceiling ≈ {ok['tau_w'].mean():.2f} on this KB, {len(ok)} targets "
                         f"(split-half τw over {n_rep} {kind} per cell, Spearman–Brown corrected, "
                         f"{n_splits} random splits)")})
    return out
