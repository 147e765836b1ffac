"""Label-based meta-features of a KB target use only the rows its protocol trains on.

A target whose TEST images are perfectly separable by class and whose TRAINING images are
not: features computed on all rows (as the shipped profiles are) say "separable", and that
is the test set the KB's AUC was measured on. Attached to the KB they must say what the
training rows say.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import meta_features as mf
from experiments.knowledge_base import KnowledgeBase, load_kb, save_kb
from imagesets import read_imageset
from meta_features import PROFILE_SIDE
from recommender.kb.attach import attach_to_kb, protocol_train_rows, train_label_features

N = 240


def _leaky_target(path: Path) -> None:
    """Train rows: class-independent noise, classes 3:1. Test rows: class = bright half, 1:1."""
    rng = np.random.default_rng(0)
    split = np.array(["train"] * 160 + ["val"] * 20 + ["test"] * 60)
    labels = np.concatenate([np.r_[np.zeros(120), np.ones(40)], np.arange(20) % 2, np.arange(60) % 2]).astype(np.int64)
    img = rng.integers(0, 256, size=(N, 28, 28)).astype(np.uint8)
    test = np.flatnonzero(split == "test")
    img[test] = rng.integers(0, 40, size=(len(test), 28, 28)).astype(np.uint8)
    bright = test[labels[test] == 1]
    img[bright, :, :14] = 230
    np.savez_compressed(path, images=img, labels=labels, split=split, class_names=np.array(["neg", "pos"]))


@pytest.fixture(scope="module")
def kb_with_leaky_target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labels")
    data = tmp / "data"
    data.mkdir()
    _leaky_target(data / "tgt.npz")
    rng = np.random.default_rng(1)
    np.savez_compressed(data / "src.npz", images=rng.integers(0, 256, size=(60, 28, 28)).astype(np.uint8),
                        labels=np.arange(60) % 3, class_names=np.array(["a", "b", "c"]))
    full = read_imageset(data / "tgt.npz", side=PROFILE_SIDE, channels="keep", name="tgt")
    profiles = {"tgt": mf.profile_dataset(full),  # all rows, as build_shipped_profiles does
                "src": mf.profile_dataset(read_imageset(data / "src.npz", side=PROFILE_SIDE, channels="keep",
                                                        name="src"))}
    scaler = mf.fit_scaler(list(profiles.values()) + [profiles["src"]])
    datasets = pd.DataFrame([["src", "source", "natural", "photograph", 60, 3, 1, "src"],
                             ["tgt", "target", "medical", "x-ray", N, 2, 1, "tgt"]],
                            columns=["name", "role", "domain", "modality", "n_images", "n_classes", "channels",
                                     "image_set"])
    recs = pd.DataFrame({"source": ["src"], "target": ["tgt"], "metric": "roc_auc", "value": [0.8],
                         "fold": -1, "seed": -1})
    art = tmp / "artifacts"
    return art, data, full, profiles, scaler, KnowledgeBase("leaky", recs, datasets, {"metric": "roc_auc"})


def test_attached_label_features_come_from_training_rows(kb_with_leaky_target, monkeypatch):
    art, data, full, profiles, scaler, kb = kb_with_leaky_target
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(art))
    save_kb(kb, art / "kb" / "leaky")
    attach_to_kb("leaky", profiles, scaler, data_dir=data)
    m = load_kb("leaky").meta_features.set_index("dataset")
    train = np.flatnonzero(full.split == "train")
    expect = train_label_features(full, train)
    for col in ("label.nn1_accuracy", "label.fisher_ratio", "label.silhouette",
                "dataset.imbalance_ratio", "dataset.class_entropy"):
        assert m.loc["tgt", col] == pytest.approx(expect[col], rel=1e-9, abs=1e-12), col
    # the all-rows profile sees the separable test images; the attached row must not
    all_rows = profiles["tgt"].meta
    assert all_rows["label.fisher_ratio"] > 5 * m.loc["tgt", "label.fisher_ratio"]
    assert all_rows["label.silhouette"] > m.loc["tgt", "label.silhouette"] + 0.05
    assert m.loc["tgt", "dataset.imbalance_ratio"] == pytest.approx(3.0)  # train rows are 3:1
    assert all_rows["dataset.imbalance_ratio"] < 2.5
    # a source keeps its profile's label features (it is never a held-out target)
    assert m.loc["src", "label.nn1_accuracy"] == pytest.approx(profiles["src"].meta["label.nn1_accuracy"])


def test_target_without_its_images_gets_no_label_features(kb_with_leaky_target, monkeypatch, tmp_path):
    art, _, _, profiles, scaler, kb = kb_with_leaky_target
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(art))
    save_kb(kb, art / "kb" / "leaky2")
    attach_to_kb("leaky2", profiles, scaler, data_dir=tmp_path)  # no tgt.npz here
    m = load_kb("leaky2").meta_features.set_index("dataset")
    assert math.isnan(m.loc["tgt", "label.nn1_accuracy"]) and math.isnan(m.loc["tgt", "dataset.class_entropy"])
    assert m.loc["tgt", "stats.mean_intensity"] == pytest.approx(profiles["tgt"].meta["stats.mean_intensity"])


def test_protocol_train_rows_follow_the_kb(kb_with_leaky_target):
    from experiments.data import fixed_split

    full, kb = kb_with_leaky_target[2], kb_with_leaky_target[5]
    published = protocol_train_rows(kb)(full)
    np.testing.assert_array_equal(published, np.flatnonzero(full.split == "train"))
    built = KnowledgeBase("b", kb.records, kb.datasets,
                          {"metric": "roc_auc", "protocol": {"evaluation": {"split": [0.6, 0.2, 0.2]}, "seed": 3}})
    rows = protocol_train_rows(built)(full)
    np.testing.assert_array_equal(rows, np.flatnonzero(fixed_split(full, (0.6, 0.2, 0.2), 3) == "train"))
    assert not set(rows) & set(np.flatnonzero(full.split == "test"))
