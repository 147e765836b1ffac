"""Ranking metrics, random expectations, bootstrap CIs, and the published reproductions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from scipy.stats import weightedtau

from recommender.evaluation import (
    bootstrap_ci,
    evaluate_scores,
    load_score_table,
    random_expected_metrics,
    rank_metrics,
    summarise,
)
from recommender.model import static_scores

TRUTH = np.array([0.91, 0.95, 0.80, 0.88, 0.93])


def test_perfect_and_reversed_rankings():
    good = rank_metrics(TRUTH * 2, TRUTH)
    assert good["tau_w"] == pytest.approx(1.0) and good["kendall"] == pytest.approx(1.0)
    assert good["top1"] == 1 and good["top3"] == 1 and good["regret"] == 0 and good["ndcg3"] == pytest.approx(1)
    bad = rank_metrics(-TRUTH, TRUTH)
    assert bad["tau_w"] == pytest.approx(-1.0) and bad["spearman"] == pytest.approx(-1.0)
    assert bad["top1"] == 0 and bad["top3"] == 0
    assert bad["regret"] == pytest.approx(0.95 - 0.80)


def test_hand_computed_case_and_scipy_default_tau_w():
    score = np.array([3.0, 2.0, 1.0, 0.0, 5.0])  # picks 0.93 (2nd best) first, best is 2nd
    m = rank_metrics(score, TRUTH)
    assert m["top1"] == 0 and m["top3"] == 1
    assert m["regret"] == pytest.approx(0.95 - 0.93)
    assert m["tau_w"] == pytest.approx(weightedtau(score, TRUTH)[0])
    # missing scores rank last, missing truths are dropped
    m2 = rank_metrics([np.nan, 1.0, 0.0], [0.9, 0.8, np.nan])
    assert m2["n_sources"] == 2 and m2["top1"] == 0


def test_random_expectation_matches_full_enumeration():
    """Exact parts vs the mean over all n! rankings; the τw Monte Carlo within 0.02 of it."""
    g = TRUTH[:5]
    perms = [rank_metrics(np.array(p, dtype=float), g) for p in itertools.permutations(range(5))]
    exact = {k: float(np.mean([p[k] for p in perms])) for k in perms[0]}
    rnd = random_expected_metrics(g)
    for k in ("kendall", "spearman", "top1", "top3", "regret", "ndcg3"):
        assert rnd[k] == pytest.approx(exact[k], abs=1e-9), k
    assert rnd["tau_w"] == pytest.approx(exact["tau_w"], abs=0.02)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    v = np.array([0.2, 0.5, 0.9, 0.4, 0.6])
    lo, hi = bootstrap_ci(v, seed=3)
    assert lo < v.mean() < hi
    assert (lo, hi) == bootstrap_ci(v, seed=3)
    per = pd.DataFrame({"method": "m", "target": list("abcde"), "tau_w": v, "kendall": v,
                        "spearman": v, "top1": [1, 0, 1, 1, 0], "top3": 1.0, "regret": 0.0, "ndcg3": 1.0})
    s = summarise(per).iloc[0]
    assert s["n_targets"] == 5 and s["top1_count"] == 3 and s["tau_w"] == pytest.approx(v.mean())


def _juodelyte_matrix() -> pd.DataFrame:
    df = pd.read_csv(shared_path("kb", "juodelyte2024", "aucs_dataset.csv"), index_col=0)
    return df.set_index("source")


def test_static_baseline_reproduces_kb_readme():
    """kb/README.md: static ranking → mean τw 0.556, mean regret 0.0053 over 12 targets."""
    m = _juodelyte_matrix()
    per = [rank_metrics(static_scores(m, t), m[t].dropna()) for t in m.columns]
    assert len(per) == 12
    assert np.mean([p["tau_w"] for p in per]) == pytest.approx(0.556, abs=5e-4)
    assert np.mean([p["regret"] for p in per]) == pytest.approx(0.0053, abs=5e-5)
    strict = [rank_metrics(static_scores(m, t, strict=True), m[t].dropna()) for t in m.columns]
    assert not math.isclose(np.mean([p["tau_w"] for p in strict]), np.mean([p["tau_w"] for p in per]))


def test_logme_scores_file_reproduces_0_335_over_11_targets():
    m = _juodelyte_matrix()
    table = load_score_table(shared_path("kb", "juodelyte2024", "logme_dataset.csv"))
    per = evaluate_scores(table, m, "logme")
    assert len(per) == 11
    assert per["tau_w"].mean() == pytest.approx(0.335, abs=5e-4)


def test_long_score_table_equals_wide(tmp_path):
    wide = pd.DataFrame({"source": ["a", "b", "c"], "x": [1.0, 2.0, 3.0], "y": [3.0, 1.0, 2.0]})
    wide.to_csv(tmp_path / "w.csv", index=False)
    long = wide.melt(id_vars="source", var_name="target", value_name="score")
    long.to_csv(tmp_path / "l.csv", index=False)
    a = load_score_table(tmp_path / "w.csv").sort_index()
    b = load_score_table(tmp_path / "l.csv").sort_index()
    pd.testing.assert_frame_equal(a, b, check_names=False, check_dtype=False, check_column_type=False,
                                  check_index_type=False)
