"""Paired comparisons: a real difference is 'better' with a CI excluding 0; none, or n < 5, is not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recommender.evaluation.paired import MIN_N, format_p, paired_comparison, sentence


def _series(v) -> pd.Series:  # noqa: ANN001
    return pd.Series(v, index=[f"t{i}" for i in range(len(v))], dtype=float)


def test_clear_improvement_is_better_with_ci_and_p():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.3, 0.6, 12)
    a = b + 0.1 + rng.normal(0, 0.02, 12)
    c = paired_comparison(_series(a), _series(b))
    assert c["n"] == 12 and c["unit"] == "targets"
    assert c["lo"] > 0 and c["p"] < 0.01 and c["words"] == "better"
    assert c["mean_diff"] == pytest.approx(np.mean(a - b))
    assert paired_comparison(_series(b), _series(a))["words"] == "worse"


def test_no_difference_and_all_zero_differences():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.3, 0.6, 12)
    noise = paired_comparison(_series(b + rng.normal(0, 0.05, 12)), _series(b))
    assert noise["lo"] < 0 < noise["hi"] and noise["words"] == "no detectable difference"
    same = paired_comparison(_series(b), _series(b))
    assert same["p"] == 1.0 and same["lo"] == same["hi"] == 0.0
    assert same["words"] == "no detectable difference"


def test_small_n_has_no_ci():
    c = paired_comparison(_series([0.9, 0.8, 0.7]), _series([0.1, 0.2, 0.3]))
    assert c["n"] == 3 < MIN_N and math.isnan(c["lo"]) and math.isnan(c["hi"])
    assert "n too small" in c["words"]
    assert "no CI (n too small)" in sentence("a", "b", c)


def test_groups_are_the_unit_when_they_hold_several_targets():
    a = _series([0.5, 0.5, 0.5, 0.6, 0.7, 0.8])
    b = _series([0.4, 0.4, 0.4, 0.5, 0.6, 0.7])
    groups = {"t0": "g", "t1": "g", "t2": "g", "t3": "h", "t4": "i", "t5": "j"}
    c = paired_comparison(a, b, groups=groups)
    assert c["unit"] == "groups" and c["n"] == 4 and c["n_targets"] == 6


def test_lower_is_better_metric_and_nan_targets_dropped():
    a = _series([0.01, 0.00, 0.02, 0.01, 0.00, 0.01, np.nan])
    b = _series([0.05, 0.04, 0.06, 0.05, 0.07, 0.06, 0.03])
    c = paired_comparison(a, b, higher_is_better=False)
    assert c["n"] == 6 and c["words"] == "better" and c["hi"] < 0  # n = 5 can never reach p < 0.05


def test_p_formatting():
    assert format_p(0.0004) == "p < 0.001"
    assert format_p(0.0123) == "p = 0.012"
