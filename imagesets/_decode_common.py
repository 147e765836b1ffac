"""What both decoders share (PIL images in ``_pixels``, DICOM in ``_dicom``): the pixel limit,
the fault vocabulary and the min..max stretch to 8 bits. The policies are stated in ``_pixels``.
"""

from __future__ import annotations

import numpy as np

MAX_PIXELS = 89_478_485  # PIL's own default limit (~9459^2), applied to DICOM frames too

REASONS = (
    "empty file",
    "not an image",
    "truncated or corrupt",
    "unsupported DICOM compression",
    "DICOM without pixel data",
    "decompression bomb",
    "missing file",
    "not in a class folder",
    "no label",
    "symlinked folder",  # never followed below the root (a link to / or back up is no class)
    "broken symlink",  # dangling, or a loop
    "unreadable entry",  # a folder entry the OS would not stat or list
)


class FileFault(Exception):
    """A per-file problem: the file is skipped and counted under ``reason``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linear map of the array's own finite min..max onto 0..255 (uint8 passes through)."""
    if arr.dtype == np.uint8:
        return arr
    a = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    a = np.where(finite, a, lo)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
