"""How `catscans verify` (and `recommend --verify`) print: tables that fit 80 columns.

Candidate names are never cut (their column is as wide as the longest name) and every
interval stands on one line; the columns that do not fit the terminal (the round a row was
measured in, then P(beats #1); in the pick table, the predicted difference) move to ``--wide``
and are named. Captions are sentences wrapped at the terminal width. Two tables: what was
measured (paired bootstrap), then the pick (prediction × measurement: the posterior's
difference to the predicted first, P(best), expected regret), the pick and the set that cannot
be told apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from recommender.cli._common import natural_width, out, print_table, prose
from recommender.evaluation.paired import signed
from recommender.verify.posterior import N_DRAWS, TIE_LEVEL
from recommender.verify.verdict import fmt_diff


@dataclass(frozen=True)
class VCol:
    header: str
    cell: Callable[[dict], str]
    justify: str = "left"
    drop: int = 0  # 0: always shown; higher: dropped first when the table does not fit


def _build(rows: list[dict], cols: list[VCol], name_key: str) -> Table:
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    longest = max((len(str(r[name_key])) for r in rows), default=6)
    for c in cols:
        if c.header in ("candidate", "source"):
            t.add_column(c.header, no_wrap=True, min_width=longest)
        else:
            t.add_column(c.header, justify=c.justify, no_wrap=True)
    for r in rows:
        t.add_row(*(c.cell(r) for c in cols))
    return t


def fitted_table(rows: list[dict], cols: list[VCol], name_key: str, wide: bool) -> tuple[Table, list[str]]:
    """The table with every column (``wide``), or without the droppable ones that do not fit at
    their natural width (nothing folds); returns the table and the headers left for --wide."""
    shown = list(cols)
    t = _build(rows, shown, name_key)
    if wide:
        return t, []
    for level in sorted({c.drop for c in cols if c.drop}, reverse=True):
        if natural_width(t) <= out.width:
            break
        shown = [c for c in shown if c.drop != level]
        t = _build(rows, shown, name_key)
    return t, [c.header for c in cols if c not in shown]


def auc_ci(r: dict) -> str:
    return f"{r['auc']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"


def gain_cell(r: dict) -> str:
    if r.get("candidate") == "scratch" or r.get("source") == "scratch":
        return "ref."
    if not r.get("vs_scratch"):
        return "—"
    return fmt_diff(r["vs_scratch"]) + (" neg." if r.get("negative_transfer") else "")


def round_text(r: dict) -> str:
    lv = r["level"]
    where = "full" if lv["data"] >= 1 and lv["epochs"] >= 1 else f"{lv['data']:.0%}/{lv['epochs']:.0%}"
    return f"{where} ×{r['seeds']}"


def _p_beats(r: dict) -> str:
    return "—" if r.get("vs_first") is None else f"{r['vs_first']['p_beats']:.2f}"


def _width(t: Table, wide: bool) -> int | None:
    """--wide: the table's natural width (up to 200 columns), else the terminal's."""
    return max(out.width, min(natural_width(t), 200)) if wide else None


def _moved(left: list[str]) -> None:
    if left:
        prose(f"more columns in --wide: {', '.join(left)}", highlight=False)


def render_result(res: Any, wide: bool = False) -> None:
    """The measured table, the footer (how to read it, compute, verdict, notes)."""
    rows = [dict(r, rank=i) for i, r in enumerate(res.rows, 1)]
    cols = [VCol("#", lambda r: str(r["rank"]), "right"), VCol("candidate", lambda r: r["candidate"]),
            VCol("AUC [95% CI]", auc_ci), VCol("vs scratch [95% CI]", gain_cell),
            VCol("P(>#1)", _p_beats, "right", drop=1),
            VCol("round", round_text, drop=2)]
    t, left = fitted_table(rows, cols, "candidate", wide)
    print_table(t, f"measured on {res.target} — KB {res.kb}, protocol {res.protocol}", width=_width(t, wide))
    _moved(left)
    early = [f"#{r['rank']} {r['candidate']} ({round_text(r)})" for r in rows if not round_text(r).startswith("full")]
    if "round" in left and early:
        prose(f"measured in an earlier, smaller round (images/epochs ×seeds): {', '.join(early)}", highlight=False)
    caption(res)
    shown = pick_table(res, wide)
    tail(res, pick_line=not shown)


def _prior_cell(r: dict) -> str:
    if r.get("predicted_first"):
        return "ref."
    if r.get("prior_diff") is None:
        return "—"
    return f"{signed(r['prior_diff'])}±{1.96 * r['prior_sd']:.3f}"


def _post_cell(r: dict) -> str:
    if r.get("predicted_first"):
        return "ref."
    return f"{signed(r['post_diff'])} [{signed(r['post_lo'])}, {signed(r['post_hi'])}]"


def pick_table(res: Any, wide: bool = False) -> bool:
    """The posterior per candidate (best first by posterior mean), the pick and the tied set;
    False when the result has no posterior (nothing printed)."""
    post = getattr(res, "posterior", None) or {}
    rows = [r for r in res.rows if "p_best" in r]
    if not post or not rows:
        return False
    rows = sorted(rows, key=lambda r: (-r["post_diff"], r["candidate"]))
    rows = [dict(r, rank=i) for i, r in enumerate(rows, 1)]
    lead = post["leader"]
    first = "the posterior best" if post.get("no_prediction") else "the predicted first"
    cols = [VCol("#", lambda r: str(r["rank"]), "right"), VCol("candidate", lambda r: r["candidate"]),
            VCol("predicted Δ", _prior_cell, "right", drop=1),
            VCol("posterior Δ [95% CI]", _post_cell), VCol("P(best)", lambda r: f"{r['p_best']:.2f}", "right"),
            VCol("exp. regret", lambda r: f"{r['exp_regret']:.4f}", "right")]
    t, left = fitted_table(rows, cols, "candidate", wide)
    print_table(t, f"pick: prediction × measurement (Δ = AUC difference to {first}, {lead})",
                width=_width(t, wide))
    _moved(left)
    basis = post.get("basis", "none")
    prior = ("the prediction as prior: the predicted gain over scratch ± its "
             f"{post.get('level', 0.8):.0%} interval read as a normal (sd = half-width / "
             f"{_z(post.get('level', 0.8)):.4g}); the difference of two predictions has sd √(s₁² + s₂²)"
             if basis == "gain interval" else
             "the prediction as prior: the predicted AUC ± its interval read as a normal, differences of "
             "two predictions with independent errors" if basis == "AUC interval" else
             "no prediction interval: a flat prior")
    floor = post.get("seed_floor_sd")
    floor_txt = (f", plus a share fading with the seeds of the KB's per-seed spread of a paired difference "
                 f"(sd {floor:.3f})" if floor else "")
    prose(f"posterior = {prior}; times the measurements: each round's paired differences to scratch, with "
          f"their paired-bootstrap covariance{floor_txt}; a round with fewer images/epochs counts only for the "
          f"differences between its sources (normal–normal). Predicted Δ "
          f"± 95%; P(best) and exp. regret (the AUC lost against the best if it is picked) from "
          f"{post.get('n_draws', N_DRAWS):,} seeded posterior draws; rule: {post.get('rule', '')}.",
          style="dim", highlight=False)
    prose(f"[b]{escape(post['text'])}[/b]", highlight=False)
    if post.get("tied_text"):
        prose(escape(post["tied_text"]) + ("" if len(post.get("tied", [])) < 2 else
                                           f" (posterior P(better than the pick) ≥ {(1 - TIE_LEVEL) / 2:.3f})"),
              highlight=False)
    return True


def _z(level: float) -> float:
    from recommender.verify.posterior import z_of

    return z_of(level)


def caption(res: Any) -> None:
    """How to read the measured table."""
    n_test = res.rows[0]["n_test"] if res.rows else 0
    prose(f"95% paired bootstrap over {n_test} test images and the seeds of each row's round (1,000 joint "
          "resamples); P(>#1): probability of beating #1; it and vs scratch are paired within that round; neg. = negative transfer "
          "(detectably below scratch); round: share of the images/epochs and seeds of the row's last round.",
          style="dim", highlight=False)


def tail(res: Any, pick_line: bool = True) -> None:
    """Compute, the verdict, the pick in one line (unless the pick table printed it), notes."""
    c = res.compute
    b = c["budget"]
    asked = f"{b['value']:.0%} of full" if b["kind"] == "fraction" else f"{b['value']:g} min"
    prose(f"compute: {c['cells']} fine-tunes, {c['fraction_planned']:.0%} of fine-tuning every candidate "
          f"fully with {c['max_seeds']} seeds (budget {asked}); measured {c['fraction_measured']:.0%} of its "
          f"images x epochs, {c['wall_s']:.0f} s of training", highlight=False)
    prose(f"[b]verdict:[/b] {escape(res.verdict)}", highlight=False)
    post = getattr(res, "posterior", None) or {}
    if post.get("text") and pick_line:
        prose(escape(post["text"]) + (f"; {escape(post['tied_text'])}" if post.get("tied_text") else ""),
              highlight=False)
    for n in res.notes:
        prose(f"note: {n}", highlight=False)


def footer(res: Any) -> None:
    """The measured table's caption, then :func:`tail`."""
    caption(res)
    tail(res)


def _merged_rows(rec: Any, res: Any) -> list[dict]:
    """Measured rows first (verify's order), then the predicted rest (recommend's order)."""
    from recommender.gain import gain_text

    rows = [dict(r, source=r["candidate"], status="measured", auc_text=auc_ci(r), gain_text=gain_cell(r))
            for r in res.rows]
    measured = {r["candidate"] for r in res.rows}
    for r in rec.ranking:
        if r["source"] in measured:
            continue
        lo, hi = r.get("lo80"), r.get("hi80")
        auc = f"{r['predicted_auc']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")
        rows.append({"source": r["source"], "status": "predicted", "auc_text": auc,
                     "gain_text": gain_text(r, getattr(rec, "gain", None))})
    return [dict(r, rank=i) for i, r in enumerate(rows, 1)]


def render_merged(rec: Any, res: Any, wide: bool = False) -> None:
    """`recommend --verify`: one table, measured rows first, then the predicted rest."""
    cols = [VCol("#", lambda r: str(r["rank"]), "right"), VCol("source", lambda r: r["source"]),
            VCol("", lambda r: r["status"], drop=1), VCol("AUC [interval]", lambda r: r["auc_text"]),
            VCol("vs scratch", lambda r: r["gain_text"])]
    t, left = fitted_table(_merged_rows(rec, res), cols, "source", wide)
    print_table(t, f"sources for {res.target} — KB {rec.kb}: measured by verify, else predicted by {rec.method}",
                width=_width(t, wide))
    n = len(res.rows)
    which = f"rows 1–{n} are measured, the rest predicted; " if "" in left and n else ""
    prose(f"{which}measured rows: 95% paired bootstrap intervals; predicted rows: the recommend interval "
          "(80% conformal, where the method has one) and the predicted gain over scratch ± its interval.",
          style="dim", highlight=False)
    footer(res)
