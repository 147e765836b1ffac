"""Every method a KB can ship, in one registry: name → fit on training rows → score new rows.

A method turns the feature rows of one fold (:func:`~recommender.model.meta_dataset.fold_rows`:
``fold_`` features come from training cells only) into a score per row, higher = better.
Nested selection (:mod:`recommender.evaluation.selection`) scores every candidate with an
inner leave-one-group-out and ships the winner; ``recommend`` loads the winner's fitted
state. Adding a method is one function decorated with :func:`stateless` (a score from
the rows alone) or one :func:`family` that yields :class:`Method` objects.

Names: plain names use no transferability estimate, so they work for any target; names
with ``+est``, ``estimate:`` or ``rankavg:`` need estimates computed on the target's
labelled images with the KB's checkpoints.

The shared vocabulary (:class:`Context`, :class:`Fitted`, the score → predicted AUC map)
lives in :mod:`recommender.model.scoring`.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recommender.model import meta_model as mm
from recommender.model.outcome import OutcomeModel
from recommender.model.residual import ResidualModel
from recommender.model.scoring import (  # noqa: F401 - re-exported: the registry's vocabulary
    ESTIMATE_KIND,
    Context,
    Fitted,
    auc_interval,
    auc_level,
    column,
    nan_safe,
    normal_scores,
    predicted_auc,
    within_target_pct,
)

EST = "+est"
MAX_IN_RANK_AVERAGE = 3
# The candidates nested selection searches, declared here (≤ 8): with 20-odd training groups an
# inner loop cannot find the best of dozens (on KB local v2 it searched 56 and chose 9 different
# methods in 11 folds). Every other registered method can still be loaded and scored by name.
SELECTION = ("static", "residual", "learned", "estimate:best", "rankavg:static+all", "stack+est",
             "learned+est")


@dataclass(frozen=True)
class Method:
    name: str
    words: str
    uses_estimates: bool
    fit: Callable[[pd.DataFrame, Context], Fitted]
    load: Callable[[dict, Context], Fitted]
    tuned: str | None = None  # meta-model candidates: 'any' / 'regressor' / 'ranker' (Optuna trials)
    auc_units: bool = False  # the score is a predicted AUC deviation (the learned model), not a rank

    @property
    def order(self) -> int:
        """Complexity, for the one-standard-error rule and ties: static < residual < one estimate
        < rank averages (by size) < meta-models; a variant that reads estimates one step up."""
        n = self.name
        if n.startswith("rankavg:"):
            return 30 + n.count("+")
        base = next((v for p, v in (("static", 0), ("residual", 10), ("estimate:", 20), ("stack", 35),
                                    ("learned", 40), ("meta", 45)) if n.startswith(p)), 90)
        return base + (1 if n.endswith(EST) else 0)


_FAMILIES: list[Callable[[Context], Iterator[Method]]] = []


def family(fn: Callable[[Context], Iterator[Method]]) -> Callable[[Context], Iterator[Method]]:
    """Register a function that yields the methods of one family for a KB's context."""
    _FAMILIES.append(fn)
    return fn


class _Stateless(Fitted):
    def __init__(self, fn: Callable[[pd.DataFrame, Context], np.ndarray], ctx: Context) -> None:
        self.fn, self.ctx = fn, ctx

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.fn(rows, self.ctx), dtype=float)


def stateless_method(name: str, words: str, fn: Callable[[pd.DataFrame, Context], np.ndarray],
                     uses_estimates: bool = False) -> Method:
    """A method that needs no fitting: its score is a function of the fold's rows."""
    return Method(name, words, uses_estimates, lambda _train, ctx: _Stateless(fn, ctx),
                  lambda _state, ctx: _Stateless(fn, ctx))


def stateless(name: str, words: str, uses_estimates: bool = False):  # noqa: ANN201
    """Decorator: register ``fn(rows, ctx) -> scores`` as a method of its own."""
    def deco(fn: Callable[[pd.DataFrame, Context], np.ndarray]):  # noqa: ANN202
        @family
        def _one(_ctx: Context) -> Iterator[Method]:
            yield stateless_method(name, words, fn, uses_estimates)
        return fn
    return deco


# -- the families -------------------------------------------------------------------------
@stateless("static", "static ranking: each source's mean standardised AUC over the training targets")
def static_score(rows: pd.DataFrame, _ctx: Context) -> np.ndarray:
    return column(rows, "fold_static_prior")


def _estimate(e: str) -> Callable[[pd.DataFrame, Context], np.ndarray]:
    def fn(rows: pd.DataFrame, ctx: Context) -> np.ndarray:
        return ctx.directions.get(e, 1) * column(rows, f"pair_{e}")
    return fn


_PCT_CACHE: list[tuple[weakref.ref, tuple[str, ...], pd.DataFrame]] = []


def _pct_table(rows: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    """Within-target percentile ranks of the static prior and every estimate (memoised per frame:
    the dozens of rank averages of one fold share them)."""
    key = tuple(ctx.estimators)
    for ref, k, table in _PCT_CACHE:
        if ref() is rows and k == key:
            return table
    vals = {"static": column(rows, "fold_static_prior")}
    vals |= {e: _estimate(e)(rows, ctx) for e in key}
    table = pd.DataFrame(vals, index=rows.index).groupby(
        rows["target"].to_numpy(), sort=False).rank(pct=True)
    _PCT_CACHE.append((weakref.ref(rows), key, table))
    del _PCT_CACHE[:-8]
    return table


def _rank_average(parts: tuple[str, ...]) -> Callable[[pd.DataFrame, Context], np.ndarray]:
    def fn(rows: pd.DataFrame, ctx: Context) -> np.ndarray:
        stack = _pct_table(rows, ctx)[["static", *parts]].to_numpy(dtype=float).T
        ok = np.isfinite(stack)
        n = ok.sum(axis=0)
        total = np.where(ok, stack, 0.0).sum(axis=0)
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return fn


@family
def estimator_methods(ctx: Context) -> Iterator[Method]:
    """Each transferability estimate alone, and rank averages of the static prior with 1–3 of them."""
    ests = ctx.estimators
    for e in ests:
        yield stateless_method(f"estimate:{e}", f"the {e} estimate computed on the target's images",
                               _estimate(e), uses_estimates=True)
    for k in range(1, min(MAX_IN_RANK_AVERAGE, len(ests)) + 1):
        for parts in itertools.combinations(ests, k):
            yield stateless_method(f"rankavg:static+{'+'.join(parts)}",
                                   f"mean within-target rank of the static prior and {', '.join(parts)}",
                                   _rank_average(parts), uses_estimates=True)


def _tau_on(rows: pd.DataFrame, score: np.ndarray) -> float:
    """Mean weighted τ of ``score`` against the AUC over the targets of training rows."""
    from scipy.stats import weightedtau

    vals = []
    y_all, s_all = rows["auc"].to_numpy(dtype=float), np.asarray(score, dtype=float)
    for _t, idx in rows.groupby("target", sort=False).indices.items():
        s, y = s_all[idx], y_all[idx]
        ok = np.isfinite(s) & np.isfinite(y)
        if ok.sum() >= 3 and np.ptp(s[ok]) > 0:
            vals.append(float(weightedtau(s[ok], y[ok])[0]))
    return float(np.mean(vals)) if vals else -np.inf


class _BestEstimate(Fitted):
    """The single estimator with the best mean τw on the training targets (chosen inside the fit)."""

    def __init__(self, estimator: str | None, ctx: Context) -> None:
        self.estimator, self.ctx = estimator, ctx

    @classmethod
    def fit(cls, train: pd.DataFrame, ctx: Context) -> _BestEstimate:
        taus = {e: _tau_on(train, _estimate(e)(train, ctx)) for e in ctx.estimators}
        best = max(taus, key=lambda e: (taus[e], -ctx.estimators.index(e))) if taus else None
        return cls(best, ctx)

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        if self.estimator is None:
            return column(rows, "fold_static_prior")
        return _estimate(self.estimator)(rows, self.ctx)

    def state(self) -> dict:
        return {"estimator": self.estimator}


class _Stack(Fitted):
    """Ridge weights on the within-target z-scores of the static prior and every estimate,
    learned on the training rows' within-target z of AUC (instead of enumerated rank averages)."""

    ALPHA = 10.0

    def __init__(self, cols: list[str], coef: list[float], ctx: Context) -> None:
        self.cols, self.coef, self.ctx = cols, np.asarray(coef, dtype=float), ctx

    @staticmethod
    def columns(ctx: Context) -> list[str]:
        return ["fold_static_prior_tz", *(f"pair_{e}_tz" for e in ctx.estimators)]

    def _X(self, rows: pd.DataFrame) -> np.ndarray:
        X = np.column_stack([column(rows, c) for c in self.cols]) if self.cols else np.zeros((len(rows), 0))
        signs = np.array([1.0] + [float(self.ctx.directions.get(e, 1)) for e in self.ctx.estimators])
        return np.nan_to_num(X * signs[: X.shape[1]], nan=0.0)

    @classmethod
    def fit(cls, train: pd.DataFrame, ctx: Context) -> _Stack:
        from sklearn.linear_model import Ridge

        self = cls(cls.columns(ctx), [], ctx)
        y = train["label_z"].to_numpy(dtype=float) if "label_z" in train else np.zeros(len(train))
        r = Ridge(alpha=cls.ALPHA, fit_intercept=False).fit(self._X(train), y)
        self.coef = np.asarray(r.coef_, dtype=float)
        return self

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return self._X(rows) @ self.coef

    def state(self) -> dict:
        return {"cols": self.cols, "coef": self.coef.tolist()}


@family
def learned_methods(ctx: Context) -> Iterator[Method]:
    """The learned model of a cell's outcome (:mod:`recommender.model.outcome`), the best single
    estimator chosen on the training targets, a learned stack of estimates, one rank average."""
    variants = [(False, "learned")] + ([(True, f"learned{EST}")] if ctx.estimators else [])
    for w, name in variants:
        words = ("learned model: ridge level + LightGBM deviation from the folder's card and "
                 "meta-features" + (", every source's and scratch's estimates" if w else "")
                 + " and the sources' records")
        yield Method(name, words, w, lambda train, c, w=w: OutcomeModel.fit(train, c, use_estimates=w),
                     lambda state, c: OutcomeModel.from_state(state, c), auc_units=True)
    if not ctx.estimators:
        return
    yield Method("estimate:best", "the single estimate that ranks the training targets best", True,
                 lambda train, c: _BestEstimate.fit(train, c),
                 lambda state, c: _BestEstimate(state.get("estimator"), c))
    yield Method(f"stack{EST}", "ridge-weighted within-target z of the static prior and every estimate",
                 True, lambda train, c: _Stack.fit(train, c),
                 lambda state, c: _Stack(list(state["cols"]), list(state["coef"]), c))
    yield stateless_method("rankavg:static+all", "mean within-target rank of the static prior and every estimate",
                           _rank_average(tuple(ctx.estimators)), uses_estimates=True)


@family
def residual_methods(ctx: Context) -> Iterator[Method]:
    """The static prior plus a strongly shrunk model of each source's deviation from it."""
    variants = [(False, "residual")] + ([(True, f"residual{EST}")] if ctx.estimators else [])
    for with_est, name in variants:
        words = ("static prior + ridge-shrunk deviation from pair features"
                 + (" incl. transferability estimates" if with_est else ""))
        yield Method(name, words, with_est,
                     lambda train, c, w=with_est: ResidualModel.fit(train, c, use_estimates=w),
                     lambda state, c: ResidualModel.from_state(state))


@family
def meta_methods(ctx: Context) -> Iterator[Method]:
    """LightGBM meta-models whose kind and feature set come from Optuna trials (nested)."""
    kinds = (("meta", "any"), ("meta_regressor", "regressor"), ("meta_ranker", "ranker"))
    variants = [False] + ([True] if ctx.estimators else [])
    for with_est in variants:
        for name, kind in kinds:
            label = "LightGBM meta-model" + ("" if kind == "any" else f" ({kind})")
            yield Method(name + (EST if with_est else ""), label, with_est,
                         lambda train, c: MetaFitted.fit(train, c),
                         lambda state, c: MetaFitted.from_state(state), tuned=kind)


class MetaFitted(Fitted):
    """A LightGBM meta-model with the hyper-parameters in ``ctx.params``."""

    def __init__(self, model, cols: list[str], params: dict) -> None:  # noqa: ANN001
        self.model, self.cols, self.params = model, cols, params

    @classmethod
    def fit(cls, train: pd.DataFrame, ctx: Context) -> MetaFitted:
        if ctx.params is None:
            raise ValueError("a meta-model candidate needs tuned params")
        cols = mm.feature_columns(train.columns, ctx.params["features"], ctx.pair_features,
                                  estimators=ctx.estimators)
        return cls(mm.fit_model(ctx.params, train, cols), cols, dict(ctx.params))

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return mm.predict(self.model, rows, self.cols)

    def state(self) -> dict:
        booster = getattr(self.model, "booster_", self.model)
        return {"cols": self.cols, "params": self.params, "booster": booster.model_to_string()}

    @classmethod
    def from_state(cls, state: dict) -> MetaFitted:
        from lightgbm import Booster

        return cls(Booster(model_str=state["booster"]), list(state["cols"]), dict(state["params"]))


def uses_estimates_params(params: dict, ctx: Context) -> bool:
    """Does a meta-model trial's feature set read transferability estimates (on this KB)?"""
    return bool(ctx.estimators) and params.get("features") in ("prior_pair", "all")


_BUILTIN = len(_FAMILIES)  # families registered above; later ones are plug-ins (candidates)


# -- the registry ---------------------------------------------------------------------------
def registered(ctx: Context, estimates: bool = True) -> dict[str, Method]:
    """Every registered method for a KB with this context; ``estimates=False`` keeps those that use none."""
    out: dict[str, Method] = {}
    for fam in _FAMILIES:
        for m in fam(ctx):
            if estimates or not m.uses_estimates:
                out[m.name] = m
    return out


def candidates(ctx: Context, estimates: bool = True) -> dict[str, Method]:
    """The declared candidates of nested selection (:data:`SELECTION`) that exist for this KB, plus
    every method of a family registered after the built-in ones (a plug-in is a candidate)."""
    found = registered(ctx, estimates)
    out = {n: found[n] for n in SELECTION if n in found}
    for fam in _FAMILIES[_BUILTIN:]:
        for m in fam(ctx):
            if estimates or not m.uses_estimates:
                out[m.name] = m
    return out


def references(ctx: Context) -> dict[str, Method]:
    """Methods scored on the outer folds for reference only, never picked: each estimate alone."""
    found = registered(ctx, True)
    return {f"estimate:{e}": found[f"estimate:{e}"] for e in ctx.estimators if f"estimate:{e}" in found}


def get_method(name: str, ctx: Context) -> Method:
    found = registered(ctx, estimates=True)
    if name not in found:
        raise KeyError(f"unknown method {name!r}")
    return found[name]
