"""The learned model of a cell's outcome: AUC level, gain over scratch and order, from one feature set.

A new folder is known by what can be measured on it: its card (classes, images per class in
its training rows, native size, channels, modality), its label-based meta-features (how
separable its training rows are), every source's transferability estimates on it and
scratch's (scratch's k-NN accuracy is how separable it is with no pretraining at all), the
pair similarities (Task2Vec included) and each source's record on the KB's training targets.

Two siblings share those features (fixed settings, no search on the outer folds):

* the **level** model predicts a target's mean AUC over the sources from the target-level
  features, so an easy 2-class X-ray folder and a 5-grade knee folder get different levels.
  It has one label per training target (≈ 15–27), too few for trees: a ridge regression on
  standardised features, its penalty chosen by leave-one-out on the training targets only
  (on KB local v2, leave-one-group-out: MAE 0.044 against 0.067 for a LightGBM level model
  and 0.074 for the KB's average level — measured while designing it; v3 is the check);
* the **deviation** model (LightGBM) predicts a cell's AUC minus its target's mean, in AUC units, from
  every feature, so a source's predicted gain over scratch is the difference of two of its
  predictions, not a function of rank.

Predicted AUC = level + deviation (centred within the target); order = deviation; predicted
gain = deviation(source) − deviation(scratch). The table, the gain column and the verdict
therefore come from one model and agree. ``difficulty`` (the predicted room below AUC 1) is
one scale by which :mod:`recommender.evaluation.conformal` may normalise its residuals, so an
easy folder gets a narrow interval and a hard one a wide one; the level model's other is the
folder's ``novelty`` (:mod:`recommender.model.novelty`: its distance from the training
targets in the level inputs), so a folder unlike every KB target can get a wider one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from lightgbm import Booster, LGBMRegressor
from sklearn.linear_model import RidgeCV

from recommender.model.novelty import Novelty, fit_standardiser, standardise
from recommender.model.scoring import REFERENCE, Context, Fitted, difficulty  # noqa: F401 (re-exported)

SEED = 0
# Small trees, strong shrinkage: ≈ 20–30 training targets, ≈ 25 sources each.
# up to 1e5: on standardised inputs that is the training mean level, so leave-one-out on the
# training targets falls back to the folder-blind level when the features do not help
# Below this many training targets a learned level is noise (on juodelyte2024, 10-11 training
# targets, it was off by 0.140 against 0.101 for the mean level): the KB's mean level is used.
MIN_LEVEL_TARGETS = 12
MIN_FEATURE_COVERAGE = 0.75
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 29))
DEVIATION_PARAMS = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 6, "reg_lambda": 1.0,
                    "colsample_bytree": 0.8, "subsample": 1.0, "min_child_samples": 10}
_FIXED = {"deterministic": True, "num_threads": 1, "verbose": -1, "random_state": SEED,
          "force_col_wise": True, "min_data_in_bin": 1, "min_child_weight": 1e-3}
# Target facts a user's folder has too (card + label meta-features on its training rows).
TARGET_FACTS = ("tgt_log_n_classes", "tgt_log_train_per_class", "tgt_channels", "tgt_resolution",
                "tgt_is_medical", "tgt_label.nn1_accuracy", "tgt_label.fisher_ratio",
                "tgt_label.silhouette", "tgt_dataset.class_entropy", "tgt_dataset.imbalance_ratio",
                "tgt_dataset.modality_code")
# Pair features read all of a KB target's labelled rows (OTDD): left out, a user's folder is
# not seen that way by the KB's training targets' features.
EXCLUDED_PAIRS = ("dist_otdd",)


def _estimators(ctx: Context, use_estimates: bool) -> list[str]:
    return list(ctx.estimators) if use_estimates else []


def with_outcome_features(rows: pd.DataFrame, ctx: Context, use_estimates: bool) -> pd.DataFrame:
    """``rows`` plus ``tgt_scratch_<e>`` (scratch's estimate on the row's target, for every row of
    that target) and ``pair_<e>_vs_scratch`` (the source's estimate minus scratch's)."""
    out = rows.copy()
    for e in _estimators(ctx, use_estimates):
        col = f"pair_{e}"
        if col not in out:
            continue
        ref = out[col].where(out["source"].astype(str) == REFERENCE)
        sc = ref.groupby(out["target"].to_numpy(), sort=False).transform("max")
        out[f"tgt_scratch_{e}"] = sc
        out[f"{col}_vs_scratch"] = ctx.directions.get(e, 1) * (out[col] - sc)
    return out


def level_columns(rows: pd.DataFrame, ctx: Context, use_estimates: bool) -> list[str]:
    """Target-level inputs of the level model (the same for every row of a target)."""
    cols = [c for c in TARGET_FACTS if c in rows]
    cols += [f"tgt_scratch_{e}" for e in _estimators(ctx, use_estimates) if f"tgt_scratch_{e}" in rows]
    return cols


def deviation_columns(rows: pd.DataFrame, ctx: Context, use_estimates: bool) -> list[str]:
    """Inputs of the deviation model: the target facts, the source's record, pair features."""
    ests = set(ctx.estimators)
    cols = level_columns(rows, ctx, use_estimates)
    cols += [c for c in ("fold_static_prior", "fold_static_prior_tz", "fold_modality_prior",
                         "fold_gain_prior") if c in rows]
    for f in ctx.pair_features:
        if f in EXCLUDED_PAIRS or (f in ests and not use_estimates):
            continue
        cols += [c for c in (f"pair_{f}", f"pair_{f}_tz", f"pair_{f}_vs_scratch") if c in rows]
    cols += [c for c in ("pair_same_domain", "pair_same_modality", "pair_same_channels", "is_scratch")
             if c in rows]
    return list(dict.fromkeys(cols))


def gain_prior(train: pd.DataFrame) -> dict[str, float]:
    """Each source's mean AUC gain over scratch on the training targets (its record, AUC units)."""
    if REFERENCE not in set(train["source"].astype(str)):
        return {}
    ref = train["auc"].where(train["source"].astype(str) == REFERENCE)
    g = train["auc"] - ref.groupby(train["target"].to_numpy(), sort=False).transform("max")
    return {str(k): float(v) for k, v in g.groupby(train["source"].astype(str)).mean().items()}


def _prepare(rows: pd.DataFrame, ctx: Context, use_estimates: bool, prior: dict[str, float]) -> pd.DataFrame:
    out = with_outcome_features(rows, ctx, use_estimates)
    out["fold_gain_prior"] = out["source"].astype(str).map(prior).astype(float)
    out["is_scratch"] = (out["source"].astype(str) == REFERENCE).astype(float)
    return out


def _fit(params: dict, X: pd.DataFrame, y: np.ndarray, min_child: int) -> LGBMRegressor:
    p = {k: v for k, v in params.items() if k != "min_child_samples"}
    m = LGBMRegressor(objective="regression", min_child_samples=min_child, **p, **_FIXED)
    m.fit(X.astype(float), y)
    return m


def _predict(model: LGBMRegressor | Booster, rows: pd.DataFrame, cols: list[str]) -> np.ndarray:
    if not cols:
        return np.zeros(len(rows))
    return np.asarray(model.predict(rows[cols].astype(float)), dtype=float)


class LevelModel:
    """The level sibling alone: every shipped method's predicted AUC starts from it."""

    def __init__(self, model: LinearLevel | None, cols: list[str], use_estimates: bool, mean_level: float,
                 ctx: Context, novelty: Novelty | None = None) -> None:
        self.model, self.cols, self.use_estimates, self.mean_level, self.ctx = (
            model, cols, use_estimates, mean_level, ctx)
        self.novelty_model = novelty

    @classmethod
    def fit(cls, train: pd.DataFrame, ctx: Context, use_estimates: bool = True) -> LevelModel:
        rows = with_outcome_features(train, ctx, use_estimates)
        g = rows.groupby("target", sort=False)["auc"]
        tl = rows.drop_duplicates("target")
        # inputs known for most training targets only (a published KB's cards are patchy)
        cols = [c for c in level_columns(rows, ctx, use_estimates)
                if tl[c].notna().mean() >= MIN_FEATURE_COVERAGE]
        model = (LinearLevel.fit(tl[cols], g.mean().reindex(tl["target"]).to_numpy(dtype=float))
                 if cols and len(tl) >= MIN_LEVEL_TARGETS else None)
        groups = [str(ctx.groups.get(t, t)) for t in tl["target"].astype(str)]
        return cls(model, cols, use_estimates, float(g.mean().mean()), ctx, Novelty.fit(tl[cols], groups))

    def level(self, rows: pd.DataFrame) -> np.ndarray:
        """Predicted mean AUC of each row's target (the training mean level when no model was fit)."""
        if self.model is None:
            return np.full(len(rows), self.mean_level)
        r = with_outcome_features(rows, self.ctx, self.use_estimates)
        lv = pd.Series(self.model.predict(r.reindex(columns=self.cols)))
        # rows of one target share their inputs: one level per target
        return lv.groupby(r["target"].to_numpy(), sort=False).transform("mean").to_numpy(dtype=float)

    def novelty(self, rows: pd.DataFrame) -> np.ndarray:
        """Each row's target's distance from the training targets in the level inputs
        (:class:`~recommender.model.novelty.Novelty`); NaN when none was fitted (or saved)."""
        if self.novelty_model is None:
            return np.full(len(rows), np.nan)
        r = with_outcome_features(rows, self.ctx, self.use_estimates)
        d = pd.Series(self.novelty_model.distance(r))
        return d.groupby(r["target"].to_numpy(), sort=False).transform("mean").to_numpy(dtype=float)

    def state(self) -> dict:
        return {"model": None if self.model is None else self.model.state(), "cols": self.cols,
                "use_estimates": self.use_estimates, "mean_level": self.mean_level,
                "novelty": None if self.novelty_model is None else self.novelty_model.state()}

    @classmethod
    def from_state(cls, state: dict, ctx: Context) -> LevelModel:
        m = state.get("model")
        return cls(None if m is None else LinearLevel(**m), list(state["cols"]), bool(state["use_estimates"]),
                   float(state["mean_level"]), ctx, Novelty.from_state(state.get("novelty")))


class OutcomeModel(Fitted):
    """Fitted level + deviation siblings; ``score`` is the deviation (the order, in AUC units)."""

    auc_units = True

    def __init__(self, level: LevelModel, dev, dev_cols: list[str], prior: dict[str, float],
                 use_estimates: bool, ctx: Context) -> None:  # noqa: ANN001
        self.level_model, self.dev_model, self.dev_cols = level, dev, dev_cols
        self.prior, self.use_estimates, self.ctx = prior, use_estimates, ctx

    @classmethod
    def fit(cls, train: pd.DataFrame, ctx: Context, use_estimates: bool = True) -> OutcomeModel:
        prior = gain_prior(train)
        rows = _prepare(train, ctx, use_estimates, prior)
        g = rows.groupby("target", sort=False)["auc"]
        dcols = deviation_columns(rows, ctx, use_estimates)
        dev_y = (rows["auc"] - g.transform("mean")).to_numpy(dtype=float)
        dev = _fit(DEVIATION_PARAMS, rows[dcols], dev_y,
                   min_child=int(min(DEVIATION_PARAMS["min_child_samples"], max(2, len(rows) // 20))))
        return cls(LevelModel.fit(train, ctx, use_estimates), dev, dcols, prior, use_estimates, ctx)

    def level(self, rows: pd.DataFrame) -> np.ndarray:
        return self.level_model.level(rows)

    def deviation(self, rows: pd.DataFrame) -> np.ndarray:
        """Predicted AUC minus the target's level, centred over the target's rows (AUC units)."""
        r = _prepare(rows, self.ctx, self.use_estimates, self.prior)
        d = pd.Series(_predict(self.dev_model, r, self.dev_cols))
        return (d - d.groupby(r["target"].to_numpy(), sort=False).transform("mean")).to_numpy(dtype=float)

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return self.deviation(rows)

    def contributions(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Per-source terms of the deviation (index source; LightGBM ``pred_contrib``), each centred
        over the target's rows as the deviation is, so they sum to the score: the order's own reasons."""
        r = _prepare(rows, self.ctx, self.use_estimates, self.prior)
        if not self.dev_cols:
            return pd.DataFrame(index=pd.Index(r["source"], name="source"))
        c = pd.DataFrame(np.asarray(self.dev_model.predict(r[self.dev_cols].astype(float), pred_contrib=True)),
                         columns=[*self.dev_cols, "bias"])
        c = c - c.groupby(r["target"].to_numpy(), sort=False).transform("mean")
        return c.drop(columns="bias").set_index(pd.Index(r["source"].to_numpy(), name="source"))

    def state(self) -> dict:
        return {"level": self.level_model.state(), "dev_booster": self.dev_model.booster_.model_to_string()
                if hasattr(self.dev_model, "booster_") else self.dev_model.model_to_string(),
                "dev_cols": self.dev_cols, "prior": self.prior, "use_estimates": self.use_estimates}

    @classmethod
    def from_state(cls, state: dict, ctx: Context) -> OutcomeModel:
        return cls(LevelModel.from_state(state["level"], ctx), Booster(model_str=state["dev_booster"]),
                   list(state["dev_cols"]), {str(k): float(v) for k, v in state["prior"].items()},
                   bool(state["use_estimates"]), ctx)


class LinearLevel:
    """Ridge on standardised target features; NaN inputs take the training mean (then weigh 0)."""

    def __init__(self, mean: list[float], scale: list[float], coef: list[float], intercept: float,
                 alpha: float) -> None:
        self.mean, self.scale = np.asarray(mean, dtype=float), np.asarray(scale, dtype=float)
        self.coef, self.intercept, self.alpha = np.asarray(coef, dtype=float), float(intercept), float(alpha)

    @classmethod
    def fit(cls, X: pd.DataFrame, y: np.ndarray) -> LinearLevel:
        A = X.to_numpy(dtype=float)
        mean, scale = fit_standardiser(A)
        Z = standardise(A, mean, scale)
        r = RidgeCV(alphas=RIDGE_ALPHAS).fit(Z, y)
        return cls(mean.tolist(), scale.tolist(), np.asarray(r.coef_).tolist(), float(r.intercept_), float(r.alpha_))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return standardise(X.to_numpy(dtype=float), self.mean, self.scale) @ self.coef + self.intercept

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept, "alpha": self.alpha}


def is_finite_number(v: object) -> bool:
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
