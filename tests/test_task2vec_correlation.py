"""The seed study's Task2Vec finding re-tested: Task2Vec pair features reach the correlation
report, and ``task2vec_sentences`` words the comparison with r −0.11 (p 0.61, 24 pairs) right."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_meta_dataset import make_synthetic_kb

from recommender.evaluation.correlation import (
    COLUMNS,
    correlate,
    correlation_report,
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
    assert all("lies outside our 95% CI" in s for s in sent)
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
    assert ("lies inside" in s) == (res["pearson_lo"] <= -0.11 <= res["pearson_hi"])


def test_sentences_positive_relation_and_no_task2vec_rows():
    rng = np.random.default_rng(2)
    x = rng.normal(size=80)
    corr = pd.DataFrame([_row("dist_task2vec_asym", x, x + rng.normal(0, 0.3, 80)),
                         _row("dist_frechet", x, rng.normal(size=80))], columns=COLUMNS)
    (s,) = task2vec_sentences(corr)
    assert "detectably positive (closer in Task2Vec ⇒ worse transfer)" in s
    assert task2vec_sentences(corr[corr["feature"] == "dist_frechet"]) == []
