"""LightGBM meta-models: a regressor of per-target normalised AUC and a lambdarank ranker.

Data are tiny (≈12 targets × ≤14 sources), so trees are small, seeds are fixed and
LightGBM runs single-threaded and ``deterministic`` — the same KB gives the same model.
The regressor predicts the within-target z of AUC; the ranker learns integer grades.
Feature sets are searched by Optuna (:mod:`recommender.evaluation.tuning`); the shipped
recommender that may hold one of these is :mod:`recommender.model.shipped`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from lightgbm import Booster, LGBMRanker, LGBMRegressor

SEED = 0
KINDS = ("regressor", "ranker")
FEATURE_SETS = ("prior", "prior_card", "prior_pair", "all")
NOEST_SETS = ("prior_pair_noest", "all_noest")  # searched only when the KB has estimates
DEFAULT_PARAMS: dict = {
    "kind": "regressor", "features": "prior_pair", "num_leaves": 4, "min_child_samples": 5,
    "n_estimators": 100, "learning_rate": 0.05, "reg_lambda": 1.0, "colsample_bytree": 0.8,
    "grades": "rank",
}
_FIXED = {"deterministic": True, "num_threads": 1, "verbose": -1, "random_state": SEED,
          "force_col_wise": True, "min_data_in_bin": 1, "min_child_weight": 1e-3}
_CARD_KEYS = ("log_n_images", "log_n_classes", "channels", "resolution", "is_medical", "multilabel")
_PAIR_CARD = ("pair_same_domain", "pair_same_modality", "pair_same_channels", "pair_log_size_ratio")


def feature_sets(estimators: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """The feature sets Optuna searches: the four below, plus estimate-free variants when the KB has estimates."""
    return FEATURE_SETS + (NOEST_SETS if estimators else ())


def feature_columns(columns: list[str] | pd.Index, feature_set: str, pair_features: list[str],
                    estimators: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The model inputs of a named feature set, in a fixed order.

    prior: the in-fold static priors; prior_card: + card facts of both sides and their
    comparisons; prior_pair: + the KB's pair features (similarity, expert, transferability)
    raw and within-target z, and the prior re-weighted by pair-feature profile likeness;
    all: + image meta-features and their |src − tgt| differences. ``*_noest``: the same
    without transferability estimates (``estimators``) and the profile prior built on them,
    for targets that have no estimates.
    """
    noest = feature_set.endswith("_noest")
    base = feature_set[: -len("_noest")] if noest else feature_set
    skip = set(estimators) if noest else set()
    cols = list(columns)
    prior = [c for c in ("fold_static_prior", "fold_static_prior_tz", "fold_modality_prior") if c in cols]
    profile = [c for c in ("fold_profile_prior",) if c in cols and not noest]
    card = [c for c in cols if any(c == f"{p}_{k}" for p in ("src", "tgt") for k in _CARD_KEYS)]
    card += [c for c in _PAIR_CARD if c in cols]
    pair_all = [c for c in cols for f in pair_features if c in (f"pair_{f}", f"pair_{f}_tz")]
    pair = [c for c in cols for f in pair_features if f not in skip and c in (f"pair_{f}", f"pair_{f}_tz")]
    if base == "prior":
        chosen = prior
    elif base == "prior_card":
        chosen = prior + card
    elif base == "prior_pair":
        chosen = prior + profile + pair
    elif base == "all":
        rest = [c for c in cols if c.startswith(("src_", "tgt_", "pair_")) and c not in card + pair_all]
        chosen = prior + profile + card + pair + rest
    else:
        raise ValueError(f"unknown feature set {feature_set!r}")
    return list(dict.fromkeys(chosen))


def _lgbm_params(params: dict) -> dict:
    keys = ("num_leaves", "min_child_samples", "n_estimators", "learning_rate", "reg_lambda",
            "colsample_bytree")
    p = {k: params.get(k, DEFAULT_PARAMS[k]) for k in keys}
    return p | _FIXED


def rank_grades(rows: pd.DataFrame, scheme: str = "rank") -> np.ndarray:
    """Integer relevance per target: 0 = worst source. ``rank``: dense rank; ``bins4``: quartiles."""
    r = rows.groupby("target", sort=False)["auc"].rank(method="first", ascending=True) - 1
    if scheme == "bins4":
        n = rows.groupby("target", sort=False)["auc"].transform("size")
        return np.floor(4 * r / n).clip(0, 3).astype(int).to_numpy()
    return r.astype(int).to_numpy()


def _usable(X: pd.DataFrame) -> pd.DataFrame:
    return X.astype(float)


def fit_model(params: dict, train: pd.DataFrame, cols: list[str], objective: str | None = None,
              alpha: float | None = None) -> LGBMRegressor | LGBMRanker:
    """Fit the regressor (label_z) or the ranker (integer grades, group = target) on ``train``."""
    kind = params.get("kind", "regressor") if objective is None else "regressor"
    lp = _lgbm_params(params)
    if kind == "ranker":
        tr = train.sort_values("target", kind="stable")
        groups = tr.groupby("target", sort=False).size().to_numpy()
        grades = rank_grades(tr, params.get("grades", "rank"))
        n_levels = int(grades.max()) + 1
        model = LGBMRanker(objective="lambdarank", label_gain=[2.0**g - 1 for g in range(max(n_levels, 2))],
                           lambdarank_truncation_level=max(n_levels, 3), **lp)
        model.fit(_usable(tr[cols]), grades, group=groups)
        return model
    extra = {"objective": objective, "alpha": alpha} if objective else {"objective": "regression"}
    model = LGBMRegressor(**extra, **lp)
    model.fit(_usable(train[cols]), train["label_z"].to_numpy(dtype=float))
    return model


def predict(model: LGBMRegressor | LGBMRanker, rows: pd.DataFrame, cols: list[str]) -> np.ndarray:
    return np.asarray(model.predict(_usable(rows[cols])), dtype=float)


def contributions(model: LGBMRegressor | LGBMRanker | Booster, rows: pd.DataFrame,
                  cols: list[str]) -> pd.DataFrame:
    """LightGBM ``pred_contrib`` per row: index = source, one column per feature plus ``bias``.

    Each row sums to the model's raw score, so the largest |values| are the reasons a
    source ranks where it does (``recommend`` shows the top three).
    """
    contrib = np.asarray(model.predict(_usable(rows[cols]), pred_contrib=True))
    return pd.DataFrame(contrib, columns=[*cols, "bias"], index=pd.Index(rows["source"], name="source"))
