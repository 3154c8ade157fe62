"""Training sets from catalogs: photos decoded, letterboxed on white and stacked in memory."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from catalog_render import imaging, storage
from catalog_render.catalog import image_uri_problem
from catalog_render.errors import CatalogError
from catalog_render.generators.base import Conditioning
from catalog_render.generators.conditioning import UNKNOWN


def conditionings_from_table(table: pa.Table) -> list[Conditioning]:
    """One Conditioning per catalog row (title, category, attributes; prompt left empty)."""
    titles = table.column("title").to_pylist()
    cats = table.column("category").to_pylist()
    attrs = table.column("attributes").to_pylist()
    return [Conditioning(title=t, category=c, attributes=dict(a or [])) for t, c, a in zip(titles, cats, attrs)]


def build_vocab(conditionings: list[Conditioning], fields: list[str], min_count: int) -> dict[str, list[str]]:
    """Per field, the values seen at least ``min_count`` times, most frequent first, after the
    unknown token at index 0."""
    vocab = {}
    for f in fields:
        counts = Counter(c.value(f) for c in conditionings if c.value(f))
        vocab[f] = [UNKNOWN] + [v for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
    return vocab


@dataclass
class ImageSet:
    """Photos as uint8 tensor (N, 3, H, W) in [0, 255], with their conditionings and product ids."""

    images: torch.Tensor
    conditionings: list[Conditioning]
    product_ids: list[str]
    skipped: list[tuple[str, str]]  # (product_id, reason)


def load_image_set(table: pa.Table, width: int, height: int, threads: int = 8) -> ImageSet:
    """Decode every row's photo (rows without image_uri are skipped), letterbox to width x height
    pixels on white. Undecodable or over-cap photos, and image URIs that
    :func:`catalog_render.catalog.image_uri_problem` refuses (never read), are skipped with their reason. Raises CatalogError when no
    photo could be loaded."""
    ids = table.column("product_id").to_pylist()
    uris = table.column("image_uri").to_pylist()
    conds = conditionings_from_table(table)

    def load(i: int):
        if not uris[i]:
            return i, None, "no image_uri"
        refused = image_uri_problem(uris[i])
        if refused:
            return i, None, f"image_uri refused: {refused}"
        try:
            im = imaging.decode_rgb(storage.read_bytes(uris[i], max_bytes=imaging.MAX_BYTES))
            return i, imaging.to_array(imaging.letterbox(im, width, height)), None
        except (imaging.ImageDecodeError, storage.StorageError) as exc:
            return i, None, str(exc)

    arrays, keep, skipped = [], [], []
    with ThreadPoolExecutor(threads) as pool:
        for i, arr, err in pool.map(load, range(len(ids))):
            if arr is None:
                skipped.append((ids[i], err))
            else:
                arrays.append(arr)
                keep.append(i)
    if not arrays:
        raise CatalogError(f"no trainable photos in the catalog ({len(skipped)} rows skipped)")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, [conds[i] for i in keep], [ids[i] for i in keep], skipped)
