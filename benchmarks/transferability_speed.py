"""LogME speed: the one-decomposition fixed-point solver vs the per-iteration reference.

Run by hand: ``.venv/bin/python benchmarks/transferability_speed.py [--n 10000 --d 512 --k 10]``.
Goal (issue 7): fast LogME <= 1 s on 10,000 x 512 features, 10 classes, on 2 cores. Both
implementations run in the same process on the same seeded features, at the same BLAS thread
limit (``--threads``, default $CATSCANS_ESTIMATOR_THREADS or 1), and must agree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def synthetic(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded features with some class structure: class centres at 0.3 sd plus unit noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(scale=0.3, size=(k, d))
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _time(fn, f: np.ndarray, y: np.ndarray, repeats: int) -> tuple[float, list[float]]:
    times, value = [], float("nan")
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn(f, y)
        times.append(time.perf_counter() - t0)
    return value, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of the fast solver")
    ap.add_argument("--ref-repeats", type=int, default=1, help="timed runs of the reference")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads is not None:
        os.environ["CATSCANS_ESTIMATOR_THREADS"] = str(args.threads)
    from meta_features.transferability import _blas_threads, logme, logme_reference

    f, y = synthetic(args.n, args.d, args.k)
    logme(f[:200], y[:200])  # warm-up (imports, BLAS init)
    fast, t_fast = _time(logme, f, y, args.repeats)
    ref, t_ref = _time(logme_reference, f, y, args.ref_repeats)
    med_fast, med_ref = statistics.median(t_fast), statistics.median(t_ref)
    print(f"LogME on {args.n} x {args.d} features, {args.k} classes, {_blas_threads()} BLAS thread(s), "
          f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}")
    print(f"  fast (one decomposition): median {med_fast:.3f} s over {args.repeats} runs "
          f"(min {min(t_fast):.3f}, max {max(t_fast):.3f}); value {fast:.6f}")
    print(f"  reference (inverse per iteration): median {med_ref:.3f} s over {args.ref_repeats} run(s) "
          f"(min {min(t_ref):.3f}, max {max(t_ref):.3f}); value {ref:.6f}")
    print(f"  speed-up reference/fast: {med_ref / med_fast:.1f}x; |fast - reference| = {abs(fast - ref):.2e}; "
          f"goal fast <= 1 s: {'met' if med_fast <= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
