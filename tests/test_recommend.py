"""`catscans recommend` on folders the tests make: labelled, unlabelled, DICOM-only, too few, mixed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _makers import labelled_png_folder, write_dicom
from typer.testing import CliRunner

from experiments import list_kbs, load_kb
from recommender.cli import app

runner = CliRunner()

pytestmark = pytest.mark.skipif(
    "juodelyte2024" not in list_kbs(), reason="needs the shipped juodelyte2024 KB in artifacts/"
)


def _run(*args: str):
    return runner.invoke(app, ["recommend", *args])


def _json(*args: str) -> dict:
    res = _run(*args, "--format", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_labelled_folder_ranks_every_source_with_intervals(tmp_path: Path) -> None:
    root = labelled_png_folder(tmp_path / "t", n_per_class=12)
    rec = _json("--target", str(root), "--kb", "juodelyte2024")
    ranking = rec["ranking"]
    assert rec["target_card"]["n_images"] == 24 and rec["target_card"]["n_classes"] == 2
    assert rec["labelled"] is True
    assert [r["rank"] for r in ranking] == list(range(1, len(ranking) + 1))
    assert {r["source"] for r in ranking} == set(load_kb("juodelyte2024").sources)
    for r in ranking:
        assert r["reasons"] and r["weights"]
    # `lo80 <= pred <= hi80` held by clamping and proved nothing; these can fail:
    # the predicted column orders like the ranking,
    preds = [r["predicted_auc"] for r in ranking]
    assert preds == sorted(preds, reverse=True)
    # and an interval is shown only when its coverage was measured, and is then a real one
    shown = [r for r in ranking if r.get("lo80") is not None and r.get("hi80") is not None]
    if shown:
        iv = rec.get("interval") or {}
        assert 0.0 <= float(iv["coverage"]) <= 1.0 and int(iv["n_cells"]) > 0
        assert len(shown) == len(ranking)
        assert all(0.0 <= r["lo80"] < r["hi80"] <= 1.0 for r in shown)
    assert sum(r["static_pick"] for r in ranking) == 1
    assert rec["validation"]["n_targets"] == 12


def test_same_folder_same_ranking_and_json_matches_table(tmp_path: Path) -> None:
    root = labelled_png_folder(tmp_path / "t", n_per_class=10, rgb_every=3)
    a = _json("--target", str(root), "--kb", "juodelyte2024")
    b = _json("--target", str(root), "--kb", "juodelyte2024")
    assert [r["source"] for r in a["ranking"]] == [r["source"] for r in b["ranking"]]
    assert np.allclose([r["predicted_auc"] for r in a["ranking"]], [r["predicted_auc"] for r in b["ranking"]])
    table = _run("--target", str(root), "--kb", "juodelyte2024", "--wide")  # --wide: every row, no "…"
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    # every source appears in the table, in the JSON order, with the JSON's AUC to 3 decimals
    pos = []
    for r in a["ranking"]:
        hit = [i for i, ln in enumerate(lines) if f" {r['source']} " in ln and f"{r['predicted_auc']:.3f}" in ln]
        assert hit, f"{r['source']} {r['predicted_auc']:.3f} not in table"
        pos.append(hit[0])
    assert pos == sorted(pos)
    csv = _run("--target", str(root), "--kb", "juodelyte2024", "--format", "csv")
    assert csv.exit_code == 0
    assert csv.stdout.splitlines()[0].startswith("rank,source,predicted_auc")
    assert len(csv.stdout.strip().splitlines()) == len(a["ranking"]) + 1


def test_unlabelled_folder_says_label_free(tmp_path: Path) -> None:
    root = labelled_png_folder(tmp_path / "t", n_per_class=8)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in root.rglob("*.png"):
        p.rename(flat / p.name)
    rec = _json("--target", str(flat), "--kb", "juodelyte2024", "--top", "3")
    assert rec["labelled"] is False and len(rec["ranking"]) == 3
    assert any("unlabelled" in n and "Task2Vec" in n for n in rec["notes"])
    for r in rec["ranking"]:  # Task2Vec needs labels: no distance is made up for an unlabelled folder
        assert all(v is None or v != v for k, v in (r.get("similarities") or {}).items() if "task2vec" in k)


def test_dicom_only_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, level in (("normal", 600), ("lesion", 1400)):
        for i in range(7):
            px = (rng.normal(level, 200, size=(48, 48))).clip(0, 4095)
            write_dicom(tmp_path / "d" / cls / f"im{i}.dcm", px, modality="CT", window=(1000, 2000))
    rec = _json("--target", str(tmp_path / "d"), "--kb", "juodelyte2024")
    card = rec["target_card"]
    assert card["file_formats"] == {"dicom": 14} and card["modalities"] == {"CT": 14}
    assert len(rec["ranking"]) == 15


def test_too_few_images_is_one_line_exit_2(tmp_path: Path) -> None:
    root = labelled_png_folder(tmp_path / "t", n_per_class=1)
    res = _run("--target", str(root), "--kb", "juodelyte2024")
    assert res.exit_code == 2
    assert "too few images" in res.output and "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1
    assert len(lines) <= 2  # the "reading …" note + the one error line


def test_missing_target_and_unknown_kb(tmp_path: Path) -> None:
    res = _run("--target", "/no/such/dir")
    assert res.exit_code == 2 and "no such file" in res.output and "Traceback" not in res.output
    root = labelled_png_folder(tmp_path / "t", n_per_class=6)
    res = _run("--target", str(root), "--kb", "nope")
    assert res.exit_code == 2 and "nope" in res.output and "Traceback" not in res.output


@pytest.mark.skipif("local" not in list_kbs(), reason="needs the shipped local KB (with checkpoints)")
def test_kb_with_checkpoints_shows_transferability_for_labelled_target(tmp_path: Path) -> None:
    root = labelled_png_folder(tmp_path / "t", n_per_class=12, rgb_every=4)
    rec = _json("--target", str(root), "--kb", "local")
    with_tx = [r for r in rec["ranking"] if r["transferability"]]
    # every checkpointed source, and scratch too (scored on random inits of the same architecture)
    assert len(with_tx) == len(load_kb("local").sources)
    assert "scratch" in {r["source"] for r in with_tx}
    for r in with_tx:
        assert set(r["transferability"]) == {"logme", "leep", "nleep", "nce", "hscore", "knn_acc"}
        assert all(np.isfinite(v) for v in r["transferability"].values())
    # a labelled target on a KB with checkpoints gets the method nested selection ships for estimates
    from recommender.model import load_recommender
    from recommender.recommend import _method_label

    shipped = load_recommender("local").scenario(estimates=True)
    assert shipped.scenario == "estimates" and rec["method"] == _method_label(shipped)
    table = _run("--target", str(root), "--kb", "local", "--wide")  # the estimates table: --wide
    assert table.exit_code == 0 and "transferability estimates on your images (higher" in table.stdout
    csv = _run("--target", str(root), "--kb", "local", "--format", "csv")
    assert "tx_logme" in csv.stdout.splitlines()[0]
