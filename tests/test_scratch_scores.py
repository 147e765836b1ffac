"""Scratch scored like a source: random inits of the same architecture, averaged, with spread."""

from __future__ import annotations

import numpy as np

from imagesets import ImageSet
from imagesets._types import Card
from meta_features.scratch import score_random_init


def _toy(shuffle: bool = False, n: int = 240) -> ImageSet:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    img = rng.integers(0, 60, size=(n, 16, 16), dtype=np.int64)
    img[labels == 1, :8, :8] += 180  # class 1 = a bright quadrant
    img = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, -1)
    if shuffle:
        labels = rng.permutation(labels)
    card = Card(name="toy", n_images=n, n_classes=2, class_counts={}, channels=3, native_size={}, bit_depths={},
                file_formats={}, modalities={}, splits={}, labelled=True, n_skipped=0, skipped_reasons={},
                source="toy", side=16)
    return ImageSet(name="toy", images=img, labels=labels.astype(np.int64), class_names=["a", "b"], split=None,
                    paths=[str(i) for i in range(n)], card=card)


def test_random_init_scores_are_deterministic_and_carry_spread() -> None:
    a = score_random_init("resnet-tiny", 3, 16, _toy(), n_inits=3)
    b = score_random_init("resnet-tiny", 3, 16, _toy(), n_inits=3)
    assert a.mean == b.mean and a.n_inits == 3
    assert {"logme", "knn_acc", "hscore"} <= set(a.mean)
    assert all(np.isfinite(v) and v >= 0 for v in a.sd.values())
    assert any(v > 0 for v in a.sd.values())  # different inits give different features


def test_random_init_scores_see_the_labels() -> None:
    real = score_random_init("resnet-tiny", 3, 16, _toy(), n_inits=2)
    shuffled = score_random_init("resnet-tiny", 3, 16, _toy(shuffle=True), n_inits=2)
    assert real.mean["knn_acc"] > shuffled.mean["knn_acc"] + 0.2
    assert real.mean["logme"] > shuffled.mean["logme"]
