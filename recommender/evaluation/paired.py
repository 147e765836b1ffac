"""Paired comparisons of two methods over the same held-out targets (or groups).

"A beats B" is only ever said from this: per-unit differences of a metric, the
paired bootstrap 95% CI of their mean (``scipy.stats.bootstrap(paired=True)``), the
Wilcoxon signed-rank p (``scipy.stats.wilcoxon``; all-zero differences give p = 1),
n, and plain words. Below :data:`MIN_N` units no CI is given ("n too small"), since a
bootstrap over three targets only restates them.

When targets come in groups (a derived task and its parent, twins), the independent
unit is the group: differences are averaged within each group first, so correlated
targets are not counted as separate evidence.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

MIN_N = 5
LEVEL = 0.95
N_BOOT = 2000


def _bootstrap_mean_diff(a: np.ndarray, b: np.ndarray, seed: int, n_boot: int,
                         level: float) -> tuple[float, float]:
    d = a - b
    if np.ptp(d) == 0:
        return float(d[0]), float(d[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("BCa", "percentile"):
            res = stats.bootstrap((a, b), lambda x, y: np.mean(x - y), paired=True, vectorized=False,
                                  n_resamples=n_boot, confidence_level=level, method=method,
                                  rng=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            if math.isfinite(lo) and math.isfinite(hi):
                return lo, hi
    return math.nan, math.nan


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of differences ``d``; 1.0 when every difference is 0."""
    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return math.nan
    if np.all(d == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(d, zero_method="wilcox").pvalue)


def words(lo: float, hi: float, p: float, n: int, higher_is_better: bool = True,
          alpha: float = 0.05) -> str:
    """'better' / 'worse' only when the CI excludes 0 and Wilcoxon p < alpha agree; else no detectable difference."""
    if n < MIN_N:
        return "n too small to tell"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no detectable difference"
    sig = math.isfinite(p) and p < alpha
    if lo > 0 and sig:
        return "better" if higher_is_better else "worse"
    if hi < 0 and sig:
        return "worse" if higher_is_better else "better"
    return "no detectable difference"


def paired_comparison(a: pd.Series, b: pd.Series, groups: dict[str, str] | None = None,
                      higher_is_better: bool = True, seed: int = 0, n_boot: int = N_BOOT,
                      level: float = LEVEL) -> dict:
    """Compare per-target values ``a`` and ``b`` (index = target) on their common finite targets.

    ``groups``: target → independence group; when some group holds several targets the
    differences are averaged per group and every statistic is over groups.
    Returns ``mean_diff, lo, hi, p, n, unit, n_targets, words`` (lo/hi NaN when n < MIN_N).
    """
    both = pd.DataFrame({"a": pd.to_numeric(a, errors="coerce"),
                         "b": pd.to_numeric(b, errors="coerce")}).dropna()
    n_targets = int(len(both))
    unit = "targets"
    if groups and n_targets and len({groups.get(t, t) for t in both.index}) < n_targets:
        both = both.groupby([groups.get(t, t) for t in both.index]).mean()
        unit = "groups"
    n = int(len(both))
    out = {"n": n, "unit": unit, "n_targets": n_targets, "level": level,
           "higher_is_better": higher_is_better}
    if n == 0:
        return out | {"mean_diff": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan,
                      "words": "no common targets"}
    av, bv = both["a"].to_numpy(float), both["b"].to_numpy(float)
    d = av - bv
    p = wilcoxon_p(d)
    lo = hi = math.nan
    if n >= MIN_N:
        lo, hi = _bootstrap_mean_diff(av, bv, seed, n_boot, level)
    return out | {"mean_diff": float(d.mean()), "lo": lo, "hi": hi, "p": p,
                  "words": words(lo, hi, p, n, higher_is_better)}


def signed(v: float, digits: int = 3) -> str:
    """'+0.012' / '−0.034': a sign always, and a real minus sign (the verdicts' number format)."""
    return f"{v:+.{digits}f}".replace("-", "−")


def format_p(p: float) -> str:
    """'p < 0.001' below 0.001, else 'p = 0.123'."""
    if p is None or not math.isfinite(p):
        return "p —"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def sentence(name_a: str, name_b: str, comp: dict, metric: str = "τw", fmt: str = "{:+.3f}") -> str:
    """One line: 'shipped vs static: Δτw +0.006 [95% CI −0.037, 0.051], Wilcoxon p = 0.850, n = 12 targets: no detectable difference'."""
    n, unit = comp.get("n", 0), comp.get("unit", "targets")
    if n == 0:
        return f"{name_a} vs {name_b}: no common targets"
    mean = fmt.format(comp["mean_diff"])
    if n < MIN_N:
        ci = "no CI (n too small)"
    else:
        ci = f"[{int(comp.get('level', LEVEL) * 100)}% CI {fmt.format(comp['lo'])}, {fmt.format(comp['hi'])}]"
    extra = f" ({comp['n_targets']} targets)" if unit == "groups" else ""
    return (f"{name_a} vs {name_b}: Δ{metric} {mean} {ci}, Wilcoxon {format_p(comp['p'])}, "
            f"n = {n} {unit}{extra}: {comp['words']}")
