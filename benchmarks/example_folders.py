"""Write the README's two example folders (real images from ../shared/data, as PNG files in class folders).

Run by hand: ``.venv/bin/python benchmarks/example_folders.py [--out /tmp/catscans-examples]``.

- ``cxr300``: 150 NORMAL + 150 PNEUMONIA chest X-rays from ``kermany_cxr``'s *test* split
  (KB ``local`` pretrains its ``kermany_cxr`` source on the train split only), 64 px grey.
- ``derm148``: the 74 melanoma + 74 nevus dermoscopy images of ``ham10000_derm``'s held-out
  part (the cpu-kb protocol's seeded split, which the ``ham10000_derm`` source never pretrains
  on), 64 px RGB. They are also test images of KB ``local``'s ``derm_melanoma_nevus`` target, so
  the folder is not independent of the KB's *records*: it shows the output, not a held-out score.

- ``derm148-unlabelled``: the same derm148 images in one flat folder (no class folders), to
  show what ``recommend`` says when its order cannot use the folder.

Seeded (default_rng(0)); the same command writes the same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imagesets import atomic_path  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FOLDERS = {  # name: (npz stem, {class name: label}, use only this split or None)
    "cxr300": ("kermany_cxr", {"NORMAL": 0, "PNEUMONIA": 1}, "test"),
    "derm148": ("ham10000_derm", {"melanoma": 4, "nevus": 5}, "protocol"),
}
PER_CLASS = 150  # at most


def protocol_test(stem: str, shared: Path = SHARED) -> np.ndarray:
    """Mask of the images in the cpu-kb protocol's seeded test part of a set without its own split."""
    from experiments.data import fixed_split
    from experiments.protocol import load_protocol
    from imagesets import read_imageset

    p = load_protocol("cpu-kb")
    ds = read_imageset(str(shared / f"{stem}.npz"), side=p.side, channels="keep", name=stem)
    return fixed_split(ds, tuple(p.evaluation.split), p.seed) == "test"


def write_folder(name: str, out: Path, shared: Path = SHARED) -> Path:
    stem, classes, split = FOLDERS[name]
    with np.load(shared / f"{stem}.npz", allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
        keep = (z["split"] == split) if split == "test" and "split" in z.files else np.ones(len(labels), bool)
    if split == "protocol":  # the held-out part of the split every cpu-kb source pretrains without
        keep = protocol_test(stem, shared)
    rng = np.random.default_rng(0)
    root = out / name
    for cls, lab in classes.items():
        idx = np.flatnonzero(keep & (labels == lab))
        pick = np.sort(rng.choice(idx, min(PER_CLASS, len(idx)), replace=False))
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in pick:
            dest = root / cls / f"{stem}_{i:05d}.png"
            with atomic_path(dest) as tmp:
                Image.fromarray(images[i]).save(tmp, format="PNG")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/catscans-examples"))
    ap.add_argument("--shared", type=Path, default=SHARED)
    a = ap.parse_args()
    if not a.shared.exists():
        sys.exit(f"error: {a.shared} not found (the shared data sets are needed)")
    for name in FOLDERS:
        print(write_folder(name, a.out, a.shared))
    flat = a.out / "derm148-unlabelled"
    flat.mkdir(parents=True, exist_ok=True)
    for f in sorted((a.out / "derm148").glob("*/*.png")):
        dest = flat / f.name
        if not dest.exists():
            dest.write_bytes(f.read_bytes())
    print(flat)


if __name__ == "__main__":
    main()
