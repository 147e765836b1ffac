"""Meta-dataset rows, fold features without self-leak, and new-target rows (synthetic KB)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.knowledge_base import KnowledgeBase
from recommender.model import (
    build_meta_dataset,
    fold_rows,
    held_out_with_twins,
    new_target_rows,
    rows_for_new_target,
    twins_map,
)

TARGETS = ["t_a", "t_b", "t_c", "t_d", "t_e", "t_f"]
EXTRA_SOURCES = ["bignat", "bigmed"]


def make_synthetic_kb(seed: int = 0, twins: bool = True, scale: dict | None = None,
                      n_targets: int = len(TARGETS)) -> KnowledgeBase:
    """6 targets × 8 sources (the targets + 2 big sources), AUC = target level + source quality + noise.

    ``scale`` multiplies chosen (source, target) AUC offsets, to perturb cells in leakage tests.
    """
    rng = np.random.default_rng(seed)
    targets = TARGETS[:n_targets]
    sources = EXTRA_SOURCES + TARGETS
    quality = dict(zip(sources, rng.normal(0, 0.02, len(sources)), strict=True))
    quality["bignat"] = 0.03
    level = dict(zip(TARGETS, rng.uniform(0.7, 0.95, len(TARGETS)), strict=True))
    recs, pf = [], []
    for t in targets:
        for s in sources:
            if s == t:
                continue
            v = level[t] + quality[s] + rng.normal(0, 0.01)
            v *= (scale or {}).get((s, t), 1.0)
            recs.append({"source": s, "target": t, "metric": "roc_auc", "value": v, "fold": -1, "seed": -1})
            pf.append({"source": s, "target": t, "feature": "sim_cos", "value": quality[s] + rng.normal(0, 0.01),
                       "kind": "similarity", "provenance": "synthetic"})
            pf.append({"source": s, "target": t, "feature": "logme", "value": rng.normal(),
                       "kind": "transferability", "provenance": "synthetic"})
    cards = [{"name": s, "role": "both", "domain": "natural" if s == "bignat" else "medical",
              "modality": "x-ray" if s in ("t_a", "t_b") else "ct", "n_images": 10 ** (3 + i % 3),
              "n_classes": 2 + i, "channels": 1 + 2 * (i % 2), "resolution": 28, "task": "multi-class"}
             for i, s in enumerate(sources)]
    cards[0]["n_images"] = 10**6
    meta = pd.DataFrame({"dataset": sources, "stats.mean": rng.normal(size=len(sources)),
                         "stats.entropy": [np.nan] + list(rng.normal(size=len(sources) - 1))})
    manifest = {"metric": "roc_auc", "sources": sources, "targets": targets}
    if twins:
        manifest["twins"] = [["t_a", "t_b"]]
    return KnowledgeBase("synthetic", pd.DataFrame(recs), pd.DataFrame(cards), manifest,
                         meta_features=meta, pair_features=pd.DataFrame(pf))


def test_rows_one_per_measured_cell_with_prefixed_features():
    md = build_meta_dataset(make_synthetic_kb())
    assert len(md.rows) == len(TARGETS) * (len(TARGETS) + len(EXTRA_SOURCES) - 1)
    assert not md.rows.duplicated(["source", "target"]).any()
    feats = md.static_feature_columns()
    assert all(c.startswith(("src_", "tgt_", "pair_")) for c in feats)
    assert {"pair_sim_cos", "pair_logme", "src_stats.mean", "pair_absdiff_stats.mean"} <= set(feats)
    # bignat has no entropy meta-feature: NaN, never invented
    assert md.rows.loc[md.rows["source"] == "bignat", "src_stats.entropy"].isna().all()
    assert md.pair_directions == {"logme": 1, "sim_cos": 1}


def test_twins_are_symmetric_and_dropped_with_the_target():
    kb = make_synthetic_kb()
    tw = twins_map(kb)
    assert tw == {"t_a": {"t_b"}, "t_b": {"t_a"}}
    assert held_out_with_twins(["t_a"], tw) == {"t_a", "t_b"}
    md = build_meta_dataset(kb)
    train, test = fold_rows(md, ["t_a"])
    for name in ("t_a", "t_b"):
        assert name not in set(train["target"]) and name not in set(train["source"])
    assert set(test["target"]) == {"t_a"} and "t_b" not in set(test["source"])


def test_static_prior_of_a_training_row_ignores_its_own_cell():
    """Changing AUC(s, u) for a training row must not change that row's own prior (no self-leak)."""
    base = build_meta_dataset(make_synthetic_kb(twins=False))
    pert = build_meta_dataset(make_synthetic_kb(twins=False, scale={("bignat", "t_c"): 0.5}))
    tr0, _ = fold_rows(base, ["t_f"])
    tr1, _ = fold_rows(pert, ["t_f"])
    key = (tr0["source"] == "bignat") & (tr0["target"] == "t_c")
    assert tr0.loc[key, "fold_static_prior"].item() == pytest.approx(tr1.loc[key, "fold_static_prior"].item())
    # ... while other targets' rows for that source do see the change
    other = (tr0["source"] == "bignat") & (tr0["target"] == "t_d")
    assert tr0.loc[other, "fold_static_prior"].item() != pytest.approx(tr1.loc[other, "fold_static_prior"].item())


def test_new_target_rows_have_the_training_columns():
    kb = make_synthetic_kb()
    md = build_meta_dataset(kb)
    train, _ = fold_rows(md, ["t_c"])
    card = {"name": "user", "domain": "medical", "modality": "ct", "n_images": 500, "n_classes": 3,
            "channels": 1, "resolution": 64, "task": "multi-class"}
    pairs = pd.DataFrame({"source": ["bignat", "t_a"], "feature": ["sim_cos", "logme"], "value": [0.5, 1.0]})
    rows = new_target_rows(md, card, pd.Series({"stats.mean": 0.1}), pairs)
    assert set(train.columns) - {"label_z"} == set(rows.columns)
    assert list(rows["source"]) == md.sources
    assert rows.loc[rows["source"] == "bignat", "pair_sim_cos"].item() == 0.5
    assert rows.loc[rows["source"] == "t_b", "pair_sim_cos"].isna().all()
    assert rows["tgt_stats.entropy"].isna().all()  # missing target meta-feature stays NaN
    assert rows["fold_static_prior"].notna().all()
    again = rows_for_new_target(kb, card, pd.Series({"stats.mean": 0.1}), pairs)
    pd.testing.assert_frame_equal(rows.drop(columns="target"), again.drop(columns="target"))
