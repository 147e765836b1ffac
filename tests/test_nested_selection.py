"""Leave-one-group-out and nested selection: whole groups held out, the choice made on training
groups only (a method that is perfect on the outer fold alone is never picked for it), tuned
meta-models scored without self-selection, and the registry."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _synthetic_kb import synthetic_kb

from experiments.knowledge_base import KnowledgeBase
from recommender.evaluation import selection
from recommender.evaluation.selection import Folds, Procedure, tuned_inner_scores
from recommender.model import build_meta_dataset
from recommender.model import methods as mt


def test_groups_come_from_manifest_groups_and_twins_of_any_length():
    recs = pd.DataFrame({"source": ["a", "b", "c", "d", "e"], "target": ["b", "c", "a", "a", "d"],
                         "metric": "roc_auc", "value": 0.9})
    kb = KnowledgeBase("k", recs, pd.DataFrame(), {"twins": [["a", "b", "c"]], "groups": {"e": "d"}})
    g = kb.groups
    assert g["a"] == g["b"] == g["c"] and g["d"] == g["e"] and g["a"] != g["d"]


def test_every_fold_holds_out_its_whole_group():
    md = build_meta_dataset(synthetic_kb())
    folds = Folds(md)
    assert folds.groups["t0"] == ["t0", "t1"] and folds.groups["t2"] == ["t2", "t3"]
    assert len(folds.labels) == 6  # 8 targets, a derived task and a twin pair
    for g, members in folds.groups.items():
        train, test = folds.outer(g)
        assert set(test["target"]) == set(members)
        assert not set(members) & (set(train["target"]) | set(train["source"]) | set(test["source"]))
    for g in ("t0", "t2"):  # the derived task's group and the twins' group
        members = folds.groups[g]
        for h, itrain, itest in folds.inner(g):
            held = set(members) | set(folds.groups[h])
            assert set(itest["target"]) == set(folds.groups[h])
            assert not held & (set(itrain["target"]) | set(itrain["source"]))


@pytest.fixture
def planted(monkeypatch):
    """A candidate that is perfect on t4 and perfectly wrong everywhere else."""
    def fn(rows: pd.DataFrame, _ctx: mt.Context) -> np.ndarray:
        auc = rows["auc"].to_numpy(dtype=float)
        return np.where(rows["target"].to_numpy() == "t4", auc, -auc)

    @mt.family
    def _planted(_ctx: mt.Context):
        yield mt.stateless_method("planted", "oracle on t4 only", fn)

    yield
    mt._FAMILIES.remove(_planted)  # in place: a monkeypatched copy would be undone at teardown


def test_choice_ignores_the_outer_fold(planted):
    md = build_meta_dataset(synthetic_kb(estimates=False))
    proc = Procedure(md)
    proc.cands = {k: v for k, v in proc.cands.items() if not v.tuned}
    assert "planted" in proc.cands
    fo = proc.outer_fold("t4")
    per = fo.predictions.groupby("method").apply(
        lambda g: selection.tau_per_target(g["score"].to_numpy(), g)["t4"], include_groups=False)
    assert per["planted"] == pytest.approx(1.0)  # the outer fold alone would pick it ...
    assert fo.choices["any"].method != "planted"  # ... nested selection never sees that fold
    assert fo.inner["planted"] < 0
    assert per["shipped"] < 1.0


class _Trial:
    def __init__(self, number: int, params: dict, taus: dict) -> None:
        self.number, self.params, self.user_attrs, self.value = number, params, {"tau_w": taus}, 0.0
        import optuna

        self.state = optuna.trial.TrialState.COMPLETE


class _Study:
    def __init__(self, trials: list[_Trial]) -> None:
        self.trials = trials


def test_tuned_candidates_are_scored_by_trials_chosen_without_the_scored_fold():
    """Trial 0 is superb on group a only; scoring a must use the trial best on b and c (trial 1)."""
    p = {"kind": "regressor", "features": "prior"}
    study = _Study([_Trial(0, p, {"a": 0.99, "b": 0.0, "c": 0.0}),
                    _Trial(1, p, {"a": 0.10, "b": 0.5, "c": 0.5})])
    m = next(x for x in mt.registered(mt.Context([], {}, {})).values() if x.name == "meta")
    scores, chosen = tuned_inner_scores(study, m, mt.Context([], {}, {}), {"a": ["a"], "b": ["b"], "c": ["c"]})
    assert scores["a"] == pytest.approx(0.10)  # a self-selected best-of-trials would say 0.99
    # b is scored by the trial best on a and c: trial 0 (mean 0.495 against 0.30)
    assert scores["b"] == pytest.approx(0.0) and chosen["b"]["kind"] == "regressor"


def test_registry_families_and_estimate_free_scenario():
    ctx = mt.Context(["e1", "e2", "e3", "e4", "s"], {}, {f"e{i}": "transferability" for i in range(1, 5)}
                     | {"s": "similarity"})
    full, free = mt.registered(ctx, True), mt.registered(ctx, False)
    n_rank = sum(math.comb(4, k) for k in (1, 2, 3))
    assert sum(n.startswith("rankavg:static+e") for n in full) == n_rank  # loadable by name
    assert {f"estimate:e{i}" for i in range(1, 5)} <= set(full)
    assert {"static", "residual", "meta", "meta_regressor", "meta_ranker", "learned"} <= set(free)
    assert not any(m.uses_estimates for m in free.values())
    assert {"residual+est", "meta+est", "learned+est"} <= set(full) - set(free)
    # nested selection searches only the declared candidates: at most 8, in the declared order
    cands, cands_free = mt.candidates(ctx, True), mt.candidates(ctx, False)
    assert list(cands) == list(mt.SELECTION) and len(cands) <= 8
    assert list(cands_free) == ["static", "residual", "learned"]
    assert set(mt.references(ctx)) == {f"estimate:e{i}" for i in range(1, 5)}


def test_rank_average_combines_within_target_ranks():
    rows = pd.DataFrame({"target": ["a"] * 3 + ["b"] * 3, "fold_static_prior": [3, 2, 1, 1, 2, 3],
                         "pair_e": [1, 2, 3, 1, 2, 3]})
    ctx = mt.Context(["e"], {"e": 1}, {"e": "transferability"})
    s = mt.get_method("rankavg:static+e", ctx).fit(rows, ctx).score(rows)
    np.testing.assert_allclose(s[:3], [2 / 3, 2 / 3, 2 / 3])  # opposite orders cancel
    assert list(np.argsort(-s[3:])) == [2, 1, 0]  # agreeing orders keep it


def test_perturbing_a_held_out_group_leaves_its_fold_identical():
    """Whole procedure (untuned candidates): t1 (derived from t0) changes; t0's fold must not."""
    rng = np.random.default_rng(5)
    srcs = [f"t{i}" for i in range(8) if i != 1] + ["x0", "x1", "x2"]
    shift = {(s, "t1"): float(rng.normal(0, 0.05)) for s in srcs}
    shift |= {("t1", t): float(rng.normal(0, 0.05)) for t in [f"t{i}" for i in range(8) if i != 1]}
    outs = []
    for sh in (None, shift):
        md = build_meta_dataset(synthetic_kb(shift=sh))
        proc = Procedure(md)
        proc.cands = {k: v for k, v in proc.cands.items() if not v.tuned}
        fo = proc.outer_fold("t0")
        outs.append(fo)
    a, b = outs
    assert a.choices["any"].method == b.choices["any"].method
    assert a.inner == b.inner
    pa = a.predictions[a.predictions["target"] == "t0"].reset_index(drop=True)
    pb = b.predictions[b.predictions["target"] == "t0"].reset_index(drop=True)
    pd.testing.assert_frame_equal(pa, pb)
    # control: the same shift on a training target (t5) does reach t0's fold
    shift5 = {(s, "t5"): float(rng.normal(0, 0.05)) for s in [*srcs, "t1"] if s != "t5"}
    md = build_meta_dataset(synthetic_kb(shift=shift5))
    proc = Procedure(md)
    proc.cands = {k: v for k, v in proc.cands.items() if not v.tuned}
    c = proc.outer_fold("t0")
    assert c.inner != a.inner
