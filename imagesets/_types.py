"""The one in-memory form every dataset format is read into.

Every other package (experiments, meta_features, recommender) consumes an
:class:`ImageSet`; none of them reads files itself. Keeping a single type here
is what lets a researcher's folder, a MedMNIST ``.npz`` and a DICOM series be
compared by the same meta-features and fed to the same training loop.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ChannelPolicy = Literal["grey", "rgb", "keep"]
"""How channels are normalised when reading.

``grey``: every image becomes 1 channel (RGB -> luminance, ITU-R 601-2 as PIL "L").
``rgb``: every image becomes 3 channels (grey is replicated).
``keep``: the set keeps 1 channel if *every* image is grey, else 3 (grey replicated).
"""


class UserError(Exception):
    """A fatal, user-facing problem: the CLI prints it as one line and exits 2.

    Every package raises a subclass of this for bad input, so the CLI needs one
    handler and never shows a traceback for a user's mistake.
    """


class ImageSetError(UserError):
    """A fatal problem reading a dataset (no such path, no readable image, ...)."""


@dataclass
class SkippedFile:
    """One file that was not read, and why (a per-file fault, never fatal)."""

    path: str
    reason: str
    detail: str = ""  # e.g. the decoder's message; ``reason`` is the countable category


@dataclass
class Card:
    """What a dataset is, in numbers a person can check.

    Attributes mirror ``catscans inspect`` output; every field is JSON-serialisable.
    """

    name: str
    n_images: int
    n_classes: int
    class_counts: dict[str, int]
    channels: int
    native_size: dict[str, float]  # min/median/max of native height and width
    bit_depths: dict[str, int]  # e.g. {"8": 120, "16": 4}
    file_formats: dict[str, int]  # e.g. {"png": 100, "dicom": 24}
    modalities: dict[str, int]  # DICOM Modality tag counts, {} if none
    splits: dict[str, int]  # {"train": n, ...} or {} when the source has none
    labelled: bool
    n_skipped: int
    skipped_reasons: dict[str, int]  # reason -> count
    source: str  # the path or spec that was read
    side: int  # the side images were resized to
    skipped_examples: list[dict] = field(default_factory=list)  # first few {path, reason, detail}

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class ImageSet:
    """Images of one dataset, resized to ``side`` x ``side``, uint8.

    ``images`` is N x side x side x C (C = 1 or 3). ``labels`` is int64 (N,) or
    None for an unlabelled set. ``split`` holds "train"/"val"/"test" per image, or
    None when the source has no split. ``paths`` are the files (or ``npz:<index>``).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]
    split: np.ndarray | None
    paths: list[str]
    card: Card
    native_shapes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int32))
    skipped: list[SkippedFile] = field(default_factory=list)  # every file not read, with why

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError("ImageSet.images must be uint8 N x H x W x C")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError("labels and images differ in length")

    # -- convenience -----------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    @property
    def n_classes(self) -> int:
        return len(self.class_names) if self.labelled else 0

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def side(self) -> int:
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray, name: str | None = None) -> ImageSet:
        """A new ImageSet of the rows in ``index`` (card recomputed for the rows)."""
        index = np.asarray(index)
        labels = None if self.labels is None else self.labels[index]
        split = None if self.split is None else self.split[index]
        paths = [self.paths[i] for i in index]
        shapes = self.native_shapes[index] if len(self.native_shapes) == len(self) else self.native_shapes
        sub = ImageSet(
            name=name or self.name,
            images=self.images[index],
            labels=labels,
            class_names=list(self.class_names),
            split=split,
            paths=paths,
            card=self.card,
            native_shapes=shapes,
        )
        counts = Counter(labels.tolist()) if labels is not None else Counter()
        from dataclasses import replace

        sub.card = replace(
            self.card,
            name=sub.name,
            n_images=len(sub),
            class_counts={self.class_names[k]: int(v) for k, v in sorted(counts.items())},
            splits=dict(Counter(split.tolist())) if split is not None else {},
        )
        return sub

    def to_grey(self) -> np.ndarray:
        """N x side x side float32 luminance in [0, 255] (identical for grey and replicated grey)."""
        x = self.images.astype(np.float32)
        if x.shape[-1] == 1:
            return x[..., 0]
        return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114

    def fingerprint(self) -> str:
        """Content hash that is independent of file order (sorted per-image digests)."""
        digests = sorted(
            hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest()
            + ("" if self.labels is None else f":{int(self.labels[i])}")
            for i, img in enumerate(self.images)
        )
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.images.shape[1:]}".encode())
        for d in digests:
            h.update(d.encode())
        return h.hexdigest()
