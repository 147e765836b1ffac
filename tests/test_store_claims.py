"""Shared stores: claims (leases) so N workers compute each cell once, atomic writes under
concurrency, corrupt cells not counted as done, and pretraining keyed by its own settings."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.matrix import plan_matrix
from experiments.protocol import ProtocolError, load_protocol
from experiments.store import FolderStore, SQLiteStore, open_store
from imagesets import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["folder", "sqlite"])
def store(request, tmp_path: Path):  # noqa: ANN001, ANN201
    return FolderStore(tmp_path / "st") if request.param == "folder" else SQLiteStore(tmp_path / "st.db")


def test_claim_excludes_a_second_owner_until_release(store) -> None:  # noqa: ANN001
    assert store.claim("k1", "hostx:1:a")  # a foreign host: only the lease decides
    assert not store.claim("k1", "hostx:2:b")
    assert store.claim("k1", "hostx:1:a")  # the owner may renew
    store.release("k1", "hostx:1:a")
    assert store.claim("k1", "hostx:2:b")


def test_expired_or_dead_owner_claim_returns(store) -> None:  # noqa: ANN001
    assert store.claim("k2", "hostx:1:a", lease_s=-1)  # already expired
    assert store.claim("k2", "hostx:2:b")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    import socket

    assert store.claim("k3", f"{socket.gethostname()}:{dead}:x")  # this host, pid gone
    assert store.claim("k3", "hostx:3:c")


def test_stored_cell_cannot_be_claimed(store) -> None:  # noqa: ANN001
    assert store.put({"key": "k4", "value": 0.5})
    assert not store.claim("k4", "hostx:1:a")
    assert not store.put({"key": "k4", "value": 0.9})  # first write wins
    assert store.get("k4")["value"] == 0.5


def test_corrupt_cell_is_not_done_and_can_be_rewritten(tmp_path: Path) -> None:
    st = FolderStore(tmp_path / "st")
    (st.cells / "bad.json").write_text("{")
    (st.cells / "other.json").write_text(json.dumps({"key": "not-other"}))
    assert st.keys() == set() and st.records() == []
    assert st.put({"key": "bad", "value": 1.0})
    assert st.keys() == {"bad"}


def test_unusable_store_urls_are_one_line_errors(tmp_path: Path) -> None:
    from experiments.store import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        open_store("sqlite:///", tmp_path)
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{blocker}/sub/x.db", tmp_path)
    with pytest.raises(StoreError):
        open_store(str(blocker / "sub"), tmp_path)


def _claimer(args: tuple[str, str, int]) -> list[str]:
    kind, path, n = args
    st = FolderStore(path) if kind == "folder" else SQLiteStore(path)
    won = []
    for i in range(n):
        key = f"cell{i}"
        if st.claim(key):
            st.put({"key": key, "pid": os.getpid()})
            st.release(key)
            won.append(key)
    return won


@pytest.mark.parametrize("kind", ["folder", "sqlite"])
def test_four_processes_on_one_store_compute_each_cell_once(tmp_path: Path, kind: str) -> None:
    path = str(tmp_path / ("st" if kind == "folder" else "st.db"))
    (FolderStore if kind == "folder" else SQLiteStore)(path)
    with mp.get_context("spawn").Pool(4) as pool:
        results = pool.map(_claimer, [(kind, path, 40)] * 4)
    won = [k for r in results for k in r]
    assert sorted(won) == sorted(f"cell{i}" for i in range(40))  # each exactly once


def _writer(args: tuple[str, int]) -> int:
    path, n = args
    failures = 0
    for i in range(n):
        try:
            atomic_write_text(path, json.dumps({"i": i, "pad": "x" * 2000}))
            json.loads(Path(path).read_text())
        except (OSError, ValueError):
            failures += 1
    return failures


def test_concurrent_atomic_writes_never_fail_or_tear(tmp_path: Path) -> None:
    target = str(tmp_path / "one.json")
    with mp.get_context("spawn").Pool(4) as pool:
        failures = pool.map(_writer, [(target, 40)] * 4)
    assert sum(failures) == 0
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


def test_pretrain_hash_depends_only_on_pretraining() -> None:
    base = load_protocol("cpu-kb")
    same = [["targets=breastmnist"], ['evaluation.mode="folds"', "evaluation.repeats=5"],
            ["finetune.lr=0.01"], ["evaluation.n_train=50"], ["evaluation.n_test=100"], ["scratch=false"]]
    for ov in same:
        assert load_protocol("cpu-kb", ov).pretrain_hash == base.pretrain_hash, ov
    for ov in (["pretrain.lr=0.01"], ["side=32"], ["seed=1"], ["evaluation.split=[0.6,0.1,0.3]"]):
        assert load_protocol("cpu-kb", ov).pretrain_hash != base.pretrain_hash, ov
    plan_a = plan_matrix(base)
    plan_b = plan_matrix(load_protocol("cpu-kb", ["finetune.lr=0.01"]), targets=["breastmnist"])
    assert [c.key for c in plan_a.pretrain] == [c.key for c in plan_b.pretrain]
    assert [c.seed for c in plan_a.pretrain] == [c.seed for c in plan_b.pretrain]


@pytest.mark.parametrize("override,msg", [
    ("pretrain.epochs=abc", "whole number"),
    ("finetune.lr=true", "finite number"),
    ("scratch=3", "true or false"),
    ("finetune.lr=nan", "finite number"),
])
def test_wrongly_typed_overrides_fail_at_load(override: str, msg: str) -> None:
    with pytest.raises(ProtocolError, match=msg):
        load_protocol("cpu-mini", [override])


def test_cpu_kb_grid_sizes_and_groups() -> None:
    from experiments.matrix import target_groups

    p = load_protocol("cpu-kb")
    groups = target_groups(p, list(p.targets))
    assert len(p.targets) >= 15 and len(set(groups.values())) >= 8
    assert groups["blood_granulocytes"] == groups["pbc_blood"]
    assert p.evaluation.repeats >= 10
    plan = plan_matrix(p)
    pairs = {(c.source, c.target) for c in plan.finetune}
    assert ("pbc_blood", "blood_granulocytes") not in pairs  # parent never fine-tunes its own task
    assert ("kermany_cxr", "pneumoniamnist") not in pairs and ("kermany_cxr", "pneumoniamnist_20pc") not in pairs
    assert ("kermany_cxr", "breastmnist") in pairs and ("scratch", "pbc_blood") in pairs


def test_two_build_processes_share_one_store_without_duplicated_work(tmp_path: Path) -> None:
    """Two `build-matrix` processes on one store: every cell computed once, none lost."""
    from test_build_matrix_e2e import toy_world

    world = toy_world(tmp_path)
    data, proto = world["data"], world["proto"]
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "recommender", "build-matrix", "--protocol", str(proto), "--data-dir", str(data),
           "--run-dir", str(run), "--threads", "1", "-q", "--seeds", "3", "--format", "json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    time.sleep(0.5)
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=300) for p in procs]
    reports = []
    for p, (so, se) in zip(procs, outs, strict=True):
        assert p.returncode == 0, se.decode()[-500:]
        reports.append(json.loads(so))
    records = FolderStore(run).records()
    keys = [r["key"] for r in records]
    plan = plan_matrix(load_protocol(str(proto), ['evaluation.mode="seeds"', "evaluation.repeats=3"]))
    assert set(keys) == {c.key for c in plan.cells} and len(keys) == len(set(keys))
    ran = sum(r["ran"] for r in reports)
    assert ran == len(plan.cells), reports  # each cell computed by exactly one of the two
    assert np.isfinite([r["value"] for r in records]).all()
