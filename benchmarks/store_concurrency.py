"""Concurrency: 3,400 concurrent writes with 0 failures and 0 torn reads, and two processes
on one store with 0 duplicated cells. Both sides are measured in the same run and printed.

Part 1 (writes). ``--writers`` processes (default 4) write ``--writes`` files in total
(default 3,400) into the SAME few names at the same time, while one more process keeps
reading them back: checkpoint saves (30%, ``experiments.models.save_checkpoint`` onto 3
shared paths), result-store puts (60%: folder store and ``sqlite:///``, 300 shared keys, so
most puts lose the first-write-wins race, which is not a failure) and KB saves (10%, ``save_kb`` of one
shared KB whose size changes with every save, so a load that mixed two saves' files would
fail its ``n_records`` check). A write fails when it raises; a read is torn when a file is
empty or half-written, does not parse, or does not load (checkpoint, KB). With fixed temp
names (before the atomic-write helper), issue 14's probe saw 634 of 3,400 concurrent writes
fail and an empty JSON read 37 times.

Part 2 (cells). Two processes run ``build_matrix`` on one store and one checkpoint folder
with a tiny synthetic protocol (2 sources, 2 targets, 2 folds, plus scratch). Each counts
the cells it actually started computing (the ``start`` event, emitted after the claim);
a duplicated cell is one that both started. Also printed: cells planned vs stored.

Run by hand (takes a few minutes on 2 busy cores): ``python benchmarks/store_concurrency.py``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_CKPT_PATHS, N_KEYS = 3, 300
# per 10 writes: 4 folder-store puts, 2 sqlite puts, 3 checkpoint saves, 1 KB save (3 files +
# manifest under the KB lock; the slowest, so the rarest)
MIX = ("folder_put", "checkpoint", "sqlite_put", "folder_put", "checkpoint", "kb_save",
       "folder_put", "sqlite_put", "checkpoint", "folder_put")


# -- part 1: writes ------------------------------------------------------------------------
def _kb(n: int, j: int):  # noqa: ANN202
    from experiments.knowledge_base import KnowledgeBase

    rec = pd.DataFrame({"source": [f"s{i % 3}" for i in range(n)], "target": [f"t{i % 2}" for i in range(n)],
                        "metric": "roc_auc", "value": np.linspace(0.5, 0.9, n), "fold": range(n), "seed": -1})
    cards = pd.DataFrame({"name": ["s0", "s1", "s2", "t0", "t1"], "role": "both"})
    return KnowledgeBase(name="shared", records=rec, datasets=cards, manifest={"description": f"save {j}"})


def _writer(root: str, wid: int, n: int, go, out) -> None:  # noqa: ANN001
    import torch

    from experiments.knowledge_base import save_kb
    from experiments.models import create_model, save_checkpoint
    from experiments.store import FolderStore, SQLiteStore

    torch.set_num_threads(1)
    model = create_model("resnet-tiny", num_classes=2, in_chans=1)
    folder, sql = FolderStore(Path(root) / "store"), SQLiteStore(Path(root) / "store.sqlite")
    attempted, failed, won, errors, busy = Counter(), Counter(), Counter(), [], Counter()
    go.wait()
    for j in range(n):
        kind = MIX[(j + wid) % len(MIX)]
        attempted[kind] += 1
        t0 = time.perf_counter()
        try:
            if kind == "checkpoint":
                save_checkpoint(model, Path(root) / "ck" / f"src{j % N_CKPT_PATHS}.safetensors",
                                {"source": f"src{j % N_CKPT_PATHS}", "writer": wid, "j": j})
            elif kind == "kb_save":
                save_kb(_kb(10 + (j + wid) % 7, j), Path(root) / "kb")
            else:
                store = folder if kind == "folder_put" else sql
                key = f"cell{(j * 7 + wid) % N_KEYS}"
                won[kind] += bool(store.put({"key": key, "writer": wid, "j": j, "value": j / n}))
        except Exception as exc:  # noqa: BLE001 - counted, that is the measurement
            failed[kind] += 1
            if len(errors) < 5:
                errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])
        busy[kind] += time.perf_counter() - t0
    out.put({"wid": wid, "attempted": dict(attempted), "failed": dict(failed), "won": dict(won),
             "errors": errors, "busy": dict(busy)})


def _reader(root: str, go, stop, out) -> None:  # noqa: ANN001
    from experiments.knowledge_base import load_kb
    from experiments.models import load_checkpoint

    reads, torn, examples = Counter(), Counter(), []

    def check(kind: str, fn) -> None:  # noqa: ANN001
        reads[kind] += 1
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a torn read is the measurement
            torn[kind] += 1
            if len(examples) < 5:
                examples.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])

    def raw_json(p: Path) -> None:
        try:
            text = p.read_text()
        except FileNotFoundError:
            return  # not written yet
        if not isinstance(json.loads(text), dict):
            raise ValueError("not an object")

    go.wait()
    ck, kb, cells = Path(root) / "ck", Path(root) / "kb", Path(root) / "store" / "cells"
    while not stop.is_set():
        for i in range(N_CKPT_PATHS):
            p = ck / f"src{i}.safetensors"
            if p.exists() and p.with_suffix(".json").exists():
                check("checkpoint", lambda p=p: load_checkpoint(p))
        if (kb / "manifest.json").exists():
            check("kb", lambda: load_kb(kb))
        for p in sorted(cells.glob("*.json"))[:40] if cells.exists() else []:
            check("store_cell", lambda p=p: raw_json(p))
        time.sleep(0.02)  # a reader, not a lock hog: writers must get the KB lock too
    out.put({"reads": dict(reads), "torn": dict(torn), "examples": examples})


def part_writes(root: Path, writers: int, writes: int) -> dict:
    ctx = mp.get_context("spawn")
    go, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    share = [writes // writers + (i < writes % writers) for i in range(writers)]
    procs = [ctx.Process(target=_writer, args=(str(root), i, share[i], go, out)) for i in range(writers)]
    reader = ctx.Process(target=_reader, args=(str(root), go, stop, out))
    for p in [*procs, reader]:
        p.start()
    time.sleep(8.0)  # let every process finish importing torch, then start them together
    t0 = time.perf_counter()
    go.set()
    results = [out.get() for _ in procs]
    wall = time.perf_counter() - t0
    stop.set()
    read = out.get()
    for p in [*procs, reader]:
        p.join()
    att, fail, won, busy = Counter(), Counter(), Counter(), Counter()
    for r in results:
        att.update(r["attempted"])
        fail.update(r["failed"])
        won.update(r["won"])
        busy.update(r["busy"])
    return {"attempted": dict(att), "failed": dict(fail), "won": dict(won), "wall_s": wall, "busy": dict(busy),
            "errors": [e for r in results for e in r["errors"]][:5], **read,
            "exit_codes": [p.exitcode for p in [*procs, reader]]}


# -- part 2: two processes, one store --------------------------------------------------------
TINY = """
name = "concurrency"
arch = "resnet-tiny"
side = 16
channels = 1
sources = ["src_a", "src_b"]
targets = ["tgt_c", "tgt_d"]
[evaluation]
mode = "folds"
repeats = 2
n_train = 60
[pretrain]
epochs = 1
batch_size = 32
lr = 0.01
patience = 1
max_images = 120
[finetune]
epochs = 2
batch_size = 32
lr = 0.01
patience = 1
"""


def _toy(path: Path, n_classes: int, n: int, seed: int) -> None:
    """Class k brightens quadrant k % 4: learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    img = rng.integers(0, 90, size=(n, 16, 16), dtype=np.int64)
    for k in range(n_classes):
        r, c = divmod(k % 4, 2)
        img[labels == k, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += 120
    np.savez_compressed(path, images=np.clip(img, 0, 255).astype(np.uint8), labels=labels.astype(np.int64))


def _matrix_worker(root: str, name: str, go, out) -> None:  # noqa: ANN001
    from experiments.backends import LocalBackend
    from experiments.matrix import build_matrix, plan_matrix
    from experiments.protocol import load_protocol

    started: list[str] = []
    plan = plan_matrix(load_protocol(str(Path(root) / "tiny.toml")))
    go.wait()
    try:
        res = build_matrix(plan, LocalBackend(workers=1, threads=1), str(Path(root) / "data"),
                           str(Path(root) / "run"), None,
                           lambda e: started.append(e["key"]) if e.get("event") == "start" else None)
        out.put({"name": name, "started": started, "ran": res["ran"], "failed": len(res["failed"]),
                 "planned": len(plan.cells)})
    except Exception:  # noqa: BLE001
        out.put({"name": name, "started": started, "error": traceback.format_exc(limit=3)})


def part_cells(root: Path) -> dict:
    (root / "data").mkdir(parents=True)
    for i, (stem, k, n) in enumerate([("src_a", 4, 200), ("src_b", 3, 150), ("tgt_c", 2, 120), ("tgt_d", 3, 120)]):
        _toy(root / "data" / f"{stem}.npz", k, n, i)
    (root / "tiny.toml").write_text(TINY)
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_matrix_worker, args=(str(root), n, go, out)) for n in ("A", "B")]
    for p in procs:
        p.start()
    time.sleep(8.0)
    t0 = time.perf_counter()
    go.set()
    res = [out.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    from experiments.store import open_store

    stored = open_store(None, root / "run").keys()
    by = {r["name"]: r for r in res}
    a, b = set(by["A"]["started"]), set(by["B"]["started"])
    return {"planned": by["A"].get("planned"), "started_A": len(by["A"]["started"]),
            "started_B": len(by["B"]["started"]), "duplicated": len(a & b),
            "computed": len(a | b), "stored_records": len(stored), "wall_s": wall,
            "errors": [r["error"] for r in res if "error" in r],
            "failed": sum(r.get("failed", 0) for r in res)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--writes", type=int, default=3400)
    ap.add_argument("--skip-cells", action="store_true", help="Part 1 only.")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="catscans-concurrency-") as tmp:
        w = part_writes(Path(tmp) / "writes", args.writers, args.writes)
        print(f"part 1: {sum(w['attempted'].values()):,} concurrent writes from {args.writers} processes "
              f"in {w['wall_s']:.1f} s, failed {sum(w['failed'].values())}")
        for kind in sorted(w["attempted"]):
            extra = f", first-write-wins puts won {w['won'].get(kind, 0)}" if kind.endswith("_put") else ""
            ms = 1000 * w["busy"].get(kind, 0.0) / max(1, w["attempted"][kind])
            print(f"  {kind:<11} attempted {w['attempted'][kind]:>5}  failed {w['failed'].get(kind, 0)}  "
                  f"({ms:.0f} ms each){extra}")
        print(f"  reads while writing: {sum(w['reads'].values()):,}, torn {sum(w['torn'].values())} "
              f"({', '.join(f'{k} {v}' for k, v in sorted(w['reads'].items()))})")
        for e in w["errors"] + w["examples"]:
            print(f"    e.g. {e}")
        if not args.skip_cells:
            c = part_cells(Path(tmp) / "cells")
            print(f"part 2: two processes on one store, {c['planned']} cells planned, in {c['wall_s']:.1f} s")
            print(f"  started A {c['started_A']} + B {c['started_B']} = {c['started_A'] + c['started_B']}; "
                  f"distinct computed {c['computed']}; duplicated {c['duplicated']}; "
                  f"records stored {c['stored_records']}; failed {c['failed']}")
            for e in c["errors"]:
                print(f"    error: {e}")


if __name__ == "__main__":
    main()
