"""score_kb / score_target on a tiny KB with two random-init checkpoints (no ../shared needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

# kills: a broken experiments.models / experiments.training (ImportError) passing as a skip
from experiments import KnowledgeBase, load_kb, models, save_kb, training
from experiments.knowledge_base import PAIR_COLUMNS
from imagesets import Card, ImageSet, UserError
from meta_features._checkpoint_features import conform_images, normalise, sample_rows
from meta_features.transferability import ESTIMATORS, TransferabilityError
from recommender.kb import score_kb, score_target


def _imageset(name: str, images: np.ndarray, labels: np.ndarray | None) -> ImageSet:
    card = Card(name, len(images), 0, {}, images.shape[-1], {}, {}, {}, {}, {}, labels is not None,
                0, {}, name, images.shape[1])
    names = [] if labels is None else [f"c{i}" for i in range(int(labels.max()) + 1)]
    return ImageSet(name=name, images=images, labels=labels, class_names=names, split=None,
                    paths=[str(i) for i in range(len(images))], card=card)


def _npz(path, n: int, side: int, channels: int, k: int, seed: int, split: bool = True) -> None:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    images = rng.integers(0, 60, size=(n, side, side, channels))
    images += (labels * 60)[:, None, None, None]  # brightness tracks the class
    arrays = dict(images=images.astype(np.uint8), labels=labels,
                  class_names=np.array([f"c{i}" for i in range(k)]))
    if split:
        arrays["split"] = np.where(np.arange(n) < int(0.75 * n), "train", "test")
    np.savez(path, **arrays)


def _make_kb(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _npz(data / "tgt_a.npz", 96, 28, 1, 3, seed=1)
    _npz(data / "tgt_b.npz", 80, 32, 3, 2, seed=2, split=False)
    records = pd.DataFrame(
        [dict(source=s, target=t, metric="roc_auc", value=0.7, fold=-1, seed=0)
         for s in ("src_grey", "src_rgb", "scratch") for t in ("tgt_a", "tgt_b")]
    )
    datasets = pd.DataFrame([dict(name="tgt_a", role="target", image_set="tgt_a"),
                             dict(name="tgt_b", role="target", image_set="tgt_b")])
    pair = pd.DataFrame([dict(source="src_grey", target="tgt_a", feature="fid", value=1.5,
                              kind="similarity", provenance="test")])
    kb = KnowledgeBase(name="tiny", records=records, datasets=datasets, pair_features=pair)
    path = save_kb(kb, tmp_path / "kb" / "tiny")
    torch.manual_seed(0)
    for name, chans in (("src_grey", 1), ("src_rgb", 3)):
        net = models.create_model("resnet-tiny", num_classes=4, in_chans=chans)
        models.save_checkpoint(net, path / "checkpoints" / f"{name}.safetensors",
                               {"side": 28, "source": name, "class_names": list("abcd")})
    return path, data


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny KB scored once (module scope: extraction dominates this file's run time)."""
    path, data = _make_kb(tmp_path_factory.mktemp("kb"))
    return path, data, score_kb(path, data_dir=data)


def test_score_kb_writes_every_pair_idempotently(scored):
    path, data, rows = scored
    assert list(rows.columns) == PAIR_COLUMNS
    # (checkpoints + scratch) x targets x estimators: scratch is scored on random inits
    assert len(rows) == 3 * 2 * len(ESTIMATORS)
    assert set(rows["source"]) == {"src_grey", "src_rgb", "scratch"}
    assert rows[rows["source"] == "scratch"]["provenance"].str.contains("random inits").all()
    assert (rows["kind"] == "transferability").all() and np.isfinite(rows["value"]).all()
    kb = load_kb(path)
    assert len(kb.pair_features) == len(rows) + 1  # the similarity row survives
    # without a hook, tgt_a keeps its own 72-image train split; tgt_b gets a seeded 70 %
    prov = rows[rows["source"] != "scratch"].drop_duplicates("target").set_index("target")["provenance"]
    assert "72 of 72 train images" in prov["tgt_a"] and "56 of 56" in prov["tgt_b"]
    again = score_kb(path, data_dir=data)
    kb2 = load_kb(path)
    assert len(kb2.pair_features) == len(rows) + 1
    pd.testing.assert_frame_equal(rows, again)  # seeded: same values on a rerun
    knn = kb2.pair_feature_matrix("knn_acc")
    assert knn.shape == (3, 2) and ((knn >= 0) & (knn <= 1)).all().all()  # 2 checkpoints + scratch


def test_train_split_hook_and_subsample_limit_the_rows_scored(scored, tmp_path):
    path, data, _ = scored
    seen = {}

    def first_half(ds: ImageSet) -> np.ndarray:
        seen[ds.name] = len(ds)
        return np.arange(len(ds) // 2)

    rows = score_kb(path, data_dir=data, max_images=30, train_split=first_half)
    assert seen == {"tgt_a": 96, "tgt_b": 80}  # the whole set goes to the hook
    prov = rows[rows["source"] != "scratch"].drop_duplicates("target").set_index("target")["provenance"]
    assert "30 of 48 train images" in prov["tgt_a"] and "30 of 40" in prov["tgt_b"]


def test_score_target_on_a_user_imageset_of_another_size(scored):
    path, _, _ = scored
    rng = np.random.default_rng(3)
    labels = np.arange(50) % 2
    images = (rng.integers(0, 100, size=(50, 40, 40, 3)) + labels[:, None, None, None] * 100)
    iset = _imageset("user", images.astype(np.uint8), labels)
    out = score_target(load_kb(path), iset)
    assert list(out.columns) == ["source", "feature", "value"]
    assert len(out) == 3 * len(ESTIMATORS) and np.isfinite(out["value"]).all()  # 2 checkpoints + scratch
    # brightness separates the classes perfectly: k-NN on any conv features finds it
    assert out[out.feature == "knn_acc"]["value"].min() > 0.9
    unlabelled = _imageset("u", iset.images, None)
    with pytest.raises(UserError):
        score_target(load_kb(path), unlabelled)


def test_input_transform_matches_training():
    batch = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 8, 8, 2)).astype(np.uint8))
    expected = training.normalise(batch.permute(0, 3, 1, 2), training.Device("cpu"))
    assert torch.allclose(normalise(batch), expected)


def test_kb_without_checkpoints_is_a_user_error(tmp_path):
    kb = KnowledgeBase(name="bare", records=pd.DataFrame([dict(source="s", target="t",
                       metric="roc_auc", value=0.5)]), datasets=pd.DataFrame(columns=["name"]))
    with pytest.raises(TransferabilityError, match="no checkpoints"):
        score_kb(save_kb(kb, tmp_path / "bare"))


def test_conform_and_sample_rows():
    x = np.zeros((4, 10, 10, 3), np.uint8)
    x[..., 0] = 255
    grey = conform_images(x, 5, 1)
    assert grey.shape == (4, 5, 5, 1) and int(grey[0, 0, 0, 0]) == round(255 * 0.299)
    assert conform_images(grey, 5, 3).shape == (4, 5, 5, 3)
    labels = np.array([0] * 90 + [1] * 10)
    rows = sample_rows(labels, 20, random_state=0)
    assert len(rows) == 20 and np.bincount(labels[rows]).tolist() == [18, 2]
    assert np.array_equal(rows, sample_rows(labels, 20, random_state=0))
