"""``evaluate-meta --out DIR``: JSON, CSV, PNG figures and one self-contained HTML report.

Figures are plain matplotlib (Agg backend, no display needed), each with a caption; the
HTML (``report_html``) inlines them as base64 so the report is one file a reviewer can open
or attach anywhere.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.knowledge_base import KnowledgeBase  # noqa: E402
from imagesets import atomic_path, atomic_write_text  # noqa: E402
from recommender.evaluation.correlation import gain_table  # noqa: E402
from recommender.evaluation.report_html import display_frame, format_p, write_html  # noqa: E402
from recommender.model import MetaDataset  # noqa: E402

BAR_METHODS = ("meta", "static", "always_imagenet", "largest_source")


def _text_colour(rgba: tuple[float, ...]) -> str:
    """Black on light cells, white on dark ones (WCAG relative luminance of the cell colour)."""
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(float(x)) for x in rgba[:3])
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.179 else "white"


def matrix_heatmap(matrix: pd.DataFrame, path: Path, title: str, label: str = "AUC") -> Path:
    """Write :func:`heatmap_figure` as a PNG."""
    fig = heatmap_figure(matrix, title, label)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heatmap_figure(matrix: pd.DataFrame, title: str, label: str = "AUC"):  # noqa: ANN201 (Figure)
    """Sources × targets heatmap: every value printed in a colour readable on its cell, a labelled
    colour scale, unmeasured cells grey with a dash."""
    m = matrix.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 0.8 * m.shape[1], 1.4 + 0.42 * m.shape[0]))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, aspect="auto")
    ax.set_xticks(range(m.shape[1]), matrix.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(m.shape[0]), matrix.index, fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.3f}", ha="center", va="center", fontsize=6.5,
                        color=_text_colour(cmap(im.norm(m[i, j]))))
            else:
                ax.text(j, i, "—", ha="center", va="center", fontsize=7, color="#555555")
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cbar.set_label(label)
    fig.tight_layout()
    return fig


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
        sub = (f"r = {r['pearson_r']:+.2f} ({format_p(r['pearson_p'], label=True)}, n = {int(r['n'])})"
               if r is not None and np.isfinite(r["pearson_r"]) else "r undefined")
        ax.set_title(f"{f}\n{sub}", fontsize=8)
        ax.set_xlabel(f)
        ax.set_ylabel("AUC gain (%)" if outcome == "gain" else "AUC")
    if len(md.targets) <= 12:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.tight_layout()
        fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
                   title="target")  # beside the panels, never over a point
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def tau_bars(per_target: pd.DataFrame, path: Path, extra: tuple[str, ...] = (),
             shipped: str | None = None) -> Path:
    """Per-target τw of the meta-model and the main baselines as grouped bars (the shipped
    method outlined; an undefined τw draws no bar rather than a zero)."""
    methods = [m for m in (*BAR_METHODS, *extra) if m in set(per_target["method"])]
    if shipped and shipped in set(per_target["method"]) and shipped not in methods:
        methods.append(shipped)
    piv = per_target[per_target["method"].isin(methods)].pivot_table(
        index="target", columns="method", values="tau_w", aggfunc="first").reindex(columns=methods)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(piv)), 3.8))
    w = 0.8 / max(len(methods), 1)
    x = np.arange(len(piv))
    for k, m in enumerate(methods):
        is_shipped = m == shipped
        ax.bar(x + k * w, piv[m].to_numpy(dtype=float), width=w,
               label=f"{m} (shipped)" if is_shipped and "shipped" not in m else m,
               edgecolor="black" if is_shipped else "none", linewidth=1.2 if is_shipped else 0)
    ax.set_xticks(x + w * (len(methods) - 1) / 2, piv.index, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("τw on the held-out target")
    ax.set_xlabel("held-out target")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:  # noqa: ANN001 - a matplotlib Figure
    """Lay out, write (110 dpi) and close a figure; the path it was written to."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def budget_figure(verify: pd.DataFrame, path: Path) -> Path:
    """Budget vs regret: each non-probing method at x = 0 (its 95% CI as an error bar and a dashed
    line across), verify's budgets as a line with error bars, and verify without its prior as a
    second line (``verify``: the verify_replay table)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    v = verify[verify["kind"] == "verify"].sort_values("compute")
    nop = verify[verify["kind"] == "verify, no prior"].sort_values("compute")
    rest = verify[~verify["kind"].isin(["verify", "verify, no prior"])]
    for i, r in enumerate(rest.itertuples(index=False)):
        c = f"C{i + 1}"
        label = f"{r.row} (best estimator, post hoc)" if r.kind.startswith("best") else r.row
        x0 = -0.015 * (len(rest) - 1) + 0.03 * i  # side by side around x = 0, bars apart
        ax.errorbar([x0], [r.mean_regret], yerr=[[r.mean_regret - r.lo], [r.hi - r.mean_regret]],
                    fmt="s", color=c, capsize=3, label=label)
        ax.axhline(r.mean_regret, color=c, ls="--", lw=0.8, alpha=0.6)
    if len(v):
        y = v["mean_regret"].to_numpy(dtype=float)
        ax.errorbar(v["compute"].to_numpy(dtype=float), y,
                    yerr=[y - v["lo"].to_numpy(dtype=float), v["hi"].to_numpy(dtype=float) - y],
                    fmt="o-", color="C0", capsize=3, lw=1.6, label="verify (replayed)")
        for r in v.itertuples(index=False):
            right = r.compute > 0.8
            ax.annotate(f"{r.row} budget", (r.compute, r.mean_regret), textcoords="offset points",
                        xytext=(-5, 8) if right else (5, 5), ha="right" if right else "left", fontsize=7)
    if len(nop):  # the same halving on the measured means alone: a line of its own, not at x = 0
        y = nop["mean_regret"].to_numpy(dtype=float)
        ax.errorbar(nop["compute"].to_numpy(dtype=float) + 0.01, y,
                    yerr=[y - nop["lo"].to_numpy(dtype=float), nop["hi"].to_numpy(dtype=float) - y],
                    fmt="^:", color="0.45", capsize=3, lw=1.2, label="verify without the prior (replayed)")
    ax.set_xlim(-0.03 * len(rest) - 0.03, 1.08)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("compute (fraction of fine-tuning the whole shortlist on every verify seed)")
    ax.set_ylabel("mean regret (AUC) against truth seeds")
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_outputs(out: Path, kb: KnowledgeBase, md: MetaDataset, payload: dict,
                  tables: dict[str, pd.DataFrame], per_target: pd.DataFrame | None,
                  corr: pd.DataFrame, sentences: list[str],
                  display: dict[str, tuple[str, pd.DataFrame]] | None = None) -> list[Path]:
    """Write report.json, one CSV per table, the PNG figures and report.html under ``out``.

    ``display``: title -> (caption, table) as the terminal prints them (its metric names); the
    report shows each in full. Without it the raw ``tables`` are shown, renamed the same way.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json"]
    atomic_write_text(out / "report.json", json.dumps(payload, indent=2, default=_json) + "\n")
    for name, df in tables.items():
        p = out / f"{name}.csv"
        with atomic_path(p) as tmp:
            df.to_csv(tmp, index=False)
        written.append(p)
    v = payload.get("validated") or {}
    shipped = v.get("method") or v.get("row")  # the summary row of what `recommend` ships
    n_cells = int(np.isfinite(md.matrix.to_numpy(dtype=float)).sum())
    figures = [(matrix_heatmap(md.matrix, out / "matrix.png", f"{kb.name}: {kb.metric} (source → target)",
                               label=f"test {kb.metric}"),
                f"The measured {kb.metric} of fine-tuning each source (rows) on each target (columns) "
                f"of {kb.name}: {n_cells} cells, each value printed in its cell, colour scale on the right; "
                "grey with a dash = not measured.")]
    sc = feature_scatter(kb, md, corr, out / "similarity_vs_transfer.png")
    if sc is not None:
        outcome = "AUC gain over the KB's baseline source" if gain_table(kb) is not None else "AUC"
        figures.append((sc, f"Each pair feature (x) against the transfer outcome ({outcome}, y), one point "
                            "per (source, target) pair, coloured by target; Pearson r, its p and n over pooled "
                            "pairs in each panel's title (uncorrected for multiple tests)."))
    if per_target is not None and len(per_target):
        figures.append((tau_bars(per_target, out / "tau_w_per_target.png", shipped=shipped),
                        "τw (weighted Kendall τ between a method's ranking and the measured AUCs) on each "
                        "held-out target (held out with its group, as in the tables), for the meta-model and the main "
                        "baselines; higher is better, 0 = no better than chance; the shipped method is "
                        "outlined; no bar = τw undefined on that target."))
    ver = tables.get("verify_replay")
    if ver is not None and len(ver):
        figures.append((budget_figure(ver, out / "budget_vs_regret.png"),
                        "Budget vs regret: verify replayed from the KB's per-seed records at each budget "
                        "(x = fine-tunes run as a fraction of fine-tuning the whole shortlist on every "
                        "verify seed), beside the methods that do not fine-tune (x = 0; dashed = their "
                        "mean); y = mean regret (AUC) against the mean over the disjoint truth seeds, "
                        "error bars = 95% bootstrap CI over groups; the best estimator is picked on "
                        "these figures (post hoc)."))
    written += [p for p, _ in figures]
    if display:
        shown = [(title, cap, df) for title, (cap, df) in display.items()]
    else:
        shown = [(name.replace("_", " "), "", display_frame(df)) for name, df in tables.items()]
    kbn = kb.name
    verdict = next((s for s in sentences if s.startswith(f"On {kbn}")), sentences[0] if sentences else "")
    notes = [s for s in sentences if s != verdict]
    now = payload.get("shipped_now")
    now_text = ("; ".join(f"{html.escape(str(k))}: <code>{html.escape(str(m))}</code>" for k, m in now.items())
                if isinstance(now, dict) else html.escape(str(now or shipped)))
    shipped_text = (f"<b>Shipped: <code>{html.escape(str(shipped))}</code></b> — the row of what "
                    f"<code>catscans recommend --kb {html.escape(kbn)}</code> ranks by (now: {now_text}). "
                    f"Held out over {v.get('n_targets', '?')} targets: {html.escape(_validated_line(v))}. "
                    "Its rows are highlighted in the tables below.") if shipped else ""
    written.append(write_html(out / "report.html", f"catscans evaluate-meta: {kbn}", verdict, shipped,
                              shipped_text, shown, figures, notes, [p.name for p in written]))
    return written


def _validated_line(v: dict) -> str:
    from recommender.evaluation.ranking_metrics import MIN_CI_TARGETS, format_ci

    mean, n = v.get("mean") or {}, v.get("n_targets")
    parts = []
    for key, label, fmt in (("tau_w", "τw", "{:.3f}"), ("regret", "regret (AUC)", "{:.4f}"),
                            ("top1", "top-1", "{:.3f}")):
        m = mean.get(key)
        if isinstance(m, dict):
            lo, hi = (None, None) if isinstance(n, int) and n < MIN_CI_TARGETS else (m.get("lo"), m.get("hi"))
            parts.append(f"{label} {format_ci(m.get('mean'), lo, hi, fmt)}")
    return "; ".join(parts) + " (95% bootstrap CI over targets)" if parts else "no figures recorded"


def _json(o: object) -> object:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, pd.DataFrame):
        return o.to_dict(orient="records")
    return str(o)
