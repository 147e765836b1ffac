"""`catscans kb list | show NAME | import STUDY DIR | score NAME | attach`: the knowledge bases
the recommender learns from.

Thin layer: parsing and rendering only; the work is in ``recommender.kb``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from experiments.knowledge_base import KnowledgeBaseError, load_kb
from recommender.cli._common import Format, FormatOpt, df_table, emit, err, handle_errors, out
from recommender.kb import (
    IMPORTERS,
    import_kb,
    kb_summary,
    list_summaries,
    plot_matrix,
    show_table,
)

kb_app = typer.Typer(help="Knowledge bases: list, show, import, score, attach.", no_args_is_help=True)


@kb_app.command("list")
@handle_errors
def kb_list(fmt=FormatOpt) -> None:  # noqa: ANN001
    """List the knowledge bases under artifacts/kb (sizes, metric, architecture, provenance)."""
    rows = list_summaries()
    df = pd.DataFrame(rows)

    def render() -> None:
        if df.empty:
            out.print("no knowledge bases (import one: catscans kb import STUDY DIR)")
            return
        t = Table(title="knowledge bases", caption="n_cells = (source, target) pairs with a measured value")
        for c in ("name", "n_sources", "n_targets", "n_cells", "metric", "architecture", "provenance"):
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*(str(r.get(c, "")) for c in ("name", "n_sources", "n_targets", "n_cells",
                                                     "metric", "architecture", "provenance")))
        _print_full_width(t)

    emit(fmt, rows, tables={"kbs": df}, render_table=render)


def _cell_text(mean: float, sd: float, n: int, digits: int) -> str:
    if not np.isfinite(mean):
        return "—"
    s = f"{mean:.{digits}f}"
    if np.isfinite(sd):
        s += f" ± {sd:.{digits}f} (n={n})"
    return s


def _short_names(names: list[str]) -> tuple[list[str], str]:
    """Drop a suffix every name shares (e.g. 'mnist') so a wide matrix fits a terminal."""
    suffix = os.path.commonprefix([n[::-1] for n in names])[::-1] if len(names) > 3 else ""
    if len(suffix) < 3 or any(len(n) == len(suffix) for n in names):
        return names, ""
    return [n[: -len(suffix)] for n in names], suffix


@kb_app.command("show")
@handle_errors
def kb_show(
    name: str = typer.Argument(..., help="KB name under artifacts/kb, or a KB folder."),
    metric: str = typer.Option(None, "--metric", help="Record metric to show (default: the KB's metric)."),
    plot: Path = typer.Option(None, "--plot", help="Also write a heatmap PNG of the matrix here."),
    fmt=FormatOpt,  # noqa: ANN001
) -> None:
    """Show a KB's sources x targets matrix: mean ± sd over folds/seeds and n per cell."""
    kb = load_kb(name)
    metric = metric or kb.metric
    if metric not in set(kb.records["metric"]):
        known = ", ".join(sorted(kb.records["metric"].unique()))
        raise KnowledgeBaseError(f"metric '{metric}' not in {kb.name} (has: {known})")
    cells = show_table(kb, metric)
    summary = kb_summary(kb)
    if plot is not None:
        p = plot_matrix(kb, plot, metric)
        err.print(f"heatmap written to {p}")

    def render() -> None:
        t = Table(title=f"{kb.name}: {metric} (rows = sources, columns = targets)",
                  caption=_caption(kb, cells), box=box.SIMPLE_HEAD)
        heads, suffix = _short_names([str(c) for c in kb.targets])
        if suffix:
            t.title += f"; target names without '{suffix}'"
        t.add_column("source \\ target")
        for h in heads:
            t.add_column(h, overflow="fold")
        digits = 3 if len(kb.targets) > 6 else 4
        for s in kb.sources:
            row = [s]
            for tg in kb.targets:
                c = cells[(cells["source"] == s) & (cells["target"] == tg)].iloc[0]
                row.append(_cell_text(c["mean"], c["sd"], int(c["n"]), digits))
            t.add_row(*row)
        _print_full_width(t)

    payload = {"kb": summary, "metric": metric, "manifest_checks": kb.manifest.get("checks", {}),
               "cells": cells.replace({np.nan: None}).to_dict(orient="records")}
    emit(fmt, payload, tables={"cells": cells}, render_table=render)


def _print_full_width(t: Table) -> None:
    """Print a matrix at its natural width: a folded number is misread, a long line is not."""
    need = Measurement.get(out, out.options.update(width=10_000), t).maximum
    if need <= out.width:
        out.print(t)
        return
    wide = Console(width=need, soft_wrap=True, color_system=out.color_system,
                   force_terminal=out.is_terminal)
    wide.print(t)


def _caption(kb, cells: pd.DataFrame) -> str:  # noqa: ANN001
    n_cells = int(cells["mean"].notna().sum())
    parts = [f"{n_cells} measured cells"]
    if cells["sd"].notna().any():
        parts.append("± = sample sd (ddof 1) over the n records of a cell")
    if "run_sd" in cells:
        parts.append(f"one value per cell; the spread over its {kb.manifest.get('run_metric')} records "
                     "(a hyper-parameter grid, not seeds) is in run_sd/run_n of --format json/csv")
    if kb.manifest.get("self_pairs"):
        parts.append("self-pairs included (source = target)")
    return "; ".join(parts)


@kb_app.command("import")
@handle_errors
def kb_import(
    study: str = typer.Argument(..., help=f"Which study: {', '.join(IMPORTERS)}."),
    src: Path = typer.Argument(..., help="The released study folder, e.g. ../shared/data/kb/juodelyte2024."),
    out_dir: Path = typer.Option(None, "--out", help="Output KB folder (default artifacts/kb/<study>)."),
    fmt=FormatOpt,  # noqa: ANN001
) -> None:
    """Transcribe a published study's files into the project's KB format, with provenance."""
    with err.status(f"importing {study} from {src}"):
        kb = import_kb(study, src, out_dir)
    summary = kb_summary(kb)
    summary["path"] = str(kb.path)
    summary["checks"] = kb.manifest.get("checks", {})
    emit(fmt, summary, tables={"kb": pd.DataFrame([{k: v for k, v in summary.items() if k != "checks"}])},
         render_table=lambda: _render_import(summary))


def _render_import(summary: dict) -> None:
    out.print(f"[bold]{summary['name']}[/] → {summary['path']}: {summary['n_sources']} sources × "
              f"{summary['n_targets']} targets, {summary['n_cells']} cells, {summary['n_records']} records "
              f"({summary['metric']}, {summary['architecture']})")
    for k, v in summary["checks"].items():
        out.print(f"  check {k}: {v}", highlight=False)


@kb_app.command("score")
@handle_errors
def kb_score(
    name: str = typer.Argument(..., help="A KB that ships source checkpoints (e.g. local)."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Where the targets' .npz files are (default ../shared/data)."),
    fmt=FormatOpt,  # noqa: ANN001
) -> None:
    """Compute transferability estimates (LogME, LEEP, N-LEEP, NCE, H-score, k-NN) into the KB."""
    from recommender.kb import score_transferability  # lazy: meta_features loads torch

    rows = score_transferability(name, data_dir, progress=fmt == Format.table)
    wide = rows.pivot_table(index=["target", "source"], columns="feature", values="value").reset_index()
    emit(fmt, rows.to_dict(orient="records"), tables={"transferability": wide},
         render_table=lambda: out.print(df_table(wide, title=f"{name}: transferability estimates "
                                                 f"(target training rows, ≤1,000 images per target)")))


@kb_app.command("attach")
@handle_errors
def kb_attach(
    kb: list[str] = typer.Option(None, "--kb", help="KB to attach to (repeatable; default: every KB)."),
    stems: list[str] = typer.Option(None, "--stem", help="Shared npz stem to profile (repeatable; default: all)."),
    attach_only: bool = typer.Option(False, "--attach-only", help="Reuse the shipped profiles; only attach."),
    fmt=FormatOpt,  # noqa: ANN001
) -> None:
    """Rebuild the shipped profiles from ../shared/data, then attach them to the KBs."""
    from recommender.kb import attach_all  # lazy: meta_features loads torch

    with contextlib.redirect_stdout(sys.stderr):  # per-set progress lines; stdout is the result
        rows = attach_all(kb or None, stems or None, rebuild=not attach_only)
    emit(fmt, rows, tables={"attached": pd.DataFrame(rows)}, render_table=lambda: _render_attach(rows))


def _render_attach(rows: list[dict]) -> None:
    for r in rows:
        out.print(f"KB {r['kb']}: {r['n_datasets']} datasets ({r['n_with_image_features']} with image "
                  f"features), {r['n_similarity_rows']} similarity rows", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(kb_app, name="kb")
