"""The simple rules a meta-model must beat, scored per held-out target in the LOTO loop.

Each baseline returns a ``pd.Series`` of scores (higher = better) over the candidate
sources of one held-out target, so the same metric code judges them and the
meta-model. The static ranking follows ../shared/data/kb/README.md to the letter
(its check: mean τw 0.556, regret 0.0053 over the 12 Juodelyte targets); the strict
variant also drops the held-out target's *row* before z-scoring, so t's AUCs as a
source cannot touch its own ranking either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recommender.model.meta_dataset import MetaDataset, column_z, held_out_with_twins

KIND_PREFIX = {"similarity": "most_similar", "expert": "expert", "transferability": "estimate"}

BaselineFn = Callable[[MetaDataset, str, pd.DataFrame, set[str]], "pd.Series | dict[str, pd.Series] | None"]


@dataclass(frozen=True)
class Baseline:
    """One registered rule: ``fn(md, target, test_rows, twins)`` gives scores over
    ``test_rows``' sources (a Series), several named ones (a family: one per pair feature),
    or None when it does not apply to this KB. ``column``: the feature-row column and sign
    that reproduce it on a new target's rows (None: not shippable by ``recommend``)."""

    name: str
    fn: BaselineFn
    column: tuple[str, int] | None = None
    family: bool = False


BASELINES: dict[str, Baseline] = {}


def register_baseline(name: str, *, column: tuple[str, int] | None = None,
                      family: bool = False) -> Callable[[BaselineFn], BaselineFn]:
    """Decorator: adding a baseline is one function here (LOTO scores every registered one)."""

    def deco(fn: BaselineFn) -> BaselineFn:
        if name in BASELINES:
            raise ValueError(f"baseline {name!r} is already registered")
        BASELINES[name] = Baseline(name, fn, column, family)
        return fn

    return deco


def static_scores(matrix: pd.DataFrame, target: str, strict: bool = False,
                  exclude: set[str] | None = None) -> pd.Series:
    """Each source's mean column-z over the other targets, for the sources measured on ``target``.

    ``exclude``: further datasets dropped with the target (its twins): their columns always,
    and in the strict variant their rows too.
    """
    drop = {target} | set(exclude or ())
    other = matrix.drop(columns=[c for c in drop if c in matrix.columns])
    if strict:
        other = other.drop(index=[r for r in drop if r in other.index])
    prior = column_z(other).mean(axis=1, skipna=True)
    cand = matrix[target].dropna().index
    cand = [s for s in cand if s not in drop]
    return prior.reindex(cand).rename("static_strict" if strict else "static")


def static_z_quantiles(matrix: pd.DataFrame, q: tuple[float, float] = (0.1, 0.9)) -> pd.DataFrame:
    """Per source, quantiles of its column-z over KB targets: the static method's 80% band."""
    z = column_z(matrix)
    return pd.DataFrame({f"q{int(p * 100)}": z.quantile(p, axis=1) for p in q})


def largest_source_scores(test_rows: pd.DataFrame) -> pd.Series:
    """Always pick the biggest source (card ``n_images``; ImageNet on Juodelyte)."""
    return pd.Series(test_rows["src_log_n_images"].to_numpy(dtype=float),
                     index=test_rows["source"].to_numpy(), name="largest_source")


def pair_feature_scores(test_rows: pd.DataFrame, feature: str, direction: int) -> pd.Series:
    """Rank by one pair feature (ascending distance / descending similarity).

    A source without the feature (e.g. no shipped profile) stays NaN: the ranking metrics
    leave it out of this method's figures and count it, instead of ranking it last."""
    col = f"pair_{feature}"
    v = test_rows[col].to_numpy(dtype=float) if col in test_rows else np.full(len(test_rows), np.nan)
    return pd.Series(direction * v, index=test_rows["source"].to_numpy(), name=feature)


def pair_method_name(md: MetaDataset, feature: str) -> str:
    return f"{KIND_PREFIX.get(md.pair_kinds.get(feature, ''), 'pair')}:{feature}"


@register_baseline("static", column=("fold_static_prior", 1))
def _static(md: MetaDataset, target: str, test_rows: pd.DataFrame, twins: set[str]) -> pd.Series:
    return static_scores(md.matrix, target, strict=False, exclude=twins)


@register_baseline("static_strict", column=("fold_static_prior", 1))
def _static_strict(md: MetaDataset, target: str, test_rows: pd.DataFrame, twins: set[str]) -> pd.Series:
    return static_scores(md.matrix, target, strict=True, exclude=twins)


@register_baseline("largest_source", column=("src_log_n_images", 1))
def _largest(md: MetaDataset, target: str, test_rows: pd.DataFrame, twins: set[str]) -> pd.Series:
    return largest_source_scores(test_rows)


@register_baseline("always_imagenet")
def _always_imagenet(md: MetaDataset, target: str, test_rows: pd.DataFrame,
                     twins: set[str]) -> pd.Series | None:
    """The seed study's finding as a rule: ImageNet first, every other source tied."""
    src = test_rows["source"]
    if "imagenet" not in set(src):
        return None
    return pd.Series((src == "imagenet").astype(float).to_numpy(), index=src.to_numpy(),
                     name="always_imagenet")


@register_baseline("pair_feature", family=True)
def _pair_features(md: MetaDataset, target: str, test_rows: pd.DataFrame,
                   twins: set[str]) -> dict[str, pd.Series]:
    """One baseline per KB pair feature measured for this target ('most_similar:dist_mmd', ...)."""
    return {pair_method_name(md, f): pair_feature_scores(test_rows, f, md.pair_directions[f])
            for f in md.pair_features
            if f"pair_{f}" in test_rows and test_rows[f"pair_{f}"].notna().any()}


def baseline_scores(md: MetaDataset, target: str, test_rows: pd.DataFrame) -> dict[str, pd.Series]:
    """Every registered baseline's scores for held-out ``target`` over ``test_rows``' sources."""
    twins = held_out_with_twins([target], md.twins) - {target}
    cand = list(test_rows["source"])
    out: dict[str, pd.Series] = {}
    for b in BASELINES.values():
        got = b.fn(md, target, test_rows, twins)
        if got is None:
            continue
        for name, series in (got.items() if isinstance(got, dict) else [(b.name, got)]):
            out[name] = series.reindex(cand)
    return out


def baseline_column(method: str, md: MetaDataset) -> tuple[str, int] | None:
    """For a shippable baseline: (feature-row column, sign) that reproduces it on new-target rows."""
    if method in BASELINES and not BASELINES[method].family:
        return BASELINES[method].column
    if ":" in method:
        f = method.split(":", 1)[1]
        if f in md.pair_directions:
            return f"pair_{f}", md.pair_directions[f]
    return None
