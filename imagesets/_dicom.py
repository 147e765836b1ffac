"""DICOM pixels -> one 8-bit 2D image, with the display transforms a radiologist would see.

Order (DICOM PS3.4 grey-scale pipeline): modality LUT (rescale slope/intercept or LUT) ->
VOI (first Window Center/Width as the DICOM "LINEAR" window, else a VOI LUT sequence,
else the image's own min..max) -> 8-bit -> MONOCHROME1 inversion. Multi-frame objects
contribute their **middle frame** only (decoded alone via ``pydicom.pixels.pixel_array``
with ``index=``), because one representative slice per file keeps "one file = one
image" true for the card and the labels. Colour DICOM (RGB/YBR, converted to RGB by
pydicom; PALETTE COLOR through its LUT) stays colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imagesets._decode_common import FileFault, stretch_to_uint8

DICOM_MAGIC_OFFSET = 128


def has_dicom_preamble(path: str) -> bool:
    """True if the file has ``DICM`` at byte 128 (a Part-10 file, whatever its extension)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(DICOM_MAGIC_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _first(value: Any) -> float:
    """Window tags may be multi-valued; the first pair is the default view."""
    try:
        return float(value[0])
    except (TypeError, IndexError, KeyError):
        return float(value)


def _voi_to_uint8(arr: np.ndarray, ds: Any) -> np.ndarray:
    from pydicom.pixels import apply_voi_lut

    if "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        if width > 1:
            lo, hi = centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2
            scaled = (np.clip(arr.astype(np.float64), lo, hi) - lo) / (hi - lo) * 255.0
            return np.rint(scaled).astype(np.uint8)
    if "VOILUTSequence" in ds:
        arr = apply_voi_lut(arr, ds, prefer_lut=True)
    return stretch_to_uint8(arr)


def read_dicom(path: str, max_pixels: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode one DICOM file into (H x W or H x W x 3 uint8, metadata); raise FileFault on faults."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    try:
        ds = pydicom.dcmread(path, force=Path(path).suffix.lower() in (".dcm", ".dicom"))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise FileFault("truncated or corrupt", f"DICOM header: {exc}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise FileFault("DICOM without pixel data", str(ds.get("SOPClassUID", "")))
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows <= 0 or cols <= 0:
        raise FileFault("truncated or corrupt", "DICOM without Rows/Columns")
    if rows * cols > max_pixels:
        raise FileFault("decompression bomb", f"{cols}x{rows} > {max_pixels} pixels")
    meta = getattr(ds, "file_meta", None)
    tsyntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    compressed = bool(tsyntax is not None and getattr(tsyntax, "is_compressed", False))
    try:
        index = n_frames // 2 if n_frames > 1 else None
        arr = pixel_array(ds, index=index)
    except (NotImplementedError, RuntimeError) as exc:
        if compressed:
            raise FileFault("unsupported DICOM compression", str(tsyntax.name)) from None
        raise FileFault("truncated or corrupt", str(exc).splitlines()[0]) from None
    except (ValueError, EOFError, OSError, KeyError, AttributeError, TypeError) as exc:
        raise FileFault("truncated or corrupt", str(exc).splitlines()[0] if str(exc) else "") from None
    if n_frames > 1 and arr.ndim >= 3 and arr.shape[0] == n_frames:  # plugin ignored index
        arr = arr[n_frames // 2]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        img = stretch_to_uint8(apply_color_lut(arr, ds))
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        img = arr[..., :3] if arr.dtype == np.uint8 else stretch_to_uint8(arr[..., :3])
    elif arr.ndim == 2:
        img = _voi_to_uint8(apply_modality_lut(arr, ds), ds)
        if photometric == "MONOCHROME1":
            img = 255 - img
    else:
        raise FileFault("truncated or corrupt", f"unexpected DICOM pixel shape {arr.shape}")
    info = {
        "format": "dicom",
        "bits": int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
        "modality": str(ds.get("Modality", "") or "unknown"),
        "native": (rows, cols),
    }
    return np.ascontiguousarray(img), info
