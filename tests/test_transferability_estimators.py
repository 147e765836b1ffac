"""Verification of the transferability estimators against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg, optimize
from scipy.stats import multivariate_normal
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from meta_features.transferability import (
    ESTIMATORS,
    TransferabilityError,
    estimate_all,
    hscore,
    knn_accuracy,
    leep,
    logme,
    logme_reference,
    nce,
    nleep,
)


def _toy(n: int, d: int, k: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    centres = rng.normal(size=(k, d)) * signal
    return centres[y] + rng.normal(size=(n, d)), y


def _brute_force_logme(f: np.ndarray, y: np.ndarray) -> float:
    """Max over (alpha, beta) of log N(t; 0, I/beta + F F^T/alpha), per class, by grid + optimiser."""
    n = len(y)
    ffT = f @ f.T

    def neg(params: np.ndarray, t: np.ndarray) -> float:
        la, lb = params
        cov = np.exp(-lb) * np.eye(n) + np.exp(-la) * ffT
        return -multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(t)

    best = []
    for c in np.unique(y):
        t = (y == c).astype(float)
        grid = [(a, b) for a in np.arange(-6, 6.1, 2.0) for b in np.arange(-4, 8.1, 2.0)]
        start = min(grid, key=lambda p: neg(np.array(p), t))
        res = optimize.minimize(neg, np.array(start), args=(t,), method="Nelder-Mead",
                                options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
        best.append(-res.fun / n)
    return float(np.mean(best))


@pytest.mark.parametrize("n,d,k,seed", [(30, 3, 2, 0), (40, 5, 3, 1), (12, 20, 2, 2)])
def test_logme_matches_brute_force_evidence_maximum(n, d, k, seed):
    f, y = _toy(n, d, k, signal=1.5, seed=seed)
    expected = _brute_force_logme(f, y)
    assert logme(f, y) == pytest.approx(expected, abs=1e-6)
    assert logme_reference(f, y) == pytest.approx(expected, abs=1e-6)


def test_logme_fast_equals_reference_on_larger_problem():
    f, y = _toy(400, 64, 5, signal=0.5, seed=3)
    assert logme(f, y) == pytest.approx(logme_reference(f, y), rel=1e-7)
    # rank-deficient features (duplicated columns) take the same path
    g = np.hstack([f[:, :10], f[:, :10]])
    assert logme(g, y) == pytest.approx(logme_reference(g, y), rel=1e-6)


def test_leep_hand_computed():
    theta = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5]])
    y = np.array([0, 0, 1, 1])
    # P(y|z) = [[.75, .25], [.25, .75]]; EEP per sample = .75, .5, .75, .5
    assert leep(theta, y) == pytest.approx((np.log(0.75) + np.log(0.5)) / 2, abs=1e-12)


def test_nce_hand_computed():
    theta = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    y = np.array([0, 0, 1, 1, 1])  # z = 0, 0, 0, 1, 1
    expected = 0.4 * np.log(2 / 3) + 0.2 * np.log(1 / 3) + 0.4 * np.log(1.0)
    assert nce(theta, y) == pytest.approx(expected, abs=1e-12)
    # a head whose hard labels are the target labels has NCE 0 (H(Y|Z) = 0)
    assert nce(np.eye(3)[[0, 1, 2, 1]] * 0.8 + 0.2 / 3, np.array([5, 6, 7, 6])) == pytest.approx(0.0)


def test_hscore_closed_form():
    f, y = _toy(200, 4, 3, signal=1.0, seed=4)
    mu = f.mean(0)
    sigma = np.cov(f, rowvar=False, bias=True)
    between = sum(np.mean(y == c) * np.outer(f[y == c].mean(0) - mu, f[y == c].mean(0) - mu)
                  for c in range(3))
    # tr(S^-1 B) is the sum of the generalised eigenvalues of (B, S)
    expected = linalg.eigh(between, sigma, eigvals_only=True).sum()
    assert hscore(f, y, shrinkage=False) == pytest.approx(expected, rel=1e-9)
    # 1-D two-class case: between-class over total variance
    g, z = _toy(101, 1, 2, signal=2.0, seed=5)
    p = z.mean()
    ratio = p * (1 - p) * (g[z == 1].mean() - g[z == 0].mean()) ** 2 / g.var()
    assert hscore(g, z, shrinkage=False) == pytest.approx(ratio, rel=1e-9)


def test_hscore_shrinkage_is_finite_when_features_outnumber_samples():
    f, y = _toy(20, 60, 2, signal=1.0, seed=6)
    s = hscore(f, y)
    assert np.isfinite(s) and 0 < s < hscore(f, y, shrinkage=False)
    big, yb = _toy(5000, 3, 2, signal=1.0, seed=7)  # shrinkage vanishes with n >> d
    assert hscore(big, yb) == pytest.approx(hscore(big, yb, shrinkage=False), rel=0.02)


def test_knn_matches_sklearn_leave_one_out():
    f, y = _toy(40, 5, 2, signal=0.8, seed=8)
    for k in (1, 5):
        pred = cross_val_predict(KNeighborsClassifier(n_neighbors=k), f, y, cv=LeaveOneOut())
        assert knn_accuracy(f, y, k=k) == pytest.approx(np.mean(pred == y), abs=1e-12)


def _probs(f: np.ndarray, z: int, seed: int) -> np.ndarray:
    w = np.random.default_rng(seed).normal(size=(f.shape[1], z))
    logits = f @ w
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_invariant_to_label_permutation_and_sample_order():
    f, y = _toy(150, 8, 4, signal=1.0, seed=9)
    theta = _probs(f, 6, seed=10)
    base = estimate_all(f, y, theta)
    relabel = np.array([7, 2, 9, 4])[y]  # a bijection onto other label values
    assert estimate_all(f, relabel, theta) == pytest.approx(base, rel=1e-9)
    order = np.random.default_rng(11).permutation(len(y))
    assert estimate_all(f[order], y[order], theta[order]) == pytest.approx(base, rel=1e-9)


def test_separating_features_beat_noise_on_every_estimator():
    rng = np.random.default_rng(12)
    f_good, y = _toy(300, 16, 3, signal=2.0, seed=13)
    f_noise = rng.normal(size=f_good.shape)
    # a source head that tracks the classes vs one that ignores them
    theta_good = np.full((300, 5), 0.05)
    theta_good[np.arange(300), y] = 0.8
    theta_good /= theta_good.sum(1, keepdims=True)
    theta_noise = rng.dirichlet(np.ones(5), size=300)
    good = estimate_all(f_good, y, theta_good)
    noise = estimate_all(f_noise, y, theta_noise)
    for name in ESTIMATORS:
        assert good[name] > noise[name], name
    assert good["knn_acc"] > 0.9 and noise["knn_acc"] < 0.6


def test_estimate_all_without_head_leaves_leep_and_nce_nan():
    f, y = _toy(50, 4, 2, signal=1.0, seed=14)
    out = estimate_all(f, y)
    assert list(out) == list(ESTIMATORS)
    assert np.isnan(out["leep"]) and np.isnan(out["nce"]) and np.isfinite(out["logme"])
    assert nleep(f, y, random_state=1) == pytest.approx(nleep(f, y, random_state=1))


@pytest.mark.parametrize("call", [
    lambda: logme(np.ones((5, 2)), np.zeros(5)),  # one class
    lambda: logme(np.full((4, 2), np.nan), np.array([0, 1, 0, 1])),
    lambda: hscore(np.ones((4, 2)), np.array([0, 1, 0])),
    lambda: leep(np.full((4, 2), 0.3), np.array([0, 1, 0, 1])),  # rows do not sum to 1
    lambda: nce(np.ones(4), np.array([0, 1, 0, 1])),
])
def test_bad_input_is_a_user_error(call):
    with pytest.raises(TransferabilityError):
        call()
