"""The sentences and JSON of ``evaluate-meta``: what ships, how it compares, what its figures mean.

Kept apart from the CLI so the words are library code: every claim that one method beats
another comes from a paired comparison (:mod:`recommender.evaluation.paired`), every
interval from a measured coverage, and the ceiling and the study agreement say what they
are over.
"""

from __future__ import annotations

import math

import pandas as pd

from recommender.evaluation.loto import LotoResult, shipped_summary
from recommender.evaluation.paired import MIN_N, sentence
from recommender.evaluation.ranking_metrics import format_ci
from recommender.evaluation.records import json_records as rec
from recommender.evaluation.selection import ROW_NAME

SCENARIO_WORDS = {
    "any": "without transferability estimates (any target, labelled or not)",
    "estimates": "with transferability estimates on the target's labelled images",
}


def chosen_words(result: LotoResult, scenario: str) -> str:
    """'static in 8 of 10 folds, meta in 2'."""
    ch = result.choices[result.choices["scenario"] == scenario]
    counts = ch["method"].value_counts()
    n = len(ch)
    parts = [f"{m} in {c} of {n} folds" if i == 0 else f"{m} in {c}" for i, (m, c) in enumerate(counts.items())]
    return ", ".join(parts)


def _row(result: LotoResult, method: str) -> pd.Series | None:
    s = result.summary
    hit = s[s["method"] == method]
    return None if hit.empty else hit.iloc[0]


def figure(result: LotoResult, method: str) -> str:
    r = _row(result, method)
    if r is None:
        return "—"
    return f"τw {format_ci(r['tau_w'], r['tau_w_lo'], r['tau_w_hi'])}"


def coverage_sentence(result: LotoResult, scenario: str) -> str:
    cov = result.coverage.get(scenario, {})
    nominal = int(round(100 * cov.get("nominal", 0.8)))
    row = ROW_NAME[scenario]
    if not cov or cov.get("n_cells", 0) == 0:
        return (f"{row}: no calibrated {nominal}% interval (too few calibration targets per fold), "
                "so none is shown")
    missing = cov.get("n_cells_without_interval", 0)
    tail = f"; {missing} cells in folds too small to calibrate had none" if missing else ""
    return (f"{row}: {nominal}% conformal interval of the predicted AUC (nominal {nominal}%) held "
            f"the true AUC for {cov['coverage']:.0%} of {cov['n_cells']} held-out cells over "
            f"{cov['n_targets']} targets (median half-width {cov['median_half_width']:.3f} AUC; "
            f"residuals from training groups only){tail}")


def verdict_sentences(result: LotoResult, kb_has_checkpoints: bool, shipped_now: dict | None) -> list[str]:
    """The verdict: per scenario the nested figure, its choices, and its paired comparisons."""
    n_t, n_g = result.per_target["target"].nunique(), result.n_groups
    out = []
    for scen in result.scenarios:
        row = ROW_NAME[scen]
        s = (f"On {result.kb_name} ({n_t} targets in {n_g} groups, leave-one-group-out), the shipped "
             f"procedure {SCENARIO_WORDS[scen]} — nested selection (one-standard-error rule on the inner "
             f"leave-one-group-out τw), which chose {chosen_words(result, scen)} "
             f"— reaches {figure(result, row)}.")
        if scen == "estimates" and not kb_has_checkpoints:
            s += (" This KB ships no source checkpoints, so `recommend` cannot compute estimates for a "
                  "new target: this row is for reference.")
        out.append(s)
    for c in result.comparisons:
        if c["metric"] != "tau_w":
            continue
        line = sentence(c["a"], c["b"], c)
        if c.get("note"):
            line += f" ({c['note']})"
        out.append(line + ".")
    out.append("Verdict words: better / worse only when the paired 95% CI excludes 0 and the Wilcoxon "
               "p < 0.05 agree; otherwise no detectable difference.")
    if n_g < MIN_N:
        out.append(f"n = {n_g} groups: too few for a CI or a verdict; differences are anecdotal.")
    if shipped_now:
        what = "; ".join(f"{SCENARIO_WORDS.get(k, k)}: {v}" for k, v in shipped_now.items())
        out.append(f"`recommend` ships (chosen by the same inner procedure on all groups) — {what}.")
    return out


def ceiling_sentence(ceiling: dict, shipped_tau: float | None) -> str:
    if ceiling.get("status") != "ok":
        return ceiling.get("text", "no per-seed records: ceiling unknown")
    s = ceiling["text"]
    if shipped_tau is not None and math.isfinite(shipped_tau):
        s += f"; the shipped τw {shipped_tau:.2f} is {shipped_tau / ceiling['ceiling']:.0%} of it"
    return s


def json_safe(obj: object) -> object:
    """NaN and ±inf → None, numpy scalars → Python, recursively (strict JSON)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def payload(result: LotoResult, extra: dict) -> dict:
    """The JSON of evaluate-meta (strict JSON: None for NaN)."""
    out = {
        "kb": result.kb_name, "n_targets": int(result.per_target["target"].nunique()),
        "n_groups": result.n_groups, "groups": result.groups,
        "summary": rec(result.summary), "per_target": rec(result.per_target),
        "shipped": {scen: shipped_summary(result, scen) for scen in result.scenarios},
        "comparisons": result.comparisons, "verdict": result.verdict(),
        "fold_choices": rec(result.choices), "inner_scores": rec(result.inner),
        "coverage": result.coverage, "coverage80": result.coverage80,
    } | extra
    return json_safe(out)
