"""Whether a folder's labels can carry transferability estimates and a verdict.

A transferability estimate (LogME, H-score, k-NN, ...) on a folder with a class of one image,
or twenty images in all, is a number with no information in it, yet the learned model would
read it as evidence: 40 noise images with one class of a single image once got "expected to
beat training from scratch by +0.030 AUC". The rule here is stated, not learned:

- fewer than :data:`MIN_CLASSES` classes: nothing to separate;
- fewer than :data:`MIN_LABELLED` labelled images in all;
- a class with fewer than :data:`MIN_PER_CLASS` images (k-NN and the leave-out estimators
  need several per class; the fine-tunes of `verify` need one per class in each split).

A folder that fails it is still ranked, from what is known without the estimates (the KB's
records and the folder's card), its estimates are shown marked unreliable, and no gain over
scratch is claimed.
"""

from __future__ import annotations

MIN_CLASSES = 2
MIN_LABELLED = 20
MIN_PER_CLASS = 5


def label_problems(card: dict) -> list[str]:
    """Why the folder's labels cannot carry estimates (empty: they can). ``card`` is an
    :class:`imagesets.ImageSetCard` as a dict (``class_counts``, ``n_images``, ...)."""
    counts = {str(k): int(v) for k, v in (card.get("class_counts") or {}).items()}
    if not counts:  # unlabelled: no estimates are computed, nothing to warn about here
        return []
    out = []
    n = sum(counts.values())
    present = {k: v for k, v in counts.items() if v > 0}
    if len(present) < MIN_CLASSES:
        out.append(f"{len(present)} class{'es' if len(present) != 1 else ''} with images "
                   f"(need at least {MIN_CLASSES})")
    if n < MIN_LABELLED:
        out.append(f"{n} labelled images (need at least {MIN_LABELLED})")
    small = sorted((v, k) for k, v in counts.items() if v < MIN_PER_CLASS)
    if small:
        listed = ", ".join(f"{k} ({v})" for v, k in small[:4]) + (f", … {len(small) - 4} more" if len(small) > 4 else "")
        out.append(f"{len(small)} class{'es' if len(small) != 1 else ''} with fewer than "
                   f"{MIN_PER_CLASS} images: {listed}")
    return out


def warning_text(problems: list[str]) -> str:
    """One sentence for the output: what is wrong and what follows from it."""
    return ("your labels are too thin to estimate from: " + "; ".join(problems) + ". The order uses "
            "the KB's records and your folder's card only, the estimates are marked unreliable and "
            "no gain over scratch is claimed")
