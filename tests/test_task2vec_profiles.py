"""Task2Vec in dataset profiles and pair features (issue 17): stored, loaded, compared, attached.

Properties that fail when the code is wrong: the round trip keeps the embedding bit-identical;
an unlabelled set gets none and says why; a profile written before Task2Vec loads and gives
NaN Task2Vec distances (never a crash), a damaged one is a one-line error; the asymmetric
distance is the normalised cosine minus alpha times the source's distance to its t0; a KB
target's attached embedding is the one of its training rows, not of all its rows.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_meta_features_extract import make_set
from test_train_only_labels import kb_with_leaky_target  # noqa: F401 (fixture)

import meta_features as mf
from experiments.knowledge_base import load_kb, save_kb
from imagesets import artifacts_dir, read_imageset
from meta_features import _extract
from meta_features.task2vec import ASYM_ALPHA, normalized_cosine_distance
from recommender.kb.attach import attach_to_kb

T2V = ["dist_task2vec_cos", "dist_task2vec_ncos", "dist_task2vec_asym"]


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CATSCANS_CACHE", str(tmp_path / "cache"))
    _extract.clear_memory_cache()


@pytest.fixture(scope="module")
def _module_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the per-test cache
        mp.setenv("CATSCANS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def scaler(_module_cache) -> dict:
    refs = [mf.profile_dataset(make_set(n=45, seed=s, name=f"r{s}"), task2vec=False) for s in range(3)]
    return mf.fit_scaler(refs)


@pytest.fixture(scope="module")
def labelled(_module_cache) -> tuple[mf.DatasetProfile, mf.DatasetProfile]:
    """Two labelled profiles of different data (the second: heavier noise)."""
    a = mf.profile_dataset(make_set(n=60, name="a"), task2vec_trivial=True)
    b_set = make_set(n=60, seed=4, name="b")
    rng = np.random.default_rng(4)
    b_set.images[:] = np.clip(b_set.images + rng.normal(0, 50, b_set.images.shape), 0, 255).astype(np.uint8)
    return a, mf.profile_dataset(b_set, task2vec_trivial=True)


def test_profile_carries_the_default_embedding_and_round_trips_bit_identical(labelled, tmp_path):
    a = labelled[0]
    assert a.task2vec is not None and a.task2vec_trivial is not None
    direct = mf.task2vec_embedding(make_set(n=60, name="a"), seed=0)  # default probe and caps
    np.testing.assert_array_equal(a.task2vec.hessian, direct.hessian)
    assert not np.array_equal(a.task2vec.hessian, a.task2vec_trivial.hessian)
    assert "t0" in a.info["task2vec"] and "needs labels" not in a.info["task2vec"]
    q = mf.load_profile(mf.save_profile(a, tmp_path / "a"))
    for got, want in ((q.task2vec, a.task2vec), (q.task2vec_trivial, a.task2vec_trivial)):
        assert got.hessian.dtype == np.float32 and got.hessian.tobytes() == want.hessian.tobytes()
        assert (got.layers, got.layer_sizes, got.seed, got.probe_name) == (
            want.layers, want.layer_sizes, want.seed, want.probe_name)
        assert got.info == want.info


def test_a_target_profile_skips_t0(labelled):
    t = mf.profile_dataset(make_set(n=60, name="a"))  # the default: as recommend profiles a folder
    assert t.task2vec_trivial is None and "no t0" in t.info["task2vec"]
    np.testing.assert_array_equal(t.task2vec.hessian, labelled[0].task2vec.hessian)


def test_unlabelled_profile_has_no_embedding_and_a_note(labelled, scaler, tmp_path):
    u = mf.profile_dataset(make_set(n=60, labelled=False, name="u"), task2vec_trivial=True)
    assert u.task2vec is None and u.task2vec_trivial is None
    assert "Task2Vec needs labels" in u.info["task2vec"]
    q = mf.load_profile(mf.save_profile(u, tmp_path / "u"))
    assert q.task2vec is None and "Task2Vec needs labels" in q.info["task2vec"]
    s = mf.pair_similarities(labelled[0], q, scaler)
    assert all(math.isnan(s[k]) for k in T2V) and math.isfinite(s["dist_frechet"])


def _rewrite_npz(path: Path, edit) -> None:  # noqa: ANN001
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays = edit(arrays)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def test_profile_older_than_task2vec_loads_and_gives_nan(labelled, scaler, tmp_path):
    a, b = labelled
    mf.save_profile(b, tmp_path / "old")
    _rewrite_npz(tmp_path / "old.npz", lambda d: {k: v for k, v in d.items() if not k.startswith("task2vec")})
    old = mf.load_profile(tmp_path / "old")
    assert old.task2vec is None and old.task2vec_trivial is None and old.labels is not None
    new = mf.pair_similarities(a, b, scaler)
    assert all(math.isfinite(new[k]) and new[k] != 0 for k in T2V)
    for s in (mf.pair_similarities(a, old, scaler), mf.pair_similarities(old, a, scaler)):
        assert all(math.isnan(s[k]) for k in T2V)
        assert s["dist_otdd"] == pytest.approx(new["dist_otdd"], rel=1e-2)  # the rest still computed


def test_source_without_t0_gives_nan_asym_only(labelled, scaler):
    a, b = labelled
    s = mf.pair_similarities(dataclasses.replace(a, task2vec_trivial=None), b, scaler)
    assert math.isnan(s["dist_task2vec_asym"]) and math.isfinite(s["dist_task2vec_ncos"])


@pytest.mark.parametrize("damage, words", [
    (lambda d: {**d, "task2vec_hessian": np.full_like(d["task2vec_hessian"], np.nan)}, "finite non-negative"),
    (lambda d: {**d, "task2vec_t0_hessian": d["task2vec_t0_hessian"][:-3]}, "layers add up"),
    (lambda d: {**d, "task2vec_meta": np.array("{not json")}, "unreadable"),
    (lambda d: {k: v for k, v in d.items() if k != "task2vec_hessian"}, "unreadable"),
])
def test_damaged_embedding_is_one_clear_line(labelled, tmp_path, damage, words):
    mf.save_profile(labelled[0], tmp_path / "bad")
    _rewrite_npz(tmp_path / "bad.npz", damage)
    with pytest.raises(mf.MetaFeatureError, match=words) as exc:
        mf.load_profile(tmp_path / "bad")
    msg = str(exc.value)
    assert "\n" not in msg and "corrupt" in msg and "catscans kb attach" in msg


def test_asym_is_ncos_minus_alpha_source_to_t0(labelled, scaler):
    a, b = labelled
    ab, ba = mf.pair_similarities(a, b, scaler), mf.pair_similarities(b, a, scaler)
    d_a0 = normalized_cosine_distance(a.task2vec, a.task2vec_trivial)
    d_b0 = normalized_cosine_distance(b.task2vec, b.task2vec_trivial)
    assert d_a0 > 1e-4 and abs(d_a0 - d_b0) > 1e-5  # else the checks below prove nothing
    assert ab["dist_task2vec_asym"] == pytest.approx(ab["dist_task2vec_ncos"] - ASYM_ALPHA * d_a0, rel=1e-9)
    assert ba["dist_task2vec_asym"] == pytest.approx(ba["dist_task2vec_ncos"] - ASYM_ALPHA * d_b0, rel=1e-9)
    assert ab["dist_task2vec_ncos"] == pytest.approx(ba["dist_task2vec_ncos"], rel=1e-9)
    assert ab["dist_task2vec_cos"] == pytest.approx(ba["dist_task2vec_cos"], rel=1e-9)
    self_ = mf.pair_similarities(a, a, scaler)
    assert self_["dist_task2vec_cos"] == 0 and self_["dist_task2vec_ncos"] == 0
    assert self_["dist_task2vec_asym"] == pytest.approx(-ASYM_ALPHA * d_a0)


def test_embeddings_of_different_probes_are_not_compared(labelled, scaler):
    a, b = labelled
    other = dataclasses.replace(b.task2vec, info={**b.task2vec.info, "probe_digest": "another-probe"})
    s = mf.pair_similarities(a, dataclasses.replace(b, task2vec=other), scaler)
    assert all(math.isnan(s[k]) for k in T2V)


def test_attached_target_embedding_is_of_its_training_rows(kb_with_leaky_target, monkeypatch):  # noqa: F811
    art, data, full, profiles, scaler, kb = kb_with_leaky_target
    src_set = read_imageset(data / "src.npz", side=mf.PROFILE_SIDE, channels="keep", name="src")
    profiles = {**profiles, "src": dataclasses.replace(profiles["src"], task2vec_trivial=mf.trivial_embedding(src_set))}
    # the same probe (and digest) as the profiles: embeddings of different probes are never compared
    shutil.copytree(artifacts_dir() / "probe", art / "probe", dirs_exist_ok=True)
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(art))
    save_kb(kb, art / "kb" / "leaky_t2v")
    attach_to_kb("leaky_t2v", profiles, scaler, data_dir=data)
    pf = load_kb("leaky_t2v").pair_features.set_index("feature")
    train = mf.task2vec_embedding(full.subset(np.flatnonzero(full.split == "train")))
    src = profiles["src"].task2vec
    want = normalized_cosine_distance(src, train)
    all_rows = normalized_cosine_distance(src, profiles["tgt"].task2vec)
    assert abs(want - all_rows) > 1e-3  # the separable test rows change the target's embedding
    assert float(pf.loc["dist_task2vec_ncos", "value"]) == pytest.approx(want, rel=1e-6)
    asym = want - ASYM_ALPHA * normalized_cosine_distance(src, profiles["src"].task2vec_trivial)
    assert float(pf.loc["dist_task2vec_asym", "value"]) == pytest.approx(asym, rel=1e-6)
    assert "training rows" in pf.loc["dist_task2vec_cos", "provenance"]

