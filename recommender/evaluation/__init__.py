"""Judging what a KB ships: nested leave-one-group-out, paired comparisons, intervals, reports.

- ``ranking_metrics``: the per-target metrics every method is scored with, and bootstrap CIs.
- ``tuning``: Optuna studies whose objective is an inner leave-one-group-out (nested).
- ``selection``: nested selection of the shipped method, each outer fold choosing from its
  training groups only; conformal calibration from inner residuals.
- ``loto``: the outer leave-one-group-out loop (shipped rows, every candidate, baselines);
  chooses and trains the shipped model on all groups.
- ``paired``: paired bootstrap CI + Wilcoxon p for "A vs B" over the same targets (or groups).
- ``conformal``: split-conformal intervals exchangeable at the target level, and coverage.
- ``ceiling``: the noise ceiling (split-half τw over seeds); ``reference``: agreement with
  the published study; ``verdict``: evaluate-meta's sentences and JSON.
- ``correlation``: does any single pair feature track transfer?
- ``report``: ``evaluate-meta --out``: JSON, CSV, figures, one HTML file.

``report`` needs matplotlib; ``write_outputs`` is loaded on first use.
"""

from __future__ import annotations

from recommender.evaluation.correlation import correlate, correlation_report, gain_table
from recommender.evaluation.loto import (
    LotoResult,
    ScoresFileError,
    evaluate_external,
    fold_predictions,
    load_score_table,
    logo_folds,
    run_loto,
    train_final,
    validated_summary,
)
from recommender.evaluation.ranking_metrics import (
    METRICS,
    bootstrap_ci,
    evaluate_scores,
    random_expected_metrics,
    rank_metrics,
    summarise,
)
from recommender.evaluation.tuning import N_TRIALS, best_params, get_study, load_study, tune


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: matplotlib only when a report is written
    if name == "write_outputs":
        from recommender.evaluation.report import write_outputs

        return write_outputs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS", "N_TRIALS", "LotoResult", "ScoresFileError", "best_params", "bootstrap_ci",
    "correlate", "correlation_report", "evaluate_external", "evaluate_scores", "fold_predictions",
    "gain_table", "get_study", "load_score_table", "load_study", "logo_folds",
    "random_expected_metrics", "rank_metrics", "run_loto", "summarise", "train_final", "tune",
    "validated_summary", "write_outputs",
]
