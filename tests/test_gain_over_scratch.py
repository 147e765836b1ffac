"""Gain over scratch (issue 16): scratch placed by its own estimates, a gain interval calibrated
like the AUC one and checked on the outer folds, a verdict in words, and shipped models with
and without a gain calibration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _scratch_kb import WINS, scratch_kb

from experiments.knowledge_base import SCRATCH
from recommender.evaluation import conformal, selection
from recommender.evaluation.selection import Folds, Procedure
from recommender.gain import (
    EXTRAPOLATES,
    gain_fields,
    gain_info,
    gain_text,
    predicted_verdict,
    verdict_call,
)
from recommender.model import build_meta_dataset, fold_rows, load_recommender

CANDS = ("static", "estimate:best")  # the inner-best single estimate: est_good here (est_noise sees nothing)


def _procedure(kb) -> Procedure:  # noqa: ANN001
    md = build_meta_dataset(kb)
    proc = Procedure(md, Folds(md))
    proc.cands = {k: v for k, v in proc.cands.items() if k in CANDS}  # untuned: no Optuna
    return proc


@pytest.fixture(scope="module")
def outer():
    proc = _procedure(scratch_kb())
    fos = [proc.outer_fold(g) for g in proc.folds.labels]
    return fos, pd.concat([f.intervals for f in fos], ignore_index=True)


def _first(preds: pd.DataFrame, method: str, target: str) -> str:
    g = preds[(preds["method"] == method) & (preds["target"] == target)]
    return str(g.sort_values(["score", "source"], ascending=[False, True]).iloc[0]["source"])


def test_scratch_is_placed_by_its_own_estimates_not_by_the_prior(outer):
    fos, _ = outer
    preds = pd.concat([f.predictions for f in fos], ignore_index=True)
    assert {f.choices["estimates"].method for f in fos} == {"estimate:best"}
    for t in WINS:  # scratch wins here and its estimates say so: the shipped order puts it first
        assert _first(preds, "shipped+est", t) == SCRATCH
        assert _first(preds, "static", t) != SCRATCH  # control: by the prior alone it is not first
    for t in sorted(set(preds["target"]) - set(WINS)):
        assert _first(preds, "shipped+est", t) != SCRATCH


def test_calibrate_gain_is_narrow_when_only_the_level_is_unknown():
    """Targets whose AUC level varies a lot but whose order is known: the AUC interval must be wide,
    the gain interval narrow (the level cancels in a difference); no scratch rows, no gain entry."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        level = 0.8 + rng.normal(0, 0.05)
        truth = np.linspace(-1, 1, 6)
        for j, s in enumerate([SCRATCH, "a", "b", "c", "d", "e"]):
            rows.append({"target": f"t{i}", "source": s, "z": truth[j],
                         "auc": level + 0.02 * truth[j] + rng.normal(0, 0.002), "mu": 0.8, "sd": 0.02})
    cal = pd.DataFrame(rows)
    c = conformal.calibrate(cal)
    assert c["q"] > 0.03 and c["gain"]["q"] < 0.01, c
    assert c["gain"]["n_targets"] == 12 and c["gain"]["n_cells"] == 12 * 5  # scratch's own cells left out
    assert "gain" not in conformal.calibrate(cal[cal["source"] != SCRATCH])
    few = conformal.calibrate(cal[cal["target"].isin(["t0", "t1", "t2"])])
    assert few["gain"]["q"] is None  # 3 targets: no finite 80% quantile, as for the AUC


def test_gain_interval_coverage_is_measured_on_the_outer_folds(outer):
    fos, iv = outer
    est = iv[iv["scenario"] == "estimates"]
    cov = conformal.coverage(est)["gain"]
    n_targets = est["target"].nunique()
    assert cov["n_targets"] == n_targets == 10
    assert cov["n_cells"] == len(est[est["source"] != SCRATCH]) == 10 * 11
    assert 0.7 <= cov["coverage"] <= 0.95, cov
    manual = ((est["gain"] >= est["gain_lo"]) & (est["gain"] <= est["gain_hi"]))[est["source"] != SCRATCH]
    assert cov["coverage"] == pytest.approx(manual.mean())
    # every cell flagged as negative transfer was measured below scratch
    assert cov["n_flagged_negative"] > 0 and cov["flagged_negative_measured_below"] == cov["n_flagged_negative"]
    # the gain column is the difference of the AUC column: scratch's predicted AUC subtracted
    for _, g in est.groupby("target"):
        ref = float(g.loc[g["source"] == SCRATCH, "predicted_auc"].iloc[0])
        assert np.allclose(g["predicted_gain"], g["predicted_auc"] - ref)


def test_gain_interval_never_uses_the_held_out_targets_own_gains():
    """Move scratch's AUC on t5 (t5's measured gains all change): t5's gain interval must not."""
    def gains(shift: dict) -> pd.DataFrame:
        kb = scratch_kb()
        recs = kb.records.copy()
        for (s, t), d in shift.items():
            recs.loc[(recs["source"] == s) & (recs["target"] == t), "value"] += d
        kb = type(kb)(kb.name, recs, kb.datasets, kb.manifest, pair_features=kb.pair_features)
        iv = _procedure(kb).outer_fold("t5").intervals
        return iv[iv["scenario"] == "estimates"].reset_index(drop=True)

    a, b = gains({}), gains({(SCRATCH, "t5"): 0.03})
    assert not np.allclose(a["gain"], b["gain"], equal_nan=True)  # the perturbation is real
    pd.testing.assert_series_equal(a["gain_hi"] - a["gain_lo"], b["gain_hi"] - b["gain_lo"])
    c = gains({(SCRATCH, "t6"): 0.03})  # control: a training target's gains do move it
    assert not np.allclose(a["gain_hi"] - a["gain_lo"], c["gain_hi"] - c["gain_lo"])


INFO = {"reference": SCRATCH, "interval": True, "level": 0.8, "coverage": 0.84, "n_cells": 110,
        "n_targets": 10, "label": "80% interval"}


def _ranking(cells: pd.DataFrame, info: dict) -> list[dict]:
    """The rows `recommend` builds from a ranked frame (the same gain_fields)."""
    cells = cells.sort_values("predicted_auc", ascending=False)
    return [{"source": r["source"], **gain_fields(r, info)} for _, r in cells.iterrows()]


def test_verdict_says_no_gain_where_scratch_wins_and_names_the_gain_elsewhere(outer):
    _, iv = outer
    est = iv[iv["scenario"] == "estimates"]
    ev = {"base_rate": {"helps": 7, "n": 10}}
    calls = {}
    for t, g in est.groupby("target"):
        ranking = _ranking(g, INFO)
        v = predicted_verdict(ranking, INFO, evidence=ev)
        calls[t] = verdict_call(ranking, INFO)
        best = max(r["gain_vs_scratch"] for r in ranking if r["source"] != SCRATCH)
        if calls[t] == "helps":
            assert v.startswith("predicted: pretraining helps here.") and "84% of 110" in v, (t, v)
            assert " is expected to beat training from scratch by +0.0" in v and "no source" not in v
        elif calls[t] == "hurts":
            assert v.startswith("predicted: pretraining hurts here. Every source is expected"), (t, v)
        else:  # cannot tell: the KB's base rate and "run verify"; "no source …" only for a gain ≤ 0
            assert "helped detectably on 7 of 10 targets" in v and "catscans verify" in v, (t, v)
            assert v.startswith("predicted: no source is expected") == (best <= 0), (t, v)
    # the fixture's scratch-wins targets get no 'helps' call, the others no 'hurts' call
    assert all(calls[t] != "helps" for t in WINS)
    assert all(calls[t] != "hurts" for t in set(calls) - set(WINS))
    assert "helps" in calls.values()  # the call is made where the fixture's estimates carry it
    # no scratch in the KB: no gain, no claim
    assert predicted_verdict(_ranking(est[est["source"] != SCRATCH], INFO), None) is None


def test_verdict_has_three_outcomes_from_the_intervals():
    def rows(*lohi):
        return [{"source": SCRATCH, "gain_vs_scratch": 0.0, "gain_lo": None, "gain_hi": None}] + [
            {"source": f"s{i}", "gain_vs_scratch": (lo + hi) / 2, "gain_lo": lo, "gain_hi": hi,
             "negative_transfer": hi < 0} for i, (lo, hi) in enumerate(lohi)]

    ev = {"base_rate": {"helps": 21, "n": 28},
          "calls": {"n_helps": 7, "helps_right": 6, "helps_right_lo": 0.49, "helps_right_hi": 0.97}}
    up = rows((0.01, 0.05), (-0.02, 0.02))
    assert verdict_call(up, INFO) == "helps"
    v = predicted_verdict(up, INFO, evidence=ev)
    assert v.startswith("predicted: pretraining helps here. s0 is expected to beat") and "right 6/7" in v
    down = rows((-0.05, -0.01), (-0.04, -0.02))
    assert verdict_call(down, INFO) == "hurts"
    assert predicted_verdict(down, INFO, evidence=ev).startswith("predicted: pretraining hurts here.")
    unsure = rows((-0.01, 0.05), (-0.05, -0.01))
    assert verdict_call(unsure, INFO) == "cannot tell"
    v = predicted_verdict(unsure, INFO, evidence=ev)
    assert v.startswith("cannot tell from prediction") and "21 of 28 targets" in v and "s1" in v  # s1 neg.
    # "no source is expected to beat scratch" only when the best predicted gain is ≤ 0
    flat = rows((-0.04, 0.0), (-0.06, 0.01))
    assert predicted_verdict(flat, INFO, evidence=ev).startswith("predicted: no source is expected")
    # thin labels: no claim at all, whatever the intervals say
    assert predicted_verdict(up, INFO, unreliable="1 class").startswith("no claim: 1 class")
    # a folder unlike the KB's targets: a helps / hurts call says it extrapolates; cannot tell already sends to verify
    for r in (up, down):
        assert predicted_verdict(r, INFO, evidence=ev, extrapolates=True) == (
            predicted_verdict(r, INFO, evidence=ev) + EXTRAPOLATES)
    assert predicted_verdict(unsure, INFO, evidence=ev, extrapolates=True) == predicted_verdict(unsure, INFO, evidence=ev)


def test_row_marks_and_cells():
    r = {"source": "a", "gain_vs_scratch": -0.03, "gain_lo": -0.05, "gain_hi": -0.01, "negative_transfer": True}
    assert gain_text(r, INFO) == "−0.030±0.020 neg." and gain_text(r, INFO, brief=True) == "−0.030 neg."
    assert gain_text({"source": SCRATCH, "gain_vs_scratch": 0.0}, INFO) == "ref."
    row = pd.Series({"source": "a", "predicted_gain": 0.01, "gain_lo": -0.01, "gain_hi": 0.03})
    assert gain_fields(row, INFO)["negative_transfer"] is False
    old = dict(INFO, interval=False)
    f = gain_fields(row, old)
    assert f["gain_lo"] is None and f["negative_transfer"] is None and f["gain_vs_scratch"] == 0.01


@pytest.fixture(scope="module")
def shipped_dir(tmp_path_factory):
    from recommender.evaluation.loto import run_loto, train_final

    md = build_meta_dataset(scratch_kb())
    with pytest.MonkeyPatch.context() as mp:
        real = selection.candidates
        mp.setattr(selection, "candidates",
                   lambda ctx, estimates=True: {k: v for k, v in real(ctx, estimates).items() if k in CANDS})
        result = run_loto(md)
        root = tmp_path_factory.mktemp("models")
        train_final(md, result, out_root=root)
    return root, md


def test_saved_model_ships_a_checked_gain_interval_and_old_models_still_load(shipped_dir):
    root, md = shipped_dir
    rec = load_recommender("scratchy", root=root)
    shipped = rec.scenario(estimates=True)
    assert shipped.method == "estimate:best" and shipped.fitted.estimator == "est_good"
    assert shipped.calibration["gain"]["q"] > 0
    cov = shipped.validated["coverage"]["gain"]
    assert cov["n_cells"] == 110 and cov["n_targets"] == 10
    info = gain_info(shipped, list(scratch_kb().sources))
    assert info["interval"] and info["coverage"] == cov["coverage"] and "held the measured gain" in info["caption"]
    _, test = fold_rows(md, ["t0"])
    ranked = shipped.rank(test)
    assert ranked.iloc[0]["source"] == SCRATCH  # t0 is a scratch-wins target
    other = ranked[ranked["source"] != SCRATCH]
    assert np.isfinite(other["gain_lo"]).all() and (other["gain_hi"] - other["gain_lo"] > 0).all()
    assert verdict_call(_ranking(ranked, info), info) != "helps"

    # a manifest saved before gain calibration: loads, ranks, shows the point gain and no interval
    man_path = root / "scratchy" / "manifest.json"
    man = json.loads(man_path.read_text())
    for s in man["shipped"].values():
        s["calibration"].pop("gain", None)
        s["validated"].get("coverage", {}).pop("gain", None)
    man_path.write_text(json.dumps(man))
    old = load_recommender("scratchy", root=root).scenario(estimates=True)
    ranked = old.rank(test)
    assert ranked["gain_lo"].isna().all() and np.isfinite(ranked["predicted_gain"]).all()
    info = gain_info(old, [SCRATCH])
    assert info["interval"] is False and "no calibrated interval" in info["caption"]
    up = [{"source": "a", **gain_fields(pd.Series({"source": "a", "predicted_gain": 0.02}), info)},
          {"source": SCRATCH, **gain_fields(pd.Series({"source": SCRATCH, "predicted_gain": 0.0}), info)}]
    v = predicted_verdict(up, info)
    assert v.startswith("cannot tell from prediction: best source a +0.020 AUC over scratch, with no calibrated")
    assert gain_info(old, ["a", "b"]) is None  # no scratch source: no gain column at all


def test_the_gain_caption_states_its_held_out_sign_record():
    from recommender.evaluation import verdict_calls
    from recommender.gain import transfer_evidence, with_sign_record

    class _Scr:  # the part of scratch_sign.ScratchEval that evidence() reads
        truth = pd.DataFrame({"truth": ["helps", "helps", "no detectable difference"]})

        def breakdown(self) -> dict:
            return {"helps": 2, "no detectable difference": 1, "hurts": 0}

    signs = [{"scenario": s, "n_cells": 200, "model_k": k, "base_rate_k": 104,
              "vs_base_rate": {"words": w, "n": 23, "unit": "groups"}}
             for s, k, w in (("any", 124, "better"), ("estimates", 120, "no detectable difference"))]
    manifest = {"transfer_evidence": json.loads(json.dumps(verdict_calls.evidence([], _Scr(), signs)))}
    ev = transfer_evidence(manifest, "estimates")
    assert ev["gain_sign"]["model_k"] == 120 and ev["base_rate"]["helps"] == 2
    info = {"interval": True, "brief": "vs scratch: … 80% interval.", "caption": "vs scratch: long."}
    got = with_sign_record(info, ev)
    assert got["brief"].endswith("80% interval; sign right on 60% of held-out cells (always 'helps': 52%)")
    assert got["caption"] == ("vs scratch: long; its sign matched the measured gain's on 60% of 200 held-out "
                              "cells (an always-'helps' rule: 52%; not detectably different, paired over 23 "
                              "groups)")
    assert info["brief"].endswith("interval.")  # the input is not changed
    assert "detectably above it" in with_sign_record(info, transfer_evidence(manifest, "any"))["caption"]
    assert with_sign_record(info, {}) is info  # a model saved without the record: the caption as it was
    assert with_sign_record(None, ev) is None
