"""`catscans recommend`: rank sources for a folder of images (the main job)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from recommender.cli._common import (
    Format,
    FormatOpt,
    emit,
    err,
    handle_errors,
    mixed_folder_warnings,
    wall_time,
)


def _render(rec, wide: bool = False) -> None:  # noqa: ANN001
    """The table output: compact at 80 columns, or --wide (see recommender.cli._recommend_view)."""
    from recommender.cli._recommend_view import render

    render(rec, wide=wide)


def register(app: typer.Typer) -> None:
    @app.command("recommend")
    @handle_errors
    def recommend_cmd(
        target: str = typer.Option(None, "--target", "-t",
                                   help="Folder, CSV manifest, .npz, medmnist:<flag>, or 'demo' (embedded)."),
        kb: str = typer.Option(None, "--kb", help="Knowledge base (default: the best validated one)."),
        top: int = typer.Option(None, "--top", "-k", min=1, help="Show only the top K sources."),
        wide: bool = typer.Option(False, "--wide", "-w",
                                  help="Also show reasons, weights and loading snippets (wider than 80 columns)."),
        explain: str = typer.Option(None, "--explain", help="Print one candidate's card (KB source, "
                                    "torchvision:W, timm:M, weight file, scratch) and exit."),
        arch: str = typer.Option(None, "--arch", help="With --explain/--verify: architecture of a bare weight file."),
        verify: bool = typer.Option(False, "--verify", help="Then fine-tune the top 4 + scratch (catscans verify)."),
        budget: str = typer.Option("0.25", "--budget", help="With --verify: fraction of full compute or minutes."),
        fmt: Format = FormatOpt,
    ) -> None:
        """Rank a knowledge base's sources for your images: predicted AUC, 80% interval, reasons."""
        from recommender.recommend import RecommendError, recommend

        if explain:  # a candidate's card (recommender.cli._verify)
            from recommender.cli._verify import explain as explain_card

            return explain_card(explain, kb, arch, fmt)
        if target is None:
            raise RecommendError("give --target PATH (or --explain SOURCE for one candidate's card)")
        if target != "demo" and not target.startswith("medmnist:") and not Path(target).exists():
            from imagesets import ImageSetError

            raise ImageSetError(f"no such file or folder: {target}")
        if kb is not None:  # a wrong KB name fails in a second, before the folder is read
            from experiments.knowledge_base import resolve_kb_path
            from recommender.model import models_dir
            from recommender.recommend import RecommendError

            kb_path = resolve_kb_path(kb)
            if not (models_dir() / kb_path.name / "manifest.json").exists():
                raise RecommendError(f"no trained model for KB '{kb}' (run: catscans evaluate-meta --kb {kb})")
        err.print(f"[dim]reading {target} …[/]")
        rec = recommend(target, kb=kb, top=top, progress=fmt == Format.table)
        for w in mixed_folder_warnings(rec.target_card):
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
        payload = rec.to_dict()
        payload["timings_s"] = dict(payload.get("timings_s") or {}, wall=round(wall_time(), 3))
        if verify:  # measure the shortlist; one table of measured and predicted rows
            from recommender.cli._verify import recommend_then_verify

            return recommend_then_verify(rec, payload, budget, arch, fmt, wide=wide)
        emit(fmt, payload, tables={"ranking": _flat(rec.ranking)}, render_table=lambda: _render(rec, wide))


def _flat(ranking: list[dict]) -> pd.DataFrame:
    """One CSV row per source; transferability estimates become tx_<name> columns, similarities
    their own sim_*/dist_* columns, the weights card card_<field> columns (its snippet lines
    joined by ' ; ')."""
    rows = []
    for r in ranking:
        row = {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
        row |= {f"tx_{k}": v for k, v in (r.get("transferability") or {}).items()}
        row |= dict(r.get("similarities") or {})  # sim_* / dist_* by their registry names
        card = r.get("weights_card") or {}
        row |= {f"card_{k}": (" ; ".join(v) if k == "snippet" else v) for k, v in card.items()
                if k in ("kind", "weights", "arch", "input_size", "in_chans", "snippet")}
        rows.append(row)
    return pd.DataFrame(rows)
