"""Builders for the small image folders tests make (shared by several test modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                modality: str = "CT", window: tuple[float, float] | None = None,
                intercept: float | None = None, bits_stored: int = 12,
                compressed_garbage: bool = False) -> Path:
    """A minimal valid Part-10 file (with the DICM preamble) written by pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGLSLossless if compressed_garbage else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if intercept is not None:
        ds.RescaleIntercept, ds.RescaleSlope = intercept, 1
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if compressed_garbage:
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(range(200))] * frames)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def labelled_png_folder(root: Path, n_per_class: int = 12, classes: tuple[str, ...] = ("a", "b"),
                        side: int = 40, rgb_every: int = 0, seed: int = 0) -> Path:
    """ImageFolder of textured PNGs whose classes differ in brightness; every ``rgb_every``-th is RGB."""
    rng = np.random.default_rng(seed)
    k = 0
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            base = rng.normal(80 + 60 * ci, 25, size=(side, side)).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(base)
            if rgb_every and k % rgb_every == 0:
                img = Image.merge("RGB", (img, img.point(lambda v: v // 2), img))
            img.save(root / c / f"{c}_{i:03d}.png")
            k += 1
    return root
