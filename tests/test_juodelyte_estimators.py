"""juodelyte2024: the study's seven other estimators imported as pair features (and baselines),
and the three organ views declared twins. Needs ../shared/data/kb (skips without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from experiments.knowledge_base import kb_root, load_kb
from recommender.evaluation import evaluate_scores, summarise
from recommender.kb import import_kb
from recommender.model import baseline_scores, build_meta_dataset, fold_rows

# ../shared/data/kb/README.md: mean weighted Kendall τ vs aucs_dataset.csv over 11 targets
KNOWN_TAU_W = {"fu": 0.410, "lp": 0.440, "leep": 0.351, "nleep": 0.411, "parc": 0.297, "ncti": 0.183}
ORGANS = {"organamnist", "organcmnist", "organsmnist"}


@pytest.fixture(scope="module")
def juodelyte(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kb") / "juodelyte2024"
    import_kb("juodelyte2024", shared_path("kb", "juodelyte2024"), out)
    return out


def _estimator_summary(kb) -> dict:  # noqa: ANN001
    auc = kb.matrix()
    per = [evaluate_scores(kb.pair_feature_matrix(f), auc, f) for f in [*KNOWN_TAU_W, "sfda", "logme"]]
    return summarise(pd.concat(per, ignore_index=True)).set_index("method")


def test_estimators_reproduce_the_published_tau_w(juodelyte: Path) -> None:
    kb = load_kb(juodelyte)
    s = _estimator_summary(kb)
    for f, tau in KNOWN_TAU_W.items():
        assert s.loc[f, "n_targets"] == 11 and s.loc[f, "tau_w_n"] == 11, f
        assert round(float(s.loc[f, "tau_w"]), 3) == tau, (f, s.loc[f, "tau_w"])
    assert round(float(s.loc["logme", "tau_w"]), 3) == 0.335
    # sfda gives constant scores on two targets (τw undefined): 0.267 over the 9 it ranks, said so
    assert s.loc["sfda", "n_targets"] == 11 and s.loc["sfda", "tau_w_n"] == 9
    assert round(float(s.loc["sfda", "tau_w"]), 3) == 0.267


def test_estimators_carry_provenance_and_kind(juodelyte: Path) -> None:
    kb = load_kb(juodelyte)
    pf = kb.pair_features
    for f in [*KNOWN_TAU_W, "sfda"]:
        rows = pf[pf["feature"] == f]
        assert len(rows) >= 154 and (rows["kind"] == "transferability").all(), f
        assert rows["provenance"].str.contains(f"estimators/{f}_dataset.csv").all()
        assert rows["provenance"].str.contains("arXiv:2412.20172").all()
        assert "chestmnist" not in set(rows["target"])
    files = kb.manifest["provenance"]["files"]
    assert all(f"estimators/{f}_dataset.csv" in files for f in [*KNOWN_TAU_W, "sfda"])


def test_estimators_are_loto_baselines(juodelyte: Path) -> None:
    md = build_meta_dataset(load_kb(juodelyte))
    _, test = fold_rows(md, ["bloodmnist"])
    names = set(baseline_scores(md, "bloodmnist", test))
    assert {f"estimate:{f}" for f in [*KNOWN_TAU_W, "sfda", "logme"]} <= names


def test_organ_views_are_one_group(juodelyte: Path) -> None:
    kb = load_kb(juodelyte)
    groups = kb.groups
    assert len({groups[o] for o in ORGANS}) == 1
    assert all(groups[t] == t for t in kb.targets if t not in ORGANS)
    md = build_meta_dataset(kb)
    train, test = fold_rows(md, ["organcmnist"])
    assert not ORGANS & (set(train["target"]) | set(train["source"]))
    assert not (ORGANS - {"organcmnist"}) & set(test["source"])


def test_shipped_kb_has_the_estimators_and_twins() -> None:
    path = kb_root() / "juodelyte2024"
    if not (path / "manifest.json").exists():
        pytest.skip("artifacts/kb/juodelyte2024 is absent")
    kb = load_kb(path)
    assert len({kb.groups[o] for o in ORGANS}) == 1
    assert set(KNOWN_TAU_W) | {"sfda", "logme"} <= set(kb.pair_features["feature"])
    s = _estimator_summary(kb)
    assert np.allclose([round(float(s.loc[f, "tau_w"]), 3) for f in KNOWN_TAU_W], list(KNOWN_TAU_W.values()))
