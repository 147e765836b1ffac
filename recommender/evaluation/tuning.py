"""Optuna hyper-parameter search under nested leave-one-target-out.

For each outer held-out target t there is one study; its objective is the mean
weighted Kendall τ of an *inner* LOTO over the training targets only (t, its row and
its twins are excluded from every inner fold), so the outer result never guides the
choice. Model kind (regressor / ranker) and feature set are searched as categorical
parameters, which is how variants are chosen by the inner loop alone. Studies live in
SQLite (``artifacts/optuna/<kb>.db``) so ``evaluate-meta`` can reuse them; the study
``<kb>__all`` (LOTO over every target) tunes the shipped model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from experiments.knowledge_base import artifacts_dir
from recommender.evaluation.ranking_metrics import rank_metrics
from recommender.model import MetaDataset, fold_rows, held_out_with_twins
from recommender.model import meta_model as mm

N_TRIALS = 30
OBJECTIVE = "tau_w"

optuna.logging.set_verbosity(logging.WARNING)


def optuna_dir() -> Path:
    return artifacts_dir() / "optuna"


def storage_url(kb_name: str, root: Path | None = None) -> str:
    root = root or optuna_dir()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / f'{kb_name}.db').resolve()}"


def study_name(kb_name: str, outer: str | None) -> str:
    return f"{kb_name}__all" if outer is None else f"{kb_name}__outer__{outer}"


def suggest(trial: optuna.Trial) -> dict:
    """The search space: small trees only (≈150 training rows)."""
    p = {
        "kind": trial.suggest_categorical("kind", list(mm.KINDS)),
        "features": trial.suggest_categorical("features", list(mm.FEATURE_SETS)),
        "num_leaves": trial.suggest_int("num_leaves", 2, 8),
        "min_child_samples": trial.suggest_int("min_child_samples", 2, 20),
        "n_estimators": trial.suggest_int("n_estimators", 20, 200, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
    }
    if p["kind"] == "ranker":
        p["grades"] = trial.suggest_categorical("grades", ["rank", "bins4"])
    return p


def inner_splits(md: MetaDataset, outer: str | None) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """LOTO splits over the targets left once ``outer`` (and its twins) is held out."""
    exclude = held_out_with_twins([outer], md.twins) if outer is not None else set()
    targets = [t for t in md.targets if t not in exclude]
    return [fold_rows(md, [u], exclude=exclude) for u in targets]


def cv_score(params: dict, splits: list[tuple[pd.DataFrame, pd.DataFrame]], md: MetaDataset,
             metric: str = OBJECTIVE) -> float:
    """Mean ``metric`` over the held-out targets of ``splits``; an uninformative (constant) ranking counts 0."""
    vals = []
    for train, val in splits:
        if len(val) < 2 or train.empty:
            continue
        cols = mm.feature_columns(train.columns, params["features"], md.pair_features)
        model = mm.fit_model(params, train, cols)
        m = rank_metrics(mm.predict(model, val, cols), val["auc"].to_numpy())[metric]
        vals.append(0.0 if math.isnan(m) else m)
    return float(np.mean(vals)) if vals else 0.0


def tune(md: MetaDataset, outer: str | None, n_trials: int = N_TRIALS, seed: int = mm.SEED,
         storage: str | None = None, on_trial: Callable[[], None] | None = None) -> optuna.Study:
    """Run a fresh study (an old one of the same name is replaced) and return it."""
    storage = storage or storage_url(md.kb_name)
    name = study_name(md.kb_name, outer)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(dict(mm.DEFAULT_PARAMS))  # the hand-picked default is always considered
    splits = inner_splits(md, outer)

    def objective(trial: optuna.Trial) -> float:
        score = cv_score(suggest(trial), splits, md)
        if on_trial is not None:
            on_trial()
        return score

    study.optimize(objective, n_trials=n_trials)
    study.set_user_attr("seed", seed)
    study.set_user_attr("objective", f"mean inner-LOTO {OBJECTIVE} over {len(splits)} targets")
    return study


def load_study(kb_name: str, outer: str | None, storage: str | None = None) -> optuna.Study | None:
    """A stored, finished study, or None."""
    storage = storage or storage_url(kb_name)
    try:
        study = optuna.load_study(study_name=study_name(kb_name, outer), storage=storage)
    except KeyError:
        return None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return study if done else None


def best_params(study: optuna.Study, kind: str | None = None) -> tuple[dict, float]:
    """Best (params, inner score) overall or restricted to one model kind (ties: earliest trial)."""
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
              and (kind is None or t.params.get("kind") == kind)]
    if not trials:
        p = dict(mm.DEFAULT_PARAMS) | ({"kind": kind} if kind else {})
        return p, math.nan
    best = max(trials, key=lambda t: (t.value, -t.number))
    return dict(mm.DEFAULT_PARAMS) | dict(best.params), float(best.value)


def get_study(md: MetaDataset, outer: str | None, retune: bool = False, n_trials: int = N_TRIALS,
              storage: str | None = None, on_trial: Callable[[], None] | None = None) -> optuna.Study:
    """The stored study when there is one (fast path), else tune now."""
    if not retune:
        study = load_study(md.kb_name, outer, storage)
        if study is not None:
            return study
    return tune(md, outer, n_trials=n_trials, storage=storage, on_trial=on_trial)
