"""imagesets: read any dataset a user brings into one in-memory :class:`ImageSet`.

Formats: ImageFolder (optional train/val/test level), flat unlabelled folders, CSV
manifests (``path,label``), MedMNIST-style ``.npz``, ``medmnist:<flag>``; files in
PNG/JPEG/TIFF/BMP (8/16-bit, palette, alpha) and DICOM. This package imports none
of the other catscans packages. Decoding policies are stated in ``imagesets._pixels``
and ``imagesets._dicom``; layout rules in ``imagesets._scan``.
"""

from imagesets._demo import build_demo_target
from imagesets._files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    file_lock,
    unique_tmp,
)
from imagesets._npz import medmnist_info
from imagesets._paths import artifacts_dir, default_data_dir
from imagesets._pixels import MAX_PIXELS, REASONS, decode_file
from imagesets._read import read_imageset
from imagesets._types import Card, ChannelPolicy, ImageSet, ImageSetError, SkippedFile, UserError

__all__ = [
    "MAX_PIXELS",
    "REASONS",
    "Card",
    "ChannelPolicy",
    "ImageSet",
    "ImageSetError",
    "SkippedFile",
    "UserError",
    "artifacts_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_lock",
    "unique_tmp",
    "default_data_dir",
    "build_demo_target",
    "decode_file",
    "medmnist_info",
    "read_imageset",
]
