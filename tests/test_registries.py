"""One registry per plug-in family, and one contract test per family that runs every member.

Families: profile similarities (``meta_features.SIMILARITIES``), transferability estimators
(``meta_features.ESTIMATORS``), execution backends (``experiments.backends.BACKENDS``: local
with 1 and 2 workers, ray on a local instance when installed) and LOTO baselines
(``recommender.model.baselines.BASELINES``). Each contract is parametrised over the registry
itself, so a member added later is held to it without editing this file; and each family
shows that adding a member is one decorated function.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_meta_dataset import make_synthetic_kb

import meta_features as mf
from experiments.backends import BACKENDS, Backend, BackendError, make_backend
from experiments.cells import RunContext
from experiments.matrix import plan_matrix
from experiments.protocol import load_protocol
from experiments.store import open_store
from recommender.model import baselines as bl
from recommender.model import build_meta_dataset, fold_rows, held_out_with_twins


# -- similarities ------------------------------------------------------------------------------
def _fisher(seed: int, shift: float, trivial: bool = False) -> mf.Task2VecEmbedding:
    """A synthetic positive Fisher diagonal that moves from one direction toward another with
    ``shift`` (t0: a flat, structure-free vector of the same size)."""
    base, toward = (np.exp(np.random.default_rng(s).normal(0, 1, 48)) for s in (97, 98))
    h = np.full(48, base.mean()) if trivial else base + shift * toward
    h = h * (1 + 0.01 * np.random.default_rng(seed).random(48))
    return mf.Task2VecEmbedding(hessian=h, scale=None, layers=["l0", "l1"], n_images=160, seed=seed,
                                probe_name="synthetic", cost_s=0.0, layer_sizes=[16, 32])


def profile(name: str, seed: int, shift: float = 0.0, labelled: bool = True, n: int = 160) -> mf.DatasetProfile:
    """Four labelled clusters in 8-d, moved by ``shift`` (embeddings, meta-features and the
    Task2Vec embedding alike; an unlabelled profile has no Task2Vec embedding, as profile_dataset)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    centres = np.random.default_rng(99).normal(0, 3, (4, 8))
    emb = (centres[labels] + rng.normal(0, 1, (n, 8)) + shift).astype(np.float32)
    meta = pd.Series({f"stats.f{i}": float(v) for i, v in enumerate(np.linspace(0, 1, 6) * (1 + shift) + shift)})
    t2v = (_fisher(seed, shift), _fisher(seed, shift, trivial=True)) if labelled else (None, None)
    return mf.DatasetProfile(name, meta, emb, labels if labelled else None, f"fp{seed}", None, *t2v)


@pytest.fixture(scope="module")
def scaler() -> dict:
    refs = [profile(f"r{i}", i, shift=0.3 * i) for i in range(4)]
    refs[1].meta.iloc[0] += 1.0
    return mf.fit_scaler(refs)


@pytest.mark.parametrize("name", list(mf.SIMILARITIES))
def test_similarity_contract(name: str, scaler: dict) -> None:
    """Every similarity: finite, its identity value on itself, ordered by shift, NaN (not a
    guess) when it needs labels that one side lacks; symmetric unless registered otherwise,
    and then its identity value is <= 0 and swapping the two sides changes it."""
    sim = mf.SIMILARITIES[name]
    a = profile("a", 0)
    same = sim.fn(a, a, scaler)
    near, far = profile("b", 1, shift=0.5), profile("c", 2, shift=2.0)
    v_near, v_far = sim.fn(a, near, scaler), sim.fn(a, far, scaler)
    assert math.isfinite(same) and math.isfinite(v_near) and math.isfinite(v_far)
    assert (v_near > v_far) if sim.higher_is_closer else (v_near < v_far)
    if sim.symmetric:
        assert same == pytest.approx(1.0 if sim.higher_is_closer else 0.0, abs=1e-6)
        assert sim.fn(near, a, scaler) == pytest.approx(v_near, rel=1e-6, abs=1e-9)
    else:  # a direction: better than 0 on itself, and (source, target) != (target, source)
        assert not sim.higher_is_closer and same < -1e-3
        assert abs(sim.fn(far, a, scaler) - v_far) > 1e-3
    unlabelled = profile("u", 3, shift=0.5, labelled=False)
    got = mf.pair_similarities(a, unlabelled, scaler)[name]
    assert math.isnan(got) if sim.needs_labels else math.isfinite(got)


def test_adding_a_similarity_is_one_decorated_function(scaler: dict) -> None:
    @mf.register_similarity("dist_mean_gap")
    def _gap(source: mf.DatasetProfile, target: mf.DatasetProfile, scaler: dict | None) -> float:
        return float(np.linalg.norm(source.embeddings.mean(0) - target.embeddings.mean(0)))

    try:
        out = mf.pair_similarities(profile("a", 0), profile("b", 1, shift=1.0), scaler)
        assert out["dist_mean_gap"] > 0 and list(out)[-1] == "dist_mean_gap"
        with pytest.raises(ValueError, match="already registered"):
            mf.register_similarity("dist_mean_gap")(_gap)
        with pytest.raises(ValueError, match="sim_"):
            mf.register_similarity("closeness")
    finally:
        del mf.SIMILARITIES["dist_mean_gap"]


# -- transferability estimators ------------------------------------------------------------------
def _task(informative: bool, seed: int = 0, n: int = 240, k: int = 3, d: int = 16):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(0, 4 if informative else 0, (k, d))
    f = centres[y] + rng.normal(0, 1, (n, d))
    logits = (np.eye(k)[y] * (4.0 if informative else 0.0)) + rng.normal(0, 1, (n, k))
    p = np.exp(logits - logits.max(1, keepdims=True))
    return f, y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("name", list(mf.ESTIMATORS))
def test_estimator_contract(name: str) -> None:
    """Every estimator: finite, higher on an informative source than on noise, blind to how
    classes are numbered and samples ordered; a head-based one is NaN without a head."""
    est = mf.ESTIMATORS[name]
    f, y, p = _task(True)
    fn, yn, pn = _task(False, seed=1)
    good, noise = est.score(f, y, p), est.score(fn, yn, pn)
    assert math.isfinite(good) and math.isfinite(noise)
    assert good > noise
    order = np.random.default_rng(2).permutation(len(y))
    assert est.score(f[order], (y[order] + 1) % 3, p[order][:, [1, 2, 0]]) == pytest.approx(good, rel=1e-6, abs=1e-9)
    assert math.isnan(est.score(f, y, None)) == est.needs_head
    assert mf.estimate_all(f, y, p)[name] == pytest.approx(good, rel=1e-9)


def test_adding_an_estimator_is_one_decorated_function() -> None:
    @mf.register_estimator("class_gap")
    def _gap(features: np.ndarray, labels: np.ndarray) -> float:
        means = np.stack([features[labels == c].mean(0) for c in np.unique(labels)])
        return float(np.linalg.norm(means - means.mean(0)))

    try:
        f, y, p = _task(True)
        out = mf.estimate_all(f, y, p)
        assert list(out)[-1] == "class_gap" and out["class_gap"] > 0
    finally:
        del mf.ESTIMATORS["class_gap"]


# -- execution backends ----------------------------------------------------------------------------
TINY = """
name = "contract"
arch = "resnet-tiny"
side = 16
channels = 1
sources = ["src_a"]
targets = ["tgt_ok", "tgt_bad"]
[evaluation]
mode = "folds"
repeats = 2
n_train = 48
[pretrain]
epochs = 1
batch_size = 32
lr = 0.01
patience = 1
max_images = 96
[finetune]
epochs = 1
batch_size = 32
lr = 0.01
patience = 1
"""


def _toy(path: Path, n_classes: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    img = rng.integers(0, 90, size=(n, 16, 16), dtype=np.int64)
    for k in range(n_classes):
        r, c = divmod(k % 4, 2)
        img[labels == k, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += 120
    np.savez_compressed(path, images=np.clip(img, 0, 255).astype(np.uint8), labels=labels.astype(np.int64))


def _contract(backend: Backend, root: Path) -> None:
    """Pretrain, then fine-tune 4 good cells and 4 whose target file broke after planning:
    one done/failed event per cell, good records returned and stored once, bad ones reported
    and left out, and a rerun computes nothing."""
    data = root / "data"
    data.mkdir()
    for i, (stem, k, n) in enumerate([("src_a", 3, 120), ("tgt_ok", 2, 96), ("tgt_bad", 2, 96)]):
        _toy(data / f"{stem}.npz", k, n, i)
    (root / "p.toml").write_text(TINY)
    plan = plan_matrix(load_protocol(str(root / "p.toml")))
    ctx = RunContext(plan.protocol, str(data), str(root / "run"), None, threads=1)
    events: list[dict] = []
    pre = backend.run(plan.pretrain, ctx, events.append)
    assert [r["kind"] for r in pre] == ["pretrain"]
    (data / "tgt_bad.npz").write_bytes(b"not an npz any more")
    events.clear()
    recs = backend.run(plan.finetune, ctx, events.append)
    good = {c.key for c in plan.finetune if c.target == "tgt_ok"}
    bad = {c.key for c in plan.finetune if c.target == "tgt_bad"}
    assert len(good) == len(bad) == 4
    done = [e["key"] for e in events if e["event"] == "done"]
    failed = [e["key"] for e in events if e["event"] == "failed"]
    assert sorted(done) == sorted(good) and sorted(failed) == sorted(bad)
    assert all(e["error"] for e in events if e["event"] == "failed")
    assert sorted(r["key"] for r in recs) == sorted(good)
    assert all(0.0 <= r["value"] <= 1.0 for r in recs)
    store = open_store(None, root / "run")
    assert good <= store.keys() and not bad & store.keys()
    again = backend.run([c for c in plan.finetune if c.key in good], ctx, lambda e: None)
    assert len(again) == len(good) and all(r.get("skipped") for r in again)  # stored: none recomputed


def _members() -> list:
    return [pytest.param(name, w, id=f"{name}-{w}") for name in BACKENDS
            for w in ((1, 2) if name == "local" else (1,))]


@pytest.mark.slow
@pytest.mark.parametrize("name,workers", _members())
def test_backend_contract(name: str, workers: int, tmp_path: Path) -> None:
    if name == "ray":
        ray = pytest.importorskip("ray", reason="ray extra not installed")
        os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")  # a busy 2-core machine
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - Ray's own start-up, not the backend under test
            pytest.skip(f"a local Ray instance did not start here: {str(exc).splitlines()[0]}")
        try:
            _contract(make_backend(name), tmp_path)
        finally:
            ray.shutdown()
        return
    _contract(make_backend(name, workers=workers, threads=workers), tmp_path)


def test_backend_registry_builds_by_name_and_refuses_unknown() -> None:
    assert {"local", "ray"} <= set(BACKENDS) and all(issubclass(c, Backend) for c in BACKENDS.values())
    assert make_backend("local", workers=2).workers == 2
    with pytest.raises(BackendError, match="unknown backend 'nosuch'"):
        make_backend("nosuch")
    with pytest.raises(BackendError, match="--address"):
        make_backend("local", address="auto")


# -- baselines -------------------------------------------------------------------------------------
def _kb_with_imagenet():
    """The synthetic 6-target KB with its big natural source named imagenet (so always_imagenet
    applies) and a similarity and a transferability pair feature (the pair family)."""
    kb = make_synthetic_kb()
    ren = {"bignat": "imagenet"}
    kb.records = kb.records.replace({"source": ren})
    kb.datasets = kb.datasets.replace({"name": ren})
    kb.meta_features = kb.meta_features.replace({"dataset": ren})
    kb.pair_features = kb.pair_features.replace({"source": ren})
    kb.manifest["sources"] = [ren.get(s, s) for s in kb.manifest["sources"]]
    return kb


@pytest.mark.parametrize("name", list(bl.BASELINES))
def test_baseline_contract(name: str) -> None:
    """Every baseline, on every held-out target: scores indexed by that target's candidate
    sources, finite where it applies, and unchanged when the held-out column's AUCs change."""
    b = bl.BASELINES[name]
    md = build_meta_dataset(_kb_with_imagenet())
    applied = 0
    for t in md.targets:
        _train, test = fold_rows(md, [t])
        twins = held_out_with_twins([t], md.twins) - {t}
        got = b.fn(md, t, test, twins)
        if got is None:
            continue
        parts = got if b.family else {name: got}
        assert parts, f"{name} on {t}: an empty family"
        for method, s in parts.items():
            s = s.reindex(test["source"])
            assert len(s) == len(test) and np.isfinite(s.to_numpy(dtype=float)).any(), (method, t)
            if b.family:
                assert method.split(":", 1)[0] in (*bl.KIND_PREFIX.values(), "pair")
        perturbed = md.matrix.copy()
        col = perturbed[t].to_numpy(dtype=float).copy()
        col[np.isfinite(col)] = col[np.isfinite(col)][::-1]  # the held-out column's AUCs reshuffled
        perturbed[t] = col
        md2 = build_meta_dataset(_kb_with_imagenet())
        md2.matrix = perturbed
        got2 = b.fn(md2, t, test, twins)
        for method, s in (got2 if b.family else {name: got2}).items():
            pd.testing.assert_series_equal(s.reindex(test["source"]), parts[method].reindex(test["source"]),
                                           check_names=False)
        applied += 1
    assert applied == len(md.targets), f"{name} applied to {applied} of {len(md.targets)} targets"
    if b.column is not None:  # the column recommend reads on a new target's rows exists
        assert b.column[0] in test.columns and b.column[1] in (1, -1)


def test_baseline_scores_runs_every_registered_baseline() -> None:
    md = build_meta_dataset(_kb_with_imagenet())
    t = md.targets[0]
    _train, test = fold_rows(md, [t])

    @bl.register_baseline("first_alphabetical")
    def _alpha(md, target, test_rows, twins):  # noqa: ANN001, ANN202
        src = test_rows["source"]
        return pd.Series(-np.argsort(np.argsort(src.to_numpy())).astype(float), index=src.to_numpy())

    try:
        out = bl.baseline_scores(md, t, test)
        single = [n for n, b in bl.BASELINES.items() if not b.family]
        assert set(single) <= set(out) and "first_alphabetical" in out
        assert {"most_similar:sim_cos", "estimate:logme"} <= set(out)
        assert all(list(s.index) == list(test["source"]) for s in out.values())
        assert bl.baseline_column("static", md) == ("fold_static_prior", 1)
        assert bl.baseline_column("always_imagenet", md) is None
        assert bl.baseline_column("most_similar:sim_cos", md) == ("pair_sim_cos", 1)
    finally:
        del bl.BASELINES["first_alphabetical"]
