"""Conditional GAN generator (DCGAN-style, conditional batch norm, projection discriminator).

Architecture: Radford et al. 2016 (DCGAN) upsampling generator whose batch norms are conditional
(scale/shift predicted from the class embeddings, de Vries et al. 2017 / BigGAN), trained against a
spectrally normalised projection discriminator (Miyato & Koyama 2018) with the hinge loss; inference
uses an exponential moving average of the generator weights (Karras et al. 2018).

Conditioning: one embedding table per conditioning field (e.g. ``category``, ``attributes.color``,
``attributes.gender``), listed in order in config.json as ``conditions: [{"field", "values"}]``;
index 0 of each table is "unknown", used for values the model never saw.

A model directory holds ``config.json``, ``model.safetensors`` (the EMA generator) and
``model_card.json``.
"""

from __future__ import annotations

import json

import torch
from PIL import Image
from torch import nn

from catalog_render import storage
from catalog_render.errors import ModelError
from catalog_render.generators.base import Conditioning, GenerationParams
from catalog_render.generators.conditioning import (  # noqa: F401
    SingleFileModel,  # noqa: F401  (re-exported: the GAN's public names)
    REQUIRED_FIELDS,
    UNKNOWN,
    ConditionEncoder,
    condition_indices,
    conditioning_problem,
    latents,
    to_pil,
)

FAMILY = "gan"


class CondBatchNorm(nn.Module):
    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Linear(cond_dim, channels)
        self.beta = nn.Linear(cond_dim, channels)
        nn.init.zeros_(self.gamma.weight)
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gamma(c)[:, :, None, None] + self.beta(c)[:, :, None, None]


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.norm = CondBatchNorm(cin, cond_dim)
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x, c):
        x = torch.relu(self.norm(x, c))
        return self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class GanGenerator(nn.Module):
    """z (B, z_dim) float32 + condition indices (B, F) -> images (B, 3, H, W) in [-1, 1]."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        h, w = cfg["height"], cfg["width"]
        n_up = cfg.get("num_upsamples", 4)
        if h % 2**n_up or w % 2**n_up:
            raise ModelError(f"height/width must be multiples of {2**n_up}, got {h}x{w}")
        self.h0, self.w0 = h // 2**n_up, w // 2**n_up
        chans = [cfg["base_channels"] // 2**i for i in range(n_up + 1)]
        self.cond = ConditionEncoder([len(c["values"]) for c in cfg["conditions"]], cfg["embed_dim"])
        cdim = self.cond.out_dim + cfg["z_dim"]
        self.fc = nn.Linear(cdim, chans[0] * self.h0 * self.w0)
        self.blocks = nn.ModuleList(UpBlock(chans[i], chans[i + 1], cdim) for i in range(n_up))
        self.out_norm = nn.BatchNorm2d(chans[-1])
        self.out = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        c = torch.cat([z, self.cond(idx)], dim=1)
        x = self.fc(c).view(z.shape[0], -1, self.h0, self.w0)
        for b in self.blocks:
            x = b(x, c)
        return torch.tanh(self.out(torch.relu(self.out_norm(x))))


class GanModel(SingleFileModel):
    """A loaded conditional GAN generator (implements the Generator protocol)."""

    family = FAMILY
    label = "GAN"
    build = staticmethod(lambda cfg: GanGenerator(cfg))

    @torch.inference_mode()
    def generate_tensor(self, conditionings: list[Conditioning], seeds: list[int]) -> torch.Tensor:
        """The renders before quantisation: float (B, 3, H, W) in [-1, 1] at the native size, in the
        model's dtype, one forward pass per image (see :meth:`generate`). Raises ValueError when the
        lengths differ."""
        if len(conditionings) != len(seeds):
            raise ValueError("one seed per conditioning is required")
        z = latents(seeds, self.cfg["z_dim"]).to(self.device, self.dtype)
        idx = condition_indices(self.cfg, conditionings).to(self.device)
        return self._one_by_one(self.net, z, idx)

    @torch.inference_mode()
    def generate(self, conditionings: list[Conditioning], seeds: list[int], params: GenerationParams) -> list[Image.Image]:
        """One RGB image per (conditioning, seed): z from the seed's own torch.Generator
        (:func:`~catalog_render.generators.conditioning.latents`), one forward pass per image
        (:meth:`~catalog_render.generators.conditioning.SingleFileModel._one_by_one`: the pixels do
        not depend on the batch; batch norm uses its running statistics in eval mode), at the
        native size, resized (Lanczos) when ``params`` asks for another width/height."""
        images = to_pil(self.generate_tensor(conditionings, seeds))
        used = self.params_used(params)
        if (used["width"], used["height"]) != self.native_size:
            images = [im.resize((used["width"], used["height"]), Image.Resampling.LANCZOS) for im in images]
        return images


def load(model_uri: str, device: str = "cpu", dtype=torch.float32) -> GanModel:
    """Load a GAN model directory (config.json + model.safetensors). Raises ModelError when a
    file is missing, the weights are not safetensors (a pickle checkpoint is named and never
    read), or they do not match the config."""
    from catalog_render.generators.weights import read_safetensors

    try:
        raw = storage.read_bytes(storage.join(model_uri, "config.json"))
    except storage.ObjectNotFound:
        raise ModelError(f"model directory {model_uri} has no config.json") from None
    blob = read_safetensors(model_uri, "model.safetensors")
    return GanModel.from_bytes(json.loads(raw), raw, blob, device=device, dtype=dtype, source=storage.join(model_uri, "model.safetensors"))


#: GenerationParams fields (besides the size) that change a GAN's pixels: none, one forward pass.
PARAMS_USED: tuple[str, ...] = ()


#: Registry entry point (see :meth:`~catalog_render.generators.conditioning.SingleFileModel.load_dir`).
load_dir = GanModel.load_dir


def config_json(cfg: dict) -> bytes:
    return json.dumps(cfg, indent=2, ensure_ascii=False).encode()
