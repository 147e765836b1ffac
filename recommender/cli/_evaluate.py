"""`catscans evaluate-meta`: LOTO ranking report, correlation report, external score tables."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recommender.cli._common import FormatOpt, df_table, emit, err, handle_errors, out


def _ci(mean: float, lo: float, hi: float, fmt: str = "{:.3f}") -> str:
    from recommender.evaluation.ranking_metrics import format_ci  # no CI below 5 targets

    return format_ci(mean, lo, hi, fmt)


def ranking_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Method × mean metrics with 95% CIs, as display strings."""
    from recommender.evaluation.ranking_metrics import n_used

    rows = []
    for r in summary.itertuples(index=False):
        d = r._asdict()
        rows.append({
            "method": d["method"], "n targets": n_used(d),  # 'used/total' when some τw are NaN
            "τw": _ci(d["tau_w"], d["tau_w_lo"], d["tau_w_hi"]),
            "Kendall τ": f"{d['kendall']:.3f}",
            "Spearman ρ": f"{d['spearman']:.3f}",
            "top-1": (f"{d['top1']:.2f} (expected)" if d["method"] == "random"
                      else f"{d['top1_count']}/{d['n_targets']}"),
            "top-3 hit": f"{d['top3']:.2f}",
            "regret (AUC)": _ci(d["regret"], d["regret_lo"], d["regret_hi"], "{:.4f}"),
            "NDCG@3": _ci(d["ndcg3"], d["ndcg3_lo"], d["ndcg3_hi"]),
        })
    return pd.DataFrame(rows)


def per_target_table(per_target: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Per held-out target: the best source, the picks of meta and static, their τw and regret."""
    picks = (predictions.sort_values("score", ascending=False, kind="stable")
             .groupby(["method", "target"], sort=False).head(1).set_index(["method", "target"])["source"])
    best = (predictions[predictions["method"] == "static"].sort_values("auc", ascending=False)
            .groupby("target").head(1).set_index("target")["source"])
    pt = per_target.set_index(["method", "target"])
    rows = []
    for t in per_target["target"].drop_duplicates():
        row: dict[str, object] = {"target": t, "n sources": int(pt.loc[("static", t), "n_sources"])
                                  if ("static", t) in pt.index else 0, "best source": best.get(t, "—")}
        for m in ("meta", "static"):
            row[f"{m} pick"] = picks.get((m, t), "—")
            row[f"{m} τw"] = float(pt.loc[(m, t), "tau_w"]) if (m, t) in pt.index else math.nan
            row[f"{m} regret"] = float(pt.loc[(m, t), "regret"]) if (m, t) in pt.index else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def correlation_table(corr: pd.DataFrame, max_meta: int = 10) -> pd.DataFrame:
    """Display rows: every pair feature, then the ``max_meta`` meta-feature differences with smallest p."""
    meta = corr["kind"] == "meta-feature difference"
    c = pd.concat([corr[~meta], corr[meta].sort_values("pearson_p").head(max_meta)])
    c["Pearson r [95% CI]"] = [_ci(r, lo, hi) for r, lo, hi in
                              zip(c["pearson_r"], c["pearson_lo"], c["pearson_hi"], strict=True)]
    return pd.DataFrame({
        "feature": c["feature"], "kind": c["kind"], "vs": c["outcome"], "n pairs": c["n"].astype(str),
        "Pearson r [95% CI]": c["Pearson r [95% CI]"], "p": c["pearson_p"],
        "Spearman ρ": c["spearman_rho"], "p ": c["spearman_p"],
        "Kendall τ": c["kendall_tau"], "p  ": c["kendall_p"],
    })


def verdict_sentence(kb: str, v: dict, n: int, shipped: str | None) -> str:
    if v.get("beat_static"):
        s = (f"On {kb} the meta-model beat the static ranking under LOTO over {n} targets "
             f"(mean τw {v['meta_tau_w']:.3f} vs {v['static_tau_w']:.3f}; mean regret "
             f"{v['meta_regret']:.4f} vs {v['static_regret']:.4f} AUC).")
    elif "meta_tau_w" in v:
        s = (f"On {kb} the meta-model did NOT beat the static ranking under LOTO over {n} targets "
             f"(mean τw {v['meta_tau_w']:.3f} vs {v['static_tau_w']:.3f}; mean regret "
             f"{v['meta_regret']:.4f} vs {v['static_regret']:.4f} AUC; rule: higher τw and regret "
             "no worse).")
    else:
        s = f"On {kb} no verdict: {v.get('reason', 'unknown')}."
    if shipped:
        s += f" `recommend` uses: {shipped}."
    return s


def register(app: typer.Typer) -> None:
    @app.command("evaluate-meta")
    @handle_errors
    def evaluate_meta(
        kb: str = typer.Option(..., "--kb", help="Knowledge base name (artifacts/kb/<name>) or folder."),
        scores: Path | None = typer.Option(None, "--scores", help="External (source, target) scores: wide CSV or long source,target,score."),
        out_dir: Path | None = typer.Option(None, "--out", help="Write JSON, CSV, PNG figures and report.html here."),
        retune: bool = typer.Option(False, "--retune", help="Rerun the Optuna studies (nested LOTO) instead of reusing stored ones."),
        trials: int = typer.Option(30, "--trials", min=1, max=200, help="Optuna trials per study when tuning."),
        save: bool | None = typer.Option(None, "--save/--no-save", help="(Re)train and save artifacts/models/<kb> (default: when missing or --retune)."),
        fmt=FormatOpt,  # noqa: ANN001
    ) -> None:
        """Validate the meta-model and every baseline leave-one-target-out; correlate features with transfer."""
        from experiments.knowledge_base import load_kb
        from recommender.evaluation import correlation_report, loto, summarise, tuning
        from recommender.evaluation.ranking_metrics import comparability_notes, n_used
        from recommender.model import build_meta_dataset, models_dir

        kbase = load_kb(kb)
        md = build_meta_dataset(kbase)
        external = None
        if scores is not None:
            table = loto.load_score_table(scores)
            external = loto.evaluate_external(md, table, name=f"scores:{scores.name}")
        if len(md.targets) < 2:
            corr = correlation_report(kbase, md)
            note = (f"{md.kb_name} has {len(md.targets)} target: leave-one-target-out needs at least 2, "
                    "so only the correlation report is shown")
            err.print(note)
            emit(fmt, {"kb": md.kb_name, "n_targets": len(md.targets), "notes": [note],
                       "correlation": corr.astype(object).where(corr.notna(), None).to_dict("records")},
                 {"correlation": corr},
                 lambda: out.print(df_table(correlation_table(corr), title="Correlation with transfer",
                                            floatfmt="{:.3f}")))
            return
        targets = loto.logo_folds(md)
        stored = all(tuning.load_study(md.kb_name, t) is not None for t in targets)
        tuning_now = retune or not stored
        if tuning_now:
            err.print(f"tuning: {len(targets)} outer folds × {trials} Optuna trials (nested LOTO); "
                      "this takes minutes")
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("LOTO folds", total=len(targets))

            seen: list[str] = []

            def step(t: str) -> None:
                bar.update(task, completed=len(seen), description=f"LOTO: held out {t}")
                seen.append(t)

            result = loto.run_loto(md, retune=tuning_now, n_trials=trials, progress=step)
            bar.update(task, completed=len(targets))
        per_target = result.per_target
        if external is not None:
            per_target = pd.concat([per_target, external], ignore_index=True)
        summary = summarise(per_target)
        model_dir = models_dir() / md.kb_name
        do_save = save if save is not None else (retune or not (model_dir / "manifest.json").exists())
        if do_save:
            err.print(f"training the final model on all {len(md.targets)} targets → {model_dir}")
            loto.train_final(md, result, retune=retune, n_trials=trials)
        validated = loto.validated_summary(result)
        corr = correlation_report(kbase, md)
        n = int(per_target["target"].nunique())
        sentences = [verdict_sentence(md.kb_name, result.verdict(), result.per_target["target"].nunique(),
                                      validated["method"]),
                     f"80% AUC band of the meta regressor covered {result.coverage80:.0%} of "
                     f"{result.n_cells} held-out cells.",
                     "Random = expected value of a uniformly random ranking (exact except τw: "
                     "mean of 2,000 seeded permutations).", *result.notes,
                     *comparability_notes(summary, per_target)]
        if external is not None:
            ext = summary[summary["method"] == external["method"].iloc[0]].iloc[0]
            sentences.insert(0, f"{scores}: mean τw {_ci(ext['tau_w'], ext['tau_w_lo'], ext['tau_w_hi'])} "
                                f"over {n_used(ext)} targets ([95% bootstrap CI over targets]).")
        rank_tbl, pt_tbl, corr_tbl = (ranking_table(summary),
                                      per_target_table(result.per_target, result.predictions),
                                      correlation_table(corr))
        def rec(df: pd.DataFrame) -> list[dict]:
            return df.astype(object).where(df.notna(), None).to_dict(orient="records")

        payload = {"kb": md.kb_name, "n_targets": n, "summary": rec(summary),
                   "per_target": rec(per_target), "correlation": rec(corr),
                   "verdict": result.verdict(), "validated": validated,
                   "fold_choices": rec(result.choices), "coverage80": result.coverage80,
                   "notes": sentences}
        tables = {"ranking_summary": summary, "per_target": per_target, "correlation": corr,
                  "fold_choices": result.choices}
        if out_dir is not None:
            from recommender.evaluation import write_outputs

            files = write_outputs(out_dir, kbase, md, payload, tables, per_target, corr, sentences)
            err.print(f"wrote {len(files)} files to {out_dir} (report.html is self-contained)")

        if not out.is_terminal:  # piped or captured: do not squeeze the tables to 80 columns
            out.width = max(out.width, 200)
        width = out.width

        def render() -> None:
            out.print(df_table(rank_tbl, title=f"LOTO ranking report: {md.kb_name}, mean over held-out "
                               "targets [95% bootstrap CI over targets, 2,000 resamples, seed 0]"), width=width)
            out.print(df_table(pt_tbl, title="Per held-out target (τw, regret in AUC)"), width=width)
            n_meta = int((corr["kind"] == "meta-feature difference").sum())
            cap = (f"meta-feature differences: {min(n_meta, 10)} of {n_meta} rows shown (smallest "
                   "Pearson p; uncorrected for multiple tests); all rows in --format json/--out")
            out.print(df_table(corr_tbl, title=f"Correlation with transfer over pooled "
                               f"(source, target) pairs of {md.kb_name}", caption=cap if n_meta else None,
                               floatfmt="{:.3f}"), width=width)
            for s in sentences:
                out.print(s, highlight=False, width=width)

        emit(fmt, payload, tables, render)
