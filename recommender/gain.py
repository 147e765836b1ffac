"""Gain over training from scratch, predicted: per row of `recommend`, and a verdict in words.

A source's predicted gain is its predicted AUC minus scratch's predicted AUC on the same
folder (the same shipped method, the same calibrated slope). Its interval is the
split-conformal one calibrated for the *gain* (:func:`recommender.evaluation.conformal.calibrate_gain`)
and is shown only when nested leave-one-group-out measured its coverage
(``validated.coverage.gain``); a model saved before that gets the point gain and no
interval, and no "detectable" claim. A KB without a ``scratch`` source gets no gain at all.
"""

from __future__ import annotations

import math

import pandas as pd

from recommender.evaluation.paired import signed
from recommender.model.scoring import REFERENCE


def _num(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def gain_info(shipped, sources: list[str]) -> dict | None:  # noqa: ANN001 - model.shipped.Shipped
    """What the gain column is and whether it has a checked interval; None without scratch.

    ``interval``: True only when the shipped calibration has a gain half-width *and* the outer
    folds measured its coverage (then ``coverage, n_cells, n_targets, level``).
    """
    if REFERENCE not in sources:
        return None
    cal = (shipped.calibration or {}).get("gain") or {}
    cov = ((shipped.validated or {}).get("coverage") or {}).get("gain") or {}
    c = _num(cov.get("coverage"))
    info = {"reference": REFERENCE, "interval": False, "level": float(cal.get("nominal", 0.8))}
    pct = f"{int(round(100 * info['level']))}%"
    if cal.get("q") is None or c is None:
        why = ("this model was saved without a gain calibration (retrain: catscans evaluate-meta --save)"
               if not cal else "its coverage was not measured under nested leave-one-group-out")
        return info | {"caption": f"vs scratch: predicted AUC minus scratch's predicted AUC on your folder; "
                                  f"no calibrated interval: {why}"}
    info |= {"interval": True, "coverage": c, "n_cells": cov.get("n_cells"), "n_targets": cov.get("n_targets"),
             "half_width": float(cal["q"]), "label": f"{pct} interval"}
    info["brief"] = (f"vs scratch: predicted AUC minus scratch's on your folder ± its {pct} interval, which "
                     f"held the measured gain for {c:.0%} of {cov.get('n_cells')} held-out cells; "
                     "neg. = the whole interval below 0")
    info["caption"] = (f"vs scratch: predicted AUC minus scratch's predicted AUC on your folder ± its "
                       f"split-conformal {pct} interval (from held-out targets' measured gains over "
                       f"scratch); under nested leave-one-group-out it held the measured gain for "
                       f"{c:.0%} of {cov.get('n_cells')} held-out cells ({cov.get('n_targets')} targets); "
                       "neg. = negative transfer (predicted): the whole interval lies below 0")
    return info


def gain_fields(r: pd.Series, info: dict | None) -> dict:
    """The ranking row's gain keys: gain_vs_scratch, gain_lo, gain_hi, negative_transfer."""
    if info is None:
        return {}
    lo, hi = (_num(r.get("gain_lo")), _num(r.get("gain_hi"))) if info["interval"] else (None, None)
    neg = (hi < 0) if hi is not None else (False if r["source"] == REFERENCE else None)
    return {"gain_vs_scratch": _num(r.get("predicted_gain")), "gain_lo": lo, "gain_hi": hi,
            "negative_transfer": neg}


def gain_text(r: dict, info: dict | None, brief: bool = False) -> str:
    """A table cell: 'ref.' for scratch, '+0.012±0.021' (neg. when below 0), '+0.012' without
    interval (or ``brief``: the gain and the neg. mark only)."""
    g = r.get("gain_vs_scratch")
    if info is None or g is None:
        return "—"
    if r.get("source") == info["reference"]:
        return "ref."
    lo, hi = r.get("gain_lo"), r.get("gain_hi")
    neg = " neg." if r.get("negative_transfer") else ""
    if lo is None or hi is None:
        return signed(g) + neg
    return signed(g) + ("" if brief else f"±{(hi - lo) / 2:.3f}") + neg


def _interval(r: dict) -> str:
    return f"[{signed(r['gain_lo'])}, {signed(r['gain_hi'])}]"


def transfer_evidence(manifest: dict | None, scenario: str) -> dict:
    """What the KB says about transfer beyond this folder, from the saved model's manifest.

    ``base_rate``: on how many of the KB's targets pretraining helped detectably (paired over
    seeds, :func:`recommender.evaluation.scratch_sign.scratch_truth`); ``calls``: how the
    three-outcome verdict did on held-out targets for this scenario
    (:mod:`recommender.evaluation.verdict_calls`). Empty when the model was saved without them.
    """
    ev = (manifest or {}).get("transfer_evidence") or {}
    calls = next((r for r in ev.get("verdict_calls") or [] if r.get("scenario") == scenario), None)
    sign = next((r for r in ev.get("gain_sign") or [] if r.get("scenario") == scenario), None)
    return {k: v for k, v in (("base_rate", ev.get("base_rate")), ("calls", calls), ("gain_sign", sign)) if v}


def with_sign_record(info: dict | None, evidence: dict) -> dict | None:
    """``info`` with the gain column's held-out sign record in its captions: how often the predicted
    gain had the measured gain's sign on held-out cells, beside an always-'helps' rule's share."""
    g = evidence.get("gain_sign") or {}
    if info is None or not g.get("n_cells"):
        return info
    n, k, b = g["n_cells"], g["model_k"] / g["n_cells"], g["base_rate_k"] / g["n_cells"]
    words = {"better": "detectably above it", "worse": "detectably below it"}.get(
        g.get("words"), "not detectably different")
    full = (f"its sign matched the measured gain's on {k:.0%} of {n} held-out cells (an always-'helps' "
            f"rule: {b:.0%}; {words}, paired over {g.get('n_units')} {g.get('unit', 'groups')})")
    short = f"sign right on {k:.0%} of held-out cells (always 'helps': {b:.0%})"
    out = dict(info)
    for key, text in (("brief", short), ("caption", full)):
        if out.get(key):
            out[key] = f"{out[key].rstrip('. ')}; {text}"
    return out


EXTRAPOLATES = (" Your folder is unlike the KB's targets (see the AUC note), so this call is an "
                "extrapolation: `catscans verify` measures it.")


def predicted_verdict(ranking: list[dict], info: dict | None, target_blind: bool = False,
                      evidence: dict | None = None, unreliable: str | None = None,
                      extrapolates: bool = False) -> str | None:
    """'predicted: …' — whether any source is expected to beat training from scratch here.

    Three outcomes from the gain intervals: *helps* (the best source's interval lies above 0),
    *hurts* (every source's interval lies below 0) or *cannot tell* (then the KB's base rate and
    "run verify"). Over the full ranking (before --top). No scratch in the KB: None (no claim).
    ``target_blind``: the order is the static ranking, so the verdict says it is the same for
    any folder. ``unreliable``: why the folder cannot carry a verdict (then no gain is claimed).
    ``extrapolates``: the folder lies farther from the KB's targets than (nearly) all of them from
    each other; a *helps* or *hurts* call then says it rests on an extrapolation.
    """
    if unreliable:
        return (f"no claim: {unreliable}, so the estimates on this folder are unreliable and no "
                "gain over scratch is claimed; add labelled images before measuring.")
    if info is None:
        return None
    text = _verdict(ranking, info, evidence or {})
    if text and extrapolates and verdict_call(ranking, info) in ("helps", "hurts"):
        text += EXTRAPOLATES
    if text and target_blind:
        text += " (From the KB's records alone: the same for any folder.)"
    return text


def _base_rate_text(evidence: dict) -> str:
    b = evidence.get("base_rate") or {}
    if not b.get("n"):
        return ""
    return (f" On this KB pretraining helped detectably on {b['helps']} of {b['n']} targets "
            "(paired over seeds).")


def _calls_text(evidence: dict, call: str) -> str:
    c = evidence.get("calls") or {}
    if call == "helps" and c.get("n_helps"):
        return (f" On held-out targets, 'helps' calls were right {c['helps_right']}/{c['n_helps']} "
                f"[{c['helps_right_lo']:.2f}, {c['helps_right_hi']:.2f}].")
    if call == "hurts" and c.get("n_hurts"):
        return f" On held-out targets, 'hurts' calls were right {c['hurts_right']}/{c['n_hurts']}."
    return ""


def verdict_call(ranking: list[dict], info: dict | None) -> str | None:
    """'helps' | 'hurts' | 'cannot tell' from the gain intervals (None: no gain or no interval)."""
    if info is None or not info.get("interval"):
        return None
    rows = [r for r in ranking if r["source"] != info["reference"] and r.get("gain_lo") is not None]
    if not rows:
        return None
    if max(r["gain_lo"] for r in rows) > 0:
        return "helps"
    if max(r["gain_hi"] for r in rows) < 0:
        return "hurts"
    return "cannot tell"


def _verdict(ranking: list[dict], info: dict, evidence: dict) -> str | None:
    sources = [r for r in ranking if r["source"] != info["reference"] and r.get("gain_vs_scratch") is not None]
    if not sources:
        return None
    best = max(sources, key=lambda r: r["gain_vs_scratch"])
    base = _base_rate_text(evidence)
    run = " Run `catscans verify` to measure."
    neg = [r["source"] for r in ranking if r.get("negative_transfer")]
    neg_txt = (f" Negative transfer (predicted: interval below 0): {', '.join(neg)}." if neg else "")
    g = signed(best["gain_vs_scratch"])
    call = verdict_call(ranking, info)
    if call is None:  # a gain without a checked interval: no call either way
        if best["gain_vs_scratch"] <= 0:
            return "predicted: no source is expected to beat training from scratch on this folder." + base + run
        return (f"cannot tell from prediction: best source {best['source']} {g} AUC over scratch, with "
                "no calibrated interval for the gain." + base + run)
    label = info["label"]
    if call == "helps":
        top = max((r for r in sources if r.get("gain_lo") is not None), key=lambda r: r["gain_lo"])
        return (f"predicted: pretraining helps here. {top['source']} is expected to beat training from "
                f"scratch by {signed(top['gain_vs_scratch'])} AUC {_interval(top)} ({label}; it held the "
                f"measured gain for {info['coverage']:.0%} of {info['n_cells']} held-out cells)."
                + _calls_text(evidence, "helps") + neg_txt)
    if call == "hurts":
        return ("predicted: pretraining hurts here. Every source is expected to do worse than training "
                f"from scratch (best {best['source']}, {g} AUC {_interval(best)}, {label})."
                + _calls_text(evidence, "hurts") + run)
    if best["gain_vs_scratch"] <= 0:
        return ("predicted: no source is expected to beat training from scratch on this folder (best "
                f"{best['source']}, {g} AUC {_interval(best)}, {label}), but no interval lies below 0 "
                "either." + base + run + neg_txt)
    return (f"cannot tell from prediction whether pretraining helps: the best source, {best['source']}, "
            f"{g} AUC {_interval(best)} over scratch ({label}), may not beat it." + base + run + neg_txt)
