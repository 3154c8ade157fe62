"""The run manifest: one Parquet part per flush under ``OUTPUT/manifest/run=<run_id>/``.

Rows follow ``schemas/manifest.schema.json``. A row with status ``ok`` is written only after its
image object is complete, so a manifest row never points at a missing or partial image. Runs also
leave ``OUTPUT/runs/<run_id>.json`` (options, counts, timings). The image to publish per product
(``OUTPUT/current.parquet``) is :mod:`catalog_render.current`'s, which reads the manifest and the
reviewers' feedback.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import storage
from catalog_render.schemas import load_schema

#: ``left-alone``: a photo kind decided from the inputs to leave the product's own photo as it is
#: (``error`` says why); ``skipped``: the product was quarantined (bad input, ``error`` the reason).
STATUSES = ("ok", "failed", "skipped", "left-alone")
#: The ``error`` prefix of a left-alone row; parts written before ``left-alone`` existed hold such
#: rows as ``skipped`` and read as ``left-alone``.
LEFT_ALONE_PREFIX = "left alone:"


def manifest_schema() -> pa.Schema:
    return load_schema("manifest").arrow


def new_run_id() -> str:
    """``YYYYmmddTHHMMSSZ-<6 hex>``: sortable by start time, unique across concurrent runs."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def manifest_prefix(output_uri: str) -> str:
    return storage.join(output_uri, "manifest")


def to_table(rows: list[dict]) -> pa.Table:
    """Manifest rows (dicts with schema field names; missing fields null) -> a table of the manifest schema.
    Raises ValueError on an unknown status."""
    schema = manifest_schema()
    for r in rows:
        if r.get("status") not in STATUSES:
            raise ValueError(f"bad manifest status {r.get('status')!r}")
        r.setdefault("finished_at", datetime.now(timezone.utc))
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def write_part(output_uri: str, run_id: str, seq: int, rows: list[dict] | pa.Table) -> str | None:
    """Write one manifest part atomically; returns its URI (None when there are no rows)."""
    table = rows if isinstance(rows, pa.Table) else to_table(rows)
    if table.num_rows == 0:
        return None
    uri = storage.join(manifest_prefix(output_uri), f"run={run_id}", f"part-{seq:05d}.parquet")
    storage.write_parquet(table.cast(manifest_schema()), uri)
    return uri


def read_manifest(output_uri: str) -> pa.Table:
    """All manifest rows of every run under an output, oldest part first (empty table if none).
    Parts written before a nullable column was added to the schema read with that column null."""
    parts = storage.list_uris(manifest_prefix(output_uri), suffix=".parquet")
    schema = manifest_schema()
    if not parts:
        return schema.empty_table()
    return pa.concat_tables([_conform_part(storage.read_parquet(p), schema) for p in parts])


def _conform_part(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A part as the current schema: columns added since it was written (nullable ones, e.g.
    ``plan_reason``) are nulls, except ``kind``, which reads as ``render``; ``skipped`` rows whose
    error starts with :data:`LEFT_ALONE_PREFIX` read as ``left-alone``; a missing non-nullable
    column raises KeyError naming it."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        elif f.name == "kind":  # parts written before kinds existed: every row was a generator's render
            cols.append(pa.array(["render"] * table.num_rows, f.type))
        elif f.nullable:
            cols.append(pa.nulls(table.num_rows, f.type))
        else:
            raise KeyError(f"manifest part lacks required column {f.name!r}")
    out = pa.Table.from_arrays(cols, schema=schema)
    status = out.column("status")
    old = pc.and_kleene(pc.equal(status, "skipped"), pc.starts_with(pc.fill_null(out.column("error"), ""), LEFT_ALONE_PREFIX))
    if pc.any(old).as_py():
        out = out.set_column(schema.get_field_index("status"), schema.field("status"), pc.if_else(old, "left-alone", status))
    return out


def ok_render_keys(manifest: pa.Table) -> dict[str, str]:
    """render_key -> image_uri for every ``ok`` row (latest wins)."""
    ok = manifest.filter(pc.equal(manifest.column("status"), "ok"))
    return dict(zip(ok.column("render_key").to_pylist(), ok.column("image_uri").to_pylist()))


def write_run_record(output_uri: str, run_id: str, record: dict) -> str:
    uri = storage.join(output_uri, "runs", f"{run_id}.json")
    storage.write_bytes(uri, json.dumps(record, indent=2, default=str, ensure_ascii=False).encode(), content_type="application/json")
    return uri


def read_run_records(output_uri: str) -> list[dict]:
    """Every run record under an output, oldest first."""
    return [json.loads(storage.read_bytes(u)) for u in storage.list_uris(storage.join(output_uri, "runs"), suffix=".json")]


def image_uri_for(output_uri: str, product_id: str, render_key: str, fmt: str) -> str:
    """``OUTPUT/images/<percent-encoded product_id>/<render_key>.<ext>``: one object per render
    version, so a new render never overwrites the image an older manifest row points at."""
    ext = {"jpeg": "jpg"}.get(fmt, fmt)
    return storage.join(output_uri, "images", storage.safe_key(product_id), f"{render_key}.{ext}")
