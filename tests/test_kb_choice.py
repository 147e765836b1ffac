"""The default KB comes from a stated rule (checkpoints for labelled folders, else modality and
resolution), never from comparing validated τw across KBs."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from experiments.knowledge_base import KnowledgeBase
from recommender import recommend as rc


def _kb(name: str, modality: str, res: int, n: int, checkpoints: bool) -> KnowledgeBase:
    targets = [f"{name}_t{i}" for i in range(n)]
    recs = pd.DataFrame({"source": "s", "target": targets, "metric": "roc_auc", "value": 0.9})
    cards = pd.DataFrame([{"name": t, "modality": modality, "resolution": res} for t in targets])
    kb = KnowledgeBase(name, recs, cards, {"targets": targets})
    kb.__class__ = type("KB", (KnowledgeBase,), {"has_checkpoints": property(lambda self: checkpoints)})
    return kb


@pytest.fixture
def kbs(monkeypatch):
    bases = {"xray_ck": _kb("xray_ck", "x-ray", 28, 6, True),
             "ct_best_tau": _kb("ct_best_tau", "ct", 224, 12, False),
             "tiny": _kb("tiny", "mri", 64, 3, False)}
    taus = {"xray_ck": 0.2, "ct_best_tau": 0.9, "tiny": 0.99}

    def fake_model(name):  # noqa: ANN001, ANN202
        n = len(bases[name].targets)
        return SimpleNamespace(validated={"n_targets": n, "mean": {"tau_w": {"mean": taus[name]}}})

    monkeypatch.setattr(rc, "list_kbs", lambda: list(bases))
    monkeypatch.setattr(rc, "load_kb", lambda n: bases[n])
    monkeypatch.setattr("recommender.model.load_recommender", fake_model)
    return bases


def test_labelled_folder_goes_to_the_kb_with_checkpoints(kbs):
    name, why = rc.choose_kb(None, {"modality": "CT", "resolution": 224}, labelled=True)
    assert name == "xray_ck" and "checkpoints" in why and "rule:" in why


def test_unlabelled_folder_goes_by_modality_then_resolution(kbs):
    name, why = rc.choose_kb(None, {"modality": "CR", "resolution": 512}, labelled=False)
    assert name == "xray_ck" and "share your folder's modality (x-ray)" in why
    name, why = rc.choose_kb(None, {"modality": "", "resolution": 200}, labelled=False)
    assert name == "ct_best_tau" and "resolution" in why


def test_never_by_tau_and_too_small_kbs_are_skipped(kbs):
    name, why = rc.choose_kb(None, {"modality": "MR", "resolution": 64}, labelled=False)
    assert name != "tiny" and "tiny (validated on 3 targets)" in why  # τw 0.99 does not matter
    assert "τw" not in why
    assert rc.choose_kb("tiny")[0] == "tiny"
