"""`catscans inspect PATH`: read an image set and print its card (what it is, in checkable numbers).

table: a rich summary plus a per-class table and the skipped-file reasons;
json: the card dict (``Card.to_dict()``); csv: one key/value row per card entry
(nested dicts flattened as ``class_counts.<name>`` etc.).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import typer
from rich.table import Table

from imagesets import Card, build_demo_target, read_imageset
from recommender.cli._common import (
    Format,
    FormatOpt,
    df_table,
    emit,
    err,
    handle_errors,
    mixed_folder_warnings,
    out,
)


def card_rows(card: Card) -> pd.DataFrame:
    """Key/value rows of the card; dict fields flattened with a dot, examples left out."""
    rows: list[tuple[str, object]] = []
    for key, value in card.to_dict().items():
        if key == "skipped_examples":
            continue
        if isinstance(value, dict):
            rows.extend((f"{key}.{k}", v) for k, v in value.items())
        else:
            rows.append((key, value))
    return pd.DataFrame(rows, columns=["key", "value"])


def _render(card: Card) -> None:
    summary = Table(title=f"image set: {card.name}", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value", overflow="fold")

    def fmt(d: dict) -> str:
        return ", ".join(f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}" for k, v in d.items()) or "—"

    for key, value in [
        ("source", card.source), ("images", card.n_images),
        ("classes", card.n_classes if card.labelled else "unlabelled"),
        ("channels (after policy)", card.channels), ("resized side", card.side),
        ("native size (px)", fmt(card.native_size)), ("bit depths", fmt(card.bit_depths)),
        ("file formats", fmt(card.file_formats)), ("DICOM modalities", fmt(card.modalities)),
        ("splits", fmt(card.splits)), ("skipped files", card.n_skipped),
    ]:
        summary.add_row(key, str(value))
    out.print(summary)
    if card.class_counts:
        total = max(1, card.n_images)
        df = pd.DataFrame([(k, v, 100.0 * v / total) for k, v in card.class_counts.items()],
                          columns=["class", "images", "% of set"])
        out.print(df_table(df, title="classes", floatfmt="{:.1f}"))
    if card.skipped_reasons:
        df = pd.DataFrame(list(card.skipped_reasons.items()), columns=["reason", "files"])
        ex = pd.DataFrame(card.skipped_examples)
        if not ex.empty:  # paths relative to the set's folder are easier to read
            base = os.path.abspath(card.source)
            ex["path"] = [os.path.relpath(p, base) if os.path.abspath(p).startswith(base + os.sep) else p
                          for p in ex["path"]]
        out.print(df_table(df, title="skipped files by reason"))
        if not ex.empty:
            out.print(df_table(ex[["path", "reason", "detail"]],
                               title=f"first {len(ex)} skipped files"))


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    @handle_errors
    def inspect(
        path: str = typer.Argument(..., help="Folder, CSV manifest (path,label), .npz, medmnist:<flag>, or 'demo'."),
        side: int = typer.Option(64, "--side", help="Side images are resized to (px)."),
        channels: str = typer.Option("keep", "--channels", help="grey | rgb | keep."),
        max_images: int = typer.Option(None, "--max-images", help="Seeded (stratified) subsample before decoding."),
        workers: int = typer.Option(None, "--workers", help="Decode processes (default: up to 2)."),
        fmt: Format = FormatOpt,
    ) -> None:
        """Read an image set and print its card: counts, classes, sizes, formats, skipped files."""
        if path == "demo" and not Path(path).exists():  # the embedded demo target, built on first use
            path = str(build_demo_target(Path.home() / ".cache" / "catscans" / "demo_target"))
        iset = read_imageset(path, side=side, channels=channels, max_images=max_images,  # type: ignore[arg-type]
                             workers=workers, progress=True)
        card = iset.card
        for w in mixed_folder_warnings(card.to_dict()):
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
        emit(fmt, card.to_dict(), tables={"card": card_rows(card)}, render_table=lambda: _render(card))
