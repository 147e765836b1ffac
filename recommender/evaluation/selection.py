"""Nested selection of the method a KB ships, under leave-one-group-out (LOGO).

The winner's curse: picking the best of ten methods on the same folds it is then
reported with flatters the winner. Here the choice is part of the procedure being
evaluated. For each outer held-out group g:

1. every candidate of the registry (:mod:`recommender.model.methods`) is scored by an
   inner LOGO over the *training* groups only (g's rows, columns and statistics never
   enter); Optuna-tuned meta-models are scored from their trials' per-target τw, each
   inner target scored by the trial that is best on the *other* inner targets, so
   tuning's own optimism does not favour them;
2. the candidate with the highest inner mean τw is chosen (ties: the simpler one);
3. the chosen method, fitted on the training groups, ranks g's targets — the outer
   "shipped" figure, an estimate of the whole procedure; every candidate's own outer
   row is kept for reference only;
4. its predicted AUC (the learned level of the target, :class:`~recommender.model.outcome.LevelModel`,
   plus the method's deviation: the learned model's own in AUC units, else the KB's spread
   times its within-target normal score) gets a split-conformal interval normalised by the
   target's difficulty, whose residuals are the inner LOGO predictions on the training groups
   (never g's own); so does its predicted gain over scratch (predicted AUC − scratch's), from
   the same inner cells, when scratch is a source.

The candidates are the few declared in :data:`recommender.model.methods.SELECTION`; each
estimator alone is scored on the outer folds for reference only.

The same steps on all groups choose, fit and calibrate what ``recommend`` ships.
Two procedures run side by side: ``any`` (candidates without transferability estimates)
and, for KBs with estimates, ``estimates`` (every candidate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import weightedtau

from recommender.evaluation import conformal, tuning
from recommender.model import MetaDataset, all_rows, fold_rows
from recommender.model.methods import (
    Context,
    Method,
    auc_level,
    candidates,
    normal_scores,
    references,
    uses_estimates_params,
)
from recommender.model.outcome import LevelModel
from recommender.model.scoring import difficulty

SCENARIOS = ("any", "estimates")
ROW_NAME = {"any": "shipped", "estimates": "shipped+est"}


# -- groups and cached splits ------------------------------------------------------------
def group_of(md: MetaDataset, name: str) -> str:
    """The independence group of a dataset (its own name when none is declared)."""
    if getattr(md, "groups", None) and name in md.groups:
        return str(md.groups[name])
    mates = md.twins.get(name, set())
    return sorted({name, *mates})[0]


class Folds:
    """Leave-one-group-out splits of a meta-dataset, each held-out set computed once.

    ``split(H)`` holds out every dataset of the groups in H (rows as sources, columns as
    targets) and returns the training rows and the rows of all H's targets; an inner split
    of outer g (held-out h) is ``split({g, h})`` restricted to h's targets, which is also the
    outer split of h's inner fold g, so each pair is computed once.
    """

    def __init__(self, md: MetaDataset) -> None:
        self.md = md
        self.groups: dict[str, list[str]] = {}
        for t in md.targets:
            self.groups.setdefault(group_of(md, t), []).append(t)
        self._cache: dict[frozenset[str], tuple[pd.DataFrame, pd.DataFrame]] = {}

    @property
    def labels(self) -> list[str]:
        return list(self.groups)

    def split(self, held: frozenset[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        if held not in self._cache:
            targets = [t for g in sorted(held) for t in self.groups.get(g, [])]
            self._cache[held] = fold_rows(self.md, targets)
        return self._cache[held]

    def outer(self, g: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.split(frozenset([g]))

    def inner(self, g: str | None) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
        """(h, train, test rows of h's targets) for every group h ≠ g."""
        out = []
        for h in self.labels:
            if h == g:
                continue
            train, test = self.split(frozenset([h]) if g is None else frozenset([g, h]))
            out.append((h, train, test[test["target"].isin(self.groups[h])].reset_index(drop=True)))
        return out


# -- scoring helpers ---------------------------------------------------------------------
def tau_per_target(score: np.ndarray, rows: pd.DataFrame) -> dict[str, float]:
    """τw of ``score`` against AUC per target of ``rows`` (NaN scores last; NaN when constant)."""
    out = {}
    y_all = rows["auc"].to_numpy(dtype=float)
    s_all = np.asarray(score, dtype=float)
    for t, idx in rows.groupby("target", sort=False).indices.items():
        s, y = s_all[idx], y_all[idx]
        ok = np.isfinite(y)
        s, y = s[ok], y[ok]
        if np.isnan(s).any():
            low = np.nanmin(s) - 1.0 if np.isfinite(s).any() else 0.0
            s = np.where(np.isnan(s), low, s)
        out[str(t)] = float(weightedtau(s, y)[0]) if len(y) >= 2 and np.ptp(s) > 0 else math.nan
    return out


def _mean0(vals) -> float:  # noqa: ANN001
    v = [0.0 if (x is None or not math.isfinite(x)) else float(x) for x in vals]
    return float(np.mean(v)) if v else math.nan


def _allowed(method: Method, trial_params: dict, ctx: Context) -> bool:
    if method.tuned not in (None, "any") and trial_params.get("kind") != method.tuned:
        return False
    return method.uses_estimates or not uses_estimates_params(trial_params, ctx)


def best_trial(study, method: Method, ctx: Context, skip: set[str] = frozenset()):  # noqa: ANN001, ANN201
    """The trial allowed for ``method`` with the best mean τw over inner targets not in ``skip``."""
    best, best_v = None, -math.inf
    for t in tuning.completed(study):
        params = tuning.trial_params(t)
        if not _allowed(method, params, ctx):
            continue
        taus = t.user_attrs.get("tau_w") or {}
        v = _mean0([x for k, x in taus.items() if k not in skip])
        if v > best_v:  # strict: ties keep the earliest trial
            best, best_v = t, v
    return best


def tuned_inner_scores(study, method: Method, ctx: Context, inner_groups: dict[str, list[str]]
                       ) -> tuple[dict[str, float], dict[str, dict]]:
    """Per inner target: τw of the trial that is best on the other inner groups (no refits)."""
    scores: dict[str, float] = {}
    chosen: dict[str, dict] = {}
    for h, targets in inner_groups.items():
        t = best_trial(study, method, ctx, skip=set(targets))
        if t is None:
            continue
        chosen[h] = tuning.trial_params(t)
        taus = t.user_attrs.get("tau_w") or {}
        for u in targets:
            v = taus.get(u)
            scores[u] = math.nan if v is None else float(v)
    return scores, chosen


# -- one fold of the procedure -------------------------------------------------------------
@dataclass
class Choice:
    """What one run of the procedure chose, from which inner scores, with which calibration."""

    scenario: str
    method: str
    inner_tau_w: float
    calibration: dict
    params: dict | None = None


@dataclass
class FoldOutcome:
    group: str
    targets: list[str]
    inner: dict[str, float]  # candidate → inner mean τw
    choices: dict[str, Choice]
    predictions: pd.DataFrame  # method, target, source, score, auc (every candidate + shipped rows)
    intervals: pd.DataFrame  # scenario, target, source, auc, predicted_auc, lo, hi (+ gain columns
    #                          predicted_gain, gain_lo, gain_hi, gain when the KB has scratch)
    params: dict[str, dict] = field(default_factory=dict)


def _fit_score(method: Method, ctx: Context, params: dict | None, train: pd.DataFrame,
               test: pd.DataFrame) -> np.ndarray:
    c = Context(ctx.pair_features, ctx.directions, ctx.kinds, ctx.groups, params)
    return method.fit(train, c).score(test)


def _choose(inner: dict[str, float], cands: dict[str, Method], scenario: str,
            per: dict[str, dict[str, float]] | None = None) -> str:
    """The one-standard-error rule on inner scores: the simplest candidate whose inner mean τw is
    within one paired standard error of the best one's (Breiman et al. 1984; simpler = static,
    then residual, estimates, rank averages, meta-models). With dozens of candidates and a dozen
    inner targets, the plain maximum mostly picks noise; this prefers the prior unless a richer
    method is ahead by more than its own uncertainty. Within one SE a method in AUC units (the
    learned model) is preferred to a pure ranker when the folder has estimates (added after KB
    local v3's first run, where the rank average of static and every estimate shipped and its
    gain column followed rank alone; preferring it without estimates too made the estimate-free
    procedure detectably worse than static there, τw 0.276 vs 0.322, so it is not done)."""
    allowed = [m for m in cands.values() if scenario == "estimates" or not m.uses_estimates]
    allowed = [m for m in allowed if math.isfinite(inner.get(m.name, math.nan))]
    best = max(allowed, key=lambda m: (round(inner[m.name], 12), -m.order))
    if not per or not per.get(best.name):
        return best.name
    ref = per[best.name]

    def within_one_se(m: Method) -> bool:
        common = [t for t in ref if t in per.get(m.name, {})]
        if len(common) < 3:
            return m is best
        d = np.array([_mean0([ref[t]]) - _mean0([per[m.name][t]]) for t in common])
        return float(d.mean()) <= float(d.std(ddof=1) / np.sqrt(len(d)))

    near = [m for m in allowed if within_one_se(m)]
    # among those, a method that predicts the AUC and the gain itself (the learned model) comes
    # first: only it makes the order, the gain column and the verdict one model's; a ranker
    # ships only when it is ahead by more than one paired standard error
    # (with estimates only: without them the learned deviation knows nothing of this folder's
    # sources beyond its card, and the KB's prior stays the simplest order; the level is learned
    # either way)
    learned = [m for m in near if m.auc_units] if scenario == "estimates" else []
    return min(learned or near, key=lambda m: (m.order, -round(inner[m.name], 12))).name


class Procedure:
    """Nested selection on one KB: candidates, studies, inner scores, choices and calibration."""

    def __init__(self, md: MetaDataset, folds: Folds | None = None, retune: bool = False,
                 n_trials: int = tuning.N_TRIALS, storage: str | None = None,
                 nominal: float = conformal.NOMINAL,
                 on_trial: Callable[[], None] | None = None) -> None:
        self.md, self.folds = md, folds or Folds(md)
        self.ctx = Context.of(md)
        self.cands = candidates(self.ctx, estimates=True)
        self.refs = {k: v for k, v in references(self.ctx).items() if k not in self.cands}
        # (id(train), with estimates) -> (train, model): the frame is held so that its id cannot be
        # reused by a later fold's frame (which would hand that fold a level fit on other rows)
        self._levels: dict[tuple[int, bool], tuple[pd.DataFrame, LevelModel]] = {}
        self.scenarios = ["any"] + (["estimates"] if self.ctx.estimators else [])
        self.retune, self.n_trials, self.storage = retune, n_trials, storage
        self.nominal, self.on_trial = nominal, on_trial

    def study(self, g: str | None, inner: list[tuple[str, pd.DataFrame, pd.DataFrame]]):  # noqa: ANN201
        splits = [(tr, te) for _, tr, te in inner]
        return tuning.get_study(self.md, g, retune=self.retune, n_trials=self.n_trials,
                                storage=self.storage, on_trial=self.on_trial, splits=splits)

    def inner_scores(self, inner: list[tuple[str, pd.DataFrame, pd.DataFrame]], study
                     ) -> tuple[dict[str, dict[str, float]], dict[str, list[np.ndarray]], dict[str, dict]]:
        """Per candidate: τw per inner target; inner scores per split (untuned); per-fold trial params (tuned)."""
        per: dict[str, dict[str, float]] = {}
        scores: dict[str, list[np.ndarray]] = {}
        tuned_params: dict[str, dict] = {}
        inner_groups = {h: self.folds.groups[h] for h, _, _ in inner}
        for name, m in self.cands.items():
            if m.tuned:
                if study is not None:
                    per[name], tuned_params[name] = tuned_inner_scores(study, m, self.ctx, inner_groups)
                continue
            per[name], scores[name] = {}, []
            for _h, train, test in inner:
                s = _fit_score(m, self.ctx, None, train, test)
                per[name].update(tau_per_target(s, test))
                scores[name].append(s)
        return per, scores, tuned_params

    def n_candidates(self, scenario: str) -> int:
        """How many candidates the scenario's selection searches."""
        return sum(1 for m in self.cands.values() if scenario == "estimates" or not m.uses_estimates)

    def level_model(self, train: pd.DataFrame, scenario: str) -> LevelModel:
        """The learned level on ``train`` for a scenario (with estimates only in ``estimates``)."""
        key = (id(train), scenario == "estimates")
        hit = self._levels.get(key)
        if hit is None or hit[0] is not train:
            self._levels[key] = (train, LevelModel.fit(train, self.ctx, use_estimates=key[1]))
        return self._levels[key][1]

    def terms(self, m: Method, score: np.ndarray, train: pd.DataFrame, test: pd.DataFrame,
              scenario: str) -> pd.DataFrame:
        """Per test row: z, mu (learned level), sd (training spread), u (deviation), scale
        (difficulty) and novelty (distance of the test target from the training targets)."""
        lv = auc_level(train)
        z = normal_scores(score, test["target"].to_numpy())
        lm = self.level_model(train, scenario)
        mu = lm.level(test)
        u = np.nan_to_num(np.asarray(score, dtype=float)) if m.auc_units else lv["sd"] * z
        out = pd.DataFrame({"target": test["target"].to_numpy(), "source": test["source"].to_numpy(),
                            "z": z, "auc": test["auc"].to_numpy(dtype=float), "mu": mu, "sd": lv["sd"],
                            "u": u, "scale": difficulty(mu)})
        nov = lm.novelty(test)
        return out.assign(novelty=nov) if np.isfinite(nov).all() else out

    def _cal_rows(self, score: np.ndarray, train: pd.DataFrame, test: pd.DataFrame, m: Method | None = None,
                  scenario: str = "any") -> pd.DataFrame:
        if m is None:
            lv = auc_level(train)
            return pd.DataFrame({"target": test["target"].to_numpy(), "source": test["source"].to_numpy(),
                                 "z": normal_scores(score, test["target"].to_numpy()),
                                 "auc": test["auc"].to_numpy(dtype=float), "mu": lv["mu"], "sd": lv["sd"]})
        return self.terms(m, score, train, test, scenario)

    def _tuned_cal(self, m: Method, inner, fold_params: dict[str, dict]) -> pd.DataFrame:  # noqa: ANN001
        """Inner predictions of a tuned candidate, each inner fold with the trial chosen without it."""
        rows = []
        for h, train, test in inner:
            if h in fold_params:
                rows.append(self._cal_rows(_fit_score(m, self.ctx, fold_params[h], train, test), train, test))
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
            columns=["target", "source", "z", "auc", "mu", "sd"])

    def choose(self, g: str | None) -> tuple[dict[str, float], dict[str, Choice], dict[str, dict], list]:
        """Inner scores and the choice (with calibration) per scenario for outer group g (None: all)."""
        inner = self.folds.inner(g)
        study = self.study(g, inner) if any(m.tuned for m in self.cands.values()) else None
        per, preds, tuned = self.inner_scores(inner, study)
        means = {name: _mean0(per[name].values()) if per.get(name) else math.nan for name in self.cands}
        params = {}
        for name, m in self.cands.items():
            if m.tuned:
                t = best_trial(study, m, self.ctx)
                if t is not None:
                    params[name] = tuning.trial_params(t)
                else:
                    means[name] = math.nan
        choices = {}
        for scen in self.scenarios:
            name = _choose(means, self.cands, scen, per)
            m = self.cands[name]
            cal_rows = (self._tuned_cal(m, inner, tuned[name]) if m.tuned else pd.concat(
                [self._cal_rows(sc, tr, te, m, scen) for sc, (_, tr, te) in zip(preds[name], inner, strict=True)],
                ignore_index=True))
            choices[scen] = Choice(scen, name, means[name], conformal.calibrate(cal_rows, self.nominal),
                                   params.get(name))
        return means, choices, params, inner

    def outer_fold(self, g: str) -> FoldOutcome:
        """Steps 1–4 for held-out group g."""
        means, choices, params, _ = self.choose(g)
        train, test = self.folds.outer(g)
        rows, scores = [], {}
        for name, m in (self.cands | self.refs).items():
            if m.tuned and name not in params:
                continue
            s = _fit_score(m, self.ctx, params.get(name), train, test)
            scores[name] = s
            rows.append(_pred_rows(name, test, s))
        ivs = []
        for scen, ch in choices.items():
            s = scores[ch.method]
            rows.append(_pred_rows(ROW_NAME[scen], test, s))
            t = self.terms(self.cands[ch.method], s, train, test, scen)
            nov = t["novelty"].to_numpy() if "novelty" in t else None
            iv = conformal.interval_terms(t["mu"].to_numpy(), t["u"].to_numpy(), ch.calibration, nov)
            iv = conformal.intervals_with_gain(iv, test["source"].to_numpy(), test["target"].to_numpy(),
                                               test["auc"].to_numpy(dtype=float), ch.calibration)
            iv.insert(0, "scenario", scen)
            iv.insert(1, "target", test["target"].to_numpy())
            iv.insert(2, "source", test["source"].to_numpy())
            iv["auc"] = test["auc"].to_numpy(dtype=float)
            iv["level"] = t["mu"].to_numpy()
            if nov is not None:
                iv["novelty"] = nov
            iv["baseline_auc"] = auc_level(train)["mu"]  # the KB's average level: what a folder-blind model says
            ivs.append(iv)
        return FoldOutcome(g, list(self.folds.groups[g]), means, choices,
                           pd.concat(rows, ignore_index=True), pd.concat(ivs, ignore_index=True), params)

    def final(self) -> tuple[dict[str, float], dict[str, Choice], dict[str, dict]]:
        """The same choice on all groups (for ``recommend``): inner scores, choices, tuned params."""
        means, choices, params, _ = self.choose(None)
        return means, choices, params

    def fit_final(self, choice: Choice) -> dict:
        """The chosen method fitted on every target: method, words, state, level, calibration."""
        rows = all_rows(self.md)
        m = self.cands[choice.method]
        c = Context(self.ctx.pair_features, self.ctx.directions, self.ctx.kinds, self.ctx.groups,
                    choice.params)
        fitted = m.fit(rows, c)
        level = self.level_model(rows, choice.scenario)
        return {"method": m.name, "words": m.words, "uses_estimates": m.uses_estimates,
                "auc_units": m.auc_units, "params": choice.params, "state": fitted.state(),
                "level": auc_level(rows) | {"model": level.state()},
                "calibration": choice.calibration, "inner_tau_w": choice.inner_tau_w}


def _pred_rows(method: str, test: pd.DataFrame, score: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"method": method, "target": test["target"].to_numpy(),
                         "source": test["source"].to_numpy(), "score": np.asarray(score, dtype=float),
                         "auc": test["auc"].to_numpy(dtype=float)})
