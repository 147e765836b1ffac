"""recommender.evaluation.conformal, pinned by exact values (written against its surviving mutants).

Each function is checked against its documented definition, re-computed here in the most direct
way (brute force where the module is clever), on small hand-made calibration tables.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recommender.evaluation import conformal as cf
from recommender.model.scoring import auc_interval, auc_interval_terms, difficulty


def _brute_quantile(v: np.ndarray, t: np.ndarray, level: float) -> float:
    """Smallest v with (1/K) Σ_targets share(values of that target ≤ v) ≥ level (else the max)."""
    targets = sorted(set(t))
    for x in np.unique(v):
        cdf = np.mean([np.mean(v[t == g] <= x) for g in targets])
        if cdf >= level - 1e-12:
            return float(x)
    return float(np.max(v))


def test_min_targets() -> None:
    assert cf.min_targets() == 4
    assert [cf.min_targets(n) for n in (0.5, 0.75, 0.8, 0.85, 0.9)] == [1, 3, 4, 6, 9]


def test_weighted_quantile_is_the_target_weighted_cdf_inverse() -> None:
    rng = np.random.default_rng(0)
    for trial in range(6):
        n_t = int(rng.integers(2, 6))
        counts = rng.integers(1, 6, n_t)
        t = np.repeat([f"g{i}" for i in range(n_t)], counts)
        v = np.round(rng.random(len(t)), 1)  # ties
        order = rng.permutation(len(t))
        v, t = v[order], t[order]
        for level in (0.0, 0.1, 0.5, 0.8, 0.9, 1.0):
            assert cf.weighted_quantile(v, t, level) == _brute_quantile(v, t, level), (trial, level)
    assert cf.weighted_quantile(np.array([3.0, 1.0, 2.0]), np.array(["a", "b", "c"]), 1.5) == 3.0
    assert cf.weighted_quantile(np.array([3.0, 1.0, 2.0]), np.array(["a", "b", "c"]), 1 / 3) == 1.0
    assert cf.weighted_quantile([0.5, 0.25], ["a", "a"], 0.5) == 0.25  # plain lists work


def test_u_and_scale() -> None:
    cal = pd.DataFrame({"sd": [2.0, 3.0], "z": [0.5, -1.0], "scale": [0.25, 0.04]})
    np.testing.assert_array_equal(cf._u(cal), [1.0, -3.0])
    np.testing.assert_array_equal(cf._u(cal.assign(u=[7.0, 8.0])), [7.0, 8.0])
    np.testing.assert_array_equal(cf._scale(cal), [0.25, 0.04])
    np.testing.assert_allclose(cf._scale(cal, 0.5), [0.5, 0.2])
    np.testing.assert_array_equal(cf._scale(cal, 0.0), [1.0, 1.0])
    np.testing.assert_array_equal(cf._scale(cal.drop(columns="scale"), 0.5), [1.0, 1.0])
    np.testing.assert_allclose(cf._pred(cal.assign(mu=[0.5, 0.6]), 0.1), [0.6, 0.3])


def test_fit_slope() -> None:
    cal = pd.DataFrame({"sd": [0.1, 0.2, 0.0, 0.1], "z": [1.0, -2.0, 5.0, 0.5],
                        "mu": [0.8, 0.7, 0.9, 0.75], "auc": [0.83, 0.64, 0.1, np.nan]})
    z = np.array([1.0, -2.0])
    y = np.array([0.3, -0.3])  # (auc − mu) / sd of the two finite rows (sd 0 and NaN AUC drop out)
    assert cf.fit_slope(cal) == pytest.approx(float(z @ y / (z @ z)), abs=1e-12)
    assert cf.fit_slope(cal.assign(u=[0.1, -0.4, 0.5, 0.05])) == pytest.approx(float(z @ y / (z @ z)), abs=1e-12)
    assert cf.fit_slope(cal.assign(auc=[0.77, 0.76, 0.1, np.nan])) == 0.0  # negative: clipped to 0
    assert cf.fit_slope(cal.assign(z=[0.0, 0.0, 5.0, 0.5])) == 0.0  # no spread: 0


def test_conformal_q() -> None:
    r = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    t = np.array(["a", "b", "c", "d", "e", "e"])
    level, q = cf._conformal_q(r, t, 0.8, 0.5)
    assert level == pytest.approx(0.8 * (1 + 0.5 / 5))
    assert q == _brute_quantile(r, t, level)
    level, q = cf._conformal_q(r[:3], t[:3], 0.8, 0.5)  # 3 targets < min_targets(0.8) = 4
    assert level == pytest.approx(0.8 * (1 + 0.5 / 3)) and q is None
    level, q = cf._conformal_q(r[:4], t[:4], 0.8, 1.0)  # level exactly 1: still a (finite) quantile
    assert level == 1.0 and q == 0.4
    level, q = cf._conformal_q(r[:4], t[:4], 0.8, 2.0)  # level > 1: none
    assert level == pytest.approx(1.2) and q is None
    level, q = cf._conformal_q(r[:0], t[:0], 0.8, 0.5)
    assert math.isnan(level) and q is None
    assert cf._conformal_q(r, t, 0.5, 0.0) == (0.5, _brute_quantile(r, t, 0.5))


# -- choosing the exponent of the difficulty scale --------------------------------------------------
def _scaled_cells(gamma: float, n_t: int = 6) -> tuple[pd.DataFrame, np.ndarray]:
    """Residuals that are exactly scale^gamma times one shared set: that γ equalises coverage."""
    e = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    rows, resid = [], []
    for i in range(n_t):
        s = 0.05 * (i + 1)
        for x in e:
            rows.append({"target": f"t{i}", "scale": s})
            resid.append(x * s ** gamma)
    return pd.DataFrame(rows), np.array(resid)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_choose_scale_power_finds_the_exponent_that_balances_coverage(gamma: float) -> None:
    cal, resid = _scaled_cells(gamma)
    assert cf.choose_scale_power(cal, resid, 0.8, 0.5) == gamma


def test_choose_scale_power_edges() -> None:
    cal, resid = _scaled_cells(0.5, n_t=3)
    assert cf.choose_scale_power(cal, resid, 0.8, 0.5) == 1.0  # < 4 targets: trust the scale
    cal, resid = _scaled_cells(0.5, n_t=4)
    assert cf.choose_scale_power(cal, resid, 0.8, 0.5) == 0.5
    assert cf.choose_scale_power(cal, resid, 0.9, 0.5) == 1.0  # 4 targets < min_targets(0.9): no q
    # every exponent balances equally (the same residual everywhere is inside at any γ): the largest
    flat = pd.DataFrame({"target": np.repeat([f"t{i}" for i in range(5)], 2), "scale": np.repeat(
        [0.1, 0.2, 0.3, 0.4, 0.5], 2)})
    assert cf.choose_scale_power(flat, np.zeros(10), 0.8, 0.5) == 1.0


def test_choose_scale_power_balances_the_easy_and_the_hard_half() -> None:
    """Hand-made: the easy half (small scale) is covered by exactly one γ as well as the hard one."""
    cal, resid = _scaled_cells(0.25)
    got = cf.choose_scale_power(cal, resid, 0.8, 0.5)
    assert got == 0.25
    tgt = cal["target"].to_numpy()
    per_t = cal.groupby("target")["scale"].mean()
    easy = set(per_t[per_t <= per_t.median()].index)
    gaps = {}
    for g in cf.SCALE_POWERS:
        sc = cal["scale"].to_numpy() ** g
        _, q = cf._conformal_q(resid / sc, tgt, 0.8, 0.5)
        inside = pd.Series(resid <= q * sc).groupby(tgt).mean()
        gaps[g] = abs(inside[[t for t in inside.index if t in easy]].mean()
                      - inside[[t for t in inside.index if t not in easy]].mean())
    assert gaps[0.25] == min(gaps.values())
    assert sum(v == gaps[0.25] for v in gaps.values()) == 1


# -- calibrate ----------------------------------------------------------------------------------
def _cal(n_t: int = 6, scale: bool = False, scratch: bool = False, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_t):
        mu = 0.7 + 0.04 * i
        sources = [f"s{j}" for j in range(3 + i % 2)] + (["scratch"] if scratch else [])
        for s in sources:
            z = float(rng.normal())
            rows.append({"target": f"t{i}", "source": s, "z": z, "mu": mu, "sd": 0.05,
                         "auc": mu + 0.03 * z + float(rng.normal(0, 0.02))})
    cal = pd.DataFrame(rows)
    if scale:
        cal["u"] = cal["sd"] * cal["z"] * 1.5
        cal["scale"] = difficulty(cal["mu"].to_numpy())
    return cal


def test_calibrate_plain() -> None:
    cal = _cal()
    cal.loc[3, "auc"] = np.nan  # dropped
    got = cf.calibrate(cal, nominal=0.8, correction=0.5)
    ok = cal.dropna(subset=["auc"])
    slope = cf.fit_slope(ok)
    resid = np.abs(ok["auc"] - (ok["mu"] + slope * ok["sd"] * ok["z"])).to_numpy()
    level = 0.8 * (1 + 0.5 / 6)
    assert got == {"nominal": 0.8, "n_targets": 6, "n_cells": len(ok), "slope": slope, "normalised": False,
                   "level": pytest.approx(level), "q": pytest.approx(_brute_quantile(resid, ok["target"].to_numpy(), level))}
    assert slope > 0.3
    assert cf.calibrate(cal) == cf.calibrate(cal, cf.NOMINAL, cf.CORRECTION)
    assert cf.NOMINAL == 0.8 and cf.CORRECTION == 0.5


def test_calibrate_normalised() -> None:
    cal = _cal(scale=True)
    got = cf.calibrate(cal, nominal=0.8, correction=0.5)
    slope = cf.fit_slope(cal)
    raw = np.abs(cal["auc"] - (cal["mu"] + slope * cal["u"])).to_numpy()
    power = cf.choose_scale_power(cal, raw, 0.8, 0.5)
    resid = raw / cal["scale"].to_numpy() ** power
    level = 0.8 * (1 + 0.5 / 6)
    assert got["normalised"] is True and got["scale_power"] == power
    assert got["slope"] == slope
    assert got["q"] == pytest.approx(_brute_quantile(resid, cal["target"].to_numpy(), level), abs=1e-15)
    assert "gain" not in got


def test_calibrate_without_cells_and_with_too_few_targets() -> None:
    cal = _cal(n_t=3)
    assert cf.calibrate(cal.assign(auc=np.nan)) == {"nominal": 0.8, "n_targets": 0, "n_cells": 0,
                                                     "slope": 0.0, "q": None}
    got = cf.calibrate(cal, nominal=0.8)
    assert got["q"] is None and got["n_targets"] == 3 and got["level"] == pytest.approx(0.8 * (1 + 0.5 / 3))


def _gain_resid(cal: pd.DataFrame, slope: float, power: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    pred = cal["mu"].to_numpy() + slope * cf._u(cal)
    out, tg = [], []
    for i, r in cal.iterrows():
        if r["source"] == "scratch":
            continue
        ref = cal[(cal["target"] == r["target"]) & (cal["source"] == "scratch")]
        if ref.empty:
            continue
        j = ref.index[0]
        sc = r["scale"] ** power if "scale" in cal else 1.0
        out.append(abs((r["auc"] - cal.loc[j, "auc"]) - (pred[i] - pred[j])) / sc)
        tg.append(r["target"])
    return np.array(out), np.array(tg)


def test_calibrate_gain() -> None:
    cal = _cal(scratch=True)
    cal = cal[~((cal["target"] == "t5") & (cal["source"] == "scratch"))].reset_index(drop=True)  # t5: no reference
    slope = 0.7
    got = cf.calibrate_gain(cal, slope, nominal=0.8, correction=0.5)
    resid, tg = _gain_resid(cal, slope)
    level = 0.8 * (1 + 0.5 / 5)
    assert got == {"reference": "scratch", "nominal": 0.8, "n_targets": 5, "n_cells": len(resid),
                   "level": pytest.approx(level), "q": pytest.approx(_brute_quantile(resid, tg, level), abs=1e-15)}
    assert got["n_cells"] == sum(3 + i % 2 for i in range(5))
    assert cf.calibrate_gain(cal, slope) == got


def test_calibrate_gain_normalised_and_another_reference() -> None:
    cal = _cal(scale=True, scratch=True)
    got = cf.calibrate_gain(cal, 0.9, 0.8, 0.5, power=0.5)
    resid, tg = _gain_resid(cal, 0.9, power=0.5)
    assert got["q"] == pytest.approx(_brute_quantile(resid, tg, got["level"]), abs=1e-15)
    other = cf.calibrate_gain(cal.assign(source=cal["source"].replace({"scratch": "base"})), 0.9, 0.8, 0.5,
                              reference="base", power=0.5)
    assert other["reference"] == "base" and other["q"] == got["q"] and other["n_cells"] == got["n_cells"]


def test_calibrate_adds_the_gain_calibration_when_scratch_is_a_source() -> None:
    cal = _cal(scale=True, scratch=True)
    got = cf.calibrate(cal, 0.8, 0.5)
    assert got["gain"] == cf.calibrate_gain(cal, got["slope"], 0.8, 0.5, power=got["scale_power"])
    plain = cf.calibrate(_cal(scratch=True).drop(columns=[]), 0.7, 0.25)
    assert plain["gain"] == cf.calibrate_gain(_cal(scratch=True), plain["slope"], 0.7, 0.25, power=1.0)
    assert "gain" not in cf.calibrate(_cal(), 0.8, 0.5)
    assert "gain" not in cf._with_gain({}, _cal().drop(columns="source"), 0.8, 0.5)
    out = cf._with_gain({}, _cal(scratch=True), 0.8, 0.5)  # no slope or power yet: 0 and 1
    assert out["gain"] == cf.calibrate_gain(_cal(scratch=True), 0.0, 0.8, 0.5, power=1.0)


def test_interval_wrappers_are_the_shipped_code() -> None:
    calib = {"slope": 0.8, "q": 0.05, "normalised": True, "scale_power": 0.5}
    z = np.array([-1.0, 0.0, 2.0])
    level = {"mu": 0.8, "sd": 0.05}
    pd.testing.assert_frame_equal(cf.interval(z, level, calib), auc_interval(z, level, calib))
    mu, u = np.array([0.7, 0.8, 0.95]), np.array([0.01, -0.02, 0.03])
    pd.testing.assert_frame_equal(cf.interval_terms(mu, u, calib), auc_interval_terms(mu, u, calib))


def test_intervals_with_gain() -> None:
    src = np.array(["a", "scratch", "b", "a", "scratch"])
    tgt = np.array(["t", "t", "t", "v", "v"])
    auc = np.array([0.9, 0.8, 0.7, 0.6, 0.65])
    iv = pd.DataFrame({"predicted_auc": [0.85, 0.8, 0.75, 0.7, 0.6], "lo": 0.0, "hi": 1.0,
                       "scale": [0.1, 0.2, 0.3, 0.4, 0.5]}, index=[10, 11, 12, 13, 14])
    calib = {"normalised": True, "gain": {"reference": "scratch", "q": 0.5}}
    out = cf.intervals_with_gain(iv, src, tgt, auc, calib)
    assert list(out.columns) == ["predicted_auc", "lo", "hi", "scale", "predicted_gain", "gain_lo", "gain_hi", "gain"]
    assert list(out.index) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(out["predicted_gain"], [0.05, 0.0, -0.05, 0.1, 0.0], atol=1e-12)
    np.testing.assert_allclose(out["gain_lo"], [0.0, np.nan, -0.2, -0.1, np.nan], atol=1e-12)
    np.testing.assert_allclose(out["gain_hi"], [0.1, np.nan, 0.1, 0.3, np.nan], atol=1e-12)
    np.testing.assert_allclose(out["gain"], [0.1, 0.0, -0.1, -0.05, 0.0], atol=1e-12)
    no_scale = cf.intervals_with_gain(iv.drop(columns="scale"), src, tgt, auc, calib)
    np.testing.assert_allclose(no_scale["gain_lo"], [-0.45, np.nan, -0.55, -0.4, np.nan], atol=1e-12)
    other = cf.intervals_with_gain(iv, np.where(src == "scratch", "base", src), tgt, auc,
                                   {"gain": {"reference": "base", "q": 0.5}})
    np.testing.assert_allclose(other["gain"], out["gain"], atol=1e-12)
    default_ref = cf.intervals_with_gain(iv, src, tgt, auc, {"gain": {"q": None}})
    np.testing.assert_allclose(default_ref["gain"], out["gain"], atol=1e-12)
    assert cf.intervals_with_gain(iv, src, tgt, auc, {"q": 0.1}) is iv


# -- coverage -------------------------------------------------------------------------------------
def _cells() -> pd.DataFrame:
    return pd.DataFrame({
        "target": ["a", "a", "a", "b", "b", "c", "c", "d"],
        "auc": [0.80, 0.90, 0.70, 0.60, 0.65, 0.90, 0.95, 0.5],
        "lo": [0.75, 0.70, 0.71, 0.55, 0.70, 0.80, 0.90, np.nan],
        "hi": [0.85, 0.90, 0.80, 0.65, 0.80, 0.96, 0.94, np.nan],
        "gain": [0.05, -0.02, 0.0, 0.1, np.nan, -0.01, -0.2, 0.3],
        "gain_lo": [0.0, -0.1, -0.05, 0.11, 0.0, -0.05, -0.3, np.nan],
        "gain_hi": [0.1, -0.01, 0.05, 0.2, 0.1, -0.02, -0.1, np.nan],
        "predicted_gain": 0.0,
        "level": [0.9, 0.9, 0.9, 0.7, 0.7, 0.95, 0.95, 0.6],
        "scale": [0.1, 0.1, 0.1, 0.3, 0.3, 0.05, 0.05, 0.4],
    })


def test_coverage() -> None:
    got = cf.coverage(_cells(), nominal=0.7)
    inside = [True, True, False, True, False, True, False]  # d has no interval
    assert set(got) == {"nominal", "n_cells", "n_targets", "n_cells_without_interval", "coverage",
                        "per_target_mean", "median_half_width", "gain"}
    assert (got["nominal"], got["n_cells"], got["n_targets"], got["n_cells_without_interval"]) == (0.7, 7, 3, 1)
    assert got["coverage"] == pytest.approx(np.mean(inside))
    assert got["per_target_mean"] == pytest.approx(np.mean([2 / 3, 1 / 2, 1 / 2]))
    half = np.array([0.05, 0.1, 0.045, 0.05, 0.05, 0.08, 0.02])
    assert got["median_half_width"] == pytest.approx(float(np.median(half)))
    assert got["gain"] == cf.gain_coverage(_cells(), 0.7)
    assert cf.coverage(_cells())["nominal"] == 0.8
    assert "gain" not in cf.coverage(_cells().drop(columns=["gain_lo"]))


def test_coverage_without_intervals() -> None:
    cells = _cells().assign(lo=np.nan, hi=np.nan)
    got = cf.coverage(cells.drop(columns=["gain_lo", "gain_hi"]), nominal=0.9)
    assert got["nominal"] == 0.9 and got["n_cells"] == 0 and got["n_targets"] == 0
    assert got["n_cells_without_interval"] == 8
    assert all(math.isnan(got[k]) for k in ("coverage", "per_target_mean", "median_half_width"))
    assert set(got) == {"nominal", "n_cells", "n_targets", "n_cells_without_interval", "coverage",
                        "per_target_mean", "median_half_width"}
    with_gain = cf.coverage(cells, nominal=0.9)
    assert with_gain["gain"] == cf.gain_coverage(cells, 0.9) and with_gain["gain"]["n_cells"] == 6


def test_gain_coverage() -> None:
    got = cf.gain_coverage(_cells(), nominal=0.6)
    # finite gain and gain_lo: rows 0, 1, 2, 3, 5, 6
    inside = [True, True, True, False, False, True]
    assert (got["nominal"], got["n_cells"], got["n_targets"]) == (0.6, 6, 3)
    assert got["coverage"] == pytest.approx(np.mean(inside))
    assert got["per_target_mean"] == pytest.approx(np.mean([1.0, 0.0, 0.5]))
    assert got["median_half_width"] == pytest.approx(float(np.median([0.05, 0.045, 0.05, 0.045, 0.015, 0.1])))
    # flagged negative: gain_hi < 0 in rows 1, 5, 6; measured below 0 in all three
    assert got["n_flagged_negative"] == 3 and got["flagged_negative_measured_below"] == 3
    cells = _cells()
    cells.loc[5, "gain"] = 0.0
    assert cf.gain_coverage(cells)["flagged_negative_measured_below"] == 2
    assert cf.gain_coverage(cells)["nominal"] == 0.8
    none = cf.gain_coverage(_cells().drop(columns=["gain_lo"]), nominal=0.6)
    assert none["n_cells"] == 0 and none["n_targets"] == 0 and math.isnan(none["coverage"])
    assert set(none) == {"nominal", "n_cells", "n_targets", "coverage"}
    assert cf.gain_coverage(_cells().drop(columns=["gain"]))["n_cells"] == 0


def test_inside_counts_the_bounds_as_inside() -> None:
    ok = pd.DataFrame({"target": ["a", "a", "b"], "v": [1.0, 2.0, 3.0], "l": [1.0, 0.0, 3.5], "h": [1.5, 2.0, 4.0]})
    got = cf._inside(ok, "v", "l", "h")
    assert got == {"coverage": pytest.approx(2 / 3), "per_target_mean": pytest.approx(0.5),
                   "median_half_width": pytest.approx(0.25)}


def _scale_cells() -> pd.DataFrame:
    rows = []
    for i, (lvl, inside) in enumerate(((0.95, 2), (0.9, 1), (0.85, 2), (0.7, 0), (0.6, 1), (0.55, 2))):
        for k in range(2):
            rows.append({"target": f"t{i}", "auc": 0.5, "lo": 0.4 if k < inside else 0.6,
                         "hi": 0.6 + 0.1 * i if k < inside else 0.7, "level": lvl, "scale": 1 - lvl})
    return pd.DataFrame(rows)


def test_coverage_by_scale() -> None:
    got = cf.coverage_by_scale(_scale_cells(), nominal=0.7)
    assert [g["half"] for g in got] == ["easier", "harder"]
    easy, hard = got
    assert (easy["n_targets"], easy["n_cells"], easy["nominal"]) == (3, 6, 0.7)
    assert (hard["n_targets"], hard["n_cells"], hard["nominal"]) == (3, 6, 0.7)
    assert easy["coverage"] == pytest.approx(5 / 6) and hard["coverage"] == pytest.approx(3 / 6)
    assert easy["per_target_mean"] == pytest.approx(np.mean([1, 0.5, 1]))
    assert hard["median_half_width"] == pytest.approx(float(np.median([0.05, 0.05, 0.3, 0.05, 0.35, 0.35])))
    assert set(easy) == {"half", "n_targets", "n_cells", "nominal", "coverage", "per_target_mean", "median_half_width"}
    assert cf.coverage_by_scale(_scale_cells())[0]["nominal"] == 0.8
    # split on 1 − level, whatever the scale says (here the scale is reversed)
    rev = cf.coverage_by_scale(_scale_cells().assign(scale=lambda d: d["level"]), nominal=0.7)
    assert rev[0]["coverage"] == easy["coverage"]
    # without a level column, on the scale itself
    by_scale = cf.coverage_by_scale(_scale_cells().drop(columns="level").assign(scale=lambda d: -d["auc"].index.to_numpy()))
    assert by_scale[0]["n_targets"] == 3 and by_scale[0]["coverage"] == pytest.approx(3 / 6)


def test_coverage_by_scale_needs_four_targets_and_a_difficulty() -> None:
    cells = _scale_cells()
    assert cf.coverage_by_scale(cells[cells["target"].isin(["t0", "t1", "t2"])]) == []
    assert len(cf.coverage_by_scale(cells[cells["target"].isin(["t0", "t1", "t2", "t3"])])) == 2
    assert cf.coverage_by_scale(cells.drop(columns=["level", "scale"])) == []
    assert cf.coverage_by_scale(cells.drop(columns=["lo"])) == []
    # NaN intervals are left out before counting targets
    masked = cells.copy()
    masked.loc[masked["target"].isin(["t4", "t5", "t3"]), "lo"] = np.nan
    assert cf.coverage_by_scale(masked) == []
    ties = cells.assign(level=0.8)  # every target at the median: all easier, no harder half
    got = cf.coverage_by_scale(ties)
    assert [g["half"] for g in got] == ["easier"] and got[0]["n_targets"] == 6


# -- boundaries found by search (regression values of the code as it stands) -----------------------
def _cells_of(scales: list[float], k: int) -> pd.DataFrame:
    return pd.DataFrame([{"target": f"t{i}", "scale": s} for i, s in enumerate(scales) for _ in range(k)])


def test_choose_scale_power_median_target_is_easy() -> None:
    """Five targets: the median one belongs to the easier half (≤ median); counted with the harder
    half, the balance would pick another exponent."""
    cal = _cells_of([0.4, 0.19, 0.17, 0.44, 0.45], 4)
    resid = np.array([0.2, 0.14, 0.4, 0.13, 0.03, 0.17, 0.15, 0.13, 0.16, 0.16, 0.13, 0.15, 0.11, 0.06,
                      0.29, 0.31, 0.08, 0.18, 0.41, 0.25])
    assert cf.choose_scale_power(cal, resid, 0.8, 0.5) == 0.75


def test_choose_scale_power_counts_a_residual_at_the_bound_as_inside() -> None:
    cal = _cells_of([0.09, 0.31, 0.18, 0.35, 0.14, 0.47, 0.21], 2)
    resid = np.array([0.11, 0.63, 0.93, 0.44, 0.95, 0.5, 0.43, 0.62, 1.0, 0.95, 0.46, 0.76, 0.5, 0.53])
    assert cf.choose_scale_power(cal, resid, 0.8, 0.5) == 0.0


def test_choose_scale_power_without_a_harder_half_keeps_one() -> None:
    """Every target equally difficult: no harder half, no gap to compare, γ stays 1."""
    cal = _cells_of([0.2] * 5, 3)
    resid = np.linspace(0.01, 0.3, 15)
    assert cf.choose_scale_power(cal, resid, 0.8, 0.5) == 1.0


def _sqrt_scaled_cal() -> pd.DataFrame:
    """Calibration cells whose residuals are e · scale^0.5 (u = 0: slope 0, residual = auc − mu)."""
    cal, resid = _scaled_cells(0.5)
    return cal.assign(mu=0.5, sd=0.1, z=0.0, u=0.0, auc=0.5 + resid,
                      source=np.tile(["s0", "s1", "s2", "s3", "scratch"], 6))


def test_calibrate_uses_the_chosen_exponent() -> None:
    cal = _sqrt_scaled_cal()
    got = cf.calibrate(cal, 0.8, 0.5)
    assert got["slope"] == 0.0 and got["scale_power"] == 0.5 and got["normalised"] is True
    resid = (cal["auc"] - cal["mu"]).to_numpy() / cal["scale"].to_numpy() ** 0.5
    assert got["q"] == pytest.approx(_brute_quantile(resid, cal["target"].to_numpy(), got["level"]), abs=1e-12)
    assert got["gain"] == cf.calibrate_gain(cal, 0.0, 0.8, 0.5, power=0.5)
    assert cf._with_gain({}, cal, 0.8, 0.5)["gain"] == cf.calibrate_gain(cal, 0.0, 0.8, 0.5, power=1.0)
    assert cf.calibrate_gain(cal, 0.0) == cf.calibrate_gain(cal, 0.0, power=1.0)
    assert cf.calibrate_gain(cal, 0.0) != cf.calibrate_gain(cal, 0.0, power=2.0)


def test_fit_slope_small_spread_and_unit_sd() -> None:
    cal = pd.DataFrame({"sd": [1.0, 1.0], "z": [0.5, -0.5], "mu": [0.5, 0.5], "auc": [0.6, 0.45]})
    assert cf.fit_slope(cal) == pytest.approx((0.5 * 0.1 + 0.5 * 0.05) / 0.5, abs=1e-12)


def test_coverage_of_a_single_cell() -> None:
    one = pd.DataFrame({"target": ["a"], "auc": [0.8], "lo": [0.7], "hi": [0.9]})
    got = cf.coverage(one, 0.8)
    assert got["n_cells"] == 1 and got["coverage"] == 1.0 and got["median_half_width"] == pytest.approx(0.1)


def test_gain_interval_with_an_upper_bound_at_zero_is_not_flagged() -> None:
    cells = pd.DataFrame({"target": ["a", "b"], "gain": [-0.1, -0.1], "gain_lo": [-0.2, -0.2],
                          "gain_hi": [0.0, -0.01], "predicted_gain": [-0.1, -0.1]})
    got = cf.gain_coverage(cells)
    assert got["n_flagged_negative"] == 1 and got["flagged_negative_measured_below"] == 1


def test_coverage_by_scale_with_a_level_and_no_scale() -> None:
    got = cf.coverage_by_scale(_scale_cells().drop(columns="scale"), nominal=0.7)
    assert [g["half"] for g in got] == ["easier", "harder"] and got[0]["coverage"] == pytest.approx(5 / 6)


def test_object_dtype_columns_are_read_as_floats() -> None:
    """Tables whose numeric columns arrive as object dtype (mixed-type records) give the same answers."""
    cal = _cal(scale=True, scratch=True)
    obj = cal.astype({c: object for c in ("z", "mu", "sd", "auc", "u", "scale")})
    assert cf.calibrate(obj, 0.8, 0.5) == cf.calibrate(cal, 0.8, 0.5)
    assert cf.fit_slope(obj.drop(columns="u")) == cf.fit_slope(cal.drop(columns="u"))
    assert cf.choose_scale_power(obj, np.linspace(0, 1, len(cal)), 0.8, 0.5) == cf.choose_scale_power(
        cal, np.linspace(0, 1, len(cal)), 0.8, 0.5)
    np.testing.assert_array_equal(cf._pred(obj, 0.3), cf._pred(cal, 0.3))
    assert cf._pred(obj, 0.3).dtype == np.float64 and cf._u(obj).dtype == np.float64
    assert cf._u(obj.drop(columns="u")).dtype == np.float64 and cf._scale(obj, 0.5).dtype == np.float64
    cells = _cells()
    ocells = cells.astype(object)
    assert cf.coverage(ocells) == cf.coverage(cells)
    assert cf.gain_coverage(ocells) == cf.gain_coverage(cells)
    sc = _scale_cells()
    assert cf.coverage_by_scale(sc.astype({"lo": object})) == cf.coverage_by_scale(sc)
