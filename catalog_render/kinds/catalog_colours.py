"""Catalog colours: what a colour name looks like in this catalog's own photos.

A catalog's "Navy Blue" or "Black" is not the colour survey's: a photographed black T-shirt is
L* 25-30, a catalog's "Blue" is mostly denim. ``catalog-render colour-table`` measures, for up to
``per_colour`` photographed products of every colour name the variant method knows
(:func:`catalog_render.kinds.recolour.reference_lab` is not None), the CIELAB mean of the product
region of that colour (the variant kind's own region: mask, k-means anchor nearest the name,
:func:`catalog_render.kinds.recolour.colour_region`) and writes one row per product to Parquet
(:data:`SCHEMA`). ``[photos] colour_table`` gives that file to ``--kind variant``: a variant's
target is then the per-channel median of the catalog's measurements of its colour name (at
least :data:`MIN_SAMPLES`, never counting the product itself), else the name's reference. The
table's identity (sha256 of its rows) is part of the render_key of every variant it colours.

Measured effect on the fashion catalog's variant pairs: benchmarks/RESULTS.md and docs/photos.md
(``benchmarks/variants.py --colour-table``).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pyarrow as pa

from catalog_render import storage
from catalog_render.errors import ConfigError

SCHEMA = pa.schema([
    ("product_id", pa.string()),
    ("colour", pa.string()),  # as catalogued
    ("colour_key", pa.string()),  # lower case, single spaces: what targets are looked up by
    ("l", pa.float64()), ("a", pa.float64()), ("b", pa.float64()),  # CIELAB (D65) mean of the product region
    ("region_pixels", pa.int64()),
    ("source_sha256", pa.string()),
])
MIN_SAMPLES = 3  # fewer measurements of a name than this: the name's reference is used
MIN_REGION_PIXELS = 40
#: Photos are measured at most this many pixels on their long side (Lanczos): a region's mean
#: colour does not need the full resolution, and the region's CIEDE2000 distances cost per pixel.
MEASURE_SIDE = 512


def reduced(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (uint8 (H, W, 3)) scaled down (Lanczos) to at most :data:`MEASURE_SIDE` pixels on
    its long side; unchanged when already that small."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if max(h, w) <= MEASURE_SIDE:
        return rgb
    scale = MEASURE_SIDE / max(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS))


def colour_key(colour: str | None) -> str | None:
    """``colour`` lower-cased with runs of spaces, '-' and '_' as one space; None for None/blank."""
    if colour is None or not str(colour).strip():
        return None
    return re.sub(r"[\s_-]+", " ", str(colour).strip().lower())


def product_colour(rgb: np.ndarray, prob: np.ndarray, colour: str | None, mask_threshold: float) -> tuple[np.ndarray | None, int]:
    """(CIELAB mean float64 (3,), region pixels) of the product region of ``colour`` in ``rgb``
    (uint8 (H, W, 3)); ``prob`` is its saliency map (float (H, W) in [0, 1]). (None, n) when the
    region has fewer than :data:`MIN_REGION_PIXELS` pixels."""
    from catalog_render.kinds import recolour

    region = recolour.colour_region(rgb, np.asarray(prob) >= mask_threshold, colour)
    n = int(region.sum())
    if n < MIN_REGION_PIXELS:
        return None, n
    return recolour._lab(rgb)[region].mean(axis=0), n


def sample(rows: list[dict], per_colour: int) -> list[dict]:
    """Up to ``per_colour`` rows of every known colour name (``rows``: catalog rows with
    ``attributes`` as a dict), chosen by sha256 of the product_id (the same rows every time)."""
    from catalog_render.kinds import recolour

    by_key: dict[str, list[dict]] = {}
    for r in rows:
        colour = (r.get("attributes") or {}).get("color")
        key = colour_key(colour)
        if key and r.get("image_uri") and recolour.reference_lab(colour) is not None:
            by_key.setdefault(key, []).append(r)
    out = []
    for key in sorted(by_key):
        out += sorted(by_key[key], key=lambda r: hashlib.sha256(str(r["product_id"]).encode()).hexdigest())[:per_colour]
    return out


def known_names(catalog: pa.Table) -> set[str]:
    """:func:`colour_key` of every ``attributes.color`` of ``catalog`` the variant method knows
    (:func:`catalog_render.kinds.recolour.reference_lab` is not None), photographed or not."""
    from catalog_render.kinds import recolour

    if "attributes" not in catalog.column_names:
        return set()
    colours = {dict(a or []).get("color") for a in catalog.column("attributes").to_pylist()}
    return {colour_key(c) for c in colours if colour_key(c) and recolour.reference_lab(c) is not None}


def build(catalog: pa.Table, masker, mask_threshold: float, per_colour: int = 30, progress=None) -> tuple[pa.Table, list[tuple[str, str]]]:
    """(table of :data:`SCHEMA`, [(product_id, why not measured)]) over :func:`sample`'s rows,
    each photo measured :func:`reduced`.
    A photo that is missing, undecodable or over the caps, or whose region is too small, is listed
    with its reason and left out. ``progress(done, total)`` after each photo."""
    from catalog_render.kinds import photo

    rows = catalog.to_pylist()
    for r in rows:
        r["attributes"] = dict(r.get("attributes") or [])
    chosen = sample(rows, per_colour)
    out, skipped = [], []
    for k, r in enumerate(chosen):
        src = photo.source_photo(r["image_uri"])
        if src.problem:
            skipped.append((r["product_id"], src.problem))
        else:
            rgb = reduced(np.asarray(photo.load_source(src.uri, src.sha256)))
            colour = r["attributes"]["color"]
            lab, n = product_colour(rgb, masker.mask(rgb), colour, mask_threshold)
            if lab is None:
                skipped.append((r["product_id"], f"only {n} pixels of {colour!r} in the product mask"))
            else:
                out.append({"product_id": r["product_id"], "colour": colour, "colour_key": colour_key(colour), "l": float(lab[0]),
                            "a": float(lab[1]), "b": float(lab[2]), "region_pixels": n, "source_sha256": src.sha256})
        if progress:
            progress(k + 1, len(chosen))
    return pa.Table.from_pylist(out, schema=SCHEMA), skipped


class ColourTable:
    """A colour table (:data:`SCHEMA` rows) for looking targets up. ``identity``: ``catalog-colours:``
    and the first 16 hex of sha256 over its rows in product_id order."""

    def __init__(self, table: pa.Table):
        missing = [f.name for f in SCHEMA if f.name not in table.column_names]
        if missing:
            raise ConfigError(f"photos.colour_table: not a colour table (made by `catalog-render colour-table`): no column {', '.join(missing)}")
        t = table.select(SCHEMA.names).cast(SCHEMA).sort_by("product_id")
        self.rows: dict[str, list[tuple[str, np.ndarray]]] = {}
        for r in t.to_pylist():
            self.rows.setdefault(r["colour_key"], []).append((r["product_id"], np.array([r["l"], r["a"], r["b"]], np.float64)))
        digest = hashlib.sha256()
        for r in t.select(["product_id", "colour_key", "l", "a", "b"]).to_pylist():
            digest.update(repr(tuple(r.values())).encode())
        self.identity = "catalog-colours:" + digest.hexdigest()[:16]

    @classmethod
    def load(cls, uri: str) -> ColourTable:
        """Read the Parquet file at ``uri``. Raises ConfigError naming ``photos.colour_table`` when
        it is missing, not Parquet or not a colour table."""
        import pyarrow.parquet as pq

        try:
            data = storage.read_bytes(uri)
            return cls(pq.read_table(pa.BufferReader(data)))
        except storage.StorageError as exc:
            raise ConfigError(f"photos.colour_table: {exc}") from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError(f"photos.colour_table: {uri} is not a Parquet colour table ({exc})") from None

    def target(self, colour: str | None, exclude: str | None = None) -> np.ndarray | None:
        """Per-channel median CIELAB (float64 (3,)) of the measurements of ``colour``'s name, less
        product ``exclude``; None with fewer than :data:`MIN_SAMPLES` of them."""
        labs = [lab for pid, lab in self.rows.get(colour_key(colour) or "", []) if pid != exclude]
        if len(labs) < MIN_SAMPLES:
            return None
        return np.median(np.stack(labs), axis=0)
