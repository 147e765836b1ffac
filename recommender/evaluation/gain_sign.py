"""Does the predicted gain over scratch get each source's sign right? Judged per held-out cell.

Per target, "does the best source beat scratch?" is a weak test on a KB where it nearly always
does (KB ``local`` v3: 28 of 28 by the mean): the always-pretrain rule is then perfect and
cannot be beaten. The gain column makes a claim per *source*, so it is judged per cell:
a held-out cell (source, target; scratch itself excluded) is right when the sign of its
predicted gain matches the sign of its measured gain (the mean over seeds).

Two rules that read nothing of the held-out group, each computed per outer fold from the
other groups' measured cells only:

- **base rate**: every cell gets the majority sign of the training cells;
- **source record**: a cell gets the sign of its source's mean measured gain on the training
  targets (the majority sign for a source with no training cells).

Accuracy is per target (k/n cells), and "A beats B" is the paired comparison of per-target
accuracies, averaged within each independence group first
(:func:`recommender.evaluation.paired.paired_comparison`). A measured gain near 0 has a noisy
sign, so no rule reaches 100%: the share of cells with |gain| under 0.01 AUC is reported beside it,
and so is the sign's split-half agreement (:func:`sign_ceiling`: the gain's sign measured on the
even seeds against the odd ones), a rough ceiling for any predictor of a half's sign.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.knowledge_base import KnowledgeBase
from recommender.evaluation.paired import format_p, paired_comparison, sentence, signed
from recommender.evaluation.scratch_sign import per_seed, wilson
from recommender.model.scoring import REFERENCE

RULES = ("model", "base_rate", "source_record")
NEAR_ZERO = 0.01


def cell_signs(intervals: pd.DataFrame) -> pd.DataFrame:
    """scenario, group, target, source, gain, predicted_gain and, per rule, whether its sign is right."""
    need = {"scenario", "group", "target", "source", "gain", "predicted_gain"}
    if not need <= set(intervals.columns):
        return pd.DataFrame(columns=[*sorted(need), *(f"right_{r}" for r in RULES)])
    c = intervals[intervals["source"].astype(str) != REFERENCE]
    c = c[np.isfinite(c["gain"].to_numpy(dtype=float)) & np.isfinite(c["predicted_gain"].to_numpy(dtype=float))]
    out = []
    for (scen, grp), held in c.groupby(["scenario", "group"], sort=False):
        train = c[(c["scenario"] == scen) & (c["group"] != grp)]
        if train.empty:
            continue
        majority = bool((train["gain"] > 0).mean() >= 0.5)
        record = (train.groupby("source")["gain"].mean() > 0).to_dict()
        helps = (held["gain"] > 0).to_numpy()
        rec = np.array([record.get(s, majority) for s in held["source"]], dtype=bool)
        out.append(held.assign(right_model=(held["predicted_gain"] > 0).to_numpy() == helps,
                               right_base_rate=np.full(len(held), majority) == helps,
                               right_source_record=rec == helps))
    cols = ["scenario", "group", "target", "source", "gain", "predicted_gain", *(f"right_{r}" for r in RULES)]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def evaluate(intervals: pd.DataFrame, groups: dict[str, str] | None = None, seed: int = 0) -> list[dict]:
    """:func:`summarise` of the held-out intervals' :func:`cell_signs`."""
    return summarise(cell_signs(intervals), groups, seed)


def summarise(cells: pd.DataFrame, groups: dict[str, str] | None = None, seed: int = 0) -> list[dict]:
    """Per scenario: k/n cells right for each rule (Wilson 95% CI over cells) and the model's paired
    comparison with each rule over per-target accuracies (group units when groups hold several)."""
    rows = []
    for scen, g in cells.groupby("scenario", sort=False):
        per_target = g.groupby("target")[[f"right_{r}" for r in RULES]].mean()
        r = {"scenario": str(scen), "n_cells": int(len(g)), "n_targets": int(len(per_target)),
             "n_helps": int((g["gain"] > 0).sum()),
             "near_zero": int((g["gain"].abs() < NEAR_ZERO).sum())}
        for rule in RULES:
            k = int(g[f"right_{rule}"].sum())
            lo, hi = wilson(k, len(g))
            r |= {f"{rule}_k": k, f"{rule}_lo": lo, f"{rule}_hi": hi}
        for rule in RULES[1:]:
            comp = paired_comparison(per_target["right_model"], per_target[f"right_{rule}"], groups=groups,
                                     seed=seed)
            r[f"vs_{rule}"] = {k: comp[k] for k in ("mean_diff", "lo", "hi", "p", "n", "unit", "n_targets",
                                                    "words")}
        rows.append(r)
    return rows


def sign_ceiling(kb: KnowledgeBase, cells: pd.DataFrame | None = None) -> dict | None:
    """Cells (source ≠ scratch, target; those of ``cells`` when given, e.g. the held-out ones) whose
    gain over scratch has the same sign on the even seeds as on the odd ones (paired by seed): k, n,
    share and Wilson 95% CI; None without scratch or two seeds."""
    if REFERENCE not in set(kb.records["source"]):
        return None
    keep = None if cells is None else set(zip(cells["source"].astype(str), cells["target"].astype(str),
                                              strict=True))
    targets = list(dict.fromkeys(kb.records["target"] if cells is None else cells["target"]))
    agree = []
    for t in targets:
        wide = per_seed(kb, t)
        if REFERENCE not in wide.index or wide.shape[1] < 2:
            continue
        d = wide.drop(index=REFERENCE) - wide.loc[REFERENCE]
        if keep is not None:
            d = d.loc[[s for s in d.index if (str(s), str(t)) in keep]]
        seeds = np.asarray(d.columns.get_level_values("seed") if isinstance(d.columns, pd.MultiIndex)
                           else d.columns, dtype=float)
        even, odd = d.loc[:, seeds % 2 == 0].mean(axis=1), d.loc[:, seeds % 2 == 1].mean(axis=1)
        ok = even.notna() & odd.notna()
        agree.extend(((even[ok] > 0) == (odd[ok] > 0)).tolist())
    if not agree:
        return None
    k, n = int(np.sum(agree)), len(agree)
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "share": k / n, "lo": lo, "hi": hi}


def sentences(rows: list[dict], ceiling: dict | None = None) -> list[str]:
    """One line per scenario and rule, in the words of :func:`paired.sentence`."""
    out = []
    for r in rows:
        n = r["n_cells"]
        acc = ", ".join(f"{name} {r[f'{rule}_k']}/{n} [{r[f'{rule}_lo']:.2f}, {r[f'{rule}_hi']:.2f}]"
                        for rule, name in zip(RULES, ("model", "base rate", "source record"), strict=True))
        out.append(f"Gain sign per cell ({r['scenario']}; {n} held-out cells, {r['n_targets']} targets, "
                   f"{r['n_helps']} measured above scratch, {r['near_zero']} within ±{NEAR_ZERO} of it): "
                   f"{acc} (Wilson 95% CIs over cells)."
                   + (f" The sign itself agrees between the even and the odd seeds on {ceiling['k']}/"
                      f"{ceiling['n']} cells [{ceiling['lo']:.2f}, {ceiling['hi']:.2f}] (its noise ceiling)."
                      if ceiling else ""))
        for rule, name in zip(RULES[1:], ("base rate", "source record"), strict=True):
            out.append(sentence(f"gain sign per target ({r['scenario']}), model", name, r[f"vs_{rule}"],
                                metric="accuracy"))
    return out


def table(rows: list[dict]) -> pd.DataFrame:
    """80-column view: scenario, share of cells right per rule, the model's Δ per-target accuracy vs
    the base rate (k/n and the comparison with the source record in --format json)."""
    out = []
    for r in rows:
        n, c = r["n_cells"], r["vs_base_rate"]
        delta = (f"{signed(c['mean_diff'])} [{signed(c['lo'])}, {signed(c['hi'])}]"
                 if np.isfinite(c["lo"]) else signed(c["mean_diff"]))
        out.append({"scenario": r["scenario"], "model": f"{r['model_k'] / n:.2f}",
                    "base rate": f"{r['base_rate_k'] / n:.2f}", "record": f"{r['source_record_k'] / n:.2f}",
                    "Δ [95% CI]": delta, "p": format_p(c["p"]).removeprefix("p = ")})
    return pd.DataFrame(out)


def caption(rows: list[dict], ceiling: dict | None = None) -> str:
    """What the table's columns mean, its n and its noise ceiling."""
    if not rows:
        return ""
    r = rows[0]
    c = r["vs_base_rate"]
    ceil = (f"; the measured sign agrees between even and odd seeds on {ceiling['k']}/{ceiling['n']} "
            f"cells [{ceiling['lo']:.2f}, {ceiling['hi']:.2f}] (its noise ceiling)" if ceiling else "")
    return (f"share of {r['n_cells']} held-out cells (source ≠ scratch, {r['n_targets']} targets) where "
            "the predicted gain over scratch has the measured gain's sign (mean over seeds); base rate = "
            "every cell gets the training cells' majority sign; record = the sign of the source's mean "
            "gain on the training targets; Δ = the model's per-target accuracy minus the base rate's, "
            f"paired over {c['n']} {c['unit']} (bootstrap 95% CI, Wilcoxon p; a difference only where "
            f"both agree; k/n and vs record in --format json){ceil}")
