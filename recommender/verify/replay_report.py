"""Verify in ``evaluate-meta``: successive halving replayed from a KB's per-seed records.

Each per-seed record of a (source, target) is one full fine-tune, so verify's schedule is
replayed without training (:func:`recommender.verify.replay.replay_kb`): verify sees only the
first ``k`` seeds, the truth is the mean over ``k`` other seeds, and every row here — static,
each estimator, the LOTO ``shipped`` rows, verify at each budget — is regret against that same
truth. Verify's shortlist is the top ``top`` sources of the shipped method (``shipped+est``
where the KB has estimates: what ``catscans verify`` measures after ``recommend`` on a
labelled folder) plus scratch. Compute = fine-tunes run / (shortlist × verify seeds), so 100%
fine-tunes the whole shortlist on every verify seed.

The best estimator and the best non-probing method are picked on these same figures (post
hoc, which favours them); verify@25% is compared with the best non-probing method paired
over groups (:func:`recommender.evaluation.paired.paired_comparison`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from experiments.knowledge_base import KnowledgeBase
from recommender.evaluation.paired import paired_comparison, sentence
from recommender.evaluation.records import json_records as rec
from recommender.verify.replay import replay_kb

BUDGETS = (0.25, 0.5, 1.0)
K_SEEDS = 5
TOP = 4
GOAL_COMPUTE = 0.25
MIN_GOAL_TARGETS = 6
NON_PROBING = ("static", "shipped", "shipped+est")


@dataclass
class VerifyEval:
    """Replayed regret of verify and the non-probing methods, against held-out truth seeds."""

    summary: pd.DataFrame  # row, method, kind, compute, n_targets, n_groups, mean_regret, lo, hi
    per_target: pd.DataFrame  # target, group, <method> regret...
    comparison: dict  # verify@GOAL vs best non-probing, paired
    goal: dict
    verify_seeds: list[int]
    truth_seeds: list[int]
    shortlist: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"summary": rec(self.summary), "per_target": rec(self.per_target),
                "comparison": self.comparison, "goal": self.goal, "verify_seeds": self.verify_seeds,
                "truth_seeds": self.truth_seeds, "shortlist": self.shortlist, "notes": self.notes}


def seeds_of(kb: KnowledgeBase) -> list[int]:
    """The seeds every (source, target) record set of the KB's metric shares, sorted."""
    r = kb.records
    if r is None or not len(r) or "seed" not in r.columns:
        return []
    r = r[r["metric"] == kb.metric].dropna(subset=["seed"])
    return sorted(int(s) for s in r["seed"].unique())


def _extra_scores(predictions: pd.DataFrame, methods: tuple[str, ...]) -> dict[str, dict[str, pd.Series]]:
    out: dict[str, dict[str, pd.Series]] = {}
    for (m, t), g in predictions[predictions["method"].isin(methods)].groupby(["method", "target"]):
        out.setdefault(str(t), {})[str(m)] = pd.Series(g["score"].to_numpy(float), index=g["source"].to_numpy())
    return out


def _label(method: str) -> str:
    if method.startswith("verify["):
        f = float(method.rsplit("@", 1)[1])
        return f"verify@{f:.0%}"
    return method


def evaluate(kb: KnowledgeBase, predictions: pd.DataFrame, budgets: tuple[float, ...] = BUDGETS,
             k: int = K_SEEDS, top: int = TOP, seed: int = 0) -> VerifyEval | str:
    """The verify rows, or a one-line reason why this KB has none."""
    seeds = seeds_of(kb)
    if len(seeds) < 2 * k:
        return (f"{kb.name}: verify is replayed from per-seed records with {k} verify seeds and {k} "
                f"other truth seeds; this KB has {len(seeds)} seed(s) per cell, so no verify rows")
    verify_seeds, truth_seeds = seeds[:k], seeds[k:2 * k]
    have = set(predictions["method"])
    ship = [m for m in NON_PROBING[1:] if m in have]
    shortlist = "shipped+est" if "shipped+est" in have else ("shipped" if "shipped" in have else "static")
    res = replay_kb(kb, sorted(budgets), verify_seeds, truth_seeds, top, (shortlist,),
                    extra_scores=_extra_scores(predictions, tuple(ship)))
    df, s = res["per_target"], res["summary"].copy()
    if df.empty:
        return f"{kb.name}: no target has every source on all {2 * k} seeds, so no verify rows"
    est = [m for m in s["method"] if m.startswith("estimate:")]
    best_est = min(est, key=lambda m: float(s.loc[s["method"] == m, "mean_regret"].iloc[0])) if est else None
    candidates = [m for m in s["method"] if not m.startswith("verify") and df[m].notna().all()]
    best_np = min(candidates, key=lambda m: float(df[m].mean()))
    keep = [m for m in ("static", best_est, *ship) if m] + sorted(
        (m for m in s["method"] if m.startswith("verify")), key=lambda m: float(m.rsplit("@", 1)[1]))
    s = s[s["method"].isin(keep)].copy()
    s["kind"] = ["verify" if m.startswith("verify") else "best est. (post hoc)" if m == best_est
                 else "no fine-tuning" for m in s["method"]]
    s["row"] = [_label(m) for m in s["method"]]
    order = {m: i for i, m in enumerate(keep)}
    s = s.sort_values("method", key=lambda c: c.map(order)).reset_index(drop=True)
    s = s[["row", "method", "kind", "compute", "n_targets", "n_groups", "mean_regret", "lo", "hi"]]
    groups = dict(zip(df["target"], df["group"], strict=True))
    goal_cols = [m for m in s["method"] if m.startswith("verify") and
                 float(s.loc[s["method"] == m, "compute"].iloc[0]) <= GOAL_COMPUTE + 1e-9]
    goal_col = goal_cols[-1] if goal_cols else None
    comp: dict = {}
    goal: dict = {"compute_at_most": GOAL_COMPUTE, "best_non_probing": best_np,
                  "best_non_probing_regret": float(df[best_np].mean()), "min_targets": MIN_GOAL_TARGETS}
    if goal_col:
        c = paired_comparison(df.set_index("target")[goal_col], df.set_index("target")[best_np],
                              groups=groups, higher_is_better=False, seed=seed)
        comp = {"a": _label(goal_col), "b": best_np, "metric": "regret", "note":
                f"{best_np} = the best non-probing method by mean regret here (post hoc)"} | c
        v = float(df[goal_col].mean())
        n_t = int(df[goal_col].notna().sum())
        met = n_t >= MIN_GOAL_TARGETS and v <= 0.5 * goal["best_non_probing_regret"]
        goal |= {"verify_row": _label(goal_col), "verify_regret": v, "n_targets": n_t,
                 "met": bool(met)}
    n_t, n_g = len(df), df["group"].nunique()
    notes = [f"Verify (replayed): {n_t} held-out targets in {n_g} groups; verify sees seeds "
             f"{verify_seeds[0]}–{verify_seeds[-1]}, every row's regret is against the mean over the "
             f"disjoint seeds {truth_seeds[0]}–{truth_seeds[-1]} (not the all-seed mean of the LOTO table); "
             f"shortlist = {shortlist}'s top {top} + scratch; compute = fine-tunes / (shortlist × "
             f"{k} seeds); 95% CI = bootstrap over groups."]
    if comp:
        notes.append(sentence(comp["a"], comp["b"], comp, metric="regret", fmt="{:+.4f}")
                     + f" ({comp['note']}).")
        word = "met" if goal["met"] else "not met"
        notes.append(f"Issue 11 goal (verify at ≤ {GOAL_COMPUTE:.0%} compute has at most half the mean "
                     f"regret of the best non-probing method, over ≥ {MIN_GOAL_TARGETS} targets): {word} — "
                     f"{goal['verify_row']} at {_compute(s, goal_col):.0%} compute {goal['verify_regret']:.4f} "
                     f"vs half of {best_np}'s {goal['best_non_probing_regret']:.4f} = "
                     f"{0.5 * goal['best_non_probing_regret']:.4f}, n = {goal['n_targets']} targets.")
    return VerifyEval(s, df, comp, goal, verify_seeds, truth_seeds, shortlist, notes)


def _compute(s: pd.DataFrame, method: str) -> float:
    return float(s.loc[s["method"] == method, "compute"].iloc[0])


def table(ev: VerifyEval) -> pd.DataFrame:
    """The 80-column display: row, kind, compute, mean regret [95% CI over groups]."""
    def ci(r: pd.Series) -> str:
        if not (math.isfinite(r["lo"]) and math.isfinite(r["hi"])):
            return f"{r['mean_regret']:.4f}"
        return f"{r['mean_regret']:.4f} [{r['lo']:.4f}, {r['hi']:.4f}]"

    return pd.DataFrame({"method": ev.summary["row"], "kind": ev.summary["kind"],
                         "compute": [f"{c:.0%}" for c in ev.summary["compute"]],
                         "regret [95% CI]": [ci(r) for _, r in ev.summary.iterrows()]})


def budget_points(ev: VerifyEval) -> pd.DataFrame:
    """x (compute), y (mean regret), lo, hi, label, kind: what the budget-vs-regret figure draws."""
    s = ev.summary
    return pd.DataFrame({"label": s["row"], "kind": s["kind"], "x": s["compute"].to_numpy(float),
                         "y": s["mean_regret"].to_numpy(float), "lo": s["lo"].to_numpy(float),
                         "hi": s["hi"].to_numpy(float)}).replace({np.inf: np.nan})
