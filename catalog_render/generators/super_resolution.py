"""A learned super-resolution stage and the cascade that renders through it.

A model directory may hold, beside its base generator (``config.json`` + ``model.safetensors``), a
super-resolution stage in ``sr/``: ``sr/config.json`` (``{"family": "sr", "scale": 4, ...}``),
``sr/model.safetensors`` and ``sr/model_card.json``, trained on the catalog's own photos by
:mod:`catalog_render.training.sr_trainer` (``catalog-render train-sr``). The registry then loads the
directory as a :class:`CascadeModel`: the base renders at its native size (e.g. 64x48 px), the stage
turns each render into ``scale`` times the pixels (256x192 px), one image at a time, so an image
never depends on its batch. The cascade's identity (``model_id``) covers the base's identity and the
stage's config and weights, so the render key changes when either does.

The network (:class:`SRNet`) predicts the residual over a bicubic upscale of its input: a 3x3
convolution, ``blocks`` residual blocks (conv-ReLU-conv) at the input size, then ``log2(scale)``
steps of nearest-neighbour x2 + 3x3 convolution + leaky ReLU, and a 3x3 convolution to RGB
(EDSR-style body without batch norm, Lim et al. 2017; upsampling by resize-convolution, Odena et al.
2016). Images are float (B, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

import json
import math
import os

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load as load_safetensors_bytes
from torch import nn

from catalog_render import storage
from catalog_render.errors import ModelError
from catalog_render.generators.base import GenerationParams, check_finite, hash_files

#: Sub-directory of a model directory that holds the stage.
STAGE_DIR = "sr"
FAMILY = "sr"


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


class SRNet(nn.Module):
    """images (B, 3, h, w) float32 in [-1, 1] -> (B, 3, h*scale, w*scale) in [-1, 1] (clamped).

    ``cfg``: ``scale`` (a power of two, 2..8), ``channels``, ``blocks``. Raises ModelError for a
    scale that is not a power of two."""

    def __init__(self, cfg: dict):
        super().__init__()
        scale, c = int(cfg["scale"]), int(cfg["channels"])
        if scale < 2 or scale > 8 or scale & (scale - 1):
            raise ModelError(f"scale must be 2, 4 or 8, got {scale}")
        self.scale = scale
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*[_Residual(c) for _ in range(int(cfg["blocks"]))], nn.Conv2d(c, c, 3, padding=1))
        self.ups = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(int(math.log2(scale))))
        self.tail = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        h = self.head(x)
        h = h + self.body(h)
        for up in self.ups:
            h = F.leaky_relu(up(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
        return (base + self.tail(h)).clamp(-1, 1)


def pil_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """RGB Pillow images of one size -> float32 (B, 3, H, W) in [-1, 1]."""
    import numpy as np

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """float (B, 3, H, W) in [-1, 1] -> RGB Pillow images (rounded to uint8 [0, 255])."""
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


class SuperResolutionStage:
    """A loaded ``sr/`` stage: ``cfg`` (parsed sr/config.json), the network in eval mode, and
    ``stage_id`` (16 hex digits over sr/config.json and sr/model.safetensors)."""

    def __init__(self, cfg: dict, config_bytes: bytes, weights: bytes, source: str, device: str = "cpu", dtype=torch.float32):
        if cfg.get("family") != FAMILY:
            raise ModelError(f"{source}: sr/config.json family must be {FAMILY!r}, got {cfg.get('family')!r}")
        try:
            state = load_safetensors_bytes(weights)
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise ModelError(f"{source} is not a valid safetensors file ({exc})") from None
        check_finite(state, source)
        try:
            self.net = SRNet(cfg)
            self.net.load_state_dict(state, strict=True)
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: invalid sr config ({type(exc).__name__}: {exc})") from None
        except RuntimeError as exc:
            detail = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
            raise ModelError(f"{source}: weights do not match sr/config.json (channels, blocks, scale): "
                             f"{detail[0] if detail else str(exc).splitlines()[0]}") from None
        self.net = self.net.to(device, dtype).eval()
        self.cfg = cfg
        self.device, self.dtype = device, dtype
        self.stage_id = hash_files([("sr/config.json", config_bytes), ("sr/model.safetensors", weights)])

    @property
    def scale(self) -> int:
        return int(self.cfg["scale"])

    @property
    def input_blur_sigma(self) -> float:
        """Gaussian blur (pixels of the input, Pillow's ``GaussianBlur`` radius = standard deviation)
        applied to each input before the network: a fixed level of the conditioning augmentation
        the stage was trained with (Ho et al. 2021 sample with a fixed augmentation level), which
        smooths a generator's upsampling checkerboard instead of sharpening it. 0 = none."""
        return float(self.cfg.get("input_blur_sigma", 0.0))

    @torch.inference_mode()
    def upscale(self, images: list[Image.Image]) -> list[Image.Image]:
        """Each RGB image (any size) to ``scale`` times its width and height, one at a time (the
        pixels do not depend on the batch), after :attr:`input_blur_sigma`."""
        from PIL import ImageFilter

        out = []
        for im in images:
            if self.input_blur_sigma > 0:
                im = im.convert("RGB").filter(ImageFilter.GaussianBlur(self.input_blur_sigma))
            x = pil_to_tensor([im]).to(self.device, self.dtype)
            out += tensor_to_pil(self.net(x).float())
        return out


def read_stage(model_uri: str, device: str = "cpu", dtype=torch.float32) -> SuperResolutionStage | None:
    """The ``sr/`` stage of a model directory, or None when it has none. Raises ModelError when
    sr/config.json exists but is not JSON, its weights are missing, not safetensors, non-finite or do
    not match."""
    from catalog_render.generators.weights import read_safetensors

    cfg_uri = storage.join(model_uri, STAGE_DIR, "config.json")
    try:
        raw = storage.read_bytes(cfg_uri)
    except storage.ObjectNotFound:
        stage_dir = storage.join(model_uri, STAGE_DIR)
        if (not storage.is_s3(stage_dir) and os.path.isdir(stage_dir)) or storage.list_uris(stage_dir):
            raise ModelError(f"{stage_dir} exists but has no config.json: a damaged or half-written super-resolution stage "
                             "(retrain it with `catalog-render train-sr`, or remove sr/ to render at the base's size)") from None
        return None
    try:
        cfg = json.loads(raw)
    except ValueError as exc:
        raise ModelError(f"{cfg_uri} is not valid JSON ({exc})") from None
    blob = read_safetensors(storage.join(model_uri, STAGE_DIR), "model.safetensors")
    return SuperResolutionStage(cfg, raw, blob, storage.join(model_uri, STAGE_DIR, "model.safetensors"), device=device, dtype=dtype)


class CascadeModel:
    """A base generator followed by a super-resolution stage (implements the Generator protocol).

    ``generate`` renders each (conditioning, seed) with the base at its native size, upscales it
    with the stage (``scale`` x), and resizes (Lanczos) only when ``params`` asks for a size other
    than the cascade's native one. Everything else (vocabulary, conditioning checks, config) is the
    base's. ``model_id`` = :func:`hash_files` over the base's model_id and the stage's id."""

    def __init__(self, base, stage: SuperResolutionStage):
        self.base = base
        self.stage = stage
        self.family = base.family
        self.model_id = hash_files([("base", base.model_id.encode()), ("sr", stage.stage_id.encode())])

    def __getattr__(self, name):  # config, cfg, conditions, label... of the base
        return getattr(self.__dict__["base"], name)

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) in pixels: the base's native size times the stage's scale."""
        w, h = self.base.native_size
        return w * self.stage.scale, h * self.stage.scale

    def params_used(self, params: GenerationParams) -> dict:
        used = dict(self.base.params_used(params))
        w, h = self.native_size
        used.update({"width": params.width or w, "height": params.height or h})
        return used

    def conditioning_problem(self, conditioning):
        return self.base.conditioning_problem(conditioning)

    def generate(self, conditionings, seeds, params: GenerationParams) -> list[Image.Image]:
        native = GenerationParams(**{**params.__dict__, "width": None, "height": None})
        images = self.stage.upscale(self.base.generate(conditionings, seeds, native))
        size = (params.width or images[0].width, params.height or images[0].height) if images else None
        if images and size != images[0].size:
            images = [im.resize(size, Image.Resampling.LANCZOS) for im in images]
        return images
