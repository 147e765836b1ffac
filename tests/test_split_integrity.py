"""Split integrity: a target's train, validation and test rows never overlap, in both split modes,
and what is held out for testing does not move with the fine-tuning seed.

The module docstring of ``experiments.data`` promises this: every source is fine-tuned and tested
on the same target images, and only the training subsample (seeds mode) or the fold (folds mode)
changes per repeat. A KB whose test rows moved with the seed would mix seed noise into the
source-to-source comparison; one whose test rows leaked into training would overstate every AUC.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments.data import fixed_split, source_split, target_split
from experiments.protocol import EvalConfig
from imagesets import ImageSet
from imagesets._types import Card


def _set(n: int = 300, with_split: bool = False, name: str = "t") -> ImageSet:
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(n // 3 * 2, dtype=np.int64), np.ones(n - n // 3 * 2, dtype=np.int64)]
    labels = rng.permutation(labels)
    images = rng.integers(0, 255, size=(n, 8, 8, 1), dtype=np.uint8)
    split = np.where(np.arange(n) % 4 == 0, "test", "train") if with_split else None
    counts = {"a": int((labels == 0).sum()), "b": int((labels == 1).sum())}
    card = Card(name=name, n_images=n, n_classes=2, class_counts=counts, channels=1, native_size={},
                bit_depths={}, file_formats={}, modalities={}, splits={}, labelled=True, n_skipped=0,
                skipped_reasons={}, source=name, side=8)
    return ImageSet(name=name, images=images, labels=labels, class_names=["a", "b"], split=split,
                    paths=[f"npz:{i}" for i in range(n)], card=card)


def _disjoint(sp) -> None:  # noqa: ANN001 (TargetSplit / SourceSplit)
    tr, va, te = set(sp.train.tolist()), set(sp.val.tolist()), set(sp.test.tolist())
    assert tr and va and te
    assert not tr & va and not tr & te and not va & te
    for part in (sp.train, sp.val, sp.test):
        assert len(set(part.tolist())) == len(part)  # no image drawn twice


@pytest.mark.parametrize("with_split", [False, True], ids=["seeded-split", "own-split"])
def test_seeds_mode_parts_are_disjoint_and_the_test_set_is_fixed_across_seeds(with_split: bool) -> None:
    ds = _set(with_split=with_split)
    ev = EvalConfig(mode="seeds", repeats=5, n_train=60, n_val=20, n_test=50)
    parts = [target_split(ds, ev, seed=0, repeat=r) for r in range(ev.repeats)]
    for sp in parts:
        _disjoint(sp)
        assert len(sp.test) == 50 and len(sp.val) == 20 and len(sp.train) == 60
    base = parts[0]
    for sp in parts[1:]:
        np.testing.assert_array_equal(sp.test, base.test)  # same test rows, same order
        np.testing.assert_array_equal(sp.val, base.val)
    # ... while the training subsample does change with the seed (else the seeds repeat one run)
    assert len({tuple(sorted(sp.train.tolist())) for sp in parts}) == ev.repeats
    # no seed's training rows ever reach the fixed test set
    assert not set(np.concatenate([sp.train for sp in parts]).tolist()) & set(base.test.tolist())
    if with_split:  # the set's own test rows are the only ones tested on
        assert set(base.test.tolist()) <= set(np.flatnonzero(ds.split == "test").tolist())
        assert not set(np.concatenate([sp.train for sp in parts]).tolist()) & set(
            np.flatnonzero(ds.split == "test").tolist())


def test_seeds_mode_test_set_depends_on_the_protocol_seed_only() -> None:
    ds = _set()
    ev = EvalConfig(mode="seeds", repeats=3, n_train=60, n_val=20, n_test=50)
    a, b = target_split(ds, ev, seed=0, repeat=2), target_split(ds, ev, seed=7, repeat=2)
    assert set(a.test.tolist()) != set(b.test.tolist())
    _disjoint(b)


def test_folds_mode_parts_are_disjoint_and_the_folds_partition_the_set() -> None:
    ds = _set(n=250)
    ev = EvalConfig(mode="folds", repeats=5, n_train=0, n_val=15)
    parts = [target_split(ds, ev, seed=0, repeat=r) for r in range(ev.repeats)]
    for sp in parts:
        _disjoint(sp)
        assert len(sp.val) == 15
        assert len(sp.train) + len(sp.val) + len(sp.test) == len(ds)  # nothing dropped when n_train = 0
        # stratified: each test fold keeps the class ratio (2:1) within one image per class
        test_counts = np.bincount(ds.labels[sp.test], minlength=2)
        assert abs(test_counts[0] - 2 * test_counts[1]) <= 3
    tests = np.concatenate([sp.test for sp in parts])
    assert sorted(tests.tolist()) == list(range(len(ds)))  # every image is tested exactly once
    # the same fold is the same rows on every call (a resumed cell tests on what the first run did)
    np.testing.assert_array_equal(target_split(ds, ev, seed=0, repeat=3).test, parts[3].test)


def test_folds_mode_refuses_more_folds_than_a_class_has_images() -> None:
    from imagesets import ImageSetError

    ds = _set(n=12)
    with pytest.raises(ImageSetError, match="fewer than 5 folds"):
        target_split(ds, EvalConfig(mode="folds", repeats=5), seed=0, repeat=0)
    ds.labels[:] = 0
    ds.labels[0] = 1  # a class of one image
    with pytest.raises(ImageSetError, match="a class has 1 images"):
        target_split(ds, EvalConfig(mode="folds", repeats=2), seed=0, repeat=0)


@pytest.mark.parametrize("with_split", [False, True], ids=["seeded-split", "own-split"])
def test_fixed_split_covers_every_image_once_and_keeps_the_sets_own_test_rows(with_split: bool) -> None:
    ds = _set(with_split=with_split)
    split = fixed_split(ds, (0.7, 0.1, 0.2), seed=3)
    assert len(split) == len(ds) and set(split.tolist()) == {"train", "val", "test"}
    np.testing.assert_array_equal(split, fixed_split(ds, (0.7, 0.1, 0.2), seed=3))
    if with_split:
        np.testing.assert_array_equal(split == "test", ds.split == "test")  # own test rows kept as they are
        assert not ((split == "val") & (ds.split == "test")).any()  # validation carved out of train only
    else:
        assert (split == "test").sum() == 60 and (split == "val").sum() == 30


def test_source_split_parts_are_disjoint_and_capped() -> None:
    ds = _set()
    sp = source_split(ds, (0.7, 0.1, 0.2), seed=0, max_train=100, max_eval=20)
    _disjoint(sp)
    assert len(sp.train) == 100 and len(sp.val) == 20 and len(sp.test) == 20
    split = fixed_split(ds, (0.7, 0.1, 0.2), seed=0)
    assert (split[sp.train] == "train").all() and (split[sp.val] == "val").all() and (split[sp.test] == "test").all()
