"""The residual model: the static prior plus a shrunk deviation; the prior when it knows nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
from _synthetic_kb import synthetic_kb

from recommender.evaluation.selection import tau_per_target
from recommender.model import build_meta_dataset, fold_rows
from recommender.model.methods import Context
from recommender.model.residual import ResidualModel


def _fold(kb, held: str = "t5"):  # noqa: ANN001, ANN202
    md = build_meta_dataset(kb)
    train, test = fold_rows(md, [held])
    return md, train, test


def test_falls_back_to_the_prior_without_features():
    md, train, test = _fold(synthetic_kb(affinity_sd=0.02))
    model = ResidualModel.fit(train, Context.of(md), use_estimates=True)
    blind = test.copy()
    for c in blind.columns:
        if c.startswith("pair_") or c in ("fold_modality_prior", "fold_profile_prior"):
            blind[c] = np.nan
    s = model.score(blind)
    prior = blind["fold_static_prior"].to_numpy()
    assert list(np.argsort(-s)) == list(np.argsort(-prior))


def test_learns_an_informative_estimate_but_shrinks_it():
    md, train, test = _fold(synthetic_kb(affinity_sd=0.03, noise=0.002), "t6")
    ctx = Context.of(md)
    with_est = ResidualModel.fit(train, ctx, use_estimates=True)
    coef = dict(zip(with_est.names, with_est.coef, strict=True))
    assert coef["pair_est_good_tz"] > 0 and abs(coef["pair_est_good_tz"]) > abs(coef["pair_est_noise_tz"])
    # "shrinks it": the same design fitted without a penalty gives a larger coefficient; the
    # chosen penalty (≥ 100, the grid's smallest) at least halves the informative one
    unshrunk = ResidualModel.fit(train, ctx, use_estimates=True, alphas=(1e-9,))
    free = dict(zip(unshrunk.names, unshrunk.coef, strict=True))
    assert unshrunk.names == with_est.names
    ratio = coef["pair_est_good_tz"] / free["pair_est_good_tz"]
    assert 0.0 < ratio <= 0.5 + 1e-6, ratio
    assert np.linalg.norm(with_est.coef) < 0.5 * np.linalg.norm(unshrunk.coef) + 1e-12
    tau_est = tau_per_target(with_est.score(test), test)["t6"]
    tau_free = tau_per_target(ResidualModel.fit(train, ctx, use_estimates=False).score(test), test)["t6"]
    assert tau_est > tau_free


def test_state_round_trip_scores_identically():
    md, train, test = _fold(synthetic_kb())
    m = ResidualModel.fit(train, Context.of(md), use_estimates=True)
    again = ResidualModel.from_state(m.state())
    np.testing.assert_allclose(m.score(test), again.score(test))
    assert isinstance(pd.Series(m.state()["coef"]).sum(), float)
