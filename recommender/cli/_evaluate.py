"""`catscans evaluate-meta`: nested leave-one-group-out report, correlation report, external scores.

Thin: :mod:`recommender.evaluation` computes and words everything (``loto``, ``verdict``);
this parses options and renders 80-column tables (``--wide`` for every column and row).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recommender.cli._common import (
    FormatOpt,
    df_table,
    emit,
    err,
    fmt_p,
    handle_errors,
    natural_width,
    out,
    print_at_width,
    prose,
)


def _ci(mean: float, lo: float, hi: float, fmt: str = "{:.3f}") -> str:
    from recommender.evaluation.ranking_metrics import format_ci  # no CI below 5 targets

    return format_ci(mean, lo, hi, fmt)


def ranking_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Method × mean metrics with 95% CIs, as display strings."""
    from recommender.evaluation.ranking_metrics import n_used
    from recommender.evaluation.scratch_sign import format_sign

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
        } | ({"sign right [95% CI]": format_sign(d)} if "sign_n" in d else {}))
    return pd.DataFrame(rows)


def sign_table(summary: pd.DataFrame, shown: list[str]) -> pd.DataFrame:
    """The 80-column "is transfer worth it?" table: method, sign right k/n [Wilson 95% CI], τw, regret."""
    from recommender.evaluation.scratch_sign import format_sign

    rows = []
    for r in summary[summary["method"].isin(shown)].itertuples(index=False):
        d = r._asdict()
        if format_sign(d) == "—":
            continue
        rows.append({"method": d["method"], "sign right [95% CI]": format_sign(d),
                     "τw": f"{d['tau_w']:.3f}" if math.isfinite(d["tau_w"]) else "—",
                     "regret": f"{d['regret']:.4f}" if math.isfinite(d["regret"]) else "—"})
    return pd.DataFrame(rows)


def short_method(name: str) -> str:
    """80-column name: 'most_similar:dist_task2vec_asym' → 'nearest:task2vec_asym' (the full name in --wide)."""
    for prefix in ("most_similar:dist_", "most_similar:sim_", "most_similar:"):
        if name.startswith(prefix):
            return "nearest:" + name.removeprefix(prefix)
    return name


def compact_table(summary: pd.DataFrame, shown: list[str]) -> pd.DataFrame:
    """The 80-column ranking table: method, n, τw [95% CI], top-1, mean regret."""
    from recommender.evaluation.ranking_metrics import n_used

    rows = []
    for r in summary[summary["method"].isin(shown)].itertuples(index=False):
        d = r._asdict()
        rows.append({"method": short_method(d["method"]), "n": n_used(d),
                     "τw [95% CI]": _ci(d["tau_w"], d["tau_w_lo"], d["tau_w_hi"]).replace(
                         " (n too small for an interval)", " (no CI)"),
                     "top-1": (f"{d['top1']:.2f}" if d["method"] == "random"
                               else f"{d['top1_count']}/{d['n_targets']}"),
                     "regret": f"{d['regret']:.4f}" if math.isfinite(d["regret"]) else "—"})
    return pd.DataFrame(rows)


def shown_methods(summary: pd.DataFrame, choices: pd.DataFrame, wide: bool) -> list[str]:
    """Every method with --wide; else all but the rank averages no fold chose."""
    methods = list(summary["method"])
    if wide:
        return methods
    chosen = set(choices["method"]) if len(choices) else set()
    return [m for m in methods if not m.startswith("rankavg:") or m in chosen]


def per_target_table(per_target: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Per held-out target: the best source, the picks of shipped and static, their τw and regret."""
    picks = (predictions.sort_values("score", ascending=False, kind="stable")
             .groupby(["method", "target"], sort=False).head(1).set_index(["method", "target"])["source"])
    best = (predictions[predictions["method"] == "static"].sort_values("auc", ascending=False)
            .groupby("target").head(1).set_index("target")["source"])
    pt = per_target.set_index(["method", "target"])
    rows = []
    for t in per_target["target"].drop_duplicates():
        row: dict[str, object] = {"target": t, "n sources": int(pt.loc[("static", t), "n_sources"])
                                  if ("static", t) in pt.index else 0, "best source": best.get(t, "—")}
        for m in ("shipped", "static"):
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
        "Pearson r [95% CI]": c["Pearson r [95% CI]"], "p": c["pearson_p"].map(fmt_p),
        "Spearman ρ": c["spearman_rho"], "p ": c["spearman_p"].map(fmt_p),  # 'p < 0.001', never 0.000
        "Kendall τ": c["kendall_tau"], "p  ": c["kendall_p"].map(fmt_p),
    })


SHORT_OUTCOME = {"auc": "AUC", "gain": "gain", "gain_vs_scratch": "gain"}  # a KB has one kind of gain


def correlation_compact(table: pd.DataFrame, corr: pd.DataFrame) -> pd.DataFrame:
    """The 80-column correlation view: one row per feature (the rows of ``table``), n pairs, and per
    outcome Pearson r with its p (gain: the study's transfer score, or AUC minus scratch's AUC on the
    same target where the KB has scratch and no transfer score);
    the CIs, Spearman and Kendall are in --wide / --format json."""
    keep = list(dict.fromkeys(table["feature"]))
    c = corr[corr["feature"].isin(keep)]
    outcomes = list(dict.fromkeys(c["outcome"]))
    rows = []
    for f in keep:
        g = c[c["feature"] == f].set_index("outcome")
        row: dict[str, str] = {"feature": f, "n": "/".join(dict.fromkeys(str(int(v)) for v in g["n"]))}
        for o in outcomes:
            row[f"r vs {SHORT_OUTCOME.get(o, o)} (p)"] = (
                f"{g.loc[o, 'pearson_r']:+.3f} ({fmt_p(g.loc[o, 'pearson_p'])})"
                if o in g.index and math.isfinite(g.loc[o, "pearson_r"]) else "—")
        rows.append(row)
    return pd.DataFrame(rows)


def register(app: typer.Typer) -> None:
    @app.command("evaluate-meta")
    @handle_errors
    def evaluate_meta(
        kb: str = typer.Option(..., "--kb", help="Knowledge base name (artifacts/kb/<name>) or folder."),
        scores: Path | None = typer.Option(None, "--scores", help="External (source, target) scores: wide CSV or long source,target,score."),
        out_dir: Path | None = typer.Option(None, "--out", help="Write JSON, CSV, PNG figures and report.html here."),
        retune: bool = typer.Option(False, "--retune", help="Rerun the Optuna studies (nested leave-one-group-out) instead of reusing stored ones."),
        trials: int = typer.Option(12, "--trials", min=1, max=200, help="Optuna trials per study when tuning (stored studies are reused while the KB is unchanged)."),
        save: bool | None = typer.Option(None, "--save/--no-save", help="(Re)train and save artifacts/models/<kb> (default: when missing, outdated or --retune)."),
        wide: bool = typer.Option(False, "--wide", "-w", help="Every metric, method and table (wider than 80 columns)."),
        fmt=FormatOpt,  # noqa: ANN001
    ) -> None:
        """Validate the shipped procedure, every candidate and baseline by nested leave-one-group-out;
        compare them paired; measure interval coverage, the noise ceiling and the study agreement."""
        from experiments.knowledge_base import load_kb
        from recommender.evaluation import (
            correlation_report,
            loto,
            scratch_sign,
            summarise,
            verdict,
        )
        from recommender.evaluation.ceiling import noise_ceiling
        from recommender.evaluation.correlation import task2vec_sentences
        from recommender.evaluation.level_report import (
            difficulty_caption,
            difficulty_table,
            level_sentences,
            level_table,
        )
        from recommender.evaluation.ranking_metrics import comparability_notes, n_used
        from recommender.evaluation.reference import agreement_sentences, study_agreement
        from recommender.model import build_meta_dataset, models_dir
        from recommender.verify import replay_report as verify_eval

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
                       "correlation": _records(corr)},
                 {"correlation": corr},
                 lambda: out.print(df_table(correlation_table(corr), title="Correlation with transfer",
                                            floatfmt="{:.3f}")))
            return
        groups = loto.logo_groups(md)
        announced: list[bool] = []

        def on_trial() -> None:
            if not announced:
                announced.append(True)
                err.print(f"tuning: Optuna studies missing or outdated; {trials} trials per outer fold "
                          f"({len(groups)} folds + 1 final, nested leave-one-group-out); this takes minutes")

        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("LOGO folds", total=len(groups))
            seen: list[str] = []

            def step(g: str) -> None:
                bar.update(task, completed=len(seen), description=f"LOGO: held out group {g}")
                seen.append(g)

            result = loto.run_loto(md, retune=retune, n_trials=trials, progress=step, on_trial=on_trial)
            bar.update(task, completed=len(groups))
        level_err = result.level_error()
        lvl_tbl, diff_tbl = level_table(level_err), difficulty_table(level_err)
        per_target = result.per_target
        if external is not None:
            per_target = pd.concat([per_target, external], ignore_index=True)
        scr = scratch_sign.evaluate(kbase, result.predictions)
        from recommender.evaluation import gain_sign, verdict_calls

        vcalls = verdict_calls.evaluate(result.intervals, scr.truth if scr is not None else None)
        vcall_tbl = verdict_calls.table(vcalls)
        cells = gain_sign.cell_signs(result.intervals)
        gsign = gain_sign.summarise(cells, kbase.groups)
        gceil = gain_sign.sign_ceiling(kbase, cells) if gsign else None
        gsign_lines = gain_sign.sentences(gsign, gceil)
        summary = scratch_sign.with_sign(summarise(per_target), scr)
        ver = verify_eval.evaluate(kbase, result.predictions, intervals=result.intervals)  # prior: nested LOGO
        ceiling = noise_ceiling(kbase)
        agreement = study_agreement(kbase)
        model_dir = models_dir() / md.kb_name
        do_save = save if save is not None else (retune or not _current_model(model_dir))
        if do_save:
            err.print(f"choosing and training the shipped model on all {len(md.targets)} targets → {model_dir}")
            loto.train_final(md, result, retune=retune, n_trials=trials,
                             extra={"noise_ceiling": ceiling, "study_agreement": agreement,
                                    "transfer_evidence": verdict_calls.evidence(vcalls, scr, gsign)})
        shipped_now = _shipped_methods(model_dir)
        corr = correlation_report(kbase, md)
        t2v = task2vec_sentences(corr)  # the seed study's similarity, computed here, vs its r −0.11
        n = int(per_target["target"].nunique())
        shipped_row = summary[summary["method"] == "shipped"]
        sentences = [*verdict.verdict_sentences(result, kbase.has_checkpoints, shipped_now),
                     *(verdict.coverage_sentence(result, scen) for scen in result.scenarios),
                     *gsign_lines,
                     *level_sentences(level_err, result.n_candidates),
                     verdict.ceiling_sentence(ceiling, float(shipped_row["tau_w"].iloc[0])
                                              if len(shipped_row) else None),
                     *agreement_sentences(agreement), *t2v,
                     "Random = expected value of a uniformly random ranking (exact except τw: "
                     "mean of 2,000 seeded permutations).", *result.notes,
                     *comparability_notes(summary, per_target)]
        scr_note = scratch_sign.NO_SCRATCH.format(kb=md.kb_name)
        sentences += [*(scr.notes if scr is not None else [scr_note]),
                      *(ver.notes if isinstance(ver, verify_eval.VerifyEval) else [ver])]
        if external is not None:
            ext = summary[summary["method"] == external["method"].iloc[0]].iloc[0]
            sentences.insert(0, f"{scores}: mean τw {_ci(ext['tau_w'], ext['tau_w_lo'], ext['tau_w_hi'])} "
                                f"over {n_used(ext)} targets ([95% bootstrap CI over targets]).")
        shown = shown_methods(summary, result.choices, wide)
        hidden = len(summary) - len(shown)
        rank_tbl = ranking_table(summary[summary["method"].isin(shown)]) if wide else compact_table(summary, shown)
        pt_tbl = per_target_table(result.per_target, result.predictions)
        corr_tbl = correlation_table(corr)
        payload = verdict.payload(result, {
            "n_targets": n, "summary": _records(summary), "per_target": _records(per_target),
            "correlation": _records(corr), "noise_ceiling": ceiling, "study_agreement": agreement,
            "shipped_now": shipped_now, "validated": loto.validated_summary(result), "notes": sentences,
            "task2vec": t2v, "level_error": level_err, "n_candidates": result.n_candidates,
            "verdict_calls": vcalls, "gain_sign_cells": gsign, "gain_sign_ceiling": gceil,
            "scratch": scr.to_dict() if scr is not None else {"note": scr_note},
            "verify_replay": ver.to_dict() if isinstance(ver, verify_eval.VerifyEval) else {"note": ver}})
        tables = {"ranking_summary": summary, "per_target": per_target, "correlation": corr,
                  "fold_choices": result.choices, "comparisons": pd.DataFrame(result.comparisons),
                  "intervals": result.intervals, "level_error": lvl_tbl, "interval_by_difficulty": diff_tbl,
                  "verdict_calls": pd.DataFrame(vcalls),
                  "gain_sign_cells": pd.json_normalize(gsign) if gsign else pd.DataFrame()}
        if scr is not None:
            tables["scratch_truth"] = scr.truth
        sign_tbl = sign_table(summary, shown) if scr is not None else None
        ver_tbl = verify_eval.table(ver) if isinstance(ver, verify_eval.VerifyEval) else None
        if ver_tbl is not None:
            tables["verify_replay"] = ver.summary
            tables["verify_replay_picks"] = ver.picks  # per target: predicted first, verify's pick, moved?
        tables = {k: v for k, v in tables.items() if len(v.columns)}  # a table with no columns has no CSV
        scr_cap = scr.caption() if scr is not None else scr_note
        ver_cap = ver.notes[0] if ver_tbl is not None else ver
        captions = {scr_cap, ver_cap, *gsign_lines}  # the gain-sign table says these
        if out_dir is not None:
            from recommender.evaluation import write_outputs

            boot = "95% bootstrap CI over targets, 2,000 resamples, seed 0"
            display = {  # the terminal's tables, in full (every correlation row), for report.html
                f"Nested leave-one-group-out report: {md.kb_name}, mean over held-out targets": (
                    f"[{boot}]; 'shipped' is what the nested procedure ships per fold.", ranking_table(summary)),
                "Per held-out target": ("τw and regret (AUC) of the shipped procedure and the static "
                                        "ranking on each held-out target, with each one's pick.", pt_tbl),
                f"Correlation with transfer over pooled (source, target) pairs of {md.kb_name}": (
                    "every pair feature and every meta-feature difference; p uncorrected for multiple "
                    "tests.", correlation_table(corr, max_meta=len(corr))),
                "Method chosen per outer fold": (
                    "the method the inner leave-one-group-out chose for each held-out group, and its "
                    "inner mean τw.", result.choices),
            }
            if len(lvl_tbl):
                display["Predicted AUC vs measured (held-out targets)"] = (
                    "mean absolute error per target against the KB's average level, paired over groups.", lvl_tbl)
            if len(diff_tbl):
                display["Interval coverage by halves of the held-out targets"] = (
                    difficulty_caption(result.choices), diff_tbl)
            if scr is not None:
                from recommender.evaluation.report_html import display_frame

                display["Is transfer worth it? Best source vs scratch per held-out target"] = (
                    scr.notes[0], display_frame(scr.truth))
                display["Sign accuracy: does the method call right whether pretraining helps?"] = (
                    scr_cap, sign_table(summary, list(summary["method"])))
            if gsign:
                display["Gain sign per source (held-out cells)"] = (gain_sign.caption(gsign, gceil),
                                                                   gain_sign.table(gsign))
            if ver_tbl is not None:
                display["Verify (replayed from per-seed records)"] = (ver_cap, ver_tbl)
            files = write_outputs(out_dir, kbase, md, payload, tables, per_target, corr, sentences,
                                  display=display)
            err.print(f"wrote {len(files)} files to {out_dir} (report.html is self-contained)")

        title = (f"Nested leave-one-group-out: {md.kb_name}, {n} targets in {result.n_groups} groups, "
                 "mean over held-out targets [95% bootstrap CI over targets, 2,000 resamples, seed 0]")
        cap = ("shipped = the method nested selection chose inside each outer fold (its figure estimates "
               "the whole procedure); other rows: each candidate alone, for reference"
               + ("" if wide or not any(m.startswith("most_similar:") for m in shown) else
                  "; nearest:X = the source most similar to the target by X (most_similar:… in --wide)")
               + (f"; {hidden} rank average{'s' if hidden != 1 else ''} that no fold chose in --wide/--format json" if hidden else ""))

        def render() -> None:
            show = (lambda t: print_at_width(t, natural_width(t))) if wide else out.print
            prose(title, style="bold", highlight=False)
            show(df_table(rank_tbl))
            prose(cap, style="dim", highlight=False)
            if wide:
                prose("Per held-out target (τw, regret in AUC)", style="bold", highlight=False)
                show(df_table(pt_tbl))
                prose("Method chosen per outer fold", style="bold", highlight=False)
                show(df_table(result.choices, floatfmt="{:.3f}"))
            n_meta = int((corr["kind"] == "meta-feature difference").sum())
            prose(f"Correlation with transfer over pooled (source, target) pairs of {md.kb_name}",
                  style="bold", highlight=False)
            show(df_table(corr_tbl if wide else correlation_compact(corr_tbl, corr), floatfmt="{:.3f}"))
            if not wide:
                gain = ("; gain = AUC minus scratch's AUC on the same target"
                        if (corr["outcome"] == "gain_vs_scratch").any() else
                        "; gain = the study's transfer score (AUC gain)" if (corr["outcome"] == "gain").any() else "")
                prose(f"Pearson r (p) over pooled pairs; n = pairs per outcome{gain}; 95% CIs, "
                      "Spearman and Kendall in --wide / --format json", style="dim", highlight=False)
            if n_meta:
                prose(f"meta-feature differences: {min(n_meta, 10)} of {n_meta} rows shown (smallest "
                      "Pearson p; uncorrected for multiple tests); all rows in --format json/--out",
                      style="dim", highlight=False)
            if len(lvl_tbl):
                prose("Predicted AUC vs measured (held-out targets; MAE per target, paired over groups)",
                      style="bold", highlight=False)
                show(df_table(lvl_tbl))
                if len(diff_tbl):
                    show(df_table(diff_tbl))
                    prose(difficulty_caption(result.choices), style="dim", highlight=False)
            for head, tbl, caption, instead in (
                    ("Is transfer worth it? (held-out targets)", sign_tbl, scr_cap, scr_note),
                    ("Verify (replayed from per-seed records)", ver_tbl, ver_cap, ver)):
                if tbl is not None:  # a titled table and its caption, or one line saying why not
                    prose(head, style="bold", highlight=False)
                    show(df_table(tbl))
                prose(caption if tbl is not None else instead, style="dim", highlight=False)
                if tbl is sign_tbl and len(vcall_tbl):
                    prose("The verdict's three outcomes (held-out targets)", style="bold", highlight=False)
                    show(df_table(vcall_tbl))
                    prose(verdict_calls.CAPTION, style="dim", highlight=False)
                if tbl is sign_tbl and gsign:
                    prose("Gain sign per source (held-out cells)", style="bold", highlight=False)
                    show(df_table(gain_sign.table(gsign)))
                    prose(gain_sign.caption(gsign, gceil), style="dim", highlight=False)
            for s in sentences:
                if not any(s in c for c in captions):  # printed under its table already
                    prose(s, highlight=False)

        emit(fmt, payload, tables, render)


def _records(df: pd.DataFrame) -> list[dict]:
    from recommender.evaluation.records import json_records

    return json_records(df)


def _current_model(model_dir: Path) -> bool:
    """A saved model in the current (nested-selection) format."""
    import json

    try:
        return json.loads((model_dir / "manifest.json").read_text()).get("format") == 2
    except (OSError, ValueError):
        return False


def _shipped_methods(model_dir: Path) -> dict[str, str] | None:
    """scenario → method of the saved model, or None when there is none in the current format."""
    import json

    if not _current_model(model_dir):
        return None
    man = json.loads((model_dir / "manifest.json").read_text())
    return {k: v.get("method", "?") for k, v in (man.get("shipped") or {}).items()}
