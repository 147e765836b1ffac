"""The seed study's Task2Vec finding re-tested: Task2Vec pair features reach the correlation
report, and ``task2vec_sentences`` words the comparison with r −0.11 (p 0.61, 24 pairs) right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_meta_dataset import make_synthetic_kb

from experiments.knowledge_base import SCRATCH
from recommender.evaluation.correlation import (
    COLUMNS,
    correlate,
    correlation_report,
    fisher_z_p,
    task2vec_sentences,
)


def _kb_with_task2vec(slope: float, seed: int = 0):
    """The synthetic KB plus the three Task2Vec distances: ``slope`` * AUC + noise."""
    kb = make_synthetic_kb(seed)
    rng = np.random.default_rng(seed)
    rows = []
    for r in kb.records.itertuples(index=False):
        for f in ("dist_task2vec_cos", "dist_task2vec_ncos", "dist_task2vec_asym"):
            rows.append({"source": r.source, "target": r.target, "feature": f,
                         "value": slope * r.value + rng.normal(0, 0.05), "kind": "similarity",
                         "provenance": "synthetic"})
    kb.pair_features = pd.concat([kb.pair_features, pd.DataFrame(rows)], ignore_index=True)
    return kb


def _row(feature: str, x: np.ndarray, y: np.ndarray) -> dict:
    return {"feature": feature, "kind": "similarity", "outcome": "auc"} | correlate(x, y)


def test_task2vec_columns_reach_the_report_and_sentences_detect_a_planted_relation():
    corr = correlation_report(_kb_with_task2vec(slope=-5.0))
    t2v = corr[corr["feature"].str.startswith("dist_task2vec")]
    assert set(t2v["feature"]) == {"dist_task2vec_cos", "dist_task2vec_ncos", "dist_task2vec_asym"}
    assert (t2v["n"] == len(make_synthetic_kb().records)).all() and (t2v["pearson_r"] < -0.5).all()
    sent = task2vec_sentences(corr)
    assert len(sent) == 3 and all("Disagree: ours is detectably negative" in s for s in sent)
    assert all("closer in Task2Vec ⇒ better transfer" in s and "r = −0.11, p = 0.61, 24 pairs" in s for s in sent)
    assert all("Ours vs the seed's r: different (Fisher z test, p < 0.001)" in s for s in sent)
    n = int(t2v["n"].iloc[0])
    assert f"n = {n} pairs" in sent[0] and sent[0].startswith("dist_task2vec_cos (")


def test_sentences_agree_when_ours_is_indistinguishable_from_zero():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=60), rng.normal(size=60)
    res = correlate(x, y)
    assert res["pearson_p"] > 0.05  # the premise (fixed seed)
    corr = pd.DataFrame([_row("dist_task2vec_ncos", x, y)], columns=COLUMNS)
    (s,) = task2vec_sentences(corr)
    assert "Agree: both indistinguishable from 0" in s and "Disagree" not in s
    assert f"{res['pearson_r']:+.3f}".replace("-", "−") in s and "n = 60 pairs" in s
    z_p = fisher_z_p(res["pearson_r"], 60, -0.11, 24)
    assert 0.05 < z_p < 1 and f"not detectably different (Fisher z test, p = {z_p:.3f})" in s


def test_sentences_positive_relation_and_no_task2vec_rows():
    rng = np.random.default_rng(2)
    x = rng.normal(size=80)
    corr = pd.DataFrame([_row("dist_task2vec_asym", x, x + rng.normal(0, 0.3, 80)),
                         _row("dist_frechet", x, rng.normal(size=80))], columns=COLUMNS)
    (s,) = task2vec_sentences(corr)
    assert "detectably positive (closer in Task2Vec ⇒ worse transfer)" in s
    assert task2vec_sentences(corr[corr["feature"] == "dist_frechet"]) == []


def test_fisher_z_matches_the_textbook_formula():
    z = (np.arctanh(0.3) - np.arctanh(-0.11)) / np.sqrt(1 / 97 + 1 / 21)
    from scipy.stats import norm

    assert fisher_z_p(0.3, 100, -0.11, 24) == pytest.approx(2 * norm.sf(z), rel=1e-12)
    assert fisher_z_p(-0.11, 24, -0.11, 24) == 1.0 and np.isnan(fisher_z_p(0.2, 3, 0.1, 24))


def test_gain_over_scratch_removes_each_targets_level():
    """A distance that tracks which targets are easy (AUC level) but not which source helps:
    pooled AUC correlates with it, the gain over scratch on the same target does not; and a
    distance that tracks the gain is seen by the gain outcome, scratch's own rows left out."""
    kb = make_synthetic_kb(0)
    m = kb.matrix()
    level = m.mean(axis=0)
    scratch = [{"source": SCRATCH, "target": t, "metric": "roc_auc", "value": level[t] - 0.05, "fold": -1,
                "seed": -1} for t in m.columns]
    kb.records = pd.concat([kb.records, pd.DataFrame(scratch)], ignore_index=True)
    kb.manifest = {**kb.manifest, "sources": [*kb.manifest["sources"], SCRATCH]}
    kb.datasets = pd.concat([kb.datasets, kb.datasets.iloc[[0]].assign(name=SCRATCH)], ignore_index=True)
    rng = np.random.default_rng(3)
    rows = []
    for r in kb.records[kb.records["source"] != SCRATCH].itertuples(index=False):
        gain = r.value - (level[r.target] - 0.05)
        rows += [{"source": r.source, "target": r.target, "feature": "dist_task2vec_cos",
                  "value": level[r.target] * 10 + rng.normal(0, 0.01), "kind": "similarity", "provenance": "t"},
                 {"source": r.source, "target": r.target, "feature": "dist_task2vec_ncos",
                  "value": -gain + rng.normal(0, 0.002), "kind": "similarity", "provenance": "t"}]
    rows += [{"source": SCRATCH, "target": t, "feature": "dist_task2vec_ncos", "value": 5.0, "kind": "similarity",
              "provenance": "t"} for t in m.columns]  # as scored estimators have: not a transfer pair
    kb.pair_features = pd.concat([kb.pair_features, pd.DataFrame(rows)], ignore_index=True)
    rep = correlation_report(kb).set_index(["feature", "outcome"])
    n_cells = int(m.notna().sum().sum())
    lvl, gn = rep.loc[("dist_task2vec_cos", "auc")], rep.loc[("dist_task2vec_cos", "gain_vs_scratch")]
    assert lvl["pearson_r"] > 0.8 and lvl["pearson_p"] < 0.001 and abs(gn["pearson_r"]) < 0.5
    g = rep.loc[("dist_task2vec_ncos", "gain_vs_scratch")]
    assert g["n"] == n_cells and g["pearson_r"] < -0.9  # scratch's own rows are not pairs
    sent = task2vec_sentences(rep.reset_index())
    assert any("AUC gain over scratch on the same target" in s for s in sent)
