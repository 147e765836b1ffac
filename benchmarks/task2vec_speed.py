"""Task2Vec embedding speed on 2 cores (issue 17): images/s for the default probe at 28 px.

Run with ``--threads 1`` (the module default) and ``--threads 2`` to compare on the machine at hand.

Times ``meta_features.task2vec.task2vec_embedding`` with its defaults (cap ``MAX_PER_CLASS``
images per class, ``N_SAMPLES`` Monte-Carlo labels per image, exact expectation when the set
has K <= N_SAMPLES classes) on (a) a synthetic labelled set of 28 px grey gratings and (b)
``../shared/data/pbc_blood.npz`` read with ``read_imageset(side=28, channels="rgb")`` when it
is present. The probe is loaded and the code warmed up outside the timed region; each figure
is the best of ``--repeats`` runs (the machine is shared: the best run is the least disturbed);
the CPU seconds of that run are printed too (less sensitive to other load than wall time).
images/s counts the images the embedding used (after the cap), not the images in the set.

    .venv/bin/python benchmarks/task2vec_speed.py [--n-per-class 250] [--classes 8] [--threads 1|2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def gratings(n_per_class: int, k: int, side: int = 28, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    ims, labs = [], []
    for i in range(n_per_class * k):
        c = i % k
        ang = np.pi * c / k + rng.normal(0, 0.1)
        img = 128 + 80 * np.sin(2 * np.pi * (3 + c) * (xx * np.cos(ang) + yy * np.sin(ang)) + rng.uniform(0, 6.3))
        ims.append(np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)[..., None])
        labs.append(c)
    return np.stack(ims), np.array(labs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=250, help="synthetic images per class")
    ap.add_argument("--classes", type=int, default=8, help="synthetic classes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (task2vec default: 1)")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    from meta_features import load_probe
    from meta_features.task2vec import MAX_PER_CLASS, N_SAMPLES, task2vec_embedding

    load_probe("default")
    print(f"default probe, 28 px grey; cap {MAX_PER_CLASS} images/class, {N_SAMPLES} MC samples/image "
          f"(exact expectation when K <= {N_SAMPLES}); torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    cases = [(f"synthetic {a.classes} classes x {a.n_per_class}", gratings(a.n_per_class, a.classes))]
    data = Path(os.environ.get("CATSCANS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    pbc = data / "pbc_blood.npz"
    if pbc.exists():
        from imagesets import read_imageset

        cases.append(("pbc_blood (shared)", read_imageset(pbc, side=28, channels="rgb")))
    else:
        print(f"({pbc} absent: synthetic set only)")
    for name, d in cases:
        task2vec_embedding(d, max_per_class=4, threads=a.threads)  # warm-up at this K (first-call allocations)
        best, cpu = None, None
        for _ in range(a.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            e = task2vec_embedding(d, threads=a.threads)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if best is None or dt < best:
                best, cpu = dt, dc
        n_set = len(d[0]) if isinstance(d, tuple) else len(d)
        grads = e.n_images * (e.info["n_classes"] if e.info["exact"] else e.info["n_samples"])
        print(f"{name}: {n_set} images in set, {e.n_images} used (cap {e.info['max_per_class']}/class), "
              f"K={e.info['n_classes']}, {'exact' if e.info['exact'] else 'MC'}; "
              f"{best:.2f} s -> {e.n_images / best:.0f} images/s ({grads / best:.0f} per-sample gradients/s), "
              f"CPU {cpu:.2f} s ({e.n_images / cpu:.0f} images per CPU-second); "
              f"dim {e.hessian.size}, head train acc {e.info['head_train_accuracy']:.2f}")


if __name__ == "__main__":
    main()
