"""Leave-one-target-out evaluation of the meta-model and every baseline, in one loop.

For held-out target t (sklearn ``LeaveOneGroupOut`` semantics, groups = targets) the
model is trained on rows whose target ∉ {t, twins(t)} and whose source ∉ {t, twins(t)};
fold features, label normalisation and hyper-parameters (an inner LOTO, see
:mod:`recommender.evaluation.tuning`) use training targets only. t's candidates are the sources
measured for it. Three meta-model rows are reported: ``meta`` (kind and feature set
chosen by the inner loop), and the inner-best ``meta_regressor`` and ``meta_ranker``
— all of them, so no variant is picked on the outer result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import LeaveOneGroupOut

from imagesets import UserError
from recommender.evaluation import tuning
from recommender.evaluation.ranking_metrics import (
    METRICS,
    evaluate_scores,
    random_expected_metrics,
    rank_metrics,
    summarise,
)
from recommender.model import MetaDataset, baseline_scores, fold_rows
from recommender.model import meta_model as mm

META_METHODS = ("meta", "meta_regressor", "meta_ranker")


class ScoresFileError(UserError):
    """An external score table that cannot be read."""


@dataclass
class LotoResult:
    """Per-target metrics, their summary and every held-out prediction."""

    kb_name: str
    per_target: pd.DataFrame  # method, target, METRICS, n_sources
    summary: pd.DataFrame  # method, n_targets, metric means + 95% CI
    predictions: pd.DataFrame  # method, target, source, score, auc
    choices: pd.DataFrame  # target, kind, features, inner score (per outer fold)
    coverage80: float = math.nan  # share of held-out AUCs inside the regressor's 80% band
    n_cells: int = 0
    notes: list[str] = field(default_factory=list)

    def verdict(self) -> dict:
        """Did the inner-selected meta-model beat the static ranking (higher mean τw, regret no worse)?"""
        s = self.summary.set_index("method")
        if "meta" not in s.index or "static" not in s.index:
            return {"beat_static": False, "reason": "meta-model or static baseline missing"}
        m, st = s.loc["meta"], s.loc["static"]
        beat = bool(m["tau_w"] > st["tau_w"] and m["regret"] <= st["regret"])
        return {
            "beat_static": beat,
            "meta_tau_w": float(m["tau_w"]), "static_tau_w": float(st["tau_w"]),
            "meta_regret": float(m["regret"]), "static_regret": float(st["regret"]),
            "rule": "beat = mean τw higher AND mean regret not higher, over the same LOTO targets",
        }


def logo_folds(md: MetaDataset) -> list[str]:
    """Held-out targets in LeaveOneGroupOut order (groups = target of each row)."""
    rows = md.rows
    out = []
    for _, test_idx in LeaveOneGroupOut().split(rows, groups=rows["target"]):
        out.append(str(rows["target"].iloc[test_idx[0]]))
    return out


def _scores_rows(method: str, target: str, test: pd.DataFrame, score: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"method": method, "target": target, "source": test["source"].to_numpy(),
                         "score": np.asarray(score, dtype=float), "auc": test["auc"].to_numpy()})


def fold_predictions(md: MetaDataset, target: str, study_params: dict[str, dict]
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Held-out scores of every meta variant for ``target``, the regressor's 80% AUC band, test rows."""
    train, test = fold_rows(md, [target])
    preds = []
    for method, params in study_params.items():
        cols = mm.feature_columns(train.columns, params["features"], md.pair_features)
        model = mm.fit_model(params, train, cols)
        preds.append(_scores_rows(method, target, test, mm.predict(model, test, cols)))
    rp = study_params["meta_regressor"]
    cols = mm.feature_columns(train.columns, rp["features"], md.pair_features)
    band = mm.predict_auc_band(mm.interval_models(rp, train, cols), test, cols, mm.auc_scale(train))
    band.insert(0, "source", test["source"].to_numpy())
    band["auc"] = test["auc"].to_numpy()
    band["target"] = target
    return pd.concat(preds, ignore_index=True), band, test


def run_loto(md: MetaDataset, retune: bool = False, n_trials: int = tuning.N_TRIALS,
             storage: str | None = None, seed: int = mm.SEED,
             progress: Callable[[str], None] | None = None) -> LotoResult:
    """The full LOTO comparison for one KB (meta variants + baselines + random expectation)."""
    preds, bands, choices, per = [], [], [], []
    for t in logo_folds(md):
        if progress:
            progress(t)
        study = tuning.get_study(md, t, retune=retune, n_trials=n_trials, storage=storage)
        best, score = tuning.best_params(study)
        reg, reg_s = tuning.best_params(study, "regressor")
        rank, rank_s = tuning.best_params(study, "ranker")
        choices.append({"target": t, "kind": best["kind"], "features": best["features"],
                        "inner_tau_w": score, "inner_tau_w_regressor": reg_s,
                        "inner_tau_w_ranker": rank_s, "n_trials": len(study.trials)})
        p, band, test = fold_predictions(md, t, {"meta": best, "meta_regressor": reg, "meta_ranker": rank})
        preds.append(p)
        bands.append(band)
        for name, s in baseline_scores(md, t, test).items():  # every registered baseline
            preds.append(_scores_rows(name, t, test, s.to_numpy(dtype=float)))
        per.append({"method": "random", "target": t}
                   | random_expected_metrics(test["auc"].to_numpy(), seed=seed))
    pred = pd.concat(preds, ignore_index=True)
    for (method, t), g in pred.groupby(["method", "target"], sort=False):
        per.append({"method": method, "target": t} | rank_metrics(g["score"].to_numpy(), g["auc"].to_numpy()))
    per_target = pd.DataFrame(per)
    order = {m: i for i, m in enumerate([*META_METHODS, "static", "static_strict", "always_imagenet",
                                         "largest_source"])}
    per_target["_o"] = per_target["method"].map(lambda m: order.get(m, 50 if m != "random" else 99))
    per_target = per_target.sort_values(["_o", "method"], kind="stable").drop(columns="_o")
    per_target = per_target.reset_index(drop=True)
    band = pd.concat(bands, ignore_index=True)
    inside = (band["auc"] >= band["lo80"]) & (band["auc"] <= band["hi80"])
    notes = []
    n_t = per_target["target"].nunique()
    if n_t < 5:
        notes.append(f"only {n_t} targets: LOTO ranking metrics are anecdotal here, "
                     "the correlation report is the main result for this KB")
    return LotoResult(md.kb_name, per_target, summarise(per_target, seed=seed), pred,
                      pd.DataFrame(choices), float(inside.mean()), int(len(band)), notes)


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


def validated_summary(result: LotoResult) -> dict:
    """What the shipped method achieved under LOTO (+ every method's means), for manifests and `recommend`."""
    s = result.summary.set_index("method")
    verdict = result.verdict()
    if verdict["beat_static"]:
        method = "meta"
    else:
        shippable = [m for m in s.index if m not in (*META_METHODS, "random", "static_strict",
                                                     "always_imagenet")]
        method = max(shippable, key=lambda m: (s.loc[m, "tau_w"], -s.loc[m, "regret"]))
    return {
        "method": method,
        "n_targets": int(s.loc[method, "n_targets"]),
        "mean": _metric_block(s.loc[method]),
        "beat_static": verdict["beat_static"],
        "verdict": verdict,
        "coverage80": result.coverage80,
        "all_methods": {m: _metric_block(s.loc[m]) | {"n_targets": int(s.loc[m, "n_targets"])}
                        for m in s.index},
        "protocol": "leave-one-target-out; target and its twins dropped as rows and columns; "
                    "hyper-parameters by inner LOTO (Optuna TPE); 95% CI = seeded bootstrap over targets",
    }


def train_final(md: MetaDataset, result: LotoResult, retune: bool = False,
                n_trials: int = tuning.N_TRIALS, storage: str | None = None,
                out_root: Path | None = None) -> Path:
    """Tune on LOTO over ALL targets, train on all rows, save to ``artifacts/models/<kb>/``."""
    from recommender.model import all_rows, baseline_column, static_z_quantiles

    study = tuning.get_study(md, None, retune=retune, n_trials=n_trials, storage=storage)
    main, main_s = tuning.best_params(study)
    reg, reg_s = tuning.best_params(study, "regressor")
    validated = validated_summary(result)
    base = baseline_column(validated["method"], md) if validated["method"] != "meta" else None
    manifest = {
        "method": validated["method"],
        "meta_kind": main["kind"],
        "baseline_column": list(base) if base else None,
        "validated": validated,
        "beat_static": validated["beat_static"],
        "inner_loto_tau_w": {"main": main_s, "regressor": reg_s},
        "optuna": {"storage": f"artifacts/optuna/{md.kb_name}.db",
                   "study": tuning.study_name(md.kb_name, None), "n_trials": len(study.trials),
                   "sampler": "TPESampler(seed=0)"},
        "per_fold_choices": result.choices.to_dict(orient="records"),
    }
    root = out_root or mm.models_dir()
    return mm.save_recommender(root / md.kb_name, md.kb_name, main, reg, all_rows(md),
                               md.pair_features, static_z_quantiles(md.matrix), manifest)
