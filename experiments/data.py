"""Datasets for the matrix: load once per process, fixed splits, per-cell subsamples.

Splits are derived from the dataset name and the protocol seed only, never from the
source or the repeat, so every source is fine-tuned and tested on the same target
images; only the training subsample (seeds mode) or the fold changes per repeat.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagesets import ImageSet, ImageSetError, default_data_dir, read_imageset

__all__ = ["default_data_dir", "load_dataset", "portable_path", "resolve_dataset", "stable_seed", "stratified_take", "fixed_split",
           "SourceSplit", "TargetSplit", "native_card", "source_split", "target_split", "KNOWN_SETS"]

# Facts about the shared sets (SOURCES.md) that an ImageSet card cannot know: domain, modality,
# organ, the size of the images the set was made from (its files are 28-64 px), licence as
# stated (not checked) and the caveats SOURCES.md gives (shared series, acquisition shortcuts).
def _set(domain: str, modality: str, organ: str, native: str, licence: str, caveats: str = "") -> dict[str, str]:
    return {"domain": domain, "modality": modality, "organ": organ, "native_size": native,
            "licence": licence, "caveats": caveats}


KNOWN_SETS: dict[str, dict[str, str]] = {
    "pneumoniamnist": _set("medical", "xray", "chest", "28x28 (MedMNIST)", "CC BY 4.0",
                           "same images as kermany_cxr (one group)"),
    "breastmnist": _set("medical", "ultrasound", "breast", "28x28 (MedMNIST)", "CC BY 4.0"),
    "retinamnist": _set("medical", "fundus", "eye", "28x28 (MedMNIST)", "CC BY 4.0", "ordinal DR grades"),
    "brain_tumor_mri": _set("medical", "mri", "brain", "224x224", "CC0-1.0 (unverified)",
                            "combines three public sources"),
    "ham10000_derm": _set("medical", "dermoscopy", "skin", "200x150", "CC BY-NC 4.0 (unverified)"),
    "pbc_blood": _set("medical", "microscopy", "blood", "360x363", "CC BY 4.0 (unverified)"),
    "kermany_cxr": _set("medical", "xray", "chest", "224x224", "CC BY 4.0 (unverified)",
                        "same images as pneumoniamnist (one group)"),
    "cifar10_subset": _set("natural", "photo", "", "32x32", "unstated", "JPEG-decoded pixels"),
    "dtd_10class": _set("natural", "texture", "", "varies", "research use",
                        "only the first 10 DTD classes"),
    "fashion_mnist_subset": _set("natural", "photo", "", "28x28", "MIT"),
    "mnist_test10k": _set("natural", "digits", "", "28x28", "CC BY-SA 3.0 (commonly cited)",
                          "official test split only"),
    "kmnist_test10k": _set("natural", "characters", "", "28x28", "CC BY-SA 4.0", "official test split only"),
    # added 2026-12-06 (SOURCES.md, second table); licences as stated by the origin, not checked
    "malaria_cells": _set("medical", "microscopy", "blood", "50x50", "unverified",
                          "<= 2 cells per case; infected cases also give uninfected cells"),
    "herlev_pap_smear": _set("medical", "microscopy", "cervix", "40x40", "unverified",
                             "slide IDs lost"),
    "leukemia_all": _set("medical", "microscopy", "blood", "224x224", "unverified",
                         "no patient IDs; classes differ in stain/illumination (colour shortcut)"),
    "lc25000_lung_colon": _set("medical", "histopathology", "lung, colon", "224x224", "unverified",
                               "augmented originals (one per tile group kept); lung and colon from two mirrors"),
    "odir_fundus": _set("medical", "fundus", "eye", "224x224", "unverified",
                        "multi-label source: other findings may co-exist"),
    "alzheimer_mri": _set("medical", "mri", "brain", "176x208", "unverified",
                          "~32 slices per subject; source split by slice, so subjects are shared"),
    "ct_kidney": _set("medical", "ct", "kidney", "512x512", "unverified",
                      "no patient IDs; few series per class"),
    "iq_othnccd_lung_ct": _set("medical", "ct", "lung", "512x512", "unverified",
                               "~110 patients, Benign from ~15; non-square Malignant scans (background shortcut)"),
    "fracatlas_fracture": _set("medical", "xray", "bone", "181-2880 px", "unverified",
                               "body region and metal hardware go with the label; fine fractures invisible at 64 px"),
    "pocus_lung_us": _set("medical", "ultrasound", "lung", "118-1350 px", "unverified",
                          "frames of one clip correlated; web sources differ per class (overlays, probe shapes)"),
    "gtsrb_signs": _set("natural", "photo", "", "20-203 px", "unverified",
                        "one frame per sign track; 7 classes are speed limits"),
    "caltech101_subset": _set("natural", "photo", "", "~300x200", "unverified", "10 largest classes"),
}


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from any values; independent of Python's hash randomisation."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") % (2**31 - 1)


def portable_path(path: str | os.PathLike) -> str:
    """A path for shipped files: relative to the repository when it sits in or beside it
    (``../shared/data/x.npz``), so artifacts carry no machine-specific absolute paths."""
    repo = Path(__file__).resolve().parents[1]
    p = Path(path).resolve()
    for base, prefix in ((repo, ""), (repo.parent, "../")):
        try:
            return prefix + str(p.relative_to(base))
        except ValueError:
            continue
    return str(path)


def resolve_dataset(spec: str, data_dir: str) -> str:
    """The path or spec a dataset name stands for, without reading it (fails fast on a typo).

    A derived task (``experiments.derived``) resolves to its root set's path."""
    from experiments.derived import root_of

    spec = root_of(spec)
    npz = Path(data_dir) / f"{spec}.npz"
    if npz.is_file():
        return str(npz)
    if not (Path(spec).expanduser().exists() or ":" in spec):
        raise ImageSetError(f"unknown dataset '{spec}' (no {npz.name} in {data_dir}, and not a readable path)")
    return spec


@functools.lru_cache(maxsize=32)
def load_dataset(spec: str, data_dir: str, side: int, channels: int) -> ImageSet:
    """A labelled set by shared-npz stem (in ``data_dir``) or any ``read_imageset`` spec.

    Cached per process: a worker reads each set once for all of its cells. A derived task's
    name gives its task, cut from its parent (read through this same cache).
    """
    from experiments.derived import DERIVED, derive

    if spec in DERIVED:
        task = DERIVED[spec]
        return derive(load_dataset(task.parent, data_dir, side, channels), task)
    path = resolve_dataset(spec, data_dir)
    policy = "grey" if channels == 1 else "rgb"
    name = spec if path != spec else None
    return read_imageset(path, side=side, channels=policy, require_labels=True, name=name)


def native_card(spec: str, data_dir: str, side: int):  # noqa: ANN201 (imagesets.Card)
    """The card with the set's own channel count (``keep``), for KB dataset rows."""
    from experiments.derived import DERIVED, derive

    if spec in DERIVED:
        task = DERIVED[spec]
        card = derive(read_imageset(str(Path(data_dir) / f"{task.parent}.npz"), side=side, channels="keep",
                                    require_labels=True, name=task.parent), task).card
        return card
    npz = Path(data_dir) / f"{spec}.npz"
    if npz.is_file():
        return read_imageset(str(npz), side=side, channels="keep", require_labels=True, name=spec).card
    return read_imageset(spec, side=side, channels="keep", require_labels=True).card


def stratified_take(labels: np.ndarray, n: int, rng: np.random.Generator,
                    per_class: int = 0) -> np.ndarray:
    """Indices of a stratified subsample: ``per_class`` each, else ``n`` in proportion (>= 1 per class)."""
    classes, counts = np.unique(labels, return_counts=True)
    if per_class > 0:
        alloc = np.minimum(counts, per_class)
    else:
        if n <= 0 or n >= len(labels):
            return rng.permutation(len(labels))
        alloc = np.maximum(1, np.floor(counts / counts.sum() * n)).astype(int)
        alloc = np.minimum(alloc, counts)
        order = np.argsort(-(counts / counts.sum() * n - alloc))
        i = 0
        while alloc.sum() < n and i < 10 * len(classes):
            c = order[i % len(classes)]
            if alloc[c] < counts[c]:
                alloc[c] += 1
            i += 1
    out = [rng.permutation(np.flatnonzero(labels == c))[:a] for c, a in zip(classes, alloc, strict=True)]
    return rng.permutation(np.concatenate(out))


def fixed_split(ds: ImageSet, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """train/val/test per image: the set's own split where it has train+test, else a seeded one."""
    rng = np.random.default_rng(stable_seed("split", ds.name, seed))
    labels = ds.labels
    split = np.asarray(ds.split).astype(object) if ds.split is not None else None
    if split is not None and {"train", "test"} <= set(split.tolist()):
        split = split.copy()
        if "val" not in set(split.tolist()):  # carve validation out of train
            tr = np.flatnonzero(split == "train")
            n_val = max(1, round(len(tr) * fractions[1] / (fractions[0] + fractions[1])))
            split[tr[stratified_take(labels[tr], n_val, rng)]] = "val"
        return split.astype(str)
    out = np.full(len(ds), "train", dtype=object)
    idx = stratified_take(labels, round(len(ds) * fractions[2]), rng)
    out[idx] = "test"
    rest = np.flatnonzero(out == "train")
    out[rest[stratified_take(labels[rest], round(len(ds) * fractions[1]), rng)]] = "val"
    return out.astype(str)


@dataclass
class SourceSplit:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class TargetSplit:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def source_split(ds: ImageSet, fractions: tuple[float, float, float], seed: int,
                 max_train: int, max_eval: int = 1000) -> SourceSplit:
    """Pretraining indices: capped stratified train, validation for early stopping, test for the card."""
    split = fixed_split(ds, fractions, seed)
    rng = np.random.default_rng(stable_seed("source", ds.name, seed))
    parts = {}
    for name, cap in (("train", max_train), ("val", max_eval), ("test", max_eval)):
        idx = np.flatnonzero(split == name)
        parts[name] = idx[stratified_take(ds.labels[idx], cap, rng)]
    return SourceSplit(**parts)


def target_split(ds: ImageSet, ev, seed: int, repeat: int) -> TargetSplit:  # noqa: ANN001 (EvalConfig)
    """Fine-tuning indices for one fold or seed of a target (see module docstring).

    A derived low-data task overrides the training size (``experiments.derived.eval_overrides``)."""
    import dataclasses

    from experiments.derived import eval_overrides

    if eval_overrides(ds.name):
        ev = dataclasses.replace(ev, **eval_overrides(ds.name))
    labels = ds.labels
    if ev.mode == "folds":
        from sklearn.model_selection import StratifiedKFold

        min_count = int(np.unique(labels, return_counts=True)[1].min()) if len(labels) else 0
        if min_count < ev.repeats:
            raise ImageSetError(f"{ds.name}: a class has {min_count} images, fewer than {ev.repeats} folds")
        skf = StratifiedKFold(ev.repeats, shuffle=True, random_state=stable_seed("folds", ds.name, seed))
        train_pool, test = list(skf.split(np.zeros(len(labels)), labels))[repeat]
        rng = np.random.default_rng(stable_seed("fold-val", ds.name, seed, repeat))
        n_val = ev.n_val or max(1, round(0.1 * len(train_pool)))
        val = train_pool[stratified_take(labels[train_pool], n_val, rng)]
        pool = np.setdiff1d(train_pool, val)
        train = pool[stratified_take(labels[pool], ev.n_train, rng, ev.n_per_class)]
        return TargetSplit(train=train, val=val, test=test)
    split = fixed_split(ds, ev.split, seed)
    fixed_rng = np.random.default_rng(stable_seed("target-eval", ds.name, seed))
    test_pool, val_pool = np.flatnonzero(split == "test"), np.flatnonzero(split == "val")
    test = test_pool[stratified_take(labels[test_pool], ev.n_test, fixed_rng)]
    val = val_pool[stratified_take(labels[val_pool], ev.n_val, fixed_rng)]
    rng = np.random.default_rng(stable_seed("target-train", ds.name, seed, repeat))
    train_pool = np.flatnonzero(split == "train")
    train = train_pool[stratified_take(labels[train_pool], ev.n_train, rng, ev.n_per_class)]
    return TargetSplit(train=train, val=val, test=test)
