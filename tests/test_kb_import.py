"""KB importers: quirks of the released files, counts, known cells, reproducibility of artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from scipy.stats import pearsonr, weightedtau

from experiments.knowledge_base import kb_root, load_kb
from recommender.kb import KBImportError, import_kb, read_study_csv


# -- quirks on tiny made-up files (no shared data needed) ---------------------------------
def test_bom_semicolon_crlf(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_bytes("\ufefftarget;source;distance\r\nchest;isic;2\r\nisic;chest;3\r\n".encode())
    df = read_study_csv(p)
    assert list(df.columns) == ["target", "source", "distance"]  # no BOM in the first name
    assert df["source"].tolist() == ["isic", "chest"]
    assert df["distance"].tolist() == [2, 3]


def test_unnamed_index_column_dropped_but_real_first_column_kept(tmp_path: Path) -> None:
    p = tmp_path / "w.csv"
    p.write_text(",source,a,b\n0,imagenet,0.5,\n1,radimagenet,0.25,0.75\n")
    df = read_study_csv(p)
    assert list(df.columns) == ["source", "a", "b"]
    assert np.isnan(df.loc[0, "b"])
    q = tmp_path / "x.csv"  # an unnamed first column that is NOT 0..n-1 is data: keep it
    q.write_text(",source\n7,imagenet\n3,radimagenet\n")
    assert read_study_csv(q).shape[1] == 2


def test_missing_file_and_empty_file_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(KBImportError, match="missing file"):
        read_study_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(KBImportError, match="empty"):
        read_study_csv(tmp_path / "empty.csv")


def test_unknown_study_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(KBImportError, match="unknown study"):
        import_kb("imagenet2030", tmp_path)
    with pytest.raises(KBImportError, match="no such folder"):
        import_kb("juodelyte2024", tmp_path / "absent")


# -- real imports from ../shared (skipped when absent) ------------------------------------
@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("kb")
    cats = shared_path("kb", "cats_scans2021")
    juod = shared_path("kb", "juodelyte2024")
    import_kb("cats-scans2021", cats, out / "cats-scans2021")
    import_kb("juodelyte2024", juod, out / "juodelyte2024")
    return {"cats-scans2021": out / "cats-scans2021", "juodelyte2024": out / "juodelyte2024"}


def test_cats_scans_counts_cells_and_paper_correlations(imported: dict[str, Path]) -> None:
    kb = load_kb(imported["cats-scans2021"])
    m = kb.matrix()
    assert int(m.notna().sum().sum()) == 24
    assert kb.manifest["self_pairs"] is True and kb.manifest["metric"] == "roc_auc"
    assert m.loc["imagenet", "isic"] == pytest.approx(0.946338075640275, abs=1e-12)
    assert np.isnan(m.loc["kimia", "chest"]) and np.isnan(m.loc["pcam-small", "pcam-middle"])
    assert kb.counts().to_numpy().max() == 5
    auc = kb.records[kb.records["metric"] == "roc_auc"]
    assert sorted(auc["fold"].unique()) == [1, 2, 3, 4, 5] and len(auc) == 120
    assert len(kb.records[kb.records["metric"] == "transfer_score"]) == 120
    # the paper's figures over 24 pairs, recomputed from the KB (not from the manifest text)
    gain = kb.matrix(metric="transfer_score").stack().dropna()
    t2v = kb.pair_feature_matrix("task2vec_distance").stack().reindex(gain.index)
    exp = kb.pair_feature_matrix("expert_distance").stack().reindex(gain.index)
    assert t2v.max() == pytest.approx(1.0)
    r, p = pearsonr(t2v, gain)
    assert (round(r, 2), round(p, 2)) == (-0.11, 0.61)
    assert round(pearsonr(exp, gain)[0], 2) == 0.24
    assert kb.card("isic")["modality"] == "dermoscopy" and kb.card("chest")["n_images"] == 5856


def test_juodelyte_matrix_equals_published_table(imported: dict[str, Path]) -> None:
    kb = load_kb(imported["juodelyte2024"])
    published = pd.read_csv(shared_path("kb", "juodelyte2024", "aucs_dataset.csv"), index_col=0)
    published = published.set_index("source")
    m = kb.matrix()
    assert int(m.notna().sum().sum()) == 168 and m.shape == (15, 12)
    assert m.loc["imagenet", "bloodmnist"] == 0.9984533762023934
    pd.testing.assert_frame_equal(m.reindex(index=published.index, columns=published.columns),
                                  published, check_names=False, check_exact=True)
    assert kb.manifest["self_pairs"] is False and kb.manifest["architecture"] == "resnet18"
    assert int(np.isfinite(np.diag(m.loc[kb.targets, kb.targets].to_numpy())).sum()) == 0


def test_juodelyte_runs_cards_and_logme(imported: dict[str, Path]) -> None:
    kb = load_kb(imported["juodelyte2024"])
    n = kb.counts(metric="roc_auc_run")
    assert int((n > 0).sum().sum()) == 168 and 117 <= n[n > 0].min().min() and n.max().max() == 120
    assert kb.spread(metric="roc_auc_run").notna().sum().sum() == 168
    assert kb.spread().notna().sum().sum() == 0  # published cells are single values
    assert kb.card("dermamnist")["image_set"] == "ham10000_derm"
    assert kb.card("bloodmnist")["image_set"] == "pbc_blood"
    assert kb.card("octmnist")["modality"] == "oct" and kb.card("octmnist")["resolution"] == 28
    assert kb.card("radimagenet")["n_classes"] == 165 and len(kb.datasets) == 15
    # kb/README.md: mean weighted Kendall tau(LogME, AUC) over the 11 scored targets is 0.335
    auc, logme = kb.matrix(), kb.pair_feature_matrix("logme")
    taus = []
    for t in logme.columns:
        a = auc[t].dropna()
        taus.append(weightedtau(logme[t].reindex(a.index).to_numpy(), a.to_numpy())[0])
    assert len(taus) == 11 and round(float(np.mean(taus)), 3) == 0.335


@pytest.mark.parametrize("name", ["cats-scans2021", "juodelyte2024"])
def test_shipped_artifacts_equal_a_fresh_import(imported: dict[str, Path], name: str) -> None:
    """The study's part of the shipped KB is what the importer writes today (features that
    other commands computed onto the KB later are left out of the comparison)."""
    shipped = kb_root() / name
    if not (shipped / "manifest.json").exists():
        pytest.skip(f"shipped KB {name} is absent")
    for f in ("records.csv", "datasets.csv"):
        assert (shipped / f).read_bytes() == (imported[name] / f).read_bytes(), f"{name}/{f} differs"
    fresh, ship = load_kb(imported[name]), load_kb(shipped)
    pf = ship.pair_features[ship.pair_features["feature"].isin(set(fresh.pair_features["feature"]))]
    pd.testing.assert_frame_equal(pf.reset_index(drop=True), fresh.pair_features, check_exact=True)
    for key in ("metric", "architecture", "self_pairs", "sources", "targets", "provenance", "checks",
                "n_records", "n_cells"):
        assert ship.manifest.get(key) == fresh.manifest.get(key), key


def test_reimport_keeps_computed_features(imported: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "c"
    shutil.copytree(imported["cats-scans2021"], dest)
    pd.DataFrame({"dataset": ["isic"], "mf_x": [1.5]}).to_csv(dest / "meta_features.csv", index=False)
    pf = pd.read_csv(dest / "pair_features.csv")
    extra = pd.DataFrame([{"source": "isic", "target": "chest", "feature": "fid", "value": 3.0,
                           "kind": "similarity", "provenance": "test"}])
    pd.concat([pf, extra]).to_csv(dest / "pair_features.csv", index=False)
    kb = import_kb("cats-scans2021", shared_path("kb", "cats_scans2021"), dest)
    again = load_kb(dest)
    assert again.meta_features["mf_x"].tolist() == [1.5] and len(kb.meta_features) == 1
    assert (again.pair_features["feature"] == "fid").sum() == 1
    assert (again.pair_features["feature"] == "task2vec_distance").sum() == 24  # not duplicated


def test_count_mismatch_is_reported(tmp_path: Path) -> None:
    src = shared_path("kb", "cats_scans2021")
    bad = tmp_path / "cats"
    shutil.copytree(src, bad)
    lines = (bad / "auc_folds_means_std.csv").read_text().splitlines()
    (bad / "auc_folds_means_std.csv").write_text("\n".join(lines[:-5]) + "\n")  # drop 5 rows
    with pytest.raises(KBImportError, match="published study has 24"):
        import_kb("cats-scans2021", bad, tmp_path / "out")
