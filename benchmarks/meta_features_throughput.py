"""Meta-feature extraction throughput vs decode-only, in one run (issue 3 part 6).

Writes N (default 10,000) random-ish 64 px RGB PNGs as a labelled ImageFolder in a temp dir,
then times (a) decode-only: ``imagesets.read_imageset(side=64)`` and (b) full meta-feature
extraction of the decoded set (all groups, no cache: fingerprint, canonical order, seeded
2,000-image subsample, 28 px, stats/texture/size/dataset/deep/label). Prints images/s for
decode, extraction and read+extract, and the ratios. Goal: read+extract >= 0.5 x decode-only
on 2 cores (i.e. extraction costs no more than decoding).

    .venv/bin/python benchmarks/meta_features_throughput.py [--n 10000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_pngs(root: Path, n: int, side: int = 64, n_classes: int = 4, seed: int = 0) -> None:
    """Smooth coloured gradients + class-dependent shapes + noise: compressible like real images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    for c in range(n_classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % n_classes
        base = np.stack([yy * rng.uniform(0, 255), xx * rng.uniform(0, 255), (1 - yy) * rng.uniform(0, 255)], -1)
        r = ((yy - rng.uniform(0.2, 0.8)) ** 2 + (xx - rng.uniform(0.2, 0.8)) ** 2) < (0.05 + 0.04 * c)
        base[r] = 255 - base[r]
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"class{c}" / f"img{i:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2, help="torch threads / read workers")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    from imagesets import read_imageset
    from meta_features import PROFILE_MAX_IMAGES, PROFILE_SIDE, extract_meta_features, load_probe

    load_probe("default")  # load weights outside the timed region (a one-off per process)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        t0 = time.perf_counter()
        write_pngs(root, a.n)
        print(f"wrote {a.n} PNGs (64 px RGB, 4 classes) in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        iset = read_imageset(root, side=64, channels="keep", workers=a.threads)
        t_dec = time.perf_counter() - t0

        t0 = time.perf_counter()
        meta = extract_meta_features(iset, cache=False)
        t_ext = time.perf_counter() - t0

    n = len(iset)
    dec, ext, both = n / t_dec, n / t_ext, n / (t_dec + t_ext)
    print(f"images: {n}; meta-features: {meta.notna().sum()} of {len(meta)} finite; "
          f"subsample {min(n, PROFILE_MAX_IMAGES)} at {PROFILE_SIDE} px; threads {a.threads}; 1 run")
    print(f"decode-only (read_imageset side 64): {t_dec:7.2f} s  {dec:8.0f} images/s")
    print(f"extraction only (all groups):        {t_ext:7.2f} s  {ext:8.0f} images/s")
    print(f"read + extract:                      {t_dec + t_ext:7.2f} s  {both:8.0f} images/s")
    print(f"ratio read+extract / decode-only: {both / dec:.2f} (goal >= 0.5); "
          f"extraction / decode-only: {ext / dec:.2f}")


if __name__ == "__main__":
    main()
