"""Build the shipped dataset profiles and the reference scaler from ../shared/data.

Reads every ../shared/data/*.npz at PROFILE_SIDE px (64 px sets resized to 28 like MedMNIST)
and writes ``artifacts/profiles/<stem>.npz/.json`` (with each labelled set's Task2Vec embedding
and its t0) plus ``scaler.json`` (fit on the meta-features of the procedural
``REFERENCE_STEMS`` only, computed here and not shipped as profiles). Attaching profiles to knowledge bases lives in
``recommender.kb.attach`` (``catscans kb attach`` runs both).
"""

from __future__ import annotations

import time
from pathlib import Path

from meta_features._common import PROFILE_SIDE, REFERENCE_STEMS
from meta_features._shared_data import read_shared, shared_stems
from meta_features._synthetic import synthetic_imageset
from meta_features.profiles import (
    DatasetProfile,
    fit_scaler,
    profile_dataset,
    profiles_dir,
    save_profile,
    save_scaler,
)


def build_shipped_profiles(stems: list[str] | None = None, out: Path | None = None) -> dict[str, DatasetProfile]:
    """Profile every shared set and fit/save the scaler (on the reference sets only).

    Attaching the profiles to knowledge bases is the recommender's job:
    ``catscans kb attach`` runs this, then attaches."""
    out = out or profiles_dir()
    profiles: dict[str, DatasetProfile] = {}
    for stem in stems or shared_stems():
        t0 = time.time()
        s, reader = read_shared(stem, PROFILE_SIDE)
        p = profile_dataset(s, task2vec_trivial=True)  # a shipped set may be a source: it needs t0
        from experiments.derived import root_of

        p.info = {**(p.info or {}), "reader": reader, "source_file": f"../shared/data/{root_of(stem)}.npz"}
        p.info.get("card", {})["source"] = p.info["source_file"]  # no absolute local paths in artifacts
        save_profile(p, out / stem)
        profiles[stem] = p
        t2v = "no Task2Vec" if p.task2vec is None else (
            f"Task2Vec {p.task2vec.n_images} images {p.task2vec.cost_s:.1f} s"
            + (f" + t0 {p.task2vec_trivial.cost_s:.1f} s" if p.task2vec_trivial is not None else ""))
        print(f"{stem}: {len(s)} images, {p.embeddings.shape[0]} embedded, {t2v}, {time.time() - t0:.1f} s")
    # the scaler sees the procedural reference sets only (never a KB target): see REFERENCE_STEMS
    refs = [profile_dataset(synthetic_imageset(s, PROFILE_SIDE), task2vec=False) for s in REFERENCE_STEMS]
    scaler = fit_scaler(refs)
    scaler["note"] = "fit on the procedural reference sets only (meta_features._synthetic), never a KB target"
    save_scaler(scaler, out / "scaler.json")
    return profiles
