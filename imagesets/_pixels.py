"""Decode one file to a small uint8 array: the per-file half of every reader.

Policies (stated once, here):

* **Resize**: PIL ``BILINEAR`` with ``reducing_gap=2.0``. PIL's resampling filters widen
  their support by the downscale factor, so downsizing is antialiased (no aliasing
  from point sampling); ``reducing_gap`` lets PIL first ``reduce()`` by an integer factor
  for speed. Images are squashed to side x side (aspect ratio not kept), like MedMNIST
  and the ``../shared`` npz sets. JPEGs are opened with ``draft()`` so the DCT decodes at
  the smallest scale still >= side.
* **16-bit / 32-bit / float** (PNG/TIFF "I;16", "I", "F"): stretched to 8 bits by the
  image's **own min..max**, because scanners often store 10-12 significant bits in 16,
  and scaling by the nominal bit depth would make them near-black. A constant image -> 0.
* **Palette**: expanded through its palette (to RGB, or RGBA when it has transparency).
* **Alpha**: composited on **black** (RGB x alpha), the usual background of medical images.
* **Multi-page** TIFF/GIF: the first page/frame only (DICOM multi-frame: see ``_dicom``).
* **Grey**: an image is grey when its mode has one band, or when its R, G and B are
  identical after resizing (e.g. CXRs saved as RGB); grey images come back with 1 channel.
* **Faults** raise :class:`FileFault` with a reason from a fixed vocabulary, so the card
  can count them: see ``REASONS``.
"""

from __future__ import annotations

import os
import struct
import warnings
from typing import Any

import numpy as np

from imagesets._decode_common import MAX_PIXELS, REASONS, FileFault, stretch_to_uint8
from imagesets._dicom import has_dicom_preamble, read_dicom

__all__ = ["MAX_PIXELS", "REASONS", "FileFault", "decode_chunk", "decode_file", "stretch_to_uint8"]

_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


def _resize(img: Any, side: int) -> Any:
    from PIL import Image

    if img.size == (side, side):
        return img
    return img.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)


def _to_small_array(img: Any, side: int, grey: bool) -> np.ndarray:
    """PIL image of any mode -> side x side x {1,3} uint8 (see the module policies)."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = Image.fromarray(stretch_to_uint8(np.asarray(img)), mode="L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV", "PA", "La", "RGBa", "RGBX"):
        img = img.convert("LA" if mode in ("PA", "La") else ("L" if mode == "1" else "RGB"))
    if img.mode in ("LA", "RGBA"):
        arr = np.asarray(img, dtype=np.float32)
        rgb = arr[..., :-1] * (arr[..., -1:] / 255.0)
        img = Image.fromarray(np.rint(rgb).astype(np.uint8).squeeze(-1) if rgb.shape[-1] == 1
                              else np.rint(rgb).astype(np.uint8))
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    if grey and img.mode == "RGB":
        img = img.convert("L")
    out = np.asarray(_resize(img, side))
    if out.ndim == 2:
        return out[..., None]
    if (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all():
        return np.ascontiguousarray(out[..., :1])
    return np.ascontiguousarray(out)


def _open_pil(path: str, side: int, grey: bool, max_pixels: int) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise FileFault("decompression bomb", f"{w}x{h} > {max_pixels} pixels")
                fmt = (img.format or "unknown").lower()
                bits = _BITS.get(img.mode, 8)
                if fmt == "png" and img.mode == "I":
                    bits = 16  # PNG has no 32-bit grey; PIL widens 16-bit to "I" in some builds
                if fmt == "jpeg":
                    img.draft("L" if grey else img.mode, (side, side))
                img.load()
                arr = _to_small_array(img, side, grey)
    except FileFault:
        raise
    except UnidentifiedImageError:
        raise FileFault("not an image", os.path.splitext(path)[1].lower() or "(no extension)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FileFault("decompression bomb", str(exc).splitlines()[0]) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise FileFault("truncated or corrupt", str(exc).splitlines()[0] if str(exc) else "") from None
    return arr, {"format": fmt, "bits": bits, "modality": None, "native": (h, w)}


def decode_file(path: str, side: int, grey: bool = False,
                max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict[str, Any]]:
    """One file -> (side x side x C uint8 with C in {1, 3}, metadata); FileFault if skipped.

    ``grey=True`` converts colour to luminance (ITU-R 601-2, PIL "L") before resizing.
    Metadata: format, bits (native bit depth), modality (DICOM only), native (h, w).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileFault("missing file", path) from None
    except OSError as exc:
        raise FileFault("truncated or corrupt", str(exc)) from None
    if size == 0:
        raise FileFault("empty file")
    if os.path.splitext(path)[1].lower() in (".dcm", ".dicom") or has_dicom_preamble(path):
        full, info = read_dicom(path, max_pixels)
        from PIL import Image

        img = Image.fromarray(full)
        return _to_small_array(img, side, grey), info
    return _open_pil(path, side, grey, max_pixels)


def decode_chunk(paths: list[str], side: int, grey: bool, max_pixels: int = MAX_PIXELS
                 ) -> list[tuple[np.ndarray | None, dict[str, Any] | None, str | None, str]]:
    """Worker entry: decode a chunk; only small arrays travel back (bounded memory)."""
    out: list[tuple[np.ndarray | None, dict[str, Any] | None, str | None, str]] = []
    for p in paths:
        try:
            with warnings.catch_warnings():  # pydicom/PIL chatter would flood stderr on big folders
                warnings.simplefilter("ignore")
                arr, info = decode_file(p, side, grey, max_pixels)
            out.append((arr, info, None, ""))
        except FileFault as fault:
            out.append((None, None, fault.reason, fault.detail))
        except MemoryError:
            out.append((None, None, "decompression bomb", "out of memory while decoding"))
        except Exception as exc:  # noqa: BLE001 - one odd file must never stop a whole read
            out.append((None, None, "truncated or corrupt", f"{type(exc).__name__}: {exc}"[:200]))
    return out
