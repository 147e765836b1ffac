"""``evaluate-meta --out DIR``: JSON, CSV, PNG figures and one self-contained HTML report.

Figures are plain matplotlib (Agg backend, no display needed); the HTML inlines them
as base64 so the report is one file a reviewer can open or attach anywhere.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.knowledge_base import KnowledgeBase  # noqa: E402
from recommender.evaluation.correlation import gain_table  # noqa: E402
from recommender.model import MetaDataset  # noqa: E402

BAR_METHODS = ("meta", "static", "always_imagenet", "largest_source")


def matrix_heatmap(matrix: pd.DataFrame, path: Path, title: str) -> Path:
    """Sources × targets AUC heatmap with values printed (grey = not measured)."""
    m = matrix.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * m.shape[1], 1.0 + 0.42 * m.shape[0]))
    im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", aspect="auto")
    ax.set_xticks(range(m.shape[1]), matrix.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(m.shape[0]), matrix.index, fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.3f}", ha="center", va="center", fontsize=6, color="w")
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="AUC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def feature_scatter(kb: KnowledgeBase, md: MetaDataset, corr: pd.DataFrame, path: Path) -> Path | None:
    """Each study pair feature vs the outcome (gain when the KB has it, else AUC), r in the title."""
    feats = [f for f in md.pair_features if md.rows[f"pair_{f}"].notna().sum() >= 3]
    if not feats:
        return None
    gain = gain_table(kb)
    outcome = "gain" if gain is not None else "auc"
    y_all = (gain.reindex(pd.MultiIndex.from_arrays([md.rows["source"], md.rows["target"]])).to_numpy()
             if gain is not None else md.rows["auc"].to_numpy())
    ncols = min(4, len(feats))
    nrows = -(-len(feats) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(feats):]:
        ax.set_visible(False)
    for ax, f in zip(axes.flat, feats, strict=False):
        x = md.rows[f"pair_{f}"].to_numpy(dtype=float)
        for t in md.targets:
            sel = (md.rows["target"] == t).to_numpy()
            ax.scatter(x[sel], y_all[sel], s=16, label=t)
        c = corr[(corr["feature"] == f) & (corr["outcome"] == outcome)]
        r = c.iloc[0] if len(c) else None
        sub = (f"r = {r['pearson_r']:+.2f} (p = {r['pearson_p']:.2g}, n = {int(r['n'])})"
               if r is not None and np.isfinite(r["pearson_r"]) else "r undefined")
        ax.set_title(f"{f}\n{sub}", fontsize=8)
        ax.set_xlabel(f)
        ax.set_ylabel("AUC gain (%)" if outcome == "gain" else "AUC")
    if len(md.targets) <= 12:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="lower right", ncol=2, title="target")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tau_bars(per_target: pd.DataFrame, path: Path, extra: tuple[str, ...] = ()) -> Path:
    """Per-target τw of the meta-model and the main baselines as grouped bars."""
    methods = [m for m in (*BAR_METHODS, *extra) if m in set(per_target["method"])]
    piv = per_target[per_target["method"].isin(methods)].pivot_table(
        index="target", columns="method", values="tau_w", aggfunc="first").reindex(columns=methods)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(piv)), 3.6))
    w = 0.8 / max(len(methods), 1)
    x = np.arange(len(piv))
    for k, m in enumerate(methods):
        ax.bar(x + k * w, piv[m].fillna(0.0).to_numpy(), width=w, label=m)
    ax.set_xticks(x + w * (len(methods) - 1) / 2, piv.index, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("weighted Kendall τ (held-out target)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"/>'


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: "—" if math.isnan(v) else f"{v:.4f}",
                      border=0, classes="t", na_rep="—")


def write_html(path: Path, title: str, sentences: list[str], tables: dict[str, pd.DataFrame],
               images: list[Path]) -> Path:
    """One self-contained HTML file: sentences, tables, then the inlined figures."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table.t{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}"
             "table.t td,table.t th{border-bottom:1px solid #ddd;padding:2px 6px;text-align:right}"
             "img{max-width:100%;margin:1em 0}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(s)}</p>" for s in sentences]
    for name, df in tables.items():
        parts.append(f"<h2>{html.escape(name)}</h2>{_table(df)}")
    parts.append("<h2>Figures</h2>")
    parts += [_img(p) for p in images if p is not None]
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_outputs(out: Path, kb: KnowledgeBase, md: MetaDataset, payload: dict,
                  tables: dict[str, pd.DataFrame], per_target: pd.DataFrame | None,
                  corr: pd.DataFrame, sentences: list[str]) -> list[Path]:
    """Write report.json, one CSV per table, the PNG figures and report.html under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json"]
    (out / "report.json").write_text(json.dumps(payload, indent=2, default=_json) + "\n")
    for name, df in tables.items():
        p = out / f"{name}.csv"
        df.to_csv(p, index=False)
        written.append(p)
    images = [matrix_heatmap(md.matrix, out / "matrix.png", f"{kb.name}: {kb.metric} (source → target)")]
    sc = feature_scatter(kb, md, corr, out / "similarity_vs_transfer.png")
    if sc is not None:
        images.append(sc)
    if per_target is not None and len(per_target):
        images.append(tau_bars(per_target, out / "tau_w_per_target.png"))
    written += images
    written.append(write_html(out / "report.html", f"catscans evaluate-meta: {kb.name}", sentences,
                              tables, images))
    return written


def _json(o: object) -> object:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, pd.DataFrame):
        return o.to_dict(orient="records")
    return str(o)
