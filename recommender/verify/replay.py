"""Verify replayed on a KB's per-seed records: what would successive halving have picked?

Each KB record of one (source, target, seed) is one full fine-tune, so verify's schedule
can be replayed without training: round 1 gives every shortlisted candidate one seed, the
better half of the sources gets more seeds, and so on (``halving.successive_halving`` with
every round at the full protocol). Verify sees only the *verify seeds*; the truth it is
judged against is the mean over other, disjoint *truth seeds*, so a lucky seed that fooled
verify does not also define the answer (the replay is not optimistic).

``replay_posterior`` replays verify as it ships: the same schedule, halving by the posterior
P(best), the pick by the displacement rule (:mod:`recommender.verify.posterior`), its prior
the held-out prediction rows of the target and its measurement floor the seed spread of the
other groups' targets.

The methods that do not fine-tune are scored against the same truth, leave-one-group-out:
the static ranking is recomputed without the held-out target's group (the target, its
parent/derived tasks and twins); the transferability estimates are per-target numbers that
never saw a fine-tune. The best of them is chosen after the fact, which favours it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from experiments import KnowledgeBase
from experiments.cells import SCRATCH
from recommender.model import static_scores
from recommender.verify.halving import Budget, Round, successive_halving
from recommender.verify.posterior import (
    DISPLACE,
    Picker,
    block_from_seeds,
    prior_from_rows,
    seed_floor,
)

__all__ = ["TargetData", "target_data", "method_scores", "replay_verify", "replay_posterior", "replay_kb",
           "group_bootstrap", "synthetic_kb"]


@dataclass
class TargetData:
    target: str
    group: str
    verify: pd.DataFrame  # sources x verify seeds (AUC)
    truth: pd.Series  # source -> mean AUC over the truth seeds


def target_data(kb: KnowledgeBase, target: str, verify_seeds: list[int], truth_seeds: list[int]) -> TargetData | None:
    """Per-seed values of every source on ``target`` that has all verify and truth seeds (None if < 2)."""
    r = kb.records[(kb.records["target"] == target) & (kb.records["metric"] == kb.metric)]
    wide = r.pivot_table(index="source", columns="seed", values="value", aggfunc="mean")
    need = list(dict.fromkeys(verify_seeds + truth_seeds))
    if not set(need) <= set(wide.columns):
        return None
    wide = wide[need].dropna()
    if len(wide) < 2:
        return None
    return TargetData(target, kb.groups.get(target, target), wide[verify_seeds], wide[truth_seeds].mean(axis=1))


def method_scores(kb: KnowledgeBase, target: str, sources: list[str],
                  matrix: pd.DataFrame | None = None) -> dict[str, pd.Series]:
    """Scores (higher = better) of every non-fine-tuning method for ``target``, leave-one-group-out."""
    groups = kb.groups
    group = groups.get(target, target)
    held = {d for d, g in groups.items() if g == group} - {target}
    m = kb.matrix() if matrix is None else matrix
    out = {"static": static_scores(m, target, exclude=held).reindex(sources)}
    pf = kb.pair_features
    if len(pf):
        tx = pf[(pf["target"] == target) & (pf["kind"] == "transferability")]
        for f, g in tx.groupby("feature"):
            out[f"estimate:{f}"] = g.groupby("source")["value"].mean().reindex(sources)
    return out


def _top(scores: pd.Series, k: int | None = None) -> list[str]:
    """Sources by score, best first; missing scores last (in name order)."""
    s = scores.astype(float)
    order = sorted(s.index, key=lambda n: (np.isnan(s[n]), -np.nan_to_num(s[n], nan=0.0), n))
    return order if k is None else order[:k]


def replay_verify(td: TargetData, shortlist: list[str], fraction: float) -> tuple[str, float]:
    """Successive halving over the verify seeds for ``shortlist`` + scratch: (pick, compute fraction used)."""
    seeds = list(td.verify.columns)
    srcs = [s for s in shortlist if s != SCRATCH and s in td.verify.index]
    n = len(srcs) + 1
    bud = Budget(fraction * n * len(seeds))
    have: dict[str, int] = {}

    def measure(rnd: Round) -> None:
        for s in rnd.alive:
            bud.spent += max(0, rnd.seeds - have.get(s, 0))
            have[s] = max(have.get(s, 0), rnd.seeds)
        rnd.values = {s: [float(td.verify.loc[s, c]) for c in seeds[:rnd.seeds]] for s in rnd.alive}

    rounds = successive_halving(srcs, SCRATCH, len(seeds), bud, measure, seeds_only=True)
    last = rounds[-1]
    pick = max(last.alive, key=lambda s: (np.mean(last.values[s]), s))
    return pick, bud.spent / (n * len(seeds))


def replay_posterior(td: TargetData, shortlist: list[str], fraction: float, prior_rows: pd.DataFrame | None,
                     leader: str | None = None, sigma2: float = float("nan"),
                     threshold: float = DISPLACE) -> tuple[str, float, str]:
    """Verify with the prediction as prior (:mod:`recommender.verify.posterior`): the same
    schedule as :func:`replay_verify`, halving by posterior P(best) and picking by the
    displacement rule; (pick, compute fraction used, predicted leader)."""
    seeds = list(td.verify.columns)
    srcs = [s for s in shortlist if s != SCRATCH and s in td.verify.index]
    cands = [*srcs, SCRATCH]
    prior = prior_from_rows(prior_rows, cands, SCRATCH)
    lead = leader if leader in cands else prior.leader(cands)
    n = len(cands)
    bud = Budget(fraction * n * len(seeds))
    have: dict[str, int] = {}

    def measure(rnd: Round) -> None:
        for s in rnd.alive:
            bud.spent += max(0, rnd.seeds - have.get(s, 0))
            have[s] = max(have.get(s, 0), rnd.seeds)
        rnd.values = {s: [float(td.verify.loc[s, c]) for c in seeds[:rnd.seeds]] for s in rnd.alive}

    picker = Picker(prior, lead, lambda r, names: block_from_seeds(r.values, SCRATCH, sigma2, r.index, names),
                    threshold)
    rounds = successive_halving(srcs, SCRATCH, len(seeds), bud, measure, seeds_only=True, rank=picker.rank)
    return picker.pick(rounds), bud.spent / (n * len(seeds)), lead


def group_bootstrap(values: pd.Series, groups: pd.Series, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean over targets, resampling whole groups (targets of one group share images)."""
    rng = np.random.default_rng(seed)
    keys = list(pd.unique(groups))
    sums = np.array([values[groups == g].to_numpy(dtype=float).sum() for g in keys])
    counts = np.array([(groups == g).sum() for g in keys], dtype=float)
    pick = rng.integers(0, len(keys), size=(n_boot, len(keys)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def replay_kb(kb: KnowledgeBase, budgets: list[float], verify_seeds: list[int], truth_seeds: list[int],
              top: int = 4, shortlists: tuple[str, ...] = ("static",), allow_overlap: bool = False,
              extra_scores: dict[str, dict[str, pd.Series]] | None = None,
              priors: dict[str, pd.DataFrame] | None = None, posterior: bool = False,
              threshold: float = DISPLACE) -> dict:
    """Regret per held-out target of every non-fine-tuning method and of verify at each budget.

    ``shortlists``: which method's top ``top`` (plus scratch) verify measures: ``static``, an
    ``estimate:<name>``, a method of ``extra_scores``, ``best`` (the non-fine-tuning method with
    the lowest mean regret) or ``all`` (every source; ``top`` ignored). ``allow_overlap`` is for
    checking the replay itself (verify on the truth's own seeds at full budget must have no
    regret). ``extra_scores``: target → method → held-out scores over sources (e.g. the LOTO
    ``shipped`` rows), judged against the same truth seeds as the rest. ``posterior``: also
    verify with the prediction as prior (columns ``posterior[<shortlist>]@<budget>``, see
    :func:`replay_posterior`): ``priors`` maps a target to its held-out prediction rows (source,
    predicted_auc, lo, hi, gain columns; none: a flat prior), the predicted leader is the shortlist
    method's first, and the measurement floor is the seed spread of the *other* groups' targets.
    ``picks``: per target and posterior column, the leader, the pick and whether it moved.
    """
    if set(verify_seeds) & set(truth_seeds) and not allow_overlap:
        raise ValueError("verify seeds and truth seeds must be disjoint")
    per: list[dict] = []
    data, scores = {}, {}
    matrix = kb.matrix()
    for t in kb.targets:
        td = target_data(kb, t, verify_seeds, truth_seeds)
        if td is None:
            continue
        data[t] = td
        best = td.truth.max()
        row = {"target": t, "group": td.group, "n_sources": len(td.truth)}
        scores[t] = method_scores(kb, t, list(td.truth.index), matrix)
        for m, sc in ((extra_scores or {}).get(t) or {}).items():
            scores[t][m] = sc.groupby(level=0).mean().reindex(td.truth.index)
        for m, sc in scores[t].items():
            if sc.notna().sum() >= 2:
                row[m] = float(best - td.truth[_top(sc)[0]])
        per.append(row)
    df = pd.DataFrame(per)
    methods = [c for c in df.columns if c not in ("target", "group", "n_sources") and df[c].notna().all()]
    best_method = min(methods, key=lambda m: df[m].mean())
    floors: dict[str, float] = {}
    picks: list[dict] = []
    recs = kb.records[kb.records["metric"] == kb.metric]
    for sl in shortlists:
        src_method = best_method if sl == "best" else sl
        for f in budgets:
            for kind in ("verify", "posterior") if posterior else ("verify",):
                col, used = f"{kind}[{sl}]@{f:g}", []
                for i, t in enumerate(df["target"]):
                    td = data[t]
                    sc = scores[t]
                    cand = (list(td.truth.index) if sl == "all" else
                            [s for s in _top(sc[src_method]) if s != SCRATCH][:top])
                    if kind == "verify":
                        pick, frac = replay_verify(td, cand, f)
                    else:
                        if td.group not in floors:
                            held = {d for d, g in kb.groups.items() if g == td.group} | {t}
                            floors[td.group] = seed_floor(recs, SCRATCH, held, verify_seeds)
                        lead = None if sl == "all" else _top(sc[src_method])[0]
                        pick, frac, lead = replay_posterior(td, cand, f, (priors or {}).get(t), lead,
                                                            floors[td.group], threshold)
                        picks.append({"target": t, "method": col, "leader": lead, "pick": pick,
                                      "displaced": pick != lead,
                                      "gain_of_move": float(td.truth[pick] - td.truth[lead])})
                    df.loc[i, col] = float(td.truth.max() - td.truth[pick])
                    used.append(frac)
                df.attrs.setdefault("compute", {})[col] = float(np.mean(used))
    summary = []
    for c in [c for c in df.columns if c not in ("target", "group", "n_sources")]:
        v = df[c].dropna()
        lo, hi = group_bootstrap(v, df.loc[v.index, "group"])
        summary.append({"method": c, "n_targets": int(len(v)), "n_groups": int(df.loc[v.index, "group"].nunique()),
                        "mean_regret": float(v.mean()), "lo": lo, "hi": hi,
                        "compute": df.attrs.get("compute", {}).get(c, 0.0)})
    return {"per_target": df, "summary": pd.DataFrame(summary), "best_non_probing": best_method,
            "picks": pd.DataFrame(picks, columns=["target", "method", "leader", "pick", "displaced", "gain_of_move"])}


def paired(df: pd.DataFrame, a: str, b: str) -> dict:
    """Mean of a − b over targets, group-bootstrap 95% CI, Wilcoxon p, n."""
    d = (df[a] - df[b]).dropna()
    lo, hi = group_bootstrap(d, df.loc[d.index, "group"])
    p = float(wilcoxon(d).pvalue) if len(d) >= 2 and np.any(d != 0) else None
    return {"diff": float(d.mean()), "lo": lo, "hi": hi, "wilcoxon_p": p, "n": int(len(d))}


def synthetic_kb(n_targets: int = 8, n_sources: int = 6, n_seeds: int = 10, seed: int = 0,
                 seed_sd: float = 0.02) -> KnowledgeBase:
    """A KB with known structure (source quality + source x target interaction + seed noise) and
    one noisy transferability estimate, for testing the replay before a real KB exists."""
    rng = np.random.default_rng(seed)
    sources = [f"s{i}" for i in range(n_sources)] + [SCRATCH]
    targets = [f"t{j}" for j in range(n_targets)]
    quality = rng.normal(0, 0.02, len(sources))
    rows, pf = [], []
    for t in targets:
        base = rng.uniform(0.7, 0.9)
        inter = rng.normal(0, 0.02, len(sources))
        for i, s in enumerate(sources):
            mu = base + quality[i] + inter[i]
            pf.append({"source": s, "target": t, "feature": "logme", "kind": "transferability", "provenance": "synthetic",
                       "value": mu + rng.normal(0, 0.03)} if s != SCRATCH else None)
            for k in range(n_seeds):
                rows.append({"source": s, "target": t, "metric": "roc_auc", "value": mu + rng.normal(0, seed_sd),
                             "fold": -1, "seed": k})
    man = {"name": "synthetic", "metric": "roc_auc", "sources": sources, "targets": targets,
           "groups": {t: f"g{j // 2}" for j, t in enumerate(targets)} | {s: s for s in sources}}
    return KnowledgeBase("synthetic", pd.DataFrame(rows), pd.DataFrame({"name": sources + targets}), man,
                         pair_features=pd.DataFrame([p for p in pf if p]))
