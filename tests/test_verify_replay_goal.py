"""The goal words of verify's replay in ``evaluate-meta``: each "met / not met" follows the
numbers it prints, and the 'detectably worse at …' list names exactly the budgets whose paired
comparison says worse. A goal sentence that said "met" regardless would pass every other test."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from recommender.verify import replay_report as rr
from recommender.verify.replay import synthetic_kb


def _summary(regrets: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """rows: method → (mean regret, compute); row label = method (verify@f rows use their label)."""
    return pd.DataFrame({"row": list(regrets), "method": list(regrets),
                         "mean_regret": [v[0] for v in regrets.values()],
                         "compute": [v[1] for v in regrets.values()]})


def _cmp(a: str, words: str, b: str = "shipped+est") -> dict:
    return {"a": a, "b": b, "metric": "regret", "mean_diff": 0.001, "lo": -0.002, "hi": 0.004, "p": 0.4,
            "n": 12, "unit": "groups", "n_targets": 14, "words": words}


def test_first_goal_met_only_when_never_worse_and_below_at_full_compute() -> None:
    s = _summary({"shipped+est": (0.010, 0.0), "verify@25%": (0.011, 0.25), "verify@100%": (0.008, 1.0)})
    ok = rr._goal_sentences(s, [_cmp("verify@25%", "no detectable difference"),
                                _cmp("verify@100%", "no detectable difference")], "shipped+est", {}, {}, None)
    assert ok == ["Goal: verify, at every budget, not detectably worse than the prediction it starts from "
                  "(shipped+est), and at 100% a mean regret below it: met — not detectably worse at any "
                  "budget; at 100% 0.0080 vs 0.0100."]
    worse = rr._goal_sentences(s, [_cmp("verify@25%", "worse"), _cmp("verify@100%", "no detectable difference")],
                               "shipped+est", {}, {}, None)
    assert ": not met — detectably worse at verify@25%; at 100% 0.0080 vs 0.0100." in worse[0]
    above = _summary({"shipped+est": (0.010, 0.0), "verify@100%": (0.012, 1.0)})
    not_below = rr._goal_sentences(above, [_cmp("verify@100%", "no detectable difference")], "shipped+est",
                                   {}, {}, None)
    assert ": not met — not detectably worse at any budget; at 100% 0.0120 vs 0.0100." in not_below[0]
    equal = _summary({"shipped+est": (0.010, 0.0), "verify@100%": (0.010, 1.0)})
    assert ": not met" in rr._goal_sentences(equal, [_cmp("verify@100%", "better")], "shipped+est",
                                             {}, {}, None)[0]  # equal is not below
    no_full = _summary({"shipped+est": (0.010, 0.0), "verify@25%": (0.005, 0.25)})
    nf = rr._goal_sentences(no_full, [_cmp("verify@25%", "better")], "shipped+est", {}, {}, None)
    assert nf[0].endswith(": not met — not detectably worse at any budget; no 100% row.")
    assert rr._goal_sentences(s, [], "shipped+est", {}, {}, None) == []  # no verify rows, no goal


def test_second_goal_words_follow_the_goal_dict() -> None:
    s = _summary({"shipped+est": (0.010, 0.0), "posterior[shipped+est]@0.25": (0.004, 0.2)})
    goal = {"met": True, "verify_row": "verify@25%", "verify_regret": 0.004, "best_non_probing": "hscore",
            "best_non_probing_regret": 0.009, "n_targets": 28}
    comp = _cmp("verify@25%", "better", b="estimate:hscore") | {"note": "post hoc"}
    out = rr._goal_sentences(s, [], "shipped+est", comp, goal, "posterior[shipped+est]@0.25")
    assert out[0].startswith("verify@25% vs estimate:hscore: Δregret +0.0010") and out[0].endswith("(post hoc).")
    assert out[1] == ("Goal: verify at ≤ 25% compute with at most half the mean regret of the best non-probing "
                      "method, over ≥ 6 targets: met — verify@25% at 20% compute 0.0040 vs half of hscore's "
                      "0.0090 = 0.0045, n = 28 targets.")
    assert ": not met —" in rr._goal_sentences(s, [], "shipped+est", comp, goal | {"met": False},
                                               "posterior[shipped+est]@0.25")[1]
    # when the best non-probing method is the shortlist itself its comparison is printed elsewhere
    same = rr._goal_sentences(s, [], "shipped+est", comp | {"b": "shipped+est"}, goal, "posterior[shipped+est]@0.25")
    assert len(same) == 1 and same[0].startswith("Goal: verify at ≤ 25% compute")


@pytest.mark.parametrize("seed", [0, 3])
def test_replayed_goal_agrees_with_the_figures_it_reports(seed: int) -> None:
    kb = synthetic_kb(n_targets=8, n_sources=6, n_seeds=10, seed=seed)
    m = kb.matrix()
    rows = [{"method": "static", "target": t, "source": s, "score": -i, "auc": m.loc[s, t]}
            for t in kb.targets for i, s in enumerate(m[t].dropna().index)]
    ev = rr.evaluate(kb, pd.DataFrame(rows), budgets=(0.25, 1.0))
    g, df = ev.goal, ev.per_target
    assert g["best_non_probing_regret"] == pytest.approx(float(df[g["best_non_probing"]].mean()))
    non_probing = [c for c in df.columns if c not in ("target", "group") and not c.startswith(("verify", "posterior"))
                   and df[c].notna().all()]
    assert g["best_non_probing_regret"] == pytest.approx(min(float(df[c].mean()) for c in non_probing))
    assert g["n_targets"] == 8 and g["met"] == (g["verify_regret"] <= 0.5 * g["best_non_probing_regret"])
    goal_note = [n for n in ev.notes if n.startswith("Goal: verify at ≤ 25%")]
    assert len(goal_note) == 1 and (": met —" in goal_note[0]) == g["met"]
    first = [n for n in ev.notes if n.startswith("Goal: verify, at every budget")]
    full = float(ev.summary.loc[ev.summary["row"] == "verify@100%", "mean_regret"].iloc[0])
    ref = float(ev.summary.loc[ev.summary["method"] == "static", "mean_regret"].iloc[0])
    worse = [c["a"] for c in ev.comparisons if c["a"].startswith("verify@") and c["words"] == "worse"]
    assert len(first) == 1 and (": met —" in first[0]) == (not worse and full < ref)
    assert not math.isnan(full)


def test_goal_needs_six_targets() -> None:
    kb = synthetic_kb(n_targets=4, n_sources=5, n_seeds=10, seed=1)
    m = kb.matrix()
    rows = [{"method": "static", "target": t, "source": s, "score": -i, "auc": m.loc[s, t]}
            for t in kb.targets for i, s in enumerate(m[t].dropna().index)]
    ev = rr.evaluate(kb, pd.DataFrame(rows), budgets=(0.25, 1.0))
    assert ev.goal["n_targets"] == 4 and ev.goal["met"] is False  # too few targets, whatever the regret
