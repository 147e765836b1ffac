"""recommender.verify.stats, pinned by exact values (written against its surviving mutants).

The weighted AUC is checked against sklearn's ``roc_auc_score(sample_weight=...)``, the paired
bootstrap against a direct re-implementation of the documented resampling, and ``compare`` /
``interval`` against numpy's percentiles of a hand-made bootstrap.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recommender.verify import stats
from recommender.verify.stats import (
    BootResult,
    Measurement,
    compare,
    interval,
    paired_bootstrap,
    weighted_auc,
)


def _binary_case(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    score = np.round(rng.random(n) + 0.3 * y, 1)  # rounded: many ties, also at the lowest score
    score[0] = score.min()
    score[1] = score.min()  # a tie of a negative and a positive at the very start
    return np.c_[1 - score, score], y


def test_binary_auc_matches_sklearn_under_every_weight_row() -> None:
    proba, y = _binary_case()
    rng = np.random.default_rng(1)
    w = rng.random((5, len(y))) * rng.integers(0, 3, (5, len(y)))  # unequal row totals, some zeros
    got = weighted_auc(proba, y, w)
    want = [roc_auc_score(y, proba[:, 1], sample_weight=row) for row in w]
    assert got.shape == (5,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_default_weights_are_one_row_of_ones() -> None:
    proba, y = _binary_case(seed=3)
    got = weighted_auc(proba, y)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(roc_auc_score(y, proba[:, 1]), abs=1e-12)


def test_more_weight_rows_than_one_chunk() -> None:
    proba, y = _binary_case(n=25, seed=4)
    rng = np.random.default_rng(5)
    w = rng.multinomial(25, np.full(25, 1 / 25), size=stats._CHUNK + 7).astype(float)
    got = weighted_auc(proba, y, w)
    for i in (0, 1, stats._CHUNK - 1, stats._CHUNK, stats._CHUNK + 6):
        assert got[i] == pytest.approx(roc_auc_score(y, proba[:, 1], sample_weight=w[i]), abs=1e-12)


def test_every_chunk_of_weight_rows_is_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "_CHUNK", 3)
    proba, y = _binary_case(n=20, seed=8)
    w = np.random.default_rng(9).random((11, 20))
    want = [roc_auc_score(y, proba[:, 1], sample_weight=row) for row in w]
    np.testing.assert_allclose(weighted_auc(proba, y, w), want, rtol=0, atol=1e-12)


def test_binary_auc_reads_the_positive_column_only() -> None:
    """Binary: the AUC of column 1 alone, whatever column 0 holds (here not 1 − column 1)."""
    y = np.array([0, 0, 1, 1, 0, 1])
    proba = np.c_[[0.9, 0.1, 0.2, 0.3, 0.8, 0.05], [0.1, 0.2, 0.6, 0.4, 0.3, 0.9]]
    assert weighted_auc(proba, y)[0] == pytest.approx(roc_auc_score(y, proba[:, 1]), abs=1e-12)
    assert weighted_auc(proba, y)[0] == 1.0


def test_integer_weights_are_fine() -> None:
    proba, y = _binary_case(seed=6)
    w = np.ones((1, len(y)), dtype=np.int64)
    assert weighted_auc(proba, y, w)[0] == pytest.approx(roc_auc_score(y, proba[:, 1]), abs=1e-12)


def test_one_class_gives_nan_without_a_floating_point_error() -> None:
    proba = np.c_[np.full(4, 0.5), [0.1, 0.4, 0.3, 0.2]]
    with np.errstate(all="raise"):
        assert np.isnan(weighted_auc(proba, np.ones(4, dtype=int))[0])
        assert np.isnan(weighted_auc(proba, np.zeros(4, dtype=int))[0])
        three = np.c_[proba, np.zeros(4)]
        three /= three.sum(1, keepdims=True)
        assert np.isnan(weighted_auc(three, np.full(4, 2))[0])


def _multiclass_case(n: int = 60, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    logits = rng.normal(0, 1, (n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits)
    return np.round(p / p.sum(1, keepdims=True), 2), y


def test_multiclass_is_prevalence_weighted_one_vs_rest() -> None:
    proba, y = _multiclass_case()
    rng = np.random.default_rng(2)
    w = rng.random((4, len(y)))
    got = weighted_auc(proba, y, w)
    want = []
    for row in w:
        aucs = [roc_auc_score(y == k, proba[:, k], sample_weight=row) for k in range(3)]
        prev = [row[y == k].sum() for k in range(3)]
        want.append(np.dot(aucs, prev) / np.sum(prev))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[0] != pytest.approx(np.mean([roc_auc_score(y == k, proba[:, k], sample_weight=w[0])
                                             for k in range(3)]), abs=1e-9)


def test_multiclass_skips_a_class_without_weight() -> None:
    """A class whose images all get weight 0 has no AUC: the others' weighted mean is returned."""
    proba, y = _multiclass_case(seed=1)
    w = np.ones((2, len(y)))
    w[0, y == 2] = 0.0
    with np.errstate(all="raise"):
        got = weighted_auc(proba, y, w)
    aucs = [roc_auc_score(y == k, proba[:, k], sample_weight=w[0]) for k in (0, 1)]
    prev = [w[0, y == k].sum() for k in (0, 1)]
    assert got[0] == pytest.approx(np.dot(aucs, prev) / np.sum(prev), abs=1e-12)
    full = [roc_auc_score(y == k, proba[:, k]) for k in range(3)]
    assert got[1] == pytest.approx(np.dot(full, np.bincount(y)) / len(y), abs=1e-12)
    all_zero = np.zeros((1, len(y)))
    with np.errstate(all="raise"):
        assert np.isnan(weighted_auc(proba, y, all_zero)[0])


# -- the paired bootstrap -------------------------------------------------------------------
def _measurements() -> list[Measurement]:
    rng = np.random.default_rng(7)
    n1, n2 = 30, 24
    y1, y2 = np.arange(n1) % 2, np.arange(n2) % 2
    out = []
    for name, shift in (("a", 0.6), ("b", 0.3), ("c", 0.0)):
        seeds = {}
        for r in (0, 1, 2, 5):
            y, n, dig = (y1, n1, "d1") if r != 2 else (y2, n2, "d2")
            s = np.clip(0.5 + shift * (y - 0.5) + rng.normal(0, 0.3, n), 0, 1)
            seeds[r] = (np.c_[1 - s, s], y, dig)
        if name == "c":
            seeds[9] = seeds[0]  # a seed only c has: not used
        out.append(Measurement(name, seeds))
    return out


def _pairwise_auc(score: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC of each row of ``w``, straight from its definition (ties ½)."""
    pos, neg = y == 1, y == 0
    k = (score[pos][:, None] > score[neg][None, :]) + 0.5 * (score[pos][:, None] == score[neg][None, :])
    wp, wn = w[:, pos], w[:, neg]
    return np.einsum("bi,ij,bj->b", wp, k, wn) / (wp.sum(1) * wn.sum(1))


def _reference(ms: list[Measurement], n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    common = sorted(set.intersection(*(set(m.seeds) for m in ms)))
    rng = np.random.default_rng(seed)
    digests = {r: ms[0].seeds[r][2] for r in common}
    weights = {}
    for d in dict.fromkeys(digests.values()):
        n = len(ms[0].seeds[next(r for r in common if digests[r] == d)][1])
        weights[d] = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)
    pick = rng.integers(0, len(common), size=(n_boot, len(common)))
    per_seed = np.array([[roc_auc_score(m.seeds[r][1], m.seeds[r][0][:, 1]) for r in common] for m in ms])
    boot = np.empty((len(ms), n_boot))
    for c, m in enumerate(ms):
        auc = np.array([_pairwise_auc(m.seeds[r][0][:, 1], m.seeds[r][1], weights[digests[r]]) for r in common])
        for b in range(n_boot):
            boot[c, b] = np.mean([auc[j, b] for j in pick[b]])
    return per_seed, boot, np.array(common)


def test_paired_bootstrap_is_the_documented_joint_resample() -> None:
    ms = _measurements()
    res = paired_bootstrap(ms, n_boot=25, seed=3)
    per_seed, boot, common = _reference(ms, 25, 3)
    assert res.names == ["a", "b", "c"]
    assert res.repeats == [0, 1, 2, 5]
    assert list(common) == [0, 1, 2, 5]
    assert res.n_test == 30
    np.testing.assert_allclose(res.per_seed, per_seed, atol=1e-12)
    np.testing.assert_allclose(res.point, per_seed.mean(1), atol=1e-12)
    assert res.boot.shape == (3, 25)
    np.testing.assert_allclose(res.boot, boot, atol=1e-12)
    assert res.boot.std(1).min() > 0


def test_paired_bootstrap_defaults_and_reproducibility() -> None:
    ms = _measurements()[:2]
    res = paired_bootstrap(ms)
    assert res.boot.shape == (2, 1000)
    np.testing.assert_array_equal(res.boot, paired_bootstrap(ms, n_boot=1000, seed=0).boot)
    np.testing.assert_array_equal(paired_bootstrap(ms, n_boot=50, seed=4).boot,
                                  paired_bootstrap(ms, n_boot=50, seed=4).boot)


def test_paired_bootstrap_refuses_unpaired_measurements() -> None:
    a, b, _ = _measurements()
    with pytest.raises(ValueError, match="^no seed is shared by all candidates$"):
        paired_bootstrap([Measurement("a", {0: a.seeds[0]}), Measurement("b", {1: b.seeds[1]})])
    other = dict(b.seeds)
    other[1] = (b.seeds[1][0], b.seeds[1][1], "elsewhere")
    with pytest.raises(ValueError, match="^b seed 1 predicts other test images than a$"):
        paired_bootstrap([a, Measurement("b", other)], n_boot=5)
    short = dict(b.seeds)
    short[5] = (b.seeds[5][0][:-2], b.seeds[5][1][:-2], b.seeds[5][2])  # same digest, fewer images
    with pytest.raises(ValueError, match="^b seed 5 predicts other test images than a$"):
        paired_bootstrap([a, Measurement("b", short)], n_boot=5)


# -- compare and interval -------------------------------------------------------------------
def _boot_result(per_seed: np.ndarray, boot: np.ndarray) -> BootResult:
    return BootResult(["a", "b", "c"][:len(boot)], list(range(per_seed.shape[1])), per_seed.mean(1) + [0.01, 0.0][:len(boot)],
                      per_seed, boot, 123)


def test_compare_is_the_paired_difference_of_the_bootstrap() -> None:
    from scipy.stats import wilcoxon

    d = np.r_[np.zeros(30), np.linspace(0.01, 0.2, 50), -np.linspace(0.01, 0.05, 20)]
    b = np.full(100, 0.7)
    per_seed = np.array([[0.80, 0.75, 0.91, 0.70], [0.70, 0.72, 0.80, 0.69]])
    res = _boot_result(per_seed, np.array([b + d, b]))
    c = compare(res, "a", "b")
    assert (c.a, c.b) == ("a", "b")
    assert c.diff == pytest.approx(res.point[0] - res.point[1], abs=1e-15)
    lo, hi = np.nanpercentile(d, [2.5, 97.5])
    assert (c.lo, c.hi) == (pytest.approx(lo, abs=1e-15), pytest.approx(hi, abs=1e-15))
    assert c.p_a_beats_b == pytest.approx(0.5 + 0.5 * 0.3, abs=1e-12)
    assert c.wilcoxon_p == pytest.approx(float(wilcoxon(per_seed[0] - per_seed[1]).pvalue), abs=1e-15)
    assert c.n_seeds == 4
    assert c.n_test == 123
    back = compare(res, "b", "a")
    assert back.diff == pytest.approx(-c.diff, abs=1e-15)
    assert back.p_a_beats_b == pytest.approx(0.2 + 0.5 * 0.3, abs=1e-12)


def test_compare_p_needs_two_seeds_and_a_nonzero_difference() -> None:
    boot = np.array([np.full(10, 0.8), np.full(10, 0.7)])
    two = compare(_boot_result(np.array([[0.8, 0.9], [0.7, 0.6]]), boot), "a", "b")
    assert isinstance(two.wilcoxon_p, float)
    assert two.p_a_beats_b == 1.0
    assert compare(_boot_result(np.array([[0.8], [0.7]]), boot), "a", "b").wilcoxon_p is None
    same = compare(_boot_result(np.array([[0.8, 0.9, 0.7], [0.8, 0.9, 0.7]]), boot), "a", "b")
    assert same.wilcoxon_p is None
    one_off = compare(_boot_result(np.array([[0.8, 0.9, 0.7], [0.8, 0.9, 0.6]]), boot), "a", "b")
    assert isinstance(one_off.wilcoxon_p, float)
    ones = compare(_boot_result(np.array([[1.0, 1.0], [0.0, 0.0]]), boot), "a", "b")
    assert isinstance(ones.wilcoxon_p, float)


def test_interval_is_the_95_percentile_interval() -> None:
    rng = np.random.default_rng(0)
    boot = rng.normal(0.8, 0.05, (2, 400))
    res = _boot_result(np.ones((2, 3)), boot)
    lo, hi = np.nanpercentile(boot[1], [2.5, 97.5])
    assert interval(res, "b") == (pytest.approx(lo, abs=1e-15), pytest.approx(hi, abs=1e-15))
    assert isinstance(interval(res, "a")[0], float)
