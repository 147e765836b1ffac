"""Verify in ``evaluate-meta``: successive halving replayed from a KB's per-seed records.

Each per-seed record of a (source, target) is one full fine-tune, so verify's schedule is
replayed without training (:func:`recommender.verify.replay.replay_kb`): verify sees only the
first ``k`` seeds, the truth is the mean over ``k`` other seeds, and every row here — static,
each estimator, the LOTO ``shipped`` rows, verify at each budget — is regret against that same
truth. Verify's shortlist is the top ``top`` sources of the shipped method (``shipped+est``
where the KB has estimates: what ``catscans verify`` measures after ``recommend`` on a
labelled folder) plus scratch. Compute = fine-tunes run / (shortlist × verify seeds), so 100%
fine-tunes the whole shortlist on every verify seed.

Two verify rows per budget: ``verify@f`` is verify as it ships (halving by the posterior,
the pick by the displacement rule, :mod:`recommender.verify.posterior`), its prior the
shipped method's held-out prediction rows from the nested leave-one-group-out (``intervals``:
the held-out target never informs its own prior); ``no-prior@f`` is the same halving on the
measured means alone (verify before it had a prior), kept for comparison. Every verify row is compared
with the shortlist method, paired over groups (:func:`recommender.evaluation.paired.paired_comparison`);
the best estimator and the best non-probing method are picked on these same figures (post
hoc, which favours them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from experiments.knowledge_base import KnowledgeBase
from recommender.evaluation.paired import paired_comparison, sentence
from recommender.evaluation.records import json_records as rec
from recommender.verify.posterior import DISPLACE
from recommender.verify.replay import replay_kb

BUDGETS = (0.1, 0.25, 0.5, 1.0)
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
    comparisons: list[dict] = field(default_factory=list)  # every verify row vs the shortlist method, paired
    moves: list[dict] = field(default_factory=list)  # per verify row: picks moved off the predicted first
    picks: pd.DataFrame | None = None  # target, method, leader, pick, displaced, gain_of_move

    def to_dict(self) -> dict:
        return {"summary": rec(self.summary), "per_target": rec(self.per_target),
                "comparison": self.comparison, "comparisons": self.comparisons, "goal": self.goal,
                "moves": self.moves, "picks": rec(self.picks) if self.picks is not None else [],
                "verify_seeds": self.verify_seeds, "truth_seeds": self.truth_seeds,
                "shortlist": self.shortlist, "notes": self.notes}


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
    """Display row: ``posterior[..]@f`` (verify as it ships) → verify@f%, ``verify[..]@f`` → no-prior@f%."""
    if method.startswith(("verify[", "posterior[")):
        f = float(method.rsplit("@", 1)[1])
        return f"{'verify' if method.startswith('posterior[') else 'no-prior'}@{f:.0%}"
    return method


def _kind(method: str, best_est: str | None) -> str:
    if method.startswith("posterior["):
        return "verify"
    if method.startswith("verify["):
        return "verify, no prior"
    return "best est. (post hoc)" if method == best_est else "no fine-tuning"


def _priors(intervals: pd.DataFrame | None, shortlist: str) -> dict[str, pd.DataFrame]:
    """target → its held-out prediction rows (nested LOGO) of the shortlist method's scenario."""
    scen = {"shipped+est": "estimates", "shipped": "any"}.get(shortlist)
    if intervals is None or not len(intervals) or scen is None or "scenario" not in intervals:
        return {}
    iv = intervals[intervals["scenario"] == scen]
    return {str(t): g.reset_index(drop=True) for t, g in iv.groupby("target")}


def evaluate(kb: KnowledgeBase, predictions: pd.DataFrame, budgets: tuple[float, ...] = BUDGETS,
             k: int = K_SEEDS, top: int = TOP, seed: int = 0, intervals: pd.DataFrame | None = None,
             threshold: float = DISPLACE) -> VerifyEval | str:
    """The verify rows, or a one-line reason why this KB has none.

    ``intervals``: the nested-LOGO held-out prediction rows (``LotoResult.intervals``), the prior
    of verify's posterior (none: a flat prior; the predicted first is still the shortlist's)."""
    seeds = seeds_of(kb)
    if len(seeds) < 2 * k:
        return (f"{kb.name}: verify is replayed from per-seed records with {k} verify seeds and {k} "
                f"other truth seeds; this KB has {len(seeds)} seed(s) per cell, so no verify rows")
    verify_seeds, truth_seeds = seeds[:k], seeds[k:2 * k]
    have = set(predictions["method"])
    ship = [m for m in NON_PROBING[1:] if m in have]
    shortlist = "shipped+est" if "shipped+est" in have else ("shipped" if "shipped" in have else "static")
    priors = _priors(intervals, shortlist)
    res = replay_kb(kb, sorted(budgets), verify_seeds, truth_seeds, top, (shortlist,),
                    extra_scores=_extra_scores(predictions, tuple(ship)), priors=priors, posterior=True,
                    threshold=threshold)
    df, s = res["per_target"], res["summary"].copy()
    if df.empty:
        return f"{kb.name}: no target has every source on all {2 * k} seeds, so no verify rows"
    est = [m for m in s["method"] if m.startswith("estimate:")]
    best_est = min(est, key=lambda m: float(s.loc[s["method"] == m, "mean_regret"].iloc[0])) if est else None
    candidates = [m for m in s["method"] if not m.startswith(("verify", "posterior")) and df[m].notna().all()]
    best_np = min(candidates, key=lambda m: float(df[m].mean()))

    def by_budget(prefix: str) -> list[str]:
        return sorted((m for m in s["method"] if m.startswith(prefix)), key=lambda m: float(m.rsplit("@", 1)[1]))

    keep = [m for m in ("static", best_est, *ship) if m] + by_budget("verify[") + by_budget("posterior[")
    s = s[s["method"].isin(keep)].copy()
    s["kind"] = [_kind(m, best_est) for m in s["method"]]
    s["row"] = [_label(m) for m in s["method"]]
    order = {m: i for i, m in enumerate(keep)}
    s = s.sort_values("method", key=lambda c: c.map(order)).reset_index(drop=True)
    groups = dict(zip(df["target"], df["group"], strict=True))
    wide = df.set_index("target")
    comps = []
    for m in [m for m in s["method"] if m.startswith(("verify[", "posterior["))]:
        c = paired_comparison(wide[m], wide[shortlist], groups=groups, higher_is_better=False, seed=seed)
        comps.append({"a": _label(m), "b": shortlist, "metric": "regret"} | c)
    by_row = {c["a"]: c for c in comps}
    for col, key in (("vs", "b"), ("vs_diff", "mean_diff"), ("vs_lo", "lo"), ("vs_hi", "hi"), ("vs_p", "p"),
                     ("vs_n", "n"), ("vs_words", "words")):
        s[col] = [by_row[r][key] if r in by_row else None for r in s["row"]]
    s = s[["row", "method", "kind", "compute", "n_targets", "n_groups", "mean_regret", "lo", "hi",
           "vs", "vs_diff", "vs_lo", "vs_hi", "vs_p", "vs_n", "vs_words"]]
    goal_cols = [m for m in s["method"] if m.startswith("posterior[") and
                 float(s.loc[s["method"] == m, "compute"].iloc[0]) <= GOAL_COMPUTE + 1e-9]
    goal_col = goal_cols[-1] if goal_cols else None
    comp: dict = {}
    goal: dict = {"compute_at_most": GOAL_COMPUTE, "best_non_probing": best_np,
                  "best_non_probing_regret": float(df[best_np].mean()), "min_targets": MIN_GOAL_TARGETS}
    if goal_col:
        c = paired_comparison(wide[goal_col], wide[best_np], groups=groups, higher_is_better=False, seed=seed)
        comp = {"a": _label(goal_col), "b": best_np, "metric": "regret", "note":
                f"{best_np} = the best non-probing method by mean regret here (post hoc)"} | c
        v = float(df[goal_col].mean())
        n_t = int(df[goal_col].notna().sum())
        met = n_t >= MIN_GOAL_TARGETS and v <= 0.5 * goal["best_non_probing_regret"]
        goal |= {"verify_row": _label(goal_col), "verify_regret": v, "n_targets": n_t,
                 "met": bool(met)}
    moves = _moves(res["picks"], df)
    notes = [_caption(df, verify_seeds, truth_seeds, shortlist, top, k, bool(priors), threshold)]
    notes += [sentence(c["a"], c["b"], c, metric="regret", fmt="{:+.4f}") + "."
              for c in comps if c["a"].startswith("verify@")]
    notes += [m["text"] for m in moves]
    notes += _goal_sentences(s, comps, shortlist, comp, goal, goal_col)
    return VerifyEval(s, df, comp, goal, verify_seeds, truth_seeds, shortlist, notes, comps, moves,
                      res["picks"])


def _caption(df: pd.DataFrame, verify_seeds: list[int], truth_seeds: list[int], shortlist: str, top: int,
             k: int, has_prior: bool, threshold: float) -> str:
    prior = (f"its prior is {shortlist}'s held-out prediction (nested leave-one-group-out: predicted gain "
             "over scratch ± its 80% interval as a normal, sd = half-width / 1.28)" if has_prior else
             f"no held-out intervals: a flat prior, {shortlist}'s first as the predicted first")
    return (f"Verify (replayed): {len(df)} held-out targets in {df['group'].nunique()} groups; verify sees "
            f"seeds {verify_seeds[0]}–{verify_seeds[-1]}, every row's regret is against the mean over the "
            f"disjoint seeds {truth_seeds[0]}–{truth_seeds[-1]} (not the all-seed mean of the LOTO table); "
            f"shortlist = {shortlist}'s top {top} + scratch; compute = fine-tunes / (shortlist × {k} seeds); "
            f"95% CI = bootstrap over groups. verify = successive halving by the posterior P(best) and the "
            f"pick by the posterior: {prior}; a challenger replaces {shortlist}'s first only when it is better "
            f"with posterior probability ≥ {threshold:.2f}. no-prior = the same halving on the measured means "
            "alone, picking the measured best.")


def _moves(picks: pd.DataFrame, df: pd.DataFrame) -> list[dict]:
    """Per verify row: on how many targets the pick moved off the predicted first, and how often
    the truth seeds agreed (the move gained AUC)."""
    out = []
    for m, g in picks.groupby("method", sort=False):
        moved = g[g["displaced"]]
        right = int((moved["gain_of_move"] > 0).sum())
        text = (f"{_label(m)} moved off the predicted first on {len(moved)} of {len(g)} targets"
                + (f"; the truth seeds favoured the move on {right}, mean AUC gained "
                   f"{moved['gain_of_move'].mean():+.4f}" if len(moved) else "") + ".")
        out.append({"row": _label(m), "targets": int(len(g)), "moved": int(len(moved)), "right": right,
                    "mean_gain_of_move": float(moved["gain_of_move"].mean()) if len(moved) else None,
                    "text": text})
    return out


def _goal_sentences(s: pd.DataFrame, comps: list[dict], shortlist: str, comp: dict, goal: dict,
                    goal_col: str | None) -> list[str]:
    out = []
    ver = [c for c in comps if c["a"].startswith("verify@")]
    if ver:
        worse = [c["a"] for c in ver if c["words"] == "worse"]
        full = s[s["row"] == "verify@100%"]
        ref = float(s.loc[s["method"] == shortlist, "mean_regret"].iloc[0]) if (s["method"] == shortlist).any() \
            else math.nan
        below = bool(len(full)) and float(full["mean_regret"].iloc[0]) < ref
        ok = not worse and below
        out.append(f"Goal: verify, at every budget, not detectably worse than the prediction it starts from "
                   f"({shortlist}), and at 100% a mean regret below it: {'met' if ok else 'not met'} — "
                   + (f"detectably worse at {', '.join(worse)}; " if worse else "not detectably worse at any budget; ")
                   + (f"at 100% {float(full['mean_regret'].iloc[0]):.4f} vs {ref:.4f}." if len(full) else "no 100% row."))
    if comp and comp["b"] != shortlist:  # vs the shortlist method it is printed already
        out.append(sentence(comp["a"], comp["b"], comp, metric="regret", fmt="{:+.4f}") + f" ({comp['note']}).")
    if comp:
        word = "met" if goal["met"] else "not met"
        out.append(f"Goal: verify at ≤ {GOAL_COMPUTE:.0%} compute with at most half the mean regret "
                   f"of the best non-probing method, over ≥ {MIN_GOAL_TARGETS} targets: {word} — "
                   f"{goal['verify_row']} at {_compute(s, goal_col):.0%} compute {goal['verify_regret']:.4f} "
                   f"vs half of {goal['best_non_probing']}'s {goal['best_non_probing_regret']:.4f} = "
                   f"{0.5 * goal['best_non_probing_regret']:.4f}, n = {goal['n_targets']} targets.")
    return out


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
