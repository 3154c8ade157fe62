"""The current view: ``OUTPUT/current.parquet``, the image to publish per product.

Rows follow ``schemas/current.schema.json``. The view is derived from the manifest
(:mod:`catalog_render.manifest`) and the reviewers' verdicts (:mod:`catalog_render.feedback`), and
rewritten at the end of each run and after each feedback import.
"""

from __future__ import annotations

import json

import pyarrow as pa

from catalog_render import storage
from catalog_render.feedback import feedback_history, feedback_prefix, latest_verdicts
from catalog_render.manifest import read_manifest
from catalog_render.schemas import load_schema

#: Object name of the current view under an output.
CURRENT_VIEW = "current.parquet"
#: Kinds whose images are never a product's published image: design variations are proposals for
#: new products (a red variation of a blue shirt is not a photo of the blue shirt); comparison and
#: label images carry text or several products, which Amazon's main-image rules forbid
#: (manifest column ``never_main``), so they never become a product's current main image.
UNPUBLISHED_KINDS = ("design", "comparison", "label")


def current_schema() -> pa.Schema:
    return load_schema("current").arrow


def current_view(manifest: pa.Table, feedback: pa.Table | None = None, existing_images: set[str] | None = None) -> pa.Table:
    """The image to publish per product (``schemas/current.schema.json``), sorted by product_id.

    ``manifest``: the output's rows (:func:`catalog_render.manifest.read_manifest`); ``feedback``:
    the latest verdict per (product_id, render_key) (:func:`catalog_render.feedback.read_feedback`;
    when a pair repeats, its last row wins); ``existing_images``: the image URIs present under the output (None: not
    checked).

    Candidates of a product: its ``ok`` rows whose (product_id, render_key) is not rejected, whose
    quality_status is not ``failed-quality`` (unless a reviewer approved that render) and whose
    image_uri is in ``existing_images``. The chosen one is the latest (``finished_at``, then
    manifest order) of the candidates that are approved and conditioned like the product's latest
    candidate, or, when none is, the latest candidate. An approval therefore holds across model and
    parameter changes (the planner does not re-render such a product), but not once the product
    changed and was rendered again (a newer render with another conditioning). A product without a
    candidate (only rejected, failed or vanished renders) has no row: a rejected render is never
    published, nor one of :data:`UNPUBLISHED_KINDS`. ``publish_uri`` is the row's publish_uri, or its image_uri when null; ``verdict`` and
    ``reviewer`` are set only for an approved render."""
    verdicts: dict[tuple[str, str], tuple[str, str]] = {}
    if feedback is not None:
        for r in feedback.select(["product_id", "render_key", "verdict", "reviewer"]).to_pylist():
            verdicts[(r["product_id"], r["render_key"])] = (r["verdict"], r["reviewer"])
    cols = ["product_id", "render_key", "status", "image_uri", "publish_uri", "run_id", "finished_at", "quality_status", "conditioning"]
    kinds = manifest.column("kind").to_pylist() if "kind" in manifest.column_names else [None] * manifest.num_rows
    candidates: dict[str, list[tuple[int, dict]]] = {}
    for i, r in enumerate(manifest.select(cols).to_pylist()):
        if r["status"] != "ok" or not r["render_key"] or not r["image_uri"] or kinds[i] in UNPUBLISHED_KINDS:
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


#: Rounds :func:`write_current_view` makes at most while other writers keep adding parts.
MAX_VIEW_ROUNDS = 5


def _inputs(output_uri: str) -> tuple[list[str], list[str]]:
    """The manifest and feedback parts the view is derived from (both only ever gain parts)."""
    return (storage.list_uris(storage.join(output_uri, "manifest"), suffix=".parquet"),
            storage.list_uris(feedback_prefix(output_uri), suffix=".parquet"))


def write_current_view(output_uri: str, *, feedback_cache: dict | None = None, manifest_reader=None) -> str:
    """Write ``OUTPUT/current.parquet`` (atomically, replacing the previous one) from the output's
    manifest, its review feedback and the image objects present (see :func:`current_view`);
    returns its URI. An output without renders gets an empty table of the schema. Local paths are
    made absolute (as run_job records image URIs). Raises StorageError when the output cannot be
    read or written.

    Concurrent writers (a run ending, an import, reviewers on the review page) each store their
    part first and then call this. Each call lists the manifest and feedback parts before reading
    them and again after writing; when a part appeared meanwhile, its write may have replaced a
    newer view, so it writes again (at most :data:`MAX_VIEW_ROUNDS` times). The last writer's
    listing after its write is then the one its view was made from, so the view left in place
    includes every part stored before it. ``feedback_cache``: see
    :func:`catalog_render.feedback.feedback_history`. ``manifest_reader``: a callable returning
    the manifest rows (at least the columns :func:`current_view` reads) as
    :func:`catalog_render.manifest.read_manifest` would now, for a reader that keeps the parts it
    has read (the review server); default: ``read_manifest(output_uri)``."""
    if not storage.is_s3(output_uri):
        output_uri = storage.display(output_uri)
    uri = storage.join(output_uri, CURRENT_VIEW)
    before = _inputs(output_uri)
    for _ in range(MAX_VIEW_ROUNDS):
        existing = set(storage.list_uris(storage.join(output_uri, "images")))
        fb = latest_verdicts(feedback_history(output_uri, feedback_cache))
        table = current_view(manifest_reader() if manifest_reader else read_manifest(output_uri), fb, existing)
        storage.write_parquet(table, uri)
        after = _inputs(output_uri)
        if after == before:
            break
        before = after
    return uri
