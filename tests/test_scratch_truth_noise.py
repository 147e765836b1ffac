"""scratch_truth's detectability rule on targets whose margin over scratch lies inside the seed noise
(issue 24).

The scratch KB fixtures put scratch ±0.03-0.06 from the best source against a seed sd of ~0.003,
so every target's call is detectable and a plain sign of the mean passes every test there. Here
the per-seed differences best − scratch are written out by hand, so that each target's CI, Wilcoxon
p and call can be checked against values computed on paper:

- ``help`` / ``hurt``: 8 seeds, every difference +/−0.0075..0.0125 (Wilcoxon exact p = 2/256);
  a seed effect of sd ~0.03 shared by every source of a seed hides them unless paired;
- ``noise_up`` / ``noise_down``: 8 seeds, differences of ±0.002..0.013, mean +0.00025 / −0.000125;
- ``ci_only``: 5 seeds, all positive: the CI excludes 0 but the exact Wilcoxon p is 2/32 = 0.0625;
- ``wilcoxon_only``: 12 seeds, 11 small positives and one −0.105: p = 140/4096 ≈ 0.034 < 0.05 but
  the CI includes 0 (mean +0.0004);
- ``few``: 4 seeds, all +0.02: below ``paired.MIN_N`` (5) no CI, no call.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from experiments.knowledge_base import SCRATCH, KnowledgeBase
from recommender.evaluation import scratch_sign

ND = "no detectable difference"
_POS11 = [0.009, 0.010, 0.011, 0.0095, 0.0105, 0.0085, 0.0115, 0.012, 0.008, 0.0125, 0.0075]
# target -> per-seed difference (best source − scratch)
DIFFS = {
    "help": [0.012, 0.009, 0.011, 0.008, 0.0115, 0.0095, 0.0105, 0.0075],
    "hurt": [-0.011, -0.0085, -0.0125, -0.009, -0.0105, -0.0095, -0.012, -0.0078],
    "noise_up": [0.012, -0.009, 0.004, -0.011, 0.007, -0.003, 0.010, -0.008],
    "noise_down": [-0.010, 0.006, -0.013, 0.009, -0.002, 0.011, -0.005, 0.003],
    "ci_only": [0.004, 0.006, 0.005, 0.007, 0.003],
    "wilcoxon_only": [*_POS11, -0.105],
    "few": [0.02, 0.02, 0.02, 0.02],
}
# the calls worked out by hand from the bullet list above
TRUTH = {"help": "helps", "hurt": "hurts", "noise_up": ND, "noise_down": ND, "ci_only": ND,
         "wilcoxon_only": ND, "few": ND}
CI_ONLY = TRUTH | {"ci_only": "helps"}
HELPS = {t: float(np.mean(d)) > 0 for t, d in DIFFS.items()}  # noise_down and hurt: False
# best source per target: s1 on 'hurt', s0 elsewhere
BEST = {t: "s1" if t == "hurt" else "s0" for t in DIFFS}


def noisy_kb() -> KnowledgeBase:
    """s0, s1 and scratch on the targets of DIFFS; the best of s0/s1 is 0.02 above the other,
    scratch is best − DIFFS[t][k] on seed k; every source of a seed shares a seed effect."""
    rng = np.random.default_rng(7)
    recs = []
    for i, (t, diffs) in enumerate(DIFFS.items()):
        effect = rng.normal(0, 0.03, len(diffs))
        for k, d in enumerate(diffs):
            best = 0.80 + 0.01 * i + effect[k]
            vals = {"s0": best, "s1": best - 0.02} if BEST[t] == "s0" else {"s1": best, "s0": best - 0.02}
            for s, v in (vals | {SCRATCH: best - d}).items():
                recs.append({"source": s, "target": t, "metric": "roc_auc", "value": v, "fold": -1, "seed": k})
    sources = ["s0", "s1", SCRATCH]
    man = {"name": "noisy", "metric": "roc_auc", "sources": sources, "targets": list(DIFFS)}
    return KnowledgeBase("noisy", pd.DataFrame(recs), pd.DataFrame({"name": sources + list(DIFFS)}), man)


CANDS = {t: ["s0", "s1", SCRATCH] for t in DIFFS}


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    return scratch_sign.scratch_truth(noisy_kb(), CANDS).set_index("target")


def test_the_statistics_behind_the_calls_are_the_hand_computed_ones(truth: pd.DataFrame) -> None:
    """Preconditions of the call tests below (a plain sign of the mean leaves these unchanged)."""
    assert list(truth.index) == list(DIFFS)
    assert truth["best_source"].to_dict() == BEST
    assert truth["n_paired"].to_dict() == {t: len(d) for t, d in DIFFS.items()}
    for t, d in DIFFS.items():
        assert truth.loc[t, "gain_paired"] == pytest.approx(np.mean(d), abs=1e-12)
        assert truth.loc[t, "gain"] == pytest.approx(np.mean(d), abs=1e-12)
    assert truth["helps"].to_dict() == HELPS
    # exact Wilcoxon p by hand: all 8 / all 5 of one sign → 2/2^n; n = 12 with W- = 12 → 140/4096
    # (these and the two CI lines after them kill an unpaired comparison: Mann-Whitney p, unpaired CI)
    assert truth.loc["help", "p"] == pytest.approx(2 / 256) and truth.loc["hurt", "p"] == pytest.approx(2 / 256)
    assert truth.loc["ci_only", "p"] == pytest.approx(2 / 32)
    assert truth.loc["wilcoxon_only", "p"] == pytest.approx(140 / 4096)
    # the CI of the clear targets excludes 0 only because the seeds are paired (seed effect sd 0.03)
    assert truth.loc["help", "gain_lo"] > 0 and truth.loc["hurt", "gain_hi"] < 0
    assert truth.loc["ci_only", "gain_lo"] > 0  # 5 positive differences: every resample's mean > 0
    assert truth.loc["wilcoxon_only", "gain_lo"] < 0 < truth.loc["wilcoxon_only", "gain_hi"]
    for t in ("noise_up", "noise_down"):
        assert truth.loc[t, "gain_lo"] < 0 < truth.loc[t, "gain_hi"] and truth.loc[t, "p"] > 0.5
    assert np.isnan(truth.loc["few", "gain_lo"]) and np.isnan(truth.loc["few", "gain_hi"])  # n = 4 < MIN_N


def test_margins_inside_the_seed_noise_are_no_detectable_difference(truth: pd.DataFrame) -> None:
    # kills a plain sign of the mean (noise_up, ci_only, wilcoxon_only, few 'helps'; noise_down 'hurts'),
    # a CI-only rule (ci_only 'helps'), a Wilcoxon-only rule (wilcoxon_only 'helps') and an unpaired
    # comparison (help, hurt 'no detectable difference')
    assert truth["truth"].to_dict() == TRUTH


def test_the_ci_alone_is_not_the_call(truth: pd.DataFrame) -> None:
    # kills a plain sign of the mean (truth_ci_only 'helps' on noise_up, wilcoxon_only and few) and an
    # unpaired comparison (help, hurt: CI includes 0)
    assert truth["truth_ci_only"].to_dict() == CI_ONLY
    # kills a plain sign, a CI-only and a Wilcoxon-only rule: the calls differ from the CI's on ci_only alone
    assert list(truth.index[truth["truth"] != truth["truth_ci_only"]]) == ["ci_only"]


def test_breakdown_counts_the_calls(truth: pd.DataFrame) -> None:
    # kills a plain sign of the mean ({'helps': 5, ND: 0, 'hurts': 2}), CI-only and Wilcoxon-only rules
    assert scratch_sign.breakdown(truth.reset_index()) == {"helps": 1, ND: 5, "hurts": 1}


def test_random_sign_is_the_expected_accuracy_of_a_random_order(truth: pd.DataFrame) -> None:
    """A uniformly random order of n candidates puts scratch first with chance 1/n: right with chance
    1 − 1/n where the best source's mean beats scratch's, 1/n where it does not; targets without a
    count are left out. It reads the sign of the mean by design (as the methods' sign accuracy
    does), so a plain-sign scratch_truth leaves it unchanged; the variants it kills are its own."""
    n = {"help": 3, "hurt": 4, "noise_up": 4, "noise_down": 5, "ci_only": 3, "wilcoxon_only": 6}  # 'few': none
    # helps by the mean: help, noise_up, ci_only, wilcoxon_only (1 − 1/n); not: hurt, noise_down (1/n)
    by_hand = (Fraction(2, 3) + Fraction(1, 4) + Fraction(3, 4) + Fraction(1, 5) + Fraction(2, 3)
               + Fraction(5, 6)) / 6
    assert by_hand == Fraction(101, 180)
    # kills a random_sign that reads the detectable call instead of the mean (112/360), a constant 1/2,
    # one that ignores scratch's 1/n chance (the share helping, 4/6) or counts 'few' (n 0) in
    assert scratch_sign.random_sign(truth.reset_index(), n) == pytest.approx(float(by_hand))
    assert np.isnan(scratch_sign.random_sign(truth.reset_index(), {}))


def test_evaluate_counts_detectable_targets_and_names_the_ci_only_one() -> None:
    """End to end: a method that always places scratch last ('pretraining helps' everywhere) is right
    on the 5 targets whose best source beats scratch by the mean; of the 2 detectable targets
    (help, hurt) on 1."""
    kb = noisy_kb()
    rows = [{"method": m, "target": t, "source": s, "score": sc, "auc": np.nan}
            for t in DIFFS for m, order in (("static", {"s0": 2.0, "s1": 1.0, SCRATCH: 0.0}),
                                            ("scratch_first", {"s0": 1.0, "s1": 0.5, SCRATCH: 3.0}))
            for s, sc in order.items()]
    ev = scratch_sign.evaluate(kb, pd.DataFrame(rows))
    assert ev is not None
    sign = ev.sign.set_index("method")
    # preconditions (the sign of the mean, unchanged by a plain-sign truth): 5 of 7 targets helped by the mean
    assert sum(HELPS.values()) == 5
    assert (sign.loc["static", "sign_k"], sign.loc["static", "sign_n"]) == (5, 7)
    assert sign.loc["random", "sign"] == pytest.approx((5 * 2 / 3 + 2 * 1 / 3) / 7)  # 3 candidates each
    # kills a plain sign of the mean (all 7 targets detectable: sign_det 5/7 and 2/7), CI-only, Wilcoxon-only
    assert (sign.loc["static", "sign_det_k"], sign.loc["static", "sign_det_n"]) == (1, 2)
    assert (sign.loc["scratch_first", "sign_det_k"], sign.loc["scratch_first", "sign_det_n"]) == (1, 2)
    # kills a plain sign of the mean ({'helps': 5, ND: 0, 'hurts': 2}) in the JSON and in the words
    assert ev.to_dict()["breakdown"] == {"helps": 1, ND: 5, "hurts": 1}
    assert "helps detectably on 1, no detectable difference on 5, hurts detectably on 1" in ev.notes[0]
    # kills a plain sign and a CI-only rule (no disagreement to name) and a Wilcoxon-only one (names 2)
    assert any("1 target(s) where the CI alone excludes 0 but Wilcoxon p ≥ 0.05: ci_only" in s for s in ev.notes)
