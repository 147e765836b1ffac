"""What a user sees at 80 columns: recommend's compact table and --wide, kb list/show, every
--help, shell completion, wall time, early KB-name checks, build-matrix --dry-run counts,
p-values, mixed-folder warnings, multi-table CSV and the README's Python API snippet.

Renderer tests feed the real CLI a made-up Recommendation (fast, and independent of which
models are shipped); end-to-end tests run the real `recommend` and skip only when the shipped
KB or its model file is absent (a shipped model that does not load fails them).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _makers import labelled_png_folder, write_dicom
from conftest import REPO
from rich.cells import cell_len
from typer.testing import CliRunner

from experiments import list_kbs, load_kb
from experiments.knowledge_base import KnowledgeBase, save_kb
from recommender.cli import app
from recommender.recommend import Recommendation

runner = CliRunner()
ENV80 = {"COLUMNS": "80"}
ESTIMATORS = ("LogME", "N-LEEP", "LEEP", "NCE", "H-score", "k-NN", "logme", "nleep", "leep", "hscore")


def run80(*args: str, **kw):  # noqa: ANN201
    return runner.invoke(app, list(args), env=ENV80, **kw)


def assert_fits(text: str, width: int = 80) -> None:
    long = [ln for ln in text.splitlines() if cell_len(ln) > width]
    assert not long, f"{len(long)} line(s) wider than {width}: {long[0]!r}"


from recommender.cli._recommend_view import compact_rows  # noqa: E402


def source_rows(text: str, sources: list[str]) -> list[int]:
    """Line index of each source name standing whole on a line (never cut or folded)."""
    lines = text.splitlines()
    pos = []
    for s in sources:
        hit = [i for i, ln in enumerate(lines) if re.search(rf"(^|\s){re.escape(s)}(\s|$)", ln)]
        assert hit, f"source {s!r} is not whole on any line"
        pos.append(hit[0])
    return pos


# -- a made-up Recommendation through the real CLI -------------------------------------------
LONG = "a_rather_long_source_name_of_forty_chars"


@dataclasses.dataclass
class _WithVerified(Recommendation):
    """A Recommendation with a top-level field this CLI has never heard of."""

    verified: dict | None = None


def fake_rec(method: str = "static ranking", interval: dict | None = None, n: int = 15,
             extra: dict | None = None, cls: type = Recommendation, **top) -> Recommendation:  # noqa: ANN003
    names = [LONG, "imagenet", *[f"source_{i:02d}" for i in range(n - 2)]]
    ranking = []
    for i, s in enumerate(names):
        r = {"rank": i + 1, "source": s, "predicted_auc": 0.9 - 0.01 * i, "lo80": 0.8 - 0.01 * i,
             "hi80": 0.95 - 0.01 * i, "vs_static_pick": None if i == 0 else -0.01 * i, "static_pick": i == 0,
             "evidence": "KB-record", "reasons": "its AUC, standardised per KB target and averaged over "
                                                 "the KB's targets, is +1.00 sd (static ranking: higher first)",
             "weights": "somewhere", "transferability": {},
             "weights_card": {"spec": s, "kind": "kb", "name": s, "arch": "resnet-mini", "input_size": 28,
                              "in_chans": 3, "n_params": 78042, "weights": f"/abs/path/{s}.safetensors",
                              "snippet": ["line one", "line two", "line three"]}}
        r |= extra or {}
        ranking.append(r)
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = dict(target="demo", target_card={"n_images": 80, "n_classes": 2, "class_counts": {"a": 40, "b": 40},
                                          "channels": 3, "file_formats": {"png": 80}, "modalities": {},
                                          "n_skipped": 0, "skipped_reasons": {}},
              labelled=True, kb="fakekb", kb_choice="chosen with --kb", method=method,
              validation={"n_targets": 12, "mean": {"tau_w": {"mean": 0.5, "lo": 0.4, "hi": 0.6}}},
              ranking=ranking, notes=["a note that is long enough to need wrapping at eighty columns, "
                                      "because notes are sentences and sentences run on"],
              interval=interval, timings_s={"read": 0.1, "meta_features": 0.1, "total": 0.2})
    kw |= top
    return cls(**{k: v for k, v in kw.items() if k in fields})


@pytest.fixture
def with_rec(monkeypatch):  # noqa: ANN201
    """Make `catscans recommend` return the given Recommendation (after sleeping ``delay`` s)."""
    import recommender.recommend as rr

    def use(rec: Recommendation, delay: float = 0.0) -> None:
        def fake(*_a, **_k):  # noqa: ANN002, ANN003
            if delay:
                import time

                time.sleep(delay)
            return rec

        monkeypatch.setattr(rr, "recommend", fake)

    return use


CAL = {"level": 0.8, "coverage": 0.79, "lo_key": "lo80", "hi_key": "hi80", "label": "80% interval",
       "caption": "measured coverage 79% of 120 held-out cells"}


def test_compact_table_fits_80_and_never_cuts_source_names(with_rec) -> None:
    with_rec(fake_rec())
    res = run80("recommend", "--target", "demo")
    assert res.exit_code == 0, res.output
    assert_fits(res.stdout)
    rec = fake_rec()
    pos = source_rows(res.stdout, [r["source"] for r in compact_rows(rec.ranking)[0]])  # the default table's rows
    assert pos == sorted(pos)  # in rank order, one line each
    assert len(set(pos)) == len(pos) and pos[-1] - pos[0] == len(pos) - 1
    assert len(res.stdout.splitlines()) < 45  # was 228 lines for 15 sources
    # compact: rank, source, AUC, evidence; no reasons or weights (those are --wide)
    assert "evidence" in res.stdout and "KB-record" in res.stdout and "/abs/path" not in res.stdout
    assert "standardised per KB target" not in res.stdout


def test_interval_only_when_its_coverage_was_measured(with_rec) -> None:
    with_rec(fake_rec(interval=None))
    res = run80("recommend", "--target", "demo")
    assert "0.800–0.950" not in res.stdout and "80% interval" not in res.stdout
    assert "no calibrated interval" in " ".join(res.stdout.split())
    with_rec(fake_rec(method="meta-model (LightGBM ranker)", interval=CAL))
    res = run80("recommend", "--target", "demo")
    assert_fits(res.stdout)
    line = next(ln for ln in res.stdout.splitlines() if f" {LONG} " in f" {ln} ")
    assert "0.900" in line and "0.800–0.950" in line
    assert "measured coverage 79% of 120 held-out cells" in " ".join(res.stdout.split())


def test_columns_others_add_show_up_compact_or_in_wide(with_rec) -> None:
    with_rec(fake_rec(extra={"gain_over_scratch": 0.0123}))
    res = run80("recommend", "--target", "demo")
    assert_fits(res.stdout)
    assert "gain over" in res.stdout and "scratch" in res.stdout and "0.012" in res.stdout  # compact
    many = {f"new_metric_{k}": 0.5 + k for k in range(6)}
    with_rec(fake_rec(extra=many, cls=_WithVerified, verified={"auc": 0.91, "n_seeds": 3}))
    res = run80("recommend", "--target", "demo")
    assert_fits(res.stdout)
    text = " ".join(res.stdout.split())
    assert "more columns in --wide" in text  # no room: named, not dropped silently
    assert "verified: auc 0.910, n_seeds 3" in text  # a new top-level field, generically
    wide = run80("recommend", "--target", "demo", "--wide")
    assert all(k.replace("_", " ") in wide.stdout for k in many)


def test_wide_has_reasons_weights_and_snippets(with_rec) -> None:
    with_rec(fake_rec())
    res = run80("recommend", "--target", "demo", "--wide")
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert " why " in res.stdout and "its AUC, standardised per KB target" in res.stdout
    assert f"/abs/path/{LONG}.safetensors" in res.stdout  # whole, in the snippet block
    assert "resnet-mini" in text and "28 px, 3 channels" in text and "78,042 parameters" in text
    assert res.stdout.count("    line one") == 15 and res.stdout.count("    line three") == 15
    source_rows(res.stdout, [r["source"] for r in compact_rows(fake_rec().ranking)[0]])


def test_target_panel_and_notes_wrap_at_80(with_rec) -> None:
    card = {"n_images": 80, "n_classes": 40, "class_counts": {f"class_with_a_long_name_{i}": 2 for i in range(40)},
            "channels": 3, "file_formats": {"png": 78, "dicom": 2}, "modalities": {"CT": 1, "MR": 1},
            "n_skipped": 3, "skipped_reasons": {"unreadable image": 2, "not an image": 1}}
    with_rec(fake_rec(target_card=card, target="/a/very/long/path/" + "x" * 70))
    res = run80("recommend", "--target", "demo")
    assert res.exit_code == 0, res.output
    assert_fits(res.stdout)
    assert "… 34 more" in " ".join(res.stdout.replace("│", " ").split())
    assert "80 images · 40 classes" in res.stdout  # wrapped, never cropped
    assert "warning: the folder mixes DICOM modalities (CT 1, MR 1)" in " ".join(res.stderr.split())
    assert "mixes DICOM files (2) with ordinary images (78)" in " ".join(res.stderr.split())


def test_took_is_the_commands_wall_time(with_rec) -> None:
    with_rec(fake_rec(), delay=1.2)  # the library says 0.2 s; the command really takes > 1.2 s
    res = run80("recommend", "--target", "demo")
    took = float(re.search(r"took (\d+\.\d) s wall", res.stdout).group(1))
    assert took >= 1.2
    res = run80("recommend", "--target", "demo", "--format", "json")
    assert json.loads(res.stdout)["timings_s"]["wall"] >= 1.2


def test_process_wall_clock_counts_interpreter_start_up() -> None:
    code = ("import time; time.sleep(1.0); from recommender.cli._common import _process_elapsed; "
            "print(_process_elapsed())")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert float(got.stdout) >= 1.0


def test_unknown_kb_fails_before_the_folder_is_read(tmp_path: Path, monkeypatch) -> None:
    import recommender.recommend as rr

    def boom(*_a, **_k):  # noqa: ANN002, ANN003
        raise AssertionError("the target was read before the KB name was checked")

    monkeypatch.setattr(rr, "read_imageset", boom)
    root = labelled_png_folder(tmp_path / "t", n_per_class=6)
    res = run80("recommend", "--target", str(root), "--kb", "nosuch")
    assert res.exit_code == 2, res.output
    assert "no knowledge base 'nosuch'" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


# -- the "why": from the method that set the order ------------------------------------------
def test_why_comes_from_the_ordering_method_and_skips_missing_estimates() -> None:
    from recommender.explain import explain_order

    row = {"fold_static_prior": 0.8, "pair_nleep_tz": float("nan"), "pair_dist_frechet": 3.0}
    contrib = {"pair_nleep_tz": 0.9, "pair_dist_frechet": -0.2, "fold_static_prior": 0.1, "bias": 5.0}
    ev, why = explain_order("static", ("fold_static_prior", 1), row, contrib)
    assert ev == "KB-record" and "static ranking" in why and "+0.80 sd" in why
    assert "N-LEEP" not in why and "meta-model" not in why  # the static order, not the model's view
    ev, why = explain_order("meta", None, row, contrib)
    assert "N-LEEP" not in why and ev != "N-LEEP"  # its estimate was never computed: never cited
    assert why.startswith("↓ Fréchet distance") and ev == "similarity"
    ev, why = explain_order("estimate:logme", ("pair_logme", 1), {"pair_logme": 2.5}, contrib)
    assert ev == "LogME" and "2.5" in why
    ev, why = explain_order("estimate:logme", ("pair_logme", 1), {"pair_logme": float("nan")}, contrib)
    assert "no LogME transferability" in why and "ranked last" in why


def test_residual_models_own_terms_sum_to_its_score() -> None:
    from recommender.model.residual import ResidualModel

    rows = pd.DataFrame({"source": ["a", "b", "c"], "target": ["t"] * 3, "fold_static_prior_tz": [1.0, 0.0, -1.0],
                         "fold_static_prior": [0.5, 0.0, -0.5], "pair_same_modality": [1.0, 0.0, 1.0]})
    m = ResidualModel(["pair_same_modality"], np.array([0.5]), np.array([0.3]), slope=0.8, alpha=100.0)
    terms = m.contributions(rows)
    assert np.allclose(terms.sum(axis=1).to_numpy(), m.score(rows))
    assert list(terms.index) == ["a", "b", "c"]


# -- the real recommend on shipped KBs (skips only when the KB or its model is not shipped) ----
def _needs_model(kb: str) -> None:
    from recommender.model import load_recommender, models_dir

    if kb not in list_kbs():
        pytest.skip(f"needs the shipped KB {kb}")
    if not (models_dir() / kb / "manifest.json").exists():
        pytest.skip(f"no shipped model for KB {kb} ({models_dir() / kb / 'manifest.json'} absent)")
    # kills: a shipped model that no longer loads (UserError or any other) passing as a skip
    load_recommender(kb)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    return labelled_png_folder(tmp_path_factory.mktemp("rec") / "t", n_per_class=12)


def test_real_kb_without_checkpoints_why_is_its_orders_and_cites_no_estimate(tmp_path: Path) -> None:
    _needs_model("juodelyte2024")
    rng = np.random.default_rng(0)
    root = labelled_png_folder(tmp_path / "mixed", n_per_class=8)
    for mod, sub in (("CT", "a"), ("MR", "b")):
        write_dicom(root / sub / f"scan_{mod}.dcm", rng.integers(0, 4000, (40, 40)), modality=mod)
    res = run80("recommend", "--target", str(root), "--kb", "juodelyte2024")
    assert res.exit_code == 0, res.output
    assert_fits(res.stdout)
    js = json.loads(run80("recommend", "--target", str(root), "--kb", "juodelyte2024", "--format", "json").stdout)
    source_rows(res.stdout, [r["source"] for r in compact_rows(js["ranking"])[0]])  # the default table's rows
    assert "meta-model's view" not in res.stdout
    assert "mixes DICOM modalities (CT 1, MR 1)" in " ".join(res.stderr.split())
    js = json.loads(run80("recommend", "--target", str(root), "--kb", "juodelyte2024", "-f", "json").stdout)
    for r in js["ranking"]:  # juodelyte ships no checkpoints: no estimate exists, none is cited
        assert not any(e in r["reasons"] or e in r["evidence"] for e in ESTIMATORS), r
        assert "meta-model's view" not in r["reasons"]


def test_real_meta_kb_compact_wide_and_a_snippet_that_loads(labelled: Path) -> None:
    _needs_model("local")
    res = run80("recommend", "--target", str(labelled), "--kb", "local")
    assert res.exit_code == 0, res.output
    assert_fits(res.stdout)
    js = json.loads(run80("recommend", "--target", str(labelled), "--kb", "local", "-f", "json").stdout)
    source_rows(res.stdout, [r["source"] for r in compact_rows(js["ranking"])[0]])
    wide = run80("recommend", "--target", str(labelled), "--kb", "local", "--wide")
    assert wide.exit_code == 0 and "why" in wide.stdout
    shipped = [r for r in js["ranking"] if r["weights_card"].get("kind") == "kb"]
    assert shipped, "local ships checkpoints: their cards must point at them"
    card = shipped[0]["weights_card"]
    assert Path(card["weights"]).is_absolute() and Path(card["weights"]).exists()
    assert card["arch"] and card["input_size"] and len(card["snippet"]) == 3
    assert card["weights"] in wide.stdout
    ns: dict = {}
    exec("\n".join(card["snippet"]), {"n_classes": 3} | ns)  # the three lines really load the model


def test_real_unlabelled_meta_kb_never_cites_a_missing_estimate(tmp_path: Path) -> None:
    _needs_model("local")
    root = labelled_png_folder(tmp_path / "t", n_per_class=8)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in root.rglob("*.png"):
        p.rename(flat / p.name)
    js = json.loads(run80("recommend", "--target", str(flat), "--kb", "local", "-f", "json").stdout)
    assert js["labelled"] is False
    for r in js["ranking"]:  # no labels -> no transferability estimate was computed
        assert r["transferability"] == {}
        assert not any(e in r["reasons"] or e == r["evidence"] for e in ESTIMATORS), r


# -- kb list / kb show ---------------------------------------------------------------------------
def test_kb_list_fits_80_and_wide_has_everything() -> None:
    if not list_kbs():
        pytest.skip("no shipped KBs")
    res = run80("kb", "list")
    assert res.exit_code == 0, res.output
    assert_fits(res.stdout)
    for name in list_kbs():
        source_rows(res.stdout, [name])
    wide = run80("kb", "list", "--wide")
    if "juodelyte2024" in list_kbs():
        assert "DovileDo/transferability-in-medical-imaging@7e308c4" in wide.stdout
        assert "DovileDo/transferability-in-medical-imaging@7e308c4" not in res.stdout  # abbreviated
    assert "n_records" in wide.stdout and "n_records" not in res.stdout


def _seeded_kb(path: Path) -> Path:
    rng = np.random.default_rng(0)
    sources = ["src_alpha", "src_beta", "derived_from_beta", "scratch"]
    targets = [f"target_number_{i}" for i in range(7)]
    rows = [{"source": s, "target": t, "metric": "roc_auc", "value": float(rng.uniform(0.6, 0.95)),
             "fold": -1, "seed": k, "architecture": "resnet-mini", "protocol": "p", "study": "s",
             "file": "", "commit": ""} for s in sources for t in targets for k in range(3)]
    datasets = pd.DataFrame({"name": sources + targets})
    kb = KnowledgeBase("seeded", pd.DataFrame(rows), datasets,
                       {"name": "seeded", "metric": "roc_auc", "sources": sources, "targets": targets,
                        "groups": {"derived_from_beta": "src_beta", "target_number_0": "src_beta"}})
    return save_kb(kb, path)


def test_kb_show_fits_80_with_mean_sd_n_and_groups(tmp_path: Path) -> None:
    kbp = _seeded_kb(tmp_path / "seeded")
    res = run80("kb", "show", str(kbp))
    assert res.exit_code == 0, res.output
    assert_fits(res.stdout)
    kb = load_kb(kbp)
    m, sd = kb.matrix(), kb.spread()
    cell = f"{m.loc['src_alpha', 'target_number_3']:.3f} ± {sd.loc['src_alpha', 'target_number_3']:.3f}"
    assert cell in res.stdout
    text = " ".join(res.stdout.split())
    assert "n = 3 seeds in every cell" in text
    assert "targets 1–" in text  # 7 wide columns at 80: split into parts, none folded
    assert "derived_from_beta + src_beta + target_number_0" in text
    for s in kb.sources:
        assert len(source_rows(res.stdout, [s])) == 1
    wide = run80("kb", "show", str(kbp), "--wide")
    line = next(ln for ln in wide.stdout.splitlines() if ln.startswith("src_alpha"))
    assert line.count("±") == 7 and "(n=3)" in line  # whole matrix on one line
    js = json.loads(run80("kb", "show", str(kbp), "-f", "json").stdout)
    assert js["n_over"] == "seeds" and js["groups"]["derived_from_beta"] == js["groups"]["src_beta"]
    assert {(r["source"], r["target"], r["seed"]) for r in js["records"]} >= {("src_alpha", "target_number_0", 2)}
    assert all(c["n"] == 3 for c in js["cells"])


def test_kb_show_shipped_kbs_fit_80() -> None:
    names = [k for k in ("cats-scans2021", "juodelyte2024", "local") if k in list_kbs()]
    if not names:
        pytest.skip("no shipped KBs")
    for name in names:
        res = run80("kb", "show", name)
        assert res.exit_code == 0, res.output
        assert_fits(res.stdout)


# -- help, completion -------------------------------------------------------------------------
def _commands():  # noqa: ANN202
    import typer.main

    root = typer.main.get_command(app)
    ctx_cmds = [((), root)]
    out = []
    while ctx_cmds:
        path, cmd = ctx_cmds.pop()
        out.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            ctx_cmds.append(((*path, name), sub))
    return out


def test_every_help_fits_80_and_keeps_its_text_and_defaults() -> None:
    cmds = _commands()
    assert {p for p, _ in cmds} >= {("recommend",), ("kb",), ("kb", "score"), ("kb", "attach"),
                                    ("build-matrix",), ("evaluate-meta",), ("inspect",)}
    for path, cmd in cmds:
        res = run80(*path, "--help")
        assert res.exit_code == 0, (path, res.output)
        assert_fits(res.stdout)
        flat = re.sub(r"[│╭╮╰╯─]", " ", res.stdout)
        words = set(flat.split())
        for sub in getattr(cmd, "commands", {}):
            assert sub in words, f"{path} --help omits {sub}"
        for p in cmd.params:
            if getattr(p, "help", None):  # every word of the help survives (no markup eaten)
                lost = [w for w in p.help.split() if w not in words and w not in flat]
                assert not lost, f"{path} {p.name}: help lost {lost}"
            d = getattr(p, "default", None)
            if getattr(p, "show_default", True) is not False and d not in (None, False, (), []) and \
                    not callable(d) and p.name not in ("help",):
                shown = getattr(d, "value", d)
                if getattr(p, "is_flag", False) and getattr(p, "secondary_opts", None):  # --x/--no-x: click
                    shown = (p.opts if d else p.secondary_opts)[0].lstrip("-")  # shows the flag's name
                assert f"[default: {shown}]" in " ".join(flat.split()), f"{path} {p.name}: default {d} not shown"


def test_shell_completion_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    res = run80("--help")
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout
    # --show-completion is a flag (typer detects the shell from the process tree, which a detached
    # run such as `nohup pytest &` does not have): pin the detection to bash
    import shellingham

    monkeypatch.setattr(shellingham, "detect_shell", lambda *a, **k: ("bash", "/bin/bash"))
    res = runner.invoke(app, ["--show-completion"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "complete" in res.stdout and "catscans" in res.stdout.lower()
    readme = (REPO / "README.md").read_text()
    assert "--install-completion" in readme and "--show-completion" in readme


# -- build-matrix --dry-run: what is stored already ------------------------------------------
def test_dry_run_counts_stored_and_pending_per_kind(tmp_path: Path) -> None:
    from test_build_matrix_e2e import TINY, _toy_set

    from experiments.matrix import plan_matrix
    from experiments.protocol import load_protocol
    from experiments.store import FolderStore

    data = tmp_path / "data"
    data.mkdir()
    for i, (name, k) in enumerate((("src_a", 4), ("src_b", 3), ("tgt_c", 2), ("tgt_d", 3))):
        _toy_set(data / f"{name}.npz", k, 60, False, i, False)
    (tmp_path / "tiny.toml").write_text(TINY)
    run = tmp_path / "run"
    args = ["build-matrix", "--protocol", str(tmp_path / "tiny.toml"), "--data-dir", str(data),
            "--run-dir", str(run), "--dry-run"]
    res = run80(*args, "-f", "json")
    assert res.exit_code == 0, res.output
    before = json.loads(res.stdout)["by_kind"]
    assert before["pretrain"] == {"stored": 0, "pending": 2} and before["finetune"]["stored"] == 0
    assert not run.exists()  # a dry run creates nothing
    plan = plan_matrix(load_protocol(str(tmp_path / "tiny.toml")))
    store = FolderStore(run)
    for c in plan.finetune[:3]:
        store.put({"key": c.key, "kind": c.kind, "value": 0.7})
    ck = run / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "src_a.safetensors").write_bytes(b"x")
    (ck / "src_a.json").write_text(json.dumps({"pretrain_hash": plan.pretrain[0].protocol_hash}))
    after = json.loads(run80(*args, "-f", "json").stdout)["by_kind"]
    assert after["pretrain"] == {"stored": 1, "pending": 1}
    assert after["finetune"] == {"stored": 3, "pending": len(plan.finetune) - 3}
    table = run80(*args)
    assert_fits(table.stdout)
    assert f"finetune: 3 stored, {len(plan.finetune) - 3} pending" in " ".join(table.stdout.split())


# -- p-values, CSV sections, README Python API ----------------------------------------------
def test_p_values_print_as_less_than_below_0001() -> None:
    from recommender.cli._common import fmt_p
    from recommender.cli._evaluate import correlation_table

    assert fmt_p(0.0004) == "< 0.001" and fmt_p(0.0004, label=True) == "p < 0.001"
    assert fmt_p(0.0123) == "0.012" and fmt_p(0.5, label=True) == "p = 0.500" and fmt_p(float("nan")) == "—"
    corr = pd.DataFrame({"feature": ["a"], "kind": ["similarity"], "outcome": ["auc"], "n": [30],
                         "pearson_r": [0.9], "pearson_lo": [0.8], "pearson_hi": [0.95], "pearson_p": [1e-9],
                         "spearman_rho": [0.8], "spearman_p": [2e-4], "kendall_tau": [0.6], "kendall_p": [0.02]})
    row = correlation_table(corr).iloc[0]
    assert row["p"] == "< 0.001" and row["p "] == "< 0.001" and row["p  "] == "0.020"


def test_csv_of_several_tables_writes_every_one(capsys) -> None:
    from recommender.cli._common import Format, emit, read_csv_sections

    tables = {"first": pd.DataFrame({"a": [1, 2]}), "second": pd.DataFrame({"b": ["x"], "c": [0.5]})}
    emit(Format.csv, {}, tables)
    text = capsys.readouterr().out
    assert text.startswith("# table: first\n") and "\n# table: second\n" in text
    back = read_csv_sections(text)
    assert list(back) == ["first", "second"]
    assert back["first"].equals(tables["first"]) and back["second"].equals(tables["second"])
    emit(Format.csv, {}, {"only": tables["first"]})  # one table: plain CSV, no section line
    assert capsys.readouterr().out.splitlines()[0] == "a"


def test_readme_python_api_snippet_runs() -> None:
    _needs_model("juodelyte2024")
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.strip().splitlines()) == 4  # three sources and the matrix shape
