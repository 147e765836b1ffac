"""Per-cell gain-sign accuracy: each rule reads only the other groups' cells, and the words follow
the paired comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommender.evaluation import gain_sign


def _cells(gains: dict[tuple[str, str], float], pred: dict[tuple[str, str], float] | None = None,
           scenario: str = "estimates") -> pd.DataFrame:
    rows = []
    for (target, source), g in gains.items():
        p = (pred or {}).get((target, source), g)
        rows.append({"scenario": scenario, "group": target, "target": target, "source": source,
                     "gain": g, "predicted_gain": p})
    for target in {t for t, _ in gains}:  # scratch rows are not cells of the judgement
        rows.append({"scenario": scenario, "group": target, "target": target, "source": "scratch",
                     "gain": 0.0, "predicted_gain": 0.0})
    return pd.DataFrame(rows)


def test_source_record_reads_only_the_other_groups():
    # a helps by +0.01 on t1 and t3 and hurts by 0.05 on t2: over all three its mean is negative,
    # over t1 and t3 (t2's training groups) it is positive, so a leak would make t2's call right
    gains = {("t1", "a"): 0.01, ("t2", "a"): -0.05, ("t3", "a"): 0.01}
    c = gain_sign.cell_signs(_cells(gains)).set_index("target")
    assert not c.loc["t2", "right_source_record"]
    # t1's training cells are t2's −0.05 and t3's +0.01: a's record there says 'hurts', wrong too
    assert not c.loc["t1", "right_source_record"]
    assert c["right_model"].all()  # predictions equal to the truth are right everywhere


def test_base_rate_is_the_majority_of_the_training_cells():
    # t1 holds 3 hurting cells; the other groups hold helping ones: t1's base rate says 'helps'
    gains = {("t1", s): -0.02 for s in "abc"} | {("t2", "a"): 0.02, ("t3", "b"): 0.03}
    c = gain_sign.cell_signs(_cells(gains))
    t1 = c[c["target"] == "t1"]
    assert not t1["right_base_rate"].any()
    # t2's training cells are t1's three (hurt) and t3's one (helps): majority 'hurts', so wrong
    assert not c[c["target"] == "t2"]["right_base_rate"].any()
    assert "scratch" not in set(c["source"])


def test_a_model_that_knows_the_signs_beats_the_base_rate_and_a_guess_does_not():
    rng = np.random.default_rng(0)
    gains, good, bad = {}, {}, {}
    for i in range(10):
        t = f"t{i}"
        for j, s in enumerate("abcdef"):
            g = (0.03 if j < 4 else -0.03) + rng.normal(0, 0.005)  # 4 of 6 sources help everywhere
            gains[(t, s)] = g
            good[(t, s)] = g + rng.normal(0, 0.002)
            bad[(t, s)] = rng.normal(0, 0.03)
    good_rows = gain_sign.evaluate(_cells(gains, good))
    bad_rows = gain_sign.evaluate(_cells(gains, bad))
    (g,), (b,) = good_rows, bad_rows
    assert g["n_cells"] == 60 and g["n_targets"] == 10 and g["model_k"] == 60
    assert g["base_rate_k"] == 40  # the majority sign is 'helps' in every fold
    assert g["vs_base_rate"]["words"] == "better" and g["vs_base_rate"]["n"] == 10
    assert g["vs_source_record"]["words"] == "no detectable difference"  # both are perfect here
    assert b["vs_source_record"]["words"] == "worse"
    lines = gain_sign.sentences(good_rows)
    assert len(lines) == 3 and "model 60/60" in lines[0] and "base rate 40/60" in lines[0]


def test_groups_are_the_unit_of_the_paired_comparison():
    gains = {(f"t{i}", s): (0.02 if s == "a" else -0.02) for i in range(12) for s in "ab"}
    iv = _cells(gains)
    iv["group"] = iv["target"].map(lambda t: f"g{int(t[1:]) // 2}")  # 6 groups of 2 targets
    (r,) = gain_sign.evaluate(iv, groups={f"t{i}": f"g{i // 2}" for i in range(12)})
    assert r["vs_base_rate"]["unit"] == "groups" and r["vs_base_rate"]["n"] == 6


def test_without_gain_columns_there_is_nothing_to_judge():
    iv = pd.DataFrame({"scenario": ["any"], "group": ["t"], "target": ["t"], "source": ["a"], "auc": [0.8]})
    assert gain_sign.evaluate(iv) == []


def test_sign_ceiling_is_the_split_half_agreement_of_the_measured_sign():
    from experiments.knowledge_base import KnowledgeBase

    rows = []
    for seed in range(4):
        rows += [{"source": "scratch", "target": "t", "seed": seed, "value": 0.70},
                 # a: +0.05 on every seed (agrees); b: +0.02 on even seeds, −0.02 on odd (disagrees)
                 {"source": "a", "target": "t", "seed": seed, "value": 0.75},
                 {"source": "b", "target": "t", "seed": seed, "value": 0.72 if seed % 2 == 0 else 0.68}]
    r = pd.DataFrame(rows).assign(metric="roc_auc", fold=-1)
    names = ["a", "b", "scratch", "t"]
    kb = KnowledgeBase("k", r, pd.DataFrame({"name": names}),
                       {"name": "k", "metric": "roc_auc", "sources": ["a", "b", "scratch"], "targets": ["t"]})
    c = gain_sign.sign_ceiling(kb)
    assert (c["k"], c["n"]) == (1, 2) and c["share"] == 0.5
    assert gain_sign.sign_ceiling(kb, pd.DataFrame({"source": ["a"], "target": ["other"]})) is None
    only_b = gain_sign.sign_ceiling(kb, pd.DataFrame({"source": ["b", "scratch"], "target": ["t", "t"]}))
    assert (only_b["k"], only_b["n"]) == (0, 1)
