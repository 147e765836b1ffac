"""recommender.evaluation.selection, pinned by exact values (written against its surviving mutants).

The helpers are checked on hand-made inputs; the Procedure on a small synthetic KB with cheap,
hand-made candidates (column readers, a fake tuned one with a fake study), its outputs re-derived
here from the helpers it is documented to compose.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
from _synthetic_kb import synthetic_kb
from scipy.stats import weightedtau

from experiments.knowledge_base import SCRATCH, KnowledgeBase
from recommender.evaluation import conformal, selection, tuning
from recommender.evaluation.selection import Choice, Folds, Procedure
from recommender.model import build_meta_dataset
from recommender.model import methods as mt
from recommender.model.scoring import Context, Fitted, auc_level, difficulty, normal_scores


# -- group_of and Folds ------------------------------------------------------------------------------
def test_group_of() -> None:
    md = SimpleNamespace(groups={"a": "G", "b": 7}, twins={"c": {"z", "d"}, "e": set()})
    assert selection.group_of(md, "a") == "G"
    assert selection.group_of(md, "b") == "7"
    assert selection.group_of(md, "c") == "c"  # sorted {c, d, z}[0]
    assert selection.group_of(SimpleNamespace(groups={}, twins={"q": {"p", "r"}}), "q") == "p"
    assert selection.group_of(SimpleNamespace(groups={}, twins={"q": {"r"}}), "q") == "q"
    assert selection.group_of(SimpleNamespace(twins={"q": {"p"}}), "q") == "p"  # no groups attribute
    assert selection.group_of(SimpleNamespace(groups=None, twins={}), "x") == "x"
    assert selection.group_of(md, "e") == "e"
    assert selection.group_of(SimpleNamespace(groups={"a": "G"}, twins={"x": {"b"}}), "x") == "b"


class _FakeMD(SimpleNamespace):
    pass


def _fake_folds(monkeypatch: pytest.MonkeyPatch) -> tuple[Folds, list]:
    calls = []

    def fold_rows(md, targets):  # noqa: ANN001, ANN202
        calls.append(tuple(targets))
        test = pd.DataFrame({"target": [t for t in targets for _ in range(2)], "source": "s", "auc": 0.5},
                            index=np.arange(2 * len(targets)) + 100)
        return pd.DataFrame({"held": [",".join(targets)]}), test

    monkeypatch.setattr(selection, "fold_rows", fold_rows)
    md = _FakeMD(targets=["b1", "a", "b2", "c"], groups={"b1": "B", "b2": "B"}, twins={})
    return Folds(md), calls


def test_folds_split_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    folds, calls = _fake_folds(monkeypatch)
    assert folds.groups == {"B": ["b1", "b2"], "a": ["a"], "c": ["c"]}
    assert folds.labels == ["B", "a", "c"]
    tr, te = folds.outer("B")
    assert list(tr["held"]) == ["b1,b2"] and calls == [("b1", "b2")]
    assert folds.split(frozenset(["B"])) == (tr, te)
    assert calls == [("b1", "b2")]  # cached
    folds.split(frozenset(["c", "a"]))
    assert calls[-1] == ("a", "c")  # held groups in sorted order
    folds.split(frozenset(["nope", "a"]))
    assert calls[-1] == ("a",)  # an unknown group holds nothing


def test_folds_inner(monkeypatch: pytest.MonkeyPatch) -> None:
    folds, calls = _fake_folds(monkeypatch)
    inner = folds.inner("a")
    assert [h for h, _, _ in inner] == ["B", "c"]
    assert calls == [("b1", "b2", "a"), ("a", "c")]  # held groups sorted: "B" < "a"
    h, tr, te = inner[0]
    assert list(tr["held"]) == ["b1,b2,a"]
    assert list(te["target"]) == ["b1", "b1", "b2", "b2"] and list(te.index) == [0, 1, 2, 3]
    assert list(te.columns) == ["target", "source", "auc"]
    assert list(inner[1][2]["target"]) == ["c", "c"]
    every = folds.inner(None)
    assert [h for h, _, _ in every] == ["B", "a", "c"]
    assert calls[-3:] == [("b1", "b2"), ("a",), ("c",)]
    assert list(every[1][1]["held"]) == ["a"]
    assert folds.inner("c")[-1][0] == "a"  # the held-out group is skipped, the rest still follow


# -- tau per target ----------------------------------------------------------------------------------
def test_tau_per_target() -> None:
    rows = pd.DataFrame({"target": ["b", "b", "b", "b", "a", "a", "a", "c", "d", "d", "e", "e", "e"],
                         "auc": [0.9, 0.8, 0.7, np.nan, 0.6, 0.7, 0.8, 0.9, 0.5, 0.6, 0.1, 0.2, 0.3]})
    score = [3.0, np.nan, 2.0, 9.0, 1.0, 2.0, 3.0, 1.0, 1.0, 1.0, np.nan, np.nan, np.nan]
    got = selection.tau_per_target(np.array(score), rows)
    assert list(got) == ["b", "a", "c", "d", "e"]
    # b: the NaN AUC row leaves; the NaN score ranks below the lowest finite one (2 − 1)
    assert got["b"] == pytest.approx(weightedtau([3.0, 1.0, 2.0], [0.9, 0.8, 0.7])[0], abs=1e-15)
    assert got["a"] == pytest.approx(1.0)
    assert math.isnan(got["c"]) and math.isnan(got["d"]) and math.isnan(got["e"])
    assert selection.tau_per_target(score, rows)["b"] == got["b"]  # a plain list works
    two = pd.DataFrame({"target": ["x", "x"], "auc": [0.2, 0.1]})
    assert selection.tau_per_target(np.array([1.0, 0.0]), two) == {"x": 1.0}
    assert selection.tau_per_target(np.array([np.nan, 0.0]), two) == {"x": -1.0}
    assert selection.tau_per_target(np.array([0.5, np.nan]), two) == {"x": 1.0}
    three = pd.DataFrame({"target": ["x"] * 3, "auc": [0.1, 0.3, 0.2]})
    # NaN at −0.5 + ... : lowest finite − 1 puts it last, ahead of nothing
    assert selection.tau_per_target(np.array([np.nan, 0.2, 0.1]), three)["x"] == pytest.approx(
        weightedtau([-0.8, 0.2, 0.1], [0.1, 0.3, 0.2])[0], abs=1e-15)
    assert selection.tau_per_target(np.array([np.nan, 0.2, 0.1]), three)["x"] != pytest.approx(
        weightedtau([0.15, 0.2, 0.1], [0.1, 0.3, 0.2])[0], abs=1e-9)
    num = pd.DataFrame({"target": [1, 1, 2, 2], "auc": pd.Series([0.1, 0.2, 0.3, 0.4], dtype=object)})
    assert selection.tau_per_target(np.array([0.0, 1.0, 1.0, 0.0]), num) == {"1": 1.0, "2": -1.0}


def test_mean0() -> None:
    assert selection._mean0([0.5, None, math.nan, 1.0]) == pytest.approx(0.375)
    assert selection._mean0([math.inf, 1.0]) == pytest.approx(0.5)
    assert math.isnan(selection._mean0([]))
    assert selection._mean0(iter([2, 4])) == 3.0


# -- tuned candidates ----------------------------------------------------------------------------------
class _Trial:
    def __init__(self, number: int, params: dict, taus: dict | None, complete: bool = True) -> None:
        self.number, self.params, self.value = number, params, 0.0
        self.user_attrs = {} if taus is None else {"tau_w": taus}
        self.state = optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL


class _Study:
    def __init__(self, trials: list[_Trial]) -> None:
        self.trials = trials


def _method(name: str, uses_estimates: bool = False, tuned: str | None = None, auc_units: bool = False,
            fn=None, reads_train: bool = False) -> mt.Method:  # noqa: ANN001
    """A candidate scoring ``fn(rows, ctx)``; with ``reads_train`` its fit adds the training rows' mean
    AUC, so a fit handed the wrong (or no) training frame is seen."""
    fn = fn or (lambda rows, ctx: np.zeros(len(rows)))

    class _F(Fitted):
        def __init__(self, ctx: Context, offset: float = 0.0) -> None:
            self.ctx, self.offset = ctx, offset

        def score(self, rows: pd.DataFrame) -> np.ndarray:
            return np.asarray(fn(rows, self.ctx), dtype=float) + self.offset

        def state(self) -> dict:
            return {"name": name, "params": self.ctx.params}

    def fit(train: pd.DataFrame, ctx: Context) -> _F:
        return _F(ctx, float(train["auc"].mean()) if reads_train else 0.0)

    return mt.Method(name, f"words of {name}", uses_estimates, fit,
                     lambda state, ctx: _F(ctx), tuned=tuned, auc_units=auc_units)


CTX_EST = Context(["e"], {"e": 1}, {"e": "transferability"})
CTX_NONE = Context([], {}, {})


def test_allowed() -> None:
    reg, anyk, plain = _method("r", tuned="regressor"), _method("a", tuned="any"), _method("p")
    assert selection._allowed(reg, {"kind": "regressor", "features": "prior"}, CTX_EST)
    assert not selection._allowed(reg, {"kind": "ranker", "features": "prior"}, CTX_EST)
    assert not selection._allowed(reg, {"features": "prior"}, CTX_EST)
    assert selection._allowed(anyk, {"kind": "ranker", "features": "prior"}, CTX_EST)
    assert selection._allowed(plain, {"kind": "ranker", "features": "prior"}, CTX_EST)
    assert not selection._allowed(anyk, {"kind": "ranker", "features": "all"}, CTX_EST)  # reads estimates
    assert selection._allowed(anyk, {"kind": "ranker", "features": "all"}, CTX_NONE)  # none on this KB
    assert selection._allowed(_method("e", uses_estimates=True, tuned="any"), {"features": "all"}, CTX_EST)


def test_best_trial() -> None:
    m = _method("meta", tuned="regressor")
    trials = [_Trial(0, {"kind": "ranker", "features": "prior"}, {"a": 0.9, "b": 0.9}),
              _Trial(1, {"kind": "regressor", "features": "prior"}, {"a": 0.25, "b": 0.75}),
              _Trial(2, {"kind": "regressor", "features": "prior"}, {"a": 0.5, "b": 0.5}),
              _Trial(3, {"kind": "regressor", "features": "prior"}, {"a": 1.0, "b": 0.0}),
              _Trial(4, {"kind": "regressor", "features": "prior"}, {"a": 0.99, "b": 0.99}, complete=False),
              _Trial(5, {"kind": "regressor", "features": "prior"}, None)]
    study = _Study(trials)
    assert selection.best_trial(study, m, CTX_NONE).number == 1  # 0.5 exactly for 1, 2 and 3: the tie keeps the earliest
    assert selection.best_trial(study, m, CTX_NONE, skip={"b"}).number == 3
    assert selection.best_trial(study, m, CTX_NONE, skip={"a"}).number == 1
    assert selection.best_trial(study, _method("any", tuned="any"), CTX_NONE).number == 0
    assert selection.best_trial(_Study(trials[4:5]), m, CTX_NONE) is None
    assert selection.best_trial(_Study([trials[0], trials[5]]), m, CTX_NONE) is None  # no taus: NaN, never best
    late = _Study([_Trial(0, {"kind": "ranker"}, {"a": 1.0}), _Trial(1, {"kind": "regressor"}, {"a": 0.1})])
    assert selection.best_trial(late, m, CTX_NONE).number == 1  # a disallowed trial does not stop the search
    est = _Study([_Trial(0, {"kind": "regressor", "features": "all"}, {"a": 0.9}),
                  _Trial(1, {"kind": "regressor", "features": "prior"}, {"a": 0.1})])
    assert selection.best_trial(est, m, CTX_EST).number == 1
    assert selection.best_trial(est, m, CTX_NONE).number == 0


def test_tuned_inner_scores() -> None:
    m = _method("meta", tuned="any")
    study = _Study([_Trial(0, {"kind": "regressor", "features": "prior"}, {"a1": 0.9, "a2": 0.7, "b": 0.0, "c": 0.1}),
                    _Trial(1, {"kind": "ranker", "features": "prior"}, {"a1": 0.1, "b": 0.5, "c": 0.6})])
    scores, chosen = selection.tuned_inner_scores(study, m, CTX_NONE, {"A": ["a1", "a2"], "B": ["b"], "C": ["c"]})
    assert scores["a1"] == pytest.approx(0.1) and math.isnan(scores["a2"])  # trial 1 has no a2
    assert scores["b"] == pytest.approx(0.0) and scores["c"] == pytest.approx(0.1)  # trial 0: mean over a, c
    assert list(scores) == ["a1", "a2", "b", "c"]
    assert chosen["A"] == tuning.trial_params(study.trials[1]) and chosen["A"]["kind"] == "ranker"
    assert chosen["B"]["kind"] == "regressor"
    reg = _method("meta_regressor", tuned="regressor")
    s2, c2 = selection.tuned_inner_scores(_Study(study.trials[1:]), reg, CTX_NONE, {"A": ["a1"], "B": ["b"]})
    assert s2 == {} and c2 == {}
    mixed = _Study([_Trial(0, {"kind": "regressor"}, {"b": 0.3})])
    s3, c3 = selection.tuned_inner_scores(mixed, reg, CTX_NONE, {"A": ["a1"], "B": ["b"]})
    assert list(s3) == ["a1"] and math.isnan(s3["a1"]) and list(c3) == ["A"]  # B: no trial scored off b
    one = _Study([_Trial(0, {"kind": "ranker"}, {"a": 1.0}), _Trial(1, {"kind": "regressor"}, {"b": 0.5})])
    s4, c4 = selection.tuned_inner_scores(one, reg, CTX_NONE, {"B": ["b"], "A": ["a"]})
    assert list(c4) == ["A"] and list(s4) == ["a"]  # B has no trial; A still gets one


# -- the choice rule -------------------------------------------------------------------------------
def _cands(*ms: mt.Method) -> dict[str, mt.Method]:
    return {m.name: m for m in ms}


def test_choose_plain_maximum_without_per_target_scores() -> None:
    c = _cands(_method("static"), _method("residual"), _method("estimate:e", uses_estimates=True))
    inner = {"static": 0.30, "residual": 0.35, "estimate:e": 0.50}
    assert selection._choose(inner, c, "any") == "residual"
    assert selection._choose(inner, c, "estimates") == "estimate:e"
    assert selection._choose(inner, c, "estimates", {}) == "estimate:e"
    assert selection._choose(inner, c, "estimates", {"static": {"a": 1.0}}) == "estimate:e"
    assert selection._choose(inner, c, "estimates", {"estimate:e": {}}) == "estimate:e"
    assert selection._choose(inner | {"residual": math.nan}, c, "any") == "static"
    assert selection._choose({"static": 0.3}, c, "any") == "static"  # missing: not finite
    tie = {"static": 0.3 + 1e-14, "residual": 0.3}
    assert selection._choose(tie, c, "any") == "static"  # equal to 12 digits: the simpler one
    assert selection._choose({"static": 0.3, "residual": 0.3 + 1e-11}, c, "any") == "residual"
    assert selection._choose({"static": 0.31, "residual": 0.3}, c, "any") == "static"


def _per(values: dict[str, list[float]], targets: list[str] | None = None) -> dict[str, dict[str, float]]:
    targets = targets or [f"t{i}" for i in range(len(next(iter(values.values()))))]
    return {k: dict(zip(targets, v, strict=True)) for k, v in values.items()}


def test_choose_one_standard_error_rule() -> None:
    c = _cands(_method("static"), _method("residual"), _method("rankavg:static+e", uses_estimates=True))
    # residual is best, static within one paired SE of it: the simpler static ships
    per = _per({"static": [0.15, 0.5, 0.3, 0.25], "residual": [0.2, 0.4, 0.5, 0.3],
                "rankavg:static+e": [0.9, -0.5, 0.0, 0.0]})
    inner = {k: float(np.mean(list(v.values()))) for k, v in per.items()}
    assert selection._choose(inner, c, "any", per) == "static"
    d = np.array([0.05, -0.1, 0.2, 0.05])
    assert d.mean() <= d.std(ddof=1) / np.sqrt(4)
    # clearly ahead on every target: beyond one SE, the best one ships
    far = _per({"static": [0.0, 0.1, 0.0, 0.1], "residual": [0.5, 0.55, 0.5, 0.6],
                "rankavg:static+e": [0.0, 0.0, 0.0, 0.0]})
    inner_far = {k: float(np.mean(list(v.values()))) for k, v in far.items()}
    assert selection._choose(inner_far, c, "any", far) == "residual"
    # a candidate scored on fewer than three common targets is never 'within': only the best is
    few = per | {"static": {"t0": 0.1, "t1": 0.5}}
    assert selection._choose(inner, c, "any", few) == "residual"
    three = per | {"static": {"t0": 0.1, "t1": 0.5, "t2": 0.45}}
    # exactly three common targets are enough (static's inner mean below residual's, so residual is the best)
    assert selection._choose(inner | {"static": 0.34}, c, "any", three) == "static"
    missing = {k: v for k, v in per.items() if k != "static"}
    assert selection._choose(inner, c, "any", missing) == "residual"


def test_choose_se_is_of_the_mean_and_sample_sd() -> None:
    """d = best − static over 6 targets: sd(ddof=1)/√6 = 0.076 < mean 0.08 < sd(ddof=2)/√6 = 0.085."""
    c = _cands(_method("static"), _method("residual"))
    d = np.array([0.03, -0.05, 0.0, -0.12, 0.28, 0.34])
    base = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    per = _per({"residual": list(base + d), "static": list(base)})
    inner = {k: float(np.mean(list(v.values()))) for k, v in per.items()}
    se1 = d.std(ddof=1) / np.sqrt(6)
    assert se1 < d.mean() < d.std(ddof=2) / np.sqrt(6) and d.mean() < d.std(ddof=1) * np.sqrt(6)
    assert selection._choose(inner, c, "any", per) == "residual"
    # NaN per-target scores count as 0 in the differences
    per_nan = {"residual": dict(per["residual"]) | {"t5": math.nan}, "static": per["static"]}
    d2 = d.copy()
    d2[5] = 0.0 - 0.6
    assert selection._choose(inner, c, "any", per_nan) == ("residual" if d2.mean() > d2.std(ddof=1) / np.sqrt(6)
                                                           else "static")


def test_choose_prefers_a_learned_model_within_one_se_with_estimates_only() -> None:
    c = _cands(_method("static"), _method("learned+est", uses_estimates=True, auc_units=True),
               _method("rankavg:static+e", uses_estimates=True), _method("learned", auc_units=True))
    rank = np.array([0.35, 0.3, 0.32, 0.31])
    per = _per({"static": list(rank - [0.2, 0.2, 0.2, 0.21]), "learned+est": list(rank + [0.1, -0.1, 0.05, -0.06]),
                "rankavg:static+e": list(rank), "learned": [0.0, 0.0, 0.0, 0.0]})
    inner = {k: float(np.mean(list(v.values()))) for k, v in per.items()}
    assert selection._choose(inner, c, "estimates", per) == "learned+est"
    assert selection._choose(inner, c, "any", per) == "static"
    # two learned models within one SE: the simpler (lower order) one
    c2 = c | _cands(_method("learned", auc_units=True))
    per2 = per | {"learned": dict(per["learned+est"])}
    inner2 = {k: float(np.mean(list(v.values()))) for k, v in per2.items()}
    assert selection._choose(inner2, c2, "estimates", per2) == "learned"
    close = _per({"static": [0.31, 0.31, 0.29, 0.31], "learned": [0.32, 0.3, 0.3, 0.31]})
    inner3 = {k: float(np.mean(list(v.values()))) for k, v in close.items()}
    c3 = _cands(_method("static"), _method("learned", auc_units=True))
    assert selection._choose(inner3, c3, "any", close) == "static"  # without estimates: the simplest
    assert selection._choose(inner3, c3, "estimates", close) == "learned"


def test_choose_ties_in_order_go_to_the_higher_inner_score() -> None:
    c = _cands(_method("rankavg:static+a", uses_estimates=True), _method("rankavg:static+b", uses_estimates=True),
               _method("static"))
    per = _per({"rankavg:static+a": [0.3, 0.31, 0.29, 0.3], "rankavg:static+b": [0.31, 0.3, 0.3, 0.3],
                "static": [0.0, -0.1, 0.0, -0.1]})
    inner = {k: float(np.mean(list(v.values()))) for k, v in per.items()}
    assert inner["rankavg:static+b"] > inner["rankavg:static+a"]
    assert selection._choose(inner, c, "estimates", per) == "rankavg:static+b"
    flipped = {"rankavg:static+a": per["rankavg:static+b"], "rankavg:static+b": per["rankavg:static+a"],
               "static": per["static"]}
    inner_f = {k: float(np.mean(list(v.values()))) for k, v in flipped.items()}
    assert selection._choose(inner_f, c, "estimates", flipped) == "rankavg:static+a"
    near_tie = {"rankavg:static+a": 0.3 + 1e-14, "rankavg:static+b": 0.3, "static": -0.05}
    per_t = _per({"rankavg:static+a": [0.3] * 4, "rankavg:static+b": [0.3] * 4, "static": [-0.05] * 4})
    assert selection._choose(near_tie, c, "estimates", per_t) == "rankavg:static+a"


# -- small pieces of a fold ----------------------------------------------------------------------------
def test_fit_score_passes_a_context_with_the_params() -> None:
    seen = {}

    def fn(rows, ctx):  # noqa: ANN001, ANN202
        seen["ctx"] = ctx
        return rows["x"].to_numpy() * 2

    m = _method("m", fn=fn)
    ctx = Context(["e"], {"e": -1}, {"e": "transferability"}, {"a": "g"})
    s = selection._fit_score(m, ctx, {"w": 3}, pd.DataFrame({"x": [1.0]}), pd.DataFrame({"x": [1.0, 2.0]}))
    np.testing.assert_array_equal(s, [2.0, 4.0])
    assert seen["ctx"] == Context(["e"], {"e": -1}, {"e": "transferability"}, {"a": "g"}, {"w": 3})


def test_pred_rows() -> None:
    test = pd.DataFrame({"target": ["a", "b"], "source": ["x", "y"],
                         "auc": pd.Series([0.5, 0.75], dtype=object, index=[7, 9])}, index=[7, 9])
    got = selection._pred_rows("m", test, [1, np.nan])
    pd.testing.assert_frame_equal(got, pd.DataFrame({"method": ["m", "m"], "target": ["a", "b"], "source": ["x", "y"],
                                                     "score": [1.0, np.nan], "auc": [0.5, 0.75]}))
    assert got["score"].dtype == np.float64 and got["auc"].dtype == np.float64


# -- the Procedure on a small KB, with cheap hand-made candidates --------------------------------------
def _kb_with_scratch() -> KnowledgeBase:
    kb = synthetic_kb(n_targets=6, estimates=True, similarity=False)
    ren = {"x0": SCRATCH}
    recs = kb.records.assign(source=kb.records["source"].replace(ren))
    cards = kb.datasets.assign(name=kb.datasets["name"].replace(ren))
    man = dict(kb.manifest) | {"sources": [ren.get(s, s) for s in kb.manifest["sources"]]}
    pf = kb.pair_features.assign(source=kb.pair_features["source"].replace(ren))
    return KnowledgeBase(kb.name, recs, cards, man, pair_features=pf)


@pytest.fixture(scope="module")
def md():  # noqa: ANN201
    return build_meta_dataset(_kb_with_scratch())


def _static(rows: pd.DataFrame, _ctx: Context) -> np.ndarray:
    return rows["fold_static_prior"].to_numpy(dtype=float)


def _tuned_fn(rows: pd.DataFrame, ctx: Context) -> np.ndarray:
    w = float((ctx.params or {}).get("w", 1.0))
    return w * _static(rows, ctx) + np.sin(np.arange(len(rows)))


def _fake_cands() -> dict[str, mt.Method]:
    tuned_fn = _tuned_fn

    def est_fn(rows, _ctx):  # noqa: ANN001, ANN202
        return rows["pair_est_good"].to_numpy(dtype=float)

    def learned_fn(rows, ctx):  # noqa: ANN001, ANN202
        s = 0.01 * _static(rows, ctx)
        s[::5] = np.nan
        return s

    return _cands(_method("untuned_meta", tuned="regressor", fn=tuned_fn),  # never has a trial: skipped
                  _method("static", fn=_static),
                  _method("learned", auc_units=True, fn=learned_fn),
                  _method("meta", tuned="any", fn=tuned_fn),
                  _method("f_est", uses_estimates=True, fn=est_fn))


def _study_for(md, g):  # noqa: ANN001, ANN201
    """Trials (kind 'ranker', estimate-free) with τw on every target, different per trial and target."""
    targets = [t for t in md.targets]
    trials = []
    for i, w in enumerate((0.5, 2.0, -1.0)):
        taus = {t: float(np.cos(3 * i + j + (0 if g is None else len(g)))) for j, t in enumerate(targets)}
        trials.append(_Trial(i, {"kind": "ranker", "features": "prior", "w": w}, taus))
    return _Study(trials)


class _FakeLevel:
    """A level model whose level depends on the scenario (estimates or not) and the target."""

    def __init__(self, use_estimates: bool, n: int) -> None:
        self.use_estimates, self.n = use_estimates, n

    @classmethod
    def fit(cls, train: pd.DataFrame, ctx: Context, use_estimates: bool = True) -> _FakeLevel:
        return cls(bool(use_estimates) if use_estimates is not None else None, len(train))

    def level(self, rows: pd.DataFrame) -> np.ndarray:
        t = rows["target"].astype(str).str[-1].astype(int).to_numpy()
        return 0.7 + 0.1 * bool(self.use_estimates) + 0.01 * t + 0.001 * self.n

    novel = False  # a level model without a novelty (NaN), unless a test sets it

    def novelty(self, rows: pd.DataFrame) -> np.ndarray:
        t = rows["target"].astype(str).str[-1].astype(int).to_numpy()
        return 0.5 + 0.2 * t + 0.01 * self.n if self.novel else np.full(len(rows), np.nan)

    def state(self) -> dict:
        return {"use_estimates": self.use_estimates, "n": self.n}


@pytest.fixture
def fake_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection, "LevelModel", _FakeLevel)


def _proc(md, monkeypatch: pytest.MonkeyPatch, nominal: float = 0.7, picks: dict | None = None):  # noqa: ANN001, ANN201
    proc = Procedure(md, nominal=nominal)
    proc.cands = _fake_cands()
    calls = {"study": [], "choose": []}

    def study(g, inner):  # noqa: ANN001, ANN202
        calls["study"].append((g, inner))
        return _study_for(md, g)

    proc.study = study
    real = selection._choose

    def choose(inner, cands, scenario, per=None):  # noqa: ANN001, ANN202
        calls["choose"].append((dict(inner), cands, scenario, per))
        return (picks or {}).get(scenario) or real(inner, cands, scenario, per)

    monkeypatch.setattr(selection, "_choose", choose)
    return proc, calls


def test_procedure_init(md) -> None:  # noqa: ANN001
    proc = Procedure(md)
    ctx = Context.of(md)
    assert list(proc.cands) == list(mt.candidates(ctx, estimates=True))
    assert "learned+est" in proc.cands and "f_est" not in proc.cands
    assert list(proc.refs) == ["estimate:est_good", "estimate:est_noise"]
    assert proc.scenarios == ["any", "estimates"]
    assert isinstance(proc.folds, Folds) and proc.folds.md is md and proc.md is md
    assert proc.ctx == ctx
    assert (proc.retune, proc.n_trials, proc.storage, proc.nominal, proc.on_trial) == (
        False, tuning.N_TRIALS, None, conformal.NOMINAL, None)
    folds = Folds(md)
    hook = object()
    p2 = Procedure(md, folds, True, 3, "sqlite:///x.db", 0.9, hook)
    assert p2.folds is folds and (p2.retune, p2.n_trials, p2.storage, p2.nominal, p2.on_trial) == (
        True, 3, "sqlite:///x.db", 0.9, hook)
    assert proc.n_candidates("any") == 3 and proc.n_candidates("estimates") == len(proc.cands) == 7
    no_est = Procedure(build_meta_dataset(synthetic_kb(n_targets=6, estimates=False, similarity=False)))
    assert no_est.scenarios == ["any"] and no_est.refs == {}
    assert no_est.n_candidates("estimates") == no_est.n_candidates("any") == 3


def test_procedure_study_asks_tuning_for_this_fold(md, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    seen = {}

    def get_study(md_, g, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.update(md=md_, g=g, **kw)
        return "the study"

    monkeypatch.setattr(selection.tuning, "get_study", get_study)
    hook = object()
    proc = Procedure(md, retune=True, n_trials=3, storage="sqlite:///s.db", on_trial=hook)
    inner = proc.folds.inner("t4")
    assert proc.study("t4", inner) == "the study"
    assert seen["md"] is md and seen["g"] == "t4"
    assert (seen["retune"], seen["n_trials"], seen["storage"], seen["on_trial"]) == (True, 3, "sqlite:///s.db", hook)
    assert len(seen["splits"]) == len(inner)
    assert all(a is tr and b is te for (a, b), (_, tr, te) in zip(seen["splits"], inner, strict=True))


def test_level_model_is_cached_per_train_and_scenario(md) -> None:  # noqa: ANN001
    proc = Procedure(md)
    train, test = proc.folds.outer("t4")
    a = proc.level_model(train, "any")
    assert proc.level_model(train, "any") is a
    e = proc.level_model(train, "estimates")
    assert e is not a and proc.level_model(train, "estimates") is e
    assert a.use_estimates is False and e.use_estimates is True
    want = selection.LevelModel.fit(train, proc.ctx, use_estimates=True)
    np.testing.assert_array_equal(e.level(test), want.level(test))
    assert e.ctx == proc.ctx
    # another fold's training frame gets its own model, never the cached one of an earlier frame
    other, _ = proc.folds.outer("t0")
    b = proc.level_model(other, "any")
    assert b is not a and proc.level_model(train, "any") is a
    assert not np.allclose(b.level(test), a.level(test)) or len(other) != len(train)
    # the cache keeps the frame alive, so a copy (a new object) is fitted afresh
    assert proc.level_model(train.copy(), "any") is not a


def test_terms_and_cal_rows(fake_level, md) -> None:  # noqa: ANN001
    proc = Procedure(md)
    cands = _fake_cands()
    train, test = proc.folds.outer("t4")
    lv = auc_level(train)
    for name, scen in (("static", "any"), ("learned", "estimates")):
        m = cands[name]
        s = selection._fit_score(m, proc.ctx, None, train, test)
        got = proc.terms(m, s, train, test, scen)
        z = normal_scores(s, test["target"].to_numpy())
        mu = proc.level_model(train, scen).level(test)
        u = np.nan_to_num(s) if m.auc_units else lv["sd"] * z
        want = pd.DataFrame({"target": test["target"].to_numpy(), "source": test["source"].to_numpy(), "z": z,
                             "auc": test["auc"].to_numpy(dtype=float), "mu": mu, "sd": lv["sd"], "u": u,
                             "scale": difficulty(mu)})
        pd.testing.assert_frame_equal(got, want)
        pd.testing.assert_frame_equal(proc._cal_rows(s, train, test, m, scen), want)
    assert np.isnan(s).any() and not np.isnan(got["u"]).any()
    assert (got["mu"] != proc.level_model(train, "any").level(test)).all()
    s = selection._fit_score(cands["static"], proc.ctx, None, train, test)
    plain = proc._cal_rows(s, train, test)
    pd.testing.assert_frame_equal(plain, pd.DataFrame({
        "target": test["target"].to_numpy(), "source": test["source"].to_numpy(),
        "z": normal_scores(s, test["target"].to_numpy()), "auc": test["auc"].to_numpy(dtype=float),
        "mu": lv["mu"], "sd": lv["sd"]}))


def test_terms_carry_the_novelty_of_the_level_model_fitted_on_the_training_rows(fake_level, md,
                                                                               monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(_FakeLevel, "novel", True)
    proc = Procedure(md)
    m = _fake_cands()["learned"]
    train, test = proc.folds.outer("t4")
    s = selection._fit_score(m, proc.ctx, None, train, test)
    got = proc.terms(m, s, train, test, "estimates")
    want = _FakeLevel(True, len(train)).novelty(test)
    np.testing.assert_allclose(got["novelty"].to_numpy(), want)
    assert list(got.columns)[-1] == "novelty"


def test_tuned_cal(md) -> None:  # noqa: ANN001
    proc = Procedure(md)
    m = _method("meta", tuned="any", fn=_tuned_fn, reads_train=True)  # a fit without its train is seen
    inner = proc.folds.inner("t4")
    fold_params = {inner[0][0]: {"w": 2.0}, inner[2][0]: {"w": -1.0}}
    got = proc._tuned_cal(m, inner, fold_params)
    want = pd.concat([proc._cal_rows(selection._fit_score(m, proc.ctx, fold_params[h], tr, te), tr, te)
                      for h, tr, te in inner if h in fold_params], ignore_index=True)
    pd.testing.assert_frame_equal(got, want)
    assert list(got.index) == list(range(len(got)))
    empty = proc._tuned_cal(m, inner, {})
    assert empty.empty and list(empty.columns) == ["target", "source", "z", "auc", "mu", "sd"]


def _expected_inner(proc, g, study):  # noqa: ANN001, ANN202
    inner = proc.folds.inner(g)
    per, scores, tuned = {}, {}, {}
    groups = {h: proc.folds.groups[h] for h, _, _ in inner}
    for name, m in proc.cands.items():
        if m.tuned:
            if study is not None:
                per[name], tuned[name] = selection.tuned_inner_scores(study, m, proc.ctx, groups)
            continue
        per[name], scores[name] = {}, []
        for _h, tr, te in inner:
            s = selection._fit_score(m, proc.ctx, None, tr, te)
            per[name].update(selection.tau_per_target(s, te))
            scores[name].append(s)
    return inner, per, scores, tuned


def test_inner_scores(md, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    proc, _ = _proc(md, monkeypatch)
    inner = proc.folds.inner("t4")
    study = _study_for(md, "t4")
    per, scores, tuned = proc.inner_scores(inner, study)
    _, per_w, scores_w, tuned_w = _expected_inner(proc, "t4", study)
    assert list(per) == ["untuned_meta", "static", "learned", "meta", "f_est"]
    assert per == per_w and tuned == tuned_w and per["untuned_meta"] == {} and tuned["meta"]
    assert list(scores) == ["static", "learned", "f_est"]
    for k in scores:
        assert len(scores[k]) == len(inner) == 3
        for a, b in zip(scores[k], scores_w[k], strict=True):
            np.testing.assert_array_equal(a, b)
    assert set(per["static"]) == {t for h, _, _ in inner for t in proc.folds.groups[h]}
    per0, _, tuned0 = proc.inner_scores(inner, None)
    assert "meta" not in per0 and tuned0 == {}


def test_choose(fake_level, md, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    proc, calls = _proc(md, monkeypatch, nominal=0.7, picks={"any": "meta", "estimates": "learned"})
    means, choices, params, inner = proc.choose("t4")
    study = _study_for(md, "t4")
    inner_w, per, scores, tuned = _expected_inner(proc, "t4", study)
    assert [h for h, _, _ in inner] == [h for h, _, _ in inner_w] == ["t0", "t2", "t5"]
    assert len(calls["study"]) == 1 and calls["study"][0][0] == "t4"
    assert [h for h, _, _ in calls["study"][0][1]] == ["t0", "t2", "t5"]
    assert list(means) == list(proc.cands)
    assert math.isnan(means["untuned_meta"])
    for name in ("static", "learned", "f_est", "meta"):
        assert means[name] == pytest.approx(selection._mean0(per[name].values()), abs=1e-15)
    assert params == {"meta": tuning.trial_params(selection.best_trial(study, proc.cands["meta"], proc.ctx))}
    assert params["meta"]["w"] in (0.5, 2.0, -1.0)
    assert [c[2] for c in calls["choose"]] == ["any", "estimates"]
    for c in calls["choose"]:
        assert c[1] is proc.cands and c[3] == per
        assert math.isnan(c[0]["untuned_meta"]) and c[0]["static"] == means["static"]
    assert list(choices) == ["any", "estimates"]
    a, e = choices["any"], choices["estimates"]
    assert (a.scenario, a.method, a.params) == ("any", "meta", params["meta"])
    assert a.inner_tau_w == means["meta"]
    cal_a = proc._tuned_cal(proc.cands["meta"], inner_w, tuned["meta"])
    assert a.calibration == conformal.calibrate(cal_a, 0.7)
    assert (e.scenario, e.method, e.params, e.inner_tau_w) == ("estimates", "learned", None, means["learned"])
    cal_e = pd.concat([proc._cal_rows(sc, tr, te, proc.cands["learned"], "estimates")
                       for sc, (_, tr, te) in zip(scores["learned"], inner_w, strict=True)], ignore_index=True)
    assert e.calibration == conformal.calibrate(cal_e, 0.7)
    assert e.calibration["normalised"] is True and e.calibration["n_cells"] == len(cal_e)
    assert e.calibration != conformal.calibrate(pd.concat(
        [proc._cal_rows(sc, tr, te, proc.cands["learned"], "any")
         for sc, (_, tr, te) in zip(scores["learned"], inner_w, strict=True)], ignore_index=True), 0.7)


def test_choose_without_tuned_candidates_asks_for_no_study(md, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    proc, calls = _proc(md, monkeypatch, picks={"any": "static", "estimates": "static"})
    proc.cands = {k: v for k, v in proc.cands.items() if not v.tuned}
    means, choices, params, _ = proc.choose("t4")
    assert calls["study"] == [] and params == {}
    assert choices["any"].params is None and choices["any"].method == "static"


def test_choose_on_every_group(fake_level, md, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    proc, calls = _proc(md, monkeypatch, picks={"any": "static", "estimates": "f_est"})
    means, choices, params = proc.final()
    assert calls["study"][0][0] is None and [h for h, _, _ in calls["study"][0][1]] == ["t0", "t2", "t4", "t5"]
    _, per, _, _ = _expected_inner(proc, None, _study_for(md, None))
    assert means["static"] == pytest.approx(selection._mean0(per["static"].values()), abs=1e-15)
    assert choices["estimates"].method == "f_est" and "meta" in params


def test_outer_fold(fake_level, md, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    proc, _ = _proc(md, monkeypatch, nominal=0.7, picks={"any": "meta", "estimates": "learned"})
    fo = proc.outer_fold("t4")
    means, choices, params, _ = proc.choose("t4")
    train, test = proc.folds.outer("t4")
    assert fo.group == "t4" and fo.targets == ["t4"] and fo.targets is not proc.folds.groups["t4"]
    assert fo.inner == means and fo.params == params
    assert {k: (c.method, c.calibration) for k, c in fo.choices.items()} == {
        k: (c.method, c.calibration) for k, c in choices.items()}
    rows, scores = [], {}
    for name, m in (proc.cands | proc.refs).items():
        if m.tuned and name not in params:
            continue
        scores[name] = selection._fit_score(m, proc.ctx, params.get(name), train, test)
        rows.append(selection._pred_rows(name, test, scores[name]))
    for scen, ch in choices.items():
        rows.append(selection._pred_rows(selection.ROW_NAME[scen], test, scores[ch.method]))
    pd.testing.assert_frame_equal(fo.predictions, pd.concat(rows, ignore_index=True))
    assert list(fo.intervals["scenario"].unique()) == list(choices)
    for scen, ch in choices.items():
        # each scenario's block: the held-out rows in order, the chosen method's level, its
        # calibrated AUC interval and gain interval, the measured AUC and the KB-average baseline
        part = fo.intervals[fo.intervals["scenario"] == scen].reset_index(drop=True)
        assert list(part["target"]) == list(test["target"]) and list(part["source"]) == list(test["source"])
        t = proc.terms(proc.cands[ch.method], scores[ch.method], train, test, scen)
        np.testing.assert_allclose(part["level"], t["mu"].to_numpy())
        np.testing.assert_allclose(part["auc"], test["auc"].to_numpy(dtype=float))
        assert (part["baseline_auc"] == auc_level(train)["mu"]).all()
        want = conformal.interval_terms(t["mu"].to_numpy(), t["u"].to_numpy(), ch.calibration)
        for col in ("predicted_auc", "lo", "hi", "scale"):
            np.testing.assert_allclose(part[col], want[col].to_numpy(), err_msg=f"{scen} {col}")
        gains = conformal.intervals_with_gain(want, test["source"].to_numpy(), test["target"].to_numpy(),
                                              test["auc"].to_numpy(dtype=float), ch.calibration)
        for col in ("predicted_gain", "gain_lo", "gain_hi", "gain"):
            np.testing.assert_allclose(part[col], gains[col].to_numpy(), err_msg=f"{scen} {col}")
    assert list(fo.predictions["method"].unique()) == ["static", "learned", "meta", "f_est", "estimate:est_good",
                                                       "estimate:est_noise", "shipped", "shipped+est"]
    assert list(fo.intervals.columns) == ["scenario", "target", "source", "predicted_auc", "lo", "hi", "scale",
                                          "predicted_gain", "gain_lo", "gain_hi", "gain", "auc", "level",
                                          "baseline_auc"]
    assert list(fo.intervals.index) == list(range(len(fo.intervals)))
    assert fo.intervals["gain"].notna().all() and fo.intervals["gain_lo"].notna().any()
    meta_rows = fo.predictions[fo.predictions["method"] == "meta"]["score"].to_numpy()
    np.testing.assert_allclose(meta_rows, selection._fit_score(proc.cands["meta"], proc.ctx, params["meta"],
                                                                train, test))
    assert not np.allclose(meta_rows, selection._fit_score(proc.cands["meta"], proc.ctx, None, train, test))


def test_fit_final(md, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from recommender.model import all_rows

    proc = Procedure(md)
    seen = {}

    def fn(rows, ctx):  # noqa: ANN001, ANN202
        return np.zeros(len(rows))

    m = _method("static", uses_estimates=False, fn=fn)
    m2 = mt.Method("meta", "a tuned one", True, lambda rows, ctx: seen.update(rows=rows, ctx=ctx) or m.fit(rows, ctx),
                   m.load, tuned="any", auc_units=True)
    proc.cands = {"static": m, "meta": m2}
    calib = {"q": 0.1}
    got = proc.fit_final(Choice("estimates", "meta", 0.42, calib, {"w": 3}))
    rows = all_rows(md)
    pd.testing.assert_frame_equal(seen["rows"], rows)
    assert seen["ctx"] == Context(proc.ctx.pair_features, proc.ctx.directions, proc.ctx.kinds, proc.ctx.groups, {"w": 3})
    level = selection.LevelModel.fit(rows, proc.ctx, use_estimates=True)
    assert set(got) == {"method", "words", "uses_estimates", "auc_units", "params", "state", "level", "calibration",
                        "inner_tau_w"}
    assert (got["method"], got["words"], got["uses_estimates"], got["auc_units"], got["params"]) == (
        "meta", "a tuned one", True, True, {"w": 3})
    assert got["state"] == {"name": "static", "params": {"w": 3}}
    assert got["calibration"] is calib and got["inner_tau_w"] == 0.42
    assert set(got["level"]) == {"mu", "sd", "model"}
    assert (got["level"]["mu"], got["level"]["sd"]) == (auc_level(rows)["mu"], auc_level(rows)["sd"])
    assert str(got["level"]["model"]) == str(level.state())
    assert got["level"]["model"]["use_estimates"] is True
    plain = proc.fit_final(Choice("any", "static", 0.1, calib))
    assert plain["level"]["model"]["use_estimates"] is False and plain["params"] is None
    assert plain["words"] == "words of static"


def test_outer_fold_scales_a_novelty_calibration_by_the_held_out_targets_novelty(
        fake_level, md, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(_FakeLevel, "novel", True)
    real = conformal.calibrate
    monkeypatch.setattr(selection.conformal, "calibrate", lambda cal, nominal: real(cal, nominal) | {
        "normalised": True, "scale_kind": "novelty", "scale_power": 1.0})
    proc, _ = _proc(md, monkeypatch, nominal=0.7, picks={"any": "meta", "estimates": "learned"})
    fo = proc.outer_fold("t4")
    _, choices, params, _ = proc.choose("t4")
    train, test = proc.folds.outer("t4")
    assert list(fo.intervals.columns)[-3:] == ["level", "novelty", "baseline_auc"]
    for scen, ch in choices.items():
        part = fo.intervals[fo.intervals["scenario"] == scen].reset_index(drop=True)
        m = proc.cands[ch.method]
        t = proc.terms(m, selection._fit_score(m, proc.ctx, params.get(ch.method), train, test), train, test, scen)
        np.testing.assert_allclose(part["novelty"], t["novelty"].to_numpy())
        want = conformal.interval_terms(t["mu"].to_numpy(), t["u"].to_numpy(), ch.calibration,
                                        t["novelty"].to_numpy())
        assert want["lo"].notna().all()  # without the novelty this calibration gives no interval
        for col in ("lo", "hi", "scale"):
            np.testing.assert_allclose(part[col], want[col].to_numpy(), err_msg=f"{scen} {col}")
