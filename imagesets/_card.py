"""Bookkeeping shared by every reader: subsamples, the channel policy, label checks, the :class:`Card`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from imagesets._types import Card, ChannelPolicy, ImageSet, ImageSetError, SkippedFile

MAX_SKIPPED_EXAMPLES = 20


def printable(text: str) -> str:
    """``text`` safe to print, encode and put in a DataFrame: undecodable bytes of a file
    name (kept by Python as lone surrogates) become ``\\xNN`` escapes, so two such names stay
    distinct and a card never raises UnicodeEncodeError. Paths for opening keep the raw form."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def subsample_index(n: int, max_images: int | None, labels: Sequence[object] | None,
                    random_state: int) -> np.ndarray:
    """Sorted indices of a seeded subsample of ``max_images`` of ``n`` items.

    Stratified when labelled: each class gets its proportional share (largest remainder,
    at least one per class while the budget allows), so rare classes survive the cut.
    """
    if max_images is None or max_images >= n:
        return np.arange(n)
    if max_images <= 0:
        return np.arange(0)
    rng = np.random.default_rng(random_state)
    if labels is None:
        return np.sort(rng.choice(n, size=max_images, replace=False))
    lab = np.asarray([str(v) for v in labels])
    classes, inverse = np.unique(lab, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    exact = counts / n * max_images
    take = np.minimum(np.floor(exact).astype(int), counts)
    if max_images >= len(classes):
        take = np.maximum(take, np.minimum(1, counts))
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while take.sum() < max_images and i < 10 * len(classes) + max_images:
        k = order[i % len(classes)]
        if take[k] < counts[k]:
            take[k] += 1
        i += 1
    while take.sum() > max_images:  # the "at least one" rule overshot: trim the biggest
        take[np.argmax(take)] -= 1
    chosen = [rng.choice(np.flatnonzero(inverse == k), size=int(t), replace=False)
              for k, t in enumerate(take) if t > 0]
    return np.sort(np.concatenate(chosen)) if chosen else np.arange(0)


def native_size_stats(shapes: np.ndarray) -> dict[str, float]:
    """min/median/max of native height and width (empty dict when there are no images)."""
    if len(shapes) == 0:
        return {}
    h, w = shapes[:, 0].astype(float), shapes[:, 1].astype(float)
    return {"h_min": float(h.min()), "h_median": float(np.median(h)), "h_max": float(h.max()),
            "w_min": float(w.min()), "w_median": float(np.median(w)), "w_max": float(w.max())}


def make_card(*, name: str, source: str, side: int, images: np.ndarray, labels: np.ndarray | None,
              class_names: list[str], split: np.ndarray | None, shapes: np.ndarray,
              bits: Sequence[int], formats: Sequence[str], modalities: Sequence[str | None],
              skipped: list[SkippedFile]) -> Card:
    """Every number ``catscans inspect`` prints, from what the reader gathered."""
    counts = Counter(labels.tolist()) if labels is not None else Counter()
    reasons = Counter(s.reason for s in skipped)
    class_names = [printable(c) for c in class_names]
    return Card(
        name=printable(name),
        n_images=int(len(images)),
        n_classes=len(class_names) if labels is not None else 0,
        class_counts={class_names[k]: int(counts.get(k, 0)) for k in range(len(class_names))}
        if labels is not None else {},
        channels=int(images.shape[-1]) if images.ndim == 4 else 0,
        native_size=native_size_stats(shapes),
        bit_depths={str(k): int(v) for k, v in sorted(Counter(bits).items())},
        file_formats={str(k): int(v) for k, v in sorted(Counter(formats).items())},
        modalities={str(k): int(v) for k, v in sorted(Counter(m for m in modalities if m).items())},
        splits={str(k): int(v) for k, v in sorted(Counter(split.tolist()).items())}
        if split is not None else {},
        labelled=labels is not None,
        n_skipped=len(skipped),
        skipped_reasons=dict(sorted(reasons.items())),
        source=printable(source),
        side=int(side),
        skipped_examples=[{"path": printable(s.path), "reason": s.reason, "detail": printable(s.detail)}
                          for s in skipped[:MAX_SKIPPED_EXAMPLES]],
    )


def apply_policy(arrays: list[np.ndarray], channels: ChannelPolicy, side: int) -> np.ndarray:
    """Stack per-image {1,3}-channel arrays into N x side x side x C under ``channels``."""
    all_grey = all(a.shape[-1] == 1 for a in arrays)
    c = 1 if channels == "grey" or (channels == "keep" and all_grey) else 3
    out = np.empty((len(arrays), side, side, c), dtype=np.uint8)
    for i, a in enumerate(arrays):
        if a.shape[-1] == c:
            out[i] = a
        elif c == 3:
            out[i] = np.repeat(a, 3, axis=-1)
        else:  # colour -> grey, ITU-R 601-2 exactly as PIL "L"
            r, g, b = (a[..., k].astype(np.uint32) for k in range(3))
            out[i, ..., 0] = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)
    return out


def check_labels(iset: ImageSet, require: bool) -> None:
    if not require:
        return
    if iset.labels is None:
        raise ImageSetError(f"{iset.card.source} is unlabelled; a labelled set is required "
                            "(class sub-folders, a CSV 'label' column or npz labels)")
    present = sorted(set(iset.labels.tolist()))
    if len(present) < 2:
        only = iset.class_names[present[0]] if present else "none"
        raise ImageSetError(f"{iset.card.source} has a single class ('{only}'); at least two are required")
