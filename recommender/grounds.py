"""What a `recommend` order rests on, in words, and the similarities behind it.

- :func:`order_grounds`: whether the order used anything computed on the user's images. The
  static ranking is the same for every folder; an estimate-free method on an unlabelled
  folder (or a KB without checkpoints) uses the prior and similarity only. Either way the
  output says so, names the KB targets nearest to the folder (by a label-free profile
  distance) and says how to measure instead.
- :func:`similarities_by_source`: every registered profile similarity/distance between each
  source and the folder (:data:`meta_features.SIMILARITIES`, read by name at run time, so
  a newly registered one shows up without a change here).
"""

from __future__ import annotations

import math

import pandas as pd

# Label-free distances, in order of preference, for "the KB targets nearest to yours".
NEAREST_BY = ("dist_frechet", "dist_mmd", "dist_euclid_meta", "dist_ot")
N_NEAREST = 3


def similarities_by_source(pairs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """source -> {similarity name: value} for every name in the similarity registry."""
    from meta_features import SIMILARITIES

    s = pairs[pairs["feature"].isin(list(SIMILARITIES))]
    return {src: {f: float(v) for f, v in zip(g["feature"], g["value"], strict=True)}
            for src, g in s.groupby("source")}


def _distance_name() -> str | None:
    from meta_features import SIMILARITIES

    for name in NEAREST_BY:
        if name in SIMILARITIES and not SIMILARITIES[name].needs_labels:
            return name
    return next((n for n, s in SIMILARITIES.items() if n.startswith("dist_") and not s.needs_labels), None)


def nearest_targets(kb, profile, k: int = N_NEAREST) -> dict:  # noqa: ANN001 - KnowledgeBase, DatasetProfile
    """The KB targets whose shipped profile is closest to the folder's: ``distance`` (name),
    ``targets`` [{target, value}] nearest first, ``n_compared`` (targets with a profile)."""
    from meta_features import (
        SIMILARITIES,
        MetaFeatureError,
        load_profile,
        load_scaler,
        profiles_dir,
    )

    name = _distance_name()
    if name is None:
        return {"distance": None, "targets": [], "n_compared": 0}
    fn = SIMILARITIES[name].fn
    scaler = load_scaler() if name.endswith("_meta") else None
    found = []
    for t in kb.targets:
        stem = kb.card(t).get("image_set")
        path = profiles_dir() / f"{stem}.npz" if isinstance(stem, str) and stem else None
        if path is None or not path.exists():
            continue
        try:
            v = float(fn(load_profile(path), profile, scaler))
        except (MetaFeatureError, ValueError):
            continue
        if math.isfinite(v):
            found.append({"target": t, "value": v})
    found.sort(key=lambda d: (d["value"], d["target"]))
    return {"distance": name, "targets": found[:k], "n_compared": len(found)}


def order_grounds(method: str, labelled: bool, has_checkpoints: bool, used_estimates: bool,
                  kb_name: str, nearest: dict) -> dict:
    """``target_blind``, ``uses_your_images``, ``nearest`` and ``text`` (None when the order used
    estimates computed on the folder's labelled images)."""
    from recommender.explain import describe_feature

    blind = method == "static"
    out = {"target_blind": blind, "uses_your_images": used_estimates, "nearest": nearest, "text": None}
    if used_estimates and not blind:
        return out
    if blind:
        head = "this order is the same for any folder (the static ranking: each source's record on the KB's targets)"
    else:
        head = ("this order uses no estimate computed on your images (the KB's prior, adjusted by "
                "similarity to your folder)")
    if nearest.get("targets"):
        names = ", ".join(d["target"] for d in nearest["targets"])
        head += (f"; the KB targets nearest to yours are {names} (by {nearest['distance']}, "
                 f"{describe_feature(nearest['distance'])})")
    else:
        head += "; no KB target has a shipped profile to compare your folder with"
    if not labelled:
        todo = "label a few hundred images and run `catscans verify` to measure"
    elif not has_checkpoints:
        todo = (f"KB {kb_name} ships no checkpoints to score your images with; run `catscans verify` "
                "with a KB that does to measure")
    else:
        todo = "run `catscans verify` to measure"
    return out | {"text": f"{head}; {todo}"}


def near_duplicate_sources(kb, sims: dict[str, dict[str, float]]) -> dict:  # noqa: ANN001 - KnowledgeBase
    """Sources closer to the folder than any two independent datasets of the KB are to each other.

    The floor is the smallest value of the label-free distance over the KB's pair features
    (measured pairs of datasets in different groups, so never a dataset against its twin or a
    task cut from it). A source below it likely holds the same kind of images as the folder,
    or some of the very images: a source pretrained on images the user will test on would
    look better than it is. ``sources`` [{source, value}] nearest first; empty when none."""
    name = _distance_name()
    pf = kb.pair_features
    out = {"distance": name, "floor": None, "n_pairs": 0, "sources": []}
    if name is None or pf is None or not len(pf):
        return out
    vals = pd.to_numeric(pf.loc[pf["feature"] == name, "value"], errors="coerce").dropna()
    if vals.empty:
        return out
    floor = float(vals.min())
    near = sorted(((s, d[name]) for s, d in sims.items() if name in d and math.isfinite(d[name])
                   and d[name] < floor), key=lambda x: x[1])
    out.update(floor=floor, n_pairs=int(len(vals)),
               sources=[{"source": s, "value": float(v)} for s, v in near])
    return out


def near_duplicate_note(near: dict, kb_name: str) -> str | None:
    """One sentence for :func:`near_duplicate_sources`' result, or None when nothing is that close."""
    if not near.get("sources"):
        return None
    listed = ", ".join(f"{r['source']} ({r['value']:.3g})" for r in near["sources"])
    return (f"your folder is closer to {listed} by {near['distance']} than any two independent "
            f"datasets of KB {kb_name} (smallest {near['floor']:.3g} of {near['n_pairs']} pairs): it "
            "may hold that source's own pretraining images, on which its AUC would look too good")
