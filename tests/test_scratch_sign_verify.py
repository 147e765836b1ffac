"""Is transfer worth it (sign accuracy, the scratch baseline) and verify replayed in evaluate-meta,
on synthetic KBs whose truth is known: scratch wins on some targets, loses on others."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _synthetic_kb import synthetic_kb as toy_kb
from typer.testing import CliRunner

from experiments.knowledge_base import SCRATCH, KnowledgeBase, load_kb, save_kb
from recommender.cli import app
from recommender.evaluation import scratch_sign
from recommender.evaluation.ranking_metrics import rank_metrics
from recommender.verify import replay_report as verify_eval
from recommender.verify.replay import synthetic_kb as replay_kb_synth

runner = CliRunner()
SOURCES = ["s0", "s1", "s2", "s3"]
# target -> scratch's offset from the best source: > 0 scratch wins, < 0 pretraining helps
OFFSETS = {"t0": +0.05, "t1": +0.04, "t2": -0.05, "t3": -0.04, "t4": -0.06, "t5": -0.03}


def known_kb(seeds: int = 10, noise: float = 0.003) -> KnowledgeBase:
    """Sources s0..s3 (s0 best everywhere) + scratch, offset from s0 by OFFSETS, small seed noise."""
    rng = np.random.default_rng(1)
    recs = []
    for t, off in OFFSETS.items():
        base = {s: 0.80 - 0.01 * i for i, s in enumerate(SOURCES)} | {SCRATCH: 0.80 + off}
        for s, mu in base.items():
            for k in range(seeds):
                recs.append({"source": s, "target": t, "metric": "roc_auc", "fold": -1, "seed": k,
                             "value": mu + rng.normal(0, noise)})
    names = SOURCES + [SCRATCH] + list(OFFSETS)
    man = {"name": "known", "metric": "roc_auc", "sources": SOURCES + [SCRATCH], "targets": list(OFFSETS)}
    return KnowledgeBase("known", pd.DataFrame(recs), pd.DataFrame({"name": names}), man)


def predictions(kb: KnowledgeBase, scorers: dict) -> pd.DataFrame:
    """method, target, source, score, auc rows: scorers[method](source, auc) -> score."""
    m = kb.matrix()
    rows = []
    for t in OFFSETS:
        for s in m[t].dropna().index:
            for name, f in scorers.items():
                rows.append({"method": name, "target": t, "source": s, "score": f(s, m.loc[s, t]),
                             "auc": m.loc[s, t]})
    return pd.DataFrame(rows)


def test_truth_and_sign_accuracy_on_known_targets() -> None:
    kb = known_kb()
    static_order = {"s0": 4.0, "s1": 3.0, "s2": 2.0, "s3": 1.0, SCRATCH: 0.5}
    pred = predictions(kb, {
        "scratch_last": lambda s, a: -1.0 if s == SCRATCH else float(np.random.default_rng(len(s)).normal()),
        "oracle": lambda s, a: a,
        "static": lambda s, a: static_order[s],
    })
    pred = pd.concat([pred, scratch_sign.scratch_baseline_rows(pred)], ignore_index=True)
    ev = scratch_sign.evaluate(kb, pred)
    assert ev is not None
    truth = ev.truth.set_index("target")
    assert truth.loc["t0", "truth"] == "hurts" and truth.loc["t2", "truth"] == "helps"
    assert ev.breakdown() == {"helps": 4, "no detectable difference": 0, "hurts": 2}
    n_helps = int(truth["helps"].sum())
    assert n_helps == 4
    sign = ev.sign.set_index("method")
    # always "pretraining helps" is right exactly where it helps
    assert sign.loc["scratch_last", "sign_k"] == n_helps and sign.loc["scratch_last", "sign_n"] == 6
    assert sign.loc["oracle", "sign_k"] == 6
    assert sign.loc["scratch", "sign_k"] == 6 - n_helps  # scratch first: "never helps"
    lo, hi = sign.loc["scratch_last", "sign_lo"], sign.loc["scratch_last", "sign_hi"]
    assert lo < 4 / 6 < hi and 0 <= lo and hi <= 1
    # the scratch baseline: scratch first, then static's order; regret = best AUC - scratch AUC
    base = pred[pred["method"] == "scratch"]
    for _t, g in base.groupby("target"):
        assert g.loc[g["score"].idxmax(), "source"] == SCRATCH
        rest = g[g["source"] != SCRATCH].sort_values("score", ascending=False)["source"].tolist()
        assert rest == ["s0", "s1", "s2", "s3"]
        m = rank_metrics(g["score"].to_numpy(), g["auc"].to_numpy())
        aucs = g.set_index("source")["auc"]
        assert m["regret"] == pytest.approx(aucs.max() - aucs[SCRATCH])
        assert np.isfinite(m["tau_w"])


def test_no_scratch_means_no_sign() -> None:
    kb = known_kb()
    pred = predictions(kb, {"static": lambda s, a: a})
    pred = pred[pred["source"] != SCRATCH]
    assert not scratch_sign.has_scratch(pred)
    assert scratch_sign.evaluate(kb, pred) is None
    assert scratch_sign.scratch_baseline_rows(pred).empty
    s = pd.DataFrame({"method": ["static"], "tau_w": [0.5]})
    assert list(scratch_sign.with_sign(s, None).columns) == ["method", "tau_w"]


def test_wilson_interval() -> None:
    lo, hi = scratch_sign.wilson(16, 16)
    assert hi == 1.0 and 0.78 < lo < 0.82  # Wilson 16/16: [0.806, 1]
    lo, hi = scratch_sign.wilson(8, 16)
    assert lo == pytest.approx(0.2800, abs=1e-3) and hi == pytest.approx(0.7200, abs=1e-3)
    assert all(np.isnan(v) for v in scratch_sign.wilson(0, 0))


def test_verify_rows_ordered_by_budget_against_truth_seeds() -> None:
    kb = replay_kb_synth(n_targets=8, n_sources=6, n_seeds=10)
    m = kb.matrix()
    rows = [{"method": "static", "target": t, "source": s, "score": -i, "auc": m.loc[s, t]}
            for t in kb.targets for i, s in enumerate(m[t].dropna().index)]
    ev = verify_eval.evaluate(kb, pd.DataFrame(rows), budgets=(1.0, 0.25, 0.5))
    assert isinstance(ev, verify_eval.VerifyEval)
    s = ev.summary
    v = s[s["kind"] == "verify"]
    assert list(v["row"]) == ["verify@25%", "verify@50%", "verify@100%"]
    assert v["compute"].is_monotonic_increasing and v["compute"].iloc[-1] == pytest.approx(1.0)
    assert (v["compute"].iloc[0] <= 0.25 + 1e-9)
    assert "static" in set(s["row"]) and (s["kind"] == "best est. (post hoc)").sum() == 1
    assert (s["n_targets"] == 8).all() and (s["lo"] <= s["mean_regret"]).all()
    assert (s["mean_regret"] <= s["hi"]).all()
    assert ev.verify_seeds == [0, 1, 2, 3, 4] and ev.truth_seeds == [5, 6, 7, 8, 9]
    c = ev.comparison
    assert c["a"] == "verify@25%" and c["n"] == 4 and c["unit"] == "groups"  # g0..g3
    assert {"mean_diff", "lo", "hi", "p", "words"} <= set(c)
    assert "met" in ev.goal and ev.goal["n_targets"] == 8
    tbl = verify_eval.table(ev)
    assert list(tbl.columns) == ["method", "kind", "compute", "regret [95% CI]"]


def test_verify_needs_twice_k_seeds() -> None:
    kb = replay_kb_synth(n_targets=4, n_sources=3, n_seeds=6)
    note = verify_eval.evaluate(kb, pd.DataFrame(columns=["method", "target", "source", "score", "auc"]))
    assert isinstance(note, str) and "6 seed(s)" in note


def with_scratch(kb: KnowledgeBase, wins: tuple[str, ...]) -> KnowledgeBase:
    """``kb`` plus a scratch source: 0.05 above every source on ``wins``, 0.05 below elsewhere."""
    r = kb.records
    best = r.groupby(["target", "source"])["value"].mean().groupby("target").max()
    add = []
    rng = np.random.default_rng(3)
    for t in kb.targets:
        mu = best[t] + (0.05 if t in wins else -0.05)
        for k in sorted(r["seed"].unique()):
            add.append({"source": SCRATCH, "target": t, "metric": "roc_auc", "fold": -1, "seed": int(k),
                        "value": mu + rng.normal(0, 0.003)})
    man = dict(kb.manifest, sources=[*kb.manifest["sources"], SCRATCH])
    return KnowledgeBase(kb.name, pd.concat([r, pd.DataFrame(add)], ignore_index=True), kb.datasets, man,
                         pair_features=kb.pair_features)


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scr")
    base = toy_kb(n_targets=6, seeds=10, estimates=False, similarity=False, name="scr")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CATSCANS_ARTIFACTS", str(tmp / "artifacts"))
        mp.setenv("COLUMNS", "80")
        save_kb(with_scratch(base, ("t4", "t5")), tmp / "artifacts" / "kb" / "scr")
        js = runner.invoke(app, ["evaluate-meta", "--kb", "scr", "--trials", "1", "--no-save",
                                 "--format", "json", "--out", str(tmp / "out")])
        tbl = runner.invoke(app, ["evaluate-meta", "--kb", "scr", "--trials", "1", "--no-save"])
        csv = runner.invoke(app, ["evaluate-meta", "--kb", "scr", "--trials", "1", "--no-save",
                                  "--format", "csv"])
        yield tmp, js, tbl, csv


def test_cli_reports_sign_scratch_baseline_and_verify(scratch_run) -> None:
    tmp, js, tbl, csv = scratch_run
    assert js.exit_code == 0, js.output
    p = json.loads(js.stdout)
    summ = {r["method"]: r for r in p["summary"]}
    assert "scratch" in summ and summ["scratch"]["sign_n"] == 6
    assert summ["scratch"]["sign_k"] == 2  # scratch first: right exactly where scratch wins
    assert p["scratch"]["breakdown"] == {"helps": 4, "no detectable difference": 0, "hurts": 2}
    per = {(r["method"], r["target"]): r for r in p["per_target"]}
    truth = {r["target"]: r for r in p["scratch"]["truth"]}
    for t, tr in truth.items():
        assert per[("scratch", t)]["regret"] == pytest.approx(max(tr["best_auc"], tr["scratch_auc"])
                                                              - tr["scratch_auc"], abs=1e-9)
    rows = [r["row"] for r in p["verify_replay"]["summary"]]
    assert rows[-3:] == ["verify@25%", "verify@50%", "verify@100%"] and "shipped" in rows
    assert (tmp / "out" / "budget_vs_regret.png").stat().st_size > 1000
    html = (tmp / "out" / "report.html").read_text()
    assert "Verify (replayed" in html and "Is transfer worth it?" in html and "Gain sign per source" in html
    assert tbl.exit_code == 0, tbl.output
    assert "Is transfer worth it?" in tbl.stdout and "Verify (replayed from per-seed records)" in tbl.stdout
    sign_part = tbl.stdout.split("Is transfer worth it?", 1)[1].split("Verify (replayed", 1)[0]
    assert "sign right" in sign_part and "2/6 [" in sign_part  # the table itself, not only its title
    wide = [ln for ln in tbl.stdout.splitlines() if len(ln) > 80]
    assert not wide, wide
    assert csv.exit_code == 0, csv.output
    assert "# table: scratch_truth" in csv.stdout and "# table: verify_replay" in csv.stdout
    # the gain sign per held-out cell: every non-scratch source on each of the 6 targets, once per scenario
    rec = load_kb(tmp / "artifacts" / "kb" / "scr").records
    n_cells = len(rec.loc[rec["source"] != SCRATCH, ["source", "target"]].drop_duplicates())
    gs = p["gain_sign_cells"]
    assert [r["scenario"] for r in gs] == ["any"]  # this KB has no estimates
    assert gs[0]["n_targets"] == 6 and gs[0]["n_cells"] == n_cells - 4  # twins (t0↔t1, t2↔t3) are no source of each other's held-out cells
    assert p["gain_sign_ceiling"]["n"] == gs[0]["n_cells"]
    assert "Gain sign per source (held-out cells)" in tbl.stdout and "# table: gain_sign_cells" in csv.stdout


def test_cli_without_scratch_or_seeds_gives_notes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(tmp_path / "artifacts"))
    save_kb(toy_kb(n_targets=5, seeds=4, estimates=False, similarity=False, name="plain"),
            tmp_path / "artifacts" / "kb" / "plain")
    res = runner.invoke(app, ["evaluate-meta", "--kb", "plain", "--trials", "1", "--no-save",
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    p = json.loads(res.stdout)
    assert "no 'scratch' source" in p["scratch"]["note"]
    assert "4 seed(s)" in p["verify_replay"]["note"]
    assert all("sign" not in r for r in p["summary"])
    assert "scratch" not in {r["method"] for r in p["summary"]}
