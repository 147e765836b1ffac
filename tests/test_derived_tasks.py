"""Derived target tasks: class subsets/merges, low-data and low-resolution variants, grouped with
their parent so no evaluation splits a family."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.data import target_split
from experiments.derived import DERIVED, DerivedTask, derive, eval_overrides, root_of
from experiments.protocol import EvalConfig
from imagesets import ImageSet, ImageSetError


def _parent(n: int = 400, side: int = 28) -> ImageSet:
    from imagesets._types import Card

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 4
    images = rng.integers(0, 255, size=(n, side, side, 3), dtype=np.uint8)
    split = np.where(np.arange(n) % 5 == 0, "test", "train")
    names = ["a", "b", "c", "d"]
    card = Card(name="par", n_images=n, n_classes=4, class_counts={c: n // 4 for c in names}, channels=3,
                native_size={}, bit_depths={}, file_formats={}, modalities={}, splits={}, labelled=True,
                n_skipped=0, skipped_reasons={}, source="par", side=side)
    return ImageSet(name="par", images=images, labels=labels.astype(np.int64), class_names=names, split=split,
                    paths=[f"npz:{i}" for i in range(n)], card=card)


def test_class_merge_keeps_only_named_classes_and_relabels() -> None:
    par = _parent()
    task = DerivedTask("t_merge", "par", "classes", "a+b vs d", (("a", "b"), ("d",)), ("ab", "d"))
    ds = derive(par, task)
    assert ds.class_names == ["ab", "d"] and len(ds) == 300
    orig = par.labels[np.isin(par.labels, [0, 1, 3])]
    assert np.array_equal(ds.labels, np.where(orig == 3, 1, 0))
    assert ds.card.class_counts == {"ab": 200, "d": 100} and ds.card.n_classes == 2
    assert ds.split is not None and len(ds.split) == 300


def test_unknown_class_is_a_user_error() -> None:
    with pytest.raises(ImageSetError, match="no class 'zz'"):
        derive(_parent(), DerivedTask("t_bad", "par", "classes", "", (("zz",), ("a",))))


def test_low_data_task_trains_on_n_per_class_and_keeps_the_test_set() -> None:
    par = _parent()
    task = DerivedTask("t_low", "par", "low_data", "", n_per_class=5)
    DERIVED["t_low"] = task
    try:
        ds = derive(par, task)
        ev = EvalConfig(mode="seeds", repeats=3, n_train=300, n_val=20, n_test=1000)
        sp = target_split(ds, ev, 0, 0)
        assert np.bincount(ds.labels[sp.train]).tolist() == [5, 5, 5, 5]
        full = target_split(par, ev, 0, 0)
        assert len(full.train) == 280  # the whole train pool (320 - 20 validation) without the override
        assert sorted(sp.test.tolist()) == sorted(full.test.tolist())  # same test images as the parent
        assert eval_overrides("t_low") == {"n_train": 0, "n_per_class": 5}
    finally:
        DERIVED.pop("t_low")


def test_resolution_variant_loses_detail_but_keeps_shape() -> None:
    par = _parent()
    ds = derive(par, DerivedTask("t_res", "par", "resolution", "", low_side=7))
    assert ds.images.shape == par.images.shape
    # high-frequency noise is averaged away: neighbouring pixels become much more alike
    diff = lambda x: np.abs(np.diff(x.astype(float), axis=1)).mean()  # noqa: E731
    assert diff(ds.images) < 0.5 * diff(par.images)


def test_registry_tasks_name_real_parents() -> None:
    shared = {"pneumoniamnist", "breastmnist", "retinamnist", "brain_tumor_mri", "ham10000_derm", "pbc_blood",
              "kermany_cxr", "cifar10_subset", "dtd_10class", "fashion_mnist_subset", "mnist_test10k",
              "kmnist_test10k"}
    assert len(DERIVED) >= 5
    for name, task in DERIVED.items():
        assert root_of(name) in shared, name
        assert task.kind != "classes" or len(task.classes) >= 2
