"""``catalog-render design export``: approved design variations as proposed catalog rows.

A reviewer approves a variation the way any render is approved (``feedback import`` or the review
page: :func:`catalog_render.feedback.record_verdicts`). :func:`export_approved` turns each
approved, still present ``design`` variation of an output (its verdict in force is ``approve``:
:func:`catalog_render.feedback.read_feedback`) into one row of the catalog schema
(``schemas/catalog.schema.json``), written as Parquet that ``run`` and ``validate`` read:

| column | value |
| --- | --- |
| product_id | ``<product>-design-<first 10 hex of the render_key>``: a new SKU, stable across exports |
| title | the product's title with its own value of the swept field replaced by the variation's (whole words, case ignored), else the title followed by `` (<value>)``; a walk: `` (design <t>)`` |
| category, attributes | the variation's conditioning (a sweep's value set), plus ``design_source_product``, ``design_render_key``, ``design_method`` and ``design_approved_by`` |
| description | ``Proposed design: <method> of product <id>, approved by <reviewer>[: <comment>]`` |
| image_uri | the variation's image in the output |

Approved design sheets are counted and left out (a sheet shows several designs, not one product).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import manifest, storage
from catalog_render.errors import CatalogError, FeedbackError


@dataclass
class ExportResult:
    """``uri``: the Parquet written; ``rows``: proposed products in it; ``sheets_skipped``:
    approved design sheets left out; ``missing``: approved variations whose image is gone (left out)."""

    uri: str
    rows: int
    sheets_skipped: int = 0
    missing: list[str] = field(default_factory=list)


def proposed_title(title: str | None, own: str | None, value: str) -> str:
    """``title`` with the whole word(s) ``own`` replaced by ``value`` (case ignored), else
    ``title (value)``; ``value`` alone when there is no title."""
    if not title:
        return value
    if own:
        pattern = re.compile(rf"(?<!\w){re.escape(own)}(?!\w)", re.IGNORECASE)
        if pattern.search(title):
            return pattern.sub(value, title)
    return f"{title} ({value})"


def proposal(row: dict, verdict: dict) -> dict:
    """The catalog row proposed from one approved variation's manifest ``row`` (its
    ``generation_params`` hold the variation and the product's own fields, as kinds.design
    records them) and its ``verdict`` (reviewer, comment, imported_at)."""
    params = json.loads(row["generation_params"] or "{}")
    inputs, product = params.get("design") or {}, params.get("product") or {}
    cond = json.loads(row["conditioning"] or "{}")
    pid, key = row["product_id"], row["render_key"]
    attrs = {k: str(v) for k, v in (cond.get("attributes") or {}).items() if v is not None}
    if inputs.get("mode") == "sweep":
        field_name = inputs["field"]
        own = product.get("category") if field_name == "category" else (product.get("attributes") or {}).get(field_name[len("attributes."):])
        title = proposed_title(product.get("title"), own, inputs["value"])
    else:
        title = f"{product.get('title') or pid} (design {row['method'].split(' ', 1)[-1]})"
    attrs.update(design_source_product=pid, design_render_key=key, design_method=row["method"], design_approved_by=verdict["reviewer"])
    comment = f": {verdict['comment']}" if verdict.get("comment") else ""
    return {"product_id": f"{pid}-design-{key[:10]}", "title": title, "category": cond.get("category"),
            "description": f"Proposed design: {row['method']} of product {pid}, approved by {verdict['reviewer']}{comment}",
            "attributes": sorted(attrs.items()), "image_uri": row["image_uri"], "updated_at": verdict.get("imported_at")}


def export_approved(output_uri: str, out_uri: str) -> ExportResult:
    """Write the approved design variations of ``output_uri`` as catalog Parquet at ``out_uri``
    (see the module doc) and return what was written. Raises FeedbackError when no design
    variation of the output is approved (nothing is written), CatalogError if the rows would not
    validate against the catalog schema, StorageError when the output cannot be read or written."""
    from catalog_render import catalog, feedback

    m = manifest.read_manifest(output_uri)
    ok = m.filter(pc.and_(pc.equal(m.column("status"), "ok"), pc.equal(pc.fill_null(m.column("kind"), ""), "design")))
    verdicts = {(v["product_id"], v["render_key"]): v for v in feedback.read_feedback(output_uri).to_pylist() if v["verdict"] == "approve"}
    rows, sheets, missing, seen = [], 0, [], set()
    for r in ok.to_pylist():
        v = verdicts.get((r["product_id"], r["render_key"]))
        if v is None or r["render_key"] in seen:
            continue
        seen.add(r["render_key"])
        if r["method"] == "design-sheet":
            sheets += 1
            continue
        if not storage.exists(r["image_uri"]):
            missing.append(r["image_uri"])
            continue
        rows.append(proposal(r, v))
    if not rows:
        raise FeedbackError(f"no approved design variation with its image in {storage.display(output_uri)} "
                            f"({sheets} approved sheet(s), {len(missing)} approved image(s) missing): approve variations with "
                            "`catalog-render review` or `feedback import` first")
    schema = catalog.catalog_schema().arrow
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
    problems = catalog.validate(table)
    if problems:
        raise CatalogError(f"proposed rows do not validate: {problems[0]}")
    storage.write_parquet(table, out_uri)
    return ExportResult(out_uri, table.num_rows, sheets, missing)
