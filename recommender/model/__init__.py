"""The meta-model: the meta-dataset it learns from, the LightGBM rankers, and the baselines.

- ``meta_dataset``: one feature row per (source, target) cell of a KB, fold features
  recomputed per held-out fold, and the rows of a new target.
- ``meta_model``: LightGBM regressor / lambdarank ranker; ``shipped``: the shipped
  :class:`Recommender` (``save_recommender`` / ``load_recommender``).
- ``methods``: the registry of every method a KB can ship (name → fit → score), and the
  score → predicted AUC → interval mapping; ``residual``: the shrunk residual model.
- ``baselines``: the simple rules the meta-model must beat.

Nothing here evaluates or tunes; that is :mod:`recommender.evaluation`, which imports this.
"""

from __future__ import annotations

from recommender.model.baselines import (
    baseline_column,
    baseline_scores,
    static_scores,
    static_z_quantiles,
)
from recommender.model.meta_dataset import (
    MetaDataset,
    MetaDatasetError,
    all_rows,
    build_meta_dataset,
    column_z,
    fold_rows,
    held_out_with_twins,
    new_target_rows,
    rows_for_new_target,
    twins_map,
)
from recommender.model.shipped import (
    Recommender,
    RecommenderError,
    load_recommender,
    models_dir,
    save_recommender,
)

__all__ = [
    "MetaDataset", "MetaDatasetError", "Recommender", "RecommenderError", "all_rows",
    "baseline_column", "baseline_scores", "build_meta_dataset", "column_z", "fold_rows",
    "held_out_with_twins", "load_recommender", "models_dir", "new_target_rows",
    "rows_for_new_target", "save_recommender", "static_scores", "static_z_quantiles", "twins_map",
]
