"""What `catscans verify` and `recommend --verify` print at 80 columns: names never cut, every
interval on one line, columns that do not fit named and moved to --wide; predicted rows of the
merged table carry the predicted gain over scratch (and no interval when there is none)."""

from __future__ import annotations

import re

from rich.cells import cell_len

from recommender.cli import _common
from recommender.cli._verify_view import render_merged, render_result
from recommender.recommend import Recommendation
from recommender.verify.run import VerifyResult

NAMES = ["fashion_mnist_subset", "scratch", "cifar10_subset", "ham10000_derm", "dtd_10class"]


def _row(name: str, i: int, full: bool = True) -> dict:
    d = 0.01 * (2 - i)
    return {"candidate": name, "kind": "kb", "round": 1 if full else 0, "final": full,
            "level": {"data": 1.0 if full else 0.5, "epochs": 1.0 if full else 0.5}, "seeds": 5 if full else 6,
            "n_test": 120, "auc": 0.92 - 0.01 * i, "lo": 0.87 - 0.01 * i, "hi": 0.96 - 0.01 * i,
            "vs_first": None if i == 0 else {"diff": -0.01 * i, "lo": -0.03, "hi": 0.01, "p_beats": 0.1},
            "vs_scratch": None if name == "scratch" else {"diff": d, "lo": d - 0.03, "hi": d + 0.03 if i < 4 else -0.001},
            "negative_transfer": i == 4}


def _res() -> VerifyResult:
    rows = [_row(n, i, full=i < 3) for i, n in enumerate(NAMES)]
    return VerifyResult("folder", "fp", "local", "cpu-kb@abc", "run", "store", rows, [],
                        {"cells": 45, "fraction_planned": 0.45, "max_seeds": 10, "fraction_measured": 0.44,
                         "wall_s": 8.0, "budget": {"kind": "fraction", "value": 0.5}},
                        "measured: no detectable gain from pretraining, best source fashion_mnist_subset "
                        "+0.020 [−0.010, +0.050] over scratch.")


def _printed(fn, *args, width: int = 80, **kw) -> str:  # noqa: ANN001, ANN003
    import io

    from rich.console import Console

    buf = io.StringIO()
    con = Console(width=width, soft_wrap=True, file=buf)  # --wide prints through a wider console on the same file
    old = _common.out
    import recommender.cli._verify_view as view

    _common.out, view.out = con, con
    try:
        fn(*args, **kw)
    finally:
        _common.out, view.out = old, old
    return buf.getvalue()


def _line(text: str, name: str) -> str:
    return next(ln for ln in text.splitlines() if f" {name} " in f" {ln} " and re.match(r"\s*\d+\s", ln))


def test_verify_table_fits_80_with_whole_names_and_one_line_intervals():
    text = _printed(render_result, _res())
    assert max(cell_len(ln) for ln in text.splitlines()) <= 80, text
    for i, n in enumerate(NAMES):
        line = _line(text, n)
        assert f"{0.92 - 0.01 * i:.3f} [{0.87 - 0.01 * i:.3f}, {0.96 - 0.01 * i:.3f}]" in line
    assert "ref." in _line(text, "scratch") and "neg." in _line(text, "dtd_10class")
    assert "+0.020 [−0.010, +0.050]" in _line(text, "fashion_mnist_subset")
    flat = " ".join(text.split())
    assert re.search(r"more columns in --wide: (P\(>#1\), )?round", flat)
    assert "#4 ham10000_derm (50%/50% ×6)" in flat  # rows of an earlier round are still named as such
    assert "verdict: measured: no detectable gain from pretraining, best source fashion_mnist_subset" in flat


def test_verify_wide_has_every_column():
    text = _printed(render_result, _res(), wide=True)
    assert "round" in text and "50%/50% ×6" in _line(text, "ham10000_derm") and "P(>#1)" in text
    assert "more columns in --wide" not in text


def test_merged_table_predicted_rows_show_the_predicted_gain_and_survive_no_interval():
    ranking = [{"source": s, "predicted_auc": 0.8, "lo80": None, "hi80": None, "gain_vs_scratch": g,
                "gain_lo": None, "gain_hi": None, "negative_transfer": None}
               for s, g in (("pneumoniamnist", 0.012), ("mnist_test10k", -0.004))]
    rec = Recommendation("folder", {}, True, "local", "", "static ranking", {}, ranking,
                         gain={"reference": "scratch", "interval": False, "caption": ""})
    text = _printed(render_merged, rec, _res())
    assert max(cell_len(ln) for ln in text.splitlines()) <= 80, text
    assert "+0.012" in _line(text, "pneumoniamnist") and "−0.004" in _line(text, "mnist_test10k")
    assert _line(text, "pneumoniamnist").startswith("6 ")  # after the 5 measured rows
    assert "rows 1–5 are measured, the rest predicted" in " ".join(text.split())  # the status column did not fit
    wide = _printed(render_merged, rec, _res(), wide=True)
    assert "predicted" in _line(wide, "pneumoniamnist") and "measured" in _line(wide, "fashion_mnist_subset")


def _posterior_res() -> VerifyResult:
    """_res() with a posterior: ham10000_derm predicted first, fashion_mnist_subset displaced it."""
    import numpy as np

    from recommender.verify.posterior import Posterior, prior_from_rows, report

    res = _res()
    names = [n for n in NAMES if n != "scratch"] + ["scratch"]
    gains = {"fashion_mnist_subset": 0.02, "cifar10_subset": 0.0, "ham10000_derm": -0.01, "dtd_10class": -0.05}
    prior = prior_from_rows([{"source": n, "predicted_gain": g, "gain_lo": g - 0.03 + (n == "ham10000_derm") * 0.04,
                              "gain_hi": g + 0.03} for n, g in gains.items()], names, "scratch")
    mean = np.array([0.04, 0.0, 0.005, -0.03, 0.0])
    cov = np.diag([1e-4, 1e-4, 1e-4, 1e-4, 0.0])
    rep = report(prior, Posterior(names, "scratch", mean, cov), "ham10000_derm")
    for r in res.rows:
        r.update(rep["rows"][r["candidate"]])
    res.posterior = {k: v for k, v in rep.items() if k != "rows"} | {"seed_floor_sd": 0.024}
    return res


def test_pick_table_fits_80_and_names_the_pick_and_the_tied_set():
    res = _posterior_res()
    text = _printed(render_result, res)
    assert max(cell_len(ln) for ln in text.splitlines()) <= 80, text
    flat = " ".join(text.split())
    assert "pick: prediction × measurement (Δ = AUC difference to the predicted first, ham10000_derm)" in flat
    assert res.posterior["pick"] == "fashion_mnist_subset" and res.posterior["displaced"]
    assert "pick: fashion_mnist_subset, better than the predicted first ham10000_derm with posterior probability" in flat
    assert "cannot be told apart at 95%" not in flat or "fashion_mnist_subset" in res.posterior["tied"]
    line = _line(text.split("pick: prediction", 1)[1], "fashion_mnist_subset")
    assert "+0.035 [" in line and line.split()[-1] == f"{res.rows[0]['exp_regret']:.4f}"
    p_best = [r["p_best"] for r in res.rows]
    assert abs(sum(p_best) - 1) < 1e-9 and "ref." in _line(text.split("pick: prediction", 1)[1], "ham10000_derm")
    assert "more columns in --wide: predicted Δ" in flat  # a 20-character name leaves no room for it
    wide = _printed(render_result, res, wide=True)
    assert "predicted Δ" in wide and "+0.030±" in _line(wide.split("pick: prediction", 1)[1], "fashion_mnist_subset")


def test_merged_table_prints_the_pick_line():
    rec = Recommendation("folder", {}, True, "local", "", "static ranking", {}, [])
    text = " ".join(_printed(render_merged, rec, _posterior_res()).split())
    assert "pick: fashion_mnist_subset, better than the predicted first" in text
