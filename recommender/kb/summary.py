"""What ``catscans kb list`` and ``kb show`` print: a KB's sizes, its cells as a table, a heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.knowledge_base import KnowledgeBase, KnowledgeBaseError, kb_root, list_kbs, load_kb
from recommender.kb._import_common import KBImportError

__all__ = ["kb_summary", "list_summaries", "plot_matrix", "show_table"]


def kb_summary(kb: KnowledgeBase) -> dict:
    """One row of ``kb list``: sizes, metric, architecture and where the numbers come from."""
    m = kb.matrix()
    prov = kb.manifest.get("provenance", "")
    if isinstance(prov, dict) and not (prov.get("study") or prov.get("repository")) and prov.get("commit"):
        proto = kb.manifest.get("protocol")  # measured by build-matrix here: protocol and code commit
        name = proto.get("name", "?") if isinstance(proto, dict) else str(proto or "?")
        prov = f"build-matrix --protocol {name}, catscans@{str(prov['commit'])[:7]}"
    elif isinstance(prov, dict):
        repo = f" {prov['repository']}@{str(prov.get('commit', ''))[:7]}" if prov.get("repository") else ""
        prov = f"{prov.get('study', '')}{repo}".strip()
    return {
        "name": kb.name,
        "n_sources": len(kb.sources),
        "n_targets": len(kb.targets),
        "n_cells": int(np.isfinite(m.to_numpy(dtype=float)).sum()),
        "n_records": int(len(kb.records)),
        "metric": kb.metric,
        "architecture": str(kb.manifest.get("architecture", "")),
        "self_pairs": bool(kb.manifest.get("self_pairs", False)),
        "provenance": str(prov),
    }


def list_summaries(root: Path | None = None) -> list[dict]:
    """Summaries of every KB under ``root`` (default ``artifacts/kb``); unreadable ones say why."""
    rows = []
    root = root or kb_root()
    for name in list_kbs(root):
        try:
            rows.append(kb_summary(load_kb(root / name)))
        except (KnowledgeBaseError, ValueError, KeyError) as exc:
            rows.append({"name": name, "provenance": f"unreadable: {exc}"})
    return rows


def show_table(kb: KnowledgeBase, metric: str | None = None) -> pd.DataFrame:
    """Long table behind ``kb show``: one row per cell with mean, sd and n records.

    ``sd`` is over folds/seeds of the same metric; where a cell is a single aggregate
    and the KB has per-run values (``manifest['run_metric']``), ``run_sd``/``run_n`` give
    their spread instead (labelled, since runs may be a hyper-parameter grid, not seeds).
    """
    mean = kb.matrix(metric=metric)
    sd = kb.spread(metric=metric)
    n = kb.counts(metric=metric)
    df = pd.DataFrame({
        "source": np.repeat(mean.index.to_numpy(), mean.shape[1]),
        "target": np.tile(mean.columns.to_numpy(), mean.shape[0]),
        "mean": mean.to_numpy(dtype=float).ravel(),
        "sd": sd.to_numpy(dtype=float).ravel(),
        "n": n.to_numpy().ravel(),
    })
    run_metric = kb.manifest.get("run_metric")
    if run_metric and metric in (None, kb.metric):
        df["run_sd"] = kb.spread(metric=run_metric).to_numpy(dtype=float).ravel()
        df["run_n"] = kb.counts(metric=run_metric).to_numpy().ravel()
    return df


def plot_matrix(kb: KnowledgeBase, path: str | Path, metric: str | None = None) -> Path:
    """Heatmap of the KB matrix (sources x targets), values annotated; NaN cells left blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = kb.matrix(metric=metric)
    vals = m.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * m.shape[1], 1.2 + 0.45 * m.shape[0]))
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="viridis", aspect="auto")
    ax.set_xticks(range(m.shape[1]), m.columns, rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), m.index)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    finite = vals[np.isfinite(vals)]
    mid = float(np.nanmean(finite)) if finite.size else 0.0
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if np.isfinite(vals[i, j]):
                ax.text(j, i, f"{vals[i, j]:.3f}", ha="center", va="center", fontsize=7,
                        color="black" if vals[i, j] > mid else "white")
    fig.colorbar(im, ax=ax, label=metric or kb.metric)
    ax.set_title(f"{kb.name}: {metric or kb.metric} ({int(np.isfinite(vals).sum())} cells)")
    fig.tight_layout()
    out = Path(path)
    try:
        fig.savefig(out, dpi=120)
    except OSError as exc:
        raise KBImportError(f"cannot write {out}: {exc}") from exc
    finally:
        plt.close(fig)
    return out
