"""The published knowledge bases: import them from the released files, summarise, plot.

Each importer transcribes one study's files (see ``../shared/data/kb/README.md``) into the
project's KB format (``experiments.knowledge_base``), so the recommender never reads the
studies' own layouts. Keeping the importer as code, not only the output, means the
transcription can be redone and checked: ``catscans kb import NAME DIR``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.knowledge_base import (
    KnowledgeBase,
    KnowledgeBaseError,
    kb_root,
    list_kbs,
    load_kb,
    save_kb,
)
from recommender._kb_import_common import KBImportError, read_study_csv

__all__ = [
    "IMPORTERS", "KBImportError", "import_kb", "kb_summary", "list_summaries", "plot_matrix",
    "read_study_csv", "show_table",
]


def _juodelyte(src: str | Path) -> KnowledgeBase:
    from recommender._kb_import_juodelyte import import_juodelyte2024

    return import_juodelyte2024(src)


def _cats(src: str | Path) -> KnowledgeBase:
    from recommender._kb_import_cats import import_cats_scans2021

    return import_cats_scans2021(src)


IMPORTERS: dict[str, Callable[[str | Path], KnowledgeBase]] = {
    "cats-scans2021": _cats,
    "juodelyte2024": _juodelyte,
}


def import_kb(study: str, src: str | Path, out: str | Path | None = None) -> KnowledgeBase:
    """Import a published study folder and write it as ``out`` (default ``artifacts/kb/<study>``)."""
    if study not in IMPORTERS:
        raise KBImportError(f"unknown study '{study}' (known: {', '.join(IMPORTERS)})")
    src = Path(src)
    if not src.is_dir():
        raise KBImportError(f"no such folder {src}")
    kb = IMPORTERS[study](src)
    dest = Path(out) if out is not None else kb_root() / kb.name
    _keep_computed(kb, dest)
    save_kb(kb, dest)
    return kb


def _keep_computed(kb: KnowledgeBase, dest: Path) -> None:
    """Re-importing must not drop what was computed onto the KB later (meta-features, pair
    features other than the study's own), since those come from other commands."""
    if not (dest / "manifest.json").exists():
        return
    try:
        old = load_kb(dest)
    except (KnowledgeBaseError, ValueError, KeyError):
        return
    if len(old.meta_features) and not len(kb.meta_features):
        kb.meta_features = old.meta_features
    study_features = set(kb.pair_features["feature"])
    extra = old.pair_features[~old.pair_features["feature"].isin(study_features)]
    if len(extra):
        kb.pair_features = pd.concat([kb.pair_features, extra], ignore_index=True)


def kb_summary(kb: KnowledgeBase) -> dict:
    """One row of ``kb list``: sizes, metric, architecture and where the numbers come from."""
    m = kb.matrix()
    prov = kb.manifest.get("provenance", "")
    if isinstance(prov, dict):
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


def score_transferability(name: str, data_dir: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """LogME, LEEP, N-LEEP, NCE, H-score and k-NN for every (checkpoint, target) of a KB.

    When the KB was measured by ``build-matrix`` its manifest names the protocol; the
    estimators then see exactly the training rows each target was fine-tuned on (the same
    seeded split), never its validation or test rows.
    """
    from experiments.data import fixed_split
    from recommender.kb_features import score_kb

    kb = load_kb(name)
    proto = kb.manifest.get("protocol") or {}
    hook = None
    if isinstance(proto, dict) and "evaluation" in proto and "seed" in proto:
        frac, seed = tuple(proto["evaluation"]["split"]), int(proto["seed"])

        def hook(ds):  # noqa: ANN001, ANN202
            return np.flatnonzero(fixed_split(ds, frac, seed) == "train")

    return score_kb(kb.path, data_dir=data_dir, progress=progress, train_split=hook)
