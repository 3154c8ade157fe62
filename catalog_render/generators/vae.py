"""Conditional variational autoencoder (family ``vae``).

Model: the VAE of Kingma & Welling 2014 ("Auto-Encoding Variational Bayes"), class-conditional as
in Sohn et al. 2015 ("Learning Structured Output Representation using Deep Conditional Generative
Models"): the encoder q(z | x, y) and the decoder p(x | z, y) both see the product's conditioning
y (one embedding table per field, :class:`~catalog_render.generators.conditioning.ConditionEncoder`;
index 0 of every table is "unknown"). Rendering draws z ~ N(0, I) from the seed and decodes it;
:meth:`VaeModel.reconstruct` encodes a photo and decodes the posterior mean instead.

Networks (``n = num_downsamples``, ``C = base_channels``, ``H x W`` multiples of ``2**n``):

* encoder: ``n`` blocks [Conv 4x4 stride 2 -> GroupNorm (Wu & He 2018) -> SiLU], channels
  ``C, 2C, 4C, ...``, down to ``(H / 2**n) x (W / 2**n)``; the flattened features concatenated with
  the condition embedding feed two linear heads, ``mu`` and ``logvar`` (B, latent_dim).
* decoder: ``[z, condition embedding]`` -> linear -> ``(C * 2**(n-1), H / 2**n, W / 2**n)``, then
  ``n`` blocks [nearest 2x upsample -> (Conv 3x3 -> GroupNorm -> SiLU) x 2] halving the channels
  (never below C), and a Conv 3x3 to RGB with tanh: images in [-1, 1].

GroupNorm rather than batch norm: no running statistics, so a render or a reconstruction does not
depend on the batch it is computed in, and frozen layers stay exactly frozen when fine-tuning.

A model directory holds ``config.json``, ``model.safetensors`` (the EMA copy of the whole VAE,
encoder included, so that photos can be reconstructed) and ``model_card.json``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from catalog_render import imaging
from catalog_render.errors import ModelError
from catalog_render.generators.base import Conditioning, GenerationParams
from catalog_render.generators.conditioning import (  # noqa: F401
    SingleFileModel,
    ConditionEncoder,
    condition_indices,
    conditioning_problem,
    latents,
    to_pil,
)

FAMILY = "vae"
#: GenerationParams fields (besides the size) that change a VAE's pixels: none, one decoder pass.
PARAMS_USED: tuple[str, ...] = ()
#: logvar is clamped to this range before exp() (as diffusers' DiagonalGaussianDistribution does).
LOGVAR_RANGE = (-30.0, 20.0)


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest of 8, 4, 2, 1 dividing ``channels``."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.GroupNorm(_groups(channels), channels), nn.SiLU()]


class VaeEncoder(nn.Module):
    """images (B, 3, H, W) float in [-1, 1] + condition embedding (B, E) -> (mu, logvar), each
    (B, latent_dim) float. ``convs`` is the convolution stack (what ``freeze="lower"`` freezes)."""

    def __init__(self, h: int, w: int, base_channels: int, n_down: int, cond_dim: int, latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i in range(n_down):
            cout = base_channels * 2**i
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), *_norm_act(cout)]
            cin = cout
        self.convs = nn.Sequential(*layers)
        feat = cin * (h // 2**n_down) * (w // 2**n_down)
        self.mu = nn.Linear(feat + cond_dim, latent_dim)
        self.logvar = nn.Linear(feat + cond_dim, latent_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.convs(x).flatten(1), c], dim=1)
        return self.mu(h), self.logvar(h).clamp(*LOGVAR_RANGE)


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), *_norm_act(cout), nn.Conv2d(cout, cout, 3, padding=1), *_norm_act(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class VaeDecoder(nn.Module):
    """z (B, latent_dim) float + condition embedding (B, E) -> images (B, 3, H, W) in [-1, 1]."""

    def __init__(self, h: int, w: int, base_channels: int, n_down: int, cond_dim: int, latent_dim: int):
        super().__init__()
        self.h0, self.w0 = h // 2**n_down, w // 2**n_down
        chans = [base_channels * 2 ** (n_down - 1 - i) for i in range(n_down)] + [base_channels]
        self.fc = nn.Linear(latent_dim + cond_dim, chans[0] * self.h0 * self.w0)
        self.blocks = nn.Sequential(*(UpBlock(chans[i], chans[i + 1]) for i in range(n_down)))
        self.out = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.fc(torch.cat([z, c], dim=1)).view(z.shape[0], -1, self.h0, self.w0)
        return torch.tanh(self.out(self.blocks(torch.nn.functional.silu(x))))


class ConditionalVae(nn.Module):
    """The whole conditional VAE built from config.json (``height``, ``width``, ``latent_dim``,
    ``base_channels``, ``embed_dim``, ``num_downsamples``, ``conditions``). Parameter names:
    ``cond.tables.<i>.weight`` (one embedding table per conditioning field, shared by encoder and
    decoder), ``encoder.convs.*``, ``encoder.mu.*``, ``encoder.logvar.*``, ``decoder.*``."""

    def __init__(self, cfg: dict):
        super().__init__()
        h, w, n_down = cfg["height"], cfg["width"], cfg.get("num_downsamples", 4)
        if h % 2**n_down or w % 2**n_down:
            raise ModelError(f"VAE height/width must be multiples of {2**n_down} ({n_down} downsamplings), got {h}x{w}")
        self.latent_dim = cfg["latent_dim"]
        self.cond = ConditionEncoder([len(c["values"]) for c in cfg["conditions"]], cfg["embed_dim"])
        args = (h, w, cfg["base_channels"], n_down, self.cond.out_dim, self.latent_dim)
        self.encoder = VaeEncoder(*args)
        self.decoder = VaeDecoder(*args)

    def encode(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] + condition indices (B, F) int64 -> (mu, logvar) of
        q(z | x, y), each (B, latent_dim)."""
        return self.encoder(x, self.cond(idx))

    def decode(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) + condition indices (B, F) int64 -> images (B, 3, H, W) in [-1, 1]."""
        return self.decoder(z, self.cond(idx))

    def forward(self, x: torch.Tensor, idx: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised pass (Kingma & Welling 2014, eq. 10): z = mu + exp(logvar / 2) * eps with
        ``eps`` (B, latent_dim) ~ N(0, I). Returns (reconstruction in [-1, 1], mu, logvar)."""
        c = self.cond(idx)
        mu, logvar = self.encoder(x, c)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decoder(z, c), mu, logvar


class VaeModel(SingleFileModel):
    """A loaded conditional VAE (implements the Generator protocol, plus :meth:`reconstruct`)."""

    family = FAMILY
    label = "VAE"
    build = staticmethod(lambda cfg: ConditionalVae(cfg))

    @torch.inference_mode()
    def generate(self, conditionings: list[Conditioning], seeds: list[int], params: GenerationParams) -> list[Image.Image]:
        """One RGB image per (conditioning, seed): z ~ N(0, I) from the seed's own torch.Generator
        (:func:`~catalog_render.generators.conditioning.latents`), decoded one image at a time at the
        native size (see :meth:`~catalog_render.generators.conditioning.SingleFileModel._one_by_one`), then
        resized (Lanczos) when ``params`` asks for another width/height."""
        if len(conditionings) != len(seeds):
            raise ValueError("one seed per conditioning is required")
        z = latents(seeds, self.cfg["latent_dim"]).to(self.device, self.dtype)
        idx = condition_indices(self.cfg, conditionings).to(self.device)
        images = to_pil(self._one_by_one(self.net.decode, z, idx))
        used = self.params_used(params)
        if (used["width"], used["height"]) != self.native_size:
            images = [im.resize((used["width"], used["height"]), Image.Resampling.LANCZOS) for im in images]
        return images

    @torch.inference_mode()
    def reconstruct(self, images: list[Image.Image], conditionings: list[Conditioning] | None = None) -> list[Image.Image]:
        """Encode each photo and decode its posterior mean mu (no sampling, deterministic): RGB
        images at the native size (width, height). Photos of another size are letterboxed on white
        to the native size first, as training photos are (:func:`catalog_render.imaging.letterbox`).
        ``conditionings`` (one per image) condition encoder and decoder; None = every field
        "unknown" (index 0, which training covers through condition dropout)."""
        if not images:
            return []
        if conditionings is not None and len(conditionings) != len(images):
            raise ValueError("one conditioning per image is required")
        w, h = self.native_size
        arrays = [imaging.to_array(im if im.size == (w, h) else imaging.letterbox(imaging.to_rgb(im), w, h)) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if conditionings is None:
            idx = torch.zeros((len(images), len(self.cfg["conditions"])), dtype=torch.int64)
        else:
            idx = condition_indices(self.cfg, conditionings)
        x, idx = x.to(self.device, self.dtype), idx.to(self.device)
        return to_pil(self._one_by_one(lambda xi, ii: self.net.decode(self.net.encode(xi, ii)[0], ii), x, idx))


#: Registry entry point (see :meth:`~catalog_render.generators.conditioning.SingleFileModel.load_dir`).
load_dir = VaeModel.load_dir