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
from recommender.evaluation.ranking_metrics import comparability_notes, format_ci, n_used
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
    # missing truths are dropped; a missing score gets no rank and is counted
    m2 = rank_metrics([np.nan, 1.0, 0.0, 0.5], [0.9, 0.8, np.nan, 0.7])
    assert m2["n_sources"] == 2 and m2["n_unscored"] == 1 and m2["top1"] == 1


def test_unscored_candidates_are_left_out_not_ranked_last():
    """Issue 13: a similarity that exists for 3 of 5 sources was ranked with the other 2 last.

    Its three scores order those three perfectly; the two it never scored happen to be the
    best sources. Ranked last they made τw strongly negative; left out, τw is 1 over the 3
    it scored, and the 2 are counted."""
    truth = np.array([0.99, 0.98, 0.80, 0.85, 0.90])
    score = np.array([np.nan, np.nan, 1.0, 2.0, 3.0])
    m = rank_metrics(score, truth)
    assert m["tau_w"] == pytest.approx(1.0) and m["n_sources"] == 3 and m["n_unscored"] == 2
    old_way = rank_metrics(np.nan_to_num(score, nan=0.0), truth)  # what "rank last" gave
    assert old_way["tau_w"] < 0


def test_ndcg_gain_separates_random_from_perfect():
    """Raw AUC as gain gave a random ranking NDCG@3 ≈ 0.97: it separated nothing."""
    rng = np.random.default_rng(0)
    truth = 0.9 + 0.09 * rng.random(14)  # AUCs 0.90–0.99, as on the Juodelyte targets
    perfect = rank_metrics(truth, truth)["ndcg3"]
    rand = [rank_metrics(rng.random(14), truth)["ndcg3"] for _ in range(400)]
    expected = random_expected_metrics(truth)["ndcg3"]
    assert perfect == pytest.approx(1.0)
    assert np.mean(rand) < 0.7 and expected < 0.7  # far below a perfect ranking
    assert np.mean(rand) == pytest.approx(expected, abs=0.03)  # the closed form is the MC mean
    assert rank_metrics(-truth, truth)["ndcg3"] < 0.2  # the reversed ranking near the floor


def test_nan_tau_w_is_counted_not_dropped_silently():
    """Constant scores on a target give τw = NaN: the mean is over the others and says so."""
    per = pd.DataFrame({"method": "m", "target": list("abcdef"), "tau_w": [0.5, np.nan, 0.3, np.nan, 0.1, 0.3],
                        "kendall": 0.0, "spearman": 0.0, "top1": 1.0, "top3": 1.0, "regret": 0.0,
                        "ndcg3": 1.0, "n_sources": 5.0, "n_unscored": 0.0})
    s = summarise(per).iloc[0]
    assert s["n_targets"] == 6 and s["tau_w_n"] == 4 and s["tau_w"] == pytest.approx(0.3)
    assert n_used(s) == "4/6" and n_used(s, "regret") == "6"
    notes = " ".join(comparability_notes(summarise(per), per))
    assert "m 4/6" in notes


def test_no_interval_below_five_targets():
    """cats-scans2021 printed top-1 '1.000 [1.000, 1.000]' over 3 targets."""
    assert all(math.isnan(x) for x in bootstrap_ci([1.0, 1.0, 1.0]))
    assert all(math.isnan(x) for x in bootstrap_ci([0.2, 0.4, 0.6, 0.8]))
    assert all(math.isfinite(x) for x in bootstrap_ci([0.2, 0.4, 0.6, 0.8, 0.5]))
    assert format_ci(1.0, *bootstrap_ci([1.0, 1.0, 1.0])) == "1.000 (n too small for an interval)"
    per = pd.DataFrame({"method": "m", "target": list("abc"), "tau_w": 1.0, "kendall": 1.0, "spearman": 1.0,
                        "top1": 1.0, "top3": 1.0, "regret": 0.0, "ndcg3": 1.0})
    s = summarise(per).iloc[0]
    assert math.isnan(s["top1_lo"]) and math.isnan(s["top1_hi"])


def test_methods_on_fewer_targets_or_with_unscored_candidates_are_flagged():
    rows = []
    for t in "abcdef":
        rows.append({"method": "static", "target": t} | rank_metrics(TRUTH, TRUTH))
    for t in "ab":
        rows.append({"method": "most_similar:x", "target": t}
                    | rank_metrics(np.array([np.nan, 1.0, 0.0, np.nan, 2.0]), TRUTH))
    per = pd.DataFrame(rows)
    s = summarise(per)
    assert s.set_index("method").loc["most_similar:x", "n_unscored"] == 4
    notes = " ".join(comparability_notes(s, per))
    assert "most_similar:x (2)" in notes and "all 6 targets" in notes
    assert "most_similar:x 4 of 10" in notes


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
