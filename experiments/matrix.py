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

from experiments.cells import IMAGENET, SCRATCH, Cell, RunContext, checkpoint_file, checkpoint_ready
from experiments.data import KNOWN_SETS, load_dataset, native_card, portable_path
from experiments.derived import DERIVED, root_of
from experiments.knowledge_base import KnowledgeBase, save_kb, union_find
from experiments.protocol import Protocol, ProtocolError
from experiments.store import ResultStore, open_store
from imagesets import atomic_path, atomic_write_text

__all__ = ["MatrixPlan", "plan_matrix", "target_groups", "build_matrix", "finetune_frame", "summary_table", "export_kb",
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


def target_groups(protocol: Protocol, names: Sequence[str]) -> dict[str, str]:
    """Each name's independence group: derived tasks join their root set, twins join each
    other (union-find over the declared twin pairs). Two names in one group share images."""
    base = union_find(list(dict.fromkeys(root_of(n) for n in names)), [tuple(t) for t in protocol.twins])
    roots = {n: base[root_of(n)] for n in names}
    members: dict[str, list[str]] = {}
    for n, r in roots.items():
        members.setdefault(r, []).append(root_of(n))
    # name each group by its alphabetically first member root, so the label is stable
    label = {r: sorted(set(m))[0] for r, m in members.items()}
    return {n: label[r] for n, r in roots.items()}


def _same_group(protocol: Protocol, source: str, target: str) -> bool:
    g = target_groups(protocol, [source, target])
    return g[source] == g[target]


def plan_matrix(protocol: Protocol, sources: Sequence[str] | None = None,
                targets: Sequence[str] | None = None, repeats: int | None = None) -> MatrixPlan:
    """All cells of the grid; twins never both targets.

    A source is never fine-tuned on a target of its own group (itself, its twin, a task cut
    from it) unless ``include_self``: its pretraining saw those images, test rows included.
    """
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
    plan.pretrain = [Cell("pretrain", s, "", -1, protocol.pretrain_hash) for s in srcs
                     if s not in (SCRATCH, IMAGENET)]
    fine_sources = srcs + ([SCRATCH] if protocol.scratch and SCRATCH not in srcs else [])
    for r in range(n):  # repeat-major: an interrupted run still holds whole matrices
        for t in tgts:
            plan.finetune += [Cell("finetune", s, t, r, h) for s in fine_sources
                              if protocol.include_self or s in (SCRATCH, IMAGENET)
                              or not _same_group(protocol, s, t)]
    return plan


def check_datasets(plan: MatrixPlan, data_dir: str) -> dict[str, object]:
    """Load every dataset once up front, so a typo fails in a second, not an hour in."""
    p = plan.protocol
    names = [s for s in plan.sources if s not in (SCRATCH, IMAGENET)] + plan.targets
    return {n: load_dataset(n, data_dir, p.side, p.channels) for n in dict.fromkeys(names)}


def build_matrix(plan: MatrixPlan, backend, data_dir: str, run_dir: str | os.PathLike,  # noqa: ANN001
                 store_url: str | None = None, on_event: Event | None = None,
                 checkpoint_dir: str | os.PathLike | None = None) -> dict:
    """Run the pending cells of ``plan`` (pretrain stage, then fine-tune stage) and report.

    ``checkpoint_dir`` (default ``<run_dir>/checkpoints``) holds the source checkpoints; a
    checkpoint already there with the same pretrain hash is reused, never retrained.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProtocolError(f"cannot create run folder {run_dir}: {exc}") from exc
    store = open_store(store_url, run_dir)
    check_datasets(plan, data_dir)
    atomic_write_text(run_dir / "protocol.json", json.dumps(
        {**plan.protocol.to_dict(), "hash": plan.protocol.hash, "pretrain_hash": plan.protocol.pretrain_hash},
        indent=2) + "\n")
    ctx = RunContext(plan.protocol, str(data_dir), str(run_dir), store_url,
                     checkpoint_dir=str(checkpoint_dir or ""))
    ck_dir = ctx.checkpoints
    emit = on_event or (lambda _e: None)
    done = store.keys()

    def pending(cells: list[Cell]) -> list[Cell]:
        return [c for c in cells
                if (c.kind == "pretrain" and not checkpoint_ready(ck_dir, c.source, c.protocol_hash))
                or (c.kind != "pretrain" and c.key not in done)]

    todo_pre, todo_fine = pending(plan.pretrain), pending(plan.finetune)
    emit({"event": "plan", "total": len(plan.cells), "done": len(plan.cells) - len(todo_pre) - len(todo_fine)})
    failed: list[dict] = []
    computed = [0]

    def watch(e: dict) -> None:
        if e.get("event") == "failed":
            failed.append(e)
        if e.get("event") == "done" and not e.get("record", {}).get("skipped"):
            computed[0] += 1
        emit(e)

    backend.run(todo_pre, ctx, watch)
    _await_pretrain(plan, store, ck_dir, backend, ctx, watch)
    bad_sources = {c.source for c in plan.pretrain if not checkpoint_ready(ck_dir, c.source, c.protocol_hash)}
    runnable = [c for c in todo_fine if c.source not in bad_sources]
    for c in todo_fine:
        if c.source in bad_sources:
            watch({"event": "failed", "key": c.key, "label": c.label, "error": f"source {c.source} not pretrained"})
    backend.run(runnable, ctx, watch)
    store.compact(run_dir)
    return {"store": store.url, "run_dir": str(run_dir), "failed": failed, "checkpoints": str(ck_dir),
            "ran": computed[0], "total": len(plan.cells)}


def _await_pretrain(plan: MatrixPlan, store: ResultStore, ck_dir: Path, backend, ctx: RunContext,  # noqa: ANN001
                    watch: Event, poll_s: float = 1.0) -> None:
    """Wait for sources another worker is pretraining (its claim is live); when a claim
    lapses without a checkpoint (that worker died), pretrain the source here."""
    import time

    tried: set[str] = set()
    while True:
        waiting = [c for c in plan.pretrain if c.key not in tried
                   and not checkpoint_ready(ck_dir, c.source, c.protocol_hash)]
        if not waiting:
            return
        # an expired probe claim takes nothing from a live holder; it only tells us who is free
        free = [c for c in waiting if store.claim(f"{c.key}__checkpoint", "probe:0:free", lease_s=-1)]
        if free:  # nobody holds these (never run, or their worker died): run them here, once
            tried.update(c.key for c in free)
            backend.run(free, ctx, watch)
            continue
        time.sleep(poll_s)


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
    groups = target_groups(plan.protocol, list(sets))
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
            "organ": known.get("organ", ""), "native_size": known.get("native_size", ""),
            "caveats": known.get("caveats", ""),
            "image_set": name if npz.is_file() else "",
            "provenance": (f"derived from {DERIVED[name].parent}: {DERIVED[name].description}" if name in DERIVED
                           else f"ImageSet card of {portable_path(card.source)}"),
        })
        if name in DERIVED:
            parent_row = KNOWN_SETS.get(root_of(name), {})
            rows[-1].update({k: parent_row.get(k, "") for k in ("domain", "modality", "organ", "native_size",
                                                                 "licence", "caveats")} | {"image_set": name})
        rows[-1]["group"] = groups[name]
    return pd.DataFrame(rows)


def export_kb(plan: MatrixPlan, store: ResultStore, run_dir: str | os.PathLike, data_dir: str, name: str,
              out: str | os.PathLike | None = None, checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """Write the measured matrix as a KB (per-seed records, dataset cards with groups,
    checkpoints, manifest with groups, twins and derived tasks)."""
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
    pre = {r["source"]: r for r in store.records()
           if r.get("kind") == "pretrain" and r.get("protocol_hash") == p.pretrain_hash}
    sources = [s for s in plan.sources if s in set(df["source"])]
    if SCRATCH in set(df["source"]) and SCRATCH not in sources:
        sources.append(SCRATCH)
    manifest = {
        "name": name,
        "description": f"Measured by catscans build-matrix, protocol {p.name} ({p.description})",
        "metric": "roc_auc", "architecture": p.arch, "baseline_source": SCRATCH if p.scratch else None,
        "protocol": {**p.to_dict(), "hash": p.hash, "pretrain_hash": p.pretrain_hash},
        "twins": [list(t) for t in p.twins],
        "groups": target_groups(p, [*plan.sources, *plan.targets]),
        "derived": {t: DERIVED[t].to_dict() for t in plan.targets if t in DERIVED},
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
    src_dir = Path(checkpoint_dir) if checkpoint_dir else Path(run_dir) / "checkpoints"
    ck_dir = path / "checkpoints"
    for s in plan.sources:
        ck = checkpoint_file(src_dir, s)
        if checkpoint_ready(src_dir, s, p.pretrain_hash) and ck.resolve() != checkpoint_file(ck_dir, s).resolve():
            for src, dst in ((ck, ck_dir / f"{s}.safetensors"), (ck.with_suffix(".json"), ck_dir / f"{s}.json")):
                with atomic_path(dst) as tmp:
                    shutil.copy2(src, tmp)
    return path
