"""``read_imageset``: one entry point for every source, with parallel, bounded-memory decoding.

Memory: the file list is split into chunks; each worker process decodes one file at a
time and sends back only its side x side array, so the parent holds N x side x side x C
bytes plus at most ``2 x workers`` chunks in flight, never a full-resolution set.
Subsampling (``max_images``) happens on the file list, before anything is decoded.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np

from imagesets._card import apply_policy, check_labels, make_card, printable, subsample_index
from imagesets._npz import dense_labels, load_npz_arrays, medmnist_npz, resize_array
from imagesets._pixels import MAX_PIXELS, decode_chunk
from imagesets._scan import Listing, scan_csv, scan_folder
from imagesets._types import ChannelPolicy, ImageSet, ImageSetError, SkippedFile

SERIAL_BELOW = 64  # fewer files than this: a process pool costs more than it saves
# fork on Linux: workers start in ~10 ms instead of ~1 s (spawn re-imports numpy/PIL/pydicom),
# and they only run PIL/numpy/pydicom code, never torch or OpenMP, so forking is safe here.
START_METHOD = "fork" if sys.platform.startswith("linux") and "fork" in get_all_start_methods() else "spawn"
Result = tuple[np.ndarray | None, dict[str, Any] | None, str | None, str]


def _progress_bar(enabled: bool) -> Any:
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)


def decode_paths(paths: list[str], side: int, grey: bool, workers: int | None = None,
                 progress: bool = False, label: str = "decoding") -> list[Result]:
    """Decode ``paths`` in order; a process pool of ``workers`` (default: up to 2 cores)."""
    n = len(paths)
    if workers is None:
        workers = max(1, min(2, os.cpu_count() or 1))
    chunk = int(np.clip(n // max(1, workers * 8), 8, 64))
    chunks = [paths[i:i + chunk] for i in range(0, n, chunk)]
    results: list[list[Result] | None] = [None] * len(chunks)
    pool = None
    if workers > 1 and n >= SERIAL_BELOW:
        with warnings.catch_warnings():  # py>=3.12 warns about fork with threads; see START_METHOD
            warnings.simplefilter("ignore", DeprecationWarning)
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context(START_METHOD))
            pool.submit(os.getpid).result()  # fork the workers now, before the progress thread exists
    with _progress_bar(progress) as bar:
        task = bar.add_task(label, total=n) if bar is not None else None
        if pool is None:
            for i, c in enumerate(chunks):
                results[i] = decode_chunk(c, side, grey, MAX_PIXELS)
                if bar is not None:
                    bar.advance(task, len(c))
        else:
            with pool:
                pending: dict[Future, int] = {}
                nxt = 0
                try:
                    while nxt < len(chunks) or pending:
                        while nxt < len(chunks) and len(pending) < 2 * workers:
                            pending[pool.submit(decode_chunk, chunks[nxt], side, grey, MAX_PIXELS)] = nxt
                            nxt += 1
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            i = pending.pop(fut)
                            results[i] = fut.result()
                            if bar is not None:
                                bar.advance(task, len(chunks[i]))
                except BrokenProcessPool as exc:
                    raise ImageSetError("a decode worker died (out of memory or a crashing decoder); "
                                        "rerun with workers=1 (--workers 1) to find the file") from exc
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    return [r for part in results if part is not None for r in part]


def _from_listing(listing: Listing, source: str, name: str, side: int, channels: ChannelPolicy,
                  max_images: int | None, random_state: int, workers: int | None,
                  progress: bool) -> ImageSet:
    name = printable(name)
    idx = subsample_index(len(listing.paths), max_images,
                          listing.classes if listing.labelled else None, random_state)
    paths = [listing.paths[i] for i in idx]
    results = decode_paths(paths, side, channels == "grey", workers, progress, f"reading {name}")
    skipped = [SkippedFile(p, r, d) for p, r, d in listing.skipped]
    keep: list[int] = []
    for j, (arr, _info, reason, detail) in enumerate(results):
        if arr is None:
            skipped.append(SkippedFile(paths[j], str(reason), detail))
        else:
            keep.append(j)
    if not keep:
        why = ", ".join(f"{k}: {v}" for k, v in Counter(s.reason for s in skipped).most_common()) or "no files"
        raise ImageSetError(f"no readable image in {source} ({why})")
    infos = [results[j][1] for j in keep]
    images = apply_policy([results[j][0] for j in keep], channels, side)  # type: ignore[misc]
    labels, class_names = None, []
    if listing.labelled:
        cls = [listing.classes[idx[j]] for j in keep]
        raw_names = sorted({str(c) for c in cls})
        pos = {c: k for k, c in enumerate(raw_names)}
        labels = np.asarray([pos[str(c)] for c in cls], dtype=np.int64)
        class_names = [printable(c) for c in raw_names]  # folder names may not be UTF-8
    sp = [listing.splits[idx[j]] for j in keep]
    split = np.asarray(sp) if any(s is not None for s in sp) else None
    shapes = np.asarray([i["native"] for i in infos], dtype=np.int32).reshape(-1, 2)
    kept_paths = [paths[j] for j in keep]
    card = make_card(name=name, source=source, side=side, images=images, labels=labels,
                     class_names=class_names, split=split, shapes=shapes,
                     bits=[i["bits"] for i in infos], formats=[i["format"] for i in infos],
                     modalities=[i["modality"] for i in infos], skipped=skipped)
    return ImageSet(name=name, images=images, labels=labels, class_names=class_names, split=split,
                    paths=kept_paths, card=card, native_shapes=shapes, skipped=skipped)


def _from_arrays(arrs: dict[str, Any], source: str, name: str, side: int, channels: ChannelPolicy,
                 max_images: int | None, random_state: int, fmt: str,
                 names: list[str] | None) -> ImageSet:
    images_raw, labels_raw, split_raw = arrs["images"], arrs["labels"], arrs["split"]
    if len(images_raw) == 0:
        raise ImageSetError(f"no readable image in {source} (the npz holds 0 images)")
    class_names: list[str] = []
    if labels_raw is not None:  # on the full set, before subsampling: the same K either way
        labels_raw, class_names = dense_labels(labels_raw, arrs["class_names"] or names, source)
    idx = subsample_index(len(images_raw), max_images, labels_raw, random_state)
    sel = images_raw[idx]
    h, w = sel.shape[1:3]
    grey = channels == "grey"
    if sel.dtype == np.uint8 and (h, w) == (side, side) and (sel.ndim == 3 or sel.shape[-1] in (1, 3)):
        x = sel if sel.ndim == 4 else sel[..., None]
        if x.shape[-1] == 3 and channels == "keep" and (x[..., 0] == x[..., 1]).all() \
                and (x[..., 1] == x[..., 2]).all():
            x = x[..., :1]
        arrays = list(x)
    else:
        arrays = [resize_array(im, side, grey) for im in sel]
    images = apply_policy(arrays, channels, side)
    labels = labels_raw[idx] if labels_raw is not None else None
    split = split_raw[idx] if split_raw is not None else None
    shapes = np.tile(np.asarray([[h, w]], dtype=np.int32), (len(idx), 1))
    bits = 8 * sel.dtype.itemsize if np.issubdtype(sel.dtype, np.integer) else 32
    card = make_card(name=name, source=source, side=side, images=images, labels=labels,
                     class_names=list(class_names), split=split, shapes=shapes,
                     bits=[bits] * len(idx), formats=[fmt] * len(idx), modalities=[], skipped=[])
    return ImageSet(name=name, images=images, labels=labels, class_names=list(class_names),
                    split=split, paths=[f"npz:{i}" for i in idx], card=card, native_shapes=shapes)


def read_imageset(spec: str | os.PathLike, *, side: int = 64, channels: ChannelPolicy = "keep",
                  require_labels: bool = False, max_images: int | None = None, random_state: int = 0,
                  workers: int | None = None, progress: bool = False, name: str | None = None) -> ImageSet:
    """Read a folder, CSV manifest, ``.npz`` or ``medmnist:<flag>`` into an :class:`ImageSet`.

    Labels are automatic (folders with class sub-folders, CSV with a ``label`` column and
    npz with labels are labelled; a flat folder is not). Per-file faults are skipped and
    counted on the card; fatal ones raise :class:`ImageSetError` with a one-line message.
    """
    if not isinstance(side, (int, np.integer)) or isinstance(side, bool) or not 1 <= side <= 4096:
        raise ImageSetError(f"side must be an integer in 1..4096, got {side!r}")
    if channels not in ("grey", "rgb", "keep"):
        raise ImageSetError(f"channels must be 'grey', 'rgb' or 'keep', got {channels!r}")
    if max_images is not None and max_images < 1:
        raise ImageSetError(f"max_images must be >= 1, got {max_images}")
    side = int(side)
    text = os.fspath(spec)
    common = {"side": side, "channels": channels, "max_images": max_images, "random_state": random_state}
    if text.lower().startswith("medmnist:"):
        path, names = medmnist_npz(text.split(":", 1)[1])
        iset = _from_arrays(load_npz_arrays(path), text, name or text.split(":", 1)[1],
                            fmt="medmnist", names=names, **common)
    else:
        p = Path(text).expanduser()
        if not p.exists():
            raise ImageSetError(f"no such file or folder: {text}")
        if p.is_dir():
            iset = _from_listing(scan_folder(p), text, name or p.resolve().name, workers=workers,
                                 progress=progress, **common)
        elif p.suffix.lower() == ".npz":
            iset = _from_arrays(load_npz_arrays(p), text, name or p.stem, fmt="npz", names=None, **common)
        elif p.suffix.lower() == ".csv":
            iset = _from_listing(scan_csv(p), text, name or p.stem, workers=workers,
                                 progress=progress, **common)
        else:
            raise ImageSetError(f"cannot read {text}: give a folder, a .csv manifest, a .npz "
                                "or medmnist:<flag>")
    check_labels(iset, require_labels)
    return iset
