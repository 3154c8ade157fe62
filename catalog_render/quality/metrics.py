"""Evaluation metrics over sets of images: reference metrics (PSNR, SSIM, LPIPS) and the Fréchet
distance between two sets of feature vectors.

Images are RGB uint8 arrays of shape (H, W, 3) with values in [0, 255] unless said otherwise.

| metric | definition | unit / range | better | source |
| --- | --- | --- | --- | --- |
| :func:`psnr` | 10 log10(255² / MSE) over every pixel and channel | dB, [0, inf) | higher | scikit-image ``peak_signal_noise_ratio`` |
| :func:`ssim` | mean SSIM over the image and the 3 channels, Gaussian window σ = 1.5 (11x11), population covariances, K1 = 0.01, K2 = 0.03, L = 255 | [-1, 1] | higher | Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error visibility to structural similarity"; scikit-image ``structural_similarity`` with the paper's settings |
| :func:`lpips` | learned perceptual distance between deep features | [0, ~1] | lower | Zhang et al. 2018, "The unreasonable effectiveness of deep features as a perceptual metric"; torchmetrics' implementation |
| :func:`frechet_distance` | ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½) of two Gaussians fitted to two feature sets | feature units², [0, inf) | lower | Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash equilibrium" (FID); torchmetrics' implementation |

Note: :mod:`catalog_render.quality.scores` keeps its own per-image PSNR/SSIM (scikit-image
defaults: uniform 7x7 window) for the manifest; evaluation uses the paper's Gaussian settings here,
so the two SSIMs differ slightly on the same pair.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

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


# --------------------------------------------------------------------------------------- LPIPS


@dataclass(frozen=True)
class LpipsStatus:
    """Whether LPIPS can be computed here: ``available`` and, when not, ``reason`` (one line)."""

    available: bool
    reason: str | None = None
    weights_path: str | None = None
    net: str | None = None

    def to_json(self) -> dict:
        return {"available": self.available, "skipped_reason": self.reason, "weights_path": self.weights_path, "net": self.net}


#: Channels of the first two LPIPS lin layers -> backbone (Zhang et al. 2018's three networks).
_LIN_CHANNELS = {(64, 192): "alex", (64, 128): "vgg"}


def _torchvision_problem() -> str | None:
    try:
        importlib.import_module("torchvision")
    except Exception as exc:  # ImportError, or a build that fails to import beside this torch
        return f"torchvision is not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); torchmetrics' LPIPS needs its backbone networks"
    return None


def _net_of(state: dict[str, torch.Tensor]) -> str | None:
    if "lin5.model.1.weight" in state:
        return "squeeze"
    try:
        key = (state["lin0.model.1.weight"].shape[1], state["lin1.model.1.weight"].shape[1])
    except KeyError:
        return None
    return _LIN_CHANNELS.get(key)


def lpips_status(weights_path: str | None) -> LpipsStatus:
    """Can LPIPS run with ``weights_path`` (the job's ``evaluate.lpips_weights``)? Checked in order:
    a path is configured; it is a local path (not a URI: weights are never downloaded); it ends in
    ``.safetensors`` (pickle checkpoints are never loaded); the file exists; torchvision imports;
    the file holds a full LPIPS state dict (backbone ``net.*`` and ``lin*`` layers) of a known
    backbone. Returns an LpipsStatus whose ``reason`` says exactly which check failed."""
    if not weights_path:
        return LpipsStatus(False, "no LPIPS weights configured (evaluate.lpips_weights is unset); LPIPS needs local backbone weights and they are never downloaded")
    if "://" in str(weights_path):
        return LpipsStatus(False, f"evaluate.lpips_weights {weights_path!r} is a URI; it must be a local file path (weights are never downloaded)", str(weights_path))
    p = Path(weights_path)
    if p.suffix != ".safetensors":
        return LpipsStatus(False, f"evaluate.lpips_weights {weights_path!r} is not a .safetensors file; pickle checkpoints are not loaded (unpickling runs code)", str(p))
    if not p.is_file():
        return LpipsStatus(False, f"evaluate.lpips_weights {weights_path!r} does not exist or is not a file", str(p))
    problem = _torchvision_problem()
    if problem:
        return LpipsStatus(False, problem, str(p))
    from safetensors.torch import load_file

    try:
        state = load_file(str(p))
    except Exception as exc:
        return LpipsStatus(False, f"evaluate.lpips_weights {weights_path!r} is not a valid safetensors file ({exc})", str(p))
    net = _net_of(state)
    if net is None or not any(k.startswith("net.") for k in state):
        return LpipsStatus(False, f"evaluate.lpips_weights {weights_path!r} is not a full LPIPS state dict (needs net.* backbone and lin0..lin4 layers of alex, vgg or squeeze)", str(p))
    return LpipsStatus(True, None, str(p), net)


def _lpips_network(status: LpipsStatus):
    """torchmetrics' LPIPS network built with random weights (nothing downloaded, no pickle read),
    then loaded strictly from the safetensors file."""
    from safetensors.torch import load_file
    from torchmetrics.functional.image.lpips import _LPIPS

    net = _LPIPS(pretrained=False, net=status.net, pnet_rand=True)
    state = load_file(status.weights_path)
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("scaling_layer.")]  # fixed buffers of the paper's input scaling
    if missing or unexpected:
        raise ValueError(f"LPIPS weights do not match the {status.net} network (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return net.eval()


def lpips(references: list[np.ndarray], images: list[np.ndarray], status: LpipsStatus, batch_size: int = 32) -> list[float]:
    """LPIPS distance of each (reference, image) pair of uint8 RGB arrays (H, W, 3) in [0, 255]
    (scaled to [-1, 1] as the paper's networks expect); lower = more alike, 0 for identical images.
    ``status`` must come from :func:`lpips_status` and be available (ValueError otherwise)."""
    if not status.available:
        raise ValueError(f"LPIPS is not available: {status.reason}")
    for r, i in zip(references, images):
        _pair(r, i)
    net = _lpips_network(status)
    out: list[float] = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            a = torch.from_numpy(np.stack(references[s : s + batch_size])).permute(0, 3, 1, 2).float() / 127.5 - 1
            b = torch.from_numpy(np.stack(images[s : s + batch_size])).permute(0, 3, 1, 2).float() / 127.5 - 1
            out.extend(float(v) for v in net(a, b).reshape(-1))
    return out


@dataclass
class LpipsResult:
    """LPIPS over a set of pairs, or why it was skipped (JSON-ready via :meth:`to_json`)."""

    status: LpipsStatus
    values: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        if not self.status.available:
            return {"computed": False, "skipped_reason": self.status.reason}
        return {"computed": True, "net": self.status.net, "weights_path": self.status.weights_path, **summary(self.values)}


def lpips_or_skip(references: list[np.ndarray], images: list[np.ndarray], status: LpipsStatus) -> LpipsResult:
    """:func:`lpips` when ``status`` is available, else an LpipsResult carrying the skip reason."""
    if not status.available:
        return LpipsResult(status)
    return LpipsResult(status, lpips(references, images, status))
