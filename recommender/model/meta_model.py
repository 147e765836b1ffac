"""LightGBM meta-models: a regressor of per-target normalised AUC and a lambdarank ranker.

Data are tiny (≈12 targets × ≤14 sources), so trees are small, seeds are fixed and
LightGBM runs single-threaded and ``deterministic`` — the same KB gives the same model.
The regressor predicts the within-target z of AUC; its 80% band comes from two
quantile models (α = 0.1, 0.9) and is mapped back to AUC over the levels and scales of
the training targets' columns (a new target's own AUC level is unknown, so the band is
wide: the ranking is the product, the AUC band is a sanity range).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
from lightgbm import Booster, LGBMRanker, LGBMRegressor

from experiments.knowledge_base import artifacts_dir
from imagesets import UserError

SEED = 0
QUANTILES = (0.1, 0.9)
KINDS = ("regressor", "ranker")
FEATURE_SETS = ("prior", "prior_card", "prior_pair", "all")
DEFAULT_PARAMS: dict = {
    "kind": "regressor", "features": "prior_pair", "num_leaves": 4, "min_child_samples": 5,
    "n_estimators": 100, "learning_rate": 0.05, "reg_lambda": 1.0, "colsample_bytree": 0.8,
    "grades": "rank",
}
_FIXED = {"deterministic": True, "num_threads": 1, "verbose": -1, "random_state": SEED,
          "force_col_wise": True, "min_data_in_bin": 1, "min_child_weight": 1e-3}
_CARD_KEYS = ("log_n_images", "log_n_classes", "channels", "resolution", "is_medical", "multilabel")
_PAIR_CARD = ("pair_same_domain", "pair_same_modality", "pair_same_channels", "pair_log_size_ratio")


def feature_columns(columns: list[str] | pd.Index, feature_set: str,
                    pair_features: list[str]) -> list[str]:
    """The model inputs of a named feature set, in a fixed order.

    prior: the in-fold static priors; prior_card: + card facts of both sides and their
    comparisons; prior_pair: + the KB's pair features (similarity, expert, transferability)
    raw and within-target z, and the prior re-weighted by pair-feature profile likeness;
    all: + image meta-features and their |src − tgt| differences.
    """
    cols = list(columns)
    prior = [c for c in ("fold_static_prior", "fold_static_prior_tz", "fold_modality_prior") if c in cols]
    profile = [c for c in ("fold_profile_prior",) if c in cols]
    card = [c for c in cols if any(c == f"{p}_{k}" for p in ("src", "tgt") for k in _CARD_KEYS)]
    card += [c for c in _PAIR_CARD if c in cols]
    pair = [c for c in cols for f in pair_features if c in (f"pair_{f}", f"pair_{f}_tz")]
    if feature_set == "prior":
        chosen = prior
    elif feature_set == "prior_card":
        chosen = prior + card
    elif feature_set == "prior_pair":
        chosen = prior + profile + pair
    elif feature_set == "all":
        rest = [c for c in cols if c.startswith(("src_", "tgt_", "pair_")) and c not in card + pair]
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


def auc_scale(train: pd.DataFrame) -> pd.DataFrame:
    """Per training target: the mean and sd of its AUC column (``mu``, ``sd``).

    A new target's own AUC level is unknown (chestmnist ≈ 0.65, bloodmnist ≈ 0.99), so
    the point estimate uses the average level and the band spreads over the levels seen.
    """
    g = train.groupby("target")["auc"]
    return pd.DataFrame({"mu": g.mean(), "sd": g.std(ddof=0)})


def interval_models(params: dict, train: pd.DataFrame, cols: list[str]) -> dict[str, LGBMRegressor]:
    """Point regressor + quantile regressors for the 80% band (same hyper-parameters)."""
    p = dict(params) | {"kind": "regressor"}
    out = {"point": fit_model(p, train, cols)}
    for q in QUANTILES:
        out[f"q{int(q * 100)}"] = fit_model(p, train, cols, objective="quantile", alpha=q)
    return out


def z_to_auc_band(z: np.ndarray, z_lo: np.ndarray, z_hi: np.ndarray,
                  scale: pd.DataFrame) -> pd.DataFrame:
    """Map within-target z (point, 10%, 90%) to AUC, folding in the spread of target AUC levels.

    lo80 = 10% quantile over training targets u of mu_u + sd_u·z_lo; hi80 likewise with the
    90% quantile of mu_u + sd_u·z_hi; the point uses the mean level and scale.
    """
    mu, sd = scale["mu"].to_numpy(dtype=float), scale["sd"].to_numpy(dtype=float)
    lo = np.quantile(mu[None, :] + sd[None, :] * np.asarray(z_lo)[:, None], QUANTILES[0], axis=1)
    hi = np.quantile(mu[None, :] + sd[None, :] * np.asarray(z_hi)[:, None], QUANTILES[1], axis=1)
    point = mu.mean() + sd.mean() * np.asarray(z)
    return pd.DataFrame({"predicted_auc": point, "lo80": np.minimum(lo, point),
                         "hi80": np.maximum(hi, point)})


def predict_auc_band(models: dict, rows: pd.DataFrame, cols: list[str],
                     scale: pd.DataFrame) -> pd.DataFrame:
    """predicted_auc, lo80, hi80 for ``rows`` from the point and quantile regressors."""
    z = predict(models["point"], rows, cols)
    lo = predict(models["q10"], rows, cols)
    hi = predict(models["q90"], rows, cols)
    lo, hi = np.minimum(lo, np.minimum(hi, z)), np.maximum(hi, np.maximum(lo, z))
    out = z_to_auc_band(z, lo, hi, scale)
    out.index = rows.index
    return out


def contributions(model: LGBMRegressor | LGBMRanker | Booster, rows: pd.DataFrame,
                  cols: list[str]) -> pd.DataFrame:
    """LightGBM ``pred_contrib`` per row: index = source, one column per feature plus ``bias``.

    Each row sums to the model's raw score, so the largest |values| are the reasons a
    source ranks where it does (``recommend`` shows the top three).
    """
    contrib = np.asarray(model.predict(_usable(rows[cols]), pred_contrib=True))
    return pd.DataFrame(contrib, columns=[*cols, "bias"], index=pd.Index(rows["source"], name="source"))


# -- the shipped recommender ----------------------------------------------------------
def models_dir() -> Path:
    return artifacts_dir() / "models"


@dataclass
class Recommender:
    """A KB's final ranker: the meta-model, or the best validated baseline when it did not win.

    ``rank`` orders sources by ``method``; predicted AUC and its 80% band come from the
    quantile regressors (or, for the static method, from each source's spread of z over KB
    targets). ``validated`` is the LOTO summary the choice was based on.
    """

    kb_name: str
    method: str
    manifest: dict
    features: dict[str, list[str]]
    boosters: dict[str, Booster]
    scale: pd.DataFrame
    static_band: pd.DataFrame  # per source: q10, q90 of its column-z over KB targets
    baseline: tuple[str, int] | None = None

    @property
    def validated(self) -> dict:
        return self.manifest.get("validated", {})

    def _check(self, rows: pd.DataFrame) -> pd.DataFrame:
        need = set(self.features["regressor"]) | set(self.features["main"])
        missing = sorted(need - set(rows.columns))
        if missing:
            raise RecommenderError(f"feature rows lack {len(missing)} model columns, e.g. {missing[0]}")
        return rows

    def rank(self, feature_rows: pd.DataFrame) -> pd.DataFrame:
        """DataFrame[source, predicted_auc, lo80, hi80, method, score], best source first."""
        rows = self._check(feature_rows).reset_index(drop=True)
        fr = self.features["regressor"]
        band = predict_auc_band({k: self.boosters[k] for k in ("point", "q10", "q90")},
                                rows, fr, self.scale)
        if self.method == "meta":
            score = predict(self.boosters["main"], rows, self.features["main"])
        elif self.baseline is not None:
            col, sign = self.baseline
            score = sign * rows[col].to_numpy(dtype=float)
            if col == "fold_static_prior":
                q = self.static_band.reindex(rows["source"])
                band = z_to_auc_band(score, q["q10"].to_numpy(dtype=float),
                                     q["q90"].to_numpy(dtype=float), self.scale)
        else:
            raise RecommenderError(f"method {self.method!r} cannot rank new targets")
        score = np.where(np.isnan(score), -np.inf, score)
        out = pd.DataFrame({"source": rows["source"].to_numpy()}).join(band.reset_index(drop=True))
        out["method"], out["score"] = self.method, score
        return out.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)

    def contributions(self, feature_rows: pd.DataFrame) -> pd.DataFrame:
        """Per-source LightGBM contributions of the meta-model (index source, columns features + bias).

        When the shipped method is a baseline these still explain the meta-model's view.
        """
        rows = self._check(feature_rows).reset_index(drop=True)
        return contributions(self.boosters["main"], rows, self.features["main"])

    def static_pick(self, feature_rows: pd.DataFrame) -> str | None:
        """The source the static ranking would pick (highest in-KB static prior)."""
        if "fold_static_prior" not in feature_rows or feature_rows["fold_static_prior"].isna().all():
            return None
        i = int(np.nanargmax(feature_rows["fold_static_prior"].to_numpy(dtype=float)))
        return str(feature_rows["source"].iloc[i])


class RecommenderError(UserError):
    """No trained model for a KB, or rows that do not fit it."""


def save_recommender(out: Path, kb_name: str, main_params: dict, reg_params: dict,
                     rows: pd.DataFrame, pair_features: list[str], static_band: pd.DataFrame,
                     manifest: dict) -> Path:
    """Train the final models on ALL rows and write LightGBM text + features.json + manifest.json."""
    out.mkdir(parents=True, exist_ok=True)
    main_cols = feature_columns(rows.columns, main_params["features"], pair_features)
    reg_cols = feature_columns(rows.columns, reg_params["features"], pair_features)
    models = interval_models(reg_params, rows, reg_cols)
    models["main"] = fit_model(main_params, rows, main_cols)
    for name, m in models.items():
        m.booster_.save_model(str(out / f"{name}.txt"))
    (out / "features.json").write_text(json.dumps(
        {"main": main_cols, "regressor": reg_cols, "main_feature_set": main_params["features"],
         "regressor_feature_set": reg_params["features"]}, indent=2) + "\n")
    scale = auc_scale(rows)
    man = dict(manifest) | {
        "kb": kb_name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": SEED, "lightgbm": lightgbm.__version__, "main_params": main_params,
        "regressor_params": reg_params, "n_training_rows": int(len(rows)),
        "auc_scale": scale.reset_index().to_dict(orient="records"),
        "static_band": static_band.reset_index(names="source").to_dict(orient="records"),
    }
    (out / "manifest.json").write_text(json.dumps(man, indent=2, default=str) + "\n")
    return out


def load_recommender(kb_name: str, root: Path | None = None) -> Recommender:
    """The shipped model for ``kb_name`` from ``artifacts/models/<kb>/`` (no training, no network)."""
    d = (root or models_dir()) / kb_name
    if not (d / "manifest.json").exists():
        raise RecommenderError(f"no trained model for KB '{kb_name}' (run: catscans evaluate-meta --kb {kb_name})")
    man = json.loads((d / "manifest.json").read_text())
    feats = json.loads((d / "features.json").read_text())
    boosters = {n: Booster(model_file=str(d / f"{n}.txt")) for n in ("main", "point", "q10", "q90")}
    scale = pd.DataFrame(man["auc_scale"]).set_index("target")
    band = pd.DataFrame(man["static_band"]).set_index("source")
    base = man.get("baseline_column")
    return Recommender(kb_name, man["method"], man, feats, boosters, scale, band,
                       tuple(base) if base else None)
