"""Read throughput of ``imagesets.read_imageset`` vs a bare single-process PIL loop, same files, same run.

Usage: ``.venv/bin/python benchmarks/read_throughput.py [--n 2000] [--side 64] [--mode rgb|grey]
[--workers 2] [--repeats 1] [--keep DIR]``

Writes N synthetic 512 px PNGs (smooth gradients + blobs + noise, so they compress like
real scans rather than like pure noise; 64 distinct images cycled) into a temp dir, then times, in one run:
  * bare: ``Image.open(p).convert(mode).resize((side, side), BILINEAR)`` + ``np.asarray`` per file;
  * imagesets: ``read_imageset(dir, side=side)`` (parallel decode, card, stacking);
and prints images/s for both and their ratio (goal >= 0.8 on 2 cores). Each side of the
comparison is timed once per repeat, alternating the order, and the medians are reported.
Peak RSS of a separate ``read_imageset`` run is measured in a fresh child process
(its own ``ru_maxrss`` and that of its decode workers), next to the size the full-resolution
set would take, to show that full-resolution pixels are never held for the whole set.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imagesets import read_imageset  # noqa: E402


def _synthetic(rng: np.random.Generator, mode: str, side: int = 512) -> bytes:
    """One PNG-encoded synthetic scan (smooth field + disc + noise)."""
    import io

    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    a, b, c = rng.uniform(0.2, 1.0, 3)
    base = 128 + 80 * np.sin(6 * a * xx + 4 * b * yy) * np.cos(5 * c * yy)
    cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.05, 0.2)]
    base += 60 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    base += rng.normal(0, 6, base.shape)
    img = np.clip(base, 0, 255).astype(np.uint8)
    if mode == "rgb":
        img = np.stack([img, np.roll(img, 7, axis=0), np.roll(img, 7, axis=1)], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def make_pngs(folder: Path, n: int, mode: str, distinct: int = 64, seed: int = 0) -> list[Path]:
    """N PNGs in two class folders, cycling through ``distinct`` encoded images (encoding
    thousands of 512 px PNGs would dominate the run; decoding cost is the same per file)."""
    rng = np.random.default_rng(seed)
    blobs = [_synthetic(rng, mode) for _ in range(min(n, distinct))]
    paths = []
    for i in range(n):
        p = folder / f"class{i % 2}" / f"img{i:05d}.png"
        paths.append(p)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(blobs[i % len(blobs)])
    return paths


def bare_loop(paths: list[Path], side: int, mode: str) -> np.ndarray:
    pil_mode = "RGB" if mode == "rgb" else "L"
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert(pil_mode).resize((side, side), Image.Resampling.BILINEAR)))
    return np.stack(out)


def _vm_hwm_kb() -> int:
    """Peak RSS of this process since exec (VmHWM); ru_maxrss would carry over the parent's
    peak across fork+exec on Linux, so it is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_child(folder: str, side: int, workers: int | None, q: mp.Queue) -> None:
    s = read_imageset(folder, side=side, workers=workers)
    self_kb = _vm_hwm_kb()
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    q.put((len(s), s.images.nbytes, self_kb, kids_kb))


def peak_rss(folder: Path, side: int, workers: int | None) -> tuple[int, int, int, int]:
    ctx = mp.get_context("spawn")  # fresh interpreter: its peak RSS is the reader's alone
    q = ctx.Queue()
    proc = ctx.Process(target=_rss_child, args=(str(folder), side, workers, q))
    proc.start()
    result = q.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="number of 512 px PNGs")
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--mode", choices=["rgb", "grey"], default="rgb")
    ap.add_argument("--workers", type=int, default=None, help="read_imageset workers (default: up to 2)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the PNGs in this folder")
    ap.add_argument("--skip-timing", action="store_true", help="only measure peak RSS")
    args = ap.parse_args()

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="catscans-bench-")
    folder = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    t0 = time.perf_counter()
    paths = make_pngs(folder, args.n, args.mode)
    mb = sum(p.stat().st_size for p in paths) / 2**20
    print(f"files: {args.n} PNGs 512x512 {args.mode}, {mb:.0f} MiB on disk "
          f"(prepared in {time.perf_counter() - t0:.1f} s)", flush=True)

    n, nbytes, self_kb, kids_kb = peak_rss(folder, args.side, args.workers)
    full = args.n * 512 * 512 * (3 if args.mode == "rgb" else 1)
    print(f"peak RSS reading {n} files at {args.side} px: parent {self_kb / 1024:.0f} MiB, "
          f"largest decode worker {kids_kb / 1024:.0f} MiB; result array {nbytes / 2**20:.1f} MiB; "
          f"the full-resolution set would be {full / 2**20:.0f} MiB")
    if not args.skip_timing:
        bare_t, ours_t = [], []
        for r in range(args.repeats):
            order = ("bare", "ours") if r % 2 == 0 else ("ours", "bare")
            for which in order:
                t = time.perf_counter()
                if which == "bare":
                    ref = bare_loop(paths, args.side, args.mode)
                    bare_t.append(time.perf_counter() - t)
                else:
                    s = read_imageset(folder, side=args.side, workers=args.workers)
                    ours_t.append(time.perf_counter() - t)
        assert len(s) == len(ref) == args.n, (len(s), len(ref))
        bare_ips = args.n / statistics.median(bare_t)
        ours_ips = args.n / statistics.median(ours_t)
        print(f"bare PIL loop (1 process):      {bare_ips:8.1f} images/s  (median of {args.repeats} run(s) "
              f"over {args.n} files; times {', '.join(f'{x:.1f}' for x in bare_t)} s)")
        print(f"read_imageset (workers={args.workers or 'auto'}):   {ours_ips:8.1f} images/s  "
              f"(median of {args.repeats} run(s); times {', '.join(f'{x:.1f}' for x in ours_t)} s)")
        print(f"ratio imagesets / bare: {ours_ips / bare_ips:.2f}  (goal >= 0.8)")

    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
