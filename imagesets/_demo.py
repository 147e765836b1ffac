"""The embedded demo target: a small labelled ImageFolder built from images that ship inside
installed packages, so ``make demo`` works on a fresh clone with no data and no network.

Two classes: ``medical`` (grey slices from pydicom's bundled example DICOMs: CT, MR, NM,
plus 3 of the DICOM files themselves so the card shows modalities) and ``natural``
(scikit-image's bundled sample photographs). Each source image yields seeded augmented
crops (random 55-100 % crop, flips, mild gamma) saved as 128 px PNGs, about 40 per class.
``../shared`` is never used.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from imagesets._types import ImageSetError

MARKER = ".catscans-demo"
PER_CLASS = 40
OUT_SIDE = 128
_DICOMS = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "examples_overlay.dcm",
           "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "JPEG2000.dcm")
_DICOM_COPIES = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm")
_SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "hubble_deep_field")


def _dicom_sources() -> list[tuple[str, np.ndarray]]:
    import pydicom.data

    from imagesets._dicom import read_dicom
    from imagesets._pixels import MAX_PIXELS, FileFault

    folder = Path(pydicom.data.__file__).parent / "test_files"
    found = []
    for name in _DICOMS:
        path = folder / name
        if not path.is_file():
            continue
        try:
            arr, _ = read_dicom(str(path), MAX_PIXELS)
        except FileFault:
            continue
        found.append((str(path), arr if arr.ndim == 2 else arr.mean(axis=-1).astype(np.uint8)))
    return found


def _skimage_sources() -> list[np.ndarray]:
    import skimage.data

    imgs = []
    for name in _SKIMAGE:
        try:  # every name here ships on disk with scikit-image; skip any that would need a download
            img = np.asarray(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001
            continue
        imgs.append(img.astype(np.uint8) if img.dtype != np.uint8 else img)
    return imgs


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    frac = rng.uniform(0.55, 1.0)
    ch, cw = max(8, int(h * frac)), max(8, int(w * frac))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = img[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.3:
        crop = crop[::-1]
    gamma = rng.uniform(0.8, 1.25)
    crop = np.clip(255.0 * (crop / 255.0) ** gamma, 0, 255).astype(np.uint8)
    pil = Image.fromarray(np.ascontiguousarray(crop))
    return np.asarray(pil.resize((OUT_SIDE, OUT_SIDE), Image.Resampling.BILINEAR))


def _write_class(folder: Path, sources: list[np.ndarray], n: int, rng: np.random.Generator) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = sources[i % len(sources)]
        Image.fromarray(_augment(src, rng)).save(folder / f"{folder.name}_{i:03d}.png")


def build_demo_target(dest: os.PathLike) -> Path:
    """Write (or rebuild) the demo ImageFolder at ``dest`` and return its path.

    Refuses to touch a non-empty folder it did not create (no marker file), so a user's
    data is never overwritten.
    """
    root = Path(dest).expanduser()
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise ImageSetError(f"{root} is not empty and is not a catscans demo folder; choose another path")
    dicoms = _dicom_sources()
    naturals = _skimage_sources()
    if not dicoms or not naturals:
        raise ImageSetError("cannot build the demo: pydicom or scikit-image sample images are missing")
    for sub in ("medical", "natural"):
        shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("built by imagesets.build_demo_target\n")
    rng = np.random.default_rng(0)
    copies = [p for p, _ in dicoms if Path(p).name in _DICOM_COPIES]
    _write_class(root / "medical", [a for _, a in dicoms], PER_CLASS - len(copies), rng)
    for p in copies:
        shutil.copyfile(p, root / "medical" / Path(p).name)
    _write_class(root / "natural", naturals, PER_CLASS, rng)
    return root
