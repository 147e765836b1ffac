"""recommender.evaluation.scratch_sign, pinned by exact values (written against its surviving mutants).

Small hand-made KBs and prediction tables; every expected number is re-derived here from the
documented definitions (paired_comparison for the truth, the Wilson formula, counts by hand).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.knowledge_base import SCRATCH, KnowledgeBase
from recommender.evaluation import scratch_sign as ss
from recommender.evaluation.paired import paired_comparison

# target -> {source: per-seed values}; 6 seeds
SEEDS = 6
_JIT = np.array([0.001, -0.002, 0.0005, 0.0015, -0.001, 0.0])
FLAT_NOISE = np.array([0.01, -0.011, 0.008, -0.012, 0.005, -0.003])
VALUES = {
    "up": {"a": 0.80, "b": 0.85, "c": 0.70, SCRATCH: 0.75},  # b best, helps clearly
    "down": {"a": 0.70, "b": 0.72, SCRATCH: 0.80},  # hurts clearly
    "flat": {"a": 0.750, "b": 0.749, SCRATCH: 0.7495},  # a ahead by its mean, not detectably
    "noscr": {"a": 0.9, "b": 0.8},  # scratch never measured here
}


def _records(values: dict = VALUES, jitter: dict | None = None) -> pd.DataFrame:
    rows = []
    for t, per in values.items():
        for s, mu in per.items():
            for k in range(SEEDS):
                j = (jitter or {}).get((s, t), _JIT)[k]
                rows.append({"source": s, "target": t, "metric": "roc_auc", "fold": -1, "seed": k,
                             "value": mu + j + (FLAT_NOISE[k] if (s, t) == (SCRATCH, "flat") else 0.0)})
    return pd.DataFrame(rows)


def _kb(records: pd.DataFrame | None = None, groups: dict | None = None) -> KnowledgeBase:
    r = _records() if records is None else records
    names = sorted(set(r["source"]) | set(r["target"]))
    man = {"name": "k", "metric": "roc_auc", "sources": sorted(set(r["source"])),
           "targets": list(dict.fromkeys(r["target"]))} | ({"groups": groups} if groups else {})
    return KnowledgeBase("k", r, pd.DataFrame({"name": names}), man)


def test_has_scratch() -> None:
    assert not ss.has_scratch(pd.DataFrame(columns=["source"]))
    assert not ss.has_scratch(pd.DataFrame({"source": ["a", "b"]}))
    assert ss.has_scratch(pd.DataFrame({"source": ["a", SCRATCH]}))
    assert ss.has_scratch(pd.DataFrame({"source": ["a", SCRATCH]})) is True


def test_scratch_baseline_rows() -> None:
    pred = pd.DataFrame({
        "method": ["static"] * 7 + ["other"] * 2,
        "target": ["t", "t", "t", "u", "u", "v", "v", "t", "t"],
        "source": ["a", SCRATCH, "b", "a", "b", SCRATCH, "a", "a", SCRATCH],
        "score": [2.0, -5.0, np.nan, 1.0, 0.0, np.nan, np.nan, 9.0, 1.0],
        "auc": [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.8, 0.7],
    })
    got = ss.scratch_baseline_rows(pred)
    assert list(got.index) == [0, 1, 2, 3, 4]
    assert list(got["method"]) == ["scratch"] * 5
    assert list(got["target"]) == ["t", "t", "t", "v", "v"]
    assert list(got["source"]) == ["a", SCRATCH, "b", SCRATCH, "a"]
    np.testing.assert_array_equal(got["score"].to_numpy(), [2.0, 3.0, np.nan, 1.0, np.nan])
    np.testing.assert_array_equal(got["auc"].to_numpy(), [0.8, 0.7, 0.6, 0.3, 0.2])
    other = ss.scratch_baseline_rows(pred, order_by="other")
    np.testing.assert_array_equal(other["score"].to_numpy(), [9.0, 10.0])
    assert ss.BASELINE == "scratch"
    none = ss.scratch_baseline_rows(pred, order_by="nothing")
    assert none.empty and list(none.columns) == list(pred.columns)


def _wilson(k: int, n: int, level: float) -> tuple[float, float]:
    from scipy.stats import norm

    z = norm.ppf(0.5 + level / 2)
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return c - h, c + h


def test_wilson() -> None:
    for k, n, level in ((3, 10, 0.95), (7, 9, 0.9), (0, 4, 0.95)):
        lo, hi = ss.wilson(k, n, level)
        want = _wilson(k, n, level)
        assert lo == pytest.approx(max(0.0, want[0]), abs=1e-9) and hi == pytest.approx(min(1.0, want[1]), abs=1e-9)
    assert ss.wilson(3.0, 10.0) == ss.wilson(3, 10, 0.95)
    assert all(math.isnan(v) for v in ss.wilson(0, -1))
    assert isinstance(ss.wilson(1, 2)[0], float)


def test_per_seed() -> None:
    r = pd.DataFrame({
        "source": ["a", "a", "a", "b", "a", "a"],
        "target": ["t", "t", "t", "t", "u", "t"],
        "metric": ["roc_auc", "roc_auc", "roc_auc", "roc_auc", "roc_auc", "accuracy"],
        "seed": [0, 0, 1, 0, 0, 0],
        "fold": [np.nan, np.nan, 2, np.nan, np.nan, np.nan],
        "value": [0.8, 0.6, 0.9, 0.5, 0.1, 0.0],
    })
    got = ss.per_seed(_kb(r), "t")
    assert list(got.index) == ["a", "b"]
    assert list(got.columns) == [(0, -1.0), (1, 2.0)]
    assert got.loc["a", (0, -1.0)] == pytest.approx(0.7) and got.loc["a", (1, 2.0)] == 0.9
    assert got.loc["b", (0, -1.0)] == 0.5 and math.isnan(got.loc["b", (1, 2.0)])
    only_seed = ss.per_seed(_kb(r.drop(columns="fold")), "t")
    assert list(only_seed.columns) == [0, 1]
    nan_seed = r.assign(seed=[np.nan, np.nan, 1, np.nan, 0, 0])
    assert list(ss.per_seed(_kb(nan_seed), "t").columns) == [(-1.0, -1.0), (1.0, 2.0)]


def _expected_truth(kb: KnowledgeBase, t: str, cand: list[str], seed: int = 0) -> dict:
    wide = ss.per_seed(kb, t)
    others = [s for s in cand if s != SCRATCH and s in wide.index]
    means = wide.loc[others].mean(axis=1)
    best = str(means.idxmax())
    a, b = wide.loc[best], wide.loc[SCRATCH]
    c = paired_comparison(a.set_axis(range(len(a))), b.set_axis(range(len(b))), seed=seed)
    return {"best_source": best, "best_auc": float(means[best]), "scratch_auc": float(b.mean()),
            "gain": float(means[best] - b.mean()), "c": c}


def test_scratch_truth() -> None:
    kb = _kb(groups={"up": "G", "flat": "G"})
    cand = {"up": ["a", "b", "c", SCRATCH, "zzz"], "down": ["a", "b", SCRATCH], "flat": ["a", "b", SCRATCH],
            "noscr": ["a", "b", SCRATCH], "nocand": ["a", "b"], "only": [SCRATCH, "zzz"]}
    got = ss.scratch_truth(kb, cand, seed=0)
    assert list(got["target"]) == ["up", "down", "flat"]
    assert list(got.columns) == ["target", "group", "best_source", "best_auc", "scratch_auc", "gain", "gain_paired",
                                 "gain_lo", "gain_hi", "p", "n_paired", "helps", "truth", "truth_ci_only"]
    rows = got.set_index("target")
    assert rows.loc["up", "group"] == kb.groups["up"] == rows.loc["flat", "group"]
    assert rows.loc["down", "group"] == kb.groups["down"]
    for t in ("up", "down", "flat"):
        e = _expected_truth(kb, t, cand[t])
        r = rows.loc[t]
        assert r["best_source"] == e["best_source"]
        assert r["best_auc"] == pytest.approx(e["best_auc"], abs=1e-15)
        assert r["scratch_auc"] == pytest.approx(e["scratch_auc"], abs=1e-15)
        assert r["gain"] == pytest.approx(e["gain"], abs=1e-15)
        c = e["c"]
        assert (r["gain_paired"], r["gain_lo"], r["gain_hi"], r["p"], r["n_paired"]) == (
            c["mean_diff"], c["lo"], c["hi"], c["p"], c["n"])
        assert r["helps"] == (e["gain"] > 0)
    assert rows.loc["up", "best_source"] == "b" and rows.loc["down", "best_source"] == "b"
    assert rows.loc["flat", "best_source"] == "a"
    assert list(rows["truth"]) == ["helps", "hurts", "no detectable difference"]
    assert list(rows["truth_ci_only"]) == ["helps", "hurts", "no detectable difference"]
    assert list(rows["helps"]) == [True, False, True]
    assert rows.loc["up", "n_paired"] == SEEDS
    assert ss.scratch_truth(kb, {"up": cand["up"]}).equals(ss.scratch_truth(kb, {"up": cand["up"]}, seed=0))
    assert ss.scratch_truth(kb, {}).empty


def test_scratch_truth_ci_alone_is_not_a_detectable_call() -> None:
    """Five seeds, all better than scratch: the bootstrap CI excludes 0 but Wilcoxon's exact p over
    five signs is 0.0625, so the truth is 'no detectable difference' and only the CI says 'helps'."""
    vals = {"t": {"a": 0.80, SCRATCH: 0.70}}
    r = _records(vals)
    r = r[r["seed"] < 5]
    kb = _kb(r)
    got = ss.scratch_truth(kb, {"t": ["a", SCRATCH]}).iloc[0]
    assert got["p"] == pytest.approx(0.0625) and got["gain_lo"] > 0
    assert got["truth"] == "no detectable difference" and got["truth_ci_only"] == "helps"
    assert bool(got["helps"]) is True
    down = _kb(r.assign(value=np.where(r["source"] == SCRATCH, r["value"] + 0.2, r["value"])))
    g = ss.scratch_truth(down, {"t": ["a", SCRATCH]}).iloc[0]
    assert g["truth"] == "no detectable difference" and g["truth_ci_only"] == "hurts"
    few = _kb(r[r["seed"] < 3])  # n < 5: no CI
    g = ss.scratch_truth(few, {"t": ["a", SCRATCH]}).iloc[0]
    assert math.isnan(g["gain_lo"]) and g["truth_ci_only"] == "no detectable difference"


def test_scratch_truth_means_skip_missing_seeds() -> None:
    r = _records({"t": {"a": 0.8, "b": 0.79, SCRATCH: 0.7}})
    r = r[~((r["source"] == "a") & (r["seed"] >= 3))]  # a has only three seeds, all high
    r.loc[(r["source"] == "a"), "value"] = 0.9
    got = ss.scratch_truth(_kb(r), {"t": ["a", "b", SCRATCH]}).iloc[0]
    assert got["best_source"] == "a" and got["best_auc"] == pytest.approx(0.9)
    assert got["n_paired"] == 3


def test_method_calls() -> None:
    pred = pd.DataFrame({
        "method": ["m"] * 9 + ["n"] * 4,
        "target": ["t", "t", "t", "u", "u", "v", "v", "w", "w", "t", "t", "x", "x"],
        "source": ["a", SCRATCH, "b", SCRATCH, "a", "a", SCRATCH, "a", "b", "a", SCRATCH, SCRATCH, "a"],
        "score": [1.0, 2.0, 0.5, 1.0, 3.0, np.nan, 0.0, 1.0, 1.0, 2.0, 2.0, np.nan, 1.0],
    })
    got = ss.method_calls(pred)
    assert list(got.columns) == ["method", "target", "call"]
    assert list(got["method"]) == ["m", "m", "m", "n", "n"]
    assert list(got["target"]) == ["t", "u", "v", "t", "x"]
    np.testing.assert_array_equal(got["call"].to_numpy(), [0.0, 1.0, np.nan, 0.0, np.nan])
    assert ss.method_calls(pred.iloc[:0]).empty and list(ss.method_calls(pred.iloc[:0]).columns) == [
        "method", "target", "call"]


def _truth_table() -> pd.DataFrame:
    return pd.DataFrame({"target": ["t1", "t2", "t3", "t4"], "helps": [True, False, True, False],
                         "truth": ["helps", "hurts", "no detectable difference", "no detectable difference"]})


def test_sign_accuracy() -> None:
    calls = pd.DataFrame({"method": ["m", "m", "m", "m", "m", "n", "n", "z"],
                          "target": ["t1", "t2", "t3", "t4", "zz", "t1", "t2", "t1"],
                          "call": [1.0, 1.0, 1.0, np.nan, 1.0, 0.0, 0.0, np.nan]})
    got = ss.sign_accuracy(calls, _truth_table()).set_index("method")
    assert list(got.columns) == ["sign_k", "sign_n", "sign", "sign_lo", "sign_hi", "sign_det_k", "sign_det_n"]
    assert list(got.index) == ["m", "n", "z"]
    assert (got.loc["m", "sign_k"], got.loc["m", "sign_n"]) == (2, 3)  # t1 right, t2 wrong, t3 right
    assert got.loc["m", "sign"] == pytest.approx(2 / 3)
    assert (got.loc["m", "sign_lo"], got.loc["m", "sign_hi"]) == ss.wilson(2, 3)
    assert (got.loc["m", "sign_det_k"], got.loc["m", "sign_det_n"]) == (1, 2)  # t1 and t2 are detectable
    assert (got.loc["n", "sign_k"], got.loc["n", "sign_n"], got.loc["n", "sign_det_k"], got.loc["n", "sign_det_n"]) == (1, 2, 1, 2)
    assert got.loc["z", "sign_n"] == 0 and math.isnan(got.loc["z", "sign"]) and math.isnan(got.loc["z", "sign_lo"])


def test_random_sign_and_breakdown() -> None:
    truth = _truth_table()
    got = ss.random_sign(truth, {"t1": 4, "t2": 4, "t3": 2, "t4": 0})
    assert got == pytest.approx(np.mean([0.75, 0.25, 0.5]))
    assert ss.random_sign(truth, {"t1": 5}) == pytest.approx(0.8)
    assert ss.random_sign(truth, {"t2": 5}) == pytest.approx(0.2)
    assert math.isnan(ss.random_sign(truth, {}))
    assert ss.breakdown(truth) == {"helps": 1, "no detectable difference": 2, "hurts": 1}
    assert ss.CALLS == ("helps", "no detectable difference", "hurts")


def _predictions(kb: KnowledgeBase) -> pd.DataFrame:
    m = kb.matrix()
    rows = []
    for t in ("up", "down", "flat"):
        for s in m[t].dropna().index:
            auc = float(m.loc[s, t])
            rows += [{"method": "static", "target": t, "source": s, "score": {"a": 3, "b": 2, "c": 1}.get(s, 0.0),
                      "auc": auc},
                     {"method": "oracle", "target": t, "source": s, "score": auc, "auc": auc}]
    return pd.DataFrame(rows)


def test_evaluate() -> None:
    kb = _kb()
    pred = _predictions(kb)
    ev = ss.evaluate(kb, pred, seed=0)
    cand = {"up": ["a", "b", "c", SCRATCH], "down": ["a", "b", SCRATCH], "flat": ["a", "b", SCRATCH]}
    pd.testing.assert_frame_equal(ev.truth, ss.scratch_truth(kb, cand, seed=0))
    pd.testing.assert_frame_equal(ev.calls, ss.method_calls(pred))
    sign = ev.sign.set_index("method")
    assert list(sign.index) == ["static", "oracle", "random"]
    assert sign.loc["oracle", "sign_k"] == 3 and sign.loc["static", "sign_k"] == 2
    assert sign.loc["random", "sign"] == pytest.approx(np.mean([3 / 4, 1 / 3, 2 / 3]))
    assert sign.loc["random", "sign_n"] == 3 and pd.isna(sign.loc["random", "sign_k"])
    for c in ("sign_k", "sign_n", "sign_det_k", "sign_det_n"):
        assert str(ev.sign[c].dtype) == "Int64"
    assert ev.notes[0] == (
        "Is transfer worth it? On 3 held-out targets the best source beats scratch by its mean AUC on 2; "
        "paired over seeds (95% bootstrap CI and Wilcoxon p < 0.05 agreeing): pretraining helps detectably "
        "on 1, no detectable difference on 1, hurts detectably on 1 (the best source picked on the same "
        "seeds, which favours 'helps').")
    assert len(ev.notes) == 2
    assert ev.notes[1].startswith("sign = targets where a method's call")
    assert ev.caption() == (ev.notes[-1] + " An always-pretrain rule scores 2/3 here (the base rate); the truth "
                            "per target is in --format json/csv (scratch_truth).")
    d = ev.to_dict()
    assert set(d) == {"truth", "breakdown", "n_targets", "n_helps_by_mean", "sign", "notes"}
    assert d["breakdown"] == ev.breakdown() == {"helps": 1, "no detectable difference": 1, "hurts": 1}
    assert (d["n_targets"], d["n_helps_by_mean"]) == (3, 2)
    assert d["notes"] == ev.notes and len(d["truth"]) == 3 and d["truth"][0]["target"] == "up"
    assert d["sign"][2]["method"] == "random" and d["sign"][2]["sign_k"] is None
    assert ss.evaluate(kb, pred).truth.equals(ev.truth)


def test_evaluate_notes_targets_where_only_the_ci_excludes_zero() -> None:
    r = _records({"t": {"a": 0.80, SCRATCH: 0.70}, "s": {"a": 0.7, SCRATCH: 0.8}})
    kb = _kb(r[r["seed"] < 5])
    pred = pd.DataFrame({"method": "m", "target": ["t", "t", "s", "s"], "source": ["a", SCRATCH, "a", SCRATCH],
                         "score": [1.0, 0.0, 1.0, 0.0], "auc": 0.5})
    ev = ss.evaluate(kb, pred)  # no static rows: the candidates come from every method's rows
    assert list(ev.truth["target"]) == ["t", "s"]
    assert len(ev.notes) == 3
    assert ev.notes[1] == ("2 target(s) where the CI alone excludes 0 but Wilcoxon p ≥ 0.05: t, s "
                           "(counted as no detectable difference).")


def test_evaluate_without_scratch_or_truth() -> None:
    kb = _kb()
    pred = _predictions(kb)
    assert ss.evaluate(kb, pred[pred["source"] != SCRATCH]) is None
    only_noscr = pd.DataFrame({"method": "static", "target": ["noscr", "noscr"], "source": ["a", SCRATCH],
                               "score": [1.0, 0.0], "auc": 0.5})
    assert ss.evaluate(kb, only_noscr) is None


def test_with_sign() -> None:
    kb = _kb()
    ev = ss.evaluate(kb, _predictions(kb))
    summary = pd.DataFrame({"method": ["oracle", "static", "other"], "tau_w": [1.0, 0.5, 0.1],
                            "sign": [9.0, 9.0, 9.0], "sign_lo": 0.0})
    got = ss.with_sign(summary, ev)
    assert list(got.columns) == ["method", "tau_w", "sign", "sign_lo", "sign_hi", "sign_k", "sign_n", "sign_det_k",
                                 "sign_det_n"]
    assert list(got["method"]) == ["oracle", "static", "other"]
    s = ev.sign.set_index("method")
    assert got.loc[0, "sign"] == s.loc["oracle", "sign"] and got.loc[1, "sign_k"] == s.loc["static", "sign_k"]
    assert got.loc[0, "sign_hi"] == s.loc["oracle", "sign_hi"]
    assert pd.isna(got.loc[2, "sign"]) and pd.isna(got.loc[2, "sign_k"])
    assert ss.with_sign(summary, None) is summary


def test_format_sign() -> None:
    assert ss.format_sign({"sign_n": None}) == "—"
    assert ss.format_sign({}) == "—"
    assert ss.format_sign({"sign_n": "3"}) == "—"
    assert ss.format_sign({"sign_n": math.nan}) == "—"
    assert ss.format_sign({"sign_n": 0, "sign_k": 0}) == "—"
    assert ss.format_sign({"method": "random", "sign_n": 6, "sign": 0.8567, "sign_k": 5}) == "exp. 0.86"
    assert ss.format_sign({"method": "m", "sign_n": 6, "sign": 0.5, "sign_k": pd.NA}) == "exp. 0.50"
    assert ss.format_sign({"method": "m", "sign_n": 16, "sign_k": 11, "sign_lo": 0.4512, "sign_hi": 0.8567}) == \
        "11/16 [0.45, 0.86]"
    assert ss.format_sign({"method": "m", "sign_n": 16, "sign_k": 11, "sign_lo": 0.45, "sign_hi": 0.86}, ci=False) == "11/16"
    assert ss.format_sign({"method": "m", "sign_n": 16.0, "sign_k": 11.0, "sign_lo": math.nan}) == "11/16"
    assert ss.format_sign({"method": "m", "sign_n": 16, "sign_k": 11}) == "11/16"
    assert ss.format_sign(pd.Series({"method": "m", "sign_n": 4, "sign_k": 1, "sign_lo": 0.05, "sign_hi": 0.7})) == \
        "1/4 [0.05, 0.70]"
    assert ss.format_sign({"method": "m", "sign_n": np.int64(4), "sign_k": 1, "sign_lo": 0.05, "sign_hi": 0.7}) == \
        "1/4 [0.05, 0.70]"


def _noisy_kb(n_seeds: int = 15) -> KnowledgeBase:
    """One target whose paired differences vary a lot over 15 seeds: the bootstrap CI depends on its seed."""
    rng = np.random.default_rng(11)
    rows = []
    for s, mu in (("a", 0.80), ("b", 0.70), (SCRATCH, 0.79)):
        for k in range(n_seeds):
            rows.append({"source": s, "target": "nz", "metric": "roc_auc", "fold": -1, "seed": k,
                         "value": mu + float(rng.normal(0, 0.03))})
    return _kb(pd.DataFrame(rows))


def test_the_seed_reaches_the_bootstrap() -> None:
    kb = _noisy_kb()
    cand = {"nz": ["a", "b", SCRATCH]}
    s0, s1 = ss.scratch_truth(kb, cand, seed=0), ss.scratch_truth(kb, cand, seed=1)
    assert s0["gain_lo"].iloc[0] != s1["gain_lo"].iloc[0]
    pd.testing.assert_frame_equal(ss.scratch_truth(kb, cand), s0)
    pred = pd.DataFrame({"method": "static", "target": "nz", "source": ["a", "b", SCRATCH],
                         "score": [1.0, 0.0, 0.5], "auc": 0.5})
    pd.testing.assert_frame_equal(ss.evaluate(kb, pred).truth, s0)
    pd.testing.assert_frame_equal(ss.evaluate(kb, pred, seed=1).truth, s1)


def test_evaluate_takes_the_candidates_from_the_static_rows() -> None:
    """Another method also scored c (the best source): the truth is over static's candidates only."""
    kb = _kb()
    pred = _predictions(kb)
    pred = pred[~((pred["method"] == "static") & (pred["source"] == "b"))]  # static never saw b
    ev = ss.evaluate(kb, pred)
    assert list(ev.truth["best_source"]) == ["a", "a", "a"]
    cand = {"up": ["a", "c", SCRATCH], "down": ["a", SCRATCH], "flat": ["a", SCRATCH]}
    pd.testing.assert_frame_equal(ev.truth, ss.scratch_truth(kb, cand))
    assert list(ev.sign.index) == [0, 1, 2]
    assert ev.notes[-1] == ("sign = targets where a method's call (its top source scored above scratch or not) "
                            "matches whether the best source's mean AUC beats scratch's, k/n with a Wilson 95% CI "
                            "over targets; random = its expected value.")


def test_scratch_truth_skips_come_first() -> None:
    kb = _kb()
    cand = {"nocand": ["a", "b"], "noscr": ["a", "b", SCRATCH], "only": [SCRATCH, "zzz"], "up": ["a", "b", SCRATCH]}
    assert list(ss.scratch_truth(kb, cand)["target"]) == ["up"]


def test_scratch_truth_scratch_missing_a_seed_and_a_tie() -> None:
    r = _records({"t": {"a": 0.8, SCRATCH: 0.7}, "z": {"a": 0.75, SCRATCH: 0.75}})
    r = r[~((r["source"] == SCRATCH) & (r["target"] == "t") & (r["seed"] == 0))]
    got = ss.scratch_truth(_kb(r), {"t": ["a", SCRATCH], "z": ["a", SCRATCH]}).set_index("target")
    assert got.loc["t", "gain"] == pytest.approx(0.1 + _JIT.mean() - _JIT[1:].mean(), abs=1e-12)
    assert got.loc["t", "scratch_auc"] == pytest.approx(0.7 + _JIT[1:].mean(), abs=1e-12)
    # identical values on every seed: CI [0, 0], no call either way, and a zero gain does not 'help'
    assert (got.loc["z", "gain_lo"], got.loc["z", "gain_hi"]) == (0.0, 0.0)
    assert got.loc["z", "truth_ci_only"] == "no detectable difference"
    assert got.loc["z", "truth"] == "no detectable difference"
    assert not bool(got.loc["z", "helps"])


def test_scratch_truth_group_of_a_target_outside_the_manifest() -> None:
    r = _records({"t": {"a": 0.8, SCRATCH: 0.7}, "extra": {"a": 0.8, SCRATCH: 0.7}})
    kb = _kb(r)
    kb.manifest["targets"] = ["t"]
    got = ss.scratch_truth(kb, {"extra": ["a", SCRATCH]})
    assert got["group"].iloc[0] == "extra"


def test_object_dtype_scores() -> None:
    pred = pd.DataFrame({"method": "m", "target": ["t", "t", "t"], "source": ["a", SCRATCH, "b"],
                         "score": pd.Series([1.0, 2.0, np.nan], dtype=object), "auc": 0.5})
    np.testing.assert_array_equal(ss.method_calls(pred)["call"].to_numpy(), [0.0])
    base = ss.scratch_baseline_rows(pred.assign(method="static"))
    np.testing.assert_array_equal(base["score"].to_numpy(dtype=float), [1.0, 3.0, np.nan])


def test_baseline_rows_keep_the_targets_in_their_order() -> None:
    pred = pd.DataFrame({"method": "static", "target": ["v", "v", "t", "t"], "source": [SCRATCH, "a", "a", SCRATCH],
                         "score": [0.0, 1.0, 5.0, 0.0], "auc": 0.5})
    got = ss.scratch_baseline_rows(pred)
    assert list(got["target"]) == ["v", "v", "t", "t"]
    np.testing.assert_array_equal(got["score"].to_numpy(), [2.0, 1.0, 5.0, 6.0])


def test_random_sign_one_source_and_no_warning() -> None:
    import warnings

    truth = pd.DataFrame({"target": ["t1", "t2"], "helps": [True, False]})
    assert ss.random_sign(truth, {"t1": 1, "t2": 1}) == pytest.approx(0.5)  # scratch alone: helps never 'right'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(ss.random_sign(truth, {"t1": 0}))


def test_wilson_of_one() -> None:
    lo, hi = ss.wilson(1, 1)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(_wilson(1, 1, 0.95)[0], abs=1e-9)
    assert ss.wilson(0, 1)[0] == pytest.approx(0.0, abs=1e-12)


def test_caption_takes_the_last_note() -> None:
    ev = ss.ScratchEval(pd.DataFrame({"helps": [True, False]}), pd.DataFrame(), pd.DataFrame(), ["one", "two", "three"])
    assert ev.caption().startswith("three An always-pretrain rule scores 1/2 here")
