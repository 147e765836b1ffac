"""LOTO must not leak: the held-out target's AUCs (its column, and its row as a source) and its
twin's cannot change the ranking predicted for it — including through hyper-parameter tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_meta_dataset import EXTRA_SOURCES, TARGETS, make_synthetic_kb

from recommender.evaluation import fold_predictions, tuning
from recommender.model import baseline_scores, build_meta_dataset, fold_rows
from recommender.model import meta_model as mm

HELD = "t_c"


def _perturbation(held: str, seed: int = 1) -> dict:
    """Random multiplicative changes of every AUC in ``held``'s column and row."""
    rng = np.random.default_rng(seed)
    cells = [(s, held) for s in EXTRA_SOURCES + TARGETS if s != held]
    cells += [(held, t) for t in TARGETS if t != held]
    return {c: float(rng.uniform(0.8, 1.05)) for c in cells}


PARAMS = {
    "meta": dict(mm.DEFAULT_PARAMS, features="all", min_child_samples=3),
    "meta_regressor": dict(mm.DEFAULT_PARAMS, min_child_samples=3),
    "meta_ranker": dict(mm.DEFAULT_PARAMS, kind="ranker", features="prior_card", min_child_samples=3),
}


def test_perturbing_held_out_aucs_leaves_its_ranking_identical():
    base = build_meta_dataset(make_synthetic_kb(twins=False))
    pert = build_meta_dataset(make_synthetic_kb(twins=False, scale=_perturbation(HELD)))
    # the perturbation really changed the held-out column and row
    assert not np.allclose(base.matrix[HELD].dropna(), pert.matrix[HELD].dropna())
    assert not np.allclose(base.matrix.loc[HELD].dropna(), pert.matrix.loc[HELD].dropna())
    p0, band0, test0 = fold_predictions(base, HELD, PARAMS)
    p1, band1, test1 = fold_predictions(pert, HELD, PARAMS)
    np.testing.assert_array_equal(p0["score"].to_numpy(), p1["score"].to_numpy())
    pd.testing.assert_frame_equal(band0.drop(columns="auc"), band1.drop(columns="auc"))
    for name in ("static_strict", "largest_source", "most_similar:sim_cos"):
        s0 = baseline_scores(base, HELD, test0)[name]
        s1 = baseline_scores(pert, HELD, test1)[name]
        pd.testing.assert_series_equal(s0, s1)
    # the README static ranking keeps t's row in the other columns: it is allowed to move
    assert "static" in baseline_scores(base, HELD, test0)


def test_control_perturbing_a_training_target_does_change_the_ranking():
    """The same test would catch a leak: changing a *training* target's column moves t's scores."""
    base = build_meta_dataset(make_synthetic_kb(twins=False))
    scale = {(s, "t_d"): float(f) for s, f in zip(
        EXTRA_SOURCES + TARGETS, np.linspace(0.8, 1.05, len(TARGETS) + 2), strict=True) if s != "t_d"}
    pert = build_meta_dataset(make_synthetic_kb(twins=False, scale=scale))
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


def test_nested_tuning_does_not_see_the_held_out_target(tmp_path):
    """Full loop with Optuna: same chosen hyper-parameters and same held-out ranking after perturbation."""
    outs = []
    for i, scale in enumerate((None, _perturbation(HELD, seed=5))):
        md = build_meta_dataset(make_synthetic_kb(twins=False, scale=scale))
        storage = f"sqlite:///{tmp_path / f'study{i}.db'}"
        study = tuning.tune(md, HELD, n_trials=3, storage=storage)
        best, score = tuning.best_params(study)
        p, _, _ = fold_predictions(md, HELD, {"meta": best, "meta_regressor": tuning.best_params(study, "regressor")[0],
                                              "meta_ranker": tuning.best_params(study, "ranker")[0]})
        outs.append((best, score, p["score"].to_numpy()))
    assert outs[0][0] == outs[1][0] and outs[0][1] == outs[1][1]
    np.testing.assert_array_equal(outs[0][2], outs[1][2])
