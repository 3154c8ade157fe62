"""Per-image checks for the quality gate: exposure, colourfulness, size, borders, near-duplicates,
and whether the product's colour matches the catalog's colour attribute.

Every function takes an RGB image as a Pillow image or a uint8 array of shape (H, W, 3) with values
in [0, 255] (:func:`as_rgb_array` converts and validates). Colour differences are CIEDE2000
(Sharma, Wu & Dalal 2005, "The CIEDE2000 color-difference formula: implementation notes"), computed
by scikit-image in CIELAB (D65); ΔE00 ≈ 1 is about one just-noticeable difference.

| check | definition | range / unit | source of the formula or threshold |
| --- | --- | --- | --- |
| :func:`exposure` | share of pixels with every channel >= 250 (clipped highlights) and <= 5 (clipped shadows) | [0, 1] each | 250/5 = within 2 % of the 8-bit limits |
| :func:`colourfulness` | M = σ_rgyb + 0.3 μ_rgyb over rg = R-G, yb = (R+G)/2 - B | [0, ~180] on [0, 255] values | Hasler & Süsstrunk 2003 |
| :func:`resolution` | width, height, longest/shortest side, width/height | pixels | marketplace size rules (see presets) |
| :func:`detect_border` | uniform edge band whose colour steps away from what lies inside it | bool + width in pixels | eBay/Amazon/Google "no added borders" |
| :func:`perceptual_hash` + :func:`near_duplicate_groups` | 64-bit DCT hash (ImageHash phash), Hamming distance | 0-64 bits | Zauner 2010; threshold measured here |
| :func:`colour_match` | ΔE00 between the dominant foreground colour and the catalog colour's reference sRGB | [0, ~100] | CSS Color 4 / xkcd colour survey references |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import imagehash
import matplotlib.colors as mcolors
import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.cluster.vq import kmeans2
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.color import deltaE_ciede2000, rgb2lab

from catalog_render.imaging import to_array

#: Channel value at or above which a pixel counts as a clipped highlight (every channel).
HIGHLIGHT_LEVEL = 250
#: Channel value at or below which a pixel counts as a clipped shadow (every channel).
SHADOW_LEVEL = 5
#: Foreground = pixels at least this CIEDE2000 distance from the background colour. Measured on the
#: IKEA cut-outs (JPEG, white background): JPEG noise and soft contact shadows stay below it, while
#: every product colour except white-on-white is further away.
FOREGROUND_MIN_DELTA_E = 10.0
#: ΔE00 above which two colours read as "different colours" (Mokrzycki & Tatol 2011, "Colour
#: difference ΔE - a survey": ΔE > 5 means an observer sees two different colours).
DISTINCT_COLOUR_DELTA_E = 5.0
#: Default Hamming-distance threshold for near-duplicate phashes (64 bits); see near_duplicate_groups.
NEAR_DUPLICATE_MAX_DISTANCE = 6
#: Default ΔE00 threshold for colour_match; see colour_match for how it was chosen.
COLOUR_MATCH_MAX_DELTA_E = 25.0
#: Content measurements (foreground, colours) run on a copy at most this many pixels on its longest
#: side (Lanczos): CIEDE2000 on a 2048x2048 upscale costs seconds and adds no information (ratios do not depend on scale).
ANALYSIS_MAX_SIDE = 256


def as_rgb_array(image) -> np.ndarray:
    """A Pillow image (any mode) or an RGB uint8 (H, W, 3) array -> RGB uint8 array, values [0, 255].
    Raises ValueError for any other array."""
    if isinstance(image, Image.Image):
        return to_array(image)
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {a.dtype} {a.shape}")
    return a


def analysis_copy(image, max_side: int = ANALYSIS_MAX_SIDE) -> np.ndarray:
    """The image as an RGB array, downscaled (Lanczos) so its longest side is at most ``max_side``
    pixels; returned unchanged when already small enough."""
    a = as_rgb_array(image)
    h, w = a.shape[:2]
    if max(h, w) <= max_side:
        return a
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.LANCZOS))


def _lab(rgb) -> np.ndarray:
    """sRGB uint8 colours (..., 3) -> CIELAB (D65), same leading shape."""
    a = np.asarray(rgb, dtype=np.uint8)
    return rgb2lab(a.reshape(-1, 1, 3)).reshape(a.shape[:-1] + (3,))


def delta_e(rgb1, rgb2) -> float:
    """CIEDE2000 distance between two sRGB uint8 colours, e.g. ``delta_e((255, 0, 0), (200, 0, 0))``."""
    return float(deltaE_ciede2000(_lab(rgb1), _lab(rgb2)))


# --------------------------------------------------------------------------------------- exposure


@dataclass(frozen=True)
class Exposure:
    """Shares of clipped pixels, each in [0, 1]."""

    clipped_highlights: float
    clipped_shadows: float


def exposure(image, mask: np.ndarray | None = None, highlight: int = HIGHLIGHT_LEVEL, shadow: int = SHADOW_LEVEL) -> Exposure:
    """Share of pixels whose every channel is >= ``highlight`` (clipped highlights) and whose every
    channel is <= ``shadow`` (clipped shadows), in [0, 1], over ``mask`` (bool (H, W); default the
    whole image). An empty mask gives 0 for both.

    Defaults 250 and 5 are within 2 % of the 8-bit limits, the usual "blown out / crushed" bands; on a
    product shot the white background is itself clipped on purpose, so pass the product region
    (:func:`foreground_mask`) to measure the product's exposure.
    """
    a = as_rgb_array(image)
    hi = (a >= highlight).all(axis=2)
    lo = (a <= shadow).all(axis=2)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != hi.shape:
            raise ValueError(f"mask shape {mask.shape} does not match image {hi.shape}")
        n = int(mask.sum())
        if n == 0:
            return Exposure(0.0, 0.0)
        return Exposure(float(hi[mask].sum() / n), float(lo[mask].sum() / n))
    return Exposure(float(hi.mean()), float(lo.mean()))


# ---------------------------------------------------------------------------------- colourfulness


def colourfulness(image, mask: np.ndarray | None = None) -> float:
    """Colourfulness M of Hasler & Süsstrunk (2003), "Measuring colourfulness in natural images",
    Proc. SPIE 5007: with rg = R - G and yb = (R + G)/2 - B on [0, 255] values,
    M = sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²) (population standard deviations).

    Range [0, ~180]; 0 for any grey image. The paper's scale: 0 not colourful, 15 slightly, 33
    moderately, 45 averagely, 59 quite, 82 highly, 109 extremely colourful. ``mask`` restricts the
    statistics to some pixels (an empty mask gives 0).
    """
    a = as_rgb_array(image).astype(np.float64)
    if mask is not None:
        a = a[np.asarray(mask, dtype=bool)]
        if a.size == 0:
            return 0.0
    r, g, b = a[..., 0].ravel(), a[..., 1].ravel(), a[..., 2].ravel()
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


# ------------------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Resolution:
    """Image size in pixels; ``aspect_ratio`` = width / height."""

    width: int
    height: int
    longest_side: int
    shortest_side: int
    aspect_ratio: float


def resolution(image) -> Resolution:
    """Width, height, longest and shortest side (pixels) and aspect ratio width/height."""
    if isinstance(image, Image.Image):
        w, h = image.size
    else:
        h, w = as_rgb_array(image).shape[:2]
    return Resolution(w, h, max(w, h), min(w, h), w / h)


# ------------------------------------------------------------------------- background / foreground


def background_colour(image) -> tuple[int, int, int]:
    """The background's sRGB colour: the per-channel median of the outermost 1-pixel frame.
    Right whenever the background covers more than half of the frame."""
    a = as_rgb_array(image)
    frame = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    return tuple(int(v) for v in np.median(frame, axis=0).round())


def foreground_mask(image, background=None, min_delta_e: float = FOREGROUND_MIN_DELTA_E) -> np.ndarray:
    """Product region: pixels whose CIEDE2000 distance from the background colour (default
    :func:`background_colour`) is at least ``min_delta_e``, with enclosed holes filled
    (scipy.ndimage.binary_fill_holes, so a product's own highlights stay inside it). Bool (H, W).

    A white product on a white background is mostly invisible to this mask: only its outline and
    shading are found.
    """
    a = as_rgb_array(image)
    bg = background_colour(a) if background is None else background
    lab = _lab(a)
    d = deltaE_ciede2000(lab, np.broadcast_to(_lab(bg), lab.shape))
    return ndimage.binary_fill_holes(d >= min_delta_e)


def frame_fill(mask: np.ndarray) -> float:
    """How far the product spans the frame: max(bbox height / image height, bbox width / image
    width) of the mask's bounding box, in [0, 1]; 0 for an empty mask.

    This is our reading of Amazon's "the product should fill 85 % or more of the image frame": the
    product reaches across 85 % of the frame in its longer relative direction (padding the other
    direction, e.g. a tall bottle on a square canvas, does not change it). Compare
    :func:`catalog_render.quality.scores.fill_ratio`, the bounding box's share of the area.
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return 0.0
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    return float(max((rows[-1] - rows[0] + 1) / m.shape[0], (cols[-1] - cols[0] + 1) / m.shape[1]))


def box_area_ratio(mask: np.ndarray) -> float:
    """Area of the mask's bounding box over the image area, in [0, 1]; 0 for an empty mask (the
    definition of :func:`catalog_render.quality.scores.fill_ratio`, on a given product mask)."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return 0.0
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    return float((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) / m.size)


# ----------------------------------------------------------------------------------------- border


@dataclass(frozen=True)
class Border:
    """An added frame: ``present`` when at least one side has a band; ``width_px`` = the widest
    side's band (0 when absent); ``sides`` = band width per side (top, bottom, left, right), pixels;
    ``colour`` = the band colour (sRGB) of the widest side, None when absent."""

    present: bool
    width_px: int
    sides: dict[str, int]
    colour: tuple[int, int, int] | None


#: What "a flat background inside a white band" means (detect_border): 98 % of the line within 12
#: levels of its median. Stricter than a band's own uniformity, since a white margin running into a
#: flat product side must not read as padding around a photo; with it no border was found on the
#: 5,133 real photos of ../shared/data (with the band's looser 95 % / 20 levels, 4 were).
INNER_TOLERANCE = 12
INNER_MIN_SHARE = 0.98


def _line_median(line: np.ndarray) -> np.ndarray:
    return np.median(line, axis=0).round().astype(np.uint8)


def _line_is_uniform(line: np.ndarray, tolerance: int, min_share: float) -> bool:
    """At least ``min_share`` of the line's pixels within ``tolerance`` levels of its median, every channel."""
    close = (np.abs(line.astype(np.int16) - _line_median(line).astype(np.int16)) <= tolerance).all(axis=1)
    return bool(close.mean() >= min_share)


def detect_border(image, tolerance: int = 20, min_share: float = 0.95, max_fraction: float = 0.25,
                  min_step_delta_e: float = DISTINCT_COLOUR_DELTA_E, white_level: int = HIGHLIGHT_LEVEL,
                  transition_px: int = 2) -> Border:
    """Find uniform bands along the edges that are not background (an added frame or bars).

    For each side, lines (rows or columns) are peeled from the edge inwards while each line is
    uniform — at least ``min_share`` of its pixels within ``tolerance`` levels of the line's median
    on every channel (JPEG at quality 85 moves a saturated flat band by up to ~20 levels) — and of
    the same colour as the edge line (ΔE00 of the two medians <= ``min_step_delta_e``), for at most
    ``max_fraction`` of the image's extent (25 %: covers the bars that pad a 3:4 image to a square,
    12.5 % per side; a uniform edge region wider than that is the background). The peeled lines
    form a band when the image inside them steps away from them: the line ``transition_px`` past
    the band (skipping anti-aliased or JPEG-ringing transition rows) has a median colour whose
    CIEDE2000 distance from the band's median colour exceeds ``min_step_delta_e`` (5: "two
    different colours", Mokrzycki & Tatol 2011), so a smooth studio gradient is not a band. A white
    band (every channel >= ``white_level``) is the pure-white background presets ask for, so it
    counts only when that inner line is itself a flat non-white background spanning the whole side
    (:data:`INNER_MIN_SHARE` of it within :data:`INNER_TOLERANCE` levels): white padding around a
    grey-background photo is a border, a white margin around a product is not. Measured on ../shared/data: no border found on any of the 2,187 IKEA
    cut-outs or 2,946 fashion photos (none has an added frame). Limits: a flat product spanning a
    whole side inside a white margin reads as a border; a frame wider than ``max_fraction`` is
    taken for background.

    Marketplaces forbid added borders on product images (eBay "Picture policy": no added borders;
    Amazon "Product image requirements" and Google Merchant Center "Image link [image_link]" too).
    """
    a = as_rgb_array(image)
    h, w = a.shape[:2]
    sides_lines = {
        "top": (a, h),
        "bottom": (a[::-1], h),
        "left": (a.transpose(1, 0, 2), w),
        "right": (a.transpose(1, 0, 2)[::-1], w),
    }
    widths: dict[str, int] = {}
    colours: dict[str, tuple[int, int, int]] = {}
    for side, (lines, extent) in sides_lines.items():
        widths[side] = 0
        limit = max(1, int(extent * max_fraction))
        edge_lab = _lab(_line_median(lines[0]))
        last = min(limit + 1, extent - 1)  # candidate band lines, plus one to see where the band stops
        n = last
        for start in range(0, last, 16):  # blocks of lines: most bands (and all backgrounds) stop early
            head = lines[start:min(start + 16, last)]
            medians = np.median(head, axis=1).round().astype(np.uint8)  # (k, 3)
            close = np.abs(head.astype(np.int16) - medians[:, None, :].astype(np.int16)) <= tolerance
            uniform = close.all(axis=2).mean(axis=1) >= min_share
            same = deltaE_ciede2000(_lab(medians), np.broadcast_to(edge_lab, (len(medians), 3))) <= min_step_delta_e
            stops = np.flatnonzero(~(uniform & same))
            if len(stops):
                n = start + int(stops[0])
                break
        if n == 0 or n >= limit:
            continue  # not uniform, or uniform beyond a band's extent (background)
        band = np.median(lines[:n].reshape(-1, 3), axis=0).round().astype(np.uint8)
        inner_line = lines[min(n + transition_px, extent - 1)]
        if delta_e(band, _line_median(inner_line)) <= min_step_delta_e:
            continue
        if (band >= white_level).all() and not _line_is_uniform(inner_line, INNER_TOLERANCE, INNER_MIN_SHARE):
            continue  # a white margin running into a product, not into a flat background
        widths[side] = n
        colours[side] = tuple(int(v) for v in band)
    widest = max(widths, key=lambda s: widths[s])
    present = widths[widest] > 0
    return Border(present, widths[widest], widths, colours.get(widest) if present else None)


# ------------------------------------------------------------------------------- near-duplicates


def perceptual_hash(image) -> str:
    """64-bit DCT perceptual hash (ImageHash ``phash``, hash_size 8: greyscale 32x32, 2-D DCT, the
    8x8 lowest frequencies compared with their median; Zauner 2010, "Implementation and benchmarking
    of perceptual image hash functions", the pHash library's DCT hash). Returned as 16 hex digits."""
    a = as_rgb_array(image)
    return str(imagehash.phash(Image.fromarray(a), hash_size=8))


def hash_distance(h1: str | imagehash.ImageHash, h2: str | imagehash.ImageHash) -> int:
    """Hamming distance between two 64-bit hashes (hex strings or ImageHash), in [0, 64] bits."""
    return int(_to_hash(h1) - _to_hash(h2))


def _to_hash(h) -> imagehash.ImageHash:
    return h if isinstance(h, imagehash.ImageHash) else imagehash.hex_to_hash(str(h))


def near_duplicate_groups(hashes: Mapping[str, str | imagehash.ImageHash], max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE,
                          colours: Mapping[str, tuple[int, int, int]] | None = None,
                          max_colour_delta_e: float = 10.0) -> list[list[str]]:
    """Groups of near-duplicate images among ``{render_key: phash}`` (hex or ImageHash).

    Two images are linked when their phashes differ by at most ``max_distance`` bits (of 64), and
    — when ``colours`` ({render_key: sRGB}, e.g. :func:`dominant_colour`) are given for both — their
    colours are within ``max_colour_delta_e`` ΔE00. Groups are the connected components of these
    links (scipy.sparse.csgraph), so A~B and B~C put A, B, C together. Returns the groups of two or
    more keys, each sorted, ordered by their first key. Pairwise cost is O(n²) bit operations in
    blocks (about 5 s for 20,000 hashes on a busy 2-core machine).

    Default threshold 6 bits, measured on the 2,946 fashion photos of ../shared/data: a 64x48
    downscale moved a photo's hash by at most 4 bits (of 300 tried) and JPEG quality 60 by at most
    2; ImageHash's phash distances are always even, so 6 is the next step up. The pHash library's own
    test program defaults to 22 bits, which links 11 % of all pairs of distinct catalog photos — far
    too loose for catalog images that share one studio layout. phash is computed on luminance: two
    colour variants of one shot (the same sunglasses in green and grey) hash identically (seen here
    at distance 0), which is why ``colours`` can be given.
    """
    keys = list(hashes)
    if len(keys) < 2:
        return []
    bits = np.array([_to_hash(hashes[k]).hash.ravel() for k in keys], dtype=bool)
    packed = np.packbits(bits, axis=1)  # (n, 8) uint8
    words = packed.view(">u8").ravel() if packed.shape[1] == 8 else None
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    block = 2048
    for start in range(0, len(keys), block):
        if words is not None:
            d = np.bitwise_count(words[start:start + block, None] ^ words[None, :])
        else:
            d = np.bitwise_count(packed[start:start + block, None, :] ^ packed[None, :, :]).sum(axis=2)
        i, j = np.nonzero(d <= max_distance)
        i = i + start
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
    i, j = np.concatenate(rows), np.concatenate(cols)
    if colours is not None and len(i):
        lab = {k: _lab(colours[k]) for k in keys if colours.get(k) is not None}
        keep = np.array([
            keys[a] not in lab or keys[b] not in lab or float(deltaE_ciede2000(lab[keys[a]], lab[keys[b]])) <= max_colour_delta_e
            for a, b in zip(i, j)
        ], dtype=bool)
        i, j = i[keep], j[keep]
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(len(keys), len(keys)))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[str]] = {}
    for k, lab_id in zip(keys, labels):
        groups.setdefault(int(lab_id), []).append(k)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


# ---------------------------------------------------------------------------------- colour match


@dataclass(frozen=True)
class ColourReference:
    """A catalog colour name's reference: ``rgb`` (sRGB, 0-255) and where it comes from."""

    name: str
    rgb: tuple[int, int, int]
    source: str


#: Values that name several colours: no single reference, so no match is attempted.
MULTI_COLOUR_WORDS = frozenset({"multi", "multicolour", "multicolor", "multi colour", "multi color", "assorted", "assorted colours", "assorted colors", "mixed"})
#: Single-word catalog colours that CSS lacks but the xkcd colour survey names exactly.
XKCD_SINGLE_WORDS = frozenset({"cream", "charcoal", "peach", "mustard", "copper", "bronze", "rust", "mauve", "rose", "taupe"})


def _normalise_colour_name(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[-_]", " ", str(name).strip().lower()))


def reference_colour(name: str | None) -> ColourReference | None:
    """The reference sRGB of a catalog colour name, or None when there is no single reference.

    Lookup, on the name lower-cased with hyphens as spaces:

    1. several colours (``Multi``, ``Multicolour``, ``Assorted colours``, or a list such as
       ``White,black`` / ``Black/Red``) -> None;
    2. a single-word CSS named colour (W3C CSS Color Module Level 4, §6.1 "Named Colors": ``black``
       = 0,0,0, ``navy`` = 0,0,128, ``beige`` = 245,245,220, ...) -> that colour;
    3. a multi-word name the xkcd colour survey names exactly (Munroe 2010, "Color Survey Results",
       954 colour names chosen by ~222,500 people: ``navy blue`` = 0,17,70, ``dark grey``,
       ``off white``, ``light pink`` ...), or one of :data:`XKCD_SINGLE_WORDS` -> that colour.
       Multi-word names are not joined into CSS keywords: CSS ``darkgrey`` (169,169,169) is lighter
       than CSS ``grey``, the opposite of what "Dark grey" means;
    4. anything else (materials such as ``Pine``, ``Stainless steel``; ``Skin``, ``Nude``,
       ``Grey Melange``, ``Metallic``) -> None.

    Values come from matplotlib's tables of both palettes (``matplotlib.colors.CSS4_COLORS``,
    ``XKCD_COLORS``), not typed by hand.
    """
    if name is None:
        return None
    n = _normalise_colour_name(name)
    if not n or n in MULTI_COLOUR_WORDS or re.search(r"[,/&+]| and ", n):
        return None
    if " " not in n and n in mcolors.CSS4_COLORS:
        return ColourReference(str(name), _hex_rgb(mcolors.CSS4_COLORS[n]), f"CSS Color Module Level 4 named colour '{n}'")
    key = "xkcd:" + n.replace("gray", "grey")
    if (" " in n or n in XKCD_SINGLE_WORDS) and key in mcolors.XKCD_COLORS:
        return ColourReference(str(name), _hex_rgb(mcolors.XKCD_COLORS[key]), f"xkcd colour survey '{key[5:]}'")
    return None


def _hex_rgb(h: str) -> tuple[int, int, int]:
    return tuple(round(c * 255) for c in mcolors.to_rgb(h))


def dominant_colour(image, mask: np.ndarray | None = None, k: int = 4, seed: int = 0) -> tuple[int, int, int] | None:
    """The dominant colour of the masked pixels (default: :func:`foreground_mask`): k-means with
    ``k`` clusters in CIELAB (scipy.cluster.vq.kmeans2, k-means++ start, fixed seed), the centre of
    the most populous cluster, as sRGB 0-255. None when fewer than ``k * 10`` pixels are masked.
    Runs on :func:`analysis_copy` when no mask is given."""
    if mask is None:
        a = analysis_copy(image)
        mask = foreground_mask(a)
    else:
        a = as_rgb_array(image)
    m = np.asarray(mask, dtype=bool)
    rgb = a[m]
    if len(rgb) < k * 10:
        return None
    codes = (rgb[:, 0].astype(np.int32) << 16) | (rgb[:, 1].astype(np.int32) << 8) | rgb[:, 2]
    k = min(k, len(np.unique(codes)))
    px = _lab(rgb)
    if k == 1:
        centre = px[0]
    else:
        centres, labels = kmeans2(px, k, seed=seed, minit="++")
        centre = centres[np.bincount(labels, minlength=k).argmax()]
    from skimage.color import lab2rgb

    rgb = lab2rgb(centre.reshape(1, 1, 3)).reshape(3)
    return tuple(int(v) for v in np.clip(np.round(rgb * 255), 0, 255))


@dataclass(frozen=True)
class ColourMatch:
    """Result of :func:`colour_match`: ``delta_e`` is CIEDE2000 between ``dominant`` and
    ``reference.rgb``; ``match`` is ``delta_e <= threshold``."""

    expected: str
    reference: ColourReference
    dominant: tuple[int, int, int]
    delta_e: float
    threshold: float
    match: bool


def colour_match(image, colour: str | None, threshold: float = COLOUR_MATCH_MAX_DELTA_E,
                 mask: np.ndarray | None = None) -> ColourMatch | None:
    """Does the product's dominant colour (:func:`dominant_colour` of the foreground) match the
    catalog colour name? ``match`` = CIEDE2000(dominant, :func:`reference_colour`) <= ``threshold``.

    Returns None — no verdict, not a failure — when the name has no single reference (unknown,
    multi-colour, material) or no foreground is found.

    No published threshold maps colour names to ΔE; reference colours are idealised (CSS ``red`` is
    255,0,0) while a photographed red shirt is shaded. The default 25 was chosen on real fashion
    photos of ../shared/data. Measured with it on the first 60 photos (by id) of each of 12 colours
    (Black, White, Red, Navy Blue, Blue, Grey, Green, Brown, Pink, Purple, Yellow, Beige): 61 % of
    photos match their own colour (Black 83 %, Navy Blue 75 %, Blue 30 %, Green 37 %) and 17 % match
    a given wrong one; on Black/White/Red/Navy Blue alone 74 % vs 17 % (tests/test_quality_checks.py).
    So it is a coarse "same colour family" check: weakest for white products on white (the mask
    misses them), for apparel on models (skin and jeans compete with the product), and for
    saturated references (CSS ``blue`` is 0,0,255; blue garments are not).
    """
    ref = reference_colour(colour)
    if ref is None:
        return None
    dom = dominant_colour(image, mask=mask)
    if dom is None:
        return None
    d = delta_e(dom, ref.rgb)
    return ColourMatch(str(colour), ref, dom, d, threshold, d <= threshold)
