"""Agreement with the published study: per shared target and pooled, with exact small-n p-values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.agreement import rank_agreement, spearman
from experiments.knowledge_base import KnowledgeBase, save_kb
from recommender.evaluation.reference import agreement_sentences, study_agreement

SHARED = ["pneumoniamnist", "breastmnist", "retinamnist", "ham10000_derm", "pbc_blood"]
REF_NAMES = {"ham10000_derm": "dermamnist", "pbc_blood": "bloodmnist"}


def _kb(name: str, values: dict[tuple[str, str], float], names: list[str]) -> KnowledgeBase:
    recs = pd.DataFrame([{"source": s, "target": t, "metric": "roc_auc", "value": v, "fold": -1, "seed": -1}
                         for (s, t), v in values.items()])
    return KnowledgeBase(name, recs, pd.DataFrame({"name": names}), {"metric": "roc_auc"})


def test_small_n_p_is_exact_not_the_t_approximation():
    rho, p = spearman(np.arange(4.0), -np.arange(4.0))
    assert rho == -1.0 and p == pytest.approx(1 / 12)  # scipy's t approximation says ≈ 0


def test_local_like_kb_against_a_reference(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    quality = {s: float(q) for s, q in zip(SHARED, rng.normal(0, 0.02, 5), strict=True)}
    ours = {(s, t): 0.8 + quality[s] for t in SHARED for s in SHARED if s != t}
    ref = {(REF_NAMES.get(s, s), REF_NAMES.get(t, t)): 0.9 + quality[s] for (s, t) in ours}
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(tmp_path))
    save_kb(_kb("juodelyte2024", ref, [REF_NAMES.get(s, s) for s in SHARED]), tmp_path / "kb" / "juodelyte2024")
    mine = _kb("mine", ours, SHARED)
    agr = study_agreement(mine)
    assert agr["pooled"]["n_targets"] == 5 and agr["pooled"]["n_pairs"] == 20
    assert agr["pooled"]["spearman_rho"] == pytest.approx(1.0)
    assert all(r["n_sources"] == 4 and r["spearman_rho"] == pytest.approx(1.0) for r in agr["per_target"])
    text = agreement_sentences(agr)
    assert "pooled Spearman ρ +1.00" in text[0] and "n = 20 (source, target) pairs in 5 targets" in text[0]
    assert study_agreement(_kb("juodelyte2024", ref, [])) is None  # the study itself: nothing to compare
    table, _ = rank_agreement(mine.matrix(), _kb("r", ref, []).matrix())
    assert set(table["reference_target"]) == {"pneumoniamnist", "breastmnist", "retinamnist", "dermamnist",
                                              "bloodmnist"}
