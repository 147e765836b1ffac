"""Verify's budget vs regret, replayed on a KB's per-seed records, beside the methods that do not fine-tune.

Run by hand: ``.venv/bin/python benchmarks/verify_budget.py [--kb local] [--synthetic]``.
Each record of a (source, target, seed) is one full fine-tune, so verify's successive halving
is replayed over seeds (round 1: one seed per shortlisted candidate; the better half of the
sources gets more seeds). Verify sees only ``--verify-seeds`` (default 0-4); the truth is the
mean over the disjoint ``--truth-seeds`` (default 5-9), and every method's regret is measured
against it. Static ranking: leave-one-group-out. Estimators: per-target numbers, no fitting;
the best non-probing method is picked after the fact (which favours it). ``--shipped`` also
runs the nested leave-one-group-out (``run_loto``, stored Optuna studies; ~20 s on KB local)
and scores its held-out ``shipped``/``shipped+est`` rankings against the same truth seeds.
Goal: at <= 25% of full compute, verify's mean regret <= half that of the
best non-probing method, over >= 6 held-out targets. Compute = fine-tunes run / (shortlist x
verify seeds). Intervals: 95% bootstrap over held-out groups (2,000 resamples).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import load_kb  # noqa: E402
from recommender.verify.replay import paired, replay_kb, synthetic_kb  # noqa: E402


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in text.split(",")]


def _shipped_scores(kb) -> dict:  # noqa: ANN001 - a KnowledgeBase
    """target -> {shipped, shipped+est} -> held-out scores over sources, from run_loto."""
    from recommender.evaluation import run_loto
    from recommender.model import build_meta_dataset

    pred = run_loto(build_meta_dataset(kb)).predictions
    pred = pred[pred["method"].isin(["shipped", "shipped+est"])]
    out: dict = {}
    for (m, t), g in pred.groupby(["method", "target"]):
        out.setdefault(t, {})[m] = g.set_index("source")["score"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", default="local")
    ap.add_argument("--synthetic", action="store_true", help="A synthetic KB (16 targets, 12 sources, 10 seeds).")
    ap.add_argument("--budgets", default="0.2,0.25,0.5,1")
    ap.add_argument("--verify-seeds", default="0-4")
    ap.add_argument("--truth-seeds", default="5-9")
    ap.add_argument("--top", type=int, default=4)
    ap.add_argument("--shortlists", default="static,best,all")
    ap.add_argument("--shipped", action="store_true",
                    help="Also score the LOTO shipped rows (runs the nested leave-one-group-out).")
    ap.add_argument("--json", type=Path, help="Also write the per-target table and summary here.")
    a = ap.parse_args()
    kb = synthetic_kb(16, 12, 10) if a.synthetic else load_kb(a.kb)
    budgets = [float(b) for b in a.budgets.split(",")]
    extra = _shipped_scores(kb) if a.shipped else None
    res = replay_kb(kb, budgets, _seeds(a.verify_seeds), _seeds(a.truth_seeds), a.top,
                    tuple(a.shortlists.split(",")), extra_scores=extra)
    s, df, best = res["summary"], res["per_target"], res["best_non_probing"]
    n_t, n_g = int(s["n_targets"].max()), int(s["n_groups"].max())
    print(f"KB {kb.name}: {n_t} held-out targets in {n_g} groups; verify seeds {a.verify_seeds}, truth = mean over "
          f"seeds {a.truth_seeds}; shortlist = top {a.top} + scratch")
    print(f"{'method':34s} {'compute':>8s} {'mean regret [95% CI over groups]':>34s}")
    for r in s.itertuples():
        tag = "  <- best non-probing (post hoc)" if r.method == best else ""
        print(f"{r.method:34s} {r.compute:8.0%} {r.mean_regret:10.4f} [{r.lo:.4f}, {r.hi:.4f}]{tag}")
    print(f"\npaired, verify − {best} (regret; negative = verify better), mean [95% CI], Wilcoxon p, n:")
    met = []
    for r in s.itertuples():
        if not r.method.startswith("verify"):
            continue
        p = paired(df, r.method, best)
        ok = r.compute <= 0.25 + 1e-9 and n_t >= 6 and r.mean_regret <= 0.5 * float(s.loc[s.method == best,
                                                                                             "mean_regret"].iloc[0])
        if r.compute <= 0.25 + 1e-9:
            met.append((r.method, ok))
        pstr = "—" if p["wilcoxon_p"] is None else f"{p['wilcoxon_p']:.2g}"
        print(f"  {r.method:32s} {p['diff']:+.4f} [{p['lo']:+.4f}, {p['hi']:+.4f}]  p {pstr}  n {p['n']}")
    base = float(s.loc[s.method == best, "mean_regret"].iloc[0])
    print(f"\ngoal: at <= 25% compute, verify's mean regret <= {0.5 * base:.4f} (half of {best}'s {base:.4f}), "
          f">= 6 targets:")
    for m, ok in met:
        print(f"  {m}: {'met' if ok else 'NOT met'}")
    if a.json:
        a.json.write_text(json.dumps({"summary": s.to_dict("records"), "per_target": df.to_dict("records"),
                                      "best_non_probing": best}, indent=2, default=float))


if __name__ == "__main__":
    main()
