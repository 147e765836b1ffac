"""Task2Vec embeddings and distances (issue 17, phase 1): properties that fail when the code is wrong.

Tiny synthetic sets (28 px oriented gratings whose angle and frequency depend on the class), the
shipped probe unless a test needs a model built by ``experiments.models.create_model``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _makers import labelled_png_folder
from scipy.spatial.distance import cosine as scipy_cosine
from torch import nn

from imagesets import UserError, read_imageset
from meta_features.task2vec import (
    Task2VecEmbedding,
    asymmetric_distance,
    cosine_distance,
    head_features,
    normalized_cosine_distance,
    task2vec_embedding,
    trivial_embedding,
)

N_PER_CLASS = 100  # 40 per class sat at the Monte-Carlo noise floor of the procedural-set probe (plain cosine: fresh copy 0.29 vs shuffled labels 0.19)
OPTS = {"n_samples": 2, "exact": False, "max_per_class": 60}  # Monte Carlo, as the seed study


def gratings(n_per_class: int, seed: int, k: int = 3, side: int = 28, channels: int = 1):
    """k classes of noisy gratings (angle and frequency set by the class), uint8 N x s x s x C."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    ims, labs = [], []
    for i in range(n_per_class * k):
        c = i % k
        ang = np.pi * c / k + rng.normal(0, 0.1)
        f = 3 + 2 * c
        img = 128 + 80 * np.sin(2 * np.pi * f * (xx * np.cos(ang) + yy * np.sin(ang)) + rng.uniform(0, 6.3))
        img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        ims.append(np.repeat(img[..., None], channels, axis=-1))
        labs.append(c)
    return np.stack(ims), np.array(labs)


@pytest.fixture(scope="module")
def sets():
    a = gratings(N_PER_CLASS, seed=0)
    fresh = gratings(N_PER_CLASS, seed=1)  # new images from the same generating distribution
    boot = np.random.default_rng(2).choice(len(a[0]), len(a[0]), replace=True)
    shuffled = (a[0], np.random.default_rng(3).permutation(a[1]))
    return {"a": a, "fresh": fresh, "boot": (a[0][boot], a[1][boot]), "shuffled": shuffled,
            "small": gratings(40, seed=0)}  # exact properties (no noise): a set small enough that a
    # least-squares head separates it with a margin float32 can scale to saturation


@pytest.fixture(scope="module")
def emb(sets):
    return {k: task2vec_embedding(v, **OPTS) for k, v in sets.items()}


# -- (1) re-sampled copies are closer than a label-shuffled copy ---------------------------
@pytest.mark.parametrize("config", ["default", "montecarlo"])
def test_resampled_copy_closer_than_shuffled_labels(sets, config):
    """A fresh draw and a bootstrap resample of the set are closer to it than the very same
    images with shuffled labels (only the labels tell that copy apart). Default options: K = 3
    classes <= n_samples, so the exact expectation; "montecarlo": 8 sampled labels per image."""
    opts, factor = ({}, 0.75) if config == "default" else ({"n_samples": 8, "exact": False}, 1.0)
    e = {k: task2vec_embedding(sets[k], **opts) for k in ("a", "fresh", "boot", "shuffled")}
    assert e["a"].info["exact"] is (config == "default")
    for dist in (cosine_distance, normalized_cosine_distance):
        d_shuffled = dist(e["a"], e["shuffled"])
        assert d_shuffled > 0.05, dist.__name__
        for copy in ("fresh", "boot"):
            d = dist(e["a"], e[copy])
            assert d < factor * d_shuffled, (dist.__name__, copy, d, d_shuffled)


def test_head_is_fitted_on_the_labels(emb):
    assert emb["a"].info["head_train_accuracy"] > 0.9
    assert emb["shuffled"].info["head_train_accuracy"] < 0.8


# -- (2) determinism, and it changes with the data -----------------------------------------
def test_same_seed_same_vector_any_order(sets, emb):
    images, labels = sets["a"]
    again = task2vec_embedding((images, labels), **OPTS)
    assert np.array_equal(again.hessian, emb["a"].hessian)
    perm = np.random.default_rng(9).permutation(len(images))
    permuted = task2vec_embedding((images[perm], labels[perm]), **OPTS)
    assert np.array_equal(permuted.hessian, emb["a"].hessian)  # file order cannot matter


def test_embedding_changes_with_data_and_seed(sets, emb):
    assert not np.array_equal(emb["a"].hessian, emb["fresh"].hessian)
    assert cosine_distance(emb["a"], emb["fresh"]) > 0
    other_seed = task2vec_embedding(sets["a"], seed=1, **OPTS)
    assert not np.array_equal(other_seed.hessian, emb["a"].hessian)
    other_data = task2vec_embedding(gratings(N_PER_CLASS, seed=0, k=4), **OPTS)
    assert cosine_distance(emb["a"], other_data) > cosine_distance(emb["a"], other_seed)


def test_embedding_shape_and_storage(emb, tmp_path):
    e = emb["a"]
    assert e.hessian.dtype == np.float32 and e.hessian.ndim == 1
    assert e.layers[-1] == "embed" and len(e.layers) == 7  # 3 conv + 3 BN + the embed linear
    assert sum(e.layer_sizes) == e.hessian.size == 2 * (16 + 32 + 64) + 64
    assert np.all(e.hessian >= 0) and e.hessian.sum() > 0
    assert e.n_images == 3 * min(N_PER_CLASS, OPTS["max_per_class"]) and e.probe_name == "default" and e.scale is None
    p = tmp_path / "t2v.npz"
    np.savez(p, **e.to_npz_dict())
    with np.load(p, allow_pickle=False) as z:
        assert {k: z[k].dtype.kind for k in z.files if k != "task2vec_meta"} == {"task2vec_hessian": "f"}
        back = Task2VecEmbedding.from_npz_dict(z)
    assert np.array_equal(back.hessian, e.hessian) and back.hessian.dtype == np.float32
    assert (back.layers, back.layer_sizes, back.n_images, back.seed, back.probe_name) == (
        e.layers, e.layer_sizes, e.n_images, e.seed, e.probe_name)
    assert back.info == e.info


def test_cap_per_class(sets):
    images, labels = sets["a"]
    e = task2vec_embedding((images, labels), max_per_class=10, n_samples=1)
    assert e.n_images == 30 and e.info["max_per_class"] == 10


# -- (3) a zero-loss head has ~zero Fisher ---------------------------------------------------
def _certain_head(z: np.ndarray, y: np.ndarray, sign: float) -> nn.Linear:
    """A least-squares one-vs-rest head scaled until softmax saturates (sign -1: certain and wrong).

    Wrong = the right head with its classes shifted by one (it predicts y + 1 mod k with the same
    margins). Negating the weights instead made the margin between the two lowest classes the
    one to scale, up to 1e10 logits, where float32 cannot resolve a 1e4 gap any more."""
    k = int(y.max()) + 1
    x1 = np.hstack([z, np.ones((len(z), 1), np.float32)]).astype(np.float64)
    target = np.eye(k)[y] * 2 - 1
    w = np.linalg.lstsq(x1, target, rcond=None)[0]
    assert (np.argmax(x1 @ w, 1) == y).all(), "synthetic features should be separable"
    if sign < 0:
        w = np.roll(w, 1, axis=1)  # column c now scores class c - 1: argmax = y + 1 mod k
    top2 = np.sort(x1 @ w, 1)[:, -2:]
    w *= 1e4 / max(float((top2[:, 1] - top2[:, 0]).min()), 1e-6)  # every margin >= 1e4 logits
    head = nn.Linear(z.shape[1], k)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w[:-1].T).float())
        head.bias.copy_(torch.from_numpy(w[-1]).float())
    return head


@pytest.mark.parametrize("exact", [False, True])
def test_zero_loss_head_has_zero_fisher(sets, emb, exact):
    z, y, _ = head_features(sets["small"], max_per_class=OPTS["max_per_class"])
    opts = {**OPTS, "exact": exact}
    normal = task2vec_embedding(sets["small"], **opts).hessian
    right = task2vec_embedding(sets["small"], head=_certain_head(z, y, +1.0), **opts)
    assert right.info["head_train_accuracy"] == 1.0
    assert normal.sum() > 0 and right.hessian.max() <= 1e-9 * normal.max()
    # certain but wrong: the true Fisher (labels drawn from the model) is still ~0; a Fisher
    # taken with the dataset's labels (the empirical Fisher) would be huge here
    wrong = task2vec_embedding(sets["small"], head=_certain_head(z, y, -1.0), **opts)
    assert wrong.info["head_train_accuracy"] == 0.0
    assert wrong.hessian.max() <= 1e-9 * normal.max()


# -- per-sample gradients: the true diagonal Fisher, checked against a plain loop ----------------
def _reference_fisher(model: nn.Module, x: torch.Tensor, head: nn.Linear) -> np.ndarray:
    """E_x sum_k p(k|x) (d log p(k|x) / dw)^2, one image and one class at a time, filter-wise mean."""
    mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))
            and m is not model.head]
    ws = [m.weight for m in mods]
    acc = [torch.zeros_like(w, dtype=torch.float64) for w in ws]
    for i in range(len(x)):
        logp = torch.log_softmax(head(model.forward_features(x[i : i + 1])), 1)[0]
        p = logp.exp().detach().double()
        for k in range(len(p)):
            gs = torch.autograd.grad(logp[k], ws, retain_graph=True)
            for a, g in zip(acc, gs, strict=True):
                a += p[k] * g.double() ** 2
    return np.concatenate([(a / len(x)).reshape(a.shape[0], -1).mean(1).numpy() for a in acc])


def test_fisher_is_per_sample_and_matches_a_loop():
    from experiments.models import create_model
    from meta_features._checkpoint_features import normalise

    images, labels = gratings(4, seed=5, channels=3)
    torch.manual_seed(0)
    model = create_model("resnet-tiny", 3).eval()
    head = nn.Linear(model.head.in_features, 3)
    with torch.no_grad():
        head.weight.mul_(8.0)  # confident but not saturated
    x = normalise(torch.from_numpy(images))
    ref = _reference_fisher(model, x, head)
    exact = task2vec_embedding((images, labels), model, head=head, exact=True, batch_size=5)
    assert exact.hessian.shape == ref.shape
    np.testing.assert_allclose(exact.hessian, ref, rtol=2e-3, atol=1e-7 * ref.max())
    # Monte Carlo converges to it (a batch-mean squared gradient would be ~batch times smaller)
    mc = task2vec_embedding((images, labels), model, head=head, n_samples=200)
    assert 0.85 < mc.hessian.sum() / ref.sum() < 1.15
    assert cosine_distance(mc, exact) < 0.02
    assert not model.training  # the caller's model is left as it was


def test_both_gradient_paths_give_the_same_monte_carlo_estimate(sets, monkeypatch):
    """All-class Jacobian (K <= n_samples) and one gradient per drawn label: same draws, same Fisher."""
    import meta_features.task2vec as t2v

    small = (sets["a"][0][:30], sets["a"][1][:30])
    out = {}
    for path in ("jac", "pairs"):
        monkeypatch.setattr(t2v, "_FORCE_PATH", path)
        out[path] = task2vec_embedding(small, n_samples=3, exact=False).hessian
    np.testing.assert_allclose(out["jac"], out["pairs"], rtol=1e-4, atol=1e-6 * out["pairs"].max())


def test_registered_architecture_name_as_probe(sets):
    e = task2vec_embedding(sets["a"], "resnet-tiny", n_samples=1, max_per_class=10)
    assert e.probe_name == "resnet-tiny:init0" and e.hessian.size == sum(e.layer_sizes)
    assert e.layers[0] == "stem.0" and "head" not in " ".join(e.layers)
    again = task2vec_embedding(sets["a"], "resnet-tiny", n_samples=1, max_per_class=10)
    assert np.array_equal(e.hessian, again.hessian)


# -- (4) distances ---------------------------------------------------------------------------
def test_normalized_cosine_symmetric_zero_on_self_scale_free(emb):
    a, b = emb["a"], emb["fresh"]
    assert normalized_cosine_distance(a, a) == 0.0 and cosine_distance(a, a) == 0.0
    assert normalized_cosine_distance(a, b) == pytest.approx(normalized_cosine_distance(b, a), abs=1e-12)
    assert 0 < normalized_cosine_distance(a, b) <= 1
    assert normalized_cosine_distance(a.hessian, 7.0 * a.hessian) == pytest.approx(0.0, abs=1e-9)
    # it is not the plain cosine: the plain one follows the large entries, this one weighs every filter
    h = np.array([100.0, 1.0, 1.0, 1.0])
    g = np.array([100.0, 3.0, 1.0, 1.0])
    assert cosine_distance(h, g) < 1e-3 < normalized_cosine_distance(h, g)
    u = h / (h + g)
    assert normalized_cosine_distance(h, g) == pytest.approx(scipy_cosine(u, g / (h + g)))


def test_plain_cosine_is_the_seed_studys(emb):
    a, b = emb["a"], emb["fresh"]
    assert cosine_distance(a, b) == pytest.approx(scipy_cosine(a.hessian.astype(np.float64), b.hessian))
    assert cosine_distance(a, b, layerwise=True) != pytest.approx(cosine_distance(a, b))


def test_asymmetric_distance_as_defined(sets, emb):
    src, tgt = emb["a"], emb["fresh"]
    t0 = trivial_embedding(sets["a"], **OPTS)
    assert t0.info["trivial"] == "shuffled labels" and t0.info["head_train_accuracy"] < 0.8
    d = asymmetric_distance(src, tgt, t0)
    assert d == pytest.approx(normalized_cosine_distance(src, tgt) - 0.15 * normalized_cosine_distance(src, t0))
    assert asymmetric_distance(src, tgt, t0, alpha=0.0) == pytest.approx(normalized_cosine_distance(src, tgt))
    assert asymmetric_distance(src, src, t0) < 0  # self minus the complexity term
    # a source far from its trivial embedding (rich label structure) is brought closer
    s, t = np.array([1.0, 0.2, 0.2, 1]), np.array([1.0, 0.5, 0.5, 1])
    near, far = np.array([1.0, 0.25, 0.25, 1]), np.array([1.0, 0.01, 3.0, 1])
    assert normalized_cosine_distance(s, near) < normalized_cosine_distance(s, far)
    assert asymmetric_distance(s, t, far) < asymmetric_distance(s, t, near)
    assert asymmetric_distance(s, t, near) != pytest.approx(asymmetric_distance(t, s, near))


# -- inputs ------------------------------------------------------------------------------------
def test_imageset_input_and_unlabelled_set(tmp_path):
    root = labelled_png_folder(tmp_path / "set", n_per_class=8, classes=("a", "b"), side=32)
    iset = read_imageset(root, side=28, channels="rgb")
    e = task2vec_embedding(iset, n_samples=1)
    assert e.n_images == 16 and e.info["dataset"] == iset.name
    unlabelled = dataclasses.replace(iset, labels=None)
    with pytest.raises(UserError, match="Task2Vec needs labels: "):
        task2vec_embedding(unlabelled)
    with pytest.raises(UserError, match="Task2Vec needs labels: "):
        trivial_embedding(unlabelled)
    with pytest.raises(UserError, match="two classes"):
        task2vec_embedding((iset.images, np.zeros(len(iset), int)))
