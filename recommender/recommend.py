"""The main job: rank a knowledge base's sources for a user's own folder of images.

Reads the target once with ``imagesets``, describes it with the same meta-features
the KB's datasets have, measures its similarity to every source that has a shipped
profile, adds transferability estimates when the KB ships source checkpoints and
the target is labelled, and runs the KB's trained meta-model (or the validated
fallback the training recorded). Every row carries the predicted gain over training
from scratch (:mod:`recommender.gain`, with its checked interval where the model has one)
and the source's similarities to the folder; the result says whether any source is expected
to beat scratch, and what the order rests on (:mod:`recommender.grounds`). Everything the
table shows is in the returned :class:`Recommendation`, so JSON and table output cannot disagree.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import KnowledgeBase, list_kbs, load_kb
from imagesets import ImageSet, UserError, read_imageset
from recommender.explain import (
    explain_order,
    explain_rank_average,
    rank_average_parts,
    weights_location,
)
from recommender.gain import (
    gain_fields,
    gain_info,
    predicted_verdict,
    transfer_evidence,
    with_sign_record,
)
from recommender.grounds import (
    near_duplicate_note,
    near_duplicate_sources,
    nearest_targets,
    order_grounds,
    similarities_by_source,
)
from recommender.guard import label_problems, warning_text

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
    interval: dict | None = None  # what lo80/hi80 are, with their measured coverage (None: none given)
    noise_ceiling: dict | None = None  # the KB's split-half ceiling on τw (or why there is none)
    gain: dict | None = None  # what gain_vs_scratch is, its interval's measured coverage (None: no scratch)
    verdict: str | None = None  # predicted: does any source beat training from scratch here?
    grounds: dict | None = None  # what the order rests on: target-blind?, the nearest KB targets
    method_notes: list[str] = field(default_factory=list)  # how the method was chosen (--wide, json)
    estimates_reliable: bool | None = None  # False: the folder's labels are too thin (recommender.guard)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.ranking)


MIN_VALIDATED_TARGETS = 5
KB_RULE = ("rule: a labelled folder goes to a KB that ships source checkpoints (its order can use "
           "estimates computed on your images); otherwise to the KB with most targets of your "
           "folder's modality, then the closest image resolution, then the most targets; only KBs "
           f"whose shipped method was validated on at least {MIN_VALIDATED_TARGETS} targets")


def choose_kb(kb: str | None, card: dict | None = None, labelled: bool = False) -> tuple[str, str]:
    """The KB to use and why, by a stated rule (:data:`KB_RULE`), never by comparing τw across KBs.

    KBs differ in targets, so their validated figures are not comparable; what can be
    compared is whether a KB can use evidence from the user's images (checkpoints, for a
    labelled folder) and how much it resembles the folder (modality, resolution).
    """
    from imagesets.modality import canonical_modality, same_modality
    from recommender.model import load_recommender

    if kb:
        return kb, "chosen with --kb"
    card = card or {}
    eligible, skipped = [], []
    for name in list_kbs():
        try:
            rec = load_recommender(name)
        except UserError as exc:  # a corrupt, old or missing model rules that KB out, not the run
            skipped.append(f"{name} ({str(exc).splitlines()[0][:100]})")
            continue
        n = int((rec.validated or {}).get("n_targets") or 0)
        if n < MIN_VALIDATED_TARGETS:
            skipped.append(f"{name} (validated on {n} targets)")
            continue
        try:  # a broken KB folder (manifest, records) rules that KB out too, not the run
            eligible.append((name, load_kb(name)))
        except UserError as exc:
            skipped.append(f"{name} ({str(exc).splitlines()[0][:100]})")
    if not eligible:
        raise RecommendError("no knowledge base with a trained model validated on at least "
                             f"{MIN_VALIDATED_TARGETS} targets in artifacts/; run `catscans evaluate-meta --kb NAME`")
    tail = f"; skipped {', '.join(skipped)}" if skipped else ""
    if labelled:
        with_ck = sorted((e for e in eligible if e[1].has_checkpoints), key=lambda e: (-len(e[1].targets), e[0]))
        if with_ck:
            name = with_ck[0][0]
            return name, (f"default: your folder is labelled and KB {name} ships source checkpoints, so "
                          f"the order can use transferability estimates on your images ({KB_RULE}){tail}")
    mod = canonical_modality(card.get("modality"))
    res = float(card.get("resolution") or np.nan)

    def facts(e: tuple[str, KnowledgeBase]) -> tuple[int, float, int]:
        k = e[1]
        match = sum(1 for t in k.targets if mod and same_modality(mod, k.card(t).get("modality")) == 1.0)
        rs = [float(k.card(t).get("resolution")) for t in k.targets
              if isinstance(k.card(t).get("resolution"), (int, float)) and np.isfinite(k.card(t)["resolution"])]
        dist = abs(np.log2(res / np.median(rs))) if rs and np.isfinite(res) and res > 0 else np.inf
        return match, dist, len(k.targets)

    ranked = sorted(eligible, key=lambda e: (-facts(e)[0], facts(e)[1], -facts(e)[2], e[0]))
    name = ranked[0][0]
    match, dist, n_t = facts(ranked[0])
    if match:
        why = f"{match} of its {n_t} targets share your folder's modality ({mod})"
    elif np.isfinite(dist):
        why = (f"no KB target shares your folder's modality ({mod or 'unknown'}); its targets are "
               f"closest in resolution ({2 ** dist:.1f}× apart from your {res:.0f} px)")
    else:
        why = f"no KB matches your folder's modality ({mod or 'unknown'}) or resolution; it has the most targets ({n_t})"
    return name, f"default: KB {name}: {why} ({KB_RULE}){tail}"


def _transferability_by_source(pairs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """source -> {estimator: value} for the estimates computed on this target (may be empty)."""
    from meta_features.transferability import ESTIMATORS

    tx = pairs[pairs["feature"].isin(list(ESTIMATORS))]
    return {src: {f: round(float(v), 6) for f, v in zip(g["feature"], g["value"], strict=True)}
            for src, g in tx.groupby("source")}


_LABELS = {"static": "static ranking", "learned": "learned model", "learned+est": "learned model with estimates",
           "stack+est": "learned stack of the estimates", "estimate:best": "the inner-best estimate",
           "rankavg:static+all": "rank average of static + every estimate"}


def _method_label(shipped) -> str:  # noqa: ANN001
    """'static ranking', 'learned model with estimates', 'rank average of static + knn_acc', ...
    for the shipped method (a user reads words, not registry names)."""
    m = shipped.method
    if m in _LABELS:
        return _LABELS[m]
    if m.startswith("meta"):
        return f"meta-model ({shipped.words or 'LightGBM'})"
    if m.startswith("rankavg:"):
        return "rank average of " + " + ".join(m.split(":", 1)[1].split("+"))
    if m.startswith("estimate:"):
        return f"{m.split(':', 1)[1]} estimate"
    if m.startswith("residual"):
        return "static prior + residual model"
    return m


def _explain_baseline(shipped) -> tuple[str, tuple[str, int] | None]:  # noqa: ANN001
    """(method name, (column, sign)) in the terms explain_order knows."""
    m = shipped.method
    if m.startswith("meta"):
        return "meta", None
    if m == "static":
        return m, ("fold_static_prior", 1)
    if m.startswith("estimate:"):
        f = m.split(":", 1)[1]
        return m, (f"pair_{f}", int(getattr(shipped.fitted, "ctx", None).directions.get(f, 1))
                   if getattr(shipped.fitted, "ctx", None) else 1)
    return m, None


def _level_words(shipped) -> str:  # noqa: ANN001
    """What the predicted AUC is made of, in words (the learned level of the folder or the KB's mean)."""
    lm = shipped.level_model
    learned = lm is not None and lm.model is not None
    level = ("the level learned for your folder (ridge regression on its card"
             + (" and scratch's estimates on it" if lm is not None and lm.use_estimates else "") + ")"
             if learned else "the KB's average level")
    dev = ("the learned model's deviation for the source" if getattr(shipped.fitted, "auc_units", False)
           else "the KB's spread times the source's normal score in the order")
    return f"The predicted AUC is {level} plus {dev}, so it orders like the ranking"


FAR_SHARE = 0.9  # a folder farther than this share of the KB's own targets is called an extrapolation


def folder_novelty(shipped, ranked: pd.DataFrame) -> dict | None:  # noqa: ANN001
    """The folder's distance from the KB's targets (:mod:`recommender.model.novelty`) and where it
    falls among the KB targets' own distances to the other groups; None for a model saved without it."""
    lm = shipped.level_model
    nm = getattr(lm, "novelty_model", None)
    v = ranked["novelty"].to_numpy(dtype=float) if "novelty" in ranked else np.array([])
    v = v[np.isfinite(v)]
    if nm is None or not len(v) or not nm.reference:
        return None
    k, n = nm.share_closer(float(v[0]))
    from recommender.model.scoring import scales_by_novelty

    scaled = scales_by_novelty(shipped.calibration or {})
    far = k >= FAR_SHARE * n
    than = f"any of its {n} targets lies" if k == n else f"{k} of its {n} targets lie"
    text = f"your folder lies farther from the KB's targets than {than} from the others (in the level model's inputs)"
    if far:
        text += (": the prediction extrapolates, so expect a larger error"
                 + ("; the interval is widened by that distance" if scaled else
                    "; the interval is not widened for it (on this KB the distance did not earn a wider one)"))
    return {"value": float(v[0]), "farther_than": k, "n_targets": n, "far": far, "scales_interval": scaled,
            "text": text}


def _interval_info(shipped, ranked: pd.DataFrame | None = None) -> dict | None:  # noqa: ANN001
    """What the predicted-AUC interval is and its measured coverage (None: no calibrated interval),
    with the folder's novelty (stated in the short form only when it is an extrapolation)."""
    cal, cov = shipped.calibration or {}, (shipped.validated or {}).get("coverage") or {}
    if cal.get("q") is None or cov.get("coverage") is None:
        return None
    level = float(cal.get("nominal", 0.8))
    pct = f"{int(round(100 * level))}%"
    held = (f"under nested leave-one-group-out it held the true AUC for {float(cov['coverage']):.0%} of "
            f"{cov.get('n_cells')} held-out cells ({cov.get('n_targets')} targets)")
    nov = folder_novelty(shipped, ranked) if ranked is not None else None
    return {"level": level, "coverage": float(cov["coverage"]), "lo_key": "lo80", "hi_key": "hi80",
            "label": f"{pct} interval",
            "n_cells": cov.get("n_cells"), "n_targets": cov.get("n_targets"),
            "over": f"nested leave-one-group-out, {cov.get('n_cells')} cells of {cov.get('n_targets')} targets",
            "brief": held + (f". Note: {nov['text']}" if nov and nov["far"] else ""),
            "novelty": nov,
            "caption": (f"split-conformal {pct} interval from held-out targets' residuals; {held}"
                        + (f"; {nov['text']}" if nov else "") + ". " + _level_words(shipped))}


def _validation_notes(shipped) -> list[str]:  # noqa: ANN001
    """How the shipped method was chosen and its paired comparison with static, in words."""
    from recommender.evaluation.paired import sentence

    v = shipped.validated or {}
    notes = []
    chosen = v.get("chosen_per_fold") or {}
    if chosen:
        listed = ", ".join(f"{k} {n}×" for k, n in chosen.items())
        notes.append(f"'{shipped.method}' was chosen by nested selection (inner leave-one-group-out); "
                     f"under the outer folds the procedure chose {listed}")
    if v.get("vs_static"):
        notes.append(sentence("shipped procedure", "static", v["vs_static"]))
    return notes


def _shown_path(p: Path | None) -> str | None:
    """A checkpoint path relative to the repository when it is inside it (shorter, portable)."""
    if p is None:
        return None
    from experiments import artifacts_dir

    try:
        return str(p.resolve().relative_to(artifacts_dir().resolve().parent))
    except ValueError:
        return str(p)


def _weights_card(kb: KnowledgeBase, source: str) -> dict:
    """The candidate card of a KB source (recommender.candidates): weights location, arch, input, snippet.

    ImageNet without shipped weights is the torchvision ImageNet-1k V1 checkpoint of the KB's
    architecture (what ``experiments.models`` loads), so its card is that hub model's.
    """
    from recommender.candidates import resolve_candidate

    arch = str(kb.manifest.get("architecture", ""))
    if source == "imagenet" and kb.checkpoint_path(source) is None and arch in ("resnet18", "resnet50"):
        try:
            return resolve_candidate(f"torchvision:ResNet{arch[6:]}_Weights.IMAGENET1K_V1").card()
        except UserError:
            pass
    try:
        return resolve_candidate(source, kb).card()
    except UserError as exc:
        return {"spec": source, "kind": "unknown", "weights": weights_location(source, None), "notes": [str(exc)]}


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


def _n_classes(imageset: ImageSet) -> int:
    return sum(1 for v in (imageset.card.class_counts or {}).values() if v > 0)


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
    t = time.perf_counter()
    imageset = _read_target(target, progress)
    timings["read"] = time.perf_counter() - t
    card = _target_card_for_model(imageset)
    kb_name, kb_choice = choose_kb(kb, card, imageset.labelled)
    kbase = load_kb(kb_name)
    model = load_recommender(kb_name)

    t = time.perf_counter()
    profile = profile_dataset(imageset)
    timings["meta_features"] = time.perf_counter() - t

    can_tx = imageset.labelled and kbase.has_checkpoints
    problems = label_problems(imageset.card.to_dict()) if can_tx else []
    use_tx = can_tx and not problems  # thin labels: the estimates are shown, marked, never used
    shipped = model.scenario(estimates=use_tx)
    notes: list[str] = []
    if problems:
        notes.append(warning_text(problems))
    if not imageset.labelled:
        notes.append("unlabelled folder: label-free meta-features only (no class separability, no "
                     "transferability estimates, no Task2Vec distances: each needs labels)")
    elif not kbase.has_checkpoints:
        notes.append(f"KB '{kb_name}' ships no source checkpoints: no transferability estimates")
    t = time.perf_counter()
    show_tx = use_tx or (can_tx and _n_classes(imageset) >= 2)
    pairs = _pair_features(kbase, profile, imageset, card, show_tx)
    timings["similarity"] = time.perf_counter() - t

    t = time.perf_counter()
    from meta_features.transferability import ESTIMATORS

    model_pairs = pairs if use_tx else pairs[~pairs["feature"].isin(list(ESTIMATORS))]
    rows = rows_for_new_target(kbase, card, profile.meta, model_pairs)
    ranked = model.rank(rows, estimates=use_tx)  # order, predicted AUC and interval: one score
    contrib = model.contributions(rows, estimates=use_tx)
    timings["meta_model"] = time.perf_counter() - t

    tx = _transferability_by_source(pairs)
    sims = similarities_by_source(pairs)
    static_pick = model.static_pick(rows)
    # rank() orders by the shipped method's own score; its predicted AUC is monotone in it.
    ranked = ranked.reset_index(drop=True)
    explain_method, explain_base = _explain_baseline(shipped)
    own = getattr(shipped.fitted, "contributions", None)
    if explain_base is None and explain_method != "meta" and callable(own):
        contrib, explain_method = own(rows), "model"  # the order's own terms, not the meta-model's view
    frows = rows.drop_duplicates("source").set_index("source")
    ctx = getattr(shipped.fitted, "ctx", None) or shipped.ctx
    parts = rank_average_parts(shipped.method, list(getattr(ctx, "estimators", None) or ()))
    by_parts = (explain_rank_average(
        parts, frows.reset_index(), getattr(getattr(shipped.fitted, "ctx", None), "directions", None) or {})
                if parts else {})
    gain = None if problems else gain_info(shipped, list(kbase.sources))
    static_auc = (
        float(ranked.loc[ranked["source"] == static_pick, "predicted_auc"].iloc[0])
        if static_pick is not None and (ranked["source"] == static_pick).any() else np.nan
    )
    out = []
    for i, r in ranked.iterrows():
        src = r["source"]
        ck = _shown_path(kbase.checkpoint_path(src))
        crow = contrib.loc[src].to_dict() if contrib is not None and src in contrib.index else {}
        # evidence and reasons come from the method that set the order, never another's view
        evidence, why = by_parts.get(src) or explain_order(
            explain_method, explain_base, frows.loc[src].to_dict() if src in frows.index else {}, crow)
        out.append({
            "rank": i + 1,
            "source": src,
            "predicted_auc": float(r["predicted_auc"]),
            "lo80": float(r["lo80"]) if np.isfinite(r["lo80"]) else None,
            "hi80": float(r["hi80"]) if np.isfinite(r["hi80"]) else None,
            **gain_fields(r, gain),
            "vs_static_pick": float(r["predicted_auc"] - static_auc) if np.isfinite(static_auc) else None,
            "static_pick": src == static_pick,
            "evidence": evidence,
            "reasons": why,
            "weights": weights_location(src, ck),
            "weights_card": _weights_card(kbase, src),
            "transferability": tx.get(src, {}),
            "similarities": sims.get(src, {}),
        })
    tx_evidence = transfer_evidence(model.manifest, "estimates" if use_tx else "any")
    interval = _interval_info(shipped, ranked)
    verdict = predicted_verdict(  # every source, before --top
        out, gain, shipped.method == "static", tx_evidence,
        unreliable="; ".join(problems) if problems else None,
        extrapolates=bool(((interval or {}).get("novelty") or {}).get("far")))
    gain = with_sign_record(gain, tx_evidence)
    blind = shipped.method == "static" or not use_tx
    grounds = order_grounds(shipped.method, imageset.labelled, kbase.has_checkpoints, use_tx, kb_name,
                            nearest_targets(kbase, profile) if blind else {})
    if grounds["text"]:
        notes.insert(0, grounds["text"])
    grounds["near_sources"] = near_duplicate_sources(kbase, sims)
    dup = near_duplicate_note(grounds["near_sources"], kb_name)
    if dup:
        notes.insert(0, dup)
    if top:
        out = out[:top]
    timings["total"] = time.perf_counter() - t0
    return Recommendation(
        target=str(target),
        target_card=imageset.card.to_dict(),
        labelled=imageset.labelled,
        kb=kb_name,
        kb_choice=kb_choice,
        method=_method_label(shipped),
        validation=dict(shipped.validated or {}),
        interval=interval,
        noise_ceiling=model.manifest.get("noise_ceiling"),
        gain=gain,
        verdict=verdict,
        grounds=grounds,
        ranking=out,
        notes=notes,
        method_notes=_validation_notes(shipped),
        estimates_reliable=(not problems) if show_tx else None,
        timings_s={k: round(v, 3) for k, v in timings.items()},
    )
