"""The residual model: the static prior plus a strongly shrunk model of each source's deviation.

A KB of a dozen targets cannot support a free-form meta-model, but it can say a little
about *when* a source does better or worse than its average standing: when it shares
the target's modality, when its features are close to the target's, when a
transferability estimate on the target's images is high. The model is

    score = c · prior_tz + Σ_k β_k x_k

where ``prior_tz`` is the in-fold static prior standardised within the target, ``c`` its
least-squares slope on the within-target AUC z, and the x_k are within-target-centred
pair features. The β are fit to the residual by ridge regression with a large penalty,
chosen by leave-one-group-out over the training targets from a grid that ends at "no
deviation at all". Missing features contribute 0, so a source the model knows nothing
about keeps its prior: it falls back to the static ranking.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommender.model.scoring import Context, Fitted

ALPHAS = (100.0, 300.0, 1000.0, 3000.0, 1e5)  # shrink factors ≈ 1/(1 + α/100): 0.5 … 0.03, then 0
_EXTRA = ("pair_same_modality", "pair_same_domain", "pair_same_channels")


def _feature_names(rows: pd.DataFrame, ctx: Context, use_estimates: bool) -> list[str]:
    ests = set(ctx.estimators)
    names = [f"pair_{f}_tz" for f in ctx.pair_features
             if f"pair_{f}_tz" in rows and (use_estimates or f not in ests)]
    names += [c for c in _EXTRA if c in rows]
    names += ["modality_minus_prior"] if "fold_modality_prior" in rows else []
    if use_estimates and ests and "fold_profile_prior" in rows:
        names.append("profile_minus_prior")
    return names


def _design(rows: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Within-target-centred features; NaN → 0 (no opinion)."""
    cols = {}
    prior = rows["fold_static_prior"].to_numpy(dtype=float) if "fold_static_prior" in rows else None
    for n in names:
        if n == "modality_minus_prior":
            v = rows["fold_modality_prior"].to_numpy(dtype=float) - prior
        elif n == "profile_minus_prior":
            v = rows["fold_profile_prior"].to_numpy(dtype=float) - prior
        else:
            v = rows[n].to_numpy(dtype=float)
        cols[n] = v
    df = pd.DataFrame(cols, index=rows.index)
    df = df - df.groupby(rows["target"].to_numpy(), sort=False).transform("mean")
    return df.fillna(0.0).to_numpy(dtype=float) if names else np.zeros((len(rows), 0))


def _prior(rows: pd.DataFrame) -> np.ndarray:
    col = "fold_static_prior_tz"
    v = rows[col].to_numpy(dtype=float) if col in rows else np.zeros(len(rows))
    return np.nan_to_num(v, nan=0.0)


def _ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    if X.shape[1] == 0:
        return np.zeros(0)
    return np.linalg.solve(X.T @ X + alpha * len(y) / 100.0 * np.eye(X.shape[1]), X.T @ y)


def _slope(p: np.ndarray, y: np.ndarray) -> float:
    den = float(p @ p)
    return max(0.0, float(p @ y) / den) if den > 0 else 0.0


class ResidualModel(Fitted):
    """Fitted residual model (see module docstring); ``state()`` is plain JSON."""

    def __init__(self, names: list[str], sd: np.ndarray, coef: np.ndarray, slope: float,
                 alpha: float) -> None:
        self.names, self.sd, self.coef = names, sd, coef
        self.slope, self.alpha = slope, alpha

    @classmethod
    def fit(cls, train: pd.DataFrame, ctx: Context, use_estimates: bool = False,
            alphas: tuple[float, ...] = ALPHAS) -> ResidualModel:
        names = _feature_names(train, ctx, use_estimates)
        X = _design(train, names)
        sd = X.std(axis=0)
        keep = sd > 1e-12
        names = [n for n, k in zip(names, keep, strict=True) if k]
        X, sd = X[:, keep], sd[keep]
        Xs = X / sd if len(names) else X
        y = train["label_z"].to_numpy(dtype=float)
        p = _prior(train)
        slope = _slope(p, y)
        r = y - slope * p
        alpha = cls._choose_alpha(train, ctx, Xs, r, alphas)
        return cls(names, sd, _ridge(Xs, r, alpha), slope, alpha)

    @staticmethod
    def _choose_alpha(train: pd.DataFrame, ctx: Context, X: np.ndarray, r: np.ndarray,
                      alphas: tuple[float, ...]) -> float:
        """The penalty with the lowest leave-one-group-out squared error (ties: the larger)."""
        if X.shape[1] == 0:
            return float(alphas[-1])
        grp = np.array([ctx.groups.get(t, t) for t in train["target"]])
        labels = list(dict.fromkeys(grp))
        if len(labels) < 3:
            return float(alphas[-1])
        err = []
        for a in alphas:
            sse = 0.0
            for g in labels:
                te = grp == g
                coef = _ridge(X[~te], r[~te], a)
                sse += float(((r[te] - X[te] @ coef) ** 2).sum())
            err.append(sse)
        best = min(err)
        return float(max(a for a, e in zip(alphas, err, strict=True) if e <= best * (1 + 1e-9)))

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        X = _design(rows, self.names)
        dev = (X / self.sd) @ self.coef if len(self.names) else 0.0
        return self.slope * _prior(rows) + dev

    def contributions(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Per-source terms of ``score`` (index source): slope × static prior and each feature's
        coef × standardised value; they sum to the score, so they are the order's own reasons."""
        X = _design(rows, self.names)
        terms = {"fold_static_prior_tz": self.slope * _prior(rows)}
        for j, n in enumerate(self.names):
            terms[n] = X[:, j] / self.sd[j] * self.coef[j]
        return pd.DataFrame(terms, index=pd.Index(rows["source"], name="source"))

    def state(self) -> dict:
        return {"names": self.names, "sd": self.sd.tolist(), "coef": self.coef.tolist(),
                "slope": self.slope, "alpha": self.alpha}

    @classmethod
    def from_state(cls, state: dict) -> ResidualModel:
        return cls(list(state["names"]), np.asarray(state["sd"], dtype=float),
                   np.asarray(state["coef"], dtype=float), float(state["slope"]), float(state["alpha"]))
