"""The run manifest: one Parquet part per flush under ``OUTPUT/manifest/run=<run_id>/``.

Rows follow ``schemas/manifest.schema.json``. A row with status ``ok`` is written only after its
image object is complete, so a manifest row never points at a missing or partial image. Runs also
leave ``OUTPUT/runs/<run_id>.json`` (options, counts, timings), and :func:`write_current_view` keeps
``OUTPUT/current.parquet``: the image to publish per product (``schemas/current.schema.json``).
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import storage
from catalog_render.schemas import load_schema

STATUSES = ("ok", "failed", "skipped")


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
    ``plan_reason``) are nulls; a missing non-nullable column raises KeyError naming it."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        elif f.nullable:
            cols.append(pa.nulls(table.num_rows, f.type))
        else:
            raise KeyError(f"manifest part lacks required column {f.name!r}")
    return pa.Table.from_arrays(cols, schema=schema)


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


#: Object name of the current view under an output.
CURRENT_VIEW = "current.parquet"


def current_schema() -> pa.Schema:
    return load_schema("current").arrow


def current_view(manifest: pa.Table, feedback: pa.Table | None = None, existing_images: set[str] | None = None) -> pa.Table:
    """The image to publish per product (``schemas/current.schema.json``), sorted by product_id.

    ``manifest``: the output's rows (:func:`read_manifest`); ``feedback``: the latest verdict per
    (product_id, render_key) (:func:`catalog_render.feedback.read_feedback`; when a pair repeats,
    its last row wins); ``existing_images``: the image URIs present under the output (None: not
    checked).

    Candidates of a product: its ``ok`` rows whose (product_id, render_key) is not rejected, whose
    quality_status is not ``failed-quality`` (unless a reviewer approved that render) and whose
    image_uri is in ``existing_images``. The chosen one is the latest (``finished_at``, then
    manifest order) of the candidates that are approved and conditioned like the product's latest
    candidate, or, when none is, the latest candidate. An approval therefore holds across model and
    parameter changes (the planner does not re-render such a product), but not once the product
    changed and was rendered again (a newer render with another conditioning). A product without a
    candidate (only rejected, failed or vanished renders) has no row: a rejected render is never
    published. ``publish_uri`` is the row's publish_uri, or its image_uri when null; ``verdict`` and
    ``reviewer`` are set only for an approved render."""
    verdicts: dict[tuple[str, str], tuple[str, str]] = {}
    if feedback is not None:
        for r in feedback.select(["product_id", "render_key", "verdict", "reviewer"]).to_pylist():
            verdicts[(r["product_id"], r["render_key"])] = (r["verdict"], r["reviewer"])
    cols = ["product_id", "render_key", "status", "image_uri", "publish_uri", "run_id", "finished_at", "quality_status", "conditioning"]
    candidates: dict[str, list[tuple[int, dict]]] = {}
    for i, r in enumerate(manifest.select(cols).to_pylist()):
        if r["status"] != "ok" or not r["render_key"] or not r["image_uri"]:
            continue
        if existing_images is not None and r["image_uri"] not in existing_images:
            continue
        verdict, reviewer = verdicts.get((r["product_id"], r["render_key"]), (None, None))
        if verdict == "reject" or (r["quality_status"] == "failed-quality" and verdict != "approve"):
            continue  # never publish a rejected render, nor one that failed the gate unless a person approved it
        r["verdict"], r["reviewer"] = ("approve", reviewer) if verdict == "approve" else (None, None)
        candidates.setdefault(r["product_id"], []).append((i, r))

    def newest(rows: list[tuple[int, dict]]) -> dict:
        return max(rows, key=lambda ir: (ir[1]["finished_at"], ir[0]))[1]

    def conditioning(r: dict):
        return json.loads(r["conditioning"]) if r["conditioning"] else None

    out = []
    for pid in sorted(candidates):
        rows = candidates[pid]
        now = conditioning(newest(rows))
        approved = [(i, r) for i, r in rows if r["verdict"] == "approve" and conditioning(r) == now]
        chosen = newest(approved or rows)
        out.append({**chosen, "publish_uri": chosen["publish_uri"] or chosen["image_uri"]})
    schema = current_schema()
    return pa.Table.from_pylist([{f.name: r[f.name] for f in schema} for r in out], schema=schema)


def write_current_view(output_uri: str) -> str:
    """Write ``OUTPUT/current.parquet`` (atomically, replacing the previous one) from the output's
    manifest, its review feedback and the image objects present (see :func:`current_view`);
    returns its URI. An output without renders gets an empty table of the schema. Local paths are
    made absolute (as run_job records image URIs). Raises StorageError when the output cannot be
    read or written."""
    from catalog_render import feedback as feedback_mod  # feedback imports this module

    if not storage.is_s3(output_uri):
        output_uri = storage.display(output_uri)
    existing = set(storage.list_uris(storage.join(output_uri, "images")))
    table = current_view(read_manifest(output_uri), feedback_mod.read_feedback(output_uri), existing)
    uri = storage.join(output_uri, CURRENT_VIEW)
    storage.write_parquet(table, uri)
    return uri
