"""`catscans recommend`: rank sources for a folder of images (the main job)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.panel import Panel
from rich.table import Table

from recommender.cli._common import Format, FormatOpt, emit, err, handle_errors, out


def _fmt_ci(v: dict | float | None, d: int = 3) -> str:
    if isinstance(v, dict):
        m, lo, hi = v.get("mean"), v.get("lo"), v.get("hi")
        if m is None:
            return "—"
        if lo is None or hi is None:
            return f"{m:.{d}f}"
        return f"{m:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"
    return "—" if v is None else f"{v:.{d}f}"


def _render(rec) -> None:
    c = rec.target_card
    classes = ", ".join(f"{k} {v}" for k, v in c.get("class_counts", {}).items()) or "unlabelled"
    skipped = ", ".join(f"{k}: {v}" for k, v in c.get("skipped_reasons", {}).items()) or "none"
    mods = ", ".join(f"{k} {v}" for k, v in c.get("modalities", {}).items()) or "—"
    card = (
        f"[b]{rec.target}[/b]  {c['n_images']} images · {c['n_classes']} classes ({classes})\n"
        f"channels {c['channels']} · formats {', '.join(f'{k} {v}' for k, v in c['file_formats'].items())}"
        f" · DICOM modality {mods}\nskipped {c['n_skipped']} files ({skipped})"
    )
    out.print(Panel(card, title="target", expand=False))
    t = Table(title=f"sources ranked for this target — KB {rec.kb}, method: {rec.method}")
    t.add_column("#", justify="right")
    t.add_column("source")
    t.add_column("predicted AUC [80% interval]")
    t.add_column("vs static pick", justify="right")
    t.add_column("why (top 3 features)", overflow="fold")
    t.add_column("weights", overflow="fold")
    for r in rec.ranking:
        vs = "pick" if r["static_pick"] else ("—" if r["vs_static_pick"] is None else f"{r['vs_static_pick']:+.4f}")
        t.add_row(str(r["rank"]), r["source"],
                  f"{r['predicted_auc']:.3f} [{r['lo80']:.3f}, {r['hi80']:.3f}]", vs, r["reasons"], r["weights"])
    out.print(t)
    tx = {r["source"]: r["transferability"] for r in rec.ranking if r.get("transferability")}
    if tx:
        names = sorted({k for d in tx.values() for k in d})
        tt = Table(title="transferability estimates on your labelled images (higher = should transfer better)")
        tt.add_column("source")
        for n in names:
            tt.add_column(n, justify="right")
        for src, d in tx.items():
            tt.add_row(src, *[f"{d[n]:.4g}" if n in d else "—" for n in names])
        out.print(tt)
    v = rec.validation or {}
    cov = v.get("coverage80")
    if rec.method.startswith("meta-model"):
        how = "quantile LightGBM regressors" + (
            f" (under LOTO their 80% interval held the true AUC for {cov:.0%} of held-out cells)" if cov else "")
    elif rec.method.startswith("static"):
        how = ("each source's standardised AUC over the KB's targets (10–90% spread), mapped to the AUC "
               "levels of those targets")
    else:
        how = "quantile LightGBM regressors (shown for scale; they do not set the order)"
    out.print(f"[dim]order: {rec.method}, the best validated method for this KB. Predicted AUC and 80% "
              f"interval: {how}. vs static pick: predicted AUC minus that of the static ranking's first "
              "choice.[/]")
    mean = v.get("mean", {})
    n = v.get("n_targets", "?")
    out.print(
        f"KB [b]{rec.kb}[/b] ({rec.kb_choice}). Method [b]{rec.method}[/b], leave-one-target-out over "
        f"{n} targets: mean weighted τ {_fmt_ci(mean.get('tau_w'))}, mean regret "
        f"{_fmt_ci(mean.get('regret'), 4)} AUC, top-1 {_fmt_ci(mean.get('top1'))} (95% bootstrap CI over targets)."
    )
    for note in rec.notes:
        out.print(f"note: {note}")
    out.print(f"took {rec.timings_s.get('total', float('nan')):.1f} s "
              f"(read {rec.timings_s.get('read', 0):.1f} s, meta-features {rec.timings_s.get('meta_features', 0):.1f} s)")


def register(app: typer.Typer) -> None:
    @app.command("recommend")
    @handle_errors
    def recommend_cmd(
        target: str = typer.Option(..., "--target", "-t",
                                   help="Folder, CSV manifest, .npz, medmnist:<flag>, or 'demo' (embedded)."),
        kb: str = typer.Option(None, "--kb", help="Knowledge base (default: the best validated one)."),
        top: int = typer.Option(None, "--top", "-k", min=1, help="Show only the top K sources."),
        fmt: Format = FormatOpt,
    ) -> None:
        """Rank a knowledge base's sources for your images: predicted AUC, 80% interval, reasons."""
        from recommender.recommend import recommend

        if target != "demo" and not target.startswith("medmnist:") and not Path(target).exists():
            from imagesets import ImageSetError

            raise ImageSetError(f"no such file or folder: {target}")
        err.print(f"[dim]reading {target} …[/]")
        rec = recommend(target, kb=kb, top=top, progress=fmt == Format.table)
        emit(fmt, rec.to_dict(), tables={"ranking": _flat(rec.ranking)}, render_table=lambda: _render(rec))


def _flat(ranking: list[dict]) -> pd.DataFrame:
    """One CSV row per source; transferability estimates become tx_<name> columns."""
    rows = [{k: v for k, v in r.items() if k != "transferability"}
            | {f"tx_{k}": v for k, v in (r.get("transferability") or {}).items()} for r in ranking]
    return pd.DataFrame(rows)
