"""The prediction and the measurements in one model: a normal–normal posterior per candidate.

Why: a few noisy fine-tunes reorder a good prediction (a cell's seed spread exceeds most gaps
inside a good shortlist), so `verify` that trusts only its measurements can pick worse than not
verifying at all. Here the prediction is the prior and the measurements the likelihood.

The model (used by `catscans verify` and by its replay in `evaluate-meta`):

- θ_c is candidate c's AUC on the folder under the KB protocol (its mean over seeds);
  g_c = θ_c − θ_ref its gain over the reference (scratch, measured in every round), g_ref = 0.
- **Prior** (the prediction), g ~ N(m, S). From per-row gain intervals (predicted gain ± a
  half-width h_c at nominal level ℓ, 80%): m_c = predicted gain, independent errors with sd
  s_c = h_c / z_ℓ, z_ℓ = Φ⁻¹((1 + ℓ)/2) = 1.2816 at 80%. Without gain intervals, from the AUC
  intervals: m_c = pred_c − pred_ref, S = diag(s_c²) + s_ref² (the difference of two
  predictions whose errors are independent). A candidate without a prediction has a flat prior.
  So the prior difference of c to the predicted leader L, g_c − g_L, has sd √(s_c² + s_L²).
  Intervals are read per row, so a model whose half-width varies by row is used as it is.
- **Likelihood** (the measurements): per round, the mean paired differences to the reference
  d ~ N(g, V); V = their paired-bootstrap covariance plus a shrinking share of the KB's per-seed
  covariance of paired differences / seeds (:func:`top_up`: one or two seeds cannot estimate
  their own spread, and n ≤ k seeds give a singular k × k covariance). Rounds are independent;
  a round at fewer images/epochs than the protocol has its own unknown offset (flat prior): it
  informs only the differences between its sources, the full rounds their gain over scratch.
- **Posterior**: N(μ, Σ), Σ = (S⁻¹ + Σ_b V_b⁻¹)⁻¹, μ = Σ (S⁻¹ m + Σ_b V_b⁻¹ d_b).

Per candidate: P(best) and the expected regret of picking it, E[max_j θ_j − θ_c], from seeded
Monte-Carlo draws of the joint posterior; the set that cannot be told apart from the pick at 95%
(every candidate with posterior P(θ_c > θ_pick) ≥ 2.5%). The pick (:data:`DISPLACE` rule): the
predicted leader, unless a challenger is better than it with posterior probability ≥ 0.9; then the
posterior best (highest posterior mean = lowest expected regret) of those challengers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from recommender.verify.halving import Round

__all__ = ["DISPLACE", "TIE_LEVEL", "N_DRAWS", "RULE", "Prior", "Block", "Posterior", "prior_from_rows", "report",
           "combine", "top_up", "seed_floor", "block_from_seeds", "block_from_boot", "z_of", "Picker"]

DISPLACE = 0.9  # a challenger displaces the predicted leader only at P(better) >= this
TIE_LEVEL = 0.95  # "cannot be told apart at 95%"
N_DRAWS = 20_000
RULE = (f"the pick is the predicted first unless a challenger is better than it with posterior "
        f"probability ≥ {DISPLACE:.2f}; then the challenger of highest posterior mean")
_FLAT = 0.0  # prior precision of a candidate without a prediction


def z_of(level: float) -> float:
    """Half-width / sd of a normal central interval at ``level`` (1.2816 at 80%)."""
    return float(norm.ppf(0.5 + level / 2))


def _num(v: object) -> float:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


@dataclass
class Prior:
    """Prior on the gains over ``reference`` of ``names`` (the non-reference candidates)."""

    names: list[str]
    reference: str
    mean: np.ndarray  # (K,) predicted gain; 0 where flat
    precision: np.ndarray  # (K, K); a zero row = flat prior for that candidate
    sd: np.ndarray  # (K,) marginal prior sd of each gain (inf where flat)
    cov: np.ndarray  # (K, K) prior covariance on the non-flat coordinates (flat rows/columns: 0)
    predicted: dict[str, float] = field(default_factory=dict)  # predicted AUC (or gain) per candidate
    basis: str = "none"  # "gain interval" | "AUC interval" | "none"
    level: float = 0.8

    def leader(self, order: Iterable[str]) -> str:
        """The predicted first of ``order`` (ties: the earlier one); the first of ``order`` without predictions."""
        order = list(order)
        vals = {c: self.predicted.get(c, math.nan) for c in order}
        known = [c for c in order if math.isfinite(vals[c])]
        return max(known, key=lambda c: (vals[c], -order.index(c))) if known else order[0]

    def diff_sd(self, c: str, leader: str) -> float:
        """Prior sd of g_c − g_leader (√(s_c² + s_L²) for independent gain errors); inf if either is flat."""
        if c == leader:
            return 0.0
        a = np.zeros(len(self.names))
        for x, sign in ((c, 1.0), (leader, -1.0)):
            if x != self.reference:
                a[self.names.index(x)] = sign
        used = np.abs(a) > 0
        if not np.all(np.isfinite(self.sd[used])):
            return math.inf
        cov = self.cov[np.ix_(used, used)]
        return float(np.sqrt(max(a[used] @ cov @ a[used], 0.0)))


def prior_from_rows(rows: pd.DataFrame | list[dict] | None, candidates: list[str], reference: str,
                    level: float = 0.8) -> Prior:
    """The prior from per-row prediction columns: ``source``, ``predicted_auc``, ``lo``, ``hi``
    (or recommend's ``lo80``/``hi80``), and where present ``predicted_gain`` (or
    ``gain_vs_scratch``), ``gain_lo``, ``gain_hi``. Rows of other sources are ignored."""
    names = [c for c in candidates if c != reference]
    k = len(names)
    flat = Prior(names, reference, np.zeros(k), np.zeros((k, k)), np.full(k, np.inf), np.zeros((k, k)), {},
                 "none", level)
    df = pd.DataFrame(rows if rows is not None else [])
    if df.empty or "source" not in df:
        return flat
    df = df.rename(columns={"lo80": "lo", "hi80": "hi", "gain_vs_scratch": "predicted_gain"})
    df = df.drop_duplicates("source").set_index("source")
    z = z_of(level)

    def col(name: str, c: str) -> float:
        return _num(df.at[c, name]) if c in df.index and name in df.columns else math.nan

    pred = {c: col("predicted_auc", c) for c in candidates}
    half_g = {c: (col("gain_hi", c) - col("gain_lo", c)) / 2 for c in names}
    if any(math.isfinite(h) and h > 0 for h in half_g.values()):
        mean = np.array([col("predicted_gain", c) for c in names])
        sd = np.array([half_g[c] / z if math.isfinite(half_g[c]) and half_g[c] > 0 else np.inf for c in names])
        sd[~np.isfinite(mean)] = np.inf
        mean = np.where(np.isfinite(sd), mean, 0.0)
        prec = np.diag(np.where(np.isfinite(sd), 1 / np.where(np.isfinite(sd), sd, 1.0) ** 2, _FLAT))
        pred = {c: (pred[c] if math.isfinite(pred[c]) else col("predicted_gain", c)) for c in candidates}
        cov = np.diag(np.where(np.isfinite(sd), sd, 0.0) ** 2)
        return Prior(names, reference, mean, prec, sd, cov, pred, "gain interval", level)
    s = {c: (col("hi", c) - col("lo", c)) / 2 / z for c in candidates}
    s_ref = s.get(reference, math.nan)
    if not (math.isfinite(pred.get(reference, math.nan)) and math.isfinite(s_ref) and s_ref > 0):
        return Prior(names, reference, flat.mean, flat.precision, flat.sd, flat.cov, pred, "none", level)
    ok = np.array([math.isfinite(pred[c]) and math.isfinite(s[c]) and s[c] > 0 for c in names])
    mean = np.array([pred[c] - pred[reference] if ok[i] else 0.0 for i, c in enumerate(names)])
    cov = np.diag([s[c] ** 2 if ok[i] else 1.0 for i, c in enumerate(names)]) + s_ref ** 2
    prec, kept = np.zeros((k, k)), np.zeros((k, k))
    if ok.any():
        kept[np.ix_(ok, ok)] = cov[np.ix_(ok, ok)]
        prec[np.ix_(ok, ok)] = np.linalg.inv(cov[np.ix_(ok, ok)])
    sd = np.where(ok, np.sqrt(np.diag(cov)), np.inf)
    return Prior(names, reference, mean, prec, sd, kept, pred, "AUC interval", level)


@dataclass
class Block:
    """One round's measurements: mean paired differences to the reference and their covariance."""

    names: list[str]  # non-reference candidates of the round
    diff: np.ndarray
    cov: np.ndarray
    seeds: int
    round: int = 0
    offset: bool = False  # a reduced round (fewer images/epochs): its gains share an unknown offset


def top_up(cov: np.ndarray, floor: np.ndarray | None, seeds: int) -> np.ndarray:
    """``cov + λ · floor / seeds``, λ = ν₀ / (ν₀ + seeds − 1), ν₀ = k + 1 for k differences.

    Why: a few seeds estimate their own spread badly, and a k × k covariance from n ≤ k seeds is
    singular: some combination of differences would look exact. The floor (the KB's per-seed
    covariance of paired differences, or without one the round's own mean variance in the same
    ½-correlation shape) is added with the weight of ν₀ pseudo-seeds, the share an
    inverse-Wishart prior with ν₀ degrees of freedom would get; it fades as seeds accumulate and
    with one seed adds the whole seed noise a bootstrap over images cannot see."""
    k = len(cov)
    if k == 0 or seeds < 1:
        return cov
    if floor is None:
        mean_var = float(np.trace(cov)) / k * seeds
        if not mean_var > 0:
            return cov
        floor = mean_var * (0.5 * np.eye(k) + 0.5 * np.ones((k, k)))
    nu0 = k + 1
    return cov + nu0 / (nu0 + seeds - 1) * floor / seeds


def floor_matrix(sigma2: float, k: int) -> np.ndarray | None:
    """Per-seed covariance of k paired differences to one reference: σ²·(½I + ½J) (the shared
    reference's noise gives two differences a correlation of ½); None when σ² is unknown."""
    if not (math.isfinite(sigma2) and sigma2 > 0) or k == 0:
        return None
    return sigma2 * (0.5 * np.eye(k) + 0.5 * np.ones((k, k)))


def seed_floor(records: pd.DataFrame, reference: str, exclude: Iterable[str] = (),
               seeds: Iterable[int] | None = None) -> float:
    """Mean over (source, target) cells of the variance over seeds (ddof 1) of the per-seed paired
    difference to ``reference`` (``records``: source, target, seed, value); targets in ``exclude``
    are left out (a held-out target never informs its own noise). NaN without ≥ 2 shared seeds."""
    if records is None or not len(records) or "seed" not in records:
        return math.nan
    r = records.dropna(subset=["seed"])
    r = r[~r["target"].isin(set(exclude))]
    if seeds is not None:
        r = r[r["seed"].isin(list(seeds))]
    if r.empty or not (r["source"] == reference).any():
        return math.nan
    wide = r.pivot_table(index=["target", "seed"], columns="source", values="value", aggfunc="mean")
    if reference not in wide:
        return math.nan
    d = wide.drop(columns=reference).sub(wide[reference], axis=0)
    v = d.groupby(level="target").var(ddof=1).stack()
    v = v[np.isfinite(v.to_numpy(dtype=float))]
    return float(v.mean()) if len(v) else math.nan


def block_from_seeds(values: dict[str, list[float]], reference: str, sigma2: float = math.nan,
                     round_index: int = 0, names: list[str] | None = None) -> Block:
    """A block from per-seed AUCs of one round (the same seeds for every candidate): the paired
    differences' mean and the covariance a bootstrap over seeds gives (ddof 0, / seeds), topped up."""
    names = [c for c in (names or values) if c != reference]
    ref = np.asarray(values[reference], dtype=float)
    d = np.array([np.asarray(values[c], dtype=float) - ref for c in names]).reshape(len(names), len(ref))
    n = d.shape[1]
    cov = np.atleast_2d(np.cov(d, ddof=0)) / n if n > 1 else np.zeros((len(names), len(names)))
    return Block(names, d.mean(axis=1), top_up(cov, floor_matrix(sigma2, len(names)), n), n, round_index)


def block_from_boot(res, reference: str, sigma2: float = math.nan, round_index: int = 0,  # noqa: ANN001
                    names: list[str] | None = None) -> Block:
    """A block from a paired bootstrap (:class:`recommender.verify.stats.BootResult`): point
    differences to the reference of ``names`` (default: all) and the covariance of their joint
    resamples, topped up."""
    i_ref = res.names.index(reference)
    names = [c for c in (names or res.names) if c != reference]
    idx = [res.names.index(c) for c in names]
    diff = res.point[idx] - res.point[i_ref]
    boot = res.boot[idx] - res.boot[i_ref]
    boot = boot[:, np.all(np.isfinite(boot), axis=0)]
    cov = np.atleast_2d(np.cov(boot, ddof=1)) if boot.shape[1] > 1 else np.zeros((len(names), len(names)))
    n = len(res.repeats)
    return Block(names, diff, top_up(cov, floor_matrix(sigma2, len(names)), n), n, round_index)


@dataclass
class Posterior:
    """N(mean, cov) over every candidate's gain over the reference (the reference's row is 0)."""

    names: list[str]  # every candidate, the reference included
    reference: str
    mean: np.ndarray
    cov: np.ndarray

    def _i(self, c: str) -> int:
        return self.names.index(c)

    def diff(self, a: str, b: str) -> tuple[float, float]:
        """Posterior mean and sd of θ_a − θ_b."""
        i, j = self._i(a), self._i(b)
        v = self.cov[i, i] + self.cov[j, j] - 2 * self.cov[i, j]
        return float(self.mean[i] - self.mean[j]), float(np.sqrt(max(v, 0.0)))

    def p_beats(self, a: str, b: str) -> float:
        """P(θ_a > θ_b) under the posterior."""
        m, s = self.diff(a, b)
        return float(m > 0) if s == 0 else float(norm.cdf(m / s))

    def draws(self, n: int = N_DRAWS, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.multivariate_normal(self.mean, self.cov, size=n, method="eigh")

    def p_best(self, n: int = N_DRAWS, seed: int = 0) -> dict[str, float]:
        x = self.draws(n, seed)
        win = np.bincount(np.argmax(x, axis=1), minlength=len(self.names)) / len(x)
        return dict(zip(self.names, win.tolist(), strict=True))

    def pick(self, leader: str, threshold: float = DISPLACE) -> str:
        """The displacement rule (:data:`RULE`)."""
        challengers = [c for c in self.names if c != leader and self.p_beats(c, leader) >= threshold]
        if not challengers:
            return leader
        return max(challengers, key=lambda c: (self.mean[self._i(c)], c))

    def summary(self, leader: str, threshold: float = DISPLACE, n: int = N_DRAWS, seed: int = 0) -> dict:
        """Per candidate: posterior difference to the leader (mean, 95% interval), P(best), expected
        regret, P(better than the leader); the pick, whether it displaced the leader, the tied set."""
        x = self.draws(n, seed)
        best = np.max(x, axis=1)
        win = np.bincount(np.argmax(x, axis=1), minlength=len(self.names)) / len(x)
        pick = self.pick(leader, threshold)
        q = norm.ppf(0.5 + TIE_LEVEL / 2)
        rows = {}
        for i, c in enumerate(self.names):
            m, s = self.diff(c, leader)
            rows[c] = {"post_diff": m, "post_lo": m - q * s, "post_hi": m + q * s, "p_best": float(win[i]),
                       "exp_regret": float(np.mean(best - x[:, i])),
                       "p_beats_leader": None if c == leader else self.p_beats(c, leader),
                       "tied": c == pick or self.p_beats(c, pick) >= (1 - TIE_LEVEL) / 2}
        tied = sorted((c for c in self.names if rows[c]["tied"]), key=lambda c: -rows[c]["p_best"])
        return {"leader": leader, "pick": pick, "displaced": pick != leader, "threshold": threshold,
                "tied": tied, "rows": rows, "n_draws": n, "seed": seed}


def combine(prior: Prior, blocks: Iterable[Block]) -> Posterior:
    """The normal–normal posterior of the gains given the prior and independent round blocks.

    A candidate with a flat prior must be measured in some block (else it is not identified)."""
    names, k = prior.names, len(prior.names)
    lam = prior.precision.copy()
    h = prior.precision @ prior.mean
    for b in blocks:
        idx = [names.index(c) for c in b.names]
        if not idx:
            continue
        if np.allclose(b.cov, 0):
            w = np.eye(len(idx)) * 1e12  # a noiseless measurement (no floor, one seed): it fixes the gains
        elif np.linalg.matrix_rank(b.cov) < len(idx):
            w = np.linalg.pinv(b.cov, hermitian=True)
        else:
            w = np.linalg.inv(b.cov)
        if b.offset:  # d = g + c·1 + e with c flat: only the contrasts between its sources inform g
            one = w @ np.ones(len(idx))
            w = w - np.outer(one, one) / float(one.sum()) if one.sum() > 0 else np.zeros_like(w)
        lam[np.ix_(idx, idx)] += w
        h[idx] += w @ b.diff
    missing = [names[i] for i in range(k) if lam[i, i] <= 1e-300]
    if missing or (k and np.linalg.matrix_rank(lam) < k):
        raise ValueError(f"no prediction and no measurement for {', '.join(missing) or 'some candidates'} "
                         "against scratch: cannot place them")
    cov = np.linalg.inv(lam)
    cov = (cov + cov.T) / 2
    mu = cov @ h
    all_names = [*names, prior.reference]
    full = np.zeros((k + 1, k + 1))
    full[:k, :k] = cov
    return Posterior(all_names, prior.reference, np.r_[mu, 0.0], full)


def prior_diff(prior: Prior, c: str, leader: str) -> tuple[float | None, float | None]:
    """Prior mean and sd of θ_c − θ_leader (None where either prior is flat)."""
    def g(x: str) -> float:
        if x == prior.reference:
            return 0.0
        i = prior.names.index(x)
        return float(prior.mean[i]) if math.isfinite(prior.sd[i]) else math.nan

    m, s = g(c) - g(leader), prior.diff_sd(c, leader)
    return (m, s) if math.isfinite(m) and math.isfinite(s) else (None, None)


def report(prior: Prior, post: Posterior, leader: str | None, threshold: float = DISPLACE, seed: int = 0) -> dict:
    """What `verify` prints and saves: :meth:`Posterior.summary` with each row's prior difference
    to the leader, the pick and a sentence for it and for the set that cannot be told apart.
    ``leader`` None: no prediction to start from; the pick is the posterior best."""
    no_prediction = leader is None
    if leader is None:
        leader = max(post.names, key=lambda c: (post.mean[post.names.index(c)], c))
    out = post.summary(leader, threshold, seed=seed) | {"no_prediction": no_prediction}
    for c, row in out["rows"].items():
        row["prior_diff"], row["prior_sd"] = prior_diff(prior, c, leader)
        row["pick"], row["predicted_first"] = c == out["pick"], c == leader
    out |= {"basis": prior.basis, "level": prior.level, "rule": RULE, "text": pick_text(out, prior.basis),
            "tied_text": tied_text(out["tied"])}
    return out


def pick_text(s: dict, basis: str = "gain interval") -> str:
    """'pick: X, …' — why the pick is what it is, in the rule's own terms."""
    pick, lead, rows, thr = s["pick"], s["leader"], s["rows"], s["threshold"]
    if s.get("no_prediction"):
        return f"pick: {pick}, the posterior best (no prediction to start from: a flat prior)"
    flat = "" if basis != "none" else " (its prediction has no interval: a flat prior)"
    if s["displaced"]:
        return (f"pick: {pick}, better than the predicted first {lead}{flat} with posterior probability "
                f"{rows[pick]['p_beats_leader']:.2f} (≥ {thr:.2f})")
    others = [c for c in rows if c != lead]
    closest = max(others, key=lambda c: rows[c]["p_beats_leader"]) if others else None
    why = (f"; the closest, {closest}, {rows[closest]['p_beats_leader']:.2f}" if closest else "")
    return (f"pick: {lead}, the predicted first{flat}: no challenger is better with posterior probability "
            f"≥ {thr:.2f}{why}")


def tied_text(tied: list[str]) -> str:
    if len(tied) < 2:
        return f"{tied[0]} is told apart from every other candidate at {TIE_LEVEL:.0%}" if tied else ""
    names = ", ".join(tied[:-1]) + f" and {tied[-1]}"
    return f"{names} cannot be told apart at {TIE_LEVEL:.0%}"


class Picker:
    """The posterior of one run of successive halving, round by round (verify and its replay).

    ``block(round, names)``: the round's measurements of ``names`` (its candidates whose last
    round it is) as a :class:`Block`. Halving keeps the alive sources of highest P(best) (ties:
    posterior mean); the pick follows :data:`RULE`."""

    def __init__(self, prior: Prior, leader: str | None, block: Callable[[Round, list[str]], Block],
                 threshold: float = DISPLACE, n_draws: int = N_DRAWS) -> None:
        self.prior, self.leader, self.block = prior, leader, block
        self.threshold, self.n_draws = threshold, n_draws

    def posterior(self, rounds: list[Round]) -> Posterior:
        """Every round's measurements that no later round repeats: a candidate enters a round's
        block unless a later round measured it at the same level (replayed rounds reuse the seeds
        of the round before, so only the last counts; verify's rounds at other levels are other
        fine-tunes). A reduced round's gains over scratch are not the protocol's (scratch and a
        pretrained start gain differently from more images and epochs): only the differences
        between its sources count (:attr:`Block.offset`)."""
        blocks = []
        for i, r in enumerate(rounds):
            later = {s for q in rounds[i + 1:] if q.level == r.level for s in q.alive}
            names = [s for s in r.alive if s != self.prior.reference and s not in later]
            if names:
                b = self.block(r, names)
                b.offset = not r.level.full
                blocks.append(b)
        return combine(self.prior, blocks)

    def rank(self, rounds: list[Round]) -> list[str]:
        p = self.posterior(rounds)
        pb = p.p_best(self.n_draws)
        return sorted(rounds[-1].alive, key=lambda s: (-pb[s], -p.mean[p.names.index(s)], s))

    def pick(self, rounds: list[Round]) -> str:
        p = self.posterior(rounds)
        return report(self.prior, p, self.leader, self.threshold)["pick"] if self.leader is None \
            else p.pick(self.leader, self.threshold)

    def report(self, rounds: list[Round]) -> dict:
        return report(self.prior, self.posterior(rounds), self.leader, self.threshold)
