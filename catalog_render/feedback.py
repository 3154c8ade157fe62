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
row number, first row = 1). :func:`record_verdicts` is the one writer of parts: imports and the
review page (``catalog-render review``, :mod:`catalog_render.review`) both store through it.
:func:`read_feedback` returns the latest verdict per (product_id, render_key);
:func:`feedback_history` every stored row. Storage goes through :mod:`catalog_render.storage`
(local or ``s3://``).
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
#: A stored verdict that takes back the earlier ones on a render (the review page's undo writes it
#: when the render had no verdict before); :func:`read_feedback` leaves such renders out.
WITHDRAW = "withdraw"
#: Verdict values a feedback part may hold. A feedback file (import) gives approve or reject.
STORED_VERDICTS = VERDICTS + (WITHDRAW,)
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
    uri = record_verdicts(output_uri, rows, source=name, now=now)
    approved = sum(r["verdict"] == "approve" for r in rows)
    return ImportResult(uri, len(rows), approved, len(rows) - approved, ignored)


def record_verdicts(output_uri: str, rows: list[dict], *, source: str, now: datetime | None = None) -> str:
    """Store one batch of verdicts as its own part ``OUTPUT/feedback/part-<UTC time>-<6 hex>.parquet``
    and return its URI: the one write path of :func:`import_feedback` and of the review page
    (:mod:`catalog_render.review`), so a verdict is stored the same way whoever gives it.

    ``rows``: dicts with product_id, render_key, verdict (one of :data:`STORED_VERDICTS`), reviewer,
    optional comment and source_line (default: the row's 1-based position). ``source`` names where
    they came from (the imported file's name; ``review page``; ``undo of <part>``). ``now`` (UTC)
    stamps ``imported_at`` and the part name; default: the current time.

    The part is written atomically (:func:`catalog_render.storage.write_parquet`: temp + rename, or
    one PutObject) under a name no other writer uses, so concurrent writers never lose a verdict.
    Rows are not checked against the manifest here (callers do). Raises FeedbackError for an empty
    batch, an unknown verdict or an empty id/reviewer (nothing written), StorageError when the
    output cannot be written. The caller rewrites ``OUTPUT/current.parquet``
    (:func:`catalog_render.current.write_current_view`)."""
    if not rows:
        raise FeedbackError(f"{source}: no feedback rows")
    for i, r in enumerate(rows, 1):
        if r.get("verdict") not in STORED_VERDICTS:
            raise FeedbackError(f"{source}: row {i}: verdict {r.get('verdict')!r} is not one of {', '.join(STORED_VERDICTS)}")
        for c in ("product_id", "render_key", "reviewer"):
            if not r.get(c):
                raise FeedbackError(f"{source}: row {i}: {c} is empty")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    table = pa.Table.from_pylist(
        [{"product_id": r["product_id"], "render_key": r["render_key"], "verdict": r["verdict"], "comment": r.get("comment") or None,
          "reviewer": r["reviewer"], "imported_at": now, "source": source, "source_line": r.get("source_line") or i}
         for i, r in enumerate(rows, 1)], schema=FEEDBACK_SCHEMA)
    part = f"part-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}.parquet"
    uri = storage.join(feedback_prefix(output_uri), part)
    storage.write_parquet(table, uri)
    return uri


def feedback_history(output_uri: str, cache: dict[str, pa.Table] | None = None) -> pa.Table:
    """Every stored verdict under an output, oldest first: :data:`FEEDBACK_SCHEMA` plus ``part``
    (the part's object name). Order: ``imported_at``, then part name, then ``source_line``; the
    last row of a (product_id, render_key) is its verdict in force.

    ``cache`` (optional, owned by the caller): part URI -> its table. Parts are never rewritten
    (each has a unique name), so a long-lived reader such as the review server passes one dict
    and reads each part once. Raises StorageError when a part cannot be read."""
    parts = storage.list_uris(feedback_prefix(output_uri), suffix=".parquet")
    if not parts:
        return FEEDBACK_SCHEMA.empty_table().append_column("part", pa.array([], pa.string()))
    tables = []
    for uri in parts:
        t = cache.get(uri) if cache is not None else None
        if t is None:
            t = storage.read_parquet(uri).select(FEEDBACK_SCHEMA.names).cast(FEEDBACK_SCHEMA)
            name = str(uri).replace("\\", "/").rsplit("/", 1)[-1]
            t = t.append_column("part", pa.array([name] * t.num_rows, pa.string()))
            if cache is not None:
                cache[uri] = t
        tables.append(t)
    all_rows = pa.concat_tables(tables)
    order = pc.sort_indices(all_rows, sort_keys=[("imported_at", "ascending"), ("part", "ascending"), ("source_line", "ascending")])
    return all_rows.take(order)


def latest_verdicts(history: pa.Table) -> pa.Table:
    """The verdict in force per (product_id, render_key) of a :func:`feedback_history` table: its
    last row, dropped when that row is a ``withdraw`` (the render counts as not reviewed).
    :data:`FEEDBACK_SCHEMA` columns, sorted by product_id, render_key."""
    if history.num_rows == 0:
        return FEEDBACK_SCHEMA.empty_table()
    rows = history.append_column("_order", pa.array(range(history.num_rows), pa.int64()))
    last = rows.group_by(["product_id", "render_key"]).aggregate([("_order", "max")])
    latest = rows.take(last.column("_order_max")).select(FEEDBACK_SCHEMA.names)
    latest = latest.filter(pc.not_equal(latest.column("verdict"), WITHDRAW))
    return latest.take(pc.sort_indices(latest, sort_keys=[("product_id", "ascending"), ("render_key", "ascending")]))


def read_feedback(output_uri: str) -> pa.Table:
    """The latest verdict per (product_id, render_key) under an output, as a table of
    :data:`FEEDBACK_SCHEMA` sorted by product_id, render_key (empty when there is none).

    "Latest" = the most recent import (``imported_at``, then part name), and within one file the
    last row for that pair. A pair whose latest verdict is ``withdraw`` (an undo on the review
    page) is left out: it counts as not reviewed."""
    return latest_verdicts(feedback_history(output_uri))
