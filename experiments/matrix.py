"""Build a source x target transfer matrix: plan cells, run both stages, export a KB.

Stage 1 pretrains each source (checkpoint + card); stage 2 fine-tunes every
(source, target, fold/seed), plus a from-scratch baseline per target. Finished
cells are skipped, so a rerun resumes; the matrix is a pivot of the stored records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from experiments.cells import IMAGENET, SCRATCH, Cell, RunContext, checkpoint_path
from experiments.data import KNOWN_SETS, load_dataset, native_card, portable_path
from experiments.knowledge_base import KnowledgeBase, save_kb
from experiments.protocol import Protocol, ProtocolError
from experiments.store import ResultStore, open_store

__all__ = ["MatrixPlan", "plan_matrix", "build_matrix", "finetune_frame", "summary_table", "export_kb",
           "default_run_dir", "check_datasets"]

Event = Callable[[dict], None]


@dataclass
class MatrixPlan:
    protocol: Protocol
    sources: list[str]
    targets: list[str]
    pretrain: list[Cell] = field(default_factory=list)
    finetune: list[Cell] = field(default_factory=list)

    @property
    def cells(self) -> list[Cell]:
        return self.pretrain + self.finetune


def default_run_dir(protocol: Protocol, root: str | os.PathLike | None = None) -> Path:
    """``runs/<name>-<hash8>`` under ``root`` (default: the current directory)."""
    return Path(root or ".") / "runs" / f"{protocol.name}-{protocol.hash[:8]}"


def _is_twin(protocol: Protocol, a: str, b: str) -> bool:
    return any({a, b} == set(t) for t in protocol.twins)


def plan_matrix(protocol: Protocol, sources: Sequence[str] | None = None,
                targets: Sequence[str] | None = None, repeats: int | None = None) -> MatrixPlan:
    """All cells of the grid; self-pairs skipped unless ``include_self``; twins never both targets."""
    srcs = list(sources or protocol.sources)
    tgts = list(targets or protocol.targets)
    if not tgts:
        raise ProtocolError(f"protocol '{protocol.name}' names no targets: pass --targets")
    for t1 in tgts:
        for t2 in tgts:
            if t1 < t2 and _is_twin(protocol, t1, t2):
                raise ProtocolError(f"'{t1}' and '{t2}' are twins (same images): never both as targets")
    h = protocol.hash
    n = repeats or protocol.evaluation.repeats
    plan = MatrixPlan(protocol, srcs, tgts)
    plan.pretrain = [Cell("pretrain", s, "", -1, h) for s in srcs if s not in (SCRATCH, IMAGENET)]
    fine_sources = srcs + ([SCRATCH] if protocol.scratch and SCRATCH not in srcs else [])
    for r in range(n):  # repeat-major: an interrupted run still holds whole matrices
        for t in tgts:
            plan.finetune += [Cell("finetune", s, t, r, h) for s in fine_sources
                              if s != t or protocol.include_self]
    return plan


def check_datasets(plan: MatrixPlan, data_dir: str) -> dict[str, object]:
    """Load every dataset once up front, so a typo fails in a second, not an hour in."""
    p = plan.protocol
    names = [s for s in plan.sources if s not in (SCRATCH, IMAGENET)] + plan.targets
    return {n: load_dataset(n, data_dir, p.side, p.channels) for n in dict.fromkeys(names)}


def build_matrix(plan: MatrixPlan, backend, data_dir: str, run_dir: str | os.PathLike,  # noqa: ANN001
                 store_url: str | None = None, on_event: Event | None = None) -> dict:
    """Run the pending cells of ``plan`` (pretrain stage, then fine-tune stage) and report."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(store_url, run_dir)
    check_datasets(plan, data_dir)
    (run_dir / "protocol.json").write_text(json.dumps(
        {**plan.protocol.to_dict(), "hash": plan.protocol.hash}, indent=2) + "\n")
    ctx = RunContext(plan.protocol, str(data_dir), str(run_dir), store_url)
    emit = on_event or (lambda _e: None)
    done = store.keys()

    def pending(cells: list[Cell]) -> list[Cell]:
        return [c for c in cells if c.key not in done
                or (c.kind == "pretrain" and not checkpoint_path(run_dir, c.source).exists())]

    todo_pre, todo_fine = pending(plan.pretrain), pending(plan.finetune)
    emit({"event": "plan", "total": len(plan.cells), "done": len(plan.cells) - len(todo_pre) - len(todo_fine)})
    failed: list[dict] = []

    def watch(e: dict) -> None:
        if e.get("event") == "failed":
            failed.append(e)
        emit(e)

    backend.run(todo_pre, ctx, watch)
    bad_sources = {c.source for c in plan.pretrain if not checkpoint_path(run_dir, c.source).exists()}
    runnable = [c for c in todo_fine if c.source not in bad_sources]
    for c in todo_fine:
        if c.source in bad_sources:
            watch({"event": "failed", "key": c.key, "label": c.label, "error": f"source {c.source} not pretrained"})
    backend.run(runnable, ctx, watch)
    store.compact(run_dir)
    return {"store": store.url, "run_dir": str(run_dir), "failed": failed,
            "ran": len(todo_pre) + len(runnable) - len(failed), "total": len(plan.cells)}


def finetune_frame(store: ResultStore, plan: MatrixPlan) -> pd.DataFrame:
    """Fine-tune records of this plan (protocol hash, sources, targets) as a DataFrame."""
    keys = {c.key for c in plan.finetune}
    recs = [r for r in store.records() if r.get("key") in keys]
    return pd.DataFrame(recs)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (target, source): mean, std and n of test ROC-AUC over folds/seeds."""
    if df.empty:
        return pd.DataFrame(columns=["target", "source", "auc_mean", "auc_std", "n"])
    g = df.groupby(["target", "source"])["value"]
    out = pd.DataFrame({"auc_mean": g.mean(), "auc_std": g.std(ddof=1), "n": g.count()}).reset_index()
    return out.sort_values(["target", "auc_mean"], ascending=[True, False]).reset_index(drop=True)


def _git_commit() -> tuple[str, bool]:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                                    text=True, timeout=10).stdout.strip())
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return "", False


def _dataset_rows(plan: MatrixPlan, data_dir: str) -> pd.DataFrame:
    rows = []
    sets = check_datasets(plan, data_dir)
    for name in sets:
        card = native_card(name, data_dir, plan.protocol.side)
        native = card.native_size
        role = ("both" if name in plan.sources and name in plan.targets
                else "target" if name in plan.targets else "source")
        known = KNOWN_SETS.get(name, {})
        npz = Path(data_dir) / f"{name}.npz"
        rows.append({
            "name": name, "role": role, "domain": known.get("domain", ""), "modality": known.get("modality", ""),
            "n_images": card.n_images, "n_classes": card.n_classes, "channels": card.channels,
            "resolution": int(max(native.get("h_median", 0), native.get("w_median", 0)) or card.side),
            "task": "binary" if card.n_classes == 2 else "multiclass", "licence": known.get("licence", ""),
            "image_set": name if npz.is_file() else "", "provenance": f"ImageSet card of {portable_path(card.source)}",
        })
    return pd.DataFrame(rows)


def export_kb(plan: MatrixPlan, store: ResultStore, run_dir: str | os.PathLike, data_dir: str, name: str,
              out: str | os.PathLike | None = None) -> Path:
    """Write the measured matrix as a KB (records, dataset cards, checkpoints, manifest)."""
    p = plan.protocol
    df = finetune_frame(store, plan)
    if df.empty:
        raise ProtocolError("nothing to export: no finished fine-tuning cells for this protocol")
    sha, dirty = _git_commit()
    seeds_mode = p.evaluation.mode == "seeds"
    records = pd.DataFrame({
        "source": df["source"], "target": df["target"], "metric": "roc_auc", "value": df["value"],
        "fold": -1 if seeds_mode else df["repeat"], "seed": df["repeat"] if seeds_mode else -1,
        "architecture": p.arch, "protocol": f"{p.name}@{p.hash}", "study": "catscans build-matrix",
        "file": "", "commit": sha,
    }).sort_values(["target", "source", "fold", "seed"]).reset_index(drop=True)
    pre = {r["source"]: r for r in store.records() if r.get("kind") == "pretrain" and r.get("protocol_hash") == p.hash}
    sources = [s for s in plan.sources if s in set(df["source"])]
    if SCRATCH in set(df["source"]) and SCRATCH not in sources:
        sources.append(SCRATCH)
    manifest = {
        "name": name,
        "description": f"Measured by catscans build-matrix, protocol {p.name} ({p.description})",
        "metric": "roc_auc", "architecture": p.arch, "baseline_source": SCRATCH if p.scratch else None,
        "protocol": {**p.to_dict(), "hash": p.hash}, "twins": [list(t) for t in p.twins],
        "sources": sources, "targets": [t for t in plan.targets if t in set(df["target"])],
        "evaluation": f"test ROC-AUC (weighted one-vs-rest for multi-class) over {p.evaluation.repeats} "
                      f"{p.evaluation.mode}; early stopping on a separate validation set",
        "source_pretraining": {s: {k: pre[s].get(k) for k in ("value", "val_auc", "epochs", "n_train", "seed")}
                               for s in pre if s in plan.sources},
        "provenance": {"commit": sha, "dirty": dirty, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "torch": df["torch"].iloc[0] if "torch" in df else "", "hosts": sorted(set(df.get("host", [])))},
    }
    kb = KnowledgeBase(name=name, records=records, datasets=_dataset_rows(plan, data_dir), manifest=manifest)
    path = save_kb(kb, out)
    ck_dir = path / "checkpoints"
    for s in plan.sources:
        ck = checkpoint_path(run_dir, s)
        if ck.exists():
            ck_dir.mkdir(exist_ok=True)
            shutil.copy2(ck, ck_dir / f"{s}.safetensors")
            shutil.copy2(ck.with_suffix(".json"), ck_dir / f"{s}.json")
    return path
