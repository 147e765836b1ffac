"""`catscans kb list / show / import / attach` through the real typer app (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path
from typer.testing import CliRunner

from experiments.knowledge_base import kb_root
from recommender.cli import app

runner = CliRunner()


def _needs_shipped(name: str) -> None:
    if not (kb_root() / name / "manifest.json").exists():
        pytest.skip(f"shipped KB {name} is absent")


def test_kb_list_json_has_both_shipped_kbs() -> None:
    _needs_shipped("cats-scans2021")
    _needs_shipped("juodelyte2024")
    res = runner.invoke(app, ["kb", "list", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["cats-scans2021"]["n_cells"] == 24 and rows["cats-scans2021"]["architecture"] == "resnet50"
    assert rows["juodelyte2024"]["n_cells"] == 168 and rows["juodelyte2024"]["n_sources"] == 15
    assert "arXiv:2412.20172" in rows["juodelyte2024"]["provenance"]


def test_kb_list_table_and_empty_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(tmp_path))
    res = runner.invoke(app, ["kb", "list"])
    assert res.exit_code == 0 and "no knowledge bases" in res.stdout


def test_kb_show_table_json_csv_and_plot(tmp_path: Path) -> None:
    _needs_shipped("cats-scans2021")
    res = runner.invoke(app, ["kb", "show", "cats-scans2021"])
    assert res.exit_code == 0, res.output
    assert "0.9463 ± 0.0042" in res.stdout  # imagenet -> isic, sd over 5 folds
    assert "n = 5 folds in every cell" in " ".join(res.stdout.split())
    res = runner.invoke(app, ["kb", "show", "cats-scans2021", "-f", "json"])
    cells = json.loads(res.stdout)["cells"]
    assert len(cells) == 27 and sum(c["mean"] is not None for c in cells) == 24
    res = runner.invoke(app, ["kb", "show", "cats-scans2021", "--metric", "transfer_score", "-f", "csv"])
    assert res.exit_code == 0 and res.stdout.splitlines()[0] == "source,target,mean,sd,n"
    png = tmp_path / "m.png"
    res = runner.invoke(app, ["kb", "show", "cats-scans2021", "--plot", str(png), "-f", "csv"])
    assert res.exit_code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kb_show_wide_matrix_is_not_folded() -> None:
    _needs_shipped("juodelyte2024")
    res = runner.invoke(app, ["kb", "show", "juodelyte2024", "--wide"])  # default: parts that fit 80
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith("imagenet "))
    assert "0.998" in line and "0.845" in line  # bloodmnist and tissuemnist cells on one line


@pytest.mark.parametrize("args", [["kb", "show", "no-such-kb"],
                                  ["kb", "show", "cats-scans2021", "--metric", "bogus"],
                                  ["kb", "import", "no-such-study", "."],
                                  ["kb", "import", "juodelyte2024", "/definitely/absent"]])
def test_bad_input_is_one_line_exit_2(args: list[str]) -> None:
    if "cats-scans2021" in args:
        _needs_shipped("cats-scans2021")
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_kb_import_cli_writes_out(tmp_path: Path) -> None:
    src = shared_path("kb", "cats_scans2021")
    res = runner.invoke(app, ["kb", "import", "cats-scans2021", str(src), "--out", str(tmp_path / "c"),
                              "-f", "json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_cells"] == 24 and (tmp_path / "c" / "records.csv").exists()
    assert "-0.11" in summary["checks"]["task2vec_vs_gain"]


def test_kb_help_lists_every_command() -> None:
    res = runner.invoke(app, ["kb", "--help"])
    assert res.exit_code == 0, res.output
    for cmd in ("list", "show", "import", "score", "attach"):
        assert f" {cmd} " in res.stdout


def test_kb_attach_only_on_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from imagesets import artifacts_dir

    _needs_shipped("cats-scans2021")
    for part in ("profiles", "probe", "kb/cats-scans2021"):
        shutil.copytree(artifacts_dir() / part, tmp_path / part)
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(tmp_path))
    res = runner.invoke(app, ["kb", "attach", "--attach-only", "--kb", "cats-scans2021", "-f", "json"])
    assert res.exit_code == 0, res.output
    # 6 profiled pairs x 10 similarities, + the 3 Task2Vec distances where the targets' images are
    # there to embed their training rows (../shared/data): a target's Task2Vec never uses its test rows
    from imagesets import default_data_dir

    n_sim = 13 if default_data_dir().is_dir() else 10
    assert json.loads(res.stdout) == [{"kb": "cats-scans2021", "n_datasets": 9, "n_with_image_features": 3,
                                       "n_similarity_rows": 6 * n_sim}]


def test_measured_kb_names_its_protocol_and_commit() -> None:
    """A KB measured here by build-matrix says so in `kb list` (not a blank provenance)."""
    from experiments.knowledge_base import load_kb
    from recommender.kb.summary import kb_summary

    kb = load_kb("local")
    commit = kb.manifest["provenance"]["commit"][:7]
    assert kb_summary(kb)["provenance"] == f"build-matrix --protocol cpu-kb, catscans@{commit}"
    assert kb_summary(load_kb("juodelyte2024"))["provenance"].startswith("arXiv:2412.20172")
