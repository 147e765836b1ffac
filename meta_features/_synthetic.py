"""Procedural reference sets: what the probe and the meta-feature scaler are fit on.

Why synthetic: the probe (the embedding behind the deep/label meta-features, the Fréchet, MMD,
OT and Task2Vec distances) and the scaler (behind the meta-feature cosine/Euclidean distances)
must never have seen a dataset a KB evaluates on, or leave-one-group-out leaks the held-out
target through them. KB ``local`` uses every shared image set as a target or as the twin of
one, so no real set is left over; images drawn from simple generative families are a target of
no KB by construction, and they need no ``../shared`` (a fresh clone can retrain the probe).

Five sets of ten classes, 64 px grey (read back through ``imagesets`` at the profile side, as a
user's folder is): oriented gratings, shapes, filtered-noise textures, blob counts, and
"scan-like" scenes (cells, nuclei, paired dark fields, speckle, vessels, vignettes). Each image
gets a random contrast, brightness, smooth background and pixel noise. Seeded: the same name,
size and seed give the same pixels.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from imagesets import ImageSet, read_imageset

SIDE = 64
N_PER_CLASS = 400
_Y, _X = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) / (SIDE - 1) * 2 - 1  # [-1, 1]²

Draw = Callable[[int, np.random.Generator], np.ndarray]  # class index, rng -> (SIDE, SIDE) in ~[0, 1]


def _disk(cx: float, cy: float, r: float, soft: float = 0.04) -> np.ndarray:
    d = np.hypot(_X - cx, _Y - cy)
    return 1.0 / (1.0 + np.exp((d - r) / soft))


def _gratings(k: int, rng: np.random.Generator) -> np.ndarray:
    theta = np.pi * (k % 5) / 5 + rng.normal(0, 0.06)
    freq = (3.0 if k < 5 else 9.0) * rng.uniform(0.85, 1.15)
    u = _X * np.cos(theta) + _Y * np.sin(theta)
    return 0.5 + 0.5 * np.sin(np.pi * freq * u + rng.uniform(0, 2 * np.pi))


def _shapes(k: int, rng: np.random.Generator) -> np.ndarray:
    cx, cy = rng.uniform(-0.35, 0.35, 2)
    r = rng.uniform(0.25, 0.5)
    ax, ay = np.abs(_X - cx), np.abs(_Y - cy)
    masks = [
        np.hypot(_X - cx, _Y - cy) < r,  # disk
        np.maximum(ax, ay) < r * 0.85,  # square
        (_Y - cy > -r * 0.6) & (ax < (r * 0.9 - (_Y - cy)) * 0.6),  # triangle
        np.abs(np.hypot(_X - cx, _Y - cy) - r * 0.8) < r * 0.18,  # ring
        ((ax < r * 0.2) | (ay < r * 0.2)) & (np.maximum(ax, ay) < r),  # cross
        (ay < r * 0.2) & (ax < r),  # horizontal bar
        (ax < r * 0.2) & (ay < r),  # vertical bar
        ((_X - cx) / r) ** 2 + ((_Y - cy) / (r * 0.5)) ** 2 < 1,  # ellipse
        (np.hypot(_X - cx + r * 0.5, _Y - cy) < r * 0.35) | (np.hypot(_X - cx - r * 0.5, _Y - cy) < r * 0.35),
        ax + ay < r,  # diamond
    ]
    return masks[k].astype(np.float64)


def _textures(k: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.6, 1.2, 2.4, 4.0, 7.0)[k % 5]
    sig = (sigma, sigma) if k < 5 else (sigma * 0.3, sigma * 2.0)  # isotropic, then streaked
    t = gaussian_filter(rng.normal(size=(SIDE, SIDE)), sig, mode="wrap")
    return (t - t.min()) / (np.ptp(t) + 1e-9)


def _counts(k: int, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((SIDE, SIDE))
    for _ in range(k + 1):
        img = np.maximum(img, _disk(*rng.uniform(-0.8, 0.8, 2), rng.uniform(0.06, 0.11)))
    return img


def _scans(k: int, rng: np.random.Generator) -> np.ndarray:
    cx, cy = rng.uniform(-0.2, 0.2, 2)
    r = rng.uniform(0.35, 0.55)
    if k == 0:  # bright cell
        return _disk(cx, cy, r)
    if k == 1:  # dark cell on a bright field
        return 1 - _disk(cx, cy, r)
    if k == 2:  # cell with a nucleus
        return 0.5 * _disk(cx, cy, r) + 0.5 * _disk(cx, cy, r * 0.4)
    if k == 3:  # cell with two or three nuclei
        img = 0.45 * _disk(cx, cy, r)
        for _ in range(int(rng.integers(2, 4))):
            img = np.maximum(img, 0.45 * _disk(cx, cy, r) + 0.55 * _disk(*(np.array([cx, cy]) + rng.uniform(
                -r * 0.45, r * 0.45, 2)), r * 0.22))
        return img
    if k == 4:  # two dark fields in a bright body (chest-film-like)
        e = lambda sx: (((_X - sx) / 0.3) ** 2 + ((_Y - cy) / 0.6) ** 2 < 1).astype(float)  # noqa: E731
        return gaussian_filter(0.9 - 0.6 * (e(-0.42 + cx / 4) + e(0.42 + cx / 4)), 2.0)
    if k == 5:  # speckle in a fan (ultrasound-like)
        ang = np.arctan2(_X, _Y + 1.0)
        fan = (np.abs(ang) < 0.6) & (np.hypot(_X, _Y + 1.0) < 1.9)
        return fan * rng.rayleigh(0.4, (SIDE, SIDE))
    if k == 6:  # vessels: smoothed random walks
        img = np.zeros((SIDE, SIDE))
        for _ in range(3):
            p, step = rng.uniform(8, SIDE - 8, 2), rng.normal(size=2)
            for _ in range(120):
                step = 0.85 * step + 0.5 * rng.normal(size=2)
                p = np.clip(p + step / (np.linalg.norm(step) + 1e-9), 0, SIDE - 1)
                img[int(p[0]), int(p[1])] = 1.0
        return np.clip(gaussian_filter(img, 1.0) * 4, 0, 1)
    if k == 7:  # vignette: bright centre fading out (radiograph-like exposure)
        return np.exp(-((_X - cx) ** 2 + (_Y - cy) ** 2) / (2 * r ** 2))
    if k == 8:  # spotted tissue
        t = gaussian_filter(rng.normal(size=(SIDE, SIDE)), 1.5)
        return (t > np.quantile(t, 0.8)).astype(float) * 0.8 + 0.2 * _disk(0, 0, 0.9, 0.2)
    rad = np.hypot(_X - cx, _Y - cy)  # k == 9: concentric rings (retina / target-like)
    return 0.5 + 0.5 * np.cos(rad * rng.uniform(10, 14) * np.pi)


FAMILIES: dict[str, Draw] = {
    "synthetic_gratings": _gratings, "synthetic_shapes": _shapes, "synthetic_textures": _textures,
    "synthetic_counts": _counts, "synthetic_scans": _scans,
}
SYNTHETIC_SETS: tuple[str, ...] = tuple(FAMILIES)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random contrast/brightness/polarity-free background and pixel noise, then uint8."""
    bg = gaussian_filter(rng.normal(size=(SIDE, SIDE)), 8.0)
    bg = 0.15 * bg / (np.abs(bg).max() + 1e-9)
    x = rng.uniform(0.1, 0.3) + rng.uniform(0.45, 0.7) * img + bg + rng.normal(0, rng.uniform(0.01, 0.06), img.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def synthetic_arrays(name: str, n_per_class: int = N_PER_CLASS, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images n x 64 x 64 uint8, labels, class names) of one procedural set, seeded."""
    if name not in FAMILIES:
        raise KeyError(f"unknown synthetic set {name!r}; known: {', '.join(SYNTHETIC_SETS)}")
    draw = FAMILIES[name]
    rng = np.random.default_rng([seed, SYNTHETIC_SETS.index(name)])
    labels = np.repeat(np.arange(10), n_per_class)
    images = np.stack([_finish(draw(int(k), rng), rng) for k in labels])
    return images, labels, [f"class{k}" for k in range(10)]


def synthetic_imageset(name: str, side: int, n_per_class: int = N_PER_CLASS, seed: int = 0) -> ImageSet:
    """The set read through ``imagesets`` at ``side`` px (the reader every dataset goes through)."""
    images, labels, classes = synthetic_arrays(name, n_per_class, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.npz"
        np.savez(path, images=images, labels=labels, class_names=np.array(classes))
        return read_imageset(str(path), side=side, channels="keep", name=name)
