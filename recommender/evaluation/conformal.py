"""Split-conformal intervals for a shipped method's predicted AUC, exchangeable at the target level.

The predicted AUC of a source for a target is ``mu + sd · slope · z`` (see
:func:`recommender.model.methods.predicted_auc`): ``z`` the method's within-target
normal score, ``mu``/``sd`` the AUC level and spread of the training targets. Its error
is mostly the new target's unknown AUC level, so cells of one target are not
exchangeable with each other — targets are. The calibration residuals therefore come
from *held-out targets* (leave-one-group-out predictions on training groups only), and
the quantile is of the pooled, target-weighted residual distribution over K calibration
targets (Dunn, Gupta & Ramdas 2022, pooled CDF for two-layer hierarchical data) at level
``nominal · (1 + c/K)``. ``c = 1`` is the textbook finite-sample correction: coverage at
least nominal, on average up to 1/(K+1) above it (measured: 85–86% for a nominal 80% on
juodelyte2024 and local). ``c = 1/2`` (:data:`CORRECTION`, the default) aims at the middle
of that range, so the expected coverage is near nominal rather than above it (measured:
82–83%); the synthetic test checks it stays within ±5 points. With too few targets for a
finite quantile (``K < nominal / (1 − nominal)``) no interval is given.

**Normalised** (the default of ``evaluate-meta`` since the learned level): a calibration cell may
carry its own level ``mu`` (the learned level of its target), a deviation term ``u`` in AUC
units (the learned model's; else ``sd · z``) and a ``scale`` (:func:`~recommender.model.scoring.difficulty`
of its level). Residuals are divided by the scale before the quantile, and the interval is
``pred ± q · scale``: an easy folder gets a narrow interval, a hard one a wide one (Lei et al.
2018, locally weighted split conformal). Without ``u``/``scale`` columns it is the plain form.
The scale is the difficulty or, when the cells carry it, the folder's ``novelty`` (its distance
from the training targets, :mod:`recommender.model.novelty`), to a power; which one, and how
strongly, is chosen on the calibration cells by conditional coverage (:func:`choose_scale`).

The predicted *gain over scratch* (a source's predicted AUC minus scratch's, same target)
gets its own interval, calibrated the same way from the same held-out cells: residuals of
predicted vs measured gain (``auc − auc of scratch`` on that target). The target's level
cancels in a difference, so this interval is narrower than the AUC one and needs its own
quantile; its coverage on the outer folds is :func:`gain_coverage` (inside :func:`coverage`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from recommender.model.novelty import novelty_scale
from recommender.model.scoring import (
    REFERENCE,
    SCALE_KINDS,
    auc_interval,
    auc_interval_terms,
    gain_interval,
    gain_over_reference,
)

NOMINAL = 0.8
CORRECTION = 0.5


def min_targets(nominal: float = NOMINAL) -> int:
    """Fewest calibration targets for which the corrected level is ≤ 1."""
    return int(math.ceil(nominal / (1.0 - nominal) - 1e-9))


def weighted_quantile(values: np.ndarray, targets: np.ndarray, level: float) -> float:
    """Smallest v with (1/K) Σ_targets (share of that target's values ≤ v) ≥ level."""
    v = np.asarray(values, dtype=float)
    t = np.asarray(targets)
    counts = pd.Series(t).value_counts()
    w = 1.0 / (len(counts) * counts.reindex(t).to_numpy(dtype=float))
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    i = int(np.searchsorted(cum, level - 1e-12))
    return float(v[order][min(i, len(v) - 1)])


def _u(cal: pd.DataFrame) -> np.ndarray:
    """The deviation term of each cell in AUC units: ``u`` when given, else ``sd · z``."""
    if "u" in cal:
        return cal["u"].to_numpy(dtype=float)
    return (cal["sd"] * cal["z"]).to_numpy(dtype=float)


SCALE_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _base(cal: pd.DataFrame, kind: str) -> np.ndarray | None:
    """The calibration cells' scale of one kind before the power: ``scale`` (the difficulty) or
    ``novelty`` (floored as :func:`~recommender.model.novelty.novelty_scale`); None when absent
    or not finite everywhere."""
    col = {"difficulty": "scale", "novelty": "novelty"}[kind]
    if col not in cal:
        return None
    v = cal[col].to_numpy(dtype=float)
    v = novelty_scale(v) if kind == "novelty" else v
    return v if np.isfinite(v).all() else None


def _scale(cal: pd.DataFrame, power: float = 1.0, kind: str = "difficulty") -> np.ndarray:
    base = _base(cal, kind)
    return base ** power if base is not None else np.ones(len(cal))


def choose_scale_power(cal: pd.DataFrame, resid: np.ndarray, nominal: float, correction: float) -> float:
    """The exponent γ of the difficulty scale (interval = pred ± q · scale^γ) that balances coverage
    between the easier and the harder half of the *calibration* targets (ties: the larger γ).

    γ = 1 trusts the difficulty fully, γ = 0 ignores it (the plain interval). Chosen on the
    calibration cells only (held-out targets of the training groups), never on the outer fold;
    on KB local v3, γ = 1 left the easier half at 68% and the harder at 95%."""
    return choose_scale(cal.drop(columns="novelty", errors="ignore"), resid, nominal, correction)[1]


def choose_scale(cal: pd.DataFrame, resid: np.ndarray, nominal: float, correction: float) -> tuple[str, float]:
    """(kind, γ) of the interval scale, chosen on the calibration cells only.

    Candidates: the difficulty (``scale``) and, when the cells carry one, the folder's
    ``novelty``, each to a power γ in :data:`SCALE_POWERS` (γ = 0 is the plain interval for
    both). The criterion is conditional coverage: split the calibration targets at the median
    of each available variable (difficulty, novelty) into two halves; a candidate's gap is the
    largest |coverage of one half − coverage of the other| over those splits; the smallest gap
    wins (ties: the difficulty before the novelty, the larger γ first). With the difficulty
    alone this is the balance of the easier and the harder half (:func:`choose_scale_power`)."""
    tgt = cal["target"].to_numpy()
    bases = {k: b for k in SCALE_KINDS if (b := _base(cal, k)) is not None} or {"difficulty": np.ones(len(cal))}
    splits = []
    for base in bases.values():
        per_t = pd.Series(base).groupby(tgt).mean()
        splits.append(set(per_t[per_t <= per_t.median()].index))
    first = next(iter(bases))
    if pd.Series(tgt).nunique() < 4:
        return first, 1.0
    best, best_gap = (first, 1.0), math.inf
    for kind, base in bases.items():
        for g in sorted(SCALE_POWERS, reverse=True):
            sc = base ** g
            _, q = _conformal_q(resid / sc, tgt, nominal, correction)
            if q is None:
                return first, 1.0
            inside = pd.Series(resid <= q * sc).groupby(tgt).mean()
            gap = 0.0
            for low in splits:
                cov_e = float(inside[[t for t in inside.index if t in low]].mean())
                cov_h = float(inside[[t for t in inside.index if t not in low]].mean())
                gap = max(gap, abs(cov_e - cov_h))
            if gap < best_gap - 1e-9:
                best, best_gap = (kind, g), gap
    return best


def _pred(cal: pd.DataFrame, slope: float) -> np.ndarray:
    return cal["mu"].to_numpy(dtype=float) + slope * _u(cal)


def fit_slope(cal: pd.DataFrame) -> float:
    """Least-squares slope (through 0, ≥ 0) of the standardised AUC ``(auc − mu)/sd`` on ``u/sd``
    (= ``z`` for a rank-based method)."""
    sd = cal["sd"].replace(0.0, np.nan).to_numpy(dtype=float)
    z = _u(cal) / sd
    y = ((cal["auc"] - cal["mu"]).to_numpy(dtype=float)) / sd
    ok = np.isfinite(z) & np.isfinite(y)
    den = float(z[ok] @ z[ok])
    return max(0.0, float(z[ok] @ y[ok]) / den) if den > 0 else 0.0


def calibrate(cal: pd.DataFrame, nominal: float = NOMINAL, correction: float = CORRECTION) -> dict:
    """Slope and conformal half-width from calibration cells ``target, z, auc, mu, sd``.

    Every row must be a prediction for a target that was held out of the model (and of
    ``mu``/``sd``) that made it. Returns ``slope, q, nominal, n_targets, n_cells``; ``q``
    is None when there are too few targets for a finite quantile. With a ``source`` column
    that includes scratch, also ``gain``: the gain-over-scratch calibration (:func:`calibrate_gain`).
    """
    cal = cal[np.isfinite(cal["auc"].to_numpy(dtype=float))]
    k = int(cal["target"].nunique())
    out = {"nominal": nominal, "n_targets": k, "n_cells": int(len(cal)), "slope": 0.0, "q": None}
    if k == 0:
        return out
    slope = fit_slope(cal)
    raw = np.abs(cal["auc"].to_numpy(dtype=float) - _pred(cal, slope))
    kind, power = choose_scale(cal, raw, nominal, correction) if "scale" in cal else ("difficulty", 1.0)
    resid = raw / _scale(cal, power, kind)
    out["slope"] = slope
    out["normalised"] = "scale" in cal
    if out["normalised"]:
        out["scale_power"] = power
        out["scale_kind"] = kind
    out["level"], out["q"] = _conformal_q(resid, cal["target"].to_numpy(), nominal, correction)
    return _with_gain(out, cal, nominal, correction)


def _conformal_q(resid: np.ndarray, targets: np.ndarray, nominal: float,
                 correction: float) -> tuple[float, float | None]:
    """(level, half-width) from |residuals| of K held-out targets: the target-weighted quantile at
    ``nominal · (1 + correction / K)``; half-width None when K is too small for a finite one."""
    k = int(pd.Series(targets).nunique())
    if k == 0:
        return math.nan, None
    level = nominal * (1.0 + correction / k)
    if k < min_targets(nominal) or level > 1.0:
        return level, None
    return level, weighted_quantile(resid, targets, level)


def _with_gain(out: dict, cal: pd.DataFrame, nominal: float, correction: float) -> dict:
    """``out`` plus ``gain`` (see :func:`calibrate_gain`) when the cells include the reference."""
    if "source" in cal and (cal["source"].astype(str) == REFERENCE).any():
        out["gain"] = calibrate_gain(cal, out.get("slope", 0.0), nominal, correction,
                                     power=out.get("scale_power", 1.0), kind=out.get("scale_kind", "difficulty"))
    return out


def calibrate_gain(cal: pd.DataFrame, slope: float, nominal: float = NOMINAL,
                   correction: float = CORRECTION, reference: str = REFERENCE, power: float = 1.0,
                   kind: str = "difficulty") -> dict:
    """Half-width of the predicted gain over ``reference`` from calibration cells
    ``target, source, z, auc, mu, sd`` (held-out predictions, as for :func:`calibrate`).

    Predicted gain = predicted AUC − the reference's predicted AUC on the same target (the AUC
    slope, so the gain column is the difference of the AUC column); measured gain = AUC − the
    reference's AUC there. Returns ``reference, q`` (None: too few targets), ``nominal, level,
    n_targets, n_cells``; the reference's own cells are not counted.
    """
    pred = _pred(cal, slope)
    src, tgt = cal["source"].to_numpy(), cal["target"].to_numpy()
    resid = np.abs(gain_over_reference(cal["auc"].to_numpy(dtype=float), src, tgt, reference)
                   - gain_over_reference(pred, src, tgt, reference)) / _scale(cal, power, kind)
    ok = np.isfinite(resid) & (pd.Series(src).astype(str) != reference).to_numpy()
    level, q = _conformal_q(resid[ok], tgt[ok], nominal, correction)
    return {"reference": reference, "nominal": nominal, "n_targets": int(pd.Series(tgt[ok]).nunique()),
            "n_cells": int(ok.sum()), "level": level, "q": q}


def interval(z: np.ndarray, level: dict, calibration: dict) -> pd.DataFrame:
    """predicted_auc, lo, hi for normal scores ``z`` (the same code ``recommend`` runs)."""
    return auc_interval(z, level, calibration)


def interval_terms(mu: np.ndarray, u: np.ndarray, calibration: dict,
                   novelty: np.ndarray | None = None) -> pd.DataFrame:
    """predicted_auc, lo, hi, scale from a per-row level, deviation and novelty (the same code
    ``recommend`` runs)."""
    return auc_interval_terms(mu, u, calibration, novelty)


def intervals_with_gain(iv: pd.DataFrame, sources: np.ndarray, targets: np.ndarray, auc: np.ndarray,
                        calibration: dict) -> pd.DataFrame:
    """``iv`` (predicted_auc, lo, hi) plus predicted_gain, gain_lo, gain_hi and the measured
    ``gain`` over scratch, when the calibration has a gain entry (else ``iv`` unchanged)."""
    if "gain" not in calibration:
        return iv
    g = gain_interval(iv["predicted_auc"].to_numpy(dtype=float), sources, targets, calibration,
                      iv["scale"].to_numpy(dtype=float) if "scale" in iv else None)
    out = pd.concat([iv.reset_index(drop=True), g], axis=1)
    out["gain"] = gain_over_reference(np.asarray(auc, dtype=float), sources, targets,
                                      calibration["gain"].get("reference", REFERENCE))
    return out


def gain_coverage(cells: pd.DataFrame, nominal: float = NOMINAL) -> dict:
    """Share of held-out cells (``gain, gain_lo, gain_hi, predicted_gain, target``) whose measured
    gain over scratch is inside its interval, with n cells and targets; and how often a cell
    flagged as negative transfer (interval below 0) was measured below scratch."""
    lo = cells["gain_lo"].to_numpy(dtype=float) if "gain_lo" in cells else np.full(len(cells), np.nan)
    ok = cells[np.isfinite(lo) & np.isfinite(cells["gain"].to_numpy(dtype=float))] if "gain" in cells \
        else cells.iloc[:0]
    n = int(len(ok))
    out = {"nominal": nominal, "n_cells": n, "n_targets": int(ok["target"].nunique()) if n else 0}
    if n == 0:
        return out | {"coverage": math.nan}
    flagged = ok["gain_hi"] < 0
    return out | _inside(ok, "gain", "gain_lo", "gain_hi") | {
        "n_flagged_negative": int(flagged.sum()),
        "flagged_negative_measured_below": int((flagged & (ok["gain"] < 0)).sum())}


def _inside(ok: pd.DataFrame, value: str, lo: str, hi: str) -> dict:
    """Coverage of ``value`` by [lo, hi] over cells, its mean per target, the median half-width."""
    inside = (ok[value] >= ok[lo]) & (ok[value] <= ok[hi])
    return {"coverage": float(inside.mean()),
            "per_target_mean": float(inside.groupby(ok["target"]).mean().mean()),
            "median_half_width": float(((ok[hi] - ok[lo]) / 2).median())}


def coverage(cells: pd.DataFrame, nominal: float = NOMINAL) -> dict:
    """Share of held-out cells (``auc, lo, hi, target``) inside their interval, with n cells and
    targets; with gain columns (:func:`intervals_with_gain`), also ``gain``: :func:`gain_coverage`."""
    ok = cells[np.isfinite(cells["lo"].to_numpy(dtype=float))]
    n = int(len(ok))
    out = {"nominal": nominal, "n_cells": n, "n_targets": int(ok["target"].nunique()) if n else 0,
           "n_cells_without_interval": int(len(cells) - n)}
    gain = {"gain": gain_coverage(cells, nominal)} if "gain_lo" in cells else {}
    if n == 0:
        return out | {"coverage": math.nan, "per_target_mean": math.nan, "median_half_width": math.nan} | gain
    return out | _inside(ok, "auc", "lo", "hi") | gain


def coverage_by_scale(cells: pd.DataFrame, nominal: float = NOMINAL) -> list[dict]:
    """Coverage and median half-width of the easier and the harder half of held-out targets (split
    at the median predicted difficulty, 1 − level) and, with a ``novelty`` column, of the nearer
    and the farther half (split at the median distance from the training targets): an interval
    that adapts should be narrower on the easier (nearer) half and cover near nominal on both.
    Empty without level/scale or with < 4 targets."""
    ok = cells[np.isfinite(cells["lo"].to_numpy(dtype=float))] if "lo" in cells else cells.iloc[:0]
    if not ({"scale", "level"} & set(ok.columns)) or ok["target"].nunique() < 4:
        return []
    # split on the difficulty itself (1 − predicted level), whatever exponent the scale got
    splits = [(("easier", "harder"), 1.0 - ok["level"] if "level" in ok else ok["scale"])]
    if "novelty" in ok and np.isfinite(ok["novelty"].to_numpy(dtype=float)).all():
        splits.append((("nearer", "farther"), ok["novelty"]))
    out = []
    for names, var in splits:
        per_t = var.groupby(ok["target"]).mean()
        cut = float(per_t.median())
        for name, sel in ((names[0], per_t[per_t <= cut].index), (names[1], per_t[per_t > cut].index)):
            sub = ok[ok["target"].isin(sel)]
            if len(sub):
                out.append({"half": name, "n_targets": int(sub["target"].nunique()), "n_cells": int(len(sub)),
                            "nominal": nominal} | _inside(sub, "auc", "lo", "hi"))
    return out
