"""A product's picture on white at a fixed tile size, for comparison and label images.

The main-image machinery (catalog_render.kinds.photo, main_image): the photo's U²-Net-p mask is
judged with the job's ``[photos]`` thresholds; a product the judge accepts (or worn apparel whose
model is cut at one edge: anchored to it) is composited on pure white and scaled so its visible
part spans ``fill`` of the tile (Lanczos; no Real-ESRGAN pass: tiles are small). A photo the judge
would leave alone as a main image (several products, cut by the frame, no salient product) is
shown whole instead, fitted inside the tile on white, and the note says why.

Two steps, so a comparison can size its tiles to its members before placing them:
:func:`cut_out` (mask and judge once) and :meth:`CutOut.place` (onto a canvas).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from catalog_render.config import JobSpec
from catalog_render.kinds import photo
from catalog_render.kinds.main_image import anchor_edge

METHOD = "u2netp-mask+white+lanczos"


def fit_whole(image: Image.Image, canvas: tuple[int, int], margin: float = 0.04) -> Image.Image:
    """``image`` scaled (Lanczos) to fit ``canvas`` (width, height) less ``margin`` on each side,
    centred on white."""
    w, h = canvas
    scale = min(w * (1 - 2 * margin) / image.width, h * (1 - 2 * margin) / image.height)
    im = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    out = Image.new("RGB", canvas, (255, 255, 255))
    out.paste(im, ((w - im.width) // 2, (h - im.height) // 2))
    return out


@dataclass
class CutOut:
    """A product ready to place: ``image`` (RGB), ``alpha`` (float32 (H, W) opacity, None: show the
    image whole), ``box`` (left, top, right, bottom of the product), ``anchor`` (edge the product
    is flush with, or None), ``note`` (why the photo is shown whole, or None)."""

    image: Image.Image
    alpha: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    anchor: str | None = None
    note: str | None = None

    @property
    def aspect(self) -> float:
        """Height / width of what is placed (the product's box, or the whole image)."""
        left, top, right, bottom = self.box or (0, 0, self.image.width, self.image.height)
        return (bottom - top) / max(1, right - left)

    def place(self, canvas: tuple[int, int], fill: float) -> Image.Image:
        """The RGB tile of size ``canvas`` (width, height): the product on white spanning ``fill``."""
        if self.alpha is None:
            return fit_whole(self.image, canvas)
        out, _ = photo.place_on_canvas(self.image, self.alpha, self.box, canvas, fill, anchor=self.anchor)
        return out


def cut_out(image: Image.Image, masker, spec: JobSpec, category: str | None, title: str | None) -> CutOut:
    """Mask ``image`` with ``masker`` (catalog_render.pretrained.mask.ProductMasker) and judge the
    mask with the job's ``[photos]`` rules (module doc)."""
    ps = spec.photos
    prob = masker.mask(image)
    verdict = photo.judge_mask(prob, threshold=ps.mask_threshold, min_share=ps.min_mask_share, max_share=ps.max_mask_share,
                               min_component_share=ps.min_component_share, max_edge_touch=ps.max_edge_touch,
                               pairs_allowed=photo.is_pair_product(category, title))
    anchor = None
    if verdict.reason and verdict.reason.startswith("product cut") and ps.anchor_worn:
        anchor = anchor_edge(category, verdict.edges, ps.max_edge_touch)
    if verdict.reason and not anchor:
        return CutOut(image.convert("RGB"), note=f"photo shown whole: {verdict.reason}")
    return CutOut(image, photo.soft_alpha(prob, verdict.mask), photo.mask_box(verdict.mask), anchor)


def product_tile(image: Image.Image, masker, spec: JobSpec, category: str | None, title: str | None, canvas: tuple[int, int],
                 fill: float) -> tuple[Image.Image, str | None]:
    """(RGB tile of size ``canvas``, note or None): :func:`cut_out` then :meth:`CutOut.place`."""
    cut = cut_out(image, masker, spec, category, title)
    return cut.place(canvas, fill), cut.note
