"""recommender.evaluation.paired, pinned by exact values (written against its surviving mutants)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recommender.evaluation import paired
from recommender.evaluation.paired import (
    _bootstrap_mean_diff,
    format_p,
    paired_comparison,
    sentence,
    signed,
    wilcoxon_p,
    words,
)

A = np.array([0.31, 0.12, 0.55, 0.20, 0.93, 0.41, 0.60])
B = np.array([0.10, 0.15, 0.30, 0.05, 0.50, 0.40, 0.35])


def _scipy_ci(a, b, n_boot, level, seed, method="BCa"):  # noqa: ANN001, ANN202
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.bootstrap((a, b), lambda x, y: np.mean(x - y), paired=True, vectorized=False,
                            n_resamples=n_boot, confidence_level=level, method=method,
                            rng=np.random.default_rng(seed))
    return float(r.confidence_interval.low), float(r.confidence_interval.high)


def test_bootstrap_ci_is_scipys_paired_bca_with_these_settings() -> None:
    got = _bootstrap_mean_diff(A, B, seed=3, n_boot=300, level=0.8)
    assert got == _scipy_ci(A, B, 300, 0.8, 3)
    assert got == _bootstrap_mean_diff(A, B, seed=3, n_boot=300, level=0.8)  # seeded: reproducible
    assert got != _bootstrap_mean_diff(A, B, seed=4, n_boot=300, level=0.8)
    assert got[0] < float(np.mean(A - B)) < got[1]


def test_bootstrap_falls_back_to_the_percentile_interval_when_bca_fails() -> None:
    """One resample: BCa cannot be computed (NaN), the percentile interval can."""
    assert all(math.isnan(v) for v in _scipy_ci(A, B, 1, 0.95, 0))
    got = _bootstrap_mean_diff(A, B, seed=0, n_boot=1, level=0.95)
    assert got == _scipy_ci(A, B, 1, 0.95, 0, method="percentile")
    assert all(math.isfinite(v) for v in got)


def test_constant_differences_need_no_resampling(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("no bootstrap for constant differences")

    monkeypatch.setattr(paired.stats, "bootstrap", boom)
    b = np.array([0.5, 0.25, 0.75, 0.125, 1.0])  # + 0.25 exactly: the differences are constant
    assert _bootstrap_mean_diff(b + 0.25, b, 0, 100, 0.95) == (0.25, 0.25)
    assert _bootstrap_mean_diff(np.array([0.9]), np.array([0.4]), 0, 100, 0.95) == (0.5, 0.5)


def test_wilcoxon_p_edges() -> None:
    assert math.isnan(wilcoxon_p([]))
    assert wilcoxon_p([0, 0, 0]) == 1.0
    assert wilcoxon_p(np.zeros(30)) == 1.0  # scipy itself says NaN here (normal approximation)
    assert wilcoxon_p([0.0]) == 1.0
    d = [0.1, -0.2, 0.3, 0.4, 0.5, 0.0]
    assert wilcoxon_p(d) == float(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    assert wilcoxon_p([1, 1, 1, 1, 1, 1]) == float(stats.wilcoxon([1.0] * 6).pvalue)
    assert wilcoxon_p([0.3]) == float(stats.wilcoxon([0.3]).pvalue)


def test_words() -> None:
    assert words(0.1, 0.2, 0.01, 10) == "better"
    assert words(0.1, 0.2, 0.01, 10, higher_is_better=False) == "worse"
    assert words(-0.2, -0.1, 0.01, 10) == "worse"
    assert words(-0.2, -0.1, 0.01, 10, higher_is_better=False) == "better"
    assert words(0.1, 0.2, 0.5, 10) == "no detectable difference"  # alpha 0.05 by default
    assert words(0.1, 0.2, 0.05, 10) == "no detectable difference"  # p must be below alpha
    assert words(0.1, 0.2, 0.04, 5) == "better"  # n = MIN_N is enough
    assert words(0.1, 0.2, 0.01, 4) == "n too small to tell"
    assert words(math.nan, -0.1, 0.01, 10) == "no detectable difference"
    assert words(0.1, math.nan, 0.01, 10) == "no detectable difference"
    assert words(0.1, 0.2, math.nan, 10) == "no detectable difference"
    assert words(0.0, 0.2, 0.01, 10) == "no detectable difference"  # the CI must exclude 0
    assert words(-0.2, 0.0, 0.01, 10) == "no detectable difference"
    assert words(-0.1, 0.5, 0.01, 10) == "no detectable difference"
    assert words(-0.1, 0.5, 0.01, 10, higher_is_better=False) == "no detectable difference"


def test_paired_comparison_values() -> None:
    a = pd.Series(A, index=[f"t{i}" for i in range(7)])
    b = pd.Series(B, index=a.index)
    c = paired_comparison(a, b, n_boot=300)
    assert c == paired_comparison(a, b, seed=0, n_boot=300)
    lo, hi = _scipy_ci(A, B, 300, 0.95, 0)
    assert (c["lo"], c["hi"]) == (lo, hi)
    assert c["mean_diff"] == float(np.mean(A - B))
    assert c["p"] == wilcoxon_p(A - B)
    assert (c["n"], c["unit"], c["n_targets"], c["level"], c["higher_is_better"]) == (7, "targets", 7, 0.95, True)
    assert c["words"] == words(lo, hi, c["p"], 7)
    five = paired_comparison(a.iloc[:5], b.iloc[:5], n_boot=300)
    assert five["n"] == 5 and math.isfinite(five["lo"]) and math.isfinite(five["hi"])


def test_paired_comparison_coerces_and_drops_non_numbers() -> None:
    a = pd.Series(["0.5", "n/a", 0.7, 0.2, 0.9, 0.4], index=list("uvwxyz"), dtype=object)
    b = pd.Series([0.1, 0.2, "?", 0.1, 0.3, 0.1], index=list("uvwxyz"), dtype=object)
    c = paired_comparison(a, b, n_boot=50)
    assert (c["n"], c["n_targets"]) == (4, 4)
    assert c["mean_diff"] == pytest.approx(np.mean([0.4, 0.1, 0.6, 0.3]), abs=1e-12)


def test_groups_only_when_some_group_holds_several_targets() -> None:
    idx = [f"t{i}" for i in range(7)]
    a, b = pd.Series(A, index=idx), pd.Series(B, index=idx)
    own = paired_comparison(a, b, groups={t: f"g{t}" for t in idx}, n_boot=50)
    assert (own["unit"], own["n"]) == ("targets", 7)
    partial = paired_comparison(a, b, groups={"t0": "g", "t1": "g"}, n_boot=50)  # others: their own group
    assert (partial["unit"], partial["n"], partial["n_targets"]) == ("groups", 6, 7)
    d = A - B
    assert partial["mean_diff"] == pytest.approx(np.mean([d[:2].mean(), *d[2:]]), abs=1e-12)


def test_no_or_one_common_target() -> None:
    a = pd.Series([0.5, math.nan], index=["x", "y"])
    b = pd.Series([math.nan, 0.3], index=["x", "y"])
    c = paired_comparison(a, b, level=0.9, higher_is_better=False)
    assert set(c) == {"n", "unit", "n_targets", "level", "higher_is_better", "mean_diff", "lo", "hi", "p", "words"}
    assert (c["n"], c["unit"], c["n_targets"], c["level"], c["higher_is_better"]) == (0, "targets", 0, 0.9, False)
    assert all(math.isnan(c[k]) for k in ("mean_diff", "lo", "hi", "p"))
    assert c["words"] == "no common targets"
    one = paired_comparison(pd.Series([0.5], index=["x"]), pd.Series([0.3], index=["x"]))
    assert one["n"] == 1 and one["words"] == "n too small to tell"
    assert one["mean_diff"] == pytest.approx(0.2)


def test_signed_and_format_p() -> None:
    assert signed(0.0123) == "+0.012"
    assert signed(-0.0344) == "−0.034"
    assert signed(-0.0344, 1) == "−0.0"
    assert format_p(None) == "p —"
    assert format_p(math.nan) == "p —"
    assert format_p(0.0005) == "p < 0.001"
    assert format_p(0.001) == "p = 0.001"
    assert format_p(0.85) == "p = 0.850"


def _comp(**kw) -> dict:  # noqa: ANN003
    return {"n": 12, "unit": "targets", "n_targets": 12, "mean_diff": 0.006, "lo": -0.037, "hi": 0.051,
            "p": 0.85, "words": "no detectable difference"} | kw


def test_sentence() -> None:
    assert sentence("shipped", "static", _comp()) == (
        "shipped vs static: Δτw +0.006 [95% CI −0.037, +0.051], Wilcoxon p = 0.850, n = 12 targets: "
        "no detectable difference").replace("−", "-")
    assert sentence("a", "b", _comp(level=0.8, p=0.01, unit="groups", n=6), metric="AUC", fmt="{:.2f}") == (
        "a vs b: ΔAUC 0.01 [80% CI -0.04, 0.05], Wilcoxon p = 0.010, n = 6 groups (12 targets): "
        "no detectable difference")
    assert sentence("a", "b", _comp(n=5)).startswith("a vs b: Δτw +0.006 [95% CI")
    assert sentence("a", "b", _comp(lo=math.nan, hi=math.inf, level=1.0)).startswith(
        "a vs b: Δτw +0.006 [100% CI +nan, +inf], ")
    assert sentence("a", "b", _comp(n=4)) == (
        "a vs b: Δτw +0.006 no CI (n too small), Wilcoxon p = 0.850, n = 4 targets: no detectable difference")
    assert sentence("a", "b", _comp(n=1, unit="groups")) == (
        "a vs b: Δτw +0.006 no CI (n too small), Wilcoxon p = 0.850, n = 1 groups (12 targets): "
        "no detectable difference")
    no_unit = {k: v for k, v in _comp().items() if k != "unit"}
    assert sentence("a", "b", no_unit).endswith("n = 12 targets: no detectable difference")
    assert sentence("a", "b", {"words": "x"}) == "a vs b: no common targets"
    assert sentence("a", "b", _comp(n=0)) == "a vs b: no common targets"
