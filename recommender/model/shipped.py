"""The shipped :class:`Recommender` of a KB: what nested selection chose, fitted on every target.

It holds one method per scenario: ``any`` (no transferability estimates: unlabelled
targets, KBs without checkpoints) and, for KBs with estimates, ``estimates`` (a labelled
target scored with the KB's checkpoints). Any registered method can ship (see
:mod:`recommender.model.methods`); its predicted AUC and conformal interval come from the
calibration stored with it. Files live in ``artifacts/models/<kb>/`` and are validated
before use (:mod:`recommender.model.model_files`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
from lightgbm import Booster

from experiments.knowledge_base import artifacts_dir
from imagesets import UserError
from recommender.model.meta_model import SEED, contributions, feature_columns, fit_model
from recommender.model.methods import Context, MetaFitted, get_method
from recommender.model.outcome import LevelModel
from recommender.model.scoring import (
    SCALE_KINDS,
    auc_interval_terms,
    gain_interval,
    nan_safe,
    normal_scores,
)

FORMAT = 2
SCENARIOS = ("any", "estimates")


def models_dir() -> Path:
    return artifacts_dir() / "models"


class RecommenderError(UserError):
    """No trained model for a KB, or rows that do not fit it."""


@dataclass
class Shipped:
    """One scenario's shipped method: fitted on every KB target, with its AUC calibration."""

    scenario: str
    method: str
    words: str
    fitted: object  # methods.Fitted
    level: dict  # mu, sd of the KB targets' AUC; ``model``: the learned level's state
    calibration: dict  # slope, q (None: no calibrated interval), nominal, n_targets
    validated: dict = field(default_factory=dict)  # outer nested-LOGO figures of this procedure
    ctx: Context | None = None

    @property
    def level_model(self) -> LevelModel | None:
        state = (self.level or {}).get("model")
        if not state:
            return None
        if not hasattr(self, "_level_model"):
            self._level_model = LevelModel.from_state(state, self.ctx or Context([], {}, {}))
        return self._level_model

    def terms(self, rows: pd.DataFrame, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu, u) per row: the learned level of the folder (the KB's mean level for a model saved
        before it) and the deviation (the learned model's own, else spread × normal score)."""
        z = normal_scores(score, rows["target"].to_numpy())
        lm = self.level_model
        mu = lm.level(rows) if lm is not None else np.full(len(rows), float(self.level["mu"]))
        u = (np.nan_to_num(np.asarray(score, dtype=float)) if getattr(self.fitted, "auc_units", False)
             else float(self.level["sd"]) * z)
        return mu, u

    def novelty(self, rows: pd.DataFrame) -> np.ndarray:
        """Each row's folder's distance from the KB's targets in the level inputs (NaN for a model
        saved without it)."""
        lm = self.level_model
        return lm.novelty(rows) if lm is not None else np.full(len(rows), np.nan)

    def rank(self, rows: pd.DataFrame) -> pd.DataFrame:
        """DataFrame[source, predicted_auc, lo80, hi80, level, novelty, method, score, predicted_gain,
        gain_lo, gain_hi], best first.

        The predicted AUC is monotone in the score (within-target normal score times the
        calibrated slope), so the order, the predicted column and the interval agree. The
        predicted gain is that AUC minus scratch's (NaN without a scratch row); its interval
        needs a ``gain`` calibration (a model saved before it has none: NaN bounds).
        """
        score = self.fitted.score(rows)
        mu, u = self.terms(rows, score)
        nov = self.novelty(rows)
        iv = auc_interval_terms(mu, u, self.calibration, nov)
        gain = gain_interval(iv["predicted_auc"].to_numpy(), rows["source"].to_numpy(),
                             rows["target"].to_numpy(), self.calibration, iv["scale"].to_numpy())
        out = pd.DataFrame({"source": rows["source"].to_numpy(), "predicted_auc": iv["predicted_auc"],
                            "lo80": iv["lo"], "hi80": iv["hi"], "level": mu, "novelty": nov,
                            "method": self.method,
                            "score": nan_safe(score), **{c: gain[c].to_numpy() for c in gain.columns}})
        return out.sort_values(["score", "source"], ascending=[False, True],
                               kind="stable").reset_index(drop=True)


@dataclass
class Recommender:
    """A KB's shipped methods (per scenario) and the meta-model that explains features.

    ``validated``: the outer nested leave-one-group-out figures of the ``any`` procedure.
    """

    kb_name: str
    manifest: dict
    shipped: dict[str, Shipped]
    features: dict[str, list[str]]
    boosters: dict[str, Booster]

    def scenario(self, estimates: bool) -> Shipped:
        """The ``estimates`` method when the target has estimates and the KB ships one, else ``any``."""
        if estimates and "estimates" in self.shipped:
            return self.shipped["estimates"]
        return self.shipped["any"]

    @property
    def method(self) -> str:
        return self.shipped["any"].method

    @property
    def validated(self) -> dict:
        return self.shipped["any"].validated

    def _check(self, rows: pd.DataFrame) -> pd.DataFrame:
        missing = sorted(set(self.features["main"]) - set(rows.columns))
        if missing:
            raise RecommenderError(f"feature rows lack {len(missing)} model columns, e.g. {missing[0]}")
        return rows.reset_index(drop=True)

    def rank(self, feature_rows: pd.DataFrame, estimates: bool = False) -> pd.DataFrame:
        """Rank by the scenario's shipped method: source, predicted_auc, lo80, hi80, method, score."""
        return self.scenario(estimates).rank(self._check(feature_rows))

    def contributions(self, feature_rows: pd.DataFrame, estimates: bool = False) -> pd.DataFrame:
        """Per-source LightGBM contributions (index source, columns features + bias): of the shipped
        meta-model when one ships, else of the explaining meta-model (its view, not the order's)."""
        rows = self._check(feature_rows)
        fitted = self.scenario(estimates).fitted
        if isinstance(fitted, MetaFitted):
            return contributions(fitted.model, rows, fitted.cols)
        return contributions(self.boosters["main"], rows, self.features["main"])

    def static_pick(self, feature_rows: pd.DataFrame) -> str | None:
        """The source the static ranking would pick (highest in-KB static prior)."""
        if "fold_static_prior" not in feature_rows or feature_rows["fold_static_prior"].isna().all():
            return None
        i = int(np.nanargmax(feature_rows["fold_static_prior"].to_numpy(dtype=float)))
        return str(feature_rows["source"].iloc[i])


def save_recommender(out: Path, kb_name: str, shipped: dict[str, dict], main_params: dict,
                     rows: pd.DataFrame, pair_features: list[str], estimators: list[str],
                     manifest: dict) -> Path:
    """Write the shipped methods and the explaining meta-model to ``out`` (atomically per file).

    ``shipped[scenario]``: ``method, words, state, level, calibration, validated``; a
    LightGBM state's model text goes to ``<scenario>.txt``, checked on load like ``main.txt``.
    """
    from imagesets import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    main_cols = feature_columns(rows.columns, main_params["features"], pair_features, estimators)
    main = fit_model(main_params, rows, main_cols)
    atomic_write_text(out / "main.txt", main.booster_.model_to_string())
    feats: dict[str, list[str] | str] = {"main": main_cols, "main_feature_set": main_params["features"]}
    entries = {}
    for scen, s in shipped.items():
        state = dict(s["state"])
        if "booster" in state:
            atomic_write_text(out / f"{scen}.txt", state.pop("booster"))
            state["booster_file"] = f"{scen}.txt"
            feats[scen] = list(state["cols"])
        entries[scen] = {k: v for k, v in s.items() if k != "state"} | {"state": state}
    atomic_write_text(out / "features.json", json.dumps(feats, indent=2) + "\n")
    man = dict(manifest) | {
        "format": FORMAT, "kb": kb_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": SEED, "lightgbm": lightgbm.__version__, "main_params": main_params,
        "n_training_rows": int(len(rows)), "shipped": entries,
    }
    atomic_write_text(out / "manifest.json", json.dumps(_strict(man), indent=2, default=_json) + "\n")
    return out


def _strict(obj: object) -> object:
    """NaN/inf → None recursively, so the manifest is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _json(o: object) -> object:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if math.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_shipped(man: dict, path: Path, kb: str) -> None:
    """The manifest's shipped entries: known scenarios and methods, finite level and calibration."""
    from recommender.model.model_files import ModelFileError

    how = f"rebuild it: catscans evaluate-meta --kb {kb} --save"
    if man.get("format") != FORMAT or not isinstance(man.get("shipped"), dict) or "any" not in man["shipped"]:
        raise ModelFileError(f"{path}: model for KB '{kb}' is in an old format (no nested selection); {how}")
    for scen, s in man["shipped"].items():
        if scen not in SCENARIOS or not isinstance(s, dict) or not isinstance(s.get("method"), str):
            raise ModelFileError(f"{path}: bad shipped entry {scen!r}; {how}")
        lv, cal = s.get("level") or {}, s.get("calibration") or {}
        if not (_finite(lv.get("mu")) and _finite(lv.get("sd")) and _finite(cal.get("slope"))):
            raise ModelFileError(f"{path}: shipped '{scen}' lacks a finite AUC level/slope; {how}")
        if cal.get("q") is not None and not (_finite(cal["q"]) and cal["q"] >= 0):
            raise ModelFileError(f"{path}: shipped '{scen}' has a bad interval half-width; {how}")
        gq = (cal.get("gain") or {}).get("q") if isinstance(cal.get("gain", {}), dict) else "bad"
        if gq is not None and not (_finite(gq) and gq >= 0):
            raise ModelFileError(f"{path}: shipped '{scen}' has a bad gain-interval half-width; {how}")
        kind = cal.get("scale_kind", "difficulty")
        if kind not in SCALE_KINDS or (kind == "novelty" and not ((lv.get("model") or {}).get("novelty"))):
            raise ModelFileError(f"{path}: shipped '{scen}' has an interval scale it cannot compute "
                                 f"({kind!r}); {how}")


def load_recommender(kb_name: str, root: Path | None = None, md=None) -> Recommender:  # noqa: ANN001
    """The shipped model for ``kb_name`` from ``artifacts/models/<kb>/`` (no training, no network).

    Every file is validated first (:mod:`recommender.model.model_files`); ``md``: the KB's
    MetaDataset when the caller has it (the methods' context: pair features and groups).
    """
    from recommender.model.model_files import booster_text, read_json

    d = (root or models_dir()) / kb_name
    if not (d / "manifest.json").exists():
        raise RecommenderError(f"no trained model for KB '{kb_name}' (run: catscans evaluate-meta --kb {kb_name})")
    man = read_json(d / "manifest.json", kb_name)
    _check_shipped(man, d / "manifest.json", kb_name)
    feats = read_json(d / "features.json", kb_name)
    main_cols = feats.get("main")
    if not (isinstance(main_cols, list) and all(isinstance(c, str) for c in main_cols)):
        raise RecommenderError(f"{d / 'features.json'}: 'main' must be a list of feature names")
    boosters = {"main": Booster(model_str=booster_text(d / "main.txt", main_cols, kb_name))}
    ctx = Context(**man.get("context", {})) if man.get("context") else (
        Context.of(md) if md is not None else Context([], {}, {}))
    shipped = {}
    for scen, s in man["shipped"].items():
        state = dict(s.get("state") or {})
        if "booster_file" in state:
            state["booster"] = booster_text(d / state.pop("booster_file"), list(state["cols"]), kb_name)
        try:
            method = get_method(s["method"], ctx)
        except KeyError:
            raise RecommenderError(f"{d / 'manifest.json'}: unknown method {s['method']!r}; "
                                   f"rebuild it: catscans evaluate-meta --kb {kb_name} --save") from None
        shipped[scen] = Shipped(scen, s["method"], s.get("words", ""), method.load(state, ctx),
                                s["level"], s["calibration"], s.get("validated", {}), ctx)
    return Recommender(kb_name, man, shipped, {"main": main_cols}, boosters)
