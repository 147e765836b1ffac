"""The correlation report: does any single similarity or meta-feature track transfer?

Pooled over every measured (source, target) pair of a KB, each pair feature (study
similarities, expert distance, transferability estimates, card comparisons, |src − tgt|
meta-feature differences) is correlated with the transfer outcome: the AUC, and — where
the KB has per-fold ``transfer_score`` records (cats-scans) — the AUC gain, the mean
score over folds. With these definitions the cats-scans study's own figures come out
(Task2Vec r = −0.11, p = 0.61; expert r = +0.24, p = 0.26; 24 pairs).

A KB without such records but with a from-scratch baseline (``local``) gets a second outcome,
``gain_vs_scratch``: AUC minus the scratch AUC on the same target. Like the study's transfer
score it is relative to each target's own baseline, so a pooled correlation is not driven by
which targets are easy (the raw AUC's pooled r mixes that in: on KB ``local`` a distance can
correlate one way with AUC across targets and the other way with the gain within them).
Pairs share sources and targets, so every p-value here is optimistic (pairs are not independent).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, pearsonr, spearmanr

from experiments.knowledge_base import SCRATCH, KnowledgeBase
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


def scratch_gain_table(kb: KnowledgeBase) -> pd.Series | None:
    """AUC(source, target) minus AUC(scratch, target), mean over seeds; None without scratch."""
    m = kb.matrix()
    if SCRATCH not in m.index or not np.isfinite(m.loc[SCRATCH].to_numpy(dtype=float)).any():
        return None
    g = (m.drop(index=SCRATCH) - m.loc[SCRATCH]).stack(future_stack=True)
    return g.rename_axis(["source", "target"]).dropna().rename("gain_vs_scratch")


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
    idx = pd.MultiIndex.from_arrays([rows["source"], rows["target"]])
    gain = gain_table(kb)
    if gain is not None:
        outcomes["gain"] = gain.reindex(idx).to_numpy(dtype=float)
    elif (sg := scratch_gain_table(kb)) is not None:
        outcomes["gain_vs_scratch"] = sg.reindex(idx).to_numpy(dtype=float)
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


# -- the seed study's Task2Vec finding, re-tested ------------------------------------------
SEED_TASK2VEC = {"r": -0.11, "p": 0.61, "n": 24}
"""The seed study's published Task2Vec figure: plain cosine distance vs transfer score (AUC
gain), Pearson over 24 (source, target) pairs (``../shared/docs/seed_study.md``)."""
TASK2VEC_FEATURES = {
    "dist_task2vec_cos": "Task2Vec plain cosine (the seed study's distance), computed here",
    "dist_task2vec_ncos": "Task2Vec normalised cosine (the task2vec library's), computed here",
    "dist_task2vec_asym": "Task2Vec asymmetric source -> target distance, computed here",
    "task2vec_distance": "Task2Vec distance as the study published it (imported, not computed here)",
}
ALPHA = 0.05
OUTCOME_WORDS = {"auc": "AUC (pooled over targets)", "gain": "AUC gain (the study's transfer score)",
                 "gain_vs_scratch": "AUC gain over scratch on the same target"}


def _num(v: float, fmt: str = "{:+.3f}") -> str:
    return fmt.format(v).replace("-", "−") if math.isfinite(v) else "—"


def _p(v: float) -> str:
    from recommender.evaluation.report_html import format_p

    return format_p(v, 3, label=True)


def fisher_z_p(r1: float, n1: int, r2: float, n2: int) -> float:
    """Two-sided p of H0 r1 = r2 for two independent Pearson r (Fisher z; NaN when undefined)."""
    from scipy.stats import norm

    if not (math.isfinite(r1) and math.isfinite(r2)) or min(n1, n2) <= 3 or max(abs(r1), abs(r2)) >= 1:
        return math.nan
    z = (math.atanh(r1) - math.atanh(r2)) / math.sqrt(1 / (n1 - 3) + 1 / (n2 - 3))
    return float(2 * norm.sf(abs(z)))


def task2vec_sentences(corr: pd.DataFrame) -> list[str]:
    """One sentence per Task2Vec distance (and outcome) in a :func:`correlation_report`: n,
    Pearson r [95% CI] and p, Spearman ρ, Kendall τ, beside the seed study's r −0.11 (p 0.61,
    24 pairs), and whether ours agree. Empty when the KB has no Task2Vec feature.

    "Detectable" means Pearson p < 0.05 (its 95% CI then excludes 0): a negative r for a
    distance is "closer ⇒ better transfer". Agreement is judged on that, the seed's figure
    being indistinguishable from 0; a Fisher z test of our r against the seed's says whether
    the two estimates differ (the seed's n = 24 leaves its own CI wide, −0.49 to +0.31)."""
    out = []
    seed = SEED_TASK2VEC
    for feat, what in TASK2VEC_FEATURES.items():
        for row in corr[corr["feature"] == feat].to_dict("records"):
            r, p, lo, hi = (float(row[k]) for k in ("pearson_r", "pearson_p", "pearson_lo", "pearson_hi"))
            vs = OUTCOME_WORDS.get(str(row["outcome"]), str(row["outcome"]))
            head = (f"{feat} ({what}) vs {vs}: n = {int(row['n'])} pairs, Pearson r = {_num(r)} "
                    f"[95% CI {_num(lo)}, {_num(hi)}], {_p(p)}; Spearman ρ = {_num(float(row['spearman_rho']))} "
                    f"({_p(float(row['spearman_p']))}); Kendall τ = {_num(float(row['kendall_tau']))} "
                    f"({_p(float(row['kendall_p']))}).")
            study = (f"Seed study (plain cosine vs AUC gain): r = {_num(seed['r'], '{:+.2f}')}, "
                     f"p = {seed['p']:.2f}, {seed['n']} pairs.")
            if not math.isfinite(p):
                verdict = "Too few finite pairs to compare."
            elif p >= ALPHA:
                verdict = ("Agree: both indistinguishable from 0 (no detectable linear relation between "
                           "Task2Vec distance and transfer).")
            elif r < 0:
                verdict = ("Disagree: ours is detectably negative (closer in Task2Vec ⇒ better transfer), "
                           "where the seed study found nothing detectable.")
            else:
                verdict = ("Disagree: ours is detectably positive (closer in Task2Vec ⇒ worse transfer), "
                           "where the seed study found nothing detectable.")
            z_p = fisher_z_p(r, int(row["n"]), seed["r"], seed["n"])
            if math.isfinite(z_p):
                verdict += (f" Ours vs the seed's r: {'not detectably different' if z_p >= ALPHA else 'different'} "
                            f"(Fisher z test, {_p(z_p)}).")
            out.append(f"{head} {study} {verdict}")
    return out
