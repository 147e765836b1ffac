"""Is transfer worth it? Each method's call on "does the best source beat scratch?", judged.

For a KB whose candidates include ``scratch`` (training from random initialisation):

- **truth per held-out target**: the best non-scratch source's mean AUC vs scratch's mean
  AUC (``helps`` when the former is higher), and from the per-seed records, paired by
  (seed, fold), whether that difference is detectable: a paired bootstrap 95% CI of the
  mean difference and the Wilcoxon p (:func:`recommender.evaluation.paired.paired_comparison`;
  "helps" / "hurts" only when the CI excludes 0 and p < 0.05 agree, else "no detectable
  difference"). The best source is picked on the same seeds it is then tested with, which
  favours "helps" slightly (winner's curse over the sources);
- **a method's call**: its top-scored non-scratch source is scored above scratch
  ("pretraining helps") or not; no call when it gave scratch or every other source no score;
- **sign accuracy** = k/n targets where the call matches the truth's sign, with a Wilson 95%
  interval over targets (targets of one group are not independent: the interval is optimistic
  when groups hold several targets); also over the targets where the truth is detectable;
- **the "scratch" baseline**: scratch first, the rest in the static order (leave-one-group-out,
  the ``static`` rows of the LOTO predictions), so its τw is defined and its regret is
  best AUC − scratch AUC.

Only the held-out predictions and the KB's records are read: nothing here ranks anything.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from experiments.knowledge_base import SCRATCH, KnowledgeBase
from recommender.evaluation.paired import paired_comparison
from recommender.evaluation.records import json_records

BASELINE = "scratch"
CALLS = ("helps", "no detectable difference", "hurts")
NO_SCRATCH = ("{kb} has no 'scratch' source: whether pretraining helps at all cannot be judged "
              "here, so no sign-accuracy columns or scratch baseline are shown")


def has_scratch(predictions: pd.DataFrame) -> bool:
    """Whether any held-out target has scratch among its candidates."""
    return bool(len(predictions)) and SCRATCH in set(predictions["source"])


def scratch_baseline_rows(predictions: pd.DataFrame, order_by: str = "static") -> pd.DataFrame:
    """The ``scratch`` baseline's rows: per target scratch first, the rest by ``order_by``'s scores."""
    base = predictions[predictions["method"] == order_by]
    rows = []
    for _t, g in base.groupby("target", sort=False):
        if SCRATCH not in set(g["source"]):
            continue
        s = g["score"].to_numpy(dtype=float)
        finite = s[np.isfinite(s)]
        top = (finite.max() if len(finite) else 0.0) + 1.0
        s = np.where(g["source"].to_numpy() == SCRATCH, top, s)
        rows.append(g.assign(method=BASELINE, score=s))
    return pd.concat(rows, ignore_index=True) if rows else predictions.iloc[:0]


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (scipy's; NaN, NaN when n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def per_seed(kb: KnowledgeBase, target: str) -> pd.DataFrame:
    """source × (seed, fold) values of ``target`` in the KB's metric."""
    r = kb.records
    r = r[(r["target"] == target) & (r["metric"] == kb.metric)]
    key = [c for c in ("seed", "fold") if c in r.columns]
    r = r.assign(**{c: r[c].fillna(-1) for c in key})
    return r.pivot_table(index="source", columns=key, values="value", aggfunc="mean")


def scratch_truth(kb: KnowledgeBase, candidates: dict[str, list[str]], seed: int = 0) -> pd.DataFrame:
    """Per target (→ its candidate sources): best non-scratch source vs scratch, paired over seeds."""
    rows = []
    for t, cand in candidates.items():
        if SCRATCH not in cand:
            continue
        wide = per_seed(kb, t)
        others = [s for s in cand if s != SCRATCH and s in wide.index]
        if SCRATCH not in wide.index or not others:
            continue
        means = wide.loc[others].mean(axis=1, skipna=True)
        best = str(means.idxmax())
        a, b = wide.loc[best], wide.loc[SCRATCH]
        c = paired_comparison(a.set_axis(range(len(a))), b.set_axis(range(len(b))), seed=seed)
        gain = float(means[best] - wide.loc[SCRATCH].mean(skipna=True))
        lo, hi = c["lo"], c["hi"]
        call = {"better": "helps", "worse": "hurts"}.get(c["words"], "no detectable difference")
        ci_only = ("helps" if lo > 0 else "hurts" if hi < 0 else "no detectable difference") \
            if math.isfinite(lo) and math.isfinite(hi) else "no detectable difference"
        rows.append({"target": t, "group": kb.groups.get(t, t), "best_source": best,
                     "best_auc": float(means[best]), "scratch_auc": float(wide.loc[SCRATCH].mean()),
                     "gain": gain, "gain_paired": c["mean_diff"], "gain_lo": lo, "gain_hi": hi,
                     "p": c["p"], "n_paired": c["n"], "helps": gain > 0, "truth": call,
                     "truth_ci_only": ci_only})
    return pd.DataFrame(rows)


def method_calls(predictions: pd.DataFrame) -> pd.DataFrame:
    """method, target, call (True = its top non-scratch source is scored above scratch; NaN = no call)."""
    rows = []
    for (m, t), g in predictions.groupby(["method", "target"], sort=False):
        src = g["source"].to_numpy()
        s = g["score"].to_numpy(dtype=float)
        is_s = src == SCRATCH
        if not is_s.any():
            continue
        sc, other = s[is_s][0], s[~is_s]
        other = other[np.isfinite(other)]
        call = float(other.max() > sc) if math.isfinite(sc) and len(other) else math.nan
        rows.append({"method": m, "target": t, "call": call})
    return pd.DataFrame(rows, columns=["method", "target", "call"])


def sign_accuracy(calls: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per method: sign_k / sign_n right, Wilson CI; the same over detectable targets (sign_det_*)."""
    tr = truth.set_index("target")
    rows = []
    for m, g in calls.groupby("method", sort=False):
        g = g[g["target"].isin(tr.index) & g["call"].notna()]
        right = (g["call"].astype(bool).to_numpy() == tr.loc[g["target"], "helps"].to_numpy(bool))
        det = (tr.loc[g["target"], "truth"] != CALLS[1]).to_numpy()
        k, n = int(right.sum()), int(len(right))
        lo, hi = wilson(k, n)
        rows.append({"method": m, "sign_k": k, "sign_n": n, "sign": k / n if n else math.nan,
                     "sign_lo": lo, "sign_hi": hi, "sign_det_k": int(right[det].sum()),
                     "sign_det_n": int(det.sum())})
    return pd.DataFrame(rows)


def random_sign(truth: pd.DataFrame, n_sources: dict[str, int]) -> float:
    """Expected sign accuracy of a uniformly random ranking (scratch first with chance 1/n)."""
    v = [(1 - 1 / n_sources[t]) if h else 1 / n_sources[t]
         for t, h in zip(truth["target"], truth["helps"], strict=True) if n_sources.get(t, 0) > 0]
    return float(np.mean(v)) if v else math.nan


def breakdown(truth: pd.DataFrame) -> dict[str, int]:
    """Targets per truth call: helps / no detectable difference / hurts."""
    return {c: int((truth["truth"] == c).sum()) for c in CALLS}


@dataclass
class ScratchEval:
    """The truth per target, each method's calls and sign accuracy, and the words."""

    truth: pd.DataFrame
    calls: pd.DataFrame
    sign: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def caption(self) -> str:
        """What 'sign right' means, and the base rate an always-pretrain rule scores."""
        n, k = len(self.truth), int(self.truth["helps"].sum())
        return (f"{self.notes[-1]} An always-pretrain rule scores {k}/{n} here (the base rate); "
                f"the truth per target is in --format json/csv (scratch_truth).")

    def breakdown(self) -> dict[str, int]:
        return breakdown(self.truth)

    def to_dict(self) -> dict:
        return {"truth": json_records(self.truth),
                "breakdown": self.breakdown(), "n_targets": int(len(self.truth)),
                "n_helps_by_mean": int(self.truth["helps"].sum()),
                "sign": json_records(self.sign),
                "notes": self.notes}


def evaluate(kb: KnowledgeBase, predictions: pd.DataFrame, seed: int = 0) -> ScratchEval | None:
    """Truth, calls and sign accuracy for every method of ``predictions`` (None without scratch)."""
    if not has_scratch(predictions):
        return None
    ref = predictions[predictions["method"] == "static"]
    ref = ref if len(ref) else predictions
    cand = {str(t): list(dict.fromkeys(g["source"])) for t, g in ref.groupby("target", sort=False)}
    truth = scratch_truth(kb, cand, seed=seed)
    if truth.empty:
        return None
    calls = method_calls(predictions)
    sign = sign_accuracy(calls, truth)
    rnd = random_sign(truth, {t: len(c) for t, c in cand.items()})
    sign = pd.concat([sign, pd.DataFrame([{"method": "random", "sign": rnd,
                                           "sign_n": int(len(truth))}])], ignore_index=True)
    sign = sign.astype({c: "Int64" for c in ("sign_k", "sign_n", "sign_det_k", "sign_det_n")})
    b = breakdown(truth)
    n = len(truth)
    notes = [f"Is transfer worth it? On {n} held-out targets the best source beats scratch by its mean "
             f"AUC on {int(truth['helps'].sum())}; paired over seeds (95% bootstrap CI and Wilcoxon "
             f"p < 0.05 agreeing): pretraining helps detectably on {b['helps']}, no detectable "
             f"difference on {b['no detectable difference']}, hurts detectably on {b['hurts']} (the "
             "best source picked on the same seeds, which favours 'helps')."]
    diff = truth[truth["truth"] != truth["truth_ci_only"]]
    if len(diff):
        notes.append(f"{len(diff)} target(s) where the CI alone excludes 0 but Wilcoxon p ≥ 0.05: "
                     f"{', '.join(diff['target'])} (counted as no detectable difference).")
    notes.append("sign = targets where a method's call (its top source scored above scratch or not) "
                 "matches whether the best source's mean AUC beats scratch's, k/n with a Wilson 95% CI "
                 "over targets; random = its expected value.")
    return ScratchEval(truth, calls, sign, notes)


def with_sign(summary: pd.DataFrame, ev: ScratchEval | None) -> pd.DataFrame:
    """``summary`` with the sign columns merged in (unchanged when ``ev`` is None)."""
    if ev is None:
        return summary
    cols = ["method", "sign", "sign_lo", "sign_hi", "sign_k", "sign_n", "sign_det_k", "sign_det_n"]
    s = summary.drop(columns=[c for c in cols[1:] if c in summary.columns])
    return s.merge(ev.sign.reindex(columns=cols), on="method", how="left")


def format_sign(row: dict | pd.Series, ci: bool = True) -> str:
    """'11/16 [0.45, 0.86]', 'exp. 0.86' for random, '—' without a call."""
    n = row.get("sign_n")
    if n is None or not isinstance(n, numbers.Real) or not math.isfinite(float(n)) or int(n) == 0:
        return "—"
    if row.get("method") == "random" or pd.isna(row.get("sign_k")):
        return f"exp. {float(row['sign']):.2f}"
    s = f"{int(row['sign_k'])}/{int(n)}"
    if ci and pd.notna(row.get("sign_lo")):
        s += f" [{float(row['sign_lo']):.2f}, {float(row['sign_hi']):.2f}]"
    return s
