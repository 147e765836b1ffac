"""Shared CLI plumbing: output formats, one-line errors, stderr console.

Results go to stdout (table/json/csv); progress and logs go to stderr. A
``UserError`` from any package becomes one red line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from enum import Enum
from typing import Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from imagesets import UserError

out = Console(soft_wrap=True)  # stdout: results
if not out.is_terminal and "COLUMNS" not in os.environ:
    out.width = 150  # piped/captured output: don't fold tables to 80 columns
err = Console(stderr=True)  # stderr: progress, logs, errors


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


FormatOpt = typer.Option(Format.table, "--format", "-f", help="Output format for results on stdout.")


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit (never a traceback)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn UserError (and interrupts) into one-line messages with non-zero exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            fail("interrupted (finished work is kept; rerun to resume)", code=130)
        except BrokenPipeError:
            sys.stderr.close()
            raise typer.Exit(0) from None

    return wrapper


def df_table(df: pd.DataFrame, title: str | None = None, caption: str | None = None,
             floatfmt: str = "{:.4f}") -> Table:
    """A rich Table of a DataFrame (index not shown; reset it first if it matters)."""
    t = Table(title=title, caption=caption, show_lines=False)
    for c in df.columns:
        t.add_column(str(c), overflow="fold")
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("—" if pd.isna(v) else floatfmt.format(v))
            else:
                cells.append("—" if v is None else str(v))
        t.add_row(*cells)
    return t


def emit(fmt: Format, payload: dict | list, tables: dict[str, pd.DataFrame] | None = None,
         render_table: Callable[[], None] | None = None) -> None:
    """Write a result: JSON = ``payload``; CSV = the first of ``tables``; table = ``render_table()``."""
    if fmt == Format.json:
        sys.stdout.write(json.dumps(payload, indent=2, default=_json_default) + "\n")
    elif fmt == Format.csv:
        if not tables:
            fail("this command has no tabular result for --format csv")
        first = next(iter(tables.values()))
        first.to_csv(sys.stdout, index=False)
    else:
        if render_table is not None:
            render_table()
        elif tables:
            for name, df in tables.items():
                out.print(df_table(df, title=name))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)
