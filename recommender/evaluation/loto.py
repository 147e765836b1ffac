"""Nested leave-one-group-out (LOGO) evaluation: what ships, every candidate, the baselines.

Folds hold out whole independence groups (``KnowledgeBase.groups``: a derived task with
its parent, twins with each other): for held-out group g the model is trained on rows
whose target ∉ g and whose source ∉ g; fold features, label normalisation,
hyper-parameters and the choice of method use the training groups only (an inner LOGO,
:mod:`recommender.evaluation.selection`). The ``shipped`` row is what that procedure
ships per fold, so its mean estimates the whole procedure; every candidate's own row is
kept for reference and never picked from. Comparisons between methods are paired
(:mod:`recommender.evaluation.paired`), intervals conformal with measured coverage
(:mod:`recommender.evaluation.conformal`). Where scratch is a candidate, a ``scratch``
baseline row ("start from scratch": scratch first, then the fold's static order) is scored
like the others (:mod:`recommender.evaluation.scratch_sign`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from imagesets import UserError
from recommender.evaluation import conformal, scratch_sign, tuning
from recommender.evaluation.paired import paired_comparison
from recommender.evaluation.ranking_metrics import (
    METRICS,
    evaluate_scores,
    random_expected_metrics,
    rank_metrics,
    summarise,
)
from recommender.evaluation.selection import ROW_NAME, Folds, Procedure, group_of
from recommender.model import MetaDataset, baseline_scores, fold_rows
from recommender.model import meta_model as mm
from recommender.model.methods import auc_level, normal_scores

META_METHODS = ("meta", "meta_regressor", "meta_ranker")
RENAMED_BASELINES = {"static": "static_readme"}  # the shared README's definition keeps t's row
DUPLICATE_BASELINES = ("static_strict",)  # = the registry's static (held-out rows and columns out)
PROTOCOL = ("leave-one-group-out: a held-out group's targets, its rows as sources and its columns "
            "never reach the model, its statistics or its hyper-parameters; the shipped method is "
            "chosen per outer fold by an inner leave-one-group-out over the training groups; 95% CIs "
            "= seeded bootstrap over targets; paired comparisons over groups when groups hold "
            "several targets")


class ScoresFileError(UserError):
    """An external score table that cannot be read."""


@dataclass
class LotoResult:
    """Per-target metrics, their summary, held-out predictions, choices, intervals, comparisons."""

    kb_name: str
    per_target: pd.DataFrame  # method, target, METRICS, n_sources
    summary: pd.DataFrame  # method, n_targets, metric means + 95% CI
    predictions: pd.DataFrame  # method, target, source, score, auc
    choices: pd.DataFrame  # group, targets, scenario, method, inner_tau_w, interval q (per outer fold)
    inner: pd.DataFrame  # group, method, inner_tau_w (every candidate, every outer fold)
    intervals: pd.DataFrame  # scenario, group, target, source, auc, predicted_auc, lo, hi
    coverage: dict[str, dict]  # scenario → measured coverage of the shipped method's interval
    comparisons: list[dict]
    groups: dict[str, str]  # target → group
    scenarios: list[str]
    notes: list[str] = field(default_factory=list)
    procedure: Procedure | None = field(default=None, repr=False)

    def level_error(self, seed: int = 0) -> dict[str, dict]:
        """Per scenario: the held-out mean absolute error of the shipped predicted AUC against the
        KB's average level (a folder-blind prediction, from the training targets only), per target
        then paired over groups; plus coverage and width on the easier / harder half of targets."""
        out = {}
        iv = self.intervals
        if "baseline_auc" not in iv:
            return out
        for scen in self.scenarios:
            c = iv[(iv["scenario"] == scen) & np.isfinite(iv["auc"].to_numpy(dtype=float))]
            if c.empty:
                continue
            err = (c["predicted_auc"] - c["auc"]).abs().groupby(c["target"]).mean()
            base = (c["baseline_auc"] - c["auc"]).abs().groupby(c["target"]).mean()
            lvl = (c["level"] - c["auc"]).abs().groupby(c["target"]).mean() if "level" in c else None
            comp = paired_comparison(err, base, groups=self.groups, higher_is_better=False, seed=seed)
            out[scen] = {"row": ROW_NAME[scen], "mae": float(err.mean()), "baseline_mae": float(base.mean()),
                         "level_mae": None if lvl is None else float(lvl.mean()),
                         "n_targets": int(len(err)), "n_cells": int(len(c)), "vs_baseline": comp,
                         "by_difficulty": conformal.coverage_by_scale(c, self.coverage.get(scen, {}).get(
                             "nominal", conformal.NOMINAL))}
        return out

    @property
    def n_candidates(self) -> dict[str, int]:
        """How many declared candidates each scenario's nested selection searched."""
        return {s: self.procedure.n_candidates(s) for s in self.scenarios} if self.procedure else {}

    @property
    def n_groups(self) -> int:
        return len(set(self.groups.values()))

    @property
    def coverage80(self) -> float:
        """Measured coverage of the ``any`` procedure's interval (NaN when it gives none)."""
        return float(self.coverage.get("any", {}).get("coverage", math.nan))

    def comparison(self, a: str, b: str, metric: str = "tau_w") -> dict | None:
        for c in self.comparisons:
            if c["a"] == a and c["b"] == b and c["metric"] == metric:
                return c
        return None

    def verdict(self) -> dict:
        """Shipped vs static (paired, τw and regret) per scenario, in words."""
        out = {}
        for scen in self.scenarios:
            row = ROW_NAME[scen]
            counts = self.choices[self.choices["scenario"] == scen]["method"].value_counts()
            out[scen] = {"row": row, "chosen_per_fold": {str(k): int(v) for k, v in counts.items()},
                         "vs_static": self.comparison(row, "static"),
                         "vs_static_regret": self.comparison(row, "static", "regret")}
        return out


def logo_groups(md: MetaDataset) -> list[tuple[str, list[str]]]:
    """(group, its targets) in the KB's target order: the outer folds."""
    return list(Folds(md).groups.items())


def logo_folds(md: MetaDataset) -> list[str]:
    """The held-out targets, grouped fold by fold (LOGO order)."""
    return [t for _, ts in logo_groups(md) for t in ts]


def _scores_rows(method: str, target: str, test: pd.DataFrame, score: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"method": method, "target": target, "source": test["source"].to_numpy(),
                         "score": np.asarray(score, dtype=float), "auc": test["auc"].to_numpy()})


def fold_predictions(md: MetaDataset, target: str, study_params: dict[str, dict]
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Held-out scores of meta-models with ``study_params`` for ``target`` (its group held out),
    the first one's predicted AUC (level from training targets only), and the test rows."""
    from recommender.model.methods import Context, MetaFitted

    train, test = fold_rows(md, [target])
    ctx = Context.of(md)
    preds, first = [], None
    for method, params in study_params.items():
        fitted = MetaFitted.fit(train, Context(ctx.pair_features, ctx.directions, ctx.kinds,
                                               ctx.groups, params))
        s = fitted.score(test)
        first = s if first is None else first
        preds.append(_scores_rows(method, target, test, s))
    z = normal_scores(first, test["target"].to_numpy())
    lv = auc_level(train)
    band = pd.DataFrame({"source": test["source"].to_numpy(),
                         "predicted_auc": lv["mu"] + lv["sd"] * np.asarray(z),
                         "auc": test["auc"].to_numpy(), "target": target})
    return pd.concat(preds, ignore_index=True), band, test


def _order(methods: list[str]) -> list[str]:
    head = [*ROW_NAME.values(), "static", "residual", "learned", "learned+est", "estimate:best", "stack+est",
            "rankavg:static+all", "residual+est", *META_METHODS, *(f"{m}+est" for m in META_METHODS)]
    rank = {m: i for i, m in enumerate(head)}

    def key(m: str) -> tuple[int, int, str]:
        if m in rank:
            return (0, rank[m], m)
        if m == "random":
            return (9, 0, m)
        pre = m.split(":", 1)[0]
        return ({"estimate": 1, "rankavg": 2}.get(pre, 3), 0, m)

    return sorted(methods, key=key)


def comparisons(per_target: pd.DataFrame, groups: dict[str, str], scenarios: list[str],
                seed: int = 0) -> list[dict]:
    """The paired comparisons evaluate-meta prints: each shipped row vs static, vs the best single
    estimator, the estimate procedure vs the estimate-free one, and the meta-model vs static."""
    wide = {m: per_target.pivot_table(index="target", columns="method", values=m, aggfunc="first")
            for m in ("tau_w", "regret")}
    have = set(wide["tau_w"].columns)
    est = [m for m in have if m.startswith("estimate:")]
    best_est = max(est, key=lambda m: wide["tau_w"][m].mean()) if est else None
    pairs = []
    for scen in scenarios:
        pairs.append((ROW_NAME[scen], "static", ""))
    if "estimates" in scenarios:
        if best_est:
            pairs.append((ROW_NAME["estimates"], best_est, "best single estimator by its outer mean τw "
                          "(picked on the outer figures, so the comparison favours the estimator)"))
        pairs.append((ROW_NAME["estimates"], ROW_NAME["any"], ""))
    pairs.append(("learned+est", "static", "the learned model alone, not what ships"))
    pairs.append(("learned+est", "estimate:best", "the learned model vs the inner-best single estimator"))
    out = []
    for a, b, why in pairs:
        if a not in have or b not in have:
            continue
        for metric, hib in (("tau_w", True), ("regret", False)):
            c = paired_comparison(wide[metric][a], wide[metric][b], groups=groups,
                                  higher_is_better=hib, seed=seed)
            out.append({"a": a, "b": b, "metric": metric, "note": why} | c)
    return out


def run_loto(md: MetaDataset, retune: bool = False, n_trials: int = tuning.N_TRIALS,
             storage: str | None = None, seed: int = mm.SEED,
             progress: Callable[[str], None] | None = None,
             nominal: float = conformal.NOMINAL,
             on_trial: Callable[[], None] | None = None) -> LotoResult:
    """Nested LOGO over every group: shipped rows, every candidate, baselines, random expectation.

    ``progress(group)`` before each outer fold; ``on_trial()`` after each Optuna trial run
    (none when every stored study still fits the KB)."""
    folds = Folds(md)
    proc = Procedure(md, folds, retune=retune, n_trials=n_trials, storage=storage, nominal=nominal,
                     on_trial=on_trial)
    preds, ivs, choices, inner, per = [], [], [], [], []
    for g in folds.labels:
        if progress:
            progress(g)
        fo = proc.outer_fold(g)
        preds.append(fo.predictions)
        ivs.append(fo.intervals.assign(group=g))
        for scen, ch in fo.choices.items():
            choices.append({"group": g, "targets": ",".join(fo.targets), "scenario": scen,
                            "method": ch.method, "inner_tau_w": ch.inner_tau_w,
                            "interval_q": ch.calibration.get("q"),
                            "scale_power": ch.calibration.get("scale_power"),
                            "scale_kind": ch.calibration.get("scale_kind"),
                            "calibration_targets": ch.calibration.get("n_targets")})
        inner += [{"group": g, "method": m, "inner_tau_w": v} for m, v in fo.inner.items()]
        _, test = folds.outer(g)
        for t in fo.targets:
            tt = test[test["target"] == t].reset_index(drop=True)
            for name, s in baseline_scores(md, t, tt).items():
                if name in DUPLICATE_BASELINES or name.startswith("estimate:"):
                    continue
                preds.append(_scores_rows(RENAMED_BASELINES.get(name, name), t, tt, s.to_numpy(dtype=float)))
            per.append({"method": "random", "target": t}
                       | random_expected_metrics(tt["auc"].to_numpy(), seed=seed))
    if any(m.tuned for m in proc.cands.values()):
        keep = {tuning.study_name(md.kb_name, g) for g in folds.labels} | {tuning.study_name(md.kb_name, None)}
        tuning.prune(md.kb_name, keep, storage)
    pred = pd.concat(preds, ignore_index=True)
    if scratch_sign.has_scratch(pred):  # "start from scratch": scratch first, then the static order
        pred = pd.concat([pred, scratch_sign.scratch_baseline_rows(pred)], ignore_index=True)
    for (method, t), g in pred.groupby(["method", "target"], sort=False):
        per.append({"method": method, "target": t} | rank_metrics(g["score"].to_numpy(), g["auc"].to_numpy()))
    per_target = pd.DataFrame(per)
    order = {m: i for i, m in enumerate(_order(list(per_target["method"].unique())))}
    per_target = per_target.sort_values("method", key=lambda c: c.map(order), kind="stable")
    per_target = per_target.reset_index(drop=True)
    intervals = pd.concat(ivs, ignore_index=True)
    coverage = {scen: conformal.coverage(intervals[intervals["scenario"] == scen], nominal)
                for scen in proc.scenarios}
    tgroups = {t: group_of(md, t) for t in md.targets}
    notes = []
    n_t = per_target["target"].nunique()
    if n_t < 5:
        notes.append(f"only {n_t} targets: LOGO ranking metrics are anecdotal here (no CIs), "
                     "the correlation report is the main result for this KB")
    return LotoResult(md.kb_name, per_target, summarise(per_target, seed=seed), pred,
                      pd.DataFrame(choices), pd.DataFrame(inner), intervals, coverage,
                      comparisons(per_target, tgroups, proc.scenarios, seed=seed), tgroups,
                      list(proc.scenarios), notes, proc)


# -- external score tables -------------------------------------------------------------
def load_score_table(path: str | Path) -> pd.DataFrame:
    """A sources × targets table from a wide CSV (first text column = source) or long source,target,score."""
    p = Path(path)
    if not p.exists():
        raise ScoresFileError(f"scores file not found: {p}")
    try:
        df = pd.read_csv(p)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise ScoresFileError(f"cannot read scores file {p}: {exc}") from exc
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed")]]
    cols = {str(c).lower(): c for c in df.columns}
    if {"source", "target"} <= set(cols) and len(df.columns) == 3:
        val = [c for c in df.columns if str(c).lower() not in ("source", "target")][0]
        df[val] = _finite_scores(df[[val]], p, df[cols["source"]].astype(str),
                                 df[cols["target"]].astype(str))[val]
        return df.pivot_table(index=cols["source"], columns=cols["target"], values=val, aggfunc="mean")
    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if not text:
        raise ScoresFileError(f"{p}: no source column (wide: first text column; long: source,target,score)")
    wide = df.set_index(text[0])
    wide.index = wide.index.astype(str)
    return _finite_scores(wide, p)


def _finite_scores(table: pd.DataFrame, p: Path, sources: pd.Series | None = None,
                   targets: pd.Series | None = None) -> pd.DataFrame:
    """``table`` as floats, or a one-line ScoresFileError naming the first text or ±inf cell
    (an empty cell is a missing score; a word or an infinity is a broken file, not a score)."""
    num = table.apply(pd.to_numeric, errors="coerce")
    bad = (num.isna() & table.notna() & (table.astype(str).apply(lambda c: c.str.strip()) != "")) \
        | np.isinf(num.to_numpy(dtype=float))
    if bad.to_numpy().any():
        i, j = (int(v[0]) for v in np.nonzero(bad.to_numpy()))
        where = (f"source {sources.iloc[i]}, target {targets.iloc[i]}" if sources is not None
                 else f"source {table.index[i]}, target {table.columns[j]}")
        kind = "infinite" if np.isinf(float(num.iat[i, j])) else "non-numeric"
        raise ScoresFileError(f"{p}: {kind} score '{table.iat[i, j]}' ({where}); scores must be "
                              f"finite numbers, an empty cell for a missing one ({int(bad.to_numpy().sum())} bad cell(s))")
    return num.astype(float)


def evaluate_external(md: MetaDataset, table: pd.DataFrame, name: str = "scores") -> pd.DataFrame:
    """Per-target metrics of an external score table against the KB's AUCs (targets with scores)."""
    per = evaluate_scores(table, md.matrix, name)
    if per.empty:
        raise ScoresFileError("the scores file shares no (source, target) pairs with the KB")
    return per[["method", "target", *METRICS, "n_sources"]]


# -- the shipped model ------------------------------------------------------------------
def _metric_block(row: pd.Series) -> dict:
    return {m: {"mean": float(row[m]), "lo": float(row[f"{m}_lo"]), "hi": float(row[f"{m}_hi"])}
            for m in METRICS} | {"top1_count": int(row["top1_count"])}


def shipped_summary(result: LotoResult, scenario: str = "any") -> dict:
    """What the ``scenario`` procedure achieved under nested LOGO, for manifests and ``recommend``."""
    s = result.summary.set_index("method")
    row = ROW_NAME[scenario]
    if row not in s.index:
        return {}
    v = result.verdict().get(scenario, {})
    return {
        "row": row,
        "n_targets": int(s.loc[row, "n_targets"]),
        "n_groups": result.n_groups,
        "mean": _metric_block(s.loc[row]),
        "chosen_per_fold": v.get("chosen_per_fold", {}),
        "vs_static": v.get("vs_static"),
        "coverage": result.coverage.get(scenario, {}),
        "coverage80": result.coverage.get(scenario, {}).get("coverage"),
        "protocol": PROTOCOL,
    }


def validated_summary(result: LotoResult) -> dict:
    """The ``any`` procedure's summary plus every method's means (kept for report writers)."""
    s = result.summary.set_index("method")
    return shipped_summary(result, "any") | {
        "all_methods": {m: _metric_block(s.loc[m]) | {"n_targets": int(s.loc[m, "n_targets"])}
                        for m in s.index}}


def train_final(md: MetaDataset, result: LotoResult | None = None, retune: bool = False,
                n_trials: int = tuning.N_TRIALS, storage: str | None = None,
                out_root: Path | None = None, extra: dict | None = None) -> Path:
    """Choose per scenario by the same inner LOGO on ALL groups, fit on all rows, save the model.

    The shipped method is never picked from the outer figures: those (``result``) are only
    recorded beside it, as its validation.
    """
    from recommender.model import all_rows

    proc = (result.procedure if result is not None and result.procedure is not None
            else Procedure(md, retune=retune, n_trials=n_trials, storage=storage))
    means, choices, params = proc.final()
    shipped = {}
    for scen, ch in choices.items():
        entry = proc.fit_final(ch) | {"validated": shipped_summary(result, scen) if result is not None else {}}
        if not (entry["validated"].get("coverage") or {}).get("n_cells"):
            # an interval is shipped only when the outer folds measured its coverage
            entry["calibration"] = dict(entry["calibration"], q=None,
                                        no_interval="coverage not measured under nested leave-one-group-out")
        shipped[scen] = entry
    # the explaining meta-model: the shipped one when a meta-model ships (same params, same rows,
    # deterministic: the same booster), else the inner-best estimate-free meta-model
    any_choice = choices["any"]
    main = ((any_choice.params if any_choice.method.startswith("meta") else None)
            or params.get("meta") or dict(mm.DEFAULT_PARAMS, features="prior_card"))
    ctx = proc.ctx
    manifest = {
        "method": shipped["any"]["method"],
        "protocol": PROTOCOL,
        "context": {"pair_features": ctx.pair_features, "directions": ctx.directions,
                    "kinds": ctx.kinds, "groups": ctx.groups},
        "final_inner_tau_w": {k: (None if not math.isfinite(v) else v) for k, v in means.items()},
        "optuna": {"storage": f"artifacts/optuna/{md.kb_name}.db",
                   "study": tuning.study_name(md.kb_name, None), "sampler": "TPESampler(seed=0)",
                   "n_trials": n_trials},
        "per_fold_choices": result.choices.to_dict(orient="records") if result is not None else [],
    } | (extra or {})
    from recommender.model.shipped import models_dir, save_recommender

    root = out_root or models_dir()
    return save_recommender(root / md.kb_name, md.kb_name, shipped, main, all_rows(md),
                               md.pair_features, ctx.estimators, manifest)
