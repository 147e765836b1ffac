"""Label-free image statistics: the ``stats`` and ``texture`` groups.

Why these: the seed study and the dataset-similarity literature (shared docs, anchors §B)
explain transfer by low-level image character (intensity, colour, edges, texture, spectral
fall-off) as often as by semantics. Grey-level values are computed on the rounded grey view,
so a grey set and its 3-channel copy agree exactly; colour values on an RGB view where grey
is replicated (colourfulness 0, greyness 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, stats
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

from meta_features._prepare import Prepared
from meta_features._registry import register

TEXTURE_MAX_IMAGES = 400  # GLCM/LBP are per-image loops; a seeded-order prefix is plenty


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


@register("stats")
def intensity(prep: Prepared) -> dict[str, float]:
    """Moments, contrast, dynamic range and histogram entropy of grey pixels."""
    g = prep.grey
    flat = g.reshape(-1)
    per_img = g.reshape(len(g), -1)
    lo, hi = np.percentile(per_img, [1, 99], axis=1)
    const = flat.std() == 0
    return {
        "mean_intensity": float(flat.mean() / 255),
        "std_intensity": float(flat.std() / 255),
        "skewness": math.nan if const else float(stats.skew(flat)),
        "kurtosis": math.nan if const else float(stats.kurtosis(flat)),
        "rms_contrast": float(per_img.std(axis=1).mean() / 255),
        "dynamic_range": float((hi - lo).mean() / 255),
        "hist_entropy": _entropy_bits(np.bincount(flat.astype(np.int64), minlength=256).astype(float)),
        "dark_fraction": float((flat < 10).mean()),
        "bright_fraction": float((flat > 245).mean()),
        "image_mean_spread": float(per_img.mean(axis=1).std() / 255),
    }


@register("stats")
def colour(prep: Prepared) -> dict[str, float]:
    """Per-channel moments, colourfulness (Hasler & Suesstrunk 2003), grey-ness, saturation."""
    x = prep.rgb
    r, gch, b = x[..., 0], x[..., 1], x[..., 2]
    rg, yb = r - gch, 0.5 * (r + gch) - b
    axes = (1, 2)
    colourful = np.sqrt(rg.var(axis=axes) + yb.var(axis=axes)) + 0.3 * np.sqrt(
        rg.mean(axis=axes) ** 2 + yb.mean(axis=axes) ** 2
    )
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    spread = mx - mn
    sat = spread / np.maximum(mx, 1.0)  # 0 where the pixel is black
    out = {f"channel_mean_{c}": float(x[..., i].mean() / 255) for i, c in enumerate("rgb")}
    out.update({f"channel_std_{c}": float(x[..., i].std() / 255) for i, c in enumerate("rgb")})
    out["colourfulness"] = float(colourful.mean() / 255)
    out["greyness"] = float((spread.reshape(len(x), -1).max(axis=1) <= 2).mean())
    out["saturation"] = float(sat.mean())
    return out


@register("stats")
def edges(prep: Prepared) -> dict[str, float]:
    """Sobel gradient magnitude: mean and the fraction of edge pixels (> 0.1 of full scale)."""
    g = prep.grey / 255.0
    k = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])[None]  # 1 x 3 x 3: never mixes images
    gx = ndimage.correlate(g, k, mode="reflect")
    gy = ndimage.correlate(g, k.transpose(0, 2, 1), mode="reflect")
    mag = np.hypot(gx, gy) / 4.0  # Sobel gain is 4 for a unit step
    return {"edge_mean": float(mag.mean()), "edge_density": float((mag > 0.1).mean())}


@register("texture")
def glcm(prep: Prepared) -> dict[str, float]:
    """GLCM properties (32 grey levels, distance 1, 4 angles) of the set's pooled GLCM.

    Normalised per-image matrices are averaged first and skimage's ``graycoprops`` runs once:
    a dataset-level texture summary at a fraction of the per-image cost.
    """
    g = (prep.grey[:TEXTURE_MAX_IMAGES] // 8).astype(np.uint8)
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    pooled = np.zeros((32, 32, 1, len(angles)))
    for img in g:
        pooled += graycomatrix(img, [1], angles, levels=32, symmetric=True, normed=True)
    pooled /= max(len(g), 1)
    props = ["contrast", "dissimilarity", "homogeneity", "energy", "correlation"]
    out = {}
    for p in props:
        v = graycoprops(pooled, p)
        out[f"glcm_{p}"] = float(v.mean()) if np.all(np.isfinite(v)) else math.nan
    return out


@register("texture")
def lbp(prep: Prepared) -> dict[str, float]:
    """Uniform LBP (P=8, R=1) histogram: entropy, flat-region and edge/corner pattern shares."""
    hist = np.zeros(10)
    for img in prep.grey[:TEXTURE_MAX_IMAGES].astype(np.uint8):
        codes = local_binary_pattern(img, P=8, R=1, method="uniform")
        hist += np.bincount(codes.astype(np.int64).ravel(), minlength=10)[:10]
    p = hist / hist.sum()
    return {
        "lbp_entropy": _entropy_bits(hist),
        "lbp_flat": float(p[0] + p[8]),
        "lbp_edge": float(p[3:6].sum()),
        "lbp_nonuniform": float(p[9]),
    }


@register("texture")
def power_spectrum(prep: Prepared) -> dict[str, float]:
    """Slope of the log radial power spectrum (natural images ~ -2), Hann-windowed, mean-removed."""
    g = prep.grey.astype(np.float64)
    s = g.shape[1]
    win = np.outer(np.hanning(s), np.hanning(s))
    x = (g - g.mean(axis=(1, 2), keepdims=True)) * win
    power = (np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(1, 2))) ** 2).mean(axis=0)
    yy, xx = np.indices((s, s))
    r = np.hypot(yy - s // 2, xx - s // 2).astype(int)
    radial = np.bincount(r.ravel(), power.ravel()) / np.bincount(r.ravel())
    f = np.arange(1, s // 2)
    pr = radial[1 : s // 2]
    if np.any(pr <= 0):
        return {"spectrum_slope": math.nan, "spectrum_high_fraction": math.nan}
    slope = float(np.polyfit(np.log(f), np.log(pr), 1)[0])
    high = float(pr[len(pr) // 2 :].sum() / pr.sum())
    return {"spectrum_slope": slope, "spectrum_high_fraction": high}
