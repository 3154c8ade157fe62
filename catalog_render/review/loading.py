"""Reading an output's manifest for the review page: only the columns it shows, each part once.

A run leaves one manifest part per flush (every 64 rows by default), so 50,000 renders are about 800
small Parquet objects. :class:`ManifestCache` reads each part once (parts are never rewritten), in
a thread pool (S3 latency overlaps), with ``pyarrow.parquet.ParquetFile.read`` of the columns in
:data:`READ` only, then concatenates them and casts every column to its type in
``schemas/manifest.schema.json`` once. Measured on 782 parts of 64 rows (50,000 renders, this
2-core machine): ``ParquetFile.read`` of these columns 0.74 CPU s, ``pq.read_table`` of every column
(as :func:`catalog_render.manifest.read_manifest` does, plus a cast per part) 5.0 CPU s
(``benchmarks/review_open.py``).

Title, category and colour come from the conditioning JSON with ``pyarrow.json`` (one C++ parse of
all rows: 0.08 CPU s for 50,000 vs 0.25 s with ``json.loads``); when the rows cannot be read that
way (a malformed string, attributes that are not an object, a field of mixed types) every row goes
through :func:`catalog_render.report_data.conditioning_fields` instead.
"""

from __future__ import annotations

import functools
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from catalog_render import storage
from catalog_render.errors import StorageError
from catalog_render.manifest import manifest_prefix, manifest_schema
from catalog_render.report_data import conditioning_fields
from catalog_render.review.errors import NoManifest, OldManifest, StorageUnavailable

#: Score columns (manifest) the page shows and sorts by.
SCORE_COLUMNS = ("sharpness", "background_whiteness", "fill_ratio", "psnr", "ssim", "lpips", "colourfulness", "colour_delta_e",
                 "clipped_highlights", "clipped_shadows", "recognisability")
#: What a recognisability score means and what it was gated against (catalog_render.recognisability):
#: shown beside it; null in parts written before these columns existed.
RECOGNISABILITY_COLUMNS = ("recognisability_note", "recognisability_threshold")
#: Manifest columns read: what the grid shows and filters on, and what
#: :func:`catalog_render.current.current_view` needs.
READ = ("run_id", "product_id", "render_key", "status", "image_uri", "publish_uri", "reference_uri", "renditions", "finished_at",
        "conditioning", "quality_status", "quality_failed", "compliance_failed", "preset", "family", "model_id", "seed", "width",
        "height", "tries", "plan_reason", *SCORE_COLUMNS, *RECOGNISABILITY_COLUMNS)
#: Parts read at once (threads: they wait on storage, pyarrow releases the GIL while decoding).
READ_THREADS = 8


@functools.cache
def _required() -> tuple[str, ...]:
    """The :data:`READ` columns the manifest schema makes non-nullable (every part must have them)."""
    return tuple(f.name for f in manifest_schema() if not f.nullable and f.name in READ)


def _read_part(uri: str) -> pa.Table | None:
    """The :data:`READ` columns (and ``kind`` when the part has one) of one part; None when it
    vanished since it was listed. Raises OldManifest for a part that is not Parquet or lacks a
    required column, StorageUnavailable when it cannot be read."""
    try:
        data = storage.read_bytes(uri)
    except storage.ObjectNotFound:
        return None
    except StorageError as exc:
        raise StorageUnavailable(f"cannot read the manifest part {storage.display(uri)}: {exc}") from None
    try:
        pf = pq.ParquetFile(io.BytesIO(data))
        names = set(pf.schema_arrow.names)
        lacking = [c for c in _required() if c not in names]
        if lacking:
            raise OldManifest(f"the manifest part {storage.display(uri)} was written by another (older) version of catalog-render: it lacks "
                              f"the required column(s) {', '.join(lacking)}. Review it with the version that wrote it, or render into a "
                              "new output with this one.")
        cols = [c for c in READ if c in names] + (["kind"] if "kind" in names else [])
        return pf.read(columns=cols, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise OldManifest(f"the manifest part {storage.display(uri)} is not readable Parquet: {str(exc).splitlines()[0][:200]}",
                          title="Unreadable manifest") from None


def _conform(tables: list[pa.Table]) -> pa.Table:
    """Concatenate parts (columns a part lacks are null) and cast each :data:`READ` column to its
    manifest type; ``kind`` (any values) as string, absent = ``render``. Raises OldManifest when a
    column cannot be cast (another version's type)."""
    schema = manifest_schema()
    try:
        t = pa.concat_tables(tables, promote_options="permissive")
        cols, fields = [], []
        for name in READ:
            f = schema.field(name)
            col = t.column(name).cast(f.type) if name in t.column_names else pa.nulls(t.num_rows, f.type)
            cols.append(col)
            fields.append(pa.field(name, f.type))
        kind = t.column("kind").cast(pa.string()) if "kind" in t.column_names else pa.nulls(t.num_rows, pa.string())
        cols.append(pc.fill_null(kind, "render"))
        fields.append(pa.field("kind", pa.string()))
        return pa.Table.from_arrays(cols, schema=pa.schema(fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise OldManifest(f"the manifest does not match this version's schema (schemas/manifest.schema.json): "
                          f"{str(exc).splitlines()[0][:300]}") from None


def _derived_slow(conditioning: list) -> tuple[list, list, list]:
    titles, cats, colours = [], [], []
    for raw in conditioning:
        title = None
        try:
            obj = json.loads(raw) if raw else None
            title = obj.get("title") if isinstance(obj, dict) else None
        except ValueError:
            pass
        category, colour = conditioning_fields(raw)
        titles.append(None if title in (None, "") else str(title))
        cats.append(category)
        colours.append(colour)
    return titles, cats, colours


def _text(t: pa.Table | pa.StructArray, name: str, n: int) -> pa.Array:
    """A field of parsed JSON as strings, "" -> null; nulls when absent. Raises ValueError for a
    nested value (not a string or number)."""
    names = t.column_names if isinstance(t, pa.Table) else [t.type.field(i).name for i in range(t.type.num_fields)]
    if name not in names:
        return pa.nulls(n, pa.string())
    col = t.column(name) if isinstance(t, pa.Table) else t.field(name)
    if pa.types.is_nested(col.type):
        raise ValueError(f"{name} is nested")
    col = pc.cast(col, pa.string())
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)


def derived(conditioning: pa.ChunkedArray) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(title, category, colour) string columns from the conditioning JSON column, with
    :func:`catalog_render.report_data.conditioning_fields`'s rules: empty values are null; the
    colour is the first attribute whose key contains ``colo`` and whose value is not empty."""
    n = len(conditioning)
    col = pc.fill_null(pc.cast(conditioning, pa.string()), "{}").combine_chunks() if n else pa.array([], pa.string())
    col = pc.if_else(pc.equal(pc.utf8_trim_whitespace(col), ""), pa.scalar("{}", pa.string()), col)
    try:
        if n == 0:
            raise ValueError("no rows")
        if pc.any(pc.match_substring_regex(col, "[\r\n]")).as_py():
            raise ValueError("a value spans lines")
        one = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), col), "\n")[0].as_buffer()
        t = pajson.read_json(pa.BufferReader(one))
        if t.num_rows != n:
            raise ValueError("not one object per row")
        title, category = _text(t, "title", n), _text(t, "category", n)
        colour = pa.nulls(n, pa.string())
        if "attributes" in t.column_names:
            attrs = t.column("attributes").combine_chunks()
            if not pa.types.is_struct(attrs.type):
                raise ValueError("attributes is not an object")
            keys = [attrs.type.field(i).name for i in range(attrs.type.num_fields) if "colo" in attrs.type.field(i).name.lower()]
            if keys:
                colour = pc.coalesce(*[_text(attrs, k, n) for k in keys])
        return pa.array(title, pa.string()), pa.array(category, pa.string()), pa.array(colour, pa.string())
    except (pa.ArrowException, ValueError):
        titles, cats, colours = _derived_slow(col.to_pylist())
        return pa.array(titles, pa.string()), pa.array(cats, pa.string()), pa.array(colours, pa.string())


class ManifestCache:
    """The :data:`READ` columns of every manifest part of one output, each part read once.

    :meth:`load` lists the parts and reads only those not read before. Thread-safe."""

    def __init__(self, output_uri: str):
        self.output_uri = output_uri
        self._tables: dict[str, pa.Table] = {}
        self._lock = threading.Lock()
        self.parts: list[str] = []

    def list_parts(self) -> list[str]:
        try:
            return storage.list_uris(manifest_prefix(self.output_uri), suffix=".parquet")
        except StorageError as exc:
            raise StorageUnavailable(f"cannot list the manifest of {self.output_uri}: {exc}") from None

    def load(self, parts: list[str] | None = None) -> pa.Table:
        """Every manifest row (parts in name order, rows in part order: the order of
        :func:`catalog_render.manifest.read_manifest`), :data:`READ` columns plus ``kind`` and
        ``_part`` (index of the row's part in :attr:`parts`).
        ``parts``: a listing just made (default: list now). Raises NoManifest, OldManifest or
        StorageUnavailable."""
        with self._lock:
            parts = self.list_parts() if parts is None else parts
            if not parts:
                raise NoManifest(f"{storage.display(self.output_uri)} has no manifest "
                                 f"({storage.display(manifest_prefix(self.output_uri))} holds no Parquet part): no run has written "
                                 "renders here yet. Check the output URI, or run `catalog-render run --output` into it first.")
            new = [u for u in parts if u not in self._tables]
            if new:
                with ThreadPoolExecutor(min(READ_THREADS, len(new))) as pool:
                    for uri, t in zip(new, pool.map(_read_part, new)):
                        if t is not None:
                            self._tables[uri] = t
            self.parts = [u for u in parts if u in self._tables]
            if not self.parts:
                raise NoManifest(f"the manifest parts of {storage.display(self.output_uri)} vanished while being read")
            tables = [self._tables[u] for u in self.parts]
            t = _conform(tables)
            index = np.repeat(np.arange(len(tables), dtype=np.int32), [x.num_rows for x in tables])
            return t.append_column("_part", pa.array(index, pa.int32()))

    def full_row(self, part: str, render_key: str) -> dict | None:
        """Every column of the last ok row of ``render_key`` in the part ``part`` (columns of the
        schema that the part lacks are None); None when there is none."""
        try:
            t = storage.read_parquet(part)
        except StorageError:
            return None
        hit = t.filter(pc.and_(pc.equal(t.column("render_key"), render_key), pc.equal(t.column("status"), "ok")))
        if hit.num_rows == 0:
            return None
        row = hit.slice(hit.num_rows - 1).to_pylist()[0]
        return {**{f.name: None for f in manifest_schema()}, **row}
