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
from rich.table import Table

from experiments.knowledge_base import KnowledgeBaseError, load_kb
from recommender.cli._common import (
    Format,
    FormatOpt,
    df_table,
    emit,
    err,
    handle_errors,
    natural_width,
    out,
    print_table,
    prose,
)
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
def kb_list(
    wide: bool = typer.Option(False, "--wide", "-w", help="Every column, provenance in full (wider than 80)."),
    fmt=FormatOpt,  # noqa: ANN001
) -> None:
    """List the knowledge bases under artifacts/kb (sizes, metric, architecture, provenance)."""
    rows = list_summaries()
    df = pd.DataFrame(rows)

    def render() -> None:
        if df.empty:
            out.print("no knowledge bases (import one: catscans kb import STUDY DIR)")
            return
        metrics = sorted({str(r.get("metric", "")) for r in rows if r.get("metric")})
        caption = "cells = (source, target) pairs with a measured value"
        if wide:
            t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
            cols = list(dict.fromkeys(k for r in rows for k in r))
            for c in cols:
                t.add_column(c, no_wrap=True)
            for r in rows:
                t.add_row(*(str(r.get(c, "")) for c in cols))
            print_table(t, "knowledge bases", caption, width=max(out.width, natural_width(t)))
            return
        if len(metrics) == 1:
            caption += f"; metric {metrics[0]} in every KB"
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        t.add_column("name", no_wrap=True)
        t.add_column("size", justify="right", no_wrap=True)
        t.add_column("cells", justify="right", no_wrap=True)
        if len(metrics) > 1:
            t.add_column("metric", no_wrap=True)
        t.add_column("architecture", no_wrap=True)
        t.add_column("provenance", overflow="fold", ratio=1)
        for r in rows:
            size = f"{r.get('n_sources', '?')} × {r.get('n_targets', '?')}"
            cells = [str(r["name"]), size, str(r.get("n_cells", "—"))]
            if len(metrics) > 1:
                cells.append(str(r.get("metric", "")))
            t.add_row(*cells, str(r.get("architecture", "")), _short_provenance(str(r.get("provenance", ""))))
        print_table(t, "knowledge bases", caption + "; size = sources × targets; --wide for every column")

    emit(fmt, rows, tables={"kbs": df}, render_table=render)


def _short_provenance(text: str, longest: int = 30) -> str:
    """Provenance for an 80-column list: a long repository name cut in the middle (--wide: all)."""
    parts = []
    for word in text.split():
        if len(word) > longest and "/" in word:
            owner, _, rest = word.partition("/")
            repo, at, commit = rest.partition("@")
            keep = max(4, longest - len(owner) - len(commit) - 3)
            word = f"{owner}/{repo[:keep]}…{at}{commit}"
        parts.append(word)
    return " ".join(parts)


def _cell_text(mean: float, sd: float, n: int, digits: int, show_n: bool = True) -> str:
    if not np.isfinite(mean):
        return "—"
    s = f"{mean:.{digits}f}"
    if np.isfinite(sd):
        s += f" ± {sd:.{digits}f}"
    if show_n and n > 1:
        s += f" (n={n})"
    return s


def _short_names(names: list[str]) -> tuple[list[str], str]:
    """Drop a suffix every name shares (e.g. 'mnist') so a wide matrix fits a terminal."""
    suffix = os.path.commonprefix([n[::-1] for n in names])[::-1] if len(names) > 3 else ""
    if len(suffix) < 3 or any(len(n) == len(suffix) for n in names):
        return names, ""
    return [n[: -len(suffix)] for n in names], suffix


def _repeats_word(kb, metric: str) -> str:  # noqa: ANN001
    """What a cell's n counts: folds, seeds, or (neither recorded) records."""
    r = kb.records[kb.records["metric"] == metric]
    folds = "fold" in r and (pd.to_numeric(r["fold"], errors="coerce").fillna(-1) >= 0).any()
    seeds = "seed" in r and (pd.to_numeric(r["seed"], errors="coerce").fillna(-1) >= 0).any()
    return "folds/seeds" if folds and seeds else "folds" if folds else "seeds" if seeds else "records"


def _groups_text(groups: dict[str, str]) -> str | None:
    """'groups held out together …: a + b; …' for the groups with more than one member."""
    members: dict[str, list[str]] = {}
    for name, g in groups.items():
        members.setdefault(g, []).append(name)
    multi = [sorted(m) for m in members.values() if len(m) > 1]
    alone = sum(1 for m in members.values() if len(m) == 1)
    if not multi:
        return f"groups: each of the {alone} datasets is its own group (leave-one-group-out = leave-one-out)"
    listed = "; ".join(" + ".join(m) for m in sorted(multi))
    return (f"groups held out together (leave-one-group-out): {listed}; "
            f"{alone} other dataset(s) each their own group")


def _caveats_text(kb) -> str | None:  # noqa: ANN001
    """'caveats (from each set's provenance): a: …; b: …' for the datasets that carry one."""
    if "caveats" not in kb.datasets:
        return None
    rows = kb.datasets[kb.datasets["caveats"].astype("string").fillna("").str.strip() != ""]
    if rows.empty:
        return None
    items = "; ".join(f"{r['name']}: {r['caveats']}" for _, r in rows.iterrows())
    return f"caveats (from each set's provenance, SOURCES.md): {items}"


@kb_app.command("show")
@handle_errors
def kb_show(
    name: str = typer.Argument(..., help="KB name under artifacts/kb, or a KB folder."),
    metric: str = typer.Option(None, "--metric", help="Record metric to show (default: the KB's metric)."),
    plot: Path = typer.Option(None, "--plot", help="Also write a heatmap PNG of the matrix here."),
    wide: bool = typer.Option(False, "--wide", "-w", help="The whole matrix in one table (wider than 80)."),
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
    groups = kb.groups
    over = _repeats_word(kb, metric)
    if plot is not None:
        p = plot_matrix(kb, plot, metric)
        err.print(f"heatmap written to {p}")

    def render() -> None:
        measured = cells[cells["mean"].notna()]
        ns = sorted(set(measured["n"].astype(int)))
        uniform = len(ns) == 1 and not wide
        digits = 3 if len(kb.targets) > 6 else 4
        lookup = {(r.source, r.target): r for r in cells.itertuples(index=False)}
        heads, suffix = _short_names([str(c) for c in kb.targets])
        caption = _caption(kb, cells, over, ns[0] if uniform else None)
        title = f"{kb.name}: {metric} (rows = sources, columns = targets)"
        if suffix:
            title += f"; target names without '{suffix}'"

        def table(cols: list[int]) -> Table:
            t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
            t.add_column("source \\ target", no_wrap=True)
            texts = {j: [_cell_text(lookup[(s, kb.targets[j])].mean, lookup[(s, kb.targets[j])].sd,
                                    int(lookup[(s, kb.targets[j])].n), digits, not uniform)
                         for s in kb.sources] for j in cols}
            for j in cols:
                w = max([len(x) for x in texts[j]] + [min(len(heads[j]), 12)])
                t.add_column(heads[j], justify="right", overflow="fold", width=w)
            for i, s in enumerate(kb.sources):
                t.add_row(s, *(texts[j][i] for j in cols))
            return t

        if wide:
            t = table(list(range(len(kb.targets))))
            print_table(t, title, caption, width=max(out.width, natural_width(t)))
        else:
            chunks = _chunks(table, len(kb.targets), out.width)
            for k, cols in enumerate(chunks):
                part = f"targets {cols[0] + 1}–{cols[-1] + 1} of {len(kb.targets)}" if len(chunks) > 1 else ""
                head = f"{title} — {part}" if k == 0 and part else title if k == 0 else part
                print_table(table(cols), head, caption if k == len(chunks) - 1 else None)
        g = _groups_text(groups)
        if g:
            prose(g, highlight=False)
        c = _caveats_text(kb)
        if c:
            prose(c, highlight=False)

    payload = {"kb": summary, "metric": metric, "n_over": over, "groups": groups,
               "caveats": _caveats_text(kb),
               "manifest_checks": kb.manifest.get("checks", {}),
               "cells": cells.replace({np.nan: None}).to_dict(orient="records"),
               "records": _records(kb, metric)}
    emit(fmt, payload, tables={"cells": cells}, render_table=render)


def _chunks(make_table, n: int, width: int) -> list[list[int]]:  # noqa: ANN001
    """Split target columns into runs whose table fits ``width`` (at least one column each)."""
    chunks: list[list[int]] = []
    cur: list[int] = []
    for j in range(n):
        if cur and natural_width(make_table([*cur, j])) > width:
            chunks.append(cur)
            cur = []
        cur.append(j)
    if cur:
        chunks.append(cur)
    return chunks


def _records(kb, metric: str) -> list[dict]:  # noqa: ANN001
    """The records behind the cells (source, target, fold, seed, value) for --format json."""
    cols = [c for c in ("source", "target", "fold", "seed", "value") if c in kb.records]
    r = kb.records.loc[kb.records["metric"] == metric, cols]
    from recommender.evaluation.records import json_records

    return json_records(r)


def _caption(kb, cells: pd.DataFrame, over: str = "records", n: int | None = None) -> str:  # noqa: ANN001
    n_cells = int(cells["mean"].notna().sum())
    parts = [f"{n_cells} measured cells"]
    if cells["sd"].notna().any():
        parts.append(f"± = sample sd (ddof 1) over the n {over} of a cell")
    if n is not None:
        parts.append(f"n = {n} {over} in every cell" if n > 1 else
                     "one record per cell" + ("" if over == "records" else f" ({over[:-1]})"))
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
