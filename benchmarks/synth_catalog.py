"""Synthetic catalogs for planning benchmarks: N products, no photos, written in row groups.

Columns follow schemas/catalog.schema.json. Values are drawn (numpy, fixed seed) from small
vocabularies shaped like the fashion catalog's: a brand, gender, colour and article type make the
title; attributes hold color, gender and usage; ``image_uri`` is null (a backfill renders every
product, a refresh every product without an ok render). Built column-wise, so 10^7 rows take
about a minute and stay within a few hundred MB.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BRANDS = ["Nike", "Puma", "ADIDAS", "Roadster", "Fastrack", "Titan", "Jealous 21", "Lee", "Wrangler", "Spykar", "Mango", "Catwalk"]
GENDERS = ["Men", "Women", "Boys", "Girls", "Unisex"]
COLOURS = ["Black", "White", "Blue", "Navy Blue", "Red", "Grey", "Green", "Brown", "Pink", "Purple", "Silver", "Beige"]
ARTICLES = ["Tshirts", "Shirts", "Casual Shoes", "Watches", "Sports Shoes", "Kurtas", "Tops", "Handbags", "Heels", "Sunglasses",
            "Wallets", "Flip Flops", "Belts", "Socks", "Backpacks", "Jeans", "Shorts", "Trousers", "Flats", "Sandals"]
USAGES = ["Casual", "Sports", "Ethnic", "Formal", "Party", "Travel"]
ROW_GROUP = 100_000


def _pick(rng, values: list[str], n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, len(values), n).astype(np.int32)), pa.array(values)).cast(pa.string())


def chunk(start: int, n: int, seed: int = 0) -> pa.Table:
    """Rows ``start .. start+n-1`` of the synthetic catalog (deterministic per row block)."""
    rng = np.random.default_rng([seed, start])
    ids = pc.binary_join_element_wise("SKU-", pc.utf8_lpad(pa.array(np.arange(start, start + n)).cast(pa.string()), 8, "0"), "")
    brand, gender, colour, article = (_pick(rng, v, n) for v in (BRANDS, GENDERS, COLOURS, ARTICLES))
    usage = _pick(rng, USAGES, n)
    model_no = pa.array(rng.integers(100, 9999, n)).cast(pa.string())
    title = pc.binary_join_element_wise(brand, gender, colour, article, model_no, " ")
    keys = pa.array(np.tile(np.array(["color", "gender", "usage"], dtype=object), n), pa.string())
    values = pa.array(np.column_stack([colour.to_numpy(zero_copy_only=False), gender.to_numpy(zero_copy_only=False),
                                       usage.to_numpy(zero_copy_only=False)]).ravel(), pa.string())
    attrs = pa.MapArray.from_arrays(pa.array(np.arange(0, 3 * n + 1, 3, dtype=np.int32)), keys, values)
    return pa.table({
        "product_id": ids, "title": title, "description": pa.nulls(n, pa.string()), "category": article, "attributes": attrs,
        "image_uri": pa.nulls(n, pa.string()), "updated_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
    })


def write_catalog(path: str, n: int, seed: int = 0) -> str:
    """Write an n-row synthetic catalog Parquet to ``path`` in row groups of 100,000; returns path."""
    writer = None
    try:
        for start in range(0, n, ROW_GROUP):
            t = chunk(start, min(ROW_GROUP, n - start), seed)
            writer = writer or pq.ParquetWriter(path, t.schema)
            writer.write_table(t, row_group_size=ROW_GROUP)
    finally:
        if writer:
            writer.close()
    return path
