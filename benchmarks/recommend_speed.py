"""Wall time and peak memory of `catscans recommend` on made folders, vs decode-only.

Run by hand:  .venv/bin/python benchmarks/recommend_speed.py [--sizes 1000 10000] [--side 256]

For each size it writes a labelled folder of random-texture PNGs (two classes), then
in the same run measures (1) a bare single-process PIL decode loop over the same
files and (2) `catscans recommend --format json` as a subprocess (peak RSS from
``resource.getrusage(RUSAGE_CHILDREN)``). It prints both throughputs and their ratio.
Goals (issue 5): 1,000 images ≤ 15 s, 10,000 ≤ 60 s, ≥ 50% of decode-only
throughput, ≤ 2 GiB peak memory, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, n: int, side: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in ("class_a", "class_b"):
        (root / c).mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, size=(side // 8, side // 8), dtype=np.uint8)
    for i in range(n):
        cls = "class_a" if i % 2 == 0 else "class_b"
        small = np.clip(base.astype(int) + rng.integers(-40, 40, size=base.shape) + (30 if i % 2 else 0), 0, 255)
        img = Image.fromarray(small.astype(np.uint8)).resize((side, side), Image.BILINEAR)
        img.save(root / cls / f"img_{i:05d}.png")
    return root


def decode_only(root: Path, side: int) -> float:
    t = time.perf_counter()
    for p in sorted(root.rglob("*.png")):
        with Image.open(p) as im:
            im.convert("L").resize((side, side), Image.BILINEAR)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--kb", default=None)
    args = ap.parse_args()
    from meta_features import PROFILE_SIDE

    exe = Path(sys.executable).with_name("catscans")
    print(f"{'n':>6} {'decode img/s':>13} {'recommend s':>12} {'recommend img/s':>16} {'ratio':>6} {'peak RSS MiB':>13}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as d:
            root = make_folder(Path(d) / "target", n, args.side)
            t_dec = decode_only(root, PROFILE_SIDE)
            cmd = [str(exe), "recommend", "--target", str(root), "--format", "json"]
            if args.kb:
                cmd += ["--kb", args.kb]
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            t_rec = time.perf_counter() - t
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if proc.returncode != 0:
                print(proc.stderr[-2000:])
                raise SystemExit(f"recommend failed on n={n}")
            rec = json.loads(proc.stdout)
            assert rec["target_card"]["n_images"] == n, rec["target_card"]["n_images"]
            ratio = (n / t_rec) / (n / t_dec)
            print(f"{n:>6} {n / t_dec:>13.0f} {t_rec:>12.1f} {n / t_rec:>16.0f} {ratio:>6.2f} "
                  f"{max(peak, before) / 1024:>13.0f}")
    print("decode-only = one process, PIL open+convert+resize to the profile side; "
          "recommend = whole CLI subprocess incl. start-up, meta-features and ranking; "
          "peak RSS = max over child processes so far (ru_maxrss of children).")


if __name__ == "__main__":
    main()
