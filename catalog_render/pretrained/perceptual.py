"""The LPIPS and DISTS networks (torch modules) built on :mod:`catalog_render.pretrained.backbones`.

:class:`LPIPSNetwork` — Zhang, Isola, Efros, Shechtman & Wang 2018, "The unreasonable effectiveness
of deep features as a perceptual metric" (LPIPS v0.1, as the ``lpips`` package computes it): inputs
in [-1, 1] are shifted and scaled per channel (shift (-0.030, -0.088, -0.188), scale (0.458, 0.448,
0.450)), passed through the backbone; each of the five feature maps is unit-normalised along
channels (x / (‖x‖₂ + 1e-10)), the squared difference of the two images' maps is weighted by the
linear layer (1x1 conv, no bias), averaged over space, and the five layers are summed.

:class:`DISTSNetwork` — Ding, Ma, Wang & Simoncelli 2020, "Image quality assessment: unifying
structure and texture similarity" (the authors' DISTS_pytorch code): inputs in [0, 1] are normalised
with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) and passed through VGG16
with L2 pooling; with the image itself as a sixth "layer" (3 channels), for each channel of each of
the six layers, texture term S1 = (2 μx μy + c1)/(μx² + μy² + c1) and structure term
S2 = (2 σxy + c2)/(σx² + σy² + c2) (spatial means, population (co)variances, c1 = c2 = 1e-6);
DISTS = 1 − Σ (α S1 + β S2) with α, β (1475 each) normalised by Σα + Σβ. α and β come from the
DISTS-pytorch package's ``weights.pt`` read with ``torch.load(weights_only=True)`` and cached as
safetensors.

Both take float tensors (N, 3, H, W) and return a (N,) tensor of distances (lower = more alike,
0 for identical images). Images need at least ~32 px per side (AlexNet's first conv and pools).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from catalog_render.errors import WeightFileError
from catalog_render.pretrained import backbones, cache, packages

#: LPIPS's scaling layer (the ``lpips`` package's ScalingLayer).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
#: ImageNet normalisation DISTS applies to [0, 1] inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Channels of DISTS's six "layers": the image, then VGG16's relu1_2 ... relu5_3.
DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)


class LPIPSNetwork(nn.Module):
    """LPIPS v0.1 with the ``alex`` (default, the paper's recommended) or ``vgg`` backbone.
    ``forward(x, y)``: x, y float (N, 3, H, W) in [-1, 1] -> (N,) distances."""

    def __init__(self, net: backbones.Net = "alex"):
        super().__init__()
        self.net_name = net
        self.backbone = backbones.load_alexnet() if net == "alex" else backbones.load_vgg16("max")
        self.lins = backbones.lpips_linear_layers(net)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @staticmethod
    def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.backbone((x - self.shift) / self.scale)
        fy = self.backbone((y - self.shift) / self.scale)
        total = 0
        for lin, a, b in zip(self.lins, fx, fy):
            total = total + lin((self._unit(a) - self._unit(b)) ** 2).mean(dim=(2, 3))
        return total.reshape(-1)


def _dists_convert(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (refused global), RuntimeError (corrupt zip), ...
        raise WeightFileError(f"{path} is not a readable torch weights file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    n = sum(DISTS_CHANNELS)
    if not isinstance(state, dict) or set(state) != {"alpha", "beta"}:
        raise WeightFileError(f"{path} does not hold DISTS alpha and beta")
    out = {}
    for k in ("alpha", "beta"):
        t = state[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (1, n, 1, 1) or not torch.isfinite(t).all():
            raise WeightFileError(f"{path}: DISTS {k} is not a finite (1, {n}, 1, 1) tensor")
        out[k] = t.float()
    return out


def dists_weights() -> dict[str, torch.Tensor]:
    """DISTS ``alpha`` and ``beta``, each (1, 1475, 1, 1) float32, from DISTS-pytorch's
    ``weights.pt`` (``torch.load(weights_only=True)``), cached as safetensors."""
    return cache.converted("dists-pytorch-alpha-beta", packages.package_file("DISTS-pytorch", "weights.pt"), _dists_convert)


class DISTSNetwork(nn.Module):
    """DISTS. ``forward(x, y)``: x, y float (N, 3, H, W) in [0, 1] -> (N,) distances in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.backbone = backbones.load_vgg16("l2")
        w = dists_weights()
        self.register_buffer("alpha", w["alpha"], persistent=False)
        self.register_buffer("beta", w["beta"], persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = [x] + self.backbone((x - self.mean) / self.std)
        fy = [y] + self.backbone((y - self.mean) / self.std)
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, DISTS_CHANNELS, dim=1)
        betas = torch.split(self.beta / w_sum, DISTS_CHANNELS, dim=1)
        c1 = c2 = 1e-6
        d1 = d2 = 0
        for a, b, alpha, beta in zip(fx, fy, alphas, betas):
            mx, my = a.mean((2, 3), keepdim=True), b.mean((2, 3), keepdim=True)
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            vx, vy = ((a - mx) ** 2).mean((2, 3), keepdim=True), ((b - my) ** 2).mean((2, 3), keepdim=True)
            cov = (a * b).mean((2, 3), keepdim=True) - mx * my
            s2 = (2 * cov + c2) / (vx + vy + c2)
            d1 = d1 + (alpha * s1).sum(1, keepdim=True)
            d2 = d2 + (beta * s2).sum(1, keepdim=True)
        return (1 - (d1 + d2)).reshape(-1)
