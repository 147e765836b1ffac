"""How `catscans recommend` prints a Recommendation: a compact default that fits 80 columns,
``--wide`` for reasons, weights and loading snippets.

Columns are read from the result, not hard-wired: a key that another part of the code adds
to the ranking rows (an interval, a gain over scratch, a verified AUC, ...) shows up here
without a change: in the compact table while it still fits the terminal, else in ``--wide``.
Source names are never cut: their column is as wide as the longest name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from recommender.cli._common import natural_width, out, print_table, prose, wall_time

WIDE_MAX = 200  # --wide tables grow to their natural width, up to this many columns


@dataclass(frozen=True)
class Col:
    header: str
    where: str  # "compact" | "wide"
    justify: str = "left"
    digits: int = 3


# Ranking keys this module knows; every other scalar key is rendered generically.
KNOWN: dict[str, Col] = {
    "rank": Col("#", "compact", "right"),
    "source": Col("source", "compact"),
    "predicted_auc": Col("AUC", "compact", "right"),
    "gain_vs_scratch": Col("vs scratch", "compact", "right"),
    "evidence": Col("evidence", "compact"),
    "vs_static_pick": Col("vs static", "wide", "right", 4),
    "reasons": Col("why", "wide"),
}
# Keys folded into other columns or rendered apart (intervals, the weights card, estimates).
CONSUMED = {"lo80", "hi80", "lo", "hi", "static_pick", "weights", "weights_card", "transferability",
            "gain_lo", "gain_hi", "negative_transfer", "similarities"}


def fmt_value(v: Any, digits: int = 3) -> str:
    """A cell: floats to ``digits`` decimals (4 significant figures when large), bools yes/no."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.{digits}f}" if abs(v) < 100 else f"{v:.4g}"
    return str(v)


def interval_info(rec: Any) -> dict | None:
    """The interval to print and its measured coverage, or None when the method has none.

    An interval is printed only when its coverage was measured: ``rec.interval`` (with
    ``coverage``; None = no calibrated interval); results without that field fall back to
    the meta-model's quantile band, whose LOTO coverage is ``validation['coverage80']``.
    Other spreads stay in --format json.
    """
    if hasattr(rec, "interval"):  # the result says what its interval is (None: no calibrated one)
        iv = rec.interval
        if not (isinstance(iv, dict) and iv.get("coverage") is not None):
            return None
        return {"lo": iv.get("lo_key", "lo80"), "hi": iv.get("hi_key", "hi80"),
                "label": iv.get("label", f"{int(round(100 * iv.get('level', 0.8)))}% interval"),
                "brief": iv.get("brief"),
                "caption": iv.get("caption") or f"held the true AUC for {iv['coverage']:.0%} of "
                                                 f"held-out cells ({iv.get('over', 'LOTO')})"}
    cov = (rec.validation or {}).get("coverage80")
    if str(rec.method).startswith("meta-model") and isinstance(cov, (int, float)) and math.isfinite(cov):
        return {"lo": "lo80", "hi": "hi80", "label": "80% interval",
                "caption": f"the quantile regressors' band; under leave-one-target-out it held the "
                           f"true AUC for {cov:.0%} of held-out cells"}
    return None


def extra_keys(ranking: list[dict]) -> list[str]:
    """Scalar ranking keys nobody here knows, in first-seen order (rendered generically)."""
    keys: dict[str, None] = {}
    for r in ranking:
        for k, v in r.items():
            if k in KNOWN or k in CONSUMED:
                continue
            if v is None or isinstance(v, (str, int, float, bool)):
                keys.setdefault(k, None)
    return list(keys)


def _table(rec: Any, wide: bool, extras: list[str], iv: dict | None, gain: str = "full",
           rows: list[dict] | None = None) -> Table:
    """The ranking table of ``rows`` (default: every row); ``gain``: 'full' (gain ± interval),
    'brief' (the gain alone) or 'off'."""
    ranking = rec.ranking if rows is None else rows
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    longest = max((len(str(r["source"])) for r in ranking), default=6)
    cols: list[tuple[str, Any]] = []
    for key, col in KNOWN.items():
        if col.where == "wide" and not wide:
            continue
        if not any(key in r for r in ranking):
            continue
        if key == "vs_static_pick":
            cols.append((col.header, _vs_static))
            t.add_column(col.header, justify="right")
            continue
        if key == "gain_vs_scratch":
            if getattr(rec, "gain", None) is None or gain == "off":
                continue
            from recommender.gain import gain_text

            cols.append((col.header, lambda r: gain_text(r, rec.gain, brief=gain == "brief")))
            t.add_column(col.header, justify="right", no_wrap=True)
            continue
        if key == "source":
            t.add_column(col.header, no_wrap=True, min_width=longest)
        elif key == "reasons":
            t.add_column(col.header, overflow="fold", max_width=56, min_width=24)
        else:
            t.add_column(col.header, justify=col.justify, no_wrap=True)
        cols.append((col.header, lambda r, k=key, d=col.digits: fmt_value(r.get(k), d)))
        if key == "predicted_auc" and iv is not None:
            t.add_column(iv["label"], no_wrap=True)
            cols.append((iv["label"], lambda r: _interval_text(r, iv)))
    if wide and any("weights_card" in r or "weights" in r for r in ranking):
        t.add_column("weights", overflow="fold", max_width=72, min_width=20)
        cols.append(("weights", _weights_text))
    for k in extras:
        t.add_column(k.replace("_", " "), justify="right")
        cols.append((k, lambda r, k=k: fmt_value(r.get(k))))
    for r in ranking:
        t.add_row(*(f(r) for _, f in cols))
    return t


def _vs_static(r: dict) -> str:
    if r.get("static_pick"):
        return "pick"
    v = r.get("vs_static_pick")
    return "—" if v is None else f"{v:+.4f}"


def _interval_text(r: dict, iv: dict) -> str:
    lo, hi = r.get(iv["lo"]), r.get(iv["hi"])
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    return f"{lo:.3f}–{hi:.3f}"


def card_input(card: dict) -> str:
    """'224 px, 3 channels' from a candidate card (recommender.candidates.Candidate.card())."""
    px, ch = card.get("input_size"), card.get("in_chans")
    parts = ([f"{px} px"] if px else []) + ([f"{ch} channels"] if ch else [])
    return ", ".join(parts) or "input size not recorded"


def _weights_text(r: dict) -> str:
    card = r.get("weights_card")
    if isinstance(card, dict):
        return f"{card.get('weights', '')} ({card.get('arch', '?')}, {card_input(card)})"
    return str(r.get("weights", "—"))


def _needed_width(console: Console, renderable: Any) -> int:
    return natural_width(renderable, console)


def _least_width(t: Table) -> int:
    """Narrowest the compact table can be: every column is no-wrap except the extras, whose
    headers may wrap at spaces (so 'gain over scratch' can stand on two lines)."""
    from rich.measure import Measurement

    return Measurement.get(out, out.options.update(width=10_000), t).minimum


def _print_wide(renderable: Any, title: str | None = None) -> None:
    """At the terminal's width when it fits, else at its natural width (≤ WIDE_MAX)."""
    print_table(renderable, title, width=max(out.width, min(_needed_width(out, renderable), WIDE_MAX)))


def target_panel(rec: Any) -> Panel:
    """The target card, wrapped to the terminal (long class lists abbreviated, never overflowing)."""
    c = rec.target_card
    counts = list(c.get("class_counts", {}).items())
    classes = ", ".join(f"{k} {v}" for k, v in counts[:6]) + (f", … {len(counts) - 6} more" if len(counts) > 6 else "")
    classes = classes or "unlabelled"
    skipped = ", ".join(f"{k}: {v}" for k, v in c.get("skipped_reasons", {}).items()) or "none"
    mods = ", ".join(f"{k} {v}" for k, v in c.get("modalities", {}).items()) or "—"
    formats = ", ".join(f"{k} {v}" for k, v in c.get("file_formats", {}).items()) or "—"
    text = (f"[b]{rec.target}[/b]  {c.get('n_images', '?')} images · {c.get('n_classes', '?')} classes "
            f"({classes})\nchannels {c.get('channels', '?')} · formats {formats} · DICOM modality {mods}\n"
            f"skipped {c.get('n_skipped', 0)} files ({skipped})")
    return Panel(text, title="target", expand=False, width=None)


def _tx_table(rec: Any) -> Table | None:
    tx = {r["source"]: r["transferability"] for r in rec.ranking if r.get("transferability")}
    if not tx:
        return None
    names = sorted({k for d in tx.values() for k in d})
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    t.add_column("source", no_wrap=True)
    for n in names:
        t.add_column(n, justify="right")
    for src, d in tx.items():
        t.add_row(src, *[f"{d[n]:.4g}" if n in d else "—" for n in names])
    return t


def _sim_table(rec: Any) -> Table | None:
    """Every registered similarity/distance between each source and the folder, by name."""
    sims = {r["source"]: r["similarities"] for r in rec.ranking if r.get("similarities")}
    if not sims:
        return None
    names = list(dict.fromkeys(k for d in sims.values() for k in d))
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    t.add_column("source", no_wrap=True)
    for n in names:
        t.add_column(n, justify="right")
    for r in rec.ranking:
        d = r.get("similarities") or {}
        t.add_row(r["source"], *[f"{d[n]:.4g}" if isinstance(d.get(n), float) and math.isfinite(d[n]) else "—"
                                 for n in names])
    return t


def _snippets(rec: Any) -> None:
    cards = [(r["rank"], r["weights_card"]) for r in rec.ranking if isinstance(r.get("weights_card"), dict)]
    if not cards:
        return
    out.print("[b]weights and how to load them[/b] (n_classes = your number of classes)")
    for rank, card in cards:
        params = f" · {card['n_params']:,} parameters" if card.get("n_params") else ""
        prose(f"{rank}. {card.get('name', card.get('spec', '?'))}: {card.get('weights', '')} · "
              f"{card.get('arch', '?')} · {card_input(card)}{params}", highlight=False)
        for line in card.get("snippet", []):
            out.print(f"    {line}", highlight=False, soft_wrap=True)


def _method_sentence(rec: Any) -> str:
    v = rec.validation or {}
    mean = v.get("mean", {})

    n = v.get("n_targets")

    def ci(key: str, d: int) -> str:
        from recommender.evaluation.ranking_metrics import MIN_CI_TARGETS, format_ci

        m = mean.get(key)
        if not isinstance(m, dict):
            return "—"
        lo, hi = (None, None) if isinstance(n, int) and n < MIN_CI_TARGETS else (m.get("lo"), m.get("hi"))
        return format_ci(m.get("mean"), lo, hi, f"{{:.{d}f}}")

    ceiling = (getattr(rec, "noise_ceiling", None) or {}).get("text")
    return (f"order: {rec.method}, what nested selection ships for KB {rec.kb} (nested "
            f"leave-one-group-out over {v.get('n_targets', '?')} targets: τw {ci('tau_w', 3)}, regret "
            f"{ci('regret', 4)} AUC, top-1 {ci('top1', 3)}; 95% bootstrap CIs over targets"
            + (f"; {ceiling}" if ceiling else "") + ").")


_KNOWN_TOP = {"target", "target_card", "labelled", "kb", "kb_choice", "method", "validation", "ranking",
              "notes", "timings_s", "interval", "noise_ceiling", "gain", "verdict", "grounds",
              "method_notes", "estimates_reliable"}
COMPACT_ROWS = 10  # the default table: the top 10 and scratch; --wide, --top K or json for the rest


def compact_rows(ranking: list[dict], n: int = COMPACT_ROWS) -> tuple[list[dict], int]:
    """The rows the default table shows (the top ``n``, then scratch and predicted negative transfer
    further down) and
    how many it leaves out. A ranking of at most ``n + 2`` rows is shown whole."""
    if len(ranking) <= n + 2:
        return ranking, 0
    # scratch and any predicted negative transfer are shown wherever they rank
    shown = ranking[:n] + [r for r in ranking[n:] if r.get("source") == "scratch" or r.get("negative_transfer")]
    return shown, len(ranking) - len(shown)


def _brief(text: str) -> str:
    """A caption's first clause (before its parenthesised rule or its first '; ')."""
    return text.split(" (rule:", 1)[0].split("; skipped", 1)[0]


def _other_fields(rec: Any) -> list[str]:
    """Top-level fields added to the Recommendation by others: one line each (tables: --wide/json)."""
    d = rec.to_dict() if hasattr(rec, "to_dict") else {}
    lines = []
    for k, v in d.items():
        if k in _KNOWN_TOP or v is None or v == {} or v == []:
            continue
        name = k.replace("_", " ")
        if isinstance(v, (str, int, float, bool)):
            lines.append(f"{name}: {fmt_value(v)}")
        elif isinstance(v, dict):
            flat = {a: b for a, b in v.items() if isinstance(b, (str, int, float, bool))}
            more = " (more in --format json)" if len(flat) < len(v) else ""
            lines.append(f"{name}: " + (", ".join(f"{a} {fmt_value(b)}" for a, b in flat.items()) or "—") + more)
        else:
            lines.append(f"{name}: see --format json")
    return lines


def render(rec: Any, wide: bool = False) -> None:
    """Print the recommendation. Default: one screen at 80 columns (target card, the top 10 and
    scratch, the verdict, what the order and the numbers are, the notes); ``--wide``: every row,
    reasons, weights, estimates, similarities, snippets and the long captions."""
    from rich.markup import escape

    out.print(target_panel(rec), soft_wrap=False, overflow="fold")  # wrap, never crop, the card
    iv = interval_info(rec)
    extras = extra_keys(rec.ranking)
    title = f"KB {rec.kb} · order: {str(rec.method).strip()}"
    left_out = 0
    if wide:
        _print_wide(_table(rec, True, extras, iv), title)
    else:
        rows, left_out = compact_rows(rec.ranking)
        shown = list(extras)
        t = _table(rec, False, shown, iv, rows=rows)
        while shown and _least_width(t) > out.width:  # extras that do not fit go to --wide
            shown.pop()
            t = _table(rec, False, shown, iv, rows=rows)
        mode = "full"
        for mode in ("full", "brief", "off"):  # then the gain's interval, then the gain itself
            t = _table(rec, False, shown, iv, gain=mode, rows=rows)
            if _least_width(t) <= out.width:
                break
        print_table(t, title)
        moved = [e.replace("_", " ") for e in extras[len(shown):]]
        if getattr(rec, "gain", None) is not None and mode != "full":
            moved.insert(0, "vs scratch" + (" interval" if mode == "brief" else ""))
        if moved:
            prose(f"more columns in --wide: {', '.join(moved)}", highlight=False, style="dim")
        if left_out:
            prose(f"{left_out} more sources in --wide", highlight=False, style="dim")
    if getattr(rec, "verdict", None):
        prose(f"[b]verdict:[/b] {escape(rec.verdict)}", highlight=False)
    for note in rec.notes:
        prose(f"note: {note}", highlight=False)
    prose(_method_sentence(rec), highlight=False)
    if wide:
        _wide_tail(rec, iv)
    else:
        prose(_auc_caption(iv, brief=True), highlight=False)
        if getattr(rec, "gain", None):
            prose((rec.gain.get("brief") or rec.gain["caption"]).rstrip(". ") + ".", highlight=False)
        prose(f"KB {rec.kb}: {_brief(rec.kb_choice).removeprefix('default: ').removeprefix(f'KB {rec.kb}: ')}.",
              highlight=False)
        for line in _other_fields(rec):
            prose(line, highlight=False)
        tx = " the estimates on your images," if any(r.get("transferability") for r in rec.ranking) else ""
        prose(f"--wide: every source, reasons, weights,{tx} similarities, how the method was chosen; "
              "--format json: everything", highlight=False, style="dim")
    ts = rec.timings_s or {}
    prose(f"took {wall_time():.1f} s wall (read {ts.get('read', 0):.1f} s, meta-features "
          f"{ts.get('meta_features', 0):.1f} s; start-up and imports are the rest)", highlight=False)


def _auc_caption(iv: dict | None, brief: bool) -> str:
    """What the AUC column and its interval are: the short form (default view) or the full one."""
    head = "AUC: predicted test ROC-AUC after fine-tuning on your images"
    if iv is None:
        return head + ("; no calibrated interval for this method." if brief else
                       "; this method has no calibrated interval (its spread is in --format json).")
    text = (iv.get("brief") if brief else None) or iv["caption"].rstrip(". ")
    return f"{head}; {iv['label']}: {text}."


def _wide_tail(rec: Any, iv: dict | None) -> None:
    """--wide: the estimates and similarity tables, snippets, the full captions and method notes."""
    tx = _tx_table(rec)
    if tx is not None:
        flag = (" — UNRELIABLE: your labels are too thin (see the note); not used for the order"
                if getattr(rec, "estimates_reliable", None) is False else "")
        _print_wide(tx, f"transferability estimates on your images (higher = should transfer better){flag}")
    sim = _sim_table(rec)
    if sim is not None:
        _print_wide(sim, "similarity of each source to your images (sim_*: higher = closer; "
                         "dist_*: lower = closer)")
    _snippets(rec)
    prose(_auc_caption(iv, brief=False) + " evidence: what set each source's place.", highlight=False)
    if getattr(rec, "gain", None):
        prose(rec.gain["caption"].rstrip(". ") + ".", highlight=False)
    prose(f"KB {rec.kb}: {rec.kb_choice}.", highlight=False)
    for line in _other_fields(rec):
        prose(line, highlight=False)
    for note in getattr(rec, "method_notes", None) or []:
        prose(f"note: {note}", highlight=False)
