"""How far a folder lies from the KB's training targets: the distance behind "a folder unlike the KB's".

The learned level reads a handful of target facts (classes, images per class, channels, how
separable scratch finds it, scratch's transferability estimates). A folder whose facts sit
among the training targets' is an interpolation; one far from all of them is an
extrapolation, and its predicted AUC can be off by much more (the 5-grade knee folder was
predicted at the KB's level and measured 0.2 below it). :class:`Novelty` measures that
distance in the level model's own inputs, standardised by the training targets:

    novelty(x) = mean Euclidean distance to the ``K`` nearest training targets / √d

so 1 means "about one training standard deviation per feature away". The conformal
calibration (:mod:`recommender.evaluation.conformal`) may scale its interval by it, and
``recommend`` says where a folder's distance falls among the KB's own targets' distances
to the *other* groups (``reference``: each training target held out with its group).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

K = 3
MIN_TARGETS = 4
MIN_NOVELTY = 0.05  # a scale, never 0: a twin of a training target still gets an interval


def fit_standardiser(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (mean, sd) of the finite values, an unknown value counted at the mean; sd 0 → 1.
    Shared with the ridge level (:class:`recommender.model.outcome.LinearLevel`), which reads the
    same inputs."""
    ok = np.isfinite(A)
    n_ok = ok.sum(axis=0)
    mean = np.where(n_ok > 0, np.where(ok, A, 0.0).sum(axis=0) / np.maximum(n_ok, 1), 0.0)
    scale = np.where(ok, A, mean).std(axis=0)
    return mean, np.where(scale > 0, scale, 1.0)


def standardise(A: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(A − mean) / scale, an unknown value at the training mean (so it adds 0)."""
    A = np.where(np.isfinite(A), A, mean)
    return (A - mean) / scale


def _knn_mean(Z: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """Mean distance of each row of Z to its k nearest rows of ref, over √d."""
    d = np.sqrt(((Z[:, None, :] - ref[None, :, :]) ** 2).sum(axis=2))
    k = min(k, ref.shape[0])
    return np.sort(d, axis=1)[:, :k].mean(axis=1) / np.sqrt(max(Z.shape[1], 1))


class Novelty:
    """Distance of a target's level inputs to the training targets' (see the module docstring)."""

    def __init__(self, cols: list[str], mean: list[float], scale: list[float], train: list[list[float]],
                 reference: list[float]) -> None:
        self.cols = list(cols)
        self.mean, self.scale = np.asarray(mean, dtype=float), np.asarray(scale, dtype=float)
        self.train = np.asarray(train, dtype=float).reshape(-1, len(self.cols))
        self.reference = [float(v) for v in reference]

    @classmethod
    def fit(cls, X: pd.DataFrame, groups: list[str] | None = None) -> Novelty | None:
        """From one row per training target (its level inputs); None with too few targets or inputs.

        ``reference`` is each training target's novelty against the targets of the *other*
        groups (its twins and derived tasks share its group and are left out with it), the
        distance a new folder's is compared with."""
        if X.shape[1] == 0 or len(X) < MIN_TARGETS:
            return None
        A = X.to_numpy(dtype=float)
        mean, scale = fit_standardiser(A)
        Z = standardise(A, mean, scale)
        g = np.asarray(groups if groups is not None else range(len(X)), dtype=object)
        ref = []
        for i in range(len(Z)):
            others = Z[g != g[i]]
            if len(others):
                ref.append(float(_knn_mean(Z[i:i + 1], others, K)[0]))
        return cls(list(X.columns), mean.tolist(), scale.tolist(), Z.tolist(), ref)

    def distance(self, X: pd.DataFrame) -> np.ndarray:
        """Novelty of each row (its target's level inputs; columns as fitted, missing ones unknown)."""
        A = X.reindex(columns=self.cols).to_numpy(dtype=float)
        return _knn_mean(standardise(A, self.mean, self.scale), self.train, K)

    def share_closer(self, value: float) -> tuple[int, int]:
        """(k, n): how many of the n KB targets lie closer to the other groups than ``value``."""
        return int(sum(v < value for v in self.reference)), len(self.reference)

    def state(self) -> dict:
        return {"cols": self.cols, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "train": self.train.tolist(), "reference": self.reference}

    @classmethod
    def from_state(cls, state: dict | None) -> Novelty | None:
        if not state:
            return None
        return cls(list(state["cols"]), state["mean"], state["scale"], state["train"], state["reference"])


def novelty_scale(novelty: np.ndarray) -> np.ndarray:
    """The interval scale from a novelty (floored at :data:`MIN_NOVELTY`; NaN stays NaN)."""
    v = np.asarray(novelty, dtype=float)
    return np.where(np.isfinite(v), np.maximum(v, MIN_NOVELTY), np.nan)
