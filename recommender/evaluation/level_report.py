"""How close the predicted AUC comes to the measured one on held-out targets, and how its interval adapts.

The question a user asks of the AUC column is "what will I get?", not "which is first?". A
folder-blind prediction (the KB's average level, from the training targets) is the baseline
the learned level must beat: per held-out target the mean absolute error over its cells,
then a paired comparison over groups (:func:`recommender.evaluation.paired.paired_comparison`).
The normalised interval's claim, "an easy folder gets a narrow interval, a hard one a wide
one", is checked on the easier and the harder half of the held-out targets.
"""

from __future__ import annotations

import math

import pandas as pd

from recommender.evaluation.paired import format_p, signed


def _num(v: object, fmt: str = "{:.3f}") -> str:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return fmt.format(f) if math.isfinite(f) else "—"


def level_table(level_error: dict[str, dict]) -> pd.DataFrame:
    """80-column rows: procedure, MAE of its predicted AUC, the KB-average level's ("KB avg"),
    Δ [95% CI], Wilcoxon p, n groups."""
    rows = []
    for e in level_error.values():
        c = e["vs_baseline"]
        ci = (f"{signed(c['mean_diff'])} [{signed(c['lo'])}, {signed(c['hi'])}]"
              if math.isfinite(c.get("lo", math.nan)) else signed(c["mean_diff"]))
        rows.append({"procedure": e["row"], "MAE": _num(e["mae"]), "KB avg": _num(e["baseline_mae"]),
                     "Δ [95% CI]": ci, "p": format_p(c["p"]).replace("p = ", ""), "n": str(c["n"])})
    return pd.DataFrame(rows)


def difficulty_table(level_error: dict[str, dict]) -> pd.DataFrame:
    """Coverage and median half-width of the interval on the easier and harder half of targets."""
    rows = []
    for e in level_error.values():
        for h in e.get("by_difficulty") or []:
            rows.append({"procedure": e["row"], "targets": f"{h['half']} half ({h['n_targets']})",
                         "cells": h["n_cells"], "coverage": f"{h['coverage']:.0%}",
                         "median half-width": _num(h["median_half_width"])})
    return pd.DataFrame(rows)


def difficulty_caption(choices: pd.DataFrame) -> str:
    """What the halves are, and which scale the outer folds' calibrations chose (kind^γ, counts)."""
    text = ("easier/harder half = held-out targets below/above the median difficulty (1 − predicted "
            "level); nearer/farther = below/above the median distance from the training targets "
            "(novelty)")
    need = {"scenario", "scale_power"}
    if choices is None or choices.empty or not need <= set(choices.columns):
        return text
    parts = []
    for scen, c in choices.groupby("scenario", sort=False):
        kind = c["scale_kind"].fillna("difficulty") if "scale_kind" in c else pd.Series("difficulty", c.index)
        label = [("plain" if not p or not math.isfinite(float(p)) else f"{k}^{float(p):g}")
                 for k, p in zip(kind, c["scale_power"].fillna(0.0), strict=True)]
        counts = pd.Series(label).value_counts()
        parts.append(f"{scen}: " + ", ".join(f"{k} in {v}" for k, v in counts.items()))
    return text + "; interval scale chosen per outer fold on its calibration cells — " + "; ".join(parts)


def level_sentences(level_error: dict[str, dict], n_candidates: dict[str, int]) -> list[str]:
    """The figures in words: the error against the folder-blind level and how many candidates were searched."""
    out = []
    for e in level_error.values():
        c = e["vs_baseline"]
        out.append(f"{e['row']}: held-out predicted AUC off by {e['mae']:.3f} on average (mean absolute "
                   f"error per target, {e['n_targets']} targets, {e['n_cells']} cells) against "
                   f"{e['baseline_mae']:.3f} for the KB's average level; Δ {signed(c['mean_diff'])}"
                   + (f" [{signed(c['lo'])}, {signed(c['hi'])}]" if math.isfinite(c.get("lo", math.nan)) else "")
                   + f", {format_p(c['p'])}, n {c['n']} {c['unit']} — {c['words']}.")
    if n_candidates:
        parts = ", ".join(f"{k}: {v}" for k, v in n_candidates.items())
        out.append(f"Nested selection searched the candidates declared in recommender.model.methods.SELECTION "
                   f"({parts}); each estimator alone is a reference row, never picked.")
    return out
