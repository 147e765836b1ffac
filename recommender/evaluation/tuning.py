"""Optuna hyper-parameter search under nested leave-one-group-out.

For each outer held-out group g there is one study; its objective is the mean
weighted Kendall τ of an *inner* leave-one-group-out over the training groups only
(g's targets, rows and columns are excluded from every inner fold), so the outer result
never guides the choice. Model kind (regressor / ranker) and feature set are searched
as categorical parameters. Every trial also records its τw on each inner target, so
nested selection can score "the tuned meta-model" without the optimism of a best-of-N
trial (:func:`recommender.evaluation.selection.tuned_inner_scores`).

Studies live in SQLite (``artifacts/optuna/<kb>.db``) and are reused only when their
fingerprint (the KB's matrix, the held-out group, the splits, the search space) matches,
so a re-exported KB is re-tuned rather than served stale studies. The study
``<kb>__v2__all`` (leave-one-group-out over every group) tunes the shipped model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from scipy.stats import weightedtau

from experiments.knowledge_base import artifacts_dir
from recommender.model import MetaDataset, fold_rows, held_out_with_twins
from recommender.model import meta_model as mm

N_TRIALS = 12
OBJECTIVE = "tau_w"
SPACE_VERSION = 2

optuna.logging.set_verbosity(logging.WARNING)

Split = tuple[pd.DataFrame, pd.DataFrame]


def optuna_dir() -> Path:
    return artifacts_dir() / "optuna"


def storage_url(kb_name: str, root: Path | None = None) -> str:
    root = root or optuna_dir()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / f'{kb_name}.db').resolve()}"


def study_name(kb_name: str, outer: str | None) -> str:
    """``<kb>__v2__all`` or ``<kb>__v2__g__<group>`` (outer = the held-out group's label)."""
    return f"{kb_name}__v{SPACE_VERSION}__all" if outer is None else f"{kb_name}__v{SPACE_VERSION}__g__{outer}"


def estimators_of(md: MetaDataset) -> list[str]:
    return [f for f in md.pair_features if md.pair_kinds.get(f) == "transferability"]


def suggest(trial: optuna.Trial, sets: tuple[str, ...] = mm.FEATURE_SETS) -> dict:
    """The search space: small trees only (≈150 training rows)."""
    p = {
        "kind": trial.suggest_categorical("kind", list(mm.KINDS)),
        "features": trial.suggest_categorical("features", list(sets)),
        "num_leaves": trial.suggest_int("num_leaves", 2, 8),
        "min_child_samples": trial.suggest_int("min_child_samples", 2, 20),
        "n_estimators": trial.suggest_int("n_estimators", 20, 150, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
    }
    if p["kind"] == "ranker":
        p["grades"] = trial.suggest_categorical("grades", ["rank", "bins4"])
    return p


def default_trials(md: MetaDataset) -> list[dict]:
    """Hand-picked starting points, one per candidate family, so each has a trial even with few."""
    base = {k: v for k, v in mm.DEFAULT_PARAMS.items() if k != "grades"}
    out = [dict(base), dict(base, kind="ranker", features="prior_card", grades="rank")]
    if estimators_of(md):
        out.append(dict(base, features="prior_pair_noest"))
    return out


def inner_splits(md: MetaDataset, outer: str | None) -> list[Split]:
    """Leave-one-group-out splits over the targets left once ``outer`` (a target; its group) is held out."""
    exclude = held_out_with_twins([outer], md.twins) if outer is not None else set()
    targets = [t for t in md.targets if t not in exclude]
    seen: set[str] = set()
    out = []
    for u in targets:
        if u in seen:
            continue
        group = [v for v in targets if v in held_out_with_twins([u], md.twins)]
        seen |= set(group)
        out.append(fold_rows(md, group, exclude=exclude))
    return out


def per_target_tau(params: dict, splits: list[Split], md: MetaDataset) -> dict[str, float | None]:
    """τw of a meta-model with ``params`` on each held-out target of ``splits`` (None: constant ranking)."""
    ests = estimators_of(md)
    out: dict[str, float | None] = {}
    for train, val in splits:
        if train.empty or val.empty:
            continue
        cols = mm.feature_columns(train.columns, params["features"], md.pair_features, ests)
        pred = mm.predict(mm.fit_model(params, train, cols), val, cols)
        for t, idx in val.groupby("target", sort=False).indices.items():
            s, y = pred[idx], val["auc"].to_numpy(dtype=float)[idx]
            ok = np.isfinite(y)
            if ok.sum() < 2 or np.ptp(s[ok]) == 0:
                out[str(t)] = None
            else:
                out[str(t)] = float(weightedtau(s[ok], y[ok])[0])
    return out


def cv_score(params: dict, splits: list[Split], md: MetaDataset, metric: str = OBJECTIVE) -> float:
    """Mean τw over the held-out targets of ``splits``; an uninformative (constant) ranking counts 0."""
    vals = [0.0 if v is None else v for v in per_target_tau(params, splits, md).values()]
    return float(np.mean(vals)) if vals else 0.0


def fingerprint(md: MetaDataset, outer: str | None, splits: list[Split]) -> str:
    """Hash of what a study depends on: the matrix, the feature rows, the splits and the search space."""
    h = hashlib.sha256()
    h.update(json.dumps([SPACE_VERSION, outer, list(mm.feature_sets(estimators_of(md))),
                         sorted(md.rows.columns)]).encode())
    h.update(np.round(md.matrix.to_numpy(dtype=float), 10).tobytes())
    num = md.rows.select_dtypes("number")  # the features too: a re-attached KB is re-tuned
    h.update(np.round(num.to_numpy(dtype=float), 8).tobytes())
    h.update(json.dumps([list(md.matrix.index), list(md.matrix.columns)]).encode())
    for train, val in splits:
        h.update(json.dumps([sorted(set(train["target"])), sorted(set(val["target"])),
                             sorted(set(train["source"]))]).encode())
    return h.hexdigest()[:16]


def tune(md: MetaDataset, outer: str | None, n_trials: int = N_TRIALS, seed: int = mm.SEED,
         storage: str | None = None, on_trial: Callable[[], None] | None = None,
         splits: list[Split] | None = None) -> optuna.Study:
    """Run a fresh study (an old one of the same name is replaced) and return it.

    ``outer``: the held-out group's label (a target name for a singleton) or None for all;
    ``splits``: the inner leave-one-group-out splits (default: :func:`inner_splits`).
    """
    name = study_name(md.kb_name, outer)
    study = optuna.create_study(study_name=name, storage=optuna.storages.InMemoryStorage(),
                                direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    splits = inner_splits(md, outer) if splits is None else splits
    sets = mm.feature_sets(estimators_of(md))
    for p in default_trials(md):
        study.enqueue_trial(p)

    def objective(trial: optuna.Trial) -> float:
        taus = per_target_tau(suggest(trial, sets), splits, md)
        trial.set_user_attr("tau_w", taus)
        if on_trial is not None:
            on_trial()
        vals = [0.0 if v is None else v for v in taus.values()]
        return float(np.mean(vals)) if vals else 0.0

    study.optimize(objective, n_trials=max(n_trials, len(default_trials(md))))
    attrs = {"seed": seed, "fingerprint": fingerprint(md, outer, splits),
             "objective": f"mean inner leave-one-group-out {OBJECTIVE} over "
                          f"{sum(v['target'].nunique() for _, v in splits)} targets"}
    return _save(study, name, attrs, storage or storage_url(md.kb_name))


_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


def _rdb(url: str) -> optuna.storages.BaseStorage:
    """One storage object per URL and process (building an engine per study costs ~1 s)."""
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url) if url.startswith("sqlite") else url
    return _STORAGES[url]


def _save(mem: optuna.Study, name: str, attrs: dict, url: str) -> optuna.Study:
    """Write a study optimised in memory to ``url`` in one go (a commit per trial is slow on SQLite)."""
    storage = _rdb(url)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=attrs["seed"]))
    study.add_trials(completed(mem))
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    return study


def load_study(kb_name: str, outer: str | None, storage: str | None = None,
               expect: str | None = None) -> optuna.Study | None:
    """A stored, finished study whose fingerprint is ``expect`` (when given), else None."""
    storage = _rdb(storage or storage_url(kb_name))
    try:
        study = optuna.load_study(study_name=study_name(kb_name, outer), storage=storage)
    except KeyError:
        return None
    if expect is not None and study.user_attrs.get("fingerprint") != expect:
        return None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return study if done else None


def prune(kb_name: str, keep: set[str], storage: str | None = None) -> list[str]:
    """Delete the KB's studies not named in ``keep`` (older search spaces, folds of a KB since
    re-grouped), so the SQLite file holds only what the current evaluation reuses."""
    url = storage or storage_url(kb_name)
    st = _rdb(url)
    gone = []
    for summary in optuna.get_all_study_summaries(storage=st):
        name = summary.study_name
        if name.startswith(f"{kb_name}__") and name not in keep:
            optuna.delete_study(study_name=name, storage=st)
            gone.append(name)
    if gone and url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///"):]) as con:  # give the freed pages back
            con.execute("VACUUM")
    return gone


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def trial_params(trial: optuna.trial.FrozenTrial) -> dict:
    return dict(mm.DEFAULT_PARAMS) | dict(trial.params)


def best_params(study: optuna.Study, kind: str | None = None) -> tuple[dict, float]:
    """Best (params, inner score) overall or restricted to one model kind (ties: earliest trial)."""
    trials = [t for t in completed(study) if kind is None or t.params.get("kind") == kind]
    if not trials:
        p = dict(mm.DEFAULT_PARAMS) | ({"kind": kind} if kind else {})
        return p, math.nan
    best = max(trials, key=lambda t: (t.value, -t.number))
    return trial_params(best), float(best.value)


def get_study(md: MetaDataset, outer: str | None, retune: bool = False, n_trials: int = N_TRIALS,
              storage: str | None = None, on_trial: Callable[[], None] | None = None,
              splits: list[Split] | None = None) -> optuna.Study:
    """The stored study when its fingerprint matches (fast path), else tune now."""
    splits = inner_splits(md, outer) if splits is None else splits
    if not retune:
        study = load_study(md.kb_name, outer, storage, expect=fingerprint(md, outer, splits))
        if study is not None:
            return study
    return tune(md, outer, n_trials=n_trials, storage=storage, on_trial=on_trial, splits=splits)
