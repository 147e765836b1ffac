"""The verdict in words, from paired measurements only.

"A beats B" is said only when the paired 95% interval of A − B excludes 0; otherwise
"no detectable difference". Gains over scratch follow the same rule, and a source whose
gain is detectably below 0 is named as negative transfer. When no source is detectably
better than scratch, the verdict says so first: that is the answer to "is pretraining
worth it here?". Rows the halving dropped in an earlier, smaller round (fewer seeds, or less data)
keep their paired comparison with scratch in that round: a detectable loss there is named as
negative transfer, and a detectable gain there is reported as such, never hidden behind the last
round's "no detectable gain".
"""

from __future__ import annotations

from experiments.cells import SCRATCH
from recommender.evaluation.paired import signed

__all__ = ["verdict", "fmt_diff"]


def fmt_diff(d: dict, digits: int = 3) -> str:
    """'+0.003 [−0.002, +0.008]' from {'diff', 'lo', 'hi'}."""
    return f"{signed(d['diff'], digits)} [{signed(d['lo'], digits)}, {signed(d['hi'], digits)}]"


def _abs(d: dict, digits: int = 3) -> str:
    return f"{abs(d['diff']):.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]".replace("-", "−")


def verdict(rows: list[dict]) -> str:
    """One paragraph over the candidates of the last round (``final`` rows), ranked by AUC.

    Each row: ``candidate``, ``auc``, ``final``, ``vs_first`` ({diff, lo, hi, p_beats} of row −
    first, None for the first) and ``vs_scratch`` ({diff, lo, hi} of row − scratch, None for scratch).
    """
    final = sorted((r for r in rows if r.get("final")), key=lambda r: -r["auc"])
    if not final:
        return "nothing was measured"
    sources = [r for r in final if r["candidate"] != SCRATCH]
    if not sources:
        return "only scratch was measured: nothing to compare"
    has_scratch = any(r["candidate"] == SCRATCH for r in final)
    negative = [r["candidate"] for r in rows if r.get("vs_scratch") and r["vs_scratch"]["hi"] < 0]
    neg_txt = (f" Negative transfer (detectably worse than scratch): {', '.join(negative)}." if negative else "")
    gaining = [r for r in sources if r.get("vs_scratch") and r["vs_scratch"]["lo"] > 0]
    earlier = [r for r in rows if not r.get("final") and r["candidate"] != SCRATCH
               and r.get("vs_scratch") and r["vs_scratch"]["lo"] > 0]
    early_txt = (" In an earlier, smaller round (dropped by the halving), detectably above scratch: "
                 + ", ".join(f"{r['candidate']} {fmt_diff(r['vs_scratch'])}" for r in earlier) + "."
                 if earlier else "")
    if has_scratch and not gaining:
        best = sources[0]
        head = "no detectable gain from pretraining" if not earlier else \
            "no detectable gain over scratch in the last round"
        return (f"measured: {head}, best source {best['candidate']} "
                f"{fmt_diff(best['vs_scratch'])} over scratch." + early_txt + neg_txt)
    first, second = final[0], final[1] if len(final) > 1 else None
    text = f"{first['candidate']} is best"
    if second is not None:
        gap = {"diff": -second["vs_first"]["diff"], "lo": -second["vs_first"]["hi"], "hi": -second["vs_first"]["lo"]}
        detect = ("no detectable difference" if gap["lo"] <= 0 <= gap["hi"] else
                  f"detectably ahead (P({second['candidate']} beats it) = {second['vs_first']['p_beats']:.2f})")
        text += f", ahead of {second['candidate']} by {_abs(gap)}: {detect}"
    if has_scratch:
        tied = [first] + ([second] if second is not None and second["candidate"] != SCRATCH
                          and second["vs_first"]["lo"] <= 0 <= second["vs_first"]["hi"] else [])
        beat = [r for r in tied if r["vs_scratch"]["lo"] > 0]
        if len(beat) == 2:
            text += (f"; both beat scratch, {beat[0]['candidate']} by {_abs(beat[0]['vs_scratch'])} and "
                     f"{beat[1]['candidate']} by {_abs(beat[1]['vs_scratch'])}")
        elif beat:
            text += f"; {beat[0]['candidate']} beats scratch by {_abs(beat[0]['vs_scratch'])}"
        else:
            text += f"; its gain over scratch {fmt_diff(first['vs_scratch'])} is not detectable"
        others = [r["candidate"] for r in gaining if r not in tied]
        if others:
            text += f" (also detectably above scratch: {', '.join(others)})"
    return text + "." + early_txt + neg_txt
