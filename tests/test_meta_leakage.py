"""LOTO/LOGO must not leak the held-out target's AUCs into the model that ranks it.

The main test plants the answer: a pair feature equal to the true AUC of every source on the
held-out target (and shuffled, so uninformative, on every training target). A pipeline
without leakage cannot learn what that feature means, so the held-out τw stays where chance
puts it; a pipeline that lets the held-out target's rows (or its twin's) into training learns
"planted = AUC" and ranks the held-out target almost perfectly. Controls show the feature is
learnable when it is legitimately informative, and each test is run once against a
deliberately leaky pipeline to show that it would catch the leak.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_meta_dataset import EXTRA_SOURCES, TARGETS, make_synthetic_kb

from experiments.knowledge_base import KnowledgeBase
from recommender.evaluation import fold_predictions, rank_metrics, tuning
from recommender.evaluation import loto as loto_module
from recommender.model import MetaDataset, baseline_scores, build_meta_dataset, fold_rows
from recommender.model import meta_model as mm
from recommender.model.meta_dataset import normalised_label

PLANT_TARGETS = [f"t{i}" for i in range(8)]
PLANT_SOURCES = [f"s{i}" for i in range(6)] + PLANT_TARGETS
HELD_OUT = PLANT_TARGETS[:4]
PLANT_PARAMS = {
    "meta": dict(mm.DEFAULT_PARAMS, features="prior_pair", min_child_samples=3),
    "meta_regressor": dict(mm.DEFAULT_PARAMS, features="prior_pair", min_child_samples=3),
    "meta_ranker": dict(mm.DEFAULT_PARAMS, kind="ranker", features="prior_pair", min_child_samples=3),
}
# Mean held-out τw over HELD_OUT: unplanted ≈ 0 (nothing to learn), and a leak-free pipeline
# keeps it below CHANCE with the answer planted, gaining at most NO_BENEFIT over unplanted; a
# leaky pipeline takes it above LEAKED (observed ≈ 0.72); a legitimately informative feature
# above LEARNT (observed ≈ 0.94).
NO_BENEFIT, CHANCE, LEAKED, LEARNT = 0.25, 0.4, 0.6, 0.9


def planted_kb(plant: set[str] | str, twins: list[list[str]] | None = None, seed: int = 0) -> MetaDataset:
    """8 targets × 13 sources with NO source effect (AUC = target level + cell noise), so nothing
    but the planted feature can rank them. ``planted`` = the true AUC on the targets in
    ``plant`` ('all' = every target), a within-target shuffle of the AUCs elsewhere."""
    rng = np.random.default_rng(seed)
    level = dict(zip(PLANT_TARGETS, rng.uniform(0.7, 0.9, len(PLANT_TARGETS)), strict=True))
    recs, pf = [], []
    for t in PLANT_TARGETS:
        for s in PLANT_SOURCES:
            if s != t:
                recs.append({"source": s, "target": t, "metric": "roc_auc", "value": level[t] + rng.normal(0, 0.03),
                             "fold": -1, "seed": -1})
                pf.append({"source": s, "target": t, "feature": "noise", "value": rng.normal(),
                           "kind": "similarity", "provenance": "test"})
    recs = pd.DataFrame(recs)
    for t, g in recs.groupby("target"):
        v = g["value"].to_numpy()
        vals = v if plant == "all" or t in plant else rng.permutation(v)
        pf += [{"source": s, "target": t, "feature": "planted", "value": float(x), "kind": "similarity",
                "provenance": "test"} for s, x in zip(g["source"], vals, strict=True)]
    cards = pd.DataFrame([{"name": s, "role": "both", "domain": "medical", "modality": "ct", "n_images": 1000,
                           "n_classes": 2, "channels": 1, "resolution": 28, "task": "binary"} for s in PLANT_SOURCES])
    manifest = {"metric": "roc_auc", "sources": PLANT_SOURCES, "targets": PLANT_TARGETS}
    if twins:
        manifest["twins"] = twins
    return build_meta_dataset(KnowledgeBase("planted", recs, cards, manifest, pair_features=pd.DataFrame(pf)))


def held_out_tau(md: MetaDataset, target: str, split=fold_rows) -> float:  # noqa: ANN001
    """Mean τw on ``target`` of the meta variants fit on its LOTO fold (``split`` = fold_rows:
    the fold's training rows, fold features and labels, as evaluate-meta builds them)."""
    train, test = split(md, [target])
    taus = []
    for params in PLANT_PARAMS.values():
        cols = mm.feature_columns(train.columns, params["features"], md.pair_features)
        score = mm.predict(mm.fit_model(params, train, cols), test, cols)
        taus.append(rank_metrics(score, test["auc"].to_numpy())["tau_w"])
    return float(np.mean(taus))


def _leaky_fold_rows(md: MetaDataset, test_targets: list[str], exclude=frozenset()):  # noqa: ANN001, ANN202
    """The leak the tests must catch: the held-out target's own rows added to training."""
    train, test = fold_rows(md, test_targets, exclude)
    leaked = pd.concat([train, test.assign(label_z=normalised_label(test))], ignore_index=True)
    return leaked, test


def _mean_tau(plant: bool, split=fold_rows) -> float:  # noqa: ANN001
    """Mean held-out τw over HELD_OUT, each with (or without) its own AUC planted."""
    return float(np.mean([held_out_tau(planted_kb({t} if plant else set()), t, split) for t in HELD_OUT]))


def test_planted_held_out_auc_gives_no_benefit():
    """Planted on the held-out target only: its τw does not jump, nor gain on the unplanted KB."""
    tau = _mean_tau(plant=True)
    assert tau < CHANCE, f"held-out τw {tau:.3f} with its own AUC planted in a feature: leakage"
    assert tau - _mean_tau(plant=False) < NO_BENEFIT


def test_planted_test_catches_a_leaky_pipeline():
    """Sanity of the test above: let the held-out target's rows into training and it fails."""
    assert _mean_tau(plant=True, split=_leaky_fold_rows) > LEAKED


def test_planted_held_out_auc_gives_no_benefit_through_fold_predictions(monkeypatch):
    """The same through evaluate-meta's own fold step (loto.fold_predictions), leak-checked."""
    def tau(md: MetaDataset, t: str) -> float:
        preds, _, _ = fold_predictions(md, t, PLANT_PARAMS)
        return float(np.mean([rank_metrics(g["score"], g["auc"])["tau_w"] for _, g in preds.groupby("method")]))

    def mean_tau() -> float:
        return float(np.mean([tau(planted_kb({t}), t) for t in HELD_OUT[:2]]))

    assert mean_tau() < CHANCE
    monkeypatch.setattr(loto_module, "fold_rows", _leaky_fold_rows)
    assert mean_tau() > LEAKED


def test_control_planted_feature_is_learnable_when_legitimately_informative():
    """Planted on every target, it is a real input: training folds learn it and the held-out
    target then benefits (so the no-benefit result above is not a model that ignores it)."""
    md = planted_kb("all")
    assert np.mean([held_out_tau(md, t) for t in HELD_OUT]) > LEARNT


def test_control_planted_on_training_targets_helps_training_folds_only():
    """Planted on the training targets only (shuffled on the held-out one): the fold model ranks
    its training targets almost perfectly, and the held-out target gains nothing."""
    for t in HELD_OUT[:2]:
        md = planted_kb(set(PLANT_TARGETS) - {t})
        train, _ = fold_rows(md, [t])
        params = PLANT_PARAMS["meta_regressor"]
        cols = mm.feature_columns(train.columns, params["features"], md.pair_features)
        model = mm.fit_model(params, train, cols)
        fitted = train.assign(score=mm.predict(model, train, cols))
        in_fold = np.mean([rank_metrics(g["score"], g["auc"])["tau_w"] for _, g in fitted.groupby("target")])
        assert in_fold > LEARNT
        assert held_out_tau(md, t) < CHANCE


def twin_kb(seed: int = 0) -> MetaDataset:
    """8 targets in 4 declared twin pairs whose AUC columns are copies (± 0.0005): the twin's
    column IS the held-out target's answer. A pair feature ('look') is identical within a pair
    and unlike every other pair, as a similarity profile of near-duplicates would be, so the
    profile prior of a target reads its twin's column whenever the twin is a training target."""
    rng = np.random.default_rng(seed)
    group = {t: f"g{i // 2}" for i, t in enumerate(PLANT_TARGETS)}
    col = {g: {s: rng.normal(0, 0.03) for s in PLANT_SOURCES} for g in sorted(set(group.values()))}  # sorted: set order varies with PYTHONHASHSEED
    look = {f"g{k}": {s: float(j % 4 == k) for j, s in enumerate(PLANT_SOURCES)} for k in range(4)}
    level = {t: rng.uniform(0.7, 0.9) for t in PLANT_TARGETS}
    recs, pf = [], []
    for t in PLANT_TARGETS:
        for s in PLANT_SOURCES:
            if s != t:
                recs.append({"source": s, "target": t, "metric": "roc_auc", "fold": -1, "seed": -1,
                             "value": level[t] + col[group[t]][s] + rng.normal(0, 0.0005)})
                pf.append({"source": s, "target": t, "feature": "look", "value": look[group[t]][s],
                           "kind": "similarity", "provenance": "test"})
    cards = pd.DataFrame([{"name": s, "role": "both", "domain": "medical", "modality": "ct", "n_images": 1000,
                           "n_classes": 2, "channels": 1, "resolution": 28, "task": "binary"} for s in PLANT_SOURCES])
    twins = [PLANT_TARGETS[i:i + 2] for i in range(0, len(PLANT_TARGETS), 2)]
    manifest = {"metric": "roc_auc", "sources": PLANT_SOURCES, "targets": PLANT_TARGETS, "twins": twins}
    return build_meta_dataset(KnowledgeBase("twins", pd.DataFrame(recs), cards, manifest,
                                            pair_features=pd.DataFrame(pf)))


def _best_fold_feature_tau(md: MetaDataset, target: str) -> float:
    """The highest τw any fold_ feature of the held-out rows reaches against their true AUCs."""
    _, test = fold_rows(md, [target])
    taus = [rank_metrics(test[c].to_numpy(), test["auc"].to_numpy())["tau_w"]
            for c in test.columns if c.startswith("fold_")]
    return float(np.nanmax(taus)) if np.isfinite(taus).any() else float("nan")


def _keep_twins_in_training(md: MetaDataset) -> None:
    """The LOGO leak: forget the twins, so a held-out target's twin stays a training target."""
    md.twins = {}
    if hasattr(md, "groups"):
        md.groups = {n: n for n in md.groups}


def test_twin_of_the_held_out_target_gives_no_benefit_and_a_kept_twin_is_caught():
    """LOGO: holding out t0 drops its twin t1, so neither the fold features nor the model can
    read t1's copy of t0's AUCs; were t1 kept in training, both would rank t0 ≈ perfectly."""
    held = ["t0", "t2", "t5"]
    md = twin_kb()
    ok_feature = [_best_fold_feature_tau(md, t) for t in held]
    ok_model = np.mean([held_out_tau(md, t) for t in held])
    assert not np.any(np.asarray(ok_feature) > LEARNT), ok_feature
    assert ok_model < CHANCE
    _keep_twins_in_training(md)
    assert min(_best_fold_feature_tau(md, t) for t in held) > LEARNT
    assert np.mean([held_out_tau(md, t) for t in held]) > LEAKED


# -- perturbation checks on the general synthetic KB ---------------------------------------
HELD = "t_c"
PARAMS = {
    "meta": dict(mm.DEFAULT_PARAMS, features="all", min_child_samples=3),
    "meta_regressor": dict(mm.DEFAULT_PARAMS, min_child_samples=3),
    "meta_ranker": dict(mm.DEFAULT_PARAMS, kind="ranker", features="prior_card", min_child_samples=3),
}


def _perturbation(held: str, seed: int = 1) -> dict:
    """Random multiplicative changes of every AUC in ``held``'s column and row."""
    rng = np.random.default_rng(seed)
    cells = [(s, held) for s in EXTRA_SOURCES + TARGETS if s != held]
    cells += [(held, t) for t in TARGETS if t != held]
    return {c: float(rng.uniform(0.8, 1.05)) for c in cells}


def _perturbed_pair() -> tuple[MetaDataset, MetaDataset]:
    base = build_meta_dataset(make_synthetic_kb(twins=False))
    pert = build_meta_dataset(make_synthetic_kb(twins=False, scale=_perturbation(HELD)))
    assert not np.allclose(base.matrix[HELD].dropna(), pert.matrix[HELD].dropna())
    assert not np.allclose(base.matrix.loc[HELD].dropna(), pert.matrix.loc[HELD].dropna())
    return base, pert


def test_perturbing_held_out_aucs_leaves_its_ranking_identical():
    base, pert = _perturbed_pair()
    p0, band0, test0 = fold_predictions(base, HELD, PARAMS)
    p1, band1, test1 = fold_predictions(pert, HELD, PARAMS)
    np.testing.assert_array_equal(p0["score"].to_numpy(), p1["score"].to_numpy())
    pd.testing.assert_frame_equal(band0.drop(columns="auc"), band1.drop(columns="auc"))
    for name in ("static_strict", "largest_source", "most_similar:sim_cos"):
        pd.testing.assert_series_equal(baseline_scores(base, HELD, test0)[name],
                                       baseline_scores(pert, HELD, test1)[name])


def test_perturbation_test_catches_a_leaky_pipeline(monkeypatch):
    monkeypatch.setattr(loto_module, "fold_rows", _leaky_fold_rows)
    base, pert = _perturbed_pair()
    p0, _, _ = fold_predictions(base, HELD, PARAMS)
    p1, _, _ = fold_predictions(pert, HELD, PARAMS)
    assert not np.allclose(p0["score"].to_numpy(), p1["score"].to_numpy())


def test_twin_is_dropped_with_the_target():
    """t_a's twin t_b: perturbing t_b's column and row must not move t_a's ranking either."""
    base = build_meta_dataset(make_synthetic_kb(twins=True))
    pert = build_meta_dataset(make_synthetic_kb(twins=True, scale=_perturbation("t_b", seed=3)))
    p0, _, _ = fold_predictions(base, "t_a", PARAMS)
    p1, _, _ = fold_predictions(pert, "t_a", PARAMS)
    np.testing.assert_array_equal(p0["score"].to_numpy(), p1["score"].to_numpy())
    train, _ = fold_rows(base, ["t_a"])
    assert not {"t_a", "t_b"} & (set(train["source"]) | set(train["target"]))


@pytest.mark.parametrize("seed", [5])
def test_nested_tuning_does_not_see_the_held_out_target(tmp_path, seed):
    """Full loop with Optuna: same chosen hyper-parameters and same held-out ranking after perturbation."""
    outs = []
    for i, scale in enumerate((None, _perturbation(HELD, seed=seed))):
        md = build_meta_dataset(make_synthetic_kb(twins=False, scale=scale))
        study = tuning.tune(md, HELD, n_trials=3, storage=f"sqlite:///{tmp_path / f'study{i}.db'}")
        best, score = tuning.best_params(study)
        p, _, _ = fold_predictions(md, HELD, {"meta": best, "meta_regressor": tuning.best_params(study, "regressor")[0],
                                              "meta_ranker": tuning.best_params(study, "ranker")[0]})
        outs.append((best, score, p["score"].to_numpy()))
    assert outs[0][0] == outs[1][0] and outs[0][1] == outs[1][1]
    np.testing.assert_array_equal(outs[0][2], outs[1][2])
