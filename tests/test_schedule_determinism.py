"""A cell's result does not depend on how it was scheduled: the same source pretrained and fine-tuned
by two worker processes, and in-process by a caller whose torch runs one thread and then two, gives
the same checkpoint bytes and the same AUCs (experiments.arithmetic pins the per-cell thread count
and the CPU kernels). Without the pin the one- and two-thread runs differ (checked by removing
``torch.set_num_threads(CELL_THREADS)`` from ``experiments.cells._run_claimed``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from test_registries import TINY, _toy

from experiments.arithmetic import CELL_THREADS, arithmetic_card
from experiments.backends import make_backend
from experiments.cells import RunContext
from experiments.matrix import plan_matrix
from experiments.protocol import load_protocol

# the test protocol at its smallest (one epoch each); one- and two-thread convs still differ here
PROTOCOL = TINY.replace('targets = ["tgt_ok", "tgt_bad"]', 'targets = ["tgt_ok"]')


def _build(root: Path, data: Path, workers: int, threads: int) -> tuple[str, dict[str, float]]:
    (root / "p.toml").write_text(PROTOCOL)
    plan = plan_matrix(load_protocol(str(root / "p.toml")))
    ctx = RunContext(plan.protocol, str(data), str(root / "run"), None, threads=threads)
    backend = make_backend("local", workers=workers, threads=threads)
    pre = backend.run(plan.pretrain, ctx, lambda e: None)
    assert [r["kind"] for r in pre] == ["pretrain"]
    recs = backend.run(plan.finetune, ctx, lambda e: None)
    ck = next((root / "run").rglob("src_a.safetensors"))
    return hashlib.sha256(ck.read_bytes()).hexdigest(), {r["key"]: r["value"] for r in recs}


@pytest.mark.slow
def test_schedule_does_not_change_checkpoint_bytes_or_aucs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i, (stem, k, n) in enumerate([("src_a", 3, 120), ("tgt_ok", 2, 96)]):
        _toy(data / f"{stem}.npz", k, n, i)
    runs = {}
    (tmp_path / "2x1").mkdir()
    runs["2x1"] = _build(tmp_path / "2x1", data, 2, 2)  # two worker processes
    before = torch.get_num_threads()
    try:
        for n in (1, 2):  # a caller whose torch uses one thread, then two
            torch.set_num_threads(n)
            (tmp_path / f"t{n}").mkdir()
            runs[f"t{n}"] = _build(tmp_path / f"t{n}", data, 1, n)
    finally:
        torch.set_num_threads(before)
    hashes = {k: v[0] for k, v in runs.items()}
    assert len(set(hashes.values())) == 1, hashes
    aucs = [v[1] for v in runs.values()]
    assert aucs[0] and all(a == aucs[0] for a in aucs[1:])  # bit-equal, not approximately
    assert torch.get_num_threads() == before


def test_arithmetic_card_names_the_settings_in_force() -> None:
    card = arithmetic_card()
    assert CELL_THREADS == 1 and card["torch"] == torch.__version__
    assert card["threads"] == torch.get_num_threads()
