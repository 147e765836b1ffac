"""Build the shipped profiles and attach meta-features / similarities to the KBs.

``python -m meta_features.build_profiles`` reads every ../shared/data/*.npz at PROFILE_SIDE
px (64 px sets resized to 28 like MedMNIST), writes ``artifacts/profiles/<stem>.npz/.json``
and ``scaler.json``, then for each KB writes ``meta_features.csv`` (every dataset; image
features only where the card's ``image_set`` names a profile, NaN otherwise) and
``pair_features.csv`` rows of kind ``similarity`` (both sides profiled) and ``domain_distance``
(kind ``expert``, from cards, every pair). records.csv / datasets.csv are never rewritten.

Stand-ins: when ``image_set`` differs from the dataset's name (ham10000_derm for dermamnist,
pbc_blood for bloodmnist, dtd_10class for textures...), the shared file is a stratified
subsample, so class-count features (imbalance, class entropy) are left NaN and counts,
classes and channels come from the KB card, which describes the real dataset.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.knowledge_base import PAIR_COLUMNS, list_kbs, load_kb
from meta_features._common import PROFILE_SIDE, REFERENCE_STEMS
from meta_features._probe import probe_digest
from meta_features._registry import list_meta_features
from meta_features._shared_data import read_shared, shared_stems
from meta_features.dataset_features import modality_code
from meta_features.profiles import (
    DatasetProfile,
    fit_scaler,
    load_scaler,
    load_shipped_profiles,
    profile_dataset,
    profiles_dir,
    save_profile,
    save_scaler,
)
from meta_features.similarity import domain_distance, pair_similarities

SIMILARITY_FEATURES = ["sim_cosine_meta", "dist_euclid_meta", "dist_frechet", "dist_mmd", "dist_otdd", "dist_ot"]
STAND_IN_NAN = ["dataset.imbalance_ratio", "dataset.class_entropy"]


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


def attach_to_kb(kb_name: str, profiles: dict[str, DatasetProfile] | None = None,
                 scaler: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write meta_features.csv and similarity/domain pair features into KB ``kb_name``.

    Idempotent: rows of the features written here are replaced, other rows/columns kept.
    Returns (meta_features, pair_features) as written.
    """
    kb = load_kb(kb_name)
    profiles = profiles if profiles is not None else load_shipped_profiles()
    scaler = scaler if scaler is not None else load_scaler()
    columns = [c for names in list_meta_features().values() for c in names]
    cards = {str(r["name"]): r for r in kb.datasets.to_dict("records")}
    rows = {name: kb_meta_row(card, profiles.get(_stem(card) or ""), columns) for name, card in cards.items()}
    meta = pd.DataFrame(rows).T.rename_axis("dataset").reset_index()
    old = kb.meta_features
    if old is not None and len(old) and "dataset" in old.columns:
        keep = [c for c in old.columns if c not in meta.columns]
        if keep:
            meta = meta.merge(old[["dataset", *keep]], on="dataset", how="left")

    prov = f"catscans meta_features (probe {probe_digest()}, side {PROFILE_SIDE})"
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
        for k, v in pair_similarities(ps, pt, scaler).items():
            if math.isfinite(v):
                new_rows.append([s, t, k, v, "similarity", f"{prov}: {ps.name} vs {pt.name}"])
    mine = set(SIMILARITY_FEATURES) | {"domain_distance"}
    pf = kb.pair_features
    pf = pf[~pf["feature"].isin(mine)] if len(pf) else pd.DataFrame(columns=PAIR_COLUMNS)
    pf = pd.concat([pf, pd.DataFrame(new_rows, columns=PAIR_COLUMNS)], ignore_index=True)

    for fname, df in {"meta_features.csv": meta, "pair_features.csv": pf.reindex(columns=PAIR_COLUMNS)}.items():
        tmp = kb.path / (fname + ".tmp")
        df.to_csv(tmp, index=False)  # full precision: other helpers' rows must round-trip exactly
        os.replace(tmp, kb.path / fname)
    return meta, pf


def build_shipped_profiles(stems: list[str] | None = None, kbs: list[str] | None = None,
                           out: Path | None = None) -> dict[str, DatasetProfile]:
    """Profile every shared set, fit/save the scaler, attach to ``kbs`` (default: all KBs)."""
    out = out or profiles_dir()
    profiles: dict[str, DatasetProfile] = {}
    for stem in stems or shared_stems():
        t0 = time.time()
        s, reader = read_shared(stem, PROFILE_SIDE)
        p = profile_dataset(s)
        p.info = {**(p.info or {}), "reader": reader, "source_file": f"../shared/data/{stem}.npz"}
        p.info.get("card", {})["source"] = p.info["source_file"]  # no absolute local paths in artifacts
        save_profile(p, out / stem)
        profiles[stem] = p
        print(f"{stem}: {len(s)} images, {p.embeddings.shape[0]} embedded, {time.time() - t0:.1f} s")
    # the scaler sees the reference (never-target) sets only: see REFERENCE_STEMS
    scaler = fit_scaler([profiles[s] for s in REFERENCE_STEMS if s in profiles])
    save_scaler(scaler, out / "scaler.json")
    shipped = load_shipped_profiles(out)  # attach from what ships (float16), as users will
    for name in kbs if kbs is not None else list_kbs():
        meta, pf = attach_to_kb(name, shipped, scaler)
        n_img = int(meta.drop(columns="dataset").notna().sum(axis=1).gt(10).sum())
        n_sim = int((pf["kind"] == "similarity").sum())
        print(f"KB {name}: {len(meta)} datasets ({n_img} with image features), {n_sim} similarity rows")
    return profiles


def main() -> None:
    ap = argparse.ArgumentParser(description="Build shipped profiles and attach them to KBs.")
    ap.add_argument("--stems", nargs="*", default=None, help="shared npz stems (default: all)")
    ap.add_argument("--kb", nargs="*", default=None, help="KBs to attach to (default: all)")
    ap.add_argument("--attach-only", action="store_true", help="reuse shipped profiles, only attach")
    a = ap.parse_args()
    if a.attach_only:
        for name in a.kb if a.kb is not None else list_kbs():
            attach_to_kb(name)
            print(f"attached to {name}")
        return
    np.seterr(all="ignore")
    build_shipped_profiles(a.stems, a.kb)


if __name__ == "__main__":
    main()
