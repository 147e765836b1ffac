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


def predicted_verdict(ranking: list[dict], info: dict | None, target_blind: bool = False) -> str | None:
    """'predicted: …' — whether any source is expected to beat training from scratch here.

    Over the full ranking (before --top). No scratch in the KB: None (no claim). ``target_blind``:
    the order is the static ranking, so the verdict says it is the same for any folder.
    """
    text = _verdict(ranking, info)
    if text and target_blind:
        text += " (From the KB's records alone: the same for any folder.)"
    return text


def _verdict(ranking: list[dict], info: dict | None) -> str | None:
    if info is None:
        return None
    sources = [r for r in ranking if r["source"] != info["reference"] and r.get("gain_vs_scratch") is not None]
    if not sources:
        return None
    best = max(sources, key=lambda r: r["gain_vs_scratch"])
    none = ("predicted: no source is expected to beat training from scratch on this folder; "
            "verify the top candidates to measure.")
    neg = [r["source"] for r in ranking if r.get("negative_transfer")]
    neg_txt = (f" Negative transfer (predicted: interval below 0): {', '.join(neg)}." if neg else "")
    if not info["interval"]:
        if best["gain_vs_scratch"] <= 0:
            return none
        return (f"predicted: best source {best['source']} {signed(best['gain_vs_scratch'])} AUC over scratch "
                "(no calibrated interval for the gain, so no claim that it is detectable); "
                "verify the top candidates to measure.")
    label = info["label"]
    if best["gain_lo"] is None or best["gain_lo"] <= 0:
        return (none + f" Best source: {best['source']}, {signed(best['gain_vs_scratch'])} "
                       f"{_interval(best)} AUC over scratch ({label})." + neg_txt)
    return (f"predicted: {best['source']} is expected to beat training from scratch by "
            f"{signed(best['gain_vs_scratch'])} AUC {_interval(best)} ({label}, which held the measured "
            f"gain for {info['coverage']:.0%} of {info['n_cells']} held-out cells, {info['n_targets']} "
            "targets)." + neg_txt)
