"""imagesets: read any dataset a user brings into one in-memory :class:`ImageSet`.

Formats: ImageFolder (optional train/val/test level), flat unlabelled folders, CSV
manifests (``path,label``), MedMNIST-style ``.npz``, ``medmnist:<flag>``; files in
PNG/JPEG/TIFF/BMP (8/16-bit, palette, alpha) and DICOM. This package imports none
of the other catscans packages.
"""

from imagesets._types import Card, ChannelPolicy, ImageSet, ImageSetError, SkippedFile, UserError

__all__ = ["Card", "ChannelPolicy", "ImageSet", "ImageSetError", "SkippedFile", "UserError"]
