"""Image quality metrics, defined once for training, runtime, benchmarks and the demo.

All functions take uint8 (or float on the 0–255 scale) arrays shaped (H, W, 3) or (N, H, W, 3)
and return one value per image (a float for a single image, an array for a batch).

Definitions
-----------
- ``l1``: sum of absolute errors per image on the 0–255 scale (as in the reference report).
- ``mse``: mean squared error per image on the 0–255 scale.
- ``psnr``: 10·log10(255² / MSE) in dB; identical images give ``inf``.
- ``ssim``: Wang et al. 2004 with a Gaussian 11×11 window, σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  computed over the 'valid' region only (no padding) per channel, then averaged over channels.
  This matches scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)``.
- ``ms_ssim``: Wang et al. 2003 multi-scale SSIM, adapted to tiny images. The standard 5 scales
  with an 11×11 window need at least 161×161 pixels; we use as many dyadic scales as keep the
  coarsest side ≥ 8 pixels (32×32 → 3 scales: 32, 16, 8; 64×64 → 4), at most 5. The window is the
  same Gaussian (σ = 1.5) truncated to 11×11, or to the largest odd size that fits a scale (7×7 at
  8×8). Scale weights are the first n of the standard (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
  renormalised to sum 1. Downsampling between scales is 2×2 average pooling. Contrast-structure
  terms are clipped at 0 before the weighted product (as in TensorFlow's implementation) so the
  value stays real.
"""

from __future__ import annotations

import numpy as np

_K1, _K2, _L = 0.01, 0.03, 255.0
MSE_SCALE = 127.5**2  # [-1, 1] squared error -> 0..255 squared error (the training losses)
_C1, _C2 = (_K1 * _L) ** 2, (_K2 * _L) ** 2
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _batch(a: np.ndarray) -> tuple[np.ndarray, bool]:
    a = np.asarray(a, dtype=np.float64)
    single = a.ndim == 3
    if single:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"expected (H, W, C) or (N, H, W, C), got shape {a.shape}")
    return a, single


def _out(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def _pair(x, y):
    a, single = _batch(x)
    b, _ = _batch(y)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return a, b, single


def l1(x, y):
    """Sum of absolute errors per image (0–255 scale)."""
    a, b, single = _pair(x, y)
    return _out(np.abs(a - b).sum(axis=(1, 2, 3)), single)


def mse(x, y):
    """Mean squared error per image (0–255 scale)."""
    a, b, single = _pair(x, y)
    return _out(((a - b) ** 2).mean(axis=(1, 2, 3)), single)


def psnr(x, y):
    """Peak signal-to-noise ratio in dB (peak 255); inf for identical images."""
    m = np.atleast_1d(np.asarray(mse(x, y), dtype=np.float64))
    with np.errstate(divide="ignore"):
        p = np.where(m > 0, 10.0 * np.log10(_L**2 / np.maximum(m, 1e-300)), np.inf)
    return float(p[0]) if np.ndim(mse(x, y)) == 0 else p


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian of odd ``size``."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering over axes 1 and 2 of (N, H, W, C)."""
    k = len(g)
    h, w = a.shape[1] - k + 1, a.shape[2] - k + 1
    rows = sum(g[i] * a[:, i : i + h] for i in range(k))
    return sum(g[j] * rows[:, :, j : j + w] for j in range(k))


def _ssim_terms(a: np.ndarray, b: np.ndarray, size: int, sigma: float):
    g = gaussian_window(size, sigma)
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    saa = _filter_valid(a * a, g) - mu_a**2
    sbb = _filter_valid(b * b, g) - mu_b**2
    sab = _filter_valid(a * b, g) - mu_a * mu_b
    luminance = (2 * mu_a * mu_b + _C1) / (mu_a**2 + mu_b**2 + _C1)
    cs = (2 * sab + _C2) / (saa + sbb + _C2)
    return luminance, cs


def _window_for(side: int, size: int = 11) -> int:
    size = min(size, side)
    return size if size % 2 == 1 else size - 1


def ssim(x, y, window: int = 11, sigma: float = 1.5):
    """Structural similarity (mean over the valid region and channels)."""
    a, b, single = _pair(x, y)
    size = _window_for(min(a.shape[1], a.shape[2]), window)
    lum, cs = _ssim_terms(a, b, size, sigma)
    return _out((lum * cs).mean(axis=(1, 2, 3)), single)


def ms_ssim_scales(side: int) -> int:
    """Number of dyadic scales used for an image whose smaller side is ``side``."""
    n = 1
    while n < len(MS_SSIM_WEIGHTS) and side // (2**n) >= 8:
        n += 1
    return n


def _pool2(a: np.ndarray) -> np.ndarray:
    n, h, w, c = a.shape
    a = a[:, : h // 2 * 2, : w // 2 * 2]
    return a.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim(x, y, sigma: float = 1.5):
    """Multi-scale SSIM for small images (see the module docstring for scales and window)."""
    a, b, single = _pair(x, y)
    scales = ms_ssim_scales(min(a.shape[1], a.shape[2]))
    weights = np.array(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    values = []
    for s in range(scales):
        size = _window_for(min(a.shape[1], a.shape[2]))
        lum, cs = _ssim_terms(a, b, size, sigma)
        if s == scales - 1:
            values.append(np.maximum((lum * cs).mean(axis=(1, 2)), 0.0))  # (N, C)
        else:
            values.append(np.maximum(cs.mean(axis=(1, 2)), 0.0))
            a, b = _pool2(a), _pool2(b)
    stacked = np.stack(values, axis=0)  # (scales, N, C)
    per_channel = np.prod(stacked ** weights[:, None, None], axis=0)
    return _out(per_channel.mean(axis=1), single)


def bits_per_pixel(num_bytes: int, width: int, height: int) -> float:
    """File size in bits divided by the pixel count of the image it stands for."""
    return 8.0 * num_bytes / float(width * height)


def quality(x, y) -> dict:
    """All per-image metrics as a dict of floats or arrays: l1, mse, psnr, ssim, ms_ssim."""
    return {
        "l1": l1(x, y),
        "mse": mse(x, y),
        "psnr": psnr(x, y),
        "ssim": ssim(x, y),
        "ms_ssim": ms_ssim(x, y),
    }
