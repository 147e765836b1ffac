"""Shared plumbing for the study importers: reading the released CSVs and building records.

The published files are not uniform (an unnamed pandas index column, ``;`` separators,
a UTF-8 byte-order mark, CRLF line ends). Every importer reads through
:func:`read_study_csv` so those quirks are handled once, and every mismatch with what
the paper says (missing file, wrong cell count) becomes one ``KBImportError`` line.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.knowledge_base import DATASET_COLUMNS, RECORD_COLUMNS
from imagesets import UserError


class KBImportError(UserError):
    """The study folder is not the released one (missing file, unexpected counts, bad table)."""


def read_study_csv(path: Path, index_col_ok: bool = True) -> pd.DataFrame:
    """Read one released CSV whatever its quirks: BOM, ``;`` or ``,``, unnamed index column.

    The separator is sniffed from the header line; a first column with an empty (or
    ``Unnamed: 0``) header whose values are 0..n-1 is a saved pandas index and is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise KBImportError(f"missing file {path} (is this the released study folder?)")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")  # strips a BOM if present
    except UnicodeDecodeError as exc:
        raise KBImportError(f"{path.name} is not UTF-8 text: {exc}") from exc
    header = text.splitlines()[0] if text else ""
    if not header.strip():
        raise KBImportError(f"{path.name} is empty")
    try:
        sep = csv.Sniffer().sniff(header, delimiters=",;\t").delimiter
    except csv.Error:
        sep = ","
    try:
        from io import StringIO

        df = pd.read_csv(StringIO(text), sep=sep)
    except Exception as exc:  # pandas raises several types for malformed tables
        raise KBImportError(f"cannot parse {path.name}: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    first = df.columns[0]
    if index_col_ok and (first == "" or first.startswith("Unnamed")):
        col = pd.to_numeric(df[first], errors="coerce")
        if col.notna().all() and np.array_equal(col.to_numpy(), np.arange(len(df))):
            df = df.drop(columns=[first])
    for c in df.columns:  # strip stray whitespace in text cells (CRLF leftovers)
        if df[c].dtype == object or str(df[c].dtype).startswith("str"):
            df[c] = df[c].astype(str).str.strip()
    return df


def require_columns(df: pd.DataFrame, cols: list[str], fname: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KBImportError(f"{fname}: missing column(s) {', '.join(missing)}")


def wide_to_long(df: pd.DataFrame, fname: str, row_key: str = "source") -> pd.DataFrame:
    """``row_key`` + one column per target -> long ``source, target, value`` (NaN cells dropped)."""
    require_columns(df, [row_key], fname)
    long = df.melt(id_vars=[row_key], var_name="target", value_name="value")
    long = long.rename(columns={row_key: "source"})
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def make_records(long: pd.DataFrame, *, metric: str, architecture: str, protocol: str | pd.Series,
                 study: str, file: str | pd.Series, commit: str, fold: int | pd.Series = -1,
                 seed: int | pd.Series = -1) -> pd.DataFrame:
    """Fill the provenance columns of the records table for a ``source, target, value`` frame."""
    r = pd.DataFrame({
        "source": long["source"].to_numpy(),
        "target": long["target"].to_numpy(),
        "metric": metric,
        "value": long["value"].astype(float).to_numpy(),
        "fold": fold if np.isscalar(fold) else np.asarray(fold),
        "seed": seed if np.isscalar(seed) else np.asarray(seed),
        "architecture": architecture,
        "protocol": protocol if isinstance(protocol, str) else np.asarray(protocol),
        "study": study,
        "file": file if isinstance(file, str) else np.asarray(file),
        "commit": commit,
    })
    return r[RECORD_COLUMNS]


def cards_frame(cards: list[dict]) -> pd.DataFrame:
    """Dataset cards in the KB column order; absent facts stay NaN (never invented)."""
    df = pd.DataFrame(cards).reindex(columns=DATASET_COLUMNS)
    for c in ("n_images", "n_classes", "channels", "resolution"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    return df


def check_count(n: int, expected: int, what: str) -> None:
    if n != expected:
        raise KBImportError(f"{what}: found {n}, the published study has {expected}; files differ from the release")
