"""Rendering design variations with a trained generator, and laying them out on a design sheet.

Pure functions over a loaded generator and Pillow images (no Ray), used by the ``design`` kind's
actor (:mod:`catalog_render.kinds.design`).

A variation is a dict: ``{"index": k, "mode": "sweep", "field": f, "value": v}`` (the product's
conditioning with field ``f`` set to ``v``, the latent of the product's seed) or ``{"index": k,
"mode": "walk", "t": t, "end_seed": s}`` (the product's conditioning, the latent
``slerp(z(seed), z(end_seed), t)``). ``{"mode": "base"}`` is the product itself (its own
conditioning and latent: the image ``--kind render`` makes, before its quality gate and preset).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from catalog_render.errors import ModelError
from catalog_render.generators.base import Conditioning, GenerationParams

#: Families whose latent the design kind can set directly (a walk needs it): the GAN's z and the
#: VAE's z are both N(0, I) vectors drawn by :func:`catalog_render.generators.conditioning.latents`.
LATENT_FAMILIES = ("gan", "vae")
#: Tiles per row of the design sheet.
COLUMNS = 6
BACKGROUND = (255, 255, 255)
INK = (34, 34, 34)
MUTED = (110, 110, 110)


def with_value(base: Conditioning, field: str, value: str) -> Conditioning:
    """``base`` with one conditioning field (``category`` or ``attributes.<name>``) set to ``value``."""
    if field == "category":
        return Conditioning(title=base.title, category=value, attributes=dict(base.attributes), prompt=base.prompt)
    name = field[len("attributes."):]
    return Conditioning(title=base.title, category=base.category, attributes={**base.attributes, name: value}, prompt=base.prompt)


def conditioning_of(base: Conditioning, variation: dict) -> Conditioning:
    """The conditioning a variation is rendered with (a sweep's value set; else the product's)."""
    return with_value(base, variation["field"], variation["value"]) if variation["mode"] == "sweep" else base


def slerp(z0: np.ndarray, z1: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation (Shoemake 1985) between two latents, float64 (D,): the path
    White (2016, "Sampling Generative Networks") recommends for Gaussian latents, since a straight
    line passes through norms the generator never saw in training. t=0 gives ``z0`` exactly, t=1
    ``z1``; nearly parallel latents (angle < 1e-6 rad) fall back to a straight line."""
    a, b = np.asarray(z0, dtype=np.float64), np.asarray(z1, dtype=np.float64)
    if t == 0:
        return a.copy()
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    omega = math.acos(max(-1.0, min(1.0, cos)))
    if omega < 1e-6:
        return (1 - t) * a + t * b
    return (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)


def latent_dim(generator) -> int:
    """The latent size of a :data:`LATENT_FAMILIES` model (ModelError for another family)."""
    if generator.family not in LATENT_FAMILIES:
        raise ModelError(f"a latent walk needs a {' or '.join(LATENT_FAMILIES)} model; this one is {generator.family}")
    return int(generator.config.get("z_dim") or generator.config["latent_dim"])


def render_variations(generator, base: Conditioning, variations: list[dict], seed: int, params: GenerationParams) -> list[Image.Image]:
    """One RGB image per variation, in order (see the module doc). Sweeps and the base go through
    ``generator.generate`` with the product's seed for every image, so they share its latent
    exactly; walks decode ``slerp`` latents through the network the family's ``generate`` uses
    (the GAN's generator, the VAE's decoder), one image at a time as ``generate`` does, then a
    cascade's super-resolution stage, so a walk at t=0 is the product's render bit for bit. Raises ModelError for a walk on another family."""
    import torch

    from catalog_render.generators.conditioning import condition_indices, latents, to_pil

    out: list[Image.Image | None] = [None] * len(variations)
    direct = [i for i, v in enumerate(variations) if v["mode"] != "walk"]
    if direct:
        images = generator.generate([conditioning_of(base, variations[i]) for i in direct], [seed] * len(direct), params)
        for i, im in zip(direct, images):
            out[i] = im
    walks = [i for i, v in enumerate(variations) if v["mode"] == "walk"]
    if walks:
        dim = latent_dim(generator)
        z0 = latents([seed], dim)[0].double().numpy()
        zs = [slerp(z0, latents([variations[i]["end_seed"]], dim)[0].double().numpy(), variations[i]["t"]) for i in walks]
        z = torch.from_numpy(np.stack(zs)).to(generator.device, generator.dtype)
        idx = condition_indices(generator.config, [base] * len(walks)).to(generator.device)
        net = generator.net if generator.family == "gan" else generator.net.decode
        with torch.inference_mode():
            images = to_pil(generator._one_by_one(net, z, idx))
        stage = getattr(generator, "stage", None)  # a cascade: its super-resolution stage, as its generate() does
        if stage is not None:
            images = stage.upscale(images)
        size = tuple(generator.params_used(params)[k] for k in ("width", "height"))
        for i, im in zip(walks, images):
            out[i] = im if im.size == size else im.resize(size, Image.Resampling.LANCZOS)
    return out


def label(variation: dict) -> str:
    """A tile's caption: ``Red`` (a sweep's value), ``t = 0.40`` (a walk), ``as catalogued`` (the base)."""
    if variation["mode"] == "sweep":
        return str(variation["value"])
    if variation["mode"] == "walk":
        return f"t = {variation['t']:.2f}"
    return "as catalogued"


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped inside matplotlib, a dependency: no system font needed) at ``size`` px."""
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)


def fit(text: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """``text`` shortened with an ellipsis (whole characters) to fit ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def compose_sheet(base_image: Image.Image, images: list[Image.Image], captions: list[str], title: str, subtitle: str,
                  tile_px: int = 192) -> Image.Image:
    """The design sheet: a header (``title``, ``subtitle``), then the product's own render
    (captioned ``as catalogued``, framed) followed by the variations with their ``captions``, in
    rows of :data:`COLUMNS`, each tile ``tile_px`` high (Lanczos) on white. Returns an RGB image
    of width ``COLUMNS * (tile width + 16) + 16`` (tile width from the images' aspect ratio)."""
    if len(images) != len(captions):
        raise ValueError("one caption per image is required")
    w0, h0 = base_image.size
    tw = max(1, round(tile_px * w0 / h0))
    gap, cap_h, head_h = 16, 28, 64
    tiles = [base_image, *images]
    caps = ["as catalogued", *captions]
    cols = min(COLUMNS, len(tiles))
    rows = -(-len(tiles) // cols)
    width = gap + cols * (tw + gap)
    sheet = Image.new("RGB", (max(width, 360), head_h + rows * (tile_px + cap_h + gap) + gap), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    big, small = _font(20), _font(14)
    draw.text((gap, 12), fit(title, big, sheet.width - 2 * gap), font=big, fill=INK)
    draw.text((gap, 40), fit(subtitle, small, sheet.width - 2 * gap), font=small, fill=MUTED)
    for k, (im, cap) in enumerate(zip(tiles, caps)):
        x = gap + (k % cols) * (tw + gap)
        y = head_h + (k // cols) * (tile_px + cap_h + gap)
        sheet.paste(im.convert("RGB").resize((tw, tile_px), Image.Resampling.LANCZOS), (x, y))
        if k == 0:
            draw.rectangle((x - 3, y - 3, x + tw + 2, y + tile_px + 2), outline=MUTED, width=2)
        text = fit(cap, small, tw)
        draw.text((x + (tw - small.getlength(text)) / 2, y + tile_px + 6), text, font=small, fill=INK if k else MUTED)
    return sheet
