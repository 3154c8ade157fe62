"""Per-image quality scores written to the manifest.

Inputs are RGB uint8 arrays of shape (H, W, 3) with values in [0, 255].

| score | definition | range | better |
| --- | --- | --- | --- |
| sharpness | variance of the Laplacian of the grey image scaled to [0, 1] (Pech-Pacheco et al. 2000, "Diatom autofocusing in brightfield microscopy") | [0, inf), ~0.001 blurry, > 0.01 crisp at 64 px | higher |
| background_whiteness | share of pixels in the outer border band (``border_fraction`` of each side) whose every channel is >= ``white_threshold`` | [0, 1] | higher (marketplaces such as Amazon ask for a pure white main-image background) |
| fill_ratio | area of the bounding box of non-white pixels (any channel < ``white_threshold``) over the image area | [0, 1] | closer to ~0.85 (Amazon: the product should fill at least 85% of the frame) |
| psnr | peak signal-to-noise ratio against the reference photo, dB, data range 255 (scikit-image) | [0, inf) | higher |
| ssim | structural similarity against the reference photo (Wang et al. 2004; scikit-image, Gaussian weights off, 7x7 window, per channel) | [-1, 1] | higher |
| lpips | LPIPS v0.1 AlexNet distance to the reference photo (Zhang et al. 2018; computed by the render worker with :func:`catalog_render.quality.metrics.load_lpips`, which needs a network, not here) | [0, ~1] | lower |

PSNR and SSIM need the product's real photo; renders of a generator are not reconstructions, so
they measure closeness to the catalog photo (pose, framing, colour), not image quality per se.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2gray
from skimage.filters import laplace
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image (values in [0, 1]). Raises ValueError on a non-RGB array."""
    _check(rgb)
    return float(laplace(rgb2gray(rgb), ksize=3).var())


def _border_mask(h: int, w: int, border_fraction: float) -> np.ndarray:
    bh, bw = max(1, round(h * border_fraction)), max(1, round(w * border_fraction))
    mask = np.zeros((h, w), dtype=bool)
    mask[:bh, :] = mask[-bh:, :] = True
    mask[:, :bw] = mask[:, -bw:] = True
    return mask


def background_whiteness(rgb: np.ndarray, white_threshold: int = 240, border_fraction: float = 0.05) -> float:
    """Share of border-band pixels with all channels >= white_threshold, in [0, 1]."""
    _check(rgb)
    white = (rgb >= white_threshold).all(axis=2)
    mask = _border_mask(*white.shape, border_fraction)
    return float(white[mask].mean())


def fill_ratio(rgb: np.ndarray, white_threshold: int = 240) -> float:
    """Bounding-box area of non-white pixels over image area, in [0, 1] (0 for an all-white image)."""
    _check(rgb)
    fg = ~(rgb >= white_threshold).all(axis=2)
    if not fg.any():
        return 0.0
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    return float((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) / fg.size)


def psnr(reference: np.ndarray, rgb: np.ndarray) -> float:
    """PSNR in dB (data range 255); inf for identical images. Shapes must match (ValueError)."""
    _check(reference)
    _check(rgb)
    return float(peak_signal_noise_ratio(reference, rgb, data_range=255))


def ssim(reference: np.ndarray, rgb: np.ndarray) -> float:
    """Mean SSIM over channels (7x7 window, data range 255), in [-1, 1]. Shapes must match (ValueError)."""
    _check(reference)
    _check(rgb)
    return float(structural_similarity(reference, rgb, channel_axis=2, data_range=255))


def score_image(rgb: np.ndarray, reference: np.ndarray | None = None, white_threshold: int = 240, border_fraction: float = 0.05) -> dict[str, float | None]:
    """All scores for one render; psnr/ssim are None without a reference (already resized to match)."""
    out: dict[str, float | None] = {
        "sharpness": sharpness(rgb),
        "background_whiteness": background_whiteness(rgb, white_threshold, border_fraction),
        "fill_ratio": fill_ratio(rgb, white_threshold),
        "psnr": None,
        "ssim": None,
    }
    if reference is not None:
        out["psnr"] = psnr(reference, rgb)
        out["ssim"] = ssim(reference, rgb)
    return out


def _check(a: np.ndarray) -> None:
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {a.dtype} {a.shape}")
