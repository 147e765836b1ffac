"""The ``evaluate-meta --out`` HTML report: what a reviewer reads, in one self-contained file.

The verdict comes first (right under the title), then the shipped method and its LOTO
figures, then every table in full with the terminal's metric names (τw, regret (AUC), ...),
the shipped method's rows highlighted, then the figures, each with a caption, inlined as
base64 PNGs. No external CSS, script or image: the file can be mailed or attached as is.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

# Raw result columns -> the names the terminal prints (used when no display table is given).
LABELS: dict[str, str] = {
    "method": "method", "target": "target", "n_targets": "n targets", "n_sources": "n sources",
    "tau_w": "τw", "kendall": "Kendall τ", "spearman": "Spearman ρ", "top1": "top-1",
    "top1_count": "top-1 count", "top3": "top-3 hit", "regret": "regret (AUC)", "ndcg3": "NDCG@3",
    "feature": "feature", "kind": "kind", "outcome": "vs", "n": "n pairs", "pearson_r": "Pearson r",
    "pearson_p": "p (Pearson)", "spearman_rho": "Spearman ρ", "spearman_p": "p (Spearman)",
    "kendall_tau": "Kendall τ", "kendall_p": "p (Kendall)", "features": "features",
    "score": "inner score", "n_unscored": "unscored candidates",
}

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1180px;
     padding:0 1em;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.3em}
p.verdict{font-size:1.15em;font-weight:600;background:#eef4ff;border-left:5px solid #2a5db0;
          padding:.7em 1em;margin-top:0}
.shipped-box{background:#f4fbf2;border-left:5px solid #2e7d32;padding:.5em 1em}
.scroll{overflow-x:auto;margin-bottom:1.5em}
table.t{border-collapse:collapse;font-size:13px}
table.t th,table.t td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
table.t th{background:#f3f3f3;position:sticky;top:0}
table.t td:first-child,table.t th:first-child{text-align:left}
table.t tr.shipped td{background:#fff4c2;font-weight:700}
p.caption,figcaption{color:#444;font-size:.92em}
figure{margin:1.5em 0;border-top:1px solid #eee;padding-top:.8em}
figure img{max-width:100%;height:auto;display:block}
code{background:#f3f3f3;padding:0 .25em}
"""


def format_p(p: object, digits: int = 3, label: bool = False) -> str:
    """A p-value as catscans prints it: '< 0.001' below 0.001 (never '0.000'), else rounded.

    ``label`` gives the sentence form 'p < 0.001' / 'p = 0.012'. The terminal uses this too.
    """
    try:
        v = float(p)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(v):
        return "—"
    if v < 0.001:
        return "p < 0.001" if label else "< 0.001"
    return f"p = {v:.{digits}f}" if label else f"{v:.{digits}f}"


def _fmt(v: object, col: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}" if "regret" in col else f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A raw result table with the terminal's names: x, x_lo, x_hi become 'x [95% CI]' strings."""
    out: dict[str, list[str]] = {}
    cols = list(df.columns)
    skip = {c for c in cols if c.endswith(("_lo", "_hi", "_n")) and c.rsplit("_", 1)[0] in cols}
    for c in cols:
        if c in skip:
            continue
        name = LABELS.get(c, c.replace("_", " "))
        if f"{c}_lo" in cols and f"{c}_hi" in cols:
            out[f"{name} [95% CI]"] = [
                "—" if pd.isna(m) else f"{_fmt(m, c)} [{_fmt(lo, c)}, {_fmt(hi, c)}]"
                for m, lo, hi in zip(df[c], df[f"{c}_lo"], df[f"{c}_hi"], strict=True)]
        elif c.endswith("_p") or c == "p":
            out[name] = [format_p(v) for v in df[c]]
        else:
            out[name] = [_fmt(v, c) for v in df[c]]
    return pd.DataFrame(out)


def header(name: object) -> str:
    """A column name as the terminal prints it (raw result names translated: tau_w -> τw)."""
    c = str(name)
    if c in LABELS:
        return LABELS[c]
    for raw, shown in (("tau_w", "τw"), ("ndcg3", "NDCG@3"), ("top1", "top-1"), ("top3", "top-3")):
        c = c.replace(raw, shown)
    return c.replace("_", " ")


def table_html(df: pd.DataFrame, shipped: str | None = None) -> str:
    """A complete table (every row and column), the shipped method's rows highlighted."""
    head = "".join(f"<th scope='col'>{html.escape(header(c))}</th>" for c in df.columns)
    method_col = next((c for c in df.columns if str(c).strip() == "method"), None)
    rows = []
    for _, r in df.iterrows():
        cls = " class='shipped'" if shipped and method_col is not None and str(r[method_col]) == shipped else ""
        cells = "".join(f"<td>{html.escape(_fmt(v, str(c)))}</td>" for c, v in r.items())
        rows.append(f"<tr{cls}>{cells}</tr>")
    return (f"<div class='scroll'><table class='t'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _img(path: Path, n: int, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure id='figure-{n}'><img alt='{html.escape(caption)}' "
            f"src='data:image/png;base64,{data}'/><figcaption><b>Figure {n}.</b> "
            f"{html.escape(caption)}</figcaption></figure>")


def write_html(path: Path, title: str, verdict: str, shipped: str | None, shipped_text: str,
               tables: list[tuple[str, str, pd.DataFrame]], figures: list[tuple[Path, str]],
               notes: list[str], files: list[str]) -> Path:
    """Write the report: title, verdict, shipped method, tables (title, caption, frame), figures, notes."""
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='verdict'>{html.escape(verdict)}</p>"]
    if shipped:
        parts.append(f"<div class='shipped-box'><p>{shipped_text}</p></div>")
    for i, (name, caption, df) in enumerate(tables, 1):
        parts.append(f"<h2 id='table-{i}'>{html.escape(name)}</h2>")
        if caption:
            parts.append(f"<p class='caption'>{html.escape(caption)}</p>")
        parts.append(table_html(df, shipped))
    if figures:
        parts.append("<h2 id='figures'>Figures</h2>")
        parts += [_img(p, n, cap) for n, (p, cap) in enumerate(figures, 1)]
    if notes:
        parts.append("<h2 id='notes'>Notes</h2><ul>")
        parts += [f"<li>{html.escape(s)}</li>" for s in notes]
        parts.append("</ul>")
    if files:
        parts.append("<p class='caption'>Also in this folder: "
                     + ", ".join(f"<code>{html.escape(f)}</code>" for f in files) + ".</p>")
    parts.append("</body></html>")
    from imagesets import atomic_write_text

    atomic_write_text(path, "\n".join(parts) + "\n")
    return path
