"""Marketplace presets: the image rules of Amazon, Google Merchant Center, eBay, Shopify and Walmart as data,
an evaluator, and the Pillow post-processing and export each preset implies.

A preset is a table of :class:`Rule` rows, each naming the measurement it tests (see
:func:`measure`), the threshold, and the page it comes from. ``required`` rules decide the verdict;
recommendations are reported as ``advisories``; rules that cannot be measured from pixels (no text
or watermark) are listed as ``unchecked`` so nobody mistakes a pass for a full review.

Sources (the marketplaces' own help pages, as published in 2026):

- Amazon Seller Central, "Product image requirements": main image on a pure white background
  (RGB 255,255,255); the product fills 85 % or more of the image frame; 1,000 px or more on the
  longest side enables zoom; no text, logos, borders, colour blocks or watermarks. Amazon Seller
  Central, "Image guidelines for clothing": MAIN images shot on a model, on pure white, showing the
  product completely (the model may be cut by the frame: ``amazon.white_background_apparel``).
- Google Merchant Center Help, "Image link [image_link]": at least 100 x 100 px (250 x 250 px for
  apparel); from 31 January 2027 at least 500 x 500 px for every product (announced on that page);
  1,500 x 1,500 px recommended; no borders, watermarks or promotional overlays. Google Merchant
  Center Help, "Requirements for AI-generated content": AI-generated images must carry the IPTC
  DigitalSourceType ``trainedAlgorithmicMedia`` metadata (see :mod:`catalog_render.quality.provenance`).
- eBay, "Picture policy": at least 500 px on the longest side; no added borders, no added text,
  artwork or marketing material, no watermarks; photos must accurately represent the item.
- Shopify Help Center, "Product media types" (images): square 2048 x 2048 px recommended;
  product zoom in themes needs about 800 x 800 px or more.
- Walmart Marketplace Learn, "Product detail page: Image guidelines & requirements" (file type
  requirements): 2200 x 2200 px, at least 1500 x 1500 px for zoom, aspect ratio 1:1 (square),
  seamless white background (255/255/255 RGB), RGB colour, 8 bits per channel, JPEG/PNG/BMP, 5 MB
  or less.

Upscaling: renders are small (the GAN makes 64x48 px). A preset whose canvas is at least
:data:`SUPER_RESOLUTION_MIN_SIDE` px (Amazon, Google, Shopify, Walmart) is meant to show real
pixels there, so :func:`postprocess` takes an ``upscaler`` (Real-ESRGAN,
:class:`catalog_render.pretrained.upscale.Upscaler`) that enlarges the render by whole passes
before the final Lanczos resize to the exact canvas. Without one (``quality.upscaler = "lanczos"``,
and for eBay's 500 px) Lanczos alone resizes the render: the file passes the size rule but is as
blurry as its source. Which Real-ESRGAN model and how many passes is measured in
``benchmarks/upscalers.py`` (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import io
import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from catalog_render.imaging import to_rgb
from catalog_render.quality import checks, scores
from catalog_render.quality.provenance import ProvenanceMetadata, save_with_provenance
from catalog_render.quality.backdrop import backdrop_whiteness

PresetName = Literal["amazon", "google", "ebay", "shopify", "walmart", "none"]
PRESET_NAMES: tuple[str, ...] = ("amazon", "google", "ebay", "shopify", "walmart", "none")
#: Presets whose canvas has a side of at least this many pixels are upscaled with Real-ESRGAN
#: (``quality.upscaler = "auto"``): the marketplaces' zoom and recommended sizes (Amazon 1000,
#: Google 1500, Shopify 2048, Walmart 2200); eBay's 500 px minimum stays with Lanczos.
SUPER_RESOLUTION_MIN_SIDE = 1000

#: Pure white of the marketplaces' main-image background, sRGB.
WHITE = (255, 255, 255)
#: A background pixel counts as white when every channel is >= this. Amazon asks for exactly
#: 255,255,255, but a JPEG of a pure-white background is not exactly 255 everywhere: of the 2,187
#: IKEA cut-outs of ../shared/data, 64 % have pixels below 255 in their outer 5 % band (JPEG
#: ringing near the product), while at least 99.9 % of that band is >= 250 in every photo, and the
#: outer 1 % band the rule measures is >= 250 in all of them. 250 (2 % below full scale) absorbs
#: that quantisation noise; a light-grey backdrop (fashion ids 1xxx: about 200) stays far below.
WHITE_TOLERANCE_LEVEL = 250
#: Outer band measured for the white-background rule: 1 % of each side (at least 1 px).
WHITE_BAND_FRACTION = 0.01

_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class Rule:
    """One marketplace rule: ``measurements[measurement] <op> value``.

    ``required`` False = a recommendation (reported, never fails the verdict); ``apparel`` True /
    False = applies only to apparel / only to non-apparel (None: always); ``effective_from`` = the
    rule applies from that date on; ``measurement`` None = cannot be measured from pixels (listed as
    unchecked). ``value`` None with op ``!=`` means "must not be False" (None passes: no verdict)."""

    id: str
    description: str
    measurement: str | None
    op: Literal[">=", "<=", "==", "!="] = ">="
    value: float | bool | None = None
    source: str = ""
    required: bool = True
    apparel: bool | None = None
    effective_from: date | None = None


@dataclass(frozen=True)
class Preset:
    """A marketplace's rules and what producing an image for it implies.

    ``size`` = the canvas (width, height) :func:`postprocess` produces, pixels (None: keep size):
    the size the marketplace's page recommends where it gives one (Amazon 1000 for zoom, Google
    1500, Shopify 2048, Walmart 2200), else its minimum (eBay 500), always square; ``fill`` = share of the frame
    the product (with its faint shadow) is re-framed to span (Amazon 0.92: a margin over its 85 %
    rule, since the shadow is not product; None: no refit); ``format`` = default export format; ``thumbnails`` = longest sides of extra renditions;
    ``requires_ai_label`` = export refuses to write without provenance metadata."""

    name: str
    title: str
    rules: tuple[Rule, ...]
    size: tuple[int, int] | None = None
    fill: float | None = None
    format: Literal["JPEG", "PNG", "WEBP"] = "JPEG"
    thumbnails: tuple[int, ...] = (256,)
    requires_ai_label: bool = False

    @property
    def super_resolution(self) -> bool:
        """True when the canvas has a side >= :data:`SUPER_RESOLUTION_MIN_SIDE` px: the render is
        upscaled with Real-ESRGAN (unless the job says ``quality.upscaler = "lanczos"``)."""
        return self.size is not None and max(self.size) >= SUPER_RESOLUTION_MIN_SIDE


AMAZON_PAGE = 'Amazon Seller Central, "Product image requirements"'
AMAZON_CLOTHING_PAGE = 'Amazon Seller Central, "Image guidelines for clothing"'
GOOGLE_PAGE = 'Google Merchant Center Help, "Image link [image_link]"'
GOOGLE_AI_PAGE = 'Google Merchant Center Help, "Requirements for AI-generated content"'
EBAY_PAGE = 'eBay, "Picture policy"'
SHOPIFY_PAGE = 'Shopify Help Center, "Product media types"'
WALMART_PAGE = 'Walmart Marketplace Learn, "Product detail page: Image guidelines & requirements"'

_COLOUR_NOTE = (" Measured as colour_match (dominant product colour vs the catalog colour, ΔE00 <= 25): a coarse"
                " proxy that accepts ~61 % of real photos under their own colour (17 % under a wrong one), hence advisory only.")

PRESETS: dict[str, Preset] = {
    "amazon": Preset(
        name="amazon",
        title="Amazon main image",
        size=(1000, 1000),
        fill=0.92,
        format="JPEG",
        rules=(
            Rule("amazon.white_background", "Background is pure white (RGB 255,255,255)", "edge_whiteness", ">=", 0.99,
                 f"{AMAZON_PAGE}: main image background must be pure white, RGB 255,255,255. Measured: share of the outer"
                 f" 1 % band with every channel >= {WHITE_TOLERANCE_LEVEL} (JPEG tolerance), at least 99 %.", apparel=False),
            Rule("amazon.white_background_apparel", "Apparel: background pure white, model may run off the top or bottom edge",
                 "backdrop_whiteness", ">=", 0.99,
                 f"{AMAZON_CLOTHING_PAGE}: MAIN images shot on a model, on pure white background, showing the product"
                 " completely, without any part clipped: the model, not the product, may be cut by the frame. Measured"
                 f" like amazon.white_background, not counting where the subject crosses the top or bottom band"
                 " (quality.backdrop.backdrop_whiteness).", apparel=True),
            Rule("amazon.fill_85", "Product fills at least 85 % of the frame", "frame_fill", ">=", 0.85,
                 f"{AMAZON_PAGE}: the product should fill 85 % or more of the image frame. Measured as the product's"
                 " bounding box span in its longer relative direction (checks.frame_fill)."),
            Rule("amazon.zoom_1000", "Longest side at least 1000 px (zoom)", "longest_side", ">=", 1000,
                 f"{AMAZON_PAGE}: 1,000 px or larger on the longest side enables zoom."),
            Rule("amazon.no_border", "No added border", "border_present", "==", False,
                 f"{AMAZON_PAGE}: no borders or colour blocks on the main image (checks.detect_border)."),
            Rule("amazon.no_text_watermark", "No text, logos or watermarks", None, source=f"{AMAZON_PAGE}: no text, logos or watermarks."),
            Rule("amazon.accurate_colour", "Colour matches the catalog", "colour_match", "!=", False,
                 f"{AMAZON_PAGE}: the image must accurately represent the product." + _COLOUR_NOTE, required=False),
            Rule("amazon.square", "Square (1:1) image", "aspect_ratio", "==", 1.0,
                 f"{AMAZON_PAGE}: square images are recommended.", required=False),
        ),
    ),
    "google": Preset(
        name="google",
        title="Google Merchant Center",
        size=(1500, 1500),
        fill=None,
        format="JPEG",
        requires_ai_label=True,
        rules=(
            Rule("google.min_100", "At least 100 x 100 px", "shortest_side", ">=", 100,
                 f"{GOOGLE_PAGE}: non-apparel images at least 100 x 100 px.", apparel=False),
            Rule("google.min_250_apparel", "Apparel: at least 250 x 250 px", "shortest_side", ">=", 250,
                 f"{GOOGLE_PAGE}: apparel images at least 250 x 250 px.", apparel=True),
            Rule("google.min_500_2027", "At least 500 x 500 px (from 2027-01-31)", "shortest_side", ">=", 500,
                 f"{GOOGLE_PAGE}: from 31 January 2027 all product images at least 500 x 500 px.",
                 effective_from=date(2027, 1, 31)),
            Rule("google.recommended_1500", "1500 x 1500 px or more", "shortest_side", ">=", 1500,
                 f"{GOOGLE_PAGE}: 1,500 x 1,500 px or more recommended.", required=False),
            Rule("google.no_border", "No border", "border_present", "==", False, f"{GOOGLE_PAGE}: no borders."),
            Rule("google.no_overlay", "No watermark or promotional overlay", None,
                 source=f"{GOOGLE_PAGE}: no watermarks, promotional text or overlays."),
            Rule("google.ai_label", "AI-generated images carry IPTC DigitalSourceType trainedAlgorithmicMedia", None,
                 source=f"{GOOGLE_AI_PAGE}: AI-generated images must contain the IPTC DigitalSourceType TrainedAlgorithmicMedia"
                 " metadata. Enforced by export(), which refuses to write this preset without provenance metadata."),
            Rule("google.accurate_colour", "Colour matches the catalog", "colour_match", "!=", False,
                 f"{GOOGLE_PAGE}: the image must accurately display the product." + _COLOUR_NOTE, required=False),
        ),
    ),
    "ebay": Preset(
        name="ebay",
        title="eBay listing photo",
        size=(500, 500),
        fill=None,
        format="JPEG",
        rules=(
            Rule("ebay.min_500", "Longest side at least 500 px", "longest_side", ">=", 500,
                 f"{EBAY_PAGE}: photos must be at least 500 pixels on the longest side."),
            Rule("ebay.no_border", "No added border", "border_present", "==", False, f"{EBAY_PAGE}: photos with added borders are not allowed."),
            Rule("ebay.no_text", "No added text, artwork or watermark", None,
                 source=f"{EBAY_PAGE}: no added text, artwork, marketing material or watermarks."),
            Rule("ebay.accurate_colour", "Colour matches the catalog", "colour_match", "!=", False,
                 f"{EBAY_PAGE}: photos must accurately represent the item." + _COLOUR_NOTE, required=False),
        ),
    ),
    "shopify": Preset(
        name="shopify",
        title="Shopify product image",
        size=(2048, 2048),
        fill=None,
        format="JPEG",
        rules=(
            Rule("shopify.zoom_800", "At least 800 x 800 px (zoom)", "shortest_side", ">=", 800,
                 f"{SHOPIFY_PAGE}: images of 800 x 800 px or more for zoom."),
            Rule("shopify.square", "Square (1:1) image", "aspect_ratio", "==", 1.0,
                 f"{SHOPIFY_PAGE}: square images (2048 x 2048 px) recommended.", required=False),
            Rule("shopify.recommended_2048", "2048 x 2048 px", "shortest_side", ">=", 2048,
                 f"{SHOPIFY_PAGE}: 2048 x 2048 px recommended.", required=False),
        ),
    ),
    "walmart": Preset(
        name="walmart",
        title="Walmart Marketplace main image",
        size=(2200, 2200),
        fill=None,
        format="JPEG",
        rules=(
            Rule("walmart.white_background", "Seamless white background (255/255/255 RGB)", "edge_whiteness", ">=", 0.99,
                 f"{WALMART_PAGE}: background seamless white (255/255/255 RGB). Measured like Amazon's: share of the outer"
                 f" 1 % band with every channel >= {WHITE_TOLERANCE_LEVEL} (JPEG tolerance), at least 99 %."),
            Rule("walmart.zoom_1500", "At least 1500 x 1500 px (zoom)", "shortest_side", ">=", 1500,
                 f"{WALMART_PAGE}: minimum pixel dimensions for zoom 1500 x 1500 px."),
            Rule("walmart.square", "Square (1:1) image", "aspect_ratio", "==", 1.0, f"{WALMART_PAGE}: aspect ratio 1:1 (square)."),
            Rule("walmart.size_2200", "2200 x 2200 px", "shortest_side", ">=", 2200,
                 f"{WALMART_PAGE}: pixel dimensions 2200 x 2200 px.", required=False),
            Rule("walmart.accurate_colour", "Colour matches the catalog", "colour_match", "!=", False,
                 f"{WALMART_PAGE}: images must accurately represent the product." + _COLOUR_NOTE, required=False),
        ),
    ),
    "none": Preset(name="none", title="No marketplace", rules=(), size=None, fill=None, format="PNG", thumbnails=()),
}


#: Categories worn on the upper / lower body: a model cut at the bottom / top edge is not the garment cut.
UPPER_WORN = ("shirt", "tshirt", "t-shirt", "top", "kurta", "kurti", "tunic", "jacket", "blazer", "sweater", "sweatshirt", "vest",
              "camisole", "bra", "innerwear")
LOWER_WORN = ("short", "trouser", "jean", "track pant", "legging", "capri", "skirt", "brief", "trunk", "boxer")



def is_worn(category: str | None) -> bool:
    """True when ``category`` (a catalog category such as ``"Tshirts"``) is a garment worn on the
    upper or lower body (:data:`UPPER_WORN`, :data:`LOWER_WORN`, matched at a word start, case
    ignored). Such a product's images are judged by the presets' apparel rules (Amazon Seller
    Central, "Image guidelines for clothing": shot on a model, who may be cut by the frame), by
    every kind that judges a product image; ``quality.apparel = true`` applies them to every
    product of a job."""
    c = (category or "").lower()
    return any(re.search(rf"\b{w}", c) for w in UPPER_WORN + LOWER_WORN)


def get_preset(preset: str | Preset) -> Preset:
    """A Preset by name (``amazon|google|ebay|shopify|walmart|none``); a Preset is returned as is.
    Raises ValueError naming the valid names."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[str(preset).lower()]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r} (one of {', '.join(PRESET_NAMES)})") from None


# -------------------------------------------------------------------------------------- measure


def measure(image, colour: str | None = None) -> dict:
    """Every measurement a rule can name, for one image (Pillow image or RGB uint8 array).

    | key | meaning | unit / range |
    | --- | --- | --- |
    | width, height, longest_side, shortest_side | image size | pixels |
    | aspect_ratio | width / height | > 0 |
    | edge_whiteness | share of the outer 1 % band with every channel >= 250 | [0, 1] |
    | backdrop_whiteness | edge_whiteness not counting a subject crossing the top or bottom band (quality.backdrop) | [0, 1] |
    | backdrop_crossing | the edge that crossing was found at (``top`` / ``bottom``), else None | str |
    | background_rgb | median colour of the outermost 1-px frame | sRGB 0-255 |
    | frame_fill | product's bounding-box span, longer relative direction (checks.frame_fill) | [0, 1] |
    | box_area_ratio | product's bounding-box area / image area (cf. scores.fill_ratio) | [0, 1] |
    | border_present, border_width_px | checks.detect_border | bool, pixels |
    | clipped_highlights, clipped_shadows | checks.exposure over the product region | [0, 1] |
    | colourfulness | Hasler & Süsstrunk M over the product region | [0, ~180] |
    | colour_match, colour_delta_e, dominant_rgb | checks.colour_match (None: no verdict) | bool, ΔE00, sRGB |

    Size, whiteness and borders are measured on the image as given; the product region and colours
    on a copy of at most checks.ANALYSIS_MAX_SIDE pixels (ratios do not depend on scale; the copy's
    Lanczos edges make fills accurate to about 1 pixel of that copy per edge, ±0.008 at 256). The
    product region is checks.foreground_mask against pure white: what differs from white by ΔE00
    >= 10 is product (or non-white background).
    """
    a = checks.as_rgb_array(image)
    res = checks.resolution(a)
    border = checks.detect_border(a)
    backdrop = backdrop_whiteness(a, WHITE_TOLERANCE_LEVEL, WHITE_BAND_FRACTION)
    small = checks.analysis_copy(a)
    mask = checks.foreground_mask(small, background=WHITE)
    exp = checks.exposure(small, mask)
    cm = checks.colour_match(small, colour, mask=mask) if colour is not None else None
    return {
        "width": res.width,
        "height": res.height,
        "longest_side": res.longest_side,
        "shortest_side": res.shortest_side,
        "aspect_ratio": res.aspect_ratio,
        "edge_whiteness": scores.background_whiteness(a, WHITE_TOLERANCE_LEVEL, WHITE_BAND_FRACTION),
        "backdrop_whiteness": backdrop.whiteness,
        "backdrop_crossing": backdrop.crossing,
        "background_rgb": list(checks.background_colour(a)),
        "frame_fill": checks.frame_fill(mask),
        "box_area_ratio": checks.box_area_ratio(mask),
        "border_present": border.present,
        "border_width_px": border.width_px,
        "clipped_highlights": exp.clipped_highlights,
        "clipped_shadows": exp.clipped_shadows,
        "colourfulness": checks.colourfulness(small, mask) if mask.any() else 0.0,
        "colour": colour,
        "colour_match": None if cm is None else cm.match,
        "colour_delta_e": None if cm is None else cm.delta_e,
        "dominant_rgb": None if cm is None else list(cm.dominant),
    }


@dataclass
class Compliance:
    """Result of :func:`evaluate`. ``verdict`` = no required rule failed; ``failed`` = ids of failed
    required rules; ``advisories`` = ids of failed recommendations; ``unchecked`` = ids of rules not
    measurable from pixels (review them by other means); ``pending`` = rules not yet in force;
    ``measurements`` = :func:`measure`'s dict."""

    preset: str
    verdict: bool
    failed: list[str]
    measurements: dict
    advisories: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def _passes(rule: Rule, value) -> bool:
    if rule.op == "!=" and rule.value is False:
        return value is not False  # None = no verdict, not a failure
    if value is None:
        return False
    if rule.op == "==" and isinstance(rule.value, float):
        return abs(float(value) - rule.value) <= 1e-3
    return bool(_OPS[rule.op](value, rule.value))


def evaluate(image, preset: str | Preset, colour: str | None = None, *, apparel: bool = False,
             today: date | None = None, measurements: dict | None = None) -> Compliance:
    """Check one image against a preset's rules.

    ``colour`` = the catalog colour attribute (None: colour rules give no verdict); ``apparel`` picks
    apparel-only rules (Google's 250 x 250 px); ``today`` (default: the UTC date) decides which dated
    rules apply. Pass ``measurements`` from :func:`measure` to avoid measuring twice. Evaluate the
    image that will be published (after :func:`postprocess`): size rules are about that file.
    """
    p = get_preset(preset)
    m = measurements if measurements is not None else measure(image, colour)
    today = today or datetime.now(UTC).date()
    out = Compliance(preset=p.name, verdict=True, failed=[], measurements=m)
    for rule in p.rules:
        if rule.apparel is not None and rule.apparel != apparel:
            continue
        if rule.effective_from is not None and today < rule.effective_from:
            out.pending.append(rule.id)
            continue
        if rule.measurement is None:
            out.unchecked.append(rule.id)
            continue
        if not _passes(rule, m.get(rule.measurement)):
            (out.failed if rule.required else out.advisories).append(rule.id)
    out.verdict = not out.failed
    return out


# ---------------------------------------------------------------------------------- postprocess


def postprocess(image, preset: str | Preset, size: tuple[int, int] | None = None, upscaler=None) -> Image.Image:
    """The image a preset implies, with Pillow, as RGB on a canvas of the preset's size (``size``
    overrides it; preset ``none`` returns the image unchanged):

    - presets with a ``fill`` target (Amazon): the bounding box of the non-white pixels (any channel
      below :data:`WHITE_TOLERANCE_LEVEL`: the product and its faint shadow) is cropped, resized
      so it spans ``fill`` of the canvas in its longer relative direction, and pasted centred on a
      pure-white (255,255,255) canvas — every pixel outside the box is exactly 255, with no
      resampling ringing. Skipped when the box touches an image edge (a product cut off by the
      frame is never re-centred) or the image is all white;
    - otherwise (and in those cases): resized to fit the canvas keeping its aspect ratio and padded
      centred with pure white (ImageOps.pad).

    ``upscaler``: None = every resize is Lanczos (a 64x48 render enlarged to 1,000 px passes size
    rules without gaining detail). Otherwise an object with ``upscale(image, scale) -> image``
    enlarging by a whole factor (e.g. :class:`catalog_render.pretrained.upscale.Upscaler`, whose
    passes leave Lanczos at most a 1.5x stretch): when the render must grow, the product box with
    :data:`BOX_CONTEXT_PX` pixels around it (the whole render when there is no box) is upscaled by
    it first, then Lanczos makes the exact size. Raises what the upscaler raises.
    """
    p = get_preset(preset)
    im = to_rgb(image) if isinstance(image, Image.Image) else Image.fromarray(checks.as_rgb_array(image))
    canvas = size or p.size
    if canvas is None:
        return im.copy()
    if p.fill is not None:
        box = _product_box(im)
        if box is not None:
            left, top, right, bottom = box
            bw, bh = right - left, bottom - top
            scale = p.fill / max(bw / canvas[0], bh / canvas[1])
            new = (max(1, min(canvas[0], round(bw * scale))), max(1, min(canvas[1], round(bh * scale))))
            # only the product box (and a few pixels of white around it, for the upscaler's context) is enlarged
            pl, pt, pr, pb = max(0, left - BOX_CONTEXT_PX), max(0, top - BOX_CONTEXT_PX), min(im.width, right + BOX_CONTEXT_PX), min(im.height, bottom + BOX_CONTEXT_PX)
            src, k = _enlarged(im.crop((pl, pt, pr, pb)), scale, upscaler)
            inner = ((left - pl) * k, (top - pt) * k, (right - pl) * k, (bottom - pt) * k)
            product = src.crop(inner).resize(new, Image.Resampling.LANCZOS)
            out = Image.new("RGB", canvas, WHITE)
            out.paste(product, ((canvas[0] - new[0]) // 2, (canvas[1] - new[1]) // 2))
            return out
    src, _ = _enlarged(im, min(canvas[0] / im.width, canvas[1] / im.height), upscaler)
    return ImageOps.pad(src, canvas, method=Image.Resampling.LANCZOS, color=WHITE, centering=(0.5, 0.5))


#: Pixels of the render kept around the product box when only the box is upscaled (the upscaler's
#: convolutions see the white margin, so the box's border pixels come out as in the whole render).
BOX_CONTEXT_PX = 4


def _enlarged(im: Image.Image, scale: float, upscaler) -> tuple[Image.Image, int]:
    """(image, k): ``im`` enlarged k times by the upscaler when one is given and ``scale`` > 1,
    else ``(im, 1)``. Raises ValueError when the upscaler returns a non-integer multiple."""
    if upscaler is None or scale <= 1:
        return im, 1
    up = upscaler.upscale(im, scale).convert("RGB")
    k = up.width // im.width
    if k < 1 or up.size != (im.width * k, im.height * k):
        raise ValueError(f"upscaler returned {up.size} for {im.size}: not a whole multiple")
    return up, k


def _product_box(im: Image.Image) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the pixels with any channel below WHITE_TOLERANCE_LEVEL; None
    when there are none or the box touches an image edge."""
    nonwhite = ~(np.asarray(im) >= WHITE_TOLERANCE_LEVEL).all(axis=2)
    if not nonwhite.any():
        return None
    rows, cols = np.flatnonzero(nonwhite.any(axis=1)), np.flatnonzero(nonwhite.any(axis=0))
    h, w = nonwhite.shape
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == h - 1 or cols[-1] == w - 1:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def renditions(image, preset: str | Preset, thumbnails: tuple[int, ...] | None = None, main: Image.Image | None = None) -> dict[str, Image.Image]:
    """``{"main": postprocess(image, preset), "thumb_<n>": ...}``: the main image plus one downscaled
    copy per longest side ``n`` in ``thumbnails`` (default: the preset's, e.g. 256), Lanczos, aspect
    kept. A thumbnail is never larger than the main image. ``main``: ``postprocess(image, preset)``
    when the caller already made it (it is not made again)."""
    p = get_preset(preset)
    main = main if main is not None else postprocess(image, p)
    out = {"main": main}
    for n in (p.thumbnails if thumbnails is None else thumbnails):
        t = main.copy()
        t.thumbnail((n, n), Image.Resampling.LANCZOS)
        out[f"thumb_{n}"] = t
    return out


# ---------------------------------------------------------------------------------------- export

FORMATS = {"JPEG": "JPEG", "JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
#: Default encoder quality: JPEG 92 / WebP 90 (visually lossless for product photos; Pillow's own
#: default, 75, shows ringing around product edges on white).
DEFAULT_QUALITY = {"JPEG": 92, "WEBP": 90}


def export(image, preset_or_format: str | Preset, quality: int | None = None,
           metadata: ProvenanceMetadata | None = None) -> bytes:
    """Encode an image to PNG, JPEG or WebP bytes, with provenance metadata when given.

    ``preset_or_format``: a preset (name or Preset: its ``format``) or a format name
    (``png|jpeg|jpg|webp``). ``quality``: JPEG/WebP quality 1-95 (default :data:`DEFAULT_QUALITY`;
    ignored for PNG, which is lossless). ``metadata``: written as XMP (IPTC DigitalSourceType
    trainedAlgorithmicMedia, model id, render key; PNG also gets tEXt) by
    :func:`catalog_render.quality.provenance.save_with_provenance`. A preset whose marketplace
    requires the AI label (Google) raises ValueError without ``metadata``. The image is written as
    given: call :func:`postprocess` first.
    """
    name = str(preset_or_format.name if isinstance(preset_or_format, Preset) else preset_or_format)
    if name.lower() in PRESETS or isinstance(preset_or_format, Preset):
        p = get_preset(preset_or_format)
        fmt = p.format
        if p.requires_ai_label and metadata is None:
            raise ValueError(f"preset {p.name!r} requires AI provenance metadata (IPTC DigitalSourceType): pass metadata=")
    else:
        try:
            fmt = FORMATS[name.upper()]
        except KeyError:
            raise ValueError(f"unknown preset or format {name!r} (presets {', '.join(PRESET_NAMES)}; formats png, jpeg, webp)") from None
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    im = to_rgb(image) if isinstance(image, Image.Image) else Image.fromarray(checks.as_rgb_array(image))
    q = int(quality) if quality is not None else DEFAULT_QUALITY.get(fmt)
    if metadata is not None:
        return save_with_provenance(im, fmt, metadata, quality=q)
    buf = io.BytesIO()
    if fmt == "PNG":
        im.save(buf, "PNG")
    else:
        im.save(buf, fmt, quality=q)
    return buf.getvalue()
