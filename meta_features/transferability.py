"""Transferability estimators: score a (source model, labelled target) pair from forward passes only.

Each estimator is one function over target features (n x d) and/or the source head's class
probabilities (n x Z) plus target labels, and returns one float where *higher means the
source should transfer better*. They become meta-model features and baselines (issue 7).

- :func:`logme` (You et al. 2021): log marginal evidence of a Bayesian linear model, solved
  by the fast fixed-point iteration after one eigen/SVD decomposition of the Gram matrix.
  :func:`logme_reference` is the straightforward per-iteration version (inverse every step)
  kept for verification and the speed benchmark.
- :func:`leep` (Nguyen et al. 2020), :func:`nce` (Tran et al. 2019): need source probabilities.
- :func:`nleep` (Li et al. 2021): LEEP with a seeded GMM on PCA-reduced features as source.
- :func:`hscore` (Bao et al. 2019) with Ledoit-Wolf shrinkage (Ibrahim et al. 2022).
- :func:`knn_accuracy`: exact leave-one-out k-NN accuracy (Renggli 2022; Sorkhei 2025).

:func:`score_kb` / :func:`score_target` run them for source checkpoints (features from
``meta_features._checkpoint_features``, imported lazily so the estimators need no torch).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import xlogy
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from imagesets import ImageSet, UserError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Estimator:
    """One registered estimator. ``needs_head``: ``fn(source_probs, labels)`` (NaN without a
    source head); else ``fn(features, labels)``, plus ``random_state=`` when ``seeded``."""

    name: str
    fn: Callable[..., float]
    needs_head: bool = False
    seeded: bool = False

    def score(self, features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None,
              random_state: int = 0) -> float:
        if self.needs_head:
            return float("nan") if source_probs is None else float(self.fn(source_probs, labels))
        kw = {"random_state": random_state} if self.seeded else {}
        return float(self.fn(features, labels, **kw))


ESTIMATORS: dict[str, Estimator] = {}
"""The registry, in registration order; its names are the pair_features.csv feature names
(kind = transferability). Adding one is a function decorated with :func:`register_estimator`."""


def register_estimator(name: str, *, needs_head: bool = False,
                       seeded: bool = False) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Decorator: add an estimator (higher = the source should transfer better)."""

    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        if name in ESTIMATORS:
            raise ValueError(f"estimator {name!r} is already registered")
        ESTIMATORS[name] = Estimator(name, fn, needs_head, seeded)
        return fn

    return deco


def _blas_threads() -> int:
    return max(1, int(os.environ.get("CATSCANS_ESTIMATOR_THREADS", "1")))


def _limited(fn: Callable[..., float]) -> Callable[..., float]:
    """Run an estimator with at most ``$CATSCANS_ESTIMATOR_THREADS`` (default 1) BLAS/OpenMP
    threads: on a shared 2-core machine two spinning BLAS threads made LogME 5x and the GMM
    10x slower than one (measured), and estimators are run per pair, so parallelise outside."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=_blas_threads()):
            return fn(*args, **kwargs)

    return wrapper


class TransferabilityError(UserError):
    """Inputs an estimator cannot score (shape mismatch, one class, non-finite values)."""


# -- input checks -------------------------------------------------------------------------------
def _check_features(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Float64 features, integer labels 0..K-1 and K; one-line errors for unusable input."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise TransferabilityError(f"features must be 2-D (n x d), got shape {f.shape}")
    y, k = _encode_labels(labels, f.shape[0])
    if not np.isfinite(f).all():
        raise TransferabilityError("features contain NaN or infinite values")
    return f, y, k


def _encode_labels(labels: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise TransferabilityError(f"labels must be 1-D with {n} entries, got shape {lab.shape}")
    classes, y = np.unique(lab, return_inverse=True)
    if len(classes) < 2:
        raise TransferabilityError("transferability needs at least 2 target classes")
    return y.astype(np.int64), len(classes)


def _check_probs(source_probs: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(source_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n:
        raise TransferabilityError(f"source_probs must be n x Z with n={n}, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise TransferabilityError("source_probs rows must be finite probabilities summing to 1")
    return p


# -- LogME --------------------------------------------------------------------------------------
def _evidence(n: int, d: int, alpha, beta, m2, res2, logdet) -> np.ndarray:
    """Bishop (3.86): log p(y | alpha, beta) for the Bayesian linear model y = F w + noise."""
    return (
        0.5 * d * np.log(alpha) + 0.5 * n * np.log(beta) - 0.5 * alpha * m2 - 0.5 * beta * res2
        - 0.5 * logdet - 0.5 * n * np.log(2 * np.pi)
    )


@register_estimator("logme")
@_limited
def logme(
    features: np.ndarray, labels: np.ndarray, *, tol: float = 1e-7, max_iter: int = 200
) -> float:
    """LogME: mean over classes of the maximum log evidence per sample (one-hot targets).

    One SVD of F gives the singular values and the projections of every one-hot target;
    after that each fixed-point step is O(rank * K), which is what makes it fast. The SVD is
    taken as the eigendecomposition of the d x d (or n x n) Gram matrix, as thuml/LogME does:
    same V and S^2, and 0.11 s instead of 0.84 s for LAPACK gesdd on 10,000 x 512 here.
    Directions with S^2 below 1e-12 of the largest count as outside the span of F.
    """
    f, y, k = _check_features(features, labels)
    n, d = f.shape
    onehot = np.eye(k)[y]  # n x K
    if n >= d:
        sigma, v = np.linalg.eigh(f.T @ f)  # F = U S V^T  =>  F^T F = V S^2 V^T
        z = v.T @ (f.T @ onehot)  # = S U^T Y
        keep = sigma > max(sigma.max(), 1e-300) * 1e-12
        sigma = sigma[keep]
        x2 = z[keep] ** 2 / sigma[:, None]  # (U^T Y)^2
    else:
        sigma, u = np.linalg.eigh(f @ f.T)
        keep = sigma > max(sigma.max(), 1e-300) * 1e-12
        sigma = sigma[keep]
        x2 = (u[:, keep].T @ onehot) ** 2
    rank = sigma.shape[0]
    s = sigma[:, None]
    # Part of each target outside the span of F: fitted by no weight, pure noise.
    res_perp = np.maximum((onehot**2).sum(0) - x2.sum(0), 0.0)
    alpha = np.ones(k)
    beta = np.ones(k)

    def stats(alpha: np.ndarray, beta: np.ndarray):
        den = alpha + beta * s
        gamma = (beta * s / den).sum(0)
        m2 = (beta**2 * s * x2 / den**2).sum(0)
        res2 = (alpha**2 * x2 / den**2).sum(0) + res_perp
        return den, gamma, m2, res2

    for _ in range(max_iter):
        _, gamma, m2, res2 = stats(alpha, beta)
        new_alpha = gamma / np.maximum(m2, 1e-12)
        new_beta = np.maximum(n - gamma, 1e-12) / np.maximum(res2, 1e-12)
        done = np.all(np.abs(new_alpha - alpha) <= tol * alpha) and np.all(
            np.abs(new_beta - beta) <= tol * beta
        )
        alpha, beta = new_alpha, new_beta
        if done:
            break
    den, _, m2, res2 = stats(alpha, beta)
    logdet = np.log(den).sum(0) + (d - rank) * np.log(alpha)
    return float(np.mean(_evidence(n, d, alpha, beta, m2, res2, logdet) / n))


def _reference_one(f: np.ndarray, gram: np.ndarray, t: np.ndarray, tol: float, max_iter: int) -> float:
    """Per-sample max log evidence of one target column, inverting A at every step."""
    n, d = f.shape
    fty = f.T @ t

    def posterior(alpha: float, beta: float) -> tuple[np.ndarray, float, float]:
        a_inv = np.linalg.inv(alpha * np.eye(d) + beta * gram)
        m = beta * a_inv @ fty
        return a_inv, float(m @ m), float(((t - f @ m) ** 2).sum())

    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        a_inv, m2, res2 = posterior(alpha, beta)
        gamma = d - alpha * np.trace(a_inv)
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = max(n - gamma, 1e-12) / max(res2, 1e-12)
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    _, m2, res2 = posterior(alpha, beta)
    logdet = np.linalg.slogdet(alpha * np.eye(d) + beta * gram)[1]
    return float(_evidence(n, d, alpha, beta, m2, res2, logdet) / n)


@_limited
def logme_reference(
    features: np.ndarray, labels: np.ndarray, *, tol: float = 1e-7, max_iter: int = 200
) -> float:
    """LogME the textbook way: per class, invert A = alpha I + beta F^T F at every iteration.

    O(d^3) per class per iteration; exists to verify :func:`logme` and to time it against.
    """
    f, y, k = _check_features(features, labels)
    gram = f.T @ f
    out = [_reference_one(f, gram, (y == c).astype(np.float64), tol, max_iter) for c in range(k)]
    return float(np.mean(out))


# -- LEEP / NCE / N-LEEP ------------------------------------------------------------------------
@register_estimator("leep", needs_head=True)
@_limited
def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: mean log of the expected empirical prediction P(y_i) = sum_z P(y_i|z) theta_iz."""
    y, k = _encode_labels(labels, np.asarray(source_probs).shape[0])
    theta = _check_probs(source_probs, len(y))
    joint = np.zeros((k, theta.shape[1]))
    np.add.at(joint, y, theta)
    joint /= len(y)  # P(y, z)
    p_z = joint.sum(0, keepdims=True)
    cond = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)  # P(y | z)
    eep = (theta * cond[y]).sum(1)
    return float(np.mean(np.log(np.maximum(eep, 1e-300))))


@register_estimator("nleep", seeded=True)
@_limited
def nleep(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    variance: float = 0.8,
    components_per_class: int = 5,
    random_state: int = 0,
) -> float:
    """N-LEEP: LEEP with a GMM on PCA features (``variance`` kept) as the pseudo source head.

    ``components_per_class * K`` components (at most n/2) as in SFDA's reference code, with
    ``reg_covar`` 1e-4 rather than sklearn's 1e-6 so near-constant features of small nets do
    not make covariances singular. Rows are sorted first so the seeded PCA + GMM see the same
    input whatever the sample order.
    """
    f, y, k = _check_features(features, labels)
    order = np.lexsort(f.T[::-1])
    f, y = f[order], y[order]
    n = f.shape[0]
    if np.allclose(f.std(0), 0):
        return leep(np.ones((n, 1)), y)  # constant features: one pseudo-class
    n_comp = int(min(components_per_class * k, max(1, n // 2)))
    reduced = PCA(n_components=variance, svd_solver="full").fit_transform(f)
    gmm = GaussianMixture(
        n_components=n_comp, covariance_type="full", reg_covar=1e-4, random_state=random_state,
        max_iter=200,
    )
    theta = gmm.fit(reduced).predict_proba(reduced)
    theta /= theta.sum(1, keepdims=True)
    return leep(theta, y)


@register_estimator("nce", needs_head=True)
@_limited
def nce(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """NCE: -H(Y | Z) with Z the source head's hard prediction (argmax)."""
    y, k = _encode_labels(labels, np.asarray(source_probs).shape[0])
    theta = _check_probs(source_probs, len(y))
    z = theta.argmax(1)
    joint = np.zeros((k, theta.shape[1]))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    p_z = joint.sum(0, keepdims=True)
    cond = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)
    return float(xlogy(joint, cond).sum())


# -- H-score / k-NN -----------------------------------------------------------------------------
@register_estimator("hscore")
@_limited
def hscore(features: np.ndarray, labels: np.ndarray, *, shrinkage: bool = True) -> float:
    """H-score tr(cov(f)^-1 cov(E[f|y])); with ``shrinkage`` the Ledoit-Wolf estimate of cov(f)
    and the (1 - shrinkage) factor of Ibrahim et al. 2022, as in tllib's regularised version."""
    f, y, k = _check_features(features, labels)
    f = f - f.mean(0, keepdims=True)
    means = np.zeros((k, f.shape[1]))
    np.add.at(means, y, f)
    means /= np.bincount(y, minlength=k)[:, None]
    g = means[y]  # each row replaced by its class mean
    cov_g = g.T @ g / len(y)
    if shrinkage:
        lw = LedoitWolf(assume_centered=True).fit(f)
        cov_f, factor = lw.covariance_, 1.0 - lw.shrinkage_
    else:
        cov_f, factor = f.T @ f / len(y), 1.0
    return float(factor * np.trace(np.linalg.pinv(cov_f, rcond=1e-15, hermitian=True) @ cov_g))


@register_estimator("knn_acc")
@_limited
def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, k: int = 5) -> float:
    """Exact leave-one-out accuracy of a k-NN vote on the features.

    Each point's k neighbours exclude itself (sklearn ``kneighbors()`` with no query). Vote
    ties go to the tied class with the nearest member, so relabelling classes cannot change it.
    """
    f, y, n_classes = _check_features(features, labels)
    n = len(y)
    if n < 2:
        raise TransferabilityError("k-NN leave-one-out needs at least 2 samples")
    kk = int(min(k, n - 1))
    nn = KNeighborsClassifier(n_neighbors=kk).fit(f, y)
    idx = nn.kneighbors(return_distance=False)  # n x kk, nearest first, self excluded
    votes = y[idx]
    counts = np.zeros((n, n_classes))
    np.add.at(counts, (np.repeat(np.arange(n), kk), votes.ravel()), 1.0)
    tied = counts == counts.max(1, keepdims=True)
    # first neighbour (nearest) whose class is among the tied winners
    first_ok = tied[np.arange(n)[:, None], votes].argmax(1)
    pred = votes[np.arange(n), first_ok]
    return float(np.mean(pred == y))


def estimate_all(
    features: np.ndarray,
    labels: np.ndarray,
    source_probs: np.ndarray | None = None,
    random_state: int = 0,
) -> dict[str, float]:
    """Every registered estimator on one (features, labels[, source probs]); those that need
    a source head (LEEP, NCE) are NaN without one."""
    return {name: est.score(features, labels, source_probs, random_state) for name, est in ESTIMATORS.items()}


# -- KB drivers ---------------------------------------------------------------------------------
KIND = "transferability"


def train_rows(imageset: ImageSet, random_state: int = 0, train_fraction: float = 0.7) -> np.ndarray:
    """Rows of the target's own training split; a seeded stratified ``train_fraction`` when the
    set has none. Pass ``score_kb(train_split=...)`` to reproduce the exact split the transfer
    matrix used (e.g. from ``experiments.data.fixed_split``, which meta_features may not import)."""
    if imageset.split is not None and (np.asarray(imageset.split) == "train").any():
        return np.flatnonzero(np.asarray(imageset.split) == "train")
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(imageset))
    tr, _ = train_test_split(idx, train_size=train_fraction, random_state=random_state,
                             stratify=imageset.labels)
    return np.sort(tr)


def score_loaded(model, meta: dict, imageset: ImageSet, max_images: int = 1000,
                 random_state: int = 0) -> dict[str, float]:
    """Every estimator for one loaded source checkpoint on a labelled ImageSet (one forward pass)."""
    from meta_features._checkpoint_features import source_outputs

    out = source_outputs(model, meta, imageset, max_images=max_images, random_state=random_state)
    return estimate_all(out.features, out.labels, out.probs, random_state=random_state)
