"""Dataset similarities: identity, symmetry, order invariance, growth with shift, KB attach."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_meta_features_extract import make_set

import meta_features as mf
from experiments.knowledge_base import KnowledgeBase, load_kb, save_kb
from meta_features import _extract

DIST_KEYS = ["dist_euclid_meta", "dist_frechet", "dist_mmd", "dist_otdd", "dist_ot"]


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CATSCANS_CACHE", str(tmp_path / "cache"))
    _extract.clear_memory_cache()


def fake_profile(name: str, seed: int, shift: float = 0.0, n: int = 200, labelled: bool = True,
                 meta_shift: float = 0.0) -> mf.DatasetProfile:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    centres = np.random.default_rng(99).normal(0, 3, (4, 8))
    emb = (centres[labels] + rng.normal(0, 1, (n, 8)) + shift).astype(np.float32)
    meta = pd.Series({f"stats.f{i}": float(v) for i, v in enumerate(np.linspace(0, 1, 6) + meta_shift)})
    return mf.DatasetProfile(name, meta, emb, labels if labelled else None, f"fp{seed}")


@pytest.fixture
def scaler():
    refs = [fake_profile(f"r{i}", i, meta_shift=0.3 * i) for i in range(4)]
    refs[1].meta.iloc[0] += 1.0  # features must vary across references to be kept
    return mf.fit_scaler(refs)


def test_self_distance_is_zero_and_cosine_max(scaler):
    p = fake_profile("a", 0)
    s = mf.pair_similarities(p, p, scaler)
    for k in DIST_KEYS:
        assert s[k] == pytest.approx(0.0, abs=1e-9), k
    assert s["sim_cosine_meta"] == pytest.approx(1.0)


def test_symmetric(scaler):
    a, b = fake_profile("a", 0), fake_profile("b", 1, shift=0.7, meta_shift=0.4)
    ab, ba = mf.pair_similarities(a, b, scaler), mf.pair_similarities(b, a, scaler)
    for k in ab:
        if k.startswith("dist_task2vec"):  # these fakes carry no Task2Vec embedding: NaN, not a guess
            assert math.isnan(ab[k]) and math.isnan(ba[k]), k
            continue
        assert mf.SIMILARITIES[k].symmetric, k
        assert ab[k] == pytest.approx(ba[k], rel=1e-6, abs=1e-9), k
        assert ab[k] > 0 if k in DIST_KEYS else ab[k] < 1


def test_distances_grow_with_shift(scaler):
    a = fake_profile("a", 0)
    rows = [mf.pair_similarities(a, fake_profile("b", 1, shift=s, meta_shift=s), scaler) for s in (0.0, 0.5, 1.5)]
    for k in DIST_KEYS:
        vals = [r[k] for r in rows]
        assert vals[0] < vals[1] < vals[2], (k, vals)
    assert rows[0]["sim_cosine_meta"] > rows[2]["sim_cosine_meta"]


def test_otdd_sees_labels_and_unlabelled_falls_back(scaler):
    a = fake_profile("a", 0)
    relabelled = fake_profile("b", 0)
    relabelled.labels = (relabelled.labels + 1) % 4  # same points, classes permuted
    s = mf.pair_similarities(a, relabelled, scaler)
    assert s["dist_ot"] == pytest.approx(0.0, abs=1e-9) and s["dist_otdd"] == pytest.approx(0.0, abs=1e-6)
    mixed = fake_profile("c", 0)
    mixed.labels = np.random.default_rng(5).permutation(mixed.labels)  # labels no longer match clusters
    assert mf.pair_similarities(a, mixed, scaler)["dist_otdd"] > 1.0
    u = fake_profile("u", 1, labelled=False)
    s = mf.pair_similarities(a, u, scaler)
    assert math.isnan(s["dist_otdd"]) and s["dist_ot"] > 0


def test_real_pipeline_order_invariant_and_noise_grows():
    base = make_set(n=90, name="base")
    perm = base.subset(np.random.default_rng(3).permutation(len(base)))
    p0, p1 = mf.profile_dataset(base), mf.profile_dataset(perm)
    noisy = []
    for sigma in (10, 40):
        s = make_set(n=90, name=f"noisy{sigma}")
        rng = np.random.default_rng(sigma)
        s.images[:] = np.clip(s.images + rng.normal(0, sigma, s.images.shape), 0, 255).astype(np.uint8)
        noisy.append(mf.profile_dataset(s))
    scaler = mf.fit_scaler([p0, *noisy, mf.profile_dataset(make_set(n=60, seed=7, name="other"))])
    same = mf.pair_similarities(p0, p1, scaler)
    d10, d40 = (mf.pair_similarities(p0, q, scaler) for q in noisy)
    # 0 up to float rounding, which scales with the embeddings (Fréchet: squared embedding units)
    assert all(same[k] == pytest.approx(0.0, abs=1e-9 + 1e-7 * d10[k]) for k in DIST_KEYS), same
    for k in ["dist_euclid_meta", "dist_frechet", "dist_mmd", "dist_otdd"]:
        assert 0 < d10[k] < d40[k], (k, d10[k], d40[k])


def test_profile_roundtrip(tmp_path):
    p = mf.profile_dataset(make_set(n=60))
    path = mf.save_profile(p, tmp_path / "toy", max_embeddings=40)
    q = mf.load_profile(path)
    assert q.embeddings.shape == (40, p.embeddings.shape[1]) and len(q.labels) == 40
    pd.testing.assert_series_equal(p.meta, q.meta, check_exact=False, rtol=1e-12)
    assert q.fingerprint == p.fingerprint
    with pytest.raises(mf.MetaFeatureError):
        mf.load_profile(tmp_path / "missing")


def test_domain_distance():
    ct = {"domain": "medical", "modality": "ct", "channels": 1}
    assert mf.domain_distance(ct, dict(ct)) == 0
    xr = {"domain": "medical", "modality": "x-ray", "channels": 1}
    nat = {"domain": "natural", "modality": "photograph", "channels": 3}
    assert mf.domain_distance(ct, xr) == 2 == mf.domain_distance(xr, ct)
    assert mf.domain_distance(ct, nat) == 6 == mf.domain_distance(nat, ct)
    assert mf.domain_distance(ct, {"domain": "medical", "modality": "CT", "channels": float("nan")}) == 0
    assert math.isnan(mf.domain_distance(ct, {"modality": "ct"}))


def test_attach_to_kb_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(tmp_path))
    from recommender.kb import attach_to_kb

    cols = ["name", "role", "domain", "modality", "n_images", "n_classes", "channels", "image_set"]
    datasets = pd.DataFrame([
        ["srcA", "source", "natural", "photograph", 1000, 10, 3, ""],
        ["tgt", "both", "medical", "x-ray", 90, 3, 1, "tgt"],
        ["big", "source", "medical", "ct", 5000, 5, 1, "stand"],
    ], columns=cols)
    recs = pd.DataFrame({"source": ["srcA", "big", "tgt"], "target": ["tgt", "tgt", "big"], "metric": "roc_auc",
                         "value": [0.8, 0.9, 0.7], "fold": -1, "seed": -1})
    save_kb(KnowledgeBase("tiny", recs, datasets, {"metric": "roc_auc"}))
    profiles = {"tgt": mf.profile_dataset(make_set(n=60, name="tgt")),
                "stand": mf.profile_dataset(make_set(n=60, seed=4, name="stand"))}
    scaler = mf.fit_scaler([*profiles.values(), mf.profile_dataset(make_set(n=30, seed=9))])
    for _ in range(2):  # idempotent
        attach_to_kb("tiny", profiles, scaler)
    kb = load_kb("tiny")
    m = kb.meta_features.set_index("dataset")
    assert m.loc["srcA"].notna().sum() == 4  # card values only: n images, classes, channels, modality
    assert m.loc["srcA", "dataset.log10_n_images"] == pytest.approx(3.0)
    assert m.loc["tgt"].notna().sum() > 40 and m.loc["big", "dataset.n_classes"] == 5
    assert math.isnan(m.loc["big", "dataset.imbalance_ratio"])  # stand-in: class counts not the dataset's
    pf = kb.pair_features
    sim = pf[pf["kind"] == "similarity"]
    assert set(zip(sim["source"], sim["target"], strict=True)) == {("big", "tgt"), ("tgt", "big")}
    assert len(sim) == 12 and len(pf[pf["feature"] == "domain_distance"]) == 3
    assert kb.records.shape[0] == 3  # records untouched
