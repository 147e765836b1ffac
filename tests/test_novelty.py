"""The folder's distance from the KB's targets, and the interval scale chosen from it.

Hand-made target facts and calibration cells: the novelty is the documented k-nearest distance
(re-computed here by brute force); the scale choice picks the variable that the residuals
really grow with, and the plain interval when they grow with neither.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.evaluation import conformal as cf
from recommender.model.novelty import MIN_NOVELTY, K, Novelty, novelty_scale
from recommender.model.scoring import auc_interval_terms, difficulty, interval_scale


def _facts(n: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, 3)) * [1.0, 5.0, 0.1], columns=["a", "b", "c"])


def _brute(X: pd.DataFrame, q: np.ndarray, ref_rows: np.ndarray) -> float:
    mu, sd = X.mean().to_numpy(), X.std(ddof=0).to_numpy()
    z, Z = (q - mu) / sd, (X.to_numpy() - mu) / sd
    d = sorted(float(np.sqrt(((z - Z[i]) ** 2).sum())) for i in ref_rows)
    return float(np.mean(d[:K]) / np.sqrt(X.shape[1]))


def test_novelty_is_the_standardised_k_nearest_distance() -> None:
    X = _facts()
    nov = Novelty.fit(X)
    q = np.array([[0.3, -2.0, 0.05], [10.0, 40.0, 1.0]])
    got = nov.distance(pd.DataFrame(q, columns=X.columns))
    want = [_brute(X, row, np.arange(len(X))) for row in q]
    np.testing.assert_allclose(got, want)
    assert got[1] > 5 * got[0]  # far from every training target: far more novel
    # an unknown fact sits at the training mean, a missing column too
    part = nov.distance(pd.DataFrame({"a": [0.3], "c": [np.nan]}))
    np.testing.assert_allclose(part, [_brute(X, np.array([0.3, X["b"].mean(), X["c"].mean()]), np.arange(len(X)))])


def test_reference_leaves_out_the_targets_own_group() -> None:
    X = _facts()
    X.loc[1] = X.loc[0] + 1e-6  # a twin of target 0
    alone = Novelty.fit(X)
    grouped = Novelty.fit(X, groups=["g0", "g0", "g2", "g3", "g4", "g5", "g6", "g7"])
    for i in range(len(X)):
        others = [j for j in range(len(X)) if j != i and {i, j} != {0, 1}]
        assert grouped.reference[i] == pytest.approx(_brute(X, X.to_numpy()[i], np.array(others)))
    # alone, its twin (distance ≈ 0) is one of target 0's K nearest: it looks familiar
    assert alone.reference[0] == pytest.approx(_brute(X, X.to_numpy()[0], np.arange(1, len(X))))
    assert alone.reference[0] < 0.8 * grouped.reference[0]
    k, n = grouped.share_closer(max(grouped.reference) + 1.0)
    assert (k, n) == (8, 8) and grouped.share_closer(0.0) == (0, 8)


def test_novelty_state_round_trip_and_refusals() -> None:
    X = _facts()
    nov = Novelty.fit(X, groups=list("abcdefgh"))
    back = Novelty.from_state(nov.state())
    q = pd.DataFrame([[1.0, 2.0, 0.3]], columns=X.columns)
    np.testing.assert_allclose(back.distance(q), nov.distance(q))
    assert back.reference == nov.reference
    assert Novelty.fit(X.iloc[:3]) is None and Novelty.fit(X[[]]) is None
    assert Novelty.from_state(None) is None


def test_interval_scale_by_kind() -> None:
    mu, nov = np.array([0.9, 0.6]), np.array([0.01, 2.0])
    plain = {"slope": 1.0, "q": 0.1}
    np.testing.assert_allclose(interval_scale(mu, nov, plain), [1.0, 1.0])
    cal_d = plain | {"normalised": True, "scale_power": 0.5}
    np.testing.assert_allclose(interval_scale(mu, nov, cal_d), difficulty(mu) ** 0.5)
    cal_n = cal_d | {"scale_kind": "novelty"}
    np.testing.assert_allclose(interval_scale(mu, nov, cal_n), np.array([MIN_NOVELTY, 2.0]) ** 0.5)
    np.testing.assert_allclose(novelty_scale(np.array([0.0, np.nan, 3.0])), [MIN_NOVELTY, np.nan, 3.0])
    # a novelty calibration with no novelty: no interval, never a wrong one
    iv = auc_interval_terms(mu, np.zeros(2), cal_n)
    assert iv["lo"].isna().all() and iv["hi"].isna().all()
    iv = auc_interval_terms(mu, np.zeros(2), cal_n, nov)
    np.testing.assert_allclose(iv["hi"] - iv["lo"], 2 * 0.1 * np.array([MIN_NOVELTY, 2.0]) ** 0.5)
    np.testing.assert_allclose(interval_scale(mu, nov, cal_n | {"scale_power": 0.0}), [1.0, 1.0])


def _cells(grows_with: str, n_targets: int = 24, per: int = 12, seed: int = 1) -> pd.DataFrame:
    """Calibration cells whose |residual| grows with the target's novelty, its difficulty, or neither."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_targets):
        nov, mu = rng.uniform(0.2, 3.0), rng.uniform(0.55, 0.97)
        spread = {"novelty": 0.02 * nov, "difficulty": 0.15 * (1 - mu), "neither": 0.03}[grows_with]
        for _ in range(per):
            rows.append({"target": f"t{i}", "mu": mu, "novelty": nov, "scale": float(difficulty(np.array(mu))),
                         "resid": abs(rng.normal(0, spread))})
    return pd.DataFrame(rows)


def _calibration_cells() -> pd.DataFrame:
    """16 targets × (scratch + 3 sources) whose AUC misses the level by a novelty-growing residual."""
    c = _cells("novelty", n_targets=16, per=4)
    c = c.assign(source=np.tile(["scratch", "s1", "s2", "s3"], 16), z=0.0, sd=0.1, u=0.0)
    c["auc"] = c["mu"] + np.where(np.arange(len(c)) % 2, 1, -1) * c["resid"]
    return c


@pytest.mark.parametrize("grows_with", ["novelty", "difficulty"])
def test_choose_scale_picks_the_variable_the_error_grows_with(grows_with: str) -> None:
    c = _cells(grows_with)
    kind, power = cf.choose_scale(c, c["resid"].to_numpy(), 0.8, 0.5)
    assert kind == grows_with and power >= 0.75


def test_choose_scale_keeps_the_plain_interval_when_the_error_grows_with_neither() -> None:
    c = _cells("neither")
    assert cf.choose_scale(c, c["resid"].to_numpy(), 0.8, 0.5)[1] <= 0.25
    # without a novelty column it is the difficulty's balance alone
    d = _cells("difficulty").drop(columns="novelty")
    assert cf.choose_scale(d, d["resid"].to_numpy(), 0.8, 0.5) == ("difficulty", cf.choose_scale_power(
        d, d["resid"].to_numpy(), 0.8, 0.5))


def test_calibrate_with_novelty_scales_auc_and_gain_residuals_alike() -> None:
    c = _calibration_cells()
    got = cf.calibrate(c.drop(columns="resid"), 0.8)
    assert got["normalised"] and got["scale_kind"] == "novelty"
    assert got["gain"] == cf.calibrate_gain(c.drop(columns="resid"), got["slope"], 0.8, 0.5,
                                            power=got["scale_power"], kind="novelty")
    narrower = cf.calibrate_gain(c.drop(columns="resid"), got["slope"], 0.8, 0.5, power=got["scale_power"])
    assert narrower["q"] != got["gain"]["q"]  # the kind reaches the gain's residuals


def test_coverage_by_scale_adds_the_nearer_and_the_farther_half() -> None:
    rows = []
    for i in range(6):
        for _j in range(3):
            inside = i < 3  # the three nearest targets are covered, the three farthest are not
            rows.append({"target": f"t{i}", "level": 0.9 - 0.01 * ((i * 7) % 6), "novelty": float(i),
                         "auc": 0.5, "lo": 0.4 if inside else 0.6, "hi": 0.7, "scale": 1.0})
    got = {h["half"]: h for h in cf.coverage_by_scale(pd.DataFrame(rows))}
    assert set(got) == {"easier", "harder", "nearer", "farther"}
    assert got["nearer"]["coverage"] == 1.0 and got["farther"]["coverage"] == 0.0
    assert got["nearer"]["n_targets"] == 3 and got["farther"]["n_cells"] == 9
    no_nov = cf.coverage_by_scale(pd.DataFrame(rows).assign(novelty=np.nan))
    assert {h["half"] for h in no_nov} == {"easier", "harder"}


def _shipped(scale_kind: str = "novelty", power: float = 0.5):  # noqa: ANN202
    from types import SimpleNamespace

    nov = Novelty.fit(_facts(10), groups=[f"g{i}" for i in range(10)])
    return SimpleNamespace(level_model=SimpleNamespace(novelty_model=nov, model=object(), use_estimates=True),
                           fitted=SimpleNamespace(auc_units=True),
                           calibration={"normalised": True, "scale_kind": scale_kind, "scale_power": power,
                                        "q": 1.0, "nominal": 0.8},
                           validated={"coverage": {"coverage": 0.81, "n_cells": 100, "n_targets": 10}}), nov


def test_recommend_states_an_extrapolation_and_whether_the_interval_widens_for_it() -> None:
    from recommender.recommend import _interval_info, folder_novelty

    shipped, nov = _shipped()
    far = pd.DataFrame({"source": ["a", "b"], "novelty": [max(nov.reference) + 1.0] * 2})
    got = folder_novelty(shipped, far)
    assert got["far"] and (got["farther_than"], got["n_targets"]) == (10, 10) and got["scales_interval"]
    assert "extrapolates" in got["text"] and "widened by that distance" in got["text"]
    assert "than any of its 10 targets lies from the others" in got["text"]
    near = folder_novelty(shipped, far.assign(novelty=min(nov.reference) - 1e-9))
    assert not near["far"] and near["farther_than"] == 0 and "extrapolates" not in near["text"]
    plain, _ = _shipped(power=0.0)
    assert "not widened" in folder_novelty(plain, far)["text"] and not folder_novelty(plain, far)["scales_interval"]
    # the short caption mentions it only for an extrapolation; the full one always
    assert "Note: your folder" in _interval_info(shipped, far)["brief"]
    info = _interval_info(shipped, far.assign(novelty=min(nov.reference) - 1e-9))
    assert "your folder" not in info["brief"] and "farther from the KB's targets than 0 of its 10" in info["caption"]
    # a model saved without a novelty: nothing said
    from types import SimpleNamespace

    old = SimpleNamespace(level_model=SimpleNamespace(novelty_model=None), calibration={})
    assert folder_novelty(old, far) is None and folder_novelty(shipped, far.drop(columns="novelty")) is None


def test_the_novelty_scale_is_floored_and_needs_every_value() -> None:
    cal = pd.DataFrame({"target": ["a", "b", "c"], "scale": [0.1, 0.2, 0.3], "novelty": [0.0, 0.01, 2.0]})
    np.testing.assert_allclose(cf._scale(cal, 1.0, "novelty"), [MIN_NOVELTY, MIN_NOVELTY, 2.0])
    np.testing.assert_allclose(cf._scale(cal, 0.5, "difficulty"), np.sqrt([0.1, 0.2, 0.3]))
    gap = cal.assign(novelty=[1.0, np.nan, 2.0])
    assert cf._base(gap, "novelty") is None and np.all(cf._scale(gap, 1.0, "novelty") == 1.0)


def test_choose_scale_with_nothing_to_scale_by_keeps_the_difficulty_at_one() -> None:
    c = _cells("neither").drop(columns=["scale", "novelty"])
    assert cf.choose_scale(c, c["resid"].to_numpy(), 0.8, 0.5) == ("difficulty", 1.0)


def test_choose_scale_power_ignores_the_novelty() -> None:
    c = _cells("novelty")
    alone = cf.choose_scale(c.drop(columns="novelty"), c["resid"].to_numpy(), 0.8, 0.5)
    both = cf.choose_scale(c, c["resid"].to_numpy(), 0.8, 0.5)
    assert both[0] == "novelty" and both[1] != alone[1]  # the novelty would change the power
    assert cf.choose_scale_power(c, c["resid"].to_numpy(), 0.8, 0.5) == alone[1]


def test_calibrate_divides_by_the_chosen_novelty_scale_and_needs_a_difficulty_to_normalise() -> None:
    c = _calibration_cells()
    cal = c.drop(columns="resid")
    got = cf.calibrate(cal, 0.8)
    assert got["scale_kind"] == "novelty"
    raw = np.abs(cal["auc"].to_numpy() - cal["mu"].to_numpy())
    sc = novelty_scale(cal["novelty"].to_numpy()) ** got["scale_power"]
    assert got["q"] == cf._conformal_q(raw / sc, cal["target"].to_numpy(), 0.8, 0.5)[1]
    # a novelty without a difficulty column: the plain interval (nothing is normalised)
    plain = cf.calibrate(cal.drop(columns="scale"), 0.8)
    assert not plain["normalised"] and "scale_kind" not in plain
    assert plain["q"] == cf._conformal_q(raw, cal["target"].to_numpy(), 0.8, 0.5)[1]


def test_interval_terms_passes_the_novelty_and_halves_read_object_columns() -> None:
    mu, u, nov = np.array([0.8, 0.7]), np.array([0.01, -0.02]), np.array([0.5, 2.0])
    calib = {"slope": 1.0, "q": 0.05, "normalised": True, "scale_kind": "novelty", "scale_power": 1.0}
    got = cf.interval_terms(mu, u, calib, nov)
    pd.testing.assert_frame_equal(got, auc_interval_terms(mu, u, calib, nov))
    assert got["lo"].notna().all()
    rows = [{"target": f"t{i}", "level": 0.9 - 0.01 * i, "novelty": float(i), "auc": 0.5, "lo": 0.4, "hi": 0.6,
             "scale": 1.0} for i in range(6)]
    cells = pd.DataFrame(rows)
    assert cf.coverage_by_scale(cells.astype({"novelty": object})) == cf.coverage_by_scale(cells)


def test_choose_scale_early_returns_name_the_first_available_kind() -> None:
    c = _cells("novelty", n_targets=3, per=4)
    assert cf.choose_scale(c, c["resid"].to_numpy(), 0.8, 0.5) == ("difficulty", 1.0)  # < 4 targets
    only = c.drop(columns="scale")
    assert cf.choose_scale(only, only["resid"].to_numpy(), 0.8, 0.5) == ("novelty", 1.0)
    few = _cells("novelty", n_targets=5, per=2).drop(columns="scale")  # 5 targets: no finite q at 0.9
    assert cf.choose_scale(few, few["resid"].to_numpy(), 0.9, 0.5) == ("novelty", 1.0)
