"""End to end: a tiny protocol on CPU, a SIGKILL mid-run then resume, the ray backend, CLI errors.

Data are synthetic npz files in the shared layout (class = a bright quadrant), so
the tests need no ../shared and finish in seconds; AUCs must beat chance.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments import load_kb
from experiments.data import fixed_split
from experiments.matrix import plan_matrix
from experiments.protocol import load_protocol
from experiments.store import FolderStore, SQLiteStore
from imagesets import read_imageset
from meta_features import channel_policy, load_source, score_loaded
from recommender.cli import app

REPO = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
arch = "resnet-tiny"
side = 16
channels = 3
sources = ["src_a", "src_b"]
targets = ["tgt_c", "tgt_d"]
twins = [["src_a", "tgt_c"]]
[evaluation]
mode = "folds"
repeats = 2
n_train = 60
[pretrain]
epochs = 2
batch_size = 32
lr = 0.01
patience = 2
max_images = 120
[finetune]
epochs = 3
batch_size = 32
lr = 0.01
patience = 2
"""


def _toy_set(path: Path, n_classes: int, n: int, rgb: bool, seed: int, split: bool) -> None:
    """Class k brightens quadrant k % 4 (plus noise): learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    img = rng.integers(0, 90, size=(n, 16, 16), dtype=np.int64)
    for k in range(n_classes):
        r, c = divmod(k % 4, 2)
        img[labels == k, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += 120 + 20 * (k // 4)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rgb:
        img = np.repeat(img[..., None], 3, -1)
    data = {"images": img, "labels": labels.astype(np.int64),
            "class_names": np.array([f"c{k}" for k in range(n_classes)])}
    if split:
        data["split"] = np.where(np.arange(n) % 5 == 0, "test", np.where(np.arange(n) % 5 == 1, "val", "train"))
    np.savez_compressed(path, **data)


def toy_world(tmp_path: Path) -> dict:
    """Four toy sets in the shared npz layout plus the TINY protocol file, under ``tmp_path``."""
    data = tmp_path / "data"
    data.mkdir()
    _toy_set(data / "src_a.npz", 4, 200, False, 1, True)
    _toy_set(data / "src_b.npz", 3, 150, True, 2, False)
    _toy_set(data / "tgt_c.npz", 2, 120, False, 3, True)
    _toy_set(data / "tgt_d.npz", 3, 120, True, 4, False)
    proto = tmp_path / "tiny.toml"
    proto.write_text(TINY)
    return {"data": data, "proto": proto, "tmp": tmp_path}


@pytest.fixture
def toy(tmp_path: Path) -> dict:
    return toy_world(tmp_path)


def _args(toy: dict, run: str, *extra: str) -> list[str]:
    return ["build-matrix", "--protocol", str(toy["proto"]), "--data-dir", str(toy["data"]),
            "--run-dir", str(toy["tmp"] / run), "--threads", "1", "-q", *extra]


def test_tiny_protocol_end_to_end_exports_kb(toy: dict) -> None:
    kb_dir = toy["tmp"] / "kb_tiny"
    res = CliRunner().invoke(app, _args(toy, "run", "--export-kb", "tiny", "--kb-out", str(kb_dir),
                                        "--format", "json"))
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    # 2 pretrain + 2 targets x (2 sources + scratch) x 2 folds, less src_a -> tgt_c (twins:
    # src_a's pretraining saw tgt_c's images, so that pair is never measured)
    assert payload["cells"] == 2 + (2 * 3 - 1) * 2 and payload["failed"] == []
    kb = load_kb(kb_dir)
    m = kb.matrix()
    assert set(m.columns) == {"tgt_c", "tgt_d"} and set(m.index) == {"src_a", "src_b", "scratch"}
    assert np.isnan(m.loc["src_a", "tgt_c"]) and np.isfinite(m.drop(index="src_a")).all().all()
    assert np.isfinite(m.loc["src_a", "tgt_d"])
    assert kb.groups["src_a"] == kb.groups["tgt_c"] != kb.groups["tgt_d"]
    assert (kb.records.groupby(["source", "target"]).size() == 2).all()  # two folds each
    assert sorted(kb.records["fold"].unique()) == [0, 1]
    assert np.nanmean(m.to_numpy()) > 0.6  # the quadrant signal is learnable: well above chance
    assert kb.manifest["twins"] == [["src_a", "tgt_c"]]
    assert (kb_dir / "checkpoints" / "src_a.safetensors").exists()
    assert set(kb.datasets["image_set"]) == {"src_a", "src_b", "tgt_c", "tgt_d"}
    # rerun: everything is skipped, nothing duplicated, same numbers
    res2 = CliRunner().invoke(app, _args(toy, "run", "--format", "json"))
    assert res2.exit_code == 0 and json.loads(res2.stdout)["ran"] == 0
    assert json.loads(res2.stdout)["summary"] == payload["summary"]

    # transferability from the exported checkpoints, on exactly the rows each target trained on
    res3 = CliRunner().invoke(app, ["kb", "score", str(kb_dir), "--data-dir", str(toy["data"]),
                                    "--format", "json"])
    assert res3.exit_code == 0, res3.output
    rows = pd.DataFrame(json.loads(res3.stdout))
    assert set(rows["feature"]) == {"logme", "leep", "nleep", "nce", "hscore", "knn_acc"}
    # scratch is scored like any source (random inits of the same architecture)
    assert set(rows["source"]) == {"src_a", "src_b", "scratch"} and np.isfinite(rows["value"]).all()
    assert set(rows[rows["source"] == "scratch"]["target"]) == {"tgt_c", "tgt_d"}
    # recompute one pair by hand on build-matrix's own training rows of a split-less target
    proto = kb.manifest["protocol"]
    model, meta = load_source(kb_dir / "checkpoints" / "src_a.safetensors")
    full = read_imageset(toy["data"] / "tgt_d.npz", side=int(meta["side"]), channels=channel_policy(meta),
                         require_labels=True)
    train = np.flatnonzero(fixed_split(full, tuple(proto["evaluation"]["split"]), proto["seed"]) == "train")
    expected = score_loaded(model, meta, full.subset(train), 1000, 0)
    got = rows[(rows["source"] == "src_a") & (rows["target"] == "tgt_d")].set_index("feature")["value"]
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert (load_kb(kb_dir).pair_features["kind"] == "transferability").sum() == len(rows)


def test_same_cell_twice_gives_same_auc(toy: dict) -> None:
    """Seeds come from the cell, so two fresh runs of one cell agree exactly on CPU."""
    vals = []
    for run in ("d1", "d2"):
        res = CliRunner().invoke(app, _args(toy, run, "--sources", "src_b", "--targets", "tgt_c",
                                            "--set", "scratch=false", "--format", "json"))
        assert res.exit_code == 0, res.output
        vals.append([r["auc_mean"] for r in json.loads(res.stdout)["summary"]])
    assert vals[0] == vals[1]


@pytest.mark.parametrize("store_kind", ["folder", "sqlite"])
def test_sigkill_then_resume_keeps_finished_cells(toy: dict, store_kind: str) -> None:
    run = toy["tmp"] / f"kill_{store_kind}"
    store_url = f"sqlite:///{run}/results.db" if store_kind == "sqlite" else None
    extra = ["--store", store_url] if store_url else []
    cmd = [sys.executable, "-m", "recommender", *_args(toy, run.name, *extra, "--seeds", "4")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def store():  # noqa: ANN202
        return SQLiteStore(run / "results.db") if store_kind == "sqlite" else FolderStore(run)

    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if (run / "results.db").exists() or (run / "cells").exists():
            if sum(k.startswith("finetune") for k in store().keys()) >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-300:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r["key"]: r for r in store().records()}
    assert len(before) >= 3
    res = CliRunner().invoke(app, _args(toy, run.name, *extra, "--seeds", "4", "--format", "json"))
    assert res.exit_code == 0, res.output
    after = store().records()
    keys = [r["key"] for r in after]
    assert len(keys) == len(set(keys))  # none duplicated
    for k, r in before.items():  # every finished cell kept as it was
        assert next(a for a in after if a["key"] == k) == r
    plan = plan_matrix(load_protocol(str(toy["proto"]), ['evaluation.mode="seeds"', "evaluation.repeats=4"]))
    assert {c.key for c in plan.cells} == set(keys)  # matrix complete


def test_ray_backend_local_instance(toy: dict) -> None:
    ray = pytest.importorskip("ray", reason="ray extra not installed (CI installs it via the Makefile)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = CliRunner().invoke(app, _args(toy, "ray", "--backend", "ray", "--sources", "src_a",
                                            "--targets", "tgt_d", "--set", "scratch=false", "--format", "json"))
    finally:
        ray.shutdown()
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["failed"] == [] and out["cells"] == 1 + 2
    assert {r["source"] for r in out["summary"]} == {"src_a"}
    assert all(r["n"] == 2 for r in out["summary"])


@pytest.mark.parametrize("args,needle", [
    (["--protocol", "no-such-protocol"], "no protocol 'no-such-protocol'"),
    (["--targets", "not_a_dataset"], "unknown dataset 'not_a_dataset'"),
    (["--targets", "not_a_dataset", "--dry-run"], "unknown dataset 'not_a_dataset'"),
    (["--set", "finetune.nope=1"], "unknown protocol key"),
    (["--targets", "src_a,tgt_c"], "twins"),
])
def test_bad_input_is_one_line_exit_2(toy: dict, args: list[str], needle: str) -> None:
    base = ["build-matrix", "--protocol", str(toy["proto"]), "--data-dir", str(toy["data"]),
            "--run-dir", str(toy["tmp"] / "bad"), "-q"]
    if args[0] == "--protocol":
        base = base[:1] + base[3:]
    res = CliRunner().invoke(app, base + args)
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output
