"""`catscans verify`: fine-tune a shortlist on your labelled images and measure it (paired).

Also the pieces `recommend --explain SOURCE` (a candidate's card) and `recommend --verify`
(one table of measured and predicted rows) use. Results on stdout, progress on stderr.
"""

from __future__ import annotations

import time

import pandas as pd
import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from recommender.cli._common import Format, FormatOpt, emit, err, handle_errors, out, split_csv


class VerifyProgress:
    """Compute done / budget (in full fine-tunes) with ETA, and the running cell (stderr only)."""

    def __init__(self, quiet: bool) -> None:
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.completed:.1f}/{task.total:.1f} runs"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=err, disable=quiet or not err.is_terminal)
        self.lines = not quiet and not err.is_terminal
        self.task = self.bar.add_task("verify", total=None)
        self.budget: float | None = None
        self.t0, self.done = time.monotonic(), 0.0

    def __call__(self, e: dict) -> None:
        kind = e.get("event")
        if kind == "plan":
            units = e.get("units")
            self.budget = units if units == units else None  # NaN: a minutes budget, known later
        elif kind == "round":
            total = max(self.budget or 0.0, self.done + e["cost"])
            self.bar.update(self.task, total=total)
            lv = e["level"]
            msg = (f"round {e['round'] + 1}: {len(e['alive'])} candidates x {e['seeds']} seed(s), "
                   f"{lv['data']:.0%} of the images, {lv['epochs']:.0%} of the epochs; {e['cells']} to run")
            (err.print(msg, highlight=False) if self.lines or not self.bar.disable else None)
        elif kind == "epoch" and "epoch" in e:
            self.bar.update(self.task, description=f"{e['label']} epoch {e['epoch']}/{e['epochs']}")
        elif kind in ("done", "failed"):
            self.done += float(e.get("cost", 0))
            self.bar.update(self.task, completed=self.done, description=e.get("label", ""))
            if self.lines:
                spent = time.monotonic() - self.t0
                what = f"auc={e['record'].get('value', float('nan')):.4f}" if kind == "done" else "FAILED"
                eta = ""
                if self.budget and self.done > 0:
                    eta = f", ETA {spent / self.done * max(0.0, self.budget - self.done) / 60:.1f} min"
                err.print(f"{e['label']} {what} ({self.done:.2f} runs done, {spent / 60:.1f} min{eta})",
                          highlight=False, soft_wrap=True)

    def finish(self) -> None:
        self.bar.update(self.task, total=max(self.done, 1e-9), completed=self.done)


def result_rows(res) -> pd.DataFrame:  # noqa: ANN001 (VerifyResult)
    """Flat rows for --format csv."""
    rows = []
    for r in res.rows:
        flat = {k: v for k, v in r.items() if k not in ("vs_first", "vs_scratch", "level", "per_seed")}
        flat |= {"data_fraction": r["level"]["data"], "epoch_fraction": r["level"]["epochs"]}
        for name in ("vs_first", "vs_scratch"):
            for k, v in (r.get(name) or {}).items():
                flat[f"{name}_{k}"] = v
        rows.append(flat)
    return pd.DataFrame(rows)


def render_card(card: dict) -> None:
    t = Table(title=f"candidate {card['spec']}", show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    n = card.get("n_params")
    for k, v in (("kind", card["kind"]), ("architecture", card["arch"]),
                 ("input size", f"{card['input_size']} px" if card.get("input_size") else "—"),
                 ("parameters", f"{n:,}" if n else "—"), ("weights", card["weights"]),
                 ("cell name", card["name"])):
        t.add_row(k, str(v))
    out.print(t)
    out.print("load it:")
    for line in card["snippet"]:
        out.print(f"    {line}", highlight=False, markup=False)
    for note in card.get("notes", []):
        out.print(f"note: {note}", highlight=False)


def explain(spec: str, kb: str | None, arch: str | None, fmt: Format) -> None:
    """Print one candidate's card (`recommend --explain SOURCE`)."""
    from experiments import list_kbs, load_kb
    from recommender.candidates import resolve_candidate

    kbase = None
    if kb:
        kbase = load_kb(kb)
    elif ":" not in spec:
        for name in list_kbs():  # the first KB that ships this source's checkpoint, else one that lists it
            k = load_kb(name)
            if spec in k.sources and (kbase is None or k.checkpoint_path(spec) is not None):
                kbase = k
                if k.checkpoint_path(spec) is not None:
                    break
    card = resolve_candidate(spec, kbase, arch).card()
    emit(fmt, card, tables={"card": pd.DataFrame([{k: v for k, v in card.items() if k != "snippet"}])},
         render_table=lambda: render_card(card))


def register(app: typer.Typer) -> None:
    @app.command("verify")
    @handle_errors
    def verify_cmd(
        target: str = typer.Option(..., "--target", "-t", help="Your labelled images: folder, CSV, .npz, medmnist:<flag>."),
        kb: str = typer.Option("local", "--kb", help="KB whose protocol and checkpoints to use."),
        sources: str = typer.Option(None, "--sources", help="Comma-separated candidates: KB sources, "
                                    "torchvision:WEIGHTS, timm:MODEL, weight files (scratch is always added)."),
        top: int = typer.Option(4, "--top", "-k", min=1, help="Without --sources: the top K of recommend."),
        budget: str = typer.Option("0.25", "--budget", help="Fraction of full compute (0.25, 25%) or minutes (10m)."),
        seeds: int = typer.Option(None, "--seeds", min=1, help="Most seeds per candidate (default: the KB protocol's)."),
        save_to_kb: str = typer.Option(None, "--save-to-kb", help="Append the full-protocol cells to this KB."),
        store: str = typer.Option(None, "--store", help="Results store: folder or sqlite:///path (default: the run folder)."),
        run_root: str = typer.Option(".", "--run-root", help="Runs go under runs/verify/ in this folder, one folder <fingerprint>-<hash> per run."),
        arch: str = typer.Option(None, "--arch", help="Architecture of weight files without a JSON sidecar."),
        workers: int = typer.Option(1, "--workers", min=1, help="Local worker processes."),
        threads: int = typer.Option(None, "--threads", help="CPU budget: at most this many fine-tunes at once (each runs on one torch thread; default: the CPU count)."),
        data_dir: str = typer.Option(None, "--data-dir", help="Where <name>.npz sets live."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
        wide: bool = typer.Option(False, "--wide", "-w", help="Every column (the round, P(beats #1)), wider than 80."),
        prior: bool = typer.Option(True, "--prior/--no-prior", help="Combine the measurements with recommend's "
                                   "prediction (default) or pick on the measurements alone (a flat prior)."),
        fmt: Format = FormatOpt,
    ) -> None:
        """Fine-tune a shortlist on your labelled images (successive halving) and pick by prediction x measurement."""
        from recommender.cli._verify_view import render_result

        payload, res, _ = run_verify(target, kb, split_csv(sources), top, budget, seeds, save_to_kb, store, run_root,
                                     arch, workers, threads, data_dir, quiet, use_prior=prior)
        emit(fmt, payload, tables={"verify": result_rows(res)}, render_table=lambda: render_result(res, wide))


def run_verify(target: str, kb: str, sources: list[str] | None, top: int, budget: str | None, seeds: int | None,
               save_to_kb: str | None, store: str | None, run_root: str, arch: str | None, workers: int = 1,
               threads: int | None = None, data_dir: str | None = None, quiet: bool = False,
               use_prior: bool = True, prior_rows: list[dict] | None = None, prior_level: float = 0.8):  # noqa: ANN201
    """Run verify with a progress bar; (JSON payload, result, save report). ``prior_rows``:
    recommend's ranking when it already ran (else verify runs it for the prior)."""
    from experiments.backends import make_backend
    from recommender.verify import verify

    progress = VerifyProgress(quiet)
    with progress.bar:
        res = verify(target, kb, sources=sources, top=top, budget=budget, seeds=seeds, store_url=store,
                     run_root=run_root, arch=arch, backend=make_backend("local", workers=workers, threads=threads),
                     data_dir=data_dir, on_event=progress, prior_rows=prior_rows, use_prior=use_prior,
                     prior_level=prior_level)
        progress.finish()
    saved = None
    if save_to_kb:
        from recommender.verify.save import save_to_kb as do_save

        saved = do_save(res, save_to_kb)
        err.print(f"added {saved['records']} records of target '{saved['target']}' to KB {saved['kb']} "
                  f"({saved['path']})", highlight=False)
    return {**res.to_dict(), "saved": saved}, res, saved


def recommend_then_verify(rec, payload: dict, budget: str | None, arch: str | None, fmt: Format,  # noqa: ANN001
                          top: int = 4, wide: bool = False) -> None:
    """`recommend --verify`: verify the top ``top`` sources of ``rec`` (plus scratch) in its KB."""
    from experiments.cells import SCRATCH
    from recommender.cli._verify_view import render_merged

    shortlist = [r["source"] for r in rec.ranking if r["source"] != SCRATCH][:top]
    level = float(((getattr(rec, "gain", None) or {}).get("level")) or ((getattr(rec, "interval", None) or {})
                                                                       .get("level")) or 0.8)
    v_payload, res, _ = run_verify(rec.target, rec.kb, shortlist, top, budget, None, None, None, ".", arch,
                                   prior_rows=rec.ranking, prior_level=level)
    merged = {"recommendation": payload, "verify": v_payload}
    measured = {r["candidate"] for r in res.rows}
    flat = pd.concat([result_rows(res).assign(status="measured"),
                      pd.DataFrame([{"candidate": r["source"], "auc": r["predicted_auc"], "lo": r["lo80"],
                                     "hi": r["hi80"], "status": "predicted"}
                                    for r in rec.ranking if r["source"] not in measured])], ignore_index=True)
    emit(fmt, merged, tables={"sources": flat}, render_table=lambda: render_merged(rec, res, wide))
