"""verify's verdict in words, on hand-built rows whose intervals are known, so each branch is
reached on purpose: the leader not detectably above scratch while another row is, a tie at the top
where only the second beats scratch, and rows the halving dropped in an earlier, smaller round
(negative transfer and gains measured there are reported, not hidden)."""

from __future__ import annotations

from recommender.verify.verdict import fmt_diff, verdict


def _d(diff: float, lo: float, hi: float, p: float = 0.5) -> dict:
    return {"diff": diff, "lo": lo, "hi": hi, "p_beats": p}


def _row(name: str, auc: float, vs_first: dict | None, vs_scratch: dict | None, final: bool = True,
         rnd: int = 1) -> dict:
    return {"candidate": name, "auc": auc, "final": final, "round": rnd, "vs_first": vs_first,
            "vs_scratch": vs_scratch}


def test_leader_not_detectable_over_scratch_but_a_lower_row_is() -> None:
    # a leads b detectably; a's gain over scratch is wide and crosses 0, b's is narrow and above 0
    rows = [_row("a", 0.90, None, _d(0.05, -0.01, 0.11)),
            _row("b", 0.86, _d(-0.04, -0.06, -0.02, 0.01), _d(0.01, 0.004, 0.016)),
            _row("scratch", 0.85, _d(-0.05, -0.11, 0.01), None)]
    v = verdict(rows)
    assert v.startswith("a is best, ahead of b by 0.040 [0.020, 0.060]: detectably ahead (P(b beats it) = 0.01)")
    assert "its gain over scratch +0.050 [−0.010, +0.110] is not detectable" in v
    assert v.endswith("(also detectably above scratch: b).")
    assert "beats scratch" not in v and "no detectable gain" not in v and "Negative transfer" not in v


def test_a_tie_at_the_top_where_only_the_second_beats_scratch() -> None:
    rows = [_row("a", 0.90, None, _d(0.04, -0.01, 0.09)),
            _row("b", 0.895, _d(-0.005, -0.02, 0.01), _d(0.035, 0.01, 0.06)),
            _row("c", 0.88, _d(-0.02, -0.03, -0.01), _d(0.02, 0.005, 0.035)),
            _row("scratch", 0.86, _d(-0.04, -0.09, 0.01), None)]
    v = verdict(rows)
    assert "ahead of b by 0.005 [−0.010, 0.020]: no detectable difference" in v
    assert "; b beats scratch by 0.035 [0.010, 0.060]" in v  # the tied second is named, the leader is not
    assert "(also detectably above scratch: c)" in v and "both beat scratch" not in v


def test_negative_transfer_includes_rows_dropped_in_an_earlier_round() -> None:
    rows = [_row("a", 0.90, None, _d(0.03, 0.01, 0.05)),
            _row("scratch", 0.87, _d(-0.03, -0.05, -0.01, 0.02), None),
            _row("d", 0.80, _d(-0.1, -0.14, -0.06), _d(-0.07, -0.1, -0.04), final=False, rnd=0),
            _row("e", 0.86, _d(-0.04, -0.08, 0.0), _d(-0.01, -0.03, 0.01), final=False, rnd=0)]
    v = verdict(rows)
    assert v.startswith("a is best, ahead of scratch by 0.030 [0.010, 0.050]: detectably ahead "
                        "(P(scratch beats it) = 0.02); a beats scratch by 0.030 [0.010, 0.050].")
    assert v.endswith(" Negative transfer (detectably worse than scratch): d.")  # e's interval crosses 0


def test_a_gain_measured_only_in_an_earlier_round_is_reported() -> None:
    """The last round shows no detectable gain, but a source dropped earlier was detectably above
    scratch in its (smaller) round: the verdict must not say pretraining gave nothing."""
    k = _d(0.090, 0.016, 0.163)
    rows = [_row("a", 0.86, None, _d(0.01, -0.02, 0.04)),
            _row("scratch", 0.85, _d(-0.01, -0.04, 0.02), None),
            _row("kermany_cxr", 0.83, _d(-0.03, -0.08, 0.02), k, final=False, rnd=0)]
    v = verdict(rows)
    assert not v.startswith("measured: no detectable gain from pretraining")
    assert v.startswith("measured: no detectable gain over scratch in the last round, best source a ")
    assert f"detectably above scratch: kermany_cxr {fmt_diff(k)}." in v
    # without the earlier row the plain sentence stands
    assert verdict(rows[:2]).startswith("measured: no detectable gain from pretraining, best source a ")
    # and beside a last-round winner the earlier gain is added, not merged into the final claim
    win = [_row("a", 0.90, None, _d(0.05, 0.02, 0.08)), rows[1] | {"auc": 0.85}, rows[2]]
    w = verdict(win)
    assert "a beats scratch by 0.050 [0.020, 0.080]" in w and "kermany_cxr +0.090" in w
    assert "(also detectably above scratch" not in w


def test_nothing_or_only_scratch() -> None:
    assert verdict([]) == "nothing was measured"
    assert verdict([_row("a", 0.9, None, None, final=False)]) == "nothing was measured"
    assert verdict([_row("scratch", 0.9, None, None)]) == "only scratch was measured: nothing to compare"


def test_without_scratch_no_gain_is_claimed() -> None:
    rows = [_row("a", 0.90, None, None), _row("b", 0.80, _d(-0.1, -0.15, -0.05, 0.0), None)]
    v = verdict(rows)
    assert v == "a is best, ahead of b by 0.100 [0.050, 0.150]: detectably ahead (P(b beats it) = 0.00)."
