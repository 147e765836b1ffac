"""Noise ceiling: split-half τw over seeds, Spearman–Brown corrected; honest about KBs without seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from _synthetic_kb import synthetic_kb

from experiments.knowledge_base import KnowledgeBase
from recommender.evaluation.ceiling import noise_ceiling, split_half_tau


def test_reliable_kb_has_a_high_ceiling_and_a_noisy_one_a_low_one():
    quiet = noise_ceiling(synthetic_kb(seeds=10, noise=0.001), n_splits=50)
    noisy = noise_ceiling(synthetic_kb(seeds=10, noise=0.5), n_splits=50)
    assert quiet["status"] == noisy["status"] == "ok" and quiet["n_targets"] == 8
    assert quiet["ceiling"] > 0.9
    assert abs(noisy["ceiling"]) < 0.4
    assert "noise ceiling ≈" in quiet["text"] and "8 targets" in quiet["text"] and "10 seeds" in quiet["text"]


def test_spearman_brown_correction_of_the_half_figure():
    rng = np.random.default_rng(0)
    cells = pd.DataFrame([{"source": f"s{i}", "replicate": str(k), "value": i * 0.01 + rng.normal(0, 0.01)}
                          for i in range(8) for k in range(6)])
    r = split_half_tau(cells, n_splits=40)
    assert r["n_replicates"] == 6 and r["n_sources"] == 8
    assert r["tau_w"] == 2 * r["half_tau_w"] / (1 + r["half_tau_w"])
    assert r["tau_w"] > r["half_tau_w"] > 0


def test_kb_without_seed_records_says_ceiling_unknown():
    kb = synthetic_kb(seeds=1)
    kb.records["seed"] = -1
    out = noise_ceiling(kb)
    assert out["status"] == "none" and out["text"] == "no per-seed records: ceiling unknown"


def test_hyper_parameter_runs_are_not_called_a_noise_ceiling():
    recs = pd.DataFrame([{"source": s, "target": "t", "metric": m, "value": 0.9, "fold": -1, "seed": -1}
                         for s in ("a", "b", "c") for m in ("roc_auc", "roc_auc_run", "roc_auc_run")])
    kb = KnowledgeBase("hp", recs, pd.DataFrame(), {"metric": "roc_auc", "run_metric": "roc_auc_run"})
    out = noise_ceiling(kb)
    assert out["status"] == "hyperparameter_runs" and "not seeds" in out["text"]
