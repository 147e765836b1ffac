"""The main job: rank a knowledge base's sources for a user's own folder of images.

Reads the target once with ``imagesets``, describes it with the same meta-features
the KB's datasets have, measures its similarity to every source that has a shipped
profile, adds transferability estimates when the KB ships source checkpoints and
the target is labelled, and runs the KB's trained meta-model (or the validated
fallback the training recorded). Everything the table shows is in the returned
:class:`Recommendation`, so JSON and table output cannot disagree.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import KnowledgeBase, list_kbs, load_kb
from imagesets import ImageSet, UserError, read_imageset
from recommender.explain import reasons, weights_location

MIN_IMAGES = 10


class RecommendError(UserError):
    """A target or KB that recommend cannot work with."""


@dataclass
class Recommendation:
    """Everything `catscans recommend` prints (table and JSON are rendered from this)."""

    target: str
    target_card: dict
    labelled: bool
    kb: str
    kb_choice: str
    method: str
    validation: dict
    ranking: list[dict]
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.ranking)


def choose_kb(kb: str | None) -> tuple[str, str]:
    """The KB to use and why: the given one, else the one whose validated model ranks best (mean τw)."""
    from recommender.model import load_recommender

    if kb:
        return kb, "chosen with --kb"
    best, best_tau, scores = None, -np.inf, []
    for name in list_kbs():
        try:
            rec = load_recommender(name)
        except UserError:
            continue
        tau = _mean_tau(rec.validated)
        n = (rec.validated or {}).get("n_targets")
        scores.append(f"{name} τw={tau:.3f} (n={n})")
        if tau > best_tau and (n or 0) >= 5:
            best, best_tau = name, tau
    if best is None:
        raise RecommendError("no knowledge base with a trained meta-model in artifacts/; run `catscans evaluate-meta --kb NAME`")
    return best, "default: best validated LOTO mean τw among " + ", ".join(scores)


def _mean_tau(validated: dict | None) -> float:
    if not validated:
        return -np.inf
    m = validated.get("mean", validated)
    v = m.get("tau_w") if isinstance(m, dict) else None
    if isinstance(v, dict):
        v = v.get("mean")
    return float(v) if v is not None else -np.inf


def _transferability_by_source(pairs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """source -> {estimator: value} for the estimates computed on this target (may be empty)."""
    from meta_features.transferability import ESTIMATORS

    tx = pairs[pairs["feature"].isin(list(ESTIMATORS))]
    return {src: {f: round(float(v), 6) for f, v in zip(g["feature"], g["value"], strict=True)}
            for src, g in tx.groupby("source")}


def _method_label(model) -> str:  # noqa: ANN001
    """'meta-model (LightGBM ranker)', 'static ranking', ... for the shipped method."""
    if model.method == "meta":
        return f"meta-model (LightGBM {model.manifest.get('meta_kind', 'regressor')})"
    return {"static": "static ranking (fallback)", "largest_source": "largest source (fallback)"}.get(
        model.method, f"{model.method} (fallback)")


def _shown_path(p: Path | None) -> str | None:
    """A checkpoint path relative to the repository when it is inside it (shorter, portable)."""
    if p is None:
        return None
    from experiments import artifacts_dir

    try:
        return str(p.resolve().relative_to(artifacts_dir().resolve().parent))
    except ValueError:
        return str(p)


def _read_target(target: str | Path, progress: bool) -> ImageSet:
    from meta_features import PROFILE_SIDE

    spec = str(target)
    if spec == "demo":
        from imagesets import build_demo_target

        spec = str(build_demo_target(Path.home() / ".cache" / "catscans" / "demo_target"))
    imageset = read_imageset(spec, side=PROFILE_SIDE, channels="keep", progress=progress)
    if len(imageset) < MIN_IMAGES:
        raise RecommendError(
            f"too few images in {target}: {len(imageset)} readable (need at least {MIN_IMAGES})"
        )
    return imageset


def _pair_features(kb: KnowledgeBase, profile, imageset: ImageSet, tcard: dict,  # noqa: ANN001
                   use_transferability: bool) -> pd.DataFrame:
    """source, feature, value rows for the new target (similarities, domain, transferability)."""
    from meta_features import domain_distance, load_profile, pair_similarities, profiles_dir

    rows: list[dict] = []
    for source in kb.sources:
        card = kb.card(source)
        stem = card.get("image_set")
        if isinstance(stem, str) and stem and (profiles_dir() / f"{stem}.npz").exists():
            sp = load_profile(profiles_dir() / f"{stem}.npz")
            for k, v in pair_similarities(sp, profile).items():
                rows.append({"source": source, "feature": k, "value": float(v)})
        if card:
            rows.append({"source": source, "feature": "domain_distance",
                         "value": float(domain_distance(card, tcard))})
    if use_transferability:
        from recommender.kb import score_target

        tx = score_target(kb, imageset)
        rows.extend(tx[["source", "feature", "value"]].to_dict("records"))
    return pd.DataFrame(rows, columns=["source", "feature", "value"])


def _target_card_for_model(imageset: ImageSet) -> dict:
    """The user's folder as a KB-style card (the meta-model's target card features).

    catscans recommends for medical targets, so the domain is taken as medical; the modality
    is the most common DICOM Modality tag when there is one, else unknown.
    """
    c = imageset.card
    modality = max(c.modalities, key=c.modalities.get) if c.modalities else ""
    from recommender.model.meta_dataset import native_resolution

    med = native_resolution(c.native_size, imageset.side)  # card keys are h_median/w_median
    return {
        "name": c.name, "role": "target", "domain": "medical", "modality": modality,
        "n_images": c.n_images, "n_classes": c.n_classes if c.labelled else np.nan,
        "channels": c.channels, "resolution": float(med), "task": "multi-class" if c.n_classes > 2 else "binary",
        "licence": "", "image_set": "", "provenance": "user folder",
    }


def recommend(target: str | Path, kb: str | None = None, top: int | None = None,
              progress: bool = False) -> Recommendation:
    """Rank the sources of a KB for the images at ``target``."""
    from meta_features import profile_dataset
    from recommender.model import load_recommender, rows_for_new_target

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    kb_name, kb_choice = choose_kb(kb)
    kbase = load_kb(kb_name)
    model = load_recommender(kb_name)

    t = time.perf_counter()
    imageset = _read_target(target, progress)
    timings["read"] = time.perf_counter() - t

    t = time.perf_counter()
    profile = profile_dataset(imageset)
    timings["meta_features"] = time.perf_counter() - t

    notes: list[str] = []
    verdict = (model.validated or {}).get("verdict") or {}
    if model.method != "meta" and verdict:
        notes.append(
            f"the meta-model did not beat the static ranking under leave-one-target-out "
            f"(mean τw {verdict.get('meta_tau_w', float('nan')):.3f} vs {verdict.get('static_tau_w', float('nan')):.3f}, "
            f"regret {verdict.get('meta_regret', float('nan')):.4f} vs {verdict.get('static_regret', float('nan')):.4f}); "
            f"ranking by the best validated method, '{model.method}'"
        )
    use_tx = imageset.labelled and kbase.has_checkpoints
    if not imageset.labelled:
        notes.append("unlabelled folder: label-free meta-features only (no class separability, no transferability estimates)")
    elif not kbase.has_checkpoints:
        notes.append(f"KB '{kb_name}' ships no source checkpoints: no transferability estimates")
    t = time.perf_counter()
    card = _target_card_for_model(imageset)
    pairs = _pair_features(kbase, profile, imageset, card, use_tx)
    timings["similarity"] = time.perf_counter() - t

    t = time.perf_counter()
    rows = rows_for_new_target(kbase, card, profile.meta, pairs)
    ranked = model.rank(rows)
    contrib = model.contributions(rows)
    timings["meta_model"] = time.perf_counter() - t

    tx = _transferability_by_source(pairs)
    static_pick = model.static_pick(rows)
    # rank() orders by the shipped method's own score (meta-model or validated fallback).
    ranked = ranked.reset_index(drop=True)
    why_prefix = "" if model.method == "meta" else "meta-model's view: "
    static_auc = (
        float(ranked.loc[ranked["source"] == static_pick, "predicted_auc"].iloc[0])
        if static_pick is not None and (ranked["source"] == static_pick).any() else np.nan
    )
    out = []
    for i, r in ranked.iterrows():
        src = r["source"]
        ck = _shown_path(kbase.checkpoint_path(src))
        crow = contrib.loc[src].to_dict() if contrib is not None and src in contrib.index else {}
        out.append({
            "rank": i + 1,
            "source": src,
            "predicted_auc": float(r["predicted_auc"]),
            "lo80": float(r["lo80"]),
            "hi80": float(r["hi80"]),
            "vs_static_pick": float(r["predicted_auc"] - static_auc) if np.isfinite(static_auc) else None,
            "static_pick": src == static_pick,
            "reasons": why_prefix + reasons(crow),
            "weights": weights_location(src, ck),
            "transferability": tx.get(src, {}),
        })
    if top:
        out = out[:top]
    timings["total"] = time.perf_counter() - t0
    return Recommendation(
        target=str(target),
        target_card=imageset.card.to_dict(),
        labelled=imageset.labelled,
        kb=kb_name,
        kb_choice=kb_choice,
        method=_method_label(model),
        validation=dict(model.validated or {}),
        ranking=out,
        notes=notes,
        timings_s={k: round(v, 3) for k, v in timings.items()},
    )
