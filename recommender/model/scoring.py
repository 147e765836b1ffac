"""What every shipped method shares: its context, the fitted-method interface, and the map from
a ranking score to a predicted AUC and its interval.

Kept apart from the registry (:mod:`recommender.model.methods`) so the residual model and the
shipped recommender can use them without importing each other.

The predicted AUC of a ranking comes from :func:`normal_scores` (within-target rank →
normal quantile) and :func:`predicted_auc` (the training targets' AUC level and spread,
times a calibrated slope), so the predicted column is monotone in the score: order,
predicted value and interval agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from experiments.knowledge_base import SCRATCH as REFERENCE  # what a gain is measured against
from recommender.model.novelty import novelty_scale

ESTIMATE_KIND = "transferability"


@dataclass
class Context:
    """What a method may know about the KB besides the fold's rows (never any AUC)."""

    pair_features: list[str]
    directions: dict[str, int]
    kinds: dict[str, str]
    groups: dict[str, str] = field(default_factory=dict)
    params: dict | None = None  # tuned hyper-parameters of a meta-model candidate

    @classmethod
    def of(cls, md, params: dict | None = None) -> Context:  # noqa: ANN001 - MetaDataset
        return cls(list(md.pair_features), dict(md.pair_directions), dict(md.pair_kinds),
                   dict(getattr(md, "groups", {}) or {}), params)

    @property
    def estimators(self) -> list[str]:
        return [f for f in self.pair_features if self.kinds.get(f) == ESTIMATE_KIND]


class Fitted:
    """A fitted method: ``score(rows)`` and a JSON-able ``state()`` that ``Method.load`` restores."""

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict:
        return {}


def column(rows: pd.DataFrame, col: str) -> np.ndarray:
    return rows[col].to_numpy(dtype=float) if col in rows else np.full(len(rows), np.nan)


def within_target_pct(rows: pd.DataFrame, values: np.ndarray) -> np.ndarray:
    """Percentile rank of ``values`` within each target (NaN stays NaN)."""
    s = pd.Series(values, index=rows.index)
    return s.groupby(rows["target"].to_numpy(), sort=False).rank(pct=True).to_numpy(dtype=float)


def normal_scores(scores: np.ndarray, targets: np.ndarray | pd.Series) -> np.ndarray:
    """Within each target: rank of the score (NaN lowest) → standard normal quantile.

    A rank-based scale makes every method's score comparable (a LightGBM ranker's raw
    score, a rank average, a LogME value) and keeps the predicted AUC monotone in it.
    """
    s = pd.Series(np.asarray(scores, dtype=float))
    low = np.nanmin(s.to_numpy()) - 1.0 if s.notna().any() else 0.0
    s = s.fillna(low)
    t = pd.Series(np.asarray(targets)).reset_index(drop=True)
    r = s.groupby(t, sort=False).rank(method="average")
    n = s.groupby(t, sort=False).transform("size")
    return norm.ppf(((r - 0.5) / n).to_numpy(dtype=float))


def predicted_auc(z: np.ndarray, level: dict) -> np.ndarray:
    """``mu + sd · slope · z``: the training targets' mean AUC level and spread, slope calibrated."""
    return level["mu"] + level["sd"] * level.get("slope", 1.0) * np.asarray(z, dtype=float)


MIN_DIFFICULTY, MAX_DIFFICULTY = 0.02, 0.5


def difficulty(level: np.ndarray) -> np.ndarray:
    """The scale of a cell's error for normalised conformal intervals: the predicted room below
    AUC 1 of its target (clipped to [0.02, 0.5]). An easy folder (level near 1) can be off by
    little, a hard one by a lot; measured coverage per difficulty is in ``evaluate-meta``."""
    return np.clip(1.0 - np.asarray(level, dtype=float), MIN_DIFFICULTY, MAX_DIFFICULTY)


SCALE_KINDS = ("difficulty", "novelty")


def scales_by_novelty(calibration: dict) -> bool:
    """Whether a calibration widens each row's interval by the folder's novelty (γ > 0)."""
    return bool(calibration.get("normalised") and calibration.get("scale_kind") == "novelty"
                and calibration.get("scale_power"))


def interval_scale(mu: np.ndarray, novelty: np.ndarray | None, calibration: dict) -> np.ndarray:
    """The row's interval scale under a normalised calibration: ``difficulty(mu)`` or the
    folder's novelty (``scale_kind``), to the calibrated power; 1 for a plain calibration. A
    novelty calibration without a novelty (NaN) gives NaN: no interval rather than a wrong one."""
    mu = np.asarray(mu, dtype=float)
    if not calibration.get("normalised"):
        return np.ones_like(mu)
    power = float(calibration.get("scale_power", 1.0))
    if calibration.get("scale_kind", "difficulty") == "novelty":
        base = (novelty_scale(np.broadcast_to(np.asarray(novelty, dtype=float), mu.shape))
                if novelty is not None else np.full(mu.shape, np.nan))
    else:
        base = difficulty(mu)
    return base ** power if power else np.where(np.isfinite(base), 1.0, np.nan)


def outcome_terms(mu: np.ndarray | float, u: np.ndarray, calibration: dict,
                  novelty: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted AUC, interval scale): ``mu + slope · u``; the scale is :func:`interval_scale`
    (1 for a calibration saved before normalisation)."""
    u = np.asarray(u, dtype=float)
    mu = np.broadcast_to(np.asarray(mu, dtype=float), u.shape)
    pred = mu + calibration.get("slope", 0.0) * u
    return pred, interval_scale(mu, novelty, calibration)


def auc_interval_terms(mu: np.ndarray | float, u: np.ndarray, calibration: dict,
                       novelty: np.ndarray | None = None) -> pd.DataFrame:
    """predicted_auc, lo, hi, scale from a level ``mu``, a deviation term ``u`` (AUC units) and a
    calibration (``slope``, conformal half-width ``q`` of residuals divided by the scale); a
    novelty-scaled calibration also needs each row's ``novelty``.

    lo/hi are NaN when the calibration has no ``q`` (too few targets): no interval is better
    than an uncalibrated one. Clipped to [0, 1].
    """
    pred, scale = outcome_terms(mu, u, calibration, novelty)
    q = calibration.get("q")
    if q is None:
        lo = hi = np.full(len(pred), np.nan)
    else:
        lo, hi = np.clip(pred - q * scale, 0.0, 1.0), np.clip(pred + q * scale, 0.0, 1.0)
    return pd.DataFrame({"predicted_auc": pred, "lo": lo, "hi": hi, "scale": scale})


def auc_interval(z: np.ndarray, level: dict, calibration: dict) -> pd.DataFrame:
    """:func:`auc_interval_terms` for a rank-based method: ``u = sd · z`` around the KB's level."""
    iv = auc_interval_terms(level["mu"], level["sd"] * np.asarray(z, dtype=float), calibration)
    return iv.drop(columns="scale")


def gain_over_reference(values: np.ndarray, sources: np.ndarray | pd.Series,
                        targets: np.ndarray | pd.Series, reference: str = REFERENCE) -> np.ndarray:
    """``value − value of the reference source of the same target`` per row (NaN where the target
    has no reference row); the reference's own rows get 0."""
    v = pd.Series(np.asarray(values, dtype=float))
    src = pd.Series(np.asarray(sources)).astype(str)
    tgt = pd.Series(np.asarray(targets)).reset_index(drop=True)
    ref = v.where(src == reference).groupby(tgt, sort=False).transform("max")
    return (v - ref).to_numpy(dtype=float)


def gain_interval(pred_auc: np.ndarray, sources: np.ndarray | pd.Series, targets: np.ndarray | pd.Series,
                  calibration: dict, scale: np.ndarray | None = None) -> pd.DataFrame:
    """predicted_gain, gain_lo, gain_hi: a source's predicted AUC minus the reference's (scratch) in
    the same target, ± the conformal half-width ``calibration['gain']['q']``.

    The level of the target cancels in the difference, so this interval is calibrated apart from
    the AUC one (:func:`recommender.evaluation.conformal.calibrate`); a normalised calibration
    scales it by the row's ``scale`` as the AUC one. No ``gain`` calibration, no
    ``q``, or no reference row: NaN bounds; the reference's own row: gain 0, no interval.
    """
    g = calibration.get("gain") or {}
    ref = g.get("reference", REFERENCE)
    gain = gain_over_reference(pred_auc, sources, targets, ref)
    q = g.get("q")
    is_ref = np.asarray(pd.Series(np.asarray(sources)).astype(str) == ref)
    sc = np.ones(len(gain)) if scale is None or not calibration.get("normalised") else np.asarray(scale, float)
    if q is None:
        lo = hi = np.full(len(gain), np.nan)
    else:
        lo, hi = np.where(is_ref, np.nan, gain - q * sc), np.where(is_ref, np.nan, gain + q * sc)
    return pd.DataFrame({"predicted_gain": gain, "gain_lo": lo, "gain_hi": hi})


def auc_level(train: pd.DataFrame) -> dict:
    """Mean over training targets of each target's mean AUC and of its sd (a new target's own level is unknown)."""
    g = train.groupby("target")["auc"]
    return {"mu": float(g.mean().mean()), "sd": float(g.std(ddof=0).mean())}


def nan_safe(score: np.ndarray) -> np.ndarray:
    """Scores with NaN replaced by −inf (ranked last), as :func:`rank_metrics` treats them."""
    s = np.asarray(score, dtype=float)
    return np.where(np.isnan(s), -math.inf, s)
