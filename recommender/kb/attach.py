"""Attach to KBs what meta_features computes: dataset profiles, similarities, transferability.

The meta_features package computes things about datasets and checkpoints; deciding which KB
dataset a profile stands for, and writing rows into a KB's tables, is the recommender's
business (knowledge bases live here). ``catscans kb attach`` rebuilds the shipped profiles
from ../shared/data and attaches them to every KB (:func:`attach_all`); ``catscans kb score``
scores a KB's source checkpoints on its targets (:func:`score_transferability`).

Stand-ins: when ``image_set`` differs from the dataset's name (ham10000_derm for dermamnist,
pbc_blood for bloodmnist, dtd_10class for textures...), the shared file is a stratified
subsample, so class-count features (imbalance, class entropy) are left NaN and counts,
classes and channels come from the KB card, which describes the real dataset.

Label-based meta-features of a KB *target* (the ``label`` group: class separability on
probe features; and the class-count features) are computed on the rows its KB's protocol
fine-tunes on (:func:`protocol_train_rows`), never on its test images: a user's folder is
all training data, and a KB target's test labels are what its AUC is measured on. When the
target's image set is not under the data folder they are left NaN rather than taken from
the all-rows profile.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.derived import DERIVED, derive, is_derived, root_of
from experiments.knowledge_base import (
    PAIR_COLUMNS,
    SCRATCH,
    KnowledgeBase,
    kb_lock,
    list_kbs,
    load_kb,
)
from imagesets import ImageSet, atomic_path, default_data_dir
from meta_features import (
    PROFILE_SIDE,
    SIMILARITIES,
    CheckpointFeatureError,
    DatasetProfile,
    Task2VecEmbedding,
    Task2VecError,
    build_shipped_profiles,
    channel_policy,
    domain_distance,
    list_meta_features,
    load_scaler,
    load_shipped_profiles,
    load_source,
    modality_code,
    pair_similarities,
    probe_digest,
    task2vec_embedding,
)
from meta_features.scratch import score_random_init
from meta_features.transferability import (
    ESTIMATORS,
    KIND,
    TransferabilityError,
    score_loaded,
    train_rows,
)

log = logging.getLogger(__name__)

SIMILARITY_FEATURES = list(SIMILARITIES)  # every registered profile similarity (meta_features)
STAND_IN_NAN = ["dataset.imbalance_ratio", "dataset.class_entropy"]
LABEL_GROUP = "label"
CLASS_COUNT_FEATURES = STAND_IN_NAN  # computed from labels: training rows only for targets


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def _stem(card: dict) -> str | None:
    v = card.get("image_set")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip() else str(v).strip()


def kb_meta_row(card: dict, profile: DatasetProfile | None, columns: list[str]) -> pd.Series:
    """Meta-features of one KB dataset: profile values (if any), card values where the card knows."""
    row = pd.Series(math.nan, index=columns, dtype=float)
    if profile is not None:
        row.update(profile.meta.reindex(columns))
        if _stem(card) != card.get("name"):
            row[STAND_IN_NAN] = math.nan
    n = _num(card.get("n_images"))
    card_vals = {
        "dataset.log10_n_images": math.log10(n) if n > 0 else math.nan,
        "dataset.n_classes": _num(card.get("n_classes")),
        "dataset.channels": _num(card.get("channels")),
        "dataset.modality_code": modality_code(card.get("modality")),
    }
    for k, v in card_vals.items():
        if k in row.index and math.isfinite(v):
            row[k] = v
    return row


def protocol_train_rows(kb: KnowledgeBase) -> Callable[[ImageSet], np.ndarray]:
    """Rows of a target's image set that ``kb``'s protocol fine-tunes on.

    A KB measured by ``build-matrix`` names its protocol (split fractions and seed): the same
    seeded ``fixed_split`` then gives exactly its training rows. A published study's KB: the
    set's own train split (MedMNIST's, from which Juodelyte et al. drew their 100 per class),
    else a seeded stratified 70% (:func:`meta_features.transferability.train_rows`).
    """
    proto = kb.manifest.get("protocol") or {}
    if isinstance(proto, dict) and "evaluation" in proto and "seed" in proto:
        from experiments.data import fixed_split

        frac, seed = tuple(proto["evaluation"]["split"]), int(proto["seed"])
        return lambda ds: np.flatnonzero(fixed_split(ds, frac, seed) == "train")
    return lambda ds: train_rows(ds, 0)


def train_label_features(imageset: ImageSet, rows: np.ndarray, stand_in: bool = False) -> pd.Series:
    """Label-group meta-features and class-count features on ``rows`` of ``imageset`` only."""
    from meta_features import extract_meta_features
    from meta_features.dataset_features import class_balance

    sub = imageset.subset(np.asarray(rows))
    out = extract_meta_features(sub, groups=[LABEL_GROUP])
    if sub.labels is not None and not stand_in:
        counts = np.bincount(np.asarray(sub.labels, dtype=np.int64), minlength=max(sub.n_classes, 1))
        out = pd.concat([out, pd.Series({f"dataset.{k}": v for k, v in class_balance(counts).items()})])
    else:
        out = pd.concat([out, pd.Series(math.nan, index=CLASS_COUNT_FEATURES)])
    return out.astype(float)


def _label_columns(columns: list[str]) -> list[str]:
    return [c for c in columns if c.startswith(f"{LABEL_GROUP}.") or c in CLASS_COUNT_FEATURES]


def _train_only_labels(kb: KnowledgeBase, cards: dict[str, dict], rows: dict[str, pd.Series],
                       columns: list[str], data_dir: Path | None) -> None:
    """Replace each KB target's label-based features by their training-rows values (in place)."""
    label_cols = _label_columns(columns)
    split = protocol_train_rows(kb)
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    for t in kb.targets:
        if t not in rows:
            continue
        stem = _stem(cards.get(t, {})) or t
        had = bool(rows[t][label_cols].notna().any())
        rows[t][label_cols] = math.nan
        full = _read_labelled(t, stem, data)
        if full is None:
            if had:
                log.warning("label meta-features of target %s left NaN: its image set is not under %s", t, data)
            continue
        vals = train_label_features(full, split(full), stand_in=stem not in (t, root_of(t)))
        rows[t].update(vals.reindex(label_cols))


def train_task2vec(imageset: ImageSet | None, rows: np.ndarray | None = None) -> Task2VecEmbedding | None:
    """A KB target's Task2Vec embedding on ``rows`` (its protocol's training rows): None when
    its image set is absent (``imageset`` None) or Task2Vec cannot use it (one class)."""
    if imageset is None:
        return None
    try:
        return task2vec_embedding(imageset if rows is None else imageset.subset(np.asarray(rows)))
    except Task2VecError as exc:
        log.warning("Task2Vec of target %s left NaN: %s", imageset.name, exc)
        return None


def _read_labelled(name: str, stem: str, data: Path) -> ImageSet | None:
    """The KB dataset's images as its protocol reads them: the shared npz, or a derived task
    (``experiments.derived``) cut from its parent; None when absent or unlabelled."""
    from imagesets import read_imageset

    if is_derived(name):
        task = DERIVED[name]
        parent = _read_labelled(task.parent, task.parent, data)
        return None if parent is None else derive(parent, task)
    path = data / f"{stem}.npz"
    if not path.is_file():
        return None
    full = read_imageset(path, side=PROFILE_SIDE, channels="keep", name=stem)
    return full if full.labels is not None else None


def attach_to_kb(kb_name: str, profiles: dict[str, DatasetProfile] | None = None,
                 scaler: dict | None = None, data_dir: str | Path | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write meta_features.csv and similarity/domain pair features into KB ``kb_name``.

    Idempotent: rows of the features written here are replaced, other rows/columns kept.
    Label-based features of the KB's targets come from their training rows under
    ``data_dir`` (default: the shared data folder). Returns (meta_features, pair_features).
    """
    kb = load_kb(kb_name)
    profiles = profiles if profiles is not None else load_shipped_profiles()
    scaler = scaler if scaler is not None else load_scaler()
    columns = [c for names in list_meta_features().values() for c in names]
    cards = {str(r["name"]): r for r in kb.datasets.to_dict("records")}
    rows = {name: kb_meta_row(card, profiles.get(_stem(card) or ""), columns) for name, card in cards.items()}
    _train_only_labels(kb, cards, rows, columns, data_dir)
    meta = pd.DataFrame(rows).T.rename_axis("dataset").reset_index()
    old = kb.meta_features
    if old is not None and len(old) and "dataset" in old.columns:
        keep = [c for c in old.columns if c not in meta.columns]
        if keep:
            meta = meta.merge(old[["dataset", *keep]], on="dataset", how="left")

    prov = f"catscans meta_features (probe {probe_digest()}, side {PROFILE_SIDE})"
    split, data = protocol_train_rows(kb), Path(data_dir) if data_dir is not None else default_data_dir()
    t2v_train: dict[str, Task2VecEmbedding | None] = {}  # target -> embedding on its training rows
    pairs = kb.records[["source", "target"]].drop_duplicates().itertuples(index=False)
    new_rows = []
    for s, t in pairs:
        cs, ct = cards.get(str(s), {}), cards.get(str(t), {})
        dd = domain_distance(cs, ct)
        if math.isfinite(dd):
            new_rows.append([s, t, "domain_distance", dd, "expert", "catscans cards: domain 3 + modality 2 + channels 1"])
        ps, pt = profiles.get(_stem(cs) or ""), profiles.get(_stem(ct) or "")
        if ps is None or pt is None:
            continue
        if str(t) not in t2v_train:
            full = _read_labelled(str(t), _stem(ct) or str(t), data)
            t2v_train[str(t)] = train_task2vec(full, None if full is None else split(full))
        pt = dataclasses.replace(pt, task2vec=t2v_train[str(t)], task2vec_trivial=None)
        for k, v in pair_similarities(ps, pt, scaler).items():
            if math.isfinite(v):
                where = " (target: its training rows)" if k.startswith("dist_task2vec") else ""
                new_rows.append([s, t, k, v, "similarity", f"{prov}: {ps.name} vs {pt.name}{where}"])
    mine = set(SIMILARITY_FEATURES) | {"domain_distance"}
    pf = _replace_pair_rows(kb, lambda old: old["feature"].isin(mine),
                            pd.DataFrame(new_rows, columns=PAIR_COLUMNS), meta=meta)
    return meta, pf


def _replace_pair_rows(kb: KnowledgeBase, mine: Callable[[pd.DataFrame], pd.Series],
                       new: pd.DataFrame, meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """Under the KB's lock: re-read pair_features.csv, drop the rows ``mine`` selects, add
    ``new``, write it (and ``meta`` as meta_features.csv) atomically. Re-reading inside the
    lock keeps the rows another writer (attach vs score) added since this KB was loaded."""
    path = Path(kb.path) / "pair_features.csv"
    with kb_lock(kb):
        old = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=PAIR_COLUMNS)
        old = old.reindex(columns=PAIR_COLUMNS)
        keep = old[~mine(old)] if len(old) else old
        pf = pd.concat([keep, new], ignore_index=True) if len(keep) else new.reindex(columns=PAIR_COLUMNS)
        tables = {"pair_features.csv": pf.reindex(columns=PAIR_COLUMNS)}
        if meta is not None:
            tables = {"meta_features.csv": meta, **tables}
        for fname, df in tables.items():
            with atomic_path(Path(kb.path) / fname) as tmp:
                df.to_csv(tmp, index=False)  # full precision: other helpers' rows must round-trip exactly
    kb.pair_features = pf
    return pf


def attach_all(kbs: list[str] | None = None, stems: list[str] | None = None,
               rebuild: bool = True) -> list[dict]:
    """Rebuild the shipped profiles and scaler from ../shared/data (``stems``, default all;
    skipped when ``rebuild`` is False), then attach them to ``kbs`` (default every KB).

    Attaches from what ships (float16 profiles), as users will. Returns one summary per KB:
    datasets, datasets with image features, similarity rows.
    """
    with np.errstate(all="ignore"):
        if rebuild:
            build_shipped_profiles(stems)
        shipped = load_shipped_profiles()
        rows = []
        for name in kbs if kbs is not None else list_kbs():
            meta, pf = attach_to_kb(name, shipped)
            rows.append({
                "kb": name,
                "n_datasets": len(meta),
                "n_with_image_features": int(meta.drop(columns="dataset").notna().sum(axis=1).gt(10).sum()),
                "n_similarity_rows": int((pf["kind"] == "similarity").sum()),
            })
    return rows


def _read_target(path: Path, side: int, channels: str) -> ImageSet:
    """A KB target's images: the npz at ``path``, or the derived task named by its stem
    (``experiments.derived``), cut from its parent exactly as build-matrix cut it."""
    from experiments.derived import DERIVED, derive
    from imagesets import read_imageset

    task = DERIVED.get(path.stem)
    if task is not None:
        parent = _read_target(path.with_name(f"{task.parent}.npz"), side, channels)
        return derive(parent, task)
    return read_imageset(path, side=side, channels=channels, require_labels=True, name=path.stem)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import Progress

    return Progress(console=Console(stderr=True), transient=True, disable=not enabled)


def score_kb(
    kb_name: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    max_images: int = 1000,
    random_state: int = 0,
    progress: bool = False,
    train_split: Callable[[ImageSet], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Every estimator for every (source checkpoint, target) of a KB, written (idempotently:
    rows of these features are replaced) into its pair_features.csv. Returns the new rows.

    Targets are the KB's ``image_set`` npz files under ``data_dir``, restricted to their
    training rows (``train_split(imageset)`` or :func:`train_rows`), then a seeded stratified
    subsample of at most ``max_images``."""
    kb = load_kb(kb_name)
    sources = [s for s in kb.sources if kb.checkpoint_path(s) is not None]
    if not sources:
        raise TransferabilityError(f"knowledge base '{kb.name}' has no checkpoints to score")
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    targets: list[tuple[str, Path]] = []
    for t in kb.targets:
        stem = kb.card(t).get("image_set")
        stem = t if not isinstance(stem, str) or not stem else stem
        if (data / f"{root_of(stem)}.npz").exists():  # a derived task is read from its root set
            targets.append((t, data / f"{stem}.npz"))
        else:
            log.warning("transferability: target %s skipped, %s not found", t, data / f"{stem}.npz")
    if not targets:
        raise TransferabilityError(f"none of the targets of '{kb.name}' has an image set under {data}")
    cache: dict[tuple[str, int, str], ImageSet] = {}
    rows = []
    scratch = SCRATCH in kb.sources or SCRATCH in set(kb.records["source"])
    first_meta: dict = {}

    def target_rows(tgt: str, path: Path, side: int, chans: str) -> ImageSet:
        key = (tgt, side, chans)
        if key not in cache:
            full = _read_target(path, side, chans)
            rows_tr = train_split(full) if train_split else train_rows(full, random_state)
            cache[key] = full.subset(np.asarray(rows_tr))
        return cache[key]

    with _progress(progress) as bar:
        task = bar.add_task("transferability", total=(len(sources) + scratch) * len(targets))
        for src in sources:
            model, meta = load_source(kb.checkpoint_path(src))
            first_meta = first_meta or meta
            side, chans = int(meta.get("side", 28)), channel_policy(meta)
            for tgt, path in targets:
                bar.update(task, description=f"{src} -> {tgt}")
                target = target_rows(tgt, path, side, chans)
                scores = score_loaded(model, meta, target, max_images, random_state)
                n = min(len(target), max_images)
                prov = (f"catscans transferability: checkpoint {src}; {n} of {len(target)} "
                        f"train images of {path.stem} (seed {random_state})")
                rows += [(src, tgt, f, v, KIND, prov) for f, v in scores.items()]
                bar.advance(task)
        if scratch:  # the from-scratch baseline, scored on random inits of the same architecture
            side, chans = int(first_meta.get("side", 28)), channel_policy(first_meta)
            for tgt, path in targets:
                bar.update(task, description=f"{SCRATCH} -> {tgt}")
                target = target_rows(tgt, path, side, chans)
                sc = score_random_init(str(first_meta["arch"]), int(first_meta.get("in_chans", 3)), side, target,
                                       max_images=max_images, random_state=random_state)
                n = min(len(target), max_images)
                prov = sc.provenance(f"catscans transferability: {SCRATCH} ({first_meta['arch']}); {n} of "
                                     f"{len(target)} train images of {path.stem} (seed {random_state})")
                rows += [(SCRATCH, tgt, f, v, KIND, prov) for f, v in sc.mean.items()]
                bar.advance(task)
    new = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    _replace_pair_rows(kb, lambda old: (old["kind"] == KIND) & old["feature"].isin(ESTIMATORS), new)
    return new


def score_target(
    kb, imageset: ImageSet, *, max_images: int = 1000, random_state: int = 0, progress: bool = False
) -> pd.DataFrame:
    """Every estimator for each source checkpoint of ``kb`` (a KnowledgeBase or its name) on a
    user's labelled ImageSet (its train split when it has one). Columns: source, feature, value."""
    kb = kb if isinstance(kb, KnowledgeBase) else load_kb(kb)
    if imageset.labels is None:
        raise CheckpointFeatureError(f"'{imageset.name}' has no labels: transferability needs them")
    sources = [s for s in kb.sources if kb.checkpoint_path(s) is not None]
    if not sources:
        raise TransferabilityError(f"knowledge base '{kb.name}' has no checkpoints to score")
    target = imageset
    if imageset.split is not None and (np.asarray(imageset.split) == "train").any():
        target = imageset.subset(np.flatnonzero(np.asarray(imageset.split) == "train"))
    rows = []
    scratch = SCRATCH in kb.sources or SCRATCH in set(kb.records["source"])
    with _progress(progress) as bar:
        task = bar.add_task("transferability", total=len(sources) + scratch)
        meta: dict = {}
        for src in sources:
            model, meta = load_source(kb.checkpoint_path(src))
            scores = score_loaded(model, meta, target, max_images, random_state)
            rows += [(src, f, v) for f, v in scores.items()]
            bar.advance(task)
        if scratch and meta:  # scratch scored like any source: random inits of the same architecture
            side = int(meta.get("side", 28))  # source_outputs conforms size and channels to it
            sc = score_random_init(str(meta["arch"]), int(meta.get("in_chans", 3)), side, target,
                                   max_images=max_images, random_state=random_state)
            rows += [(SCRATCH, f, v) for f, v in sc.mean.items()]
            bar.advance(task)
    return pd.DataFrame(rows, columns=["source", "feature", "value"])



def score_transferability(name: str, data_dir: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """LogME, LEEP, N-LEEP, NCE, H-score and k-NN for every (checkpoint, target) of a KB.

    When the KB was measured by ``build-matrix`` its manifest names the protocol; the
    estimators then see exactly the training rows each target was fine-tuned on (the same
    seeded split), never its validation or test rows.
    """
    kb = load_kb(name)
    return score_kb(kb.path, data_dir=data_dir, progress=progress, train_split=protocol_train_rows(kb))
