"""Shared CLI plumbing: output formats, one-line errors, stderr console.

Results go to stdout (table/json/csv); progress and logs go to stderr. A
``UserError`` from any package becomes one red line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from imagesets import UserError

out = Console(soft_wrap=True)  # stdout: results
err = Console(stderr=True)  # stderr: progress, logs, errors
PIPED_WIDTH = 150  # piped/captured output without $COLUMNS: don't fold tables to 80 columns
_T_CLI = time.time()  # when this module was imported (fallback start of the command)


def configure_output() -> None:
    """Size both consoles for this command: $COLUMNS, else the terminal, else PIPED_WIDTH.

    Called at the start of every command (the app callback), so a width set by one command
    or an earlier $COLUMNS never leaks into the next one run in the same process.
    """
    global _T_CLI
    _T_CLI = time.time()
    for con in (out, err):
        con._width = None  # noqa: SLF001  (rich re-reads $COLUMNS / the terminal when None)
        if "COLUMNS" not in os.environ and not con.is_terminal:
            con._width = PIPED_WIDTH  # noqa: SLF001


def _process_elapsed() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = float(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def wall_time() -> float:
    """The command's real wall time so far, interpreter start-up and imports included.

    When this process was started to run ``catscans`` the clock starts at process start;
    inside another program (tests, notebooks) it starts when the command began.
    """
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    if argv0.startswith("catscans") or sys.argv[0].endswith(os.path.join("recommender", "__main__.py")):
        elapsed = _process_elapsed()
        if elapsed is not None:
            return elapsed
    return time.time() - _T_CLI


def fmt_p(p: float | None, digits: int = 3, label: bool = False) -> str:
    """A p-value: '< 0.001' below 0.001, never '0.000' (``label``: 'p < 0.001' / 'p = 0.012')."""
    from recommender.evaluation.report_html import format_p

    return format_p(p, digits, label)


def prose(text: str, console: Console | None = None, **kw: Any) -> None:
    """Print a sentence wrapped at the console width (``out`` itself never wraps tables' lines)."""
    (console or out).print(text, soft_wrap=False, overflow="fold", **kw)


def mixed_folder_warnings(card: dict) -> list[str]:
    """Warnings for a folder that mixes kinds of image: a recommendation is for one kind."""
    warn = []
    mods = {k: v for k, v in (card.get("modalities") or {}).items() if k}
    if len(mods) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in mods.items())
        warn.append(f"the folder mixes DICOM modalities ({listed}); rank each modality separately "
                    "for a recommendation that fits it")
    formats = card.get("file_formats") or {}
    n_dicom = int(formats.get("dicom", 0))
    n_other = int(sum(v for k, v in formats.items() if k != "dicom"))
    if n_dicom and n_other:
        warn.append(f"the folder mixes DICOM files ({n_dicom}) with ordinary images ({n_other}), "
                    "likely two domains (scans and photographs or exports)")
    return warn


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
    """Write a result: JSON = ``payload``; CSV = ``tables``; table = ``render_table()``.

    CSV of one table is that table; of several, one section per table, each opened by a
    ``# table: NAME`` line and closed by a blank line (``pandas.read_csv(comment="#")``
    reads a section; :func:`read_csv_sections` splits them all).
    """
    if fmt == Format.json:
        sys.stdout.write(json.dumps(payload, indent=2, default=_json_default) + "\n")
    elif fmt == Format.csv:
        if not tables:
            fail("this command has no tabular result for --format csv")
        if len(tables) == 1:
            next(iter(tables.values())).to_csv(sys.stdout, index=False)
            return
        for i, (name, df) in enumerate(tables.items()):
            sys.stdout.write(("\n" if i else "") + f"# table: {name}\n")
            df.to_csv(sys.stdout, index=False)
    else:
        if render_table is not None:
            render_table()
        elif tables:
            for name, df in tables.items():
                out.print(df_table(df, title=name))


def read_csv_sections(text: str) -> dict[str, pd.DataFrame]:
    """The tables of a multi-section ``--format csv`` output, by name (the inverse of emit)."""
    import io

    sections: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("# table: "):
            name = line[len("# table: "):].strip()
            sections[name] = []
        elif name is not None and line.strip():
            sections[name].append(line)
    return {n: pd.read_csv(io.StringIO("\n".join(lines) + "\n")) for n, lines in sections.items()}


def print_table(t: Table, title: str | None = None, caption: str | None = None,
                width: int | None = None) -> None:
    """A table with its title and caption as sentences wrapped at the terminal width (a rich
    title or caption wraps at the table's own width, a narrow table's into a tall column)."""
    if title:
        prose(title, style="bold", highlight=False)
    if width is None:
        out.print(t)
    else:
        print_at_width(t, width)
    if caption:
        prose(caption, style="dim", highlight=False)


def natural_width(renderable: Any, console: Console | None = None) -> int:
    """The columns a table needs to print without folding anything (its maximum measure)."""
    from rich.measure import Measurement

    con = console or out
    return Measurement.get(con, con.options.update(width=10_000), renderable).maximum


def print_at_width(renderable: Any, width: int, console: Console | None = None) -> None:
    """Print wider than the terminal when asked (``--wide``); rich's own print clamps to it."""
    con = console or out
    if width <= con.width:
        con.print(renderable)
        return
    Console(width=width, file=con.file, soft_wrap=True, color_system=con.color_system,
            force_terminal=con.is_terminal).print(renderable)


def fits(lines: Iterable[str], width: int) -> bool:
    """Every line at most ``width`` terminal cells (wide characters count double)."""
    from rich.cells import cell_len

    return all(cell_len(ln) <= width for ln in lines)


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


def split_csv(value: str | None) -> list[str] | None:
    """A comma-separated option (``--sources a,b``) as a list; None when not given."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None
