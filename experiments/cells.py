"""One cell of the matrix, as a pure job: ``run_cell(cell, ctx) -> record``.

Every backend (in-process, worker processes, Ray tasks) calls this same function;
the cell writes its own record to the store, so a result is kept the moment it
exists, whoever scheduled it. Seeds come from (protocol hash, source, target,
repeat), never from the order of the grid; a pretrain cell's key and seed come from
the *pretrain* hash (source + pretraining settings only), so every protocol, target
list and ``verify`` that shares those settings shares one checkpoint.

A cell is claimed in the store before it runs (a lease), so several workers or
processes on one store never compute the same cell.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from experiments.arithmetic import CELL_THREADS, arithmetic_card
from experiments.data import load_dataset, portable_path, source_split, stable_seed, target_split
from experiments.models import create_model, load_checkpoint, replace_head, save_checkpoint
from experiments.protocol import Protocol
from experiments.store import _safe, cell_key, open_store, worker_id
from experiments.training import (
    fit,
    pick_device,
    predict_proba,
    roc_auc,
    set_determinism,
    to_uint8_tensor,
)

__all__ = ["Cell", "RunContext", "run_cell", "checkpoint_path", "checkpoint_file", "checkpoint_ready",
           "SCRATCH", "IMAGENET", "encode_predictions", "decode_predictions"]

from experiments.knowledge_base import SCRATCH  # noqa: E402 (the from-scratch baseline's name)

IMAGENET = "imagenet"  # torchvision ImageNet weights (torchvision archs, online only)

Event = Callable[[dict], None]


@dataclass(frozen=True)
class Cell:
    kind: str  # pretrain | finetune
    source: str
    target: str  # "" for pretrain
    repeat: int  # fold or seed index; -1 for pretrain
    protocol_hash: str

    @property
    def key(self) -> str:
        return cell_key(self.kind, self.source, self.target, self.repeat, self.protocol_hash)

    @property
    def seed(self) -> int:
        return stable_seed(self.protocol_hash, self.kind, self.source, self.target, self.repeat)

    @property
    def label(self) -> str:
        if self.kind == "pretrain":
            return f"pretrain {self.source}"
        return f"{self.source} → {self.target} #{self.repeat}"


@dataclass(frozen=True)
class RunContext:
    """Everything a worker needs, as plain picklable values (paths, not objects)."""

    protocol: Protocol
    data_dir: str
    run_dir: str
    store_url: str | None
    threads: int = 0  # informative only: a cell always runs with arithmetic.CELL_THREADS threads
    checkpoint_dir: str = ""  # where source checkpoints live; "" = <run_dir>/checkpoints
    predictions: bool = False  # also store per-image test predictions (verify's paired bootstrap)

    @property
    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(self.run_dir) / "checkpoints"


def checkpoint_file(folder: str | os.PathLike, source: str) -> Path:
    """``<folder>/<source>.safetensors`` (name made file-safe)."""
    return Path(folder) / f"{_safe(source)}.safetensors"


def checkpoint_path(run_dir: str | os.PathLike, source: str) -> Path:
    """The default checkpoint of ``source`` in a run folder: ``<run_dir>/checkpoints/``."""
    return checkpoint_file(Path(run_dir) / "checkpoints", source)


def checkpoint_ready(folder: str | os.PathLike, source: str, pretrain_hash: str) -> bool:
    """A complete checkpoint of ``source`` pretrained with exactly these settings."""
    import json

    ck = checkpoint_file(folder, source)
    if not ck.exists():
        return False
    try:
        meta = json.loads(ck.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("pretrain_hash") == pretrain_hash


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _base_record(cell: Cell, proto: Protocol) -> dict:
    return {
        **asdict(cell), "key": cell.key, "seed": cell.seed, "protocol": proto.name,
        "arch": proto.arch, "side": proto.side, "metric": "roc_auc", "host": socket.gethostname(),
        "torch": torch.__version__, "python": platform.python_version(), "started_at": _now(),
    }


def _pretrain(cell: Cell, ctx: RunContext, emit: Event) -> dict:
    p = ctx.protocol
    ds = load_dataset(cell.source, ctx.data_dir, p.side, p.channels)
    sp = source_split(ds, p.evaluation.split, p.seed, p.pretrain.max_images)
    model = create_model(p.arch, ds.n_classes, p.channels, drop=p.pretrain.drop)
    res = fit(model, (ds.images[sp.train], ds.labels[sp.train]), (ds.images[sp.val], ds.labels[sp.val]),
              p.pretrain, cell.seed, on_epoch=lambda e, n, v: emit({"epoch": e, "epochs": n, "val_auc": v}))
    test_auc = roc_auc(ds.labels[sp.test], predict_proba(model, to_uint8_tensor(ds.images[sp.test],
                                                                                pick_device()), pick_device()))
    ck = checkpoint_file(ctx.checkpoints, cell.source)
    save_checkpoint(model.cpu(), ck, {
        "arch": p.arch, "num_classes": ds.n_classes, "in_chans": p.channels, "class_names": ds.class_names,
        "side": p.side, "source": cell.source, "protocol": p.name, "pretrain_hash": p.pretrain_hash,
        "pretrain": p.to_dict()["pretrain"], "split": list(p.evaluation.split), "protocol_seed": p.seed,
        "seed": cell.seed, "val_auc": res.best_val_auc, "test_auc": test_auc,
        "card": ds.card.to_dict() | {"source": portable_path(ds.card.source)},
    })
    return {"value": test_auc, "val_auc": res.best_val_auc, "best_epoch": res.best_epoch,
            "epochs": res.epochs_run, "n_train": len(sp.train), "n_val": len(sp.val), "n_test": len(sp.test),
            "train_s": res.wall_s, "checkpoint": _shown(ck, ctx.run_dir)}


def _shown(path: Path, run_dir: str) -> str:
    """A record's path: relative to the run folder when inside it, else repo-relative."""
    try:
        return str(path.resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return portable_path(path)


def _source_model(cell: Cell, ctx: RunContext, n_classes: int) -> torch.nn.Module:
    p = ctx.protocol
    if cell.source == SCRATCH:
        return create_model(p.arch, n_classes, p.channels, drop=p.finetune.drop)
    if cell.source == IMAGENET:
        return create_model(p.arch, n_classes, p.channels, pretrained=True, drop=p.finetune.drop)
    ck = checkpoint_file(ctx.checkpoints, cell.source)
    model, meta = load_checkpoint(ck)
    # "external": weights not pretrained by any protocol (a hub model or a user's file, written by
    # recommender.candidates for verify); its cell's source name carries the weights' content hash
    if meta.get("pretrain_hash") != p.pretrain_hash and not meta.get("external"):
        from experiments.models import ModelError

        raise ModelError(f"checkpoint {ck} was pretrained with other settings (pretrain hash "
                         f"{meta.get('pretrain_hash')}, protocol wants {p.pretrain_hash})")
    model = replace_head(model, n_classes)
    if hasattr(model, "drop"):
        model.drop = torch.nn.Dropout(p.finetune.drop)
    return model


def _finetune(cell: Cell, ctx: RunContext, emit: Event) -> dict:
    p = ctx.protocol
    ds = load_dataset(cell.target, ctx.data_dir, p.side, p.channels)
    sp = target_split(ds, p.evaluation, p.seed, cell.repeat)
    if len(np.unique(ds.labels[sp.test])) < 2 or len(np.unique(ds.labels[sp.train])) < 2:
        from imagesets import ImageSetError

        raise ImageSetError(f"{cell.target}: the train or test split holds fewer than two classes")
    torch.manual_seed(cell.seed)  # the new head's init
    model = _source_model(cell, ctx, ds.n_classes)
    res = fit(model, (ds.images[sp.train], ds.labels[sp.train]), (ds.images[sp.val], ds.labels[sp.val]),
              p.finetune, cell.seed, on_epoch=lambda e, n, v: emit({"epoch": e, "epochs": n, "val_auc": v}))
    dev = pick_device()
    proba = predict_proba(model, to_uint8_tensor(ds.images[sp.test], dev), dev)
    test_auc = roc_auc(ds.labels[sp.test], proba)
    extra = {"test_predictions": encode_predictions(proba, ds.labels[sp.test], sp.test)} if ctx.predictions else {}
    return {**extra, "value": test_auc, "val_auc": res.best_val_auc, "best_epoch": res.best_epoch,
            "epochs": res.epochs_run, "n_train": len(sp.train), "n_val": len(sp.val), "n_test": len(sp.test),
            "train_s": res.wall_s, "fold": cell.repeat if p.evaluation.mode == "folds" else -1,
            "seed_index": cell.repeat if p.evaluation.mode == "seeds" else -1,
            "history": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()}
                        for h in res.history]}


def encode_predictions(proba: np.ndarray, labels: np.ndarray, index: np.ndarray) -> dict:
    """Test predictions in a few bytes per image: probabilities as uint16 (positive class only
    when binary), labels as int16, both base64; ``index_digest`` names the test rows, so two
    records can be checked to predict the same images before they are paired."""
    import base64
    import hashlib

    p = proba[:, 1] if proba.shape[1] == 2 else proba
    q = np.round(np.clip(p, 0, 1) * 65535).astype("<u2")
    return {"n_classes": int(proba.shape[1]), "n": int(len(labels)),
            "proba_u16": base64.b64encode(q.tobytes()).decode(),
            "labels_i16": base64.b64encode(np.asarray(labels, dtype="<i2").tobytes()).decode(),
            "index_digest": hashlib.blake2b(np.asarray(index, dtype="<i8").tobytes(), digest_size=8).hexdigest()}


def decode_predictions(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities n x classes, labels n) from :func:`encode_predictions`."""
    import base64

    k, n = int(d["n_classes"]), int(d["n"])
    q = np.frombuffer(base64.b64decode(d["proba_u16"]), dtype="<u2").astype(np.float64) / 65535
    y = np.frombuffer(base64.b64decode(d["labels_i16"]), dtype="<i2").astype(np.int64)
    p = np.stack([1 - q, q], 1) if k == 2 else q.reshape(n, k)
    return p, y


def _done(cell: Cell, ctx: RunContext, store) -> dict | None:  # noqa: ANN001
    done = store.get(cell.key)
    if cell.kind == "pretrain" and not checkpoint_ready(ctx.checkpoints, cell.source, cell.protocol_hash):
        return None
    return done if done is not None else ({"key": cell.key} if cell.kind == "pretrain" else None)


def run_cell(cell: Cell, ctx: RunContext, emit: Event | None = None) -> dict:
    """Run one cell, write its record to the store, return the record.

    Skips (``skipped: True``) a cell already stored, and one that another live worker has
    claimed (``claimed_by`` set): the claim is a lease in the store, released when the
    record is written or the cell fails.
    """
    store = open_store(ctx.store_url, Path(ctx.run_dir))
    done = _done(cell, ctx, store)
    if done is not None:
        return {**done, "skipped": True}
    owner = worker_id()
    # a pretrain record without its checkpoint (deleted, or another folder) must not block the
    # claim, so the checkpoint is claimed under its own key
    claim_key = cell.key if cell.kind != "pretrain" else f"{cell.key}__checkpoint"
    if not store.claim(claim_key, owner):
        done = _done(cell, ctx, store)
        return {**(done or {"key": cell.key}), "skipped": True, "claimed_by": None if done else "another worker"}
    try:
        if (done := _done(cell, ctx, store)) is not None:  # finished between our check and our claim
            return {**done, "skipped": True}
        return _run_claimed(cell, ctx, store, emit)
    finally:
        store.release(claim_key, owner)


def _run_claimed(cell: Cell, ctx: RunContext, store, emit: Event | None) -> dict:  # noqa: ANN001
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(CELL_THREADS)  # never ctx.threads: the result must not follow the schedule
    try:
        return _compute(cell, ctx, store, emit)
    finally:
        torch.set_num_threads(prev_threads)


def _compute(cell: Cell, ctx: RunContext, store, emit: Event | None) -> dict:  # noqa: ANN001
    sink = emit or (lambda _e: None)

    def emit(e: dict) -> None:
        sink({"event": "epoch", "key": cell.key, "label": cell.label, **e})

    t0 = time.perf_counter()
    rec = _base_record(cell, ctx.protocol)
    set_determinism(cell.seed)
    emit({"event": "start"})
    body = _pretrain(cell, ctx, emit) if cell.kind == "pretrain" else _finetune(cell, ctx, emit)
    rec.update(body)
    rec["arithmetic"] = arithmetic_card()
    rec.update({"wall_s": round(time.perf_counter() - t0, 3), "finished_at": _now(), "status": "ok",
                "pid": os.getpid(), "worker": worker_id(), "value": float(np.round(body["value"], 6))})
    if cell.kind == "pretrain":
        rec["pretrain_hash"] = cell.protocol_hash
    if not store.put(rec):  # a record already there (only possible when a lease expired mid-run)
        return {**(store.get(cell.key) or rec), "skipped": True}
    return rec
