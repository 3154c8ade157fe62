"""Reviewers' verdicts on renders: import a feedback file, validate it, keep it beside the manifest.

A feedback file is CSV (UTF-8, header row) or Parquet with the columns

| column | required | meaning |
| --- | --- | --- |
| product_id | yes | catalog product id |
| render_key | yes | the render's key, as in the manifest |
| verdict | yes | ``approve`` or ``reject`` (case and surrounding spaces ignored) |
| reviewer | yes | who decided (name or id) |
| comment | no | free text |

Other columns are ignored (and reported). :func:`import_feedback` checks every row and, when all are
valid, stores them as one Parquet part ``OUTPUT/feedback/part-<UTC timestamp>-<6 hex>.parquet``
(:data:`FEEDBACK_SCHEMA`; the random suffix keeps two imports in the same microsecond apart); with
any bad row nothing is written and :class:`~catalog_render.errors.FeedbackError` lists every
problem with its line (CSV: the file line where the record starts, header = line 1; Parquet: the
row number, first row = 1). :func:`read_feedback` returns the latest verdict per
(product_id, render_key). Storage goes through :mod:`catalog_render.storage` (local or ``s3://``).
"""

from __future__ import annotations

import csv
import io
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog_render import manifest, storage
from catalog_render.errors import FeedbackError, StorageError

VERDICTS = ("approve", "reject")
REQUIRED_COLUMNS = ("product_id", "render_key", "verdict", "reviewer")
OPTIONAL_COLUMNS = ("comment",)
#: Largest feedback file accepted, bytes.
MAX_FEEDBACK_BYTES = 256 * 1024 * 1024
#: Problems listed in a FeedbackError message (all are in ``.problems``).
MAX_PROBLEMS_SHOWN = 20

FEEDBACK_SCHEMA = pa.schema([
    pa.field("product_id", pa.string(), nullable=False),
    pa.field("render_key", pa.string(), nullable=False),
    pa.field("verdict", pa.string(), nullable=False),
    pa.field("comment", pa.string()),
    pa.field("reviewer", pa.string(), nullable=False),
    pa.field("imported_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_line", pa.int64(), nullable=False),
])


@dataclass
class ImportResult:
    """What :func:`import_feedback` stored: the part's URI, its row count, verdict counts, and
    columns of the file that were ignored."""

    uri: str
    rows: int
    approved: int
    rejected: int
    ignored_columns: list[str] = field(default_factory=list)


def feedback_prefix(output_uri: str) -> str:
    return storage.join(output_uri, "feedback")


def _read_csv(data: bytes) -> tuple[list[str], list[tuple[int, dict[str, str]]], list[str]]:
    """(header, [(start line, {column: value})], problems) of a CSV file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedbackError(f"feedback CSV is not UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    problems: list[str] = []
    last = 0
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if not record or all(not c.strip() for c in record):
                continue  # blank line
            if header is None:
                header = [c.strip() for c in record]
                continue
            if len(record) != len(header):
                problems.append(f"line {start}: {len(record)} fields, the header has {len(header)}")
                continue
            rows.append((start, dict(zip(header, record))))
    except csv.Error as exc:
        raise FeedbackError(f"feedback CSV is malformed at line {reader.line_num}: {exc}") from None
    if header is None:
        raise FeedbackError("feedback file is empty (no header row)")
    return header, rows, problems


def _read_parquet(data: bytes) -> tuple[list[str], list[tuple[int, dict[str, str]]], list[str]]:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise FeedbackError(f"feedback file is not readable Parquet ({exc})") from None
    header = table.column_names
    cols = {name: table.column(name).to_pylist() for name in header}
    rows = [(i + 1, {name: cols[name][i] for name in header}) for i in range(table.num_rows)]
    return header, rows, []


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def validate_feedback(data: bytes, source: str = "feedback") -> tuple[list[dict], list[str], list[str]]:
    """Parse and check a feedback file's bytes (CSV, or Parquet when it starts with ``PAR1``).

    Returns ``(rows, problems, ignored_columns)``: valid rows as dicts (product_id, render_key,
    verdict lower-cased, comment or None, reviewer, source_line), and one message per bad row
    (``line 7: verdict 'aprove' is not approve or reject``). Raises FeedbackError when the file as
    a whole cannot be used (unreadable, no header, required columns missing — named)."""
    is_parquet = data[:4] == b"PAR1"
    header, raw_rows, problems = (_read_parquet if is_parquet else _read_csv)(data)
    where = "row" if is_parquet else "line"
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise FeedbackError(f"{source}: missing required column(s) {', '.join(missing)} (has: {', '.join(header)})")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise FeedbackError(f"{source}: duplicate column(s) {', '.join(dupes)}")
    ignored = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    rows: list[dict] = []
    for line, raw in raw_rows:
        row_problems = []
        # ids are data: kept exactly (a product id may have spaces around it); the rest is trimmed
        values = {c: (_text(raw.get(c)) if c not in ("product_id", "render_key") else ("" if raw.get(c) is None else str(raw.get(c))))
                  for c in REQUIRED_COLUMNS}
        for c in ("product_id", "render_key", "reviewer"):
            if not values[c]:
                row_problems.append(f"{where} {line}: {c} is empty")
        verdict = values["verdict"].lower()
        if verdict not in VERDICTS:
            shown = repr(raw.get("verdict")) if values["verdict"] else "empty"
            row_problems.append(f"{where} {line}: verdict {shown} is not approve or reject")
        if row_problems:
            problems.extend(row_problems)
            continue
        comment = _text(raw.get("comment")) or None
        rows.append({"product_id": values["product_id"], "render_key": values["render_key"], "verdict": verdict,
                     "comment": comment, "reviewer": values["reviewer"], "source_line": line})
    problems.sort(key=lambda p: int(p.split(" ", 2)[1].rstrip(":")))
    return rows, problems, ignored


def import_feedback(source_uri: str, output_uri: str, *, check_manifest: bool = True, now: datetime | None = None) -> ImportResult:
    """Validate a feedback file (local path or ``s3://``) and store it under ``OUTPUT/feedback/``.

    With ``check_manifest`` (default), every (product_id, render_key) must be an ``ok`` row of the
    output's manifest; unknown pairs are problems too (a typo'd key would otherwise be stored and
    never match a render). All problems are collected before failing: FeedbackError's message
    names the first :data:`MAX_PROBLEMS_SHOWN` and ``.problems`` holds all. A file with no data rows
    is an error. ``now`` (UTC) stamps ``imported_at`` and the part name; default: the current time.
    """
    try:
        data = storage.read_bytes(source_uri, max_bytes=MAX_FEEDBACK_BYTES)
    except StorageError as exc:
        raise FeedbackError(f"cannot read feedback file: {exc}") from None
    name = str(source_uri).rstrip("/").rsplit("/", 1)[-1]
    rows, problems, ignored = validate_feedback(data, name)
    if check_manifest and rows:
        m = manifest.read_manifest(output_uri)
        ok = m.filter(pc.equal(m.column("status"), "ok"))
        known = set(zip(ok.column("product_id").to_pylist(), ok.column("render_key").to_pylist()))
        where = "row" if data[:4] == b"PAR1" else "line"
        bad = [r for r in rows if (r["product_id"], r["render_key"]) not in known]
        for r in bad:
            problems.append(f"{where} {r['source_line']}: no rendered image of product {r['product_id']!r} with render_key"
                            f" {r['render_key']!r} in the manifest of {storage.display(output_uri)}")
        problems.sort(key=lambda p: int(p.split(" ", 2)[1].rstrip(":")))
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise FeedbackError(f"{name}: {len(problems)} bad row(s): {shown}{more}", problems)
    if not rows:
        raise FeedbackError(f"{name}: no feedback rows")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    table = pa.Table.from_pylist(
        [{**r, "imported_at": now, "source": name} for r in rows], schema=FEEDBACK_SCHEMA)
    part = f"part-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}.parquet"
    uri = storage.join(feedback_prefix(output_uri), part)
    storage.write_parquet(table, uri)
    approved = sum(r["verdict"] == "approve" for r in rows)
    return ImportResult(uri, len(rows), approved, len(rows) - approved, ignored)


def read_feedback(output_uri: str) -> pa.Table:
    """The latest verdict per (product_id, render_key) under an output, as a table of
    :data:`FEEDBACK_SCHEMA` sorted by product_id, render_key (empty when there is none).

    "Latest" = the most recent import (``imported_at``, then part name), and within one file the
    last row for that pair."""
    parts = storage.list_uris(feedback_prefix(output_uri), suffix=".parquet")
    if not parts:
        return FEEDBACK_SCHEMA.empty_table()
    tables = []
    for i, uri in enumerate(parts):
        t = storage.read_parquet(uri).select(FEEDBACK_SCHEMA.names).cast(FEEDBACK_SCHEMA)
        tables.append(t.append_column("_part", pa.array([i] * t.num_rows, pa.int64())))
    all_rows = pa.concat_tables(tables)
    order = pc.sort_indices(all_rows, sort_keys=[("imported_at", "ascending"), ("_part", "ascending"), ("source_line", "ascending")])
    all_rows = all_rows.take(order)
    all_rows = all_rows.append_column("_order", pa.array(range(all_rows.num_rows), pa.int64()))
    last = all_rows.group_by(["product_id", "render_key"]).aggregate([("_order", "max")])
    latest = all_rows.take(last.column("_order_max")).select(FEEDBACK_SCHEMA.names)
    return latest.take(pc.sort_indices(latest, sort_keys=[("product_id", "ascending"), ("render_key", "ascending")]))
