"""The three-outcome verdict of `recommend`, replayed on held-out targets against the measured truth.

Per held-out target, the shipped procedure's predicted gain intervals over scratch give one call:
*helps* (the best source's interval lies above 0), *hurts* (every source's interval lies below
0) or *cannot tell*. The truth is :func:`recommender.evaluation.scratch_sign.scratch_truth`'s
paired call (helps / no detectable difference / hurts). The base-rate rule ("always helps")
is right on the share of targets where pretraining helps detectably; a verdict earns its place
when its *helps* calls are right more often than that, and says "cannot tell" otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommender.evaluation.scratch_sign import wilson
from recommender.model.scoring import REFERENCE

CALLS = ("helps", "hurts", "cannot tell")


def target_calls(intervals: pd.DataFrame) -> pd.DataFrame:
    """scenario, target, call from held-out gain intervals (targets without one are left out)."""
    if "gain_lo" not in intervals:
        return pd.DataFrame(columns=["scenario", "target", "call"])
    c = intervals[intervals["source"].astype(str) != REFERENCE]
    c = c[np.isfinite(c["gain_lo"].to_numpy(dtype=float))]
    g = c.groupby(["scenario", "target"], sort=False).agg(best_lo=("gain_lo", "max"), max_hi=("gain_hi", "max"))
    call = np.where(g["best_lo"] > 0, "helps", np.where(g["max_hi"] < 0, "hurts", "cannot tell"))
    return g.assign(call=call).reset_index()[["scenario", "target", "call"]]


def evaluate(intervals: pd.DataFrame, truth: pd.DataFrame) -> list[dict]:
    """Per scenario: how many targets got each call, how often a *helps* call was detectably right
    (k/n, Wilson 95% CI), and the base rate it is compared with."""
    calls = target_calls(intervals)
    if calls.empty or truth is None or truth.empty:
        return []
    tr = truth.set_index("target")["truth"]
    n_all = int(len(tr))
    k_base = int((tr == "helps").sum())
    out = []
    for scen, g in calls.groupby("scenario", sort=False):
        g = g[g["target"].isin(tr.index)]
        t = tr.loc[g["target"]].to_numpy()
        helps = (g["call"] == "helps").to_numpy()
        hurts = (g["call"] == "hurts").to_numpy()
        k, n = int((helps & (t == "helps")).sum()), int(helps.sum())
        lo, hi = wilson(k, n) if n else (np.nan, np.nan)
        blo, bhi = wilson(k_base, n_all)
        out.append({"scenario": str(scen), "n_targets": int(len(g)),
                    "n_helps": n, "helps_right": k, "helps_right_lo": lo, "helps_right_hi": hi,
                    "n_hurts": int(hurts.sum()), "hurts_right": int((hurts & (t == "hurts")).sum()),
                    "n_cannot_tell": int((g["call"] == "cannot tell").sum()),
                    "base_rate_k": k_base, "base_rate_n": n_all, "base_rate_lo": blo, "base_rate_hi": bhi})
    return out


def evidence(rows: list[dict], scr, gain_sign: list[dict] | None = None) -> dict | None:  # noqa: ANN001
    """What a saved model keeps for `recommend`'s verdict: the KB's base rate (targets where
    pretraining helped detectably, of all with scratch), each scenario's held-out calls and, per
    scenario, how often the predicted gain had the measured gain's sign on held-out cells
    (:mod:`recommender.evaluation.gain_sign`). ``scr``: scratch_sign.ScratchEval | None."""
    if scr is None or scr.truth.empty:
        return None
    b = scr.breakdown()

    def clean(r: dict) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}

    return {"base_rate": {"helps": b["helps"], "n": int(len(scr.truth)),
                          "no_detectable_difference": b["no detectable difference"], "hurts": b["hurts"]},
            "verdict_calls": [clean(r) for r in rows],
            "gain_sign": [{"scenario": g["scenario"], "n_cells": g["n_cells"], "model_k": g["model_k"],
                           "base_rate_k": g["base_rate_k"], "words": g["vs_base_rate"]["words"],
                           "n_units": g["vs_base_rate"]["n"], "unit": g["vs_base_rate"]["unit"]}
                          for g in gain_sign or []]}


def table(rows: list[dict]) -> pd.DataFrame:
    """80-column view: scenario, helps calls right k/n [CI], hurts calls, cannot tell, base rate."""
    out = []
    for r in rows:
        right = (f"{r['helps_right']}/{r['n_helps']} [{r['helps_right_lo']:.2f}, {r['helps_right_hi']:.2f}]"
                 if r["n_helps"] else "0 calls")
        out.append({"scenario": r["scenario"], "'helps' right": right,
                    "'hurts' right": f"{r['hurts_right']}/{r['n_hurts']}",
                    "cannot tell": str(r["n_cannot_tell"]),
                    "base rate": f"{r['base_rate_k']}/{r['base_rate_n']} [{r['base_rate_lo']:.2f}, "
                                 f"{r['base_rate_hi']:.2f}]"})
    return pd.DataFrame(out)


CAPTION = ("verdict per held-out target from the shipped procedure's 80% gain intervals: 'helps' = the "
           "best source's interval above 0, 'hurts' = every interval below 0, else 'cannot tell' (run "
           "verify); right = the truth (paired over seeds) agrees; base rate = targets where pretraining "
           "helps detectably, what an always-'helps' rule gets right; Wilson 95% CIs")
