"""`catscans build-matrix`: measure a source x target transfer matrix (resumable)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from recommender.cli._common import (
    FormatOpt,
    df_table,
    emit,
    err,
    handle_errors,
    out,
    print_table,
    split_csv,
)


class _Progress:
    """Cells done/total with ETA, and the running cell with its epoch (stderr only)."""

    def __init__(self, quiet: bool) -> None:
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                            disable=quiet or not err.is_terminal)
        self.task = None
        self.running: dict[str, str] = {}
        self.lines = not quiet and not err.is_terminal  # a log file gets one plain line per cell
        self.t0, self.done, self.total, self.ran = time.monotonic(), 0, 0, 0

    def _line(self, e: dict) -> None:
        self.done += 1
        self.ran += 1
        spent = time.monotonic() - self.t0
        eta = spent / self.ran * (self.total - self.done)
        what = f"auc={e['record'].get('value', float('nan')):.4f}" if e["event"] == "done" else "FAILED"
        err.print(f"[{self.done}/{self.total}] {e['label']} {what} elapsed {spent / 60:.1f} min, "
                  f"ETA {eta / 60:.1f} min", highlight=False, soft_wrap=True)

    def __call__(self, e: dict) -> None:
        kind = e.get("event")
        if kind == "plan":
            self.task = self.bar.add_task("cells", total=e["total"], completed=e["done"])
            self.done, self.total = e["done"], e["total"]
            return
        if self.lines and kind in ("done", "failed"):
            self._line(e)
        if self.task is None:
            return
        if kind == "start":
            self.running[e["key"]] = e["label"]
        elif kind == "epoch" and "epoch" in e:
            self.running[e["key"]] = f"{e['label']} epoch {e['epoch']}/{e['epochs']}"
        elif kind in ("done", "failed"):
            self.running.pop(e["key"], None)
            if kind == "failed":
                err.print(f"[red]failed[/] {e['label']}: {e['error']}", highlight=False)
            self.bar.advance(self.task)
        shown = "; ".join(list(self.running.values())[:2]) or "cells"
        self.bar.update(self.task, description=shown)


def _stored_cells(plan, store_url: str | None, run_dir: Path) -> set[str]:  # noqa: ANN001
    """Keys of the plan's cells already done: records in the store, ready source checkpoints.

    Reads only; a store or run folder that does not exist yet means nothing is stored (a dry
    run must not create it).
    """
    from experiments.cells import checkpoint_ready
    from experiments.store import open_store

    sqlite = (store_url or "").startswith("sqlite:///")
    where = Path(store_url[len("sqlite:///"):]) if sqlite else Path(store_url or run_dir) / "cells"
    keys = open_store(store_url, run_dir).keys() if where.exists() else set()
    ck_dir = Path(run_dir) / "checkpoints"
    done = {c.key for c in plan.finetune if c.key in keys}
    done |= {c.key for c in plan.pretrain if checkpoint_ready(ck_dir, c.source, c.protocol_hash)}
    return done


def register(app: typer.Typer) -> None:
    @app.command("build-matrix")
    @handle_errors
    def build_matrix(
        protocol: str = typer.Option("cpu-mini", "--protocol", "-p", help="Preset name or a .toml path."),
        sets: list[str] = typer.Option([], "--set", help="Override a protocol key: key=value (dotted)."),
        sources: str = typer.Option(None, "--sources", help="Comma-separated sources (default: protocol's)."),
        targets: str = typer.Option(None, "--targets", help="Comma-separated targets (default: protocol's)."),
        folds: int = typer.Option(None, "--folds", help="Evaluate with N-fold stratified CV."),
        seeds: int = typer.Option(None, "--seeds", help="Evaluate over N seeds (fresh train subsample each)."),
        store: str = typer.Option(None, "--store", help="Results store: folder path or sqlite:///path."),
        run_dir: Path = typer.Option(None, "--run-dir", help="Checkpoints + default store (default: runs/<protocol>-<hash>)."),
        data_dir: Path = typer.Option(None, "--data-dir", help="Where <name>.npz sets live (default: $CATSCANS_DATA, else ../shared/data)."),
        backend: str = typer.Option("local", "--backend", help="local or ray."),
        address: str = typer.Option(None, "--address", help="Ray cluster: auto or HOST:PORT."),
        workers: int = typer.Option(1, "--workers", help="Local worker processes."),
        threads: int = typer.Option(None, "--threads", help="CPU budget: at most this many cells at once (each cell runs on one torch thread, so results never depend on it; default: the CPU count)."),
        export_kb: str = typer.Option(None, "--export-kb", help="Write the result as KB NAME under artifacts/kb."),
        kb_out: Path = typer.Option(None, "--kb-out", help="Folder for --export-kb instead of artifacts/kb/NAME."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the grid, with cells already stored / pending per kind; run nothing."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        fmt=FormatOpt,  # noqa: ANN001
    ) -> None:
        """Pretrain each source, fine-tune it on each target over folds/seeds, store test ROC-AUC.

        Finished cells are kept and skipped on rerun, so an interrupted run resumes.
        """
        from experiments.backends import make_backend
        from experiments.data import default_data_dir
        from experiments.matrix import build_matrix as run_matrix
        from experiments.matrix import default_run_dir, finetune_frame, plan_matrix, summary_table
        from experiments.matrix import export_kb as do_export
        from experiments.protocol import ProtocolError, load_protocol
        from experiments.store import open_store

        overrides = list(sets)
        if folds is not None and seeds is not None:
            raise ProtocolError("give --folds or --seeds, not both")
        if folds is not None:
            overrides += ["evaluation.mode=\"folds\"", f"evaluation.repeats={folds}"]
        if seeds is not None:
            overrides += ["evaluation.mode=\"seeds\"", f"evaluation.repeats={seeds}"]
        proto = load_protocol(protocol, overrides)
        plan = plan_matrix(proto, split_csv(sources), split_csv(targets))
        rdir = run_dir or default_run_dir(proto)
        ddir = str(data_dir or default_data_dir())
        if dry_run:
            import pandas as pd

            from experiments.cells import IMAGENET, SCRATCH
            from experiments.data import resolve_dataset

            for name in dict.fromkeys([*plan.sources, *plan.targets]):
                if name not in (SCRATCH, IMAGENET):
                    resolve_dataset(name, ddir)

            stored = _stored_cells(plan, store, rdir)
            grid = pd.DataFrame([{"kind": c.kind, "source": c.source, "target": c.target, "repeat": c.repeat,
                                  "stored": c.key in stored} for c in plan.cells])
            by_kind = {k: {"stored": int(g["stored"].sum()), "pending": int((~g["stored"]).sum())}
                       for k, g in grid.groupby("kind", sort=False)}
            per_source = (grid.groupby(["kind", "source"], sort=False)["stored"]
                          .agg(cells="size", stored="sum").reset_index())
            per_source["pending"] = per_source["cells"] - per_source["stored"]
            caption = "; ".join(f"{k}: {v['stored']} stored, {v['pending']} pending" for k, v in by_kind.items())
            caption += f" (store {store or rdir})"
            emit(fmt, {"protocol": proto.name, "hash": proto.hash, "cells": len(grid), "by_kind": by_kind,
                       "grid": grid.to_dict("records")}, {"grid": grid},
                 lambda: print_table(df_table(per_source), f"{proto.name} ({proto.hash}): {len(grid)} cells",
                                     caption))
            return
        engine = make_backend(backend, workers=workers, address=address, threads=threads)
        progress = _Progress(quiet)
        with progress.bar:
            report = run_matrix(plan, engine, ddir, rdir, store, on_event=progress)
        st = open_store(store, rdir)
        df = finetune_frame(st, plan)
        table = summary_table(df)
        kb_path = None
        if export_kb:
            kb_path = str(do_export(plan, st, rdir, ddir, export_kb, kb_out))
            err.print(f"KB '{export_kb}' written to {kb_path}")
        n_rep = proto.evaluation.repeats
        caption = (f"test ROC-AUC, mean ± sd over n {proto.evaluation.mode} (up to {n_rep}) per cell; "
                   f"{len(df)} fine-tuning records; protocol {proto.name}@{proto.hash}")
        payload = {"protocol": proto.name, "hash": proto.hash, "store": report["store"], "run_dir": report["run_dir"],
                   "cells": report["total"], "ran": report["ran"],
                   "failed": [{"cell": f["label"], "error": f["error"]} for f in report["failed"]],
                   "kb": kb_path, "summary": table.to_dict("records")}
        emit(fmt, payload, {"summary": table},
             lambda: out.print(df_table(table, title="transfer matrix", caption=caption)))
        if report["failed"]:
            err.print(f"[red]{len(report['failed'])} cell(s) failed[/]; rerun to retry them", highlight=False)
            raise typer.Exit(1)
