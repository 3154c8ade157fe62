"""Recolouring a product region to a catalog colour in CIELAB, and finding variant groups.

Pure functions (numpy, scikit-image, scipy), used by the ``variant`` kind and by
``benchmarks/variants.py``.

Variant groups: products of the same category whose titles are equal once colour words are
removed (:func:`title_key`), or that share a value of a configurable group column (a parent SKU,
a style id), and whose colour attributes differ.

Recolouring (``lab-transfer``), after Reinhard et al. 2001 ("Color transfer between images", mean
shift in a perceptual space), restricted to the product's own colour:

1. the product region is the U²-Net-p mask's pixels that belong to the product's colour: k-means
   (k = :data:`REGION_CLUSTERS`, CIELAB, fixed seed) over the masked pixels; the anchor is the
   cluster (of at least :data:`MIN_CLUSTER_SHARE` of them) nearest to the source product's catalog
   colour (:func:`reference_lab`; the most populous cluster when that colour is unknown); the region
   is the masked pixels within :data:`REGION_MAX_DELTA_E` of the anchor's centre, less skin-toned
   pixels (:func:`skin_tone`) farther than half that distance, unless the source colour is itself
   skin-toned.
   On-model photos mask the person too: skin and hair stay out of the region unless they share
   the product's colour;
2. inside the region, a* and b* are shifted by (target - region mean) and L* by the same rule
   toward the target's L* clipped to :data:`L_RANGE` (a photographed black garment is not L* 0,
   a white one not 100), so shading and texture (each pixel's deviation from the mean) are kept;
3. the region's edge is feathered (Gaussian, sigma :data:`FEATHER_SIGMA` px) and the rest of the
   photo is untouched, at its full resolution.
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from catalog_render.quality import checks

REGION_CLUSTERS = 4
#: A pixel is in the region when its CIEDE2000 distance to the anchor cluster's centre, with the
#: textile lightness weight kL = 2 (CIE 2001 parametric factors for textiles: shading changes L*
#: more than the dye does), is at most this.
REGION_MAX_DELTA_E = 20.0
#: The anchor cluster is chosen among clusters holding at least this share of the masked pixels.
MIN_CLUSTER_SHARE = 0.1
#: Photographed products' lightness range (L*): targets are clipped into it.
L_RANGE = (22.0, 90.0)
FEATHER_SIGMA = 1.0
METHOD = "lab-transfer"

#: Colour words removed from titles to compare them (plus the words of every colour value of the catalog).
COLOUR_WORDS = frozenset("""black white grey gray red blue green yellow orange pink purple brown beige navy maroon olive teal
cream gold silver bronze copper charcoal magenta khaki tan peach lavender mustard turquoise burgundy rust multi multicolour
multicolor off dark light melange metallic nude skin coffee mauve rose sea steel taupe fluorescent lime violet""".split())


def colour_words(colour_values) -> frozenset[str]:
    """:data:`COLOUR_WORDS` plus every word of the given catalog colour values (lower case)."""
    words = set(COLOUR_WORDS)
    for v in colour_values:
        if v:
            words.update(re.findall(r"[a-z]+", str(v).lower()))
    return frozenset(words)


def title_key(title: str | None, words: frozenset[str]) -> str:
    """The title lower-cased with colour words and punctuation removed, spaces collapsed."""
    tokens = re.findall(r"[a-z0-9]+", (title or "").lower())
    return " ".join(t for t in tokens if t not in words)


def variant_groups(rows: list[dict], group_column: str | None = None) -> dict[str, str]:
    """product_id -> group key, for products in a group of at least two distinct colours.

    ``rows``: catalog rows (product_id, title, category, attributes as a dict or key/value list).
    ``group_column``: a catalog column or ``attributes.<name>`` whose equal (non-empty) values
    make a group; None = same category and :func:`title_key`. Products without a colour are in no
    group."""
    def attrs(r):
        a = r.get("attributes") or {}
        return dict(a) if not isinstance(a, dict) else a

    words = colour_words(attrs(r).get("color") for r in rows)
    members: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        colour = attrs(r).get("color")
        if not colour or not isinstance(r.get("product_id"), str):
            continue
        if group_column:
            value = attrs(r).get(group_column.split(".", 1)[1]) if group_column.startswith("attributes.") else r.get(group_column)
            if value in (None, ""):
                continue
            key = f"{group_column}={value}"
        else:
            key = f"{r.get('category')}|{title_key(r.get('title'), words)}"
        members.setdefault(key, []).append((r["product_id"], colour.strip().lower()))
    return {pid: key for key, ms in members.items() if len({c for _, c in ms}) > 1 for pid, _ in ms}


def reference_lab(colour: str | None) -> np.ndarray | None:
    """CIELAB (D65) of a catalog colour name: the xkcd colour survey's colour of that name when it
    has one (Munroe 2010: what ~222,500 people called the colour; its "brown" is 101,55,0 where
    CSS's is the reddish 165,42,42), else checks.reference_colour (CSS named colours); None when
    neither names a single colour (Multi, Pine, Grey Melange...)."""
    from matplotlib import colors as mcolors

    if colour is None or checks.reference_colour(colour) is None:
        return None
    key = "xkcd:" + re.sub(r"\s+", " ", re.sub(r"[-_]", " ", str(colour).strip().lower())).replace("gray", "grey")
    rgb = (tuple(round(c * 255) for c in mcolors.to_rgb(mcolors.XKCD_COLORS[key])) if key in mcolors.XKCD_COLORS
           else checks.reference_colour(colour).rgb)
    return _lab(np.asarray(rgb, np.uint8)[None, None])[0, 0]


def target_lab(colour: str | None) -> np.ndarray | None:
    """:func:`reference_lab` with L* clipped to :data:`L_RANGE`, or None (an unknown colour)."""
    lab = reference_lab(colour)
    if lab is not None:
        lab[0] = np.clip(lab[0], *L_RANGE)
    return lab


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb, np.uint8)).astype(np.float64)


def colour_region(rgb: np.ndarray, mask: np.ndarray, source_colour: str | None, seed: int = 0) -> np.ndarray:
    """Bool (H, W): the masked pixels of the product's colour (see the module doc, step 1).
    ``rgb`` uint8 (H, W, 3), ``mask`` bool (H, W). Empty when fewer than 40 pixels are masked."""
    from scipy.cluster.vq import kmeans2
    from skimage.color import deltaE_ciede2000

    idx = np.flatnonzero(mask.ravel())
    if idx.size < REGION_CLUSTERS * 10:
        return np.zeros(mask.shape, bool)
    lab = _lab(rgb).reshape(-1, 3)[idx]
    rng = np.random.default_rng(seed)
    sample = lab[rng.choice(lab.shape[0], size=min(lab.shape[0], 20000), replace=False)]
    centres, labels = kmeans2(sample, REGION_CLUSTERS, minit="++", seed=seed)
    share = np.bincount(labels, minlength=REGION_CLUSTERS) / labels.size
    ref = reference_lab(source_colour)
    big = share >= MIN_CLUSTER_SHARE
    if ref is not None:
        d = deltaE_ciede2000(np.repeat(ref[None], REGION_CLUSTERS, 0), centres, kL=2)
        anchor = int(np.where(big, d, np.inf).argmin())
    else:
        anchor = int(share.argmax())
    d_pix = deltaE_ciede2000(np.repeat(centres[anchor][None], lab.shape[0], 0), lab, kL=2)
    keep = d_pix <= REGION_MAX_DELTA_E
    src_rgb = checks.reference_colour(source_colour)
    if src_rgb is None or not skin_tone(np.asarray(src_rgb.rgb, np.uint8)[None])[0]:
        # a model's skin is not the product (unless the product is skin-toned); pixels very close to
        # the anchor stay (an orange bag's shading is skin-toned by the rule, and it is the bag)
        keep &= ~skin_tone(rgb.reshape(-1, 3)[idx]) | (d_pix <= REGION_MAX_DELTA_E / 2)
    region = np.zeros(mask.size, bool)
    region[idx[keep]] = True
    return region.reshape(mask.shape)


def skin_tone(rgb: np.ndarray) -> np.ndarray:
    """Bool per pixel (``rgb`` uint8 (..., 3)): skin-coloured by the YCbCr rule of Chai & Ngan 1999
    ("Face segmentation using skin-color map in videophone applications"): 77 <= Cb <= 127 and
    133 <= Cr <= 173 (ITU-R BT.601 full-range conversion)."""
    c = np.asarray(rgb, np.float64)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)


def recolour(rgb: np.ndarray, region: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``rgb`` (uint8 (H, W, 3)) with ``region`` (bool (H, W)) moved to the CIELAB ``target``
    (module doc, steps 2-3); uint8 (H, W, 3), pixels outside the feathered region unchanged."""
    from scipy import ndimage
    from skimage.color import lab2rgb

    if not region.any():
        return rgb.copy()
    lab = _lab(rgb)
    mean = lab[region].mean(axis=0)
    moved = lab + (np.asarray(target, np.float64) - mean)
    moved[..., 0] = np.clip(moved[..., 0], 0, 100)
    with warnings.catch_warnings():  # out-of-gamut targets: lab2rgb clips negative XYZ and says so per call
        warnings.simplefilter("ignore", UserWarning)
        out = np.clip(lab2rgb(moved) * 255.0, 0, 255)
    w = ndimage.gaussian_filter(region.astype(np.float64), FEATHER_SIGMA) if FEATHER_SIGMA else region.astype(np.float64)
    w = np.where(ndimage.binary_dilation(region, iterations=3), w, 0.0)[..., None]
    blended = np.rint(w * out + (1.0 - w) * rgb.astype(np.float64)).astype(np.uint8)
    return blended
