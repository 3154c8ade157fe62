"""Catalogs: ingest a CSV + photo folder into catalog Parquet, read and validate catalogs.

A catalog is a Parquet file following ``schemas/catalog.schema.json``: product_id (string,
unique, required), title, description, category, attributes (map<string,string>), image_uri
(nullable), updated_at (nullable, UTC).
"""

from __future__ import annotations

import csv
import io
import math
import os
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog_render import storage
from catalog_render.errors import CatalogError, StorageError
from catalog_render.schemas import load_schema

#: Longest accepted product id, in characters (longer ids are quarantined at run time).
MAX_PRODUCT_ID_CHARS = 256
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
DEFAULT_NA_VALUES = ("", "NA", "N/A", "null", "NULL", "None")


def catalog_schema():
    return load_schema("catalog")


# --------------------------------------------------------------------------------------- mapping
def parse_mapping(spec: str) -> dict[str, str]:
    """Parse ``--map`` text such as ``product_id=id,title=productDisplayName,attributes.color=baseColour``.

    Returns {catalog field -> CSV column}. Raises CatalogError naming the bad entry: an entry that
    is not ``target=source``, an unknown target field, or a target given twice. ``product_id`` must
    be mapped.
    """
    schema = catalog_schema()
    allowed = set(schema.names) - {"attributes"}
    mapping: dict[str, str] = {}
    for raw in [p.strip() for p in spec.split(",") if p.strip()]:
        target, sep, source = raw.partition("=")
        target, source = target.strip(), source.strip()
        if not sep or not target or not source:
            raise CatalogError(f"--map entry {raw!r} is not of the form field=column")
        if target.startswith("attributes."):
            if not target[len("attributes.") :]:
                raise CatalogError(f"--map entry {raw!r}: attribute name is empty")
        elif target not in allowed:
            raise CatalogError(
                f"--map entry {raw!r}: unknown catalog field {target!r} "
                f"(fields: {', '.join(sorted(allowed))}, or attributes.<name>)"
            )
        if target in mapping:
            raise CatalogError(f"--map maps {target!r} twice")
        mapping[target] = source
    if "product_id" not in mapping:
        raise CatalogError("--map must map product_id (e.g. product_id=id)")
    return mapping


# ------------------------------------------------------------------------------------------- CSV
@dataclass
class CsvRead:
    header: list[str]
    rows: list[dict[str, str]]
    line_numbers: list[int]
    repaired: list[int] = field(default_factory=list)  # line numbers whose extra fields were merged
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def read_csv_rows(data: bytes, overflow_column: str | None) -> CsvRead:
    """Read CSV bytes (UTF-8, optional BOM) with Python's csv module, repairing real-world rows.

    A row with more fields than the header had unquoted commas inside a free-text column: the
    surplus is merged back into ``overflow_column`` (fields before it are taken left-aligned,
    fields after it right-aligned) and the row's line number is listed in ``repaired``. A row with
    fewer fields than the header, or with surplus when no overflow column is known, is listed in
    ``rejected`` with its reason. Line numbers are 1-based file lines (the header is line 1).
    Raises CatalogError when the bytes are not UTF-8 or the header is empty.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CatalogError(f"CSV is not valid UTF-8 (first bad byte on line {line})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CatalogError("CSV is empty (no header row)") from None
    if not any(header):
        raise CatalogError("CSV header row is empty")
    n = len(header)
    over = header.index(overflow_column) if overflow_column in header else None
    out = CsvRead(header=header, rows=[], line_numbers=[])
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) > n:
            if over is None:
                out.rejected.append((line, f"{len(fields)} fields, header has {n}"))
                continue
            surplus = len(fields) - n
            merged = ",".join(fields[over : over + surplus + 1])
            fields = fields[:over] + [merged] + fields[over + surplus + 1 :]
            out.repaired.append(line)
        elif len(fields) < n:
            out.rejected.append((line, f"{len(fields)} fields, header has {n}"))
            continue
        out.rows.append(dict(zip(header, fields)))
        out.line_numbers.append(line)
    return out


# ---------------------------------------------------------------------------------------- ingest
@dataclass
class IngestResult:
    table: pa.Table
    rows_read: int
    repaired_lines: list[int]
    rejected: list[tuple[int, str]]
    missing_images: int
    #: (CSV line, product_id, why) of each row without a photo, in CSV order: the image column is
    #: empty, or the file it names (or ``<product_id>.*``) is not under ``--images``.
    without_photo: list[tuple[int, str, str]] = field(default_factory=list)


def _index_images(images: str) -> dict[str, str]:
    """Map of name keys -> URI for every image under a folder/prefix (relative path and stem)."""
    index: dict[str, str] = {}
    base = images.rstrip("/")
    for uri in storage.list_uris(images):
        if not uri.lower().endswith(IMAGE_SUFFIXES):
            continue
        rel = uri[len(base) :].lstrip("/").replace("\\", "/")
        index.setdefault(rel, uri)
        index.setdefault(posixpath.basename(rel), uri)
        index.setdefault(PurePosixPath(rel).stem, uri)
    return index


def ingest(
    csv_uri: str,
    images: str | None,
    mapping: dict[str, str],
    na_values: tuple[str, ...] = DEFAULT_NA_VALUES,
) -> IngestResult:
    """Turn a CSV (and a folder/prefix of photos) into a catalog table following the catalog schema.

    Text cells equal to one of ``na_values`` become null (attributes with such values are dropped).
    ``image_uri`` comes from the mapped column, looked up under ``images`` by relative path, file
    name, or stem; without an ``image_uri`` mapping a photo named ``<product_id>.<jpg|jpeg|png|webp>``
    is used; without ``images`` the column's values are the URIs, and a local path that names no
    file is not found (S3 URIs are not checked here: ``validate --check-images`` does). A product
    whose photo is not found gets a null image_uri (counted in
    ``missing_images``, and listed with the reason in ``without_photo``). Raises CatalogError for an unknown column in the mapping, duplicate
    product ids (listing them), or no usable rows; StorageError when the CSV cannot be read.
    """
    try:
        data = storage.read_bytes(csv_uri)
    except storage.ObjectNotFound:
        raise CatalogError(f"CSV not found: {csv_uri}") from None
    parsed = read_csv_rows(data, overflow_column=mapping.get("title"))
    unknown = [f"{t}={s}" for t, s in mapping.items() if s not in parsed.header]
    if unknown:
        raise CatalogError(
            f"--map names columns not in the CSV: {', '.join(unknown)} (CSV columns: {', '.join(parsed.header)})"
        )
    na = set(na_values)

    def cell(row: dict[str, str], col: str) -> str | None:
        v = row[col].strip()
        return None if v in na else v

    if images and not storage.is_s3(images):
        images = storage.display(images)  # absolute, so the catalog works from any directory
    index = _index_images(images) if images else {}
    if images and not index:
        raise CatalogError(f"--images {images}: folder not found or holds no .jpg/.jpeg/.png/.webp images")
    image_col = mapping.get("image_uri")
    attr_cols = {t[len("attributes.") :]: s for t, s in mapping.items() if t.startswith("attributes.")}
    cols: dict[str, list] = {k: [] for k in ("product_id", "title", "description", "category", "attributes", "image_uri", "updated_at")}
    rejected = list(parsed.rejected)
    missing = 0
    without: list[tuple[int, str, str]] = []
    for row, line in zip(parsed.rows, parsed.line_numbers):
        pid = row[mapping["product_id"]].strip()
        if not pid:
            rejected.append((line, "empty product_id"))
            continue
        cols["product_id"].append(pid)
        for f in ("title", "description", "category"):
            cols[f].append(cell(row, mapping[f]) if f in mapping else None)
        attrs = [(k, v) for k, v in ((k, cell(row, s)) for k, s in attr_cols.items()) if v is not None]
        cols["attributes"].append(attrs)
        uri, unfound = None, None
        if images:
            key = cell(row, image_col) if image_col else pid
            if key:
                key = key.replace("\\", "/")
                uri = index.get(key) or index.get(posixpath.basename(key)) or (None if image_col else index.get(pid))
        elif image_col:
            uri = cell(row, image_col)
            if uri and not storage.is_s3(uri) and not os.path.isfile(uri):
                unfound, uri = uri, None  # a local path that names no file: no photo (S3 objects are checked by `validate --check-images`)
        if uri is None:
            missing += 1
            if unfound:
                why = f"no file {unfound!r} (column {image_col!r}; without --images, local paths are read as they are written)"
            elif images and key:
                why = f"no file {key!r} under --images (looked up by relative path, then by file name)" if image_col else f"no {pid}.jpg/.jpeg/.png/.webp under --images"
            else:
                why = f"column {image_col!r} is empty" if image_col else "no image column mapped and no --images"
            without.append((line, pid, why))
        cols["image_uri"].append(uri)
        cols["updated_at"].append(cell(row, mapping["updated_at"]) if "updated_at" in mapping else None)
    if not cols["product_id"]:
        raise CatalogError(f"no usable rows in {csv_uri} ({len(rejected)} rejected)")
    dups = _duplicates(cols["product_id"])
    if dups:
        shown = ", ".join(dups[:20]) + (f" … and {len(dups) - 20} more" if len(dups) > 20 else "")
        raise CatalogError(f"duplicate product_id values ({len(dups)}): {shown}")
    updated = pa.array(cols.pop("updated_at"), pa.string())
    table = pa.table(
        {
            "product_id": pa.array(cols["product_id"], pa.string()),
            "title": pa.array(cols["title"], pa.string()),
            "description": pa.array(cols["description"], pa.string()),
            "category": pa.array(cols["category"], pa.string()),
            "attributes": pa.array(cols["attributes"], pa.map_(pa.string(), pa.string())),
            "image_uri": pa.array(cols["image_uri"], pa.string()),
            "updated_at": _parse_timestamps(updated),
        },
        schema=catalog_schema().arrow,
    )
    return IngestResult(table, len(parsed.rows) + len(parsed.rejected), parsed.repaired, rejected, missing, without)


def _parse_timestamps(arr: pa.Array) -> pa.Array:
    import pandas as pd

    ts = pd.to_datetime(pd.Series(arr.to_pylist(), dtype="object"), utc=True, errors="coerce", format="mixed")
    return pa.array(ts, pa.timestamp("us", tz="UTC"))


def _duplicates(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for i in ids:
        if i in seen:
            dups[i] = None
        seen.add(i)
    return list(dups)


# ---------------------------------------------------------------------------------- read/validate
@dataclass(frozen=True)
class Problem:
    """One schema problem. ``row`` is the 0-based row index, or None for table-level problems."""

    row: int | None
    product_id: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = "table" if self.row is None else f"row {self.row}" + (f" (product_id={self.product_id!r})" if self.product_id is not None else "")
        return f"{where}: {self.field}: {self.message}"


def validate(table: pa.Table, rows: bool = True) -> list[Problem]:
    """Every problem of a catalog table, table-level first, then by row (``rows=False``: the
    table-level ones only, without a pass over the rows). Returns [] for a valid catalog.

    Table-level (``row`` None; ``run`` refuses the catalog): a required column is missing, or a
    column has a type that cannot be read as its schema type. Accepted without a problem, because
    :func:`conform` converts them losslessly: integer columns where text is expected (integer
    product ids become their decimal strings), dictionary-encoded and large strings, an all-null
    column of any type (pandas writes an all-NaN column as float64). Refused: floats with values
    (``1.0`` vs ``1`` is ambiguous), booleans, and nested types other than the schema's (e.g.
    ``attributes`` as a struct or a list instead of ``map<string,string>``); the message names the
    column, its type and the expected one.

    Row-level (``run`` quarantines these rows, see :func:`catalog_render.planning.plan`):
    unusable product ids (:func:`product_id_problem`), duplicate product ids (one problem per
    repeated row), rows with neither title nor category, unsafe image URIs
    (:func:`image_uri_problem`).
    """
    schema = catalog_schema()
    problems: list[Problem] = []
    for f in schema.fields:
        if f.name not in table.column_names:
            if f.required:
                problems.append(Problem(None, None, f.name, "required column is missing"))
            continue
        why = _column_type_problem(table.column(f.name), f.type)
        if why:
            problems.append(Problem(None, None, f.name, why))
    if not rows or "product_id" not in table.column_names or any(p.field == "product_id" for p in problems):
        return problems
    ids = _as_strings(table.column("product_id")).to_pylist()
    seen: dict[str, int] = {}
    for i, pid in enumerate(ids):
        reason = product_id_problem(pid)
        if reason:
            problems.append(Problem(i, pid, "product_id", reason))
            continue
        if pid in seen:
            problems.append(Problem(i, pid, "product_id", f"duplicate of row {seen[pid]}"))
        else:
            seen[pid] = i
    bad_cols = {p.field for p in problems if p.row is None}

    def text(name: str) -> list:
        if name in table.column_names and name not in bad_cols:
            return _as_strings(table.column(name)).to_pylist()
        return [None] * table.num_rows

    for i, (title, category) in enumerate(zip(text("title"), text("category"))):
        why = conditioning_fields_problem(title, category)
        if why:
            problems.append(Problem(i, ids[i], "title/category", why))
    for i, uri in enumerate(text("image_uri")):
        why = image_uri_problem(uri)
        if why:
            problems.append(Problem(i, ids[i], "image_uri", why))
    return problems


#: Unicode general categories refused in product ids: control (Cc) and invisible format (Cf,
#: e.g. zero-width space U+200B, right-to-left override U+202E) characters.
_REFUSED_CATEGORIES = {"Cc": "control characters", "Cf": "invisible format characters"}


def product_id_problem(pid) -> str | None:
    """Why a product id cannot be rendered, or None if it can.

    Refused: null, not a string, empty, only whitespace, longer than
    :data:`MAX_PRODUCT_ID_CHARS` characters, containing control characters (NUL, tab, newline...)
    or invisible format characters (zero-width space, bidi overrides: two ids that look the same),
    and ids shaped like file paths: one starting with ``/`` or ``\\`` (an absolute path) or with a
    ``.``/``..`` segment between ``/`` or ``\\`` (a relative path such as ``../x``). Object keys
    are safe for any id (:func:`catalog_render.storage.safe_key`); path-shaped ids are refused
    because in a catalog they are a path pasted into the id column or an attack, never a SKU.
    Accepted as the real ids they are: non-ASCII text (``Jäger-Schal-42``), a ``/`` inside an id
    (``AB/123-4``), spaces around or inside an id (kept as they are, never stripped: stripping could
    merge two ids).
    """
    if pid is None or (isinstance(pid, float) and math.isnan(pid)):
        return "is null"
    if not isinstance(pid, str):
        return f"is not a string ({type(pid).__name__})"
    if not pid:
        return "is empty"
    if not pid.strip():
        return "is blank (only whitespace)"
    if len(pid) > MAX_PRODUCT_ID_CHARS:
        return f"is {len(pid):,} characters long (max {MAX_PRODUCT_ID_CHARS})"
    for c in pid:
        cat = unicodedata.category(c)
        if cat in _REFUSED_CATEGORIES:
            return f"contains {_REFUSED_CATEGORIES[cat]} (U+{ord(c):04X})"
    if pid[0] in "/\\":
        return f"starts with {pid[0]!r}: a path, not a product id"
    if any(seg in (".", "..") for seg in re.split(r"[/\\]", pid)):
        return "has a '.' or '..' path segment: a path, not a product id"
    return None


def conditioning_fields_problem(title, category) -> str | None:
    """Why a row has nothing to condition a render on (None if it has): neither a title nor a
    category (null, empty or only whitespace both count as missing)."""
    if not (title or "").strip() and not (category or "").strip():
        return "no title and no category to condition on"
    return None


def image_uri_problem(uri) -> str | None:
    """Why an image URI must not be read (None if it may, or when it is null/empty): it has a
    ``..`` segment (a catalog must not steer reads outside where it points), or holds control
    characters (NUL cannot be in a path)."""
    if not uri:
        return None
    if ".." in re.split(r"[/\\]", uri):
        return "contains a '..' segment"
    if any(unicodedata.category(c) == "Cc" for c in uri):
        return "contains control characters"
    return None


def _is_textual(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _column_type_problem(col: pa.ChunkedArray, expected: pa.DataType) -> str | None:
    """None when ``col`` can be conformed to ``expected`` losslessly, else the message."""
    actual = col.type
    if actual == expected or pa.types.is_null(actual) or col.null_count == len(col):
        return None
    if pa.types.is_floating(actual) and pc.all(pc.is_nan(col.fill_null(float("nan")))).as_py():
        return None  # an all-NaN float column (how pandas writes a column with no values)
    if pa.types.is_string(expected):
        if _is_textual(actual) or pa.types.is_integer(actual):
            return None
        if pa.types.is_dictionary(actual) and (_is_textual(actual.value_type) or pa.types.is_integer(actual.value_type)):
            return None
        hint = " (floats are not cast: 1.0 vs 1 is ambiguous; write the column as strings)" if pa.types.is_floating(actual) else ""
        return f"type is {actual}, expected {expected}{hint}"
    if pa.types.is_timestamp(expected):
        if pa.types.is_timestamp(actual) or pa.types.is_date(actual):
            return None
        return f"type is {actual}, expected {expected}"
    if pa.types.is_map(expected):
        if pa.types.is_map(actual) and _is_textual(actual.key_type) and _is_textual(actual.item_type):
            return None
        return f"type is {actual}, expected {expected} (attribute name -> value, both strings)"
    return f"type is {actual}, expected {expected}"


def _as_strings(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A text/integer/dictionary/all-null column as strings (integers as decimal digits, NaN as null)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if pa.types.is_floating(t) or pa.types.is_null(t):
        return pa.nulls(len(col), pa.string()) if len(col) else pa.chunked_array([], pa.string())
    return col.cast(pa.string())


def read_catalog(uri: str) -> pa.Table:
    """Read a catalog and conform it to the catalog schema (optional columns added as nulls,
    integer ids and text cast to strings; see :func:`validate` for what is accepted).

    Raises StorageError when it cannot be read, CatalogError naming the column when it lacks a
    required column or has a column of a type that cannot be read as the schema's. Row-level
    problems are left for the planner, which quarantines those rows and renders the rest: bad
    product ids, rows with nothing to condition on, unsafe image URIs, and duplicate product ids
    (every row sharing an id is quarantined, since which one is right cannot be known).
    """
    table = read_table(uri)
    fatal = validate(table, rows=False)
    if fatal:
        raise CatalogError(f"catalog {uri}: " + "; ".join(f"{p.field}: {p.message}" for p in fatal))
    return conform(table)


def read_table(uri: str) -> pa.Table:
    """The catalog file as stored (no checks, no casts). Raises CatalogError (exit 4) when it is
    missing, unreadable, or not Parquet (the first and last 4 bytes are not ``PAR1``, Apache
    Parquet format spec): that message names ``catalog-render ingest``, which makes one from a CSV."""
    try:
        data = storage.read_bytes(uri)
    except storage.ObjectNotFound:
        raise CatalogError(f"catalog not found: {uri}") from None
    except StorageError as exc:
        raise CatalogError(f"cannot read catalog {uri}: {exc}") from None
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise CatalogError(f"catalog {uri} is not a Parquet file: make one from a CSV and a photo folder with "
                           "`catalog-render ingest --csv FILE --images DIR --map ... --out URI` (see docs/catalog.md)")
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CatalogError(f"catalog {uri} is damaged Parquet: {str(exc).splitlines()[0][:200]}") from None


def conform(table: pa.Table) -> pa.Table:
    """Cast/extend a table without table-level :func:`validate` problems to exactly the catalog
    schema's columns and types: text-typed columns via :func:`_as_strings` (integers -> decimal
    strings, all-NaN/all-null -> nulls), other columns cast, missing optional columns as nulls."""
    schema = catalog_schema().arrow
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if pa.types.is_string(f.type):
                col = _as_strings(col)
            elif pa.types.is_null(col.type) or col.null_count == len(col) or pa.types.is_floating(col.type):
                col = pa.nulls(len(col), f.type)
            cols.append(col.cast(f.type) if col.type != f.type else col)
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=pa.schema([pa.field(f.name, f.type, nullable=True) for f in schema]))


def split_holdout(table: pa.Table, fraction: float, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Deterministically split a catalog into (train, holdout) by a hash of (seed, product_id).

    A product lands in the holdout when ``sha256(seed:product_id)`` mapped to [0,1) is below
    ``fraction``: the split is stable when rows are added or reordered.
    """
    import hashlib

    if not 0 < fraction < 1:
        raise CatalogError(f"holdout fraction must be in (0, 1), got {fraction}")
    ids = table.column("product_id").to_pylist()
    mask = [int.from_bytes(hashlib.sha256(f"{seed}:{p}".encode()).digest()[:8], "big") / 2**64 < fraction for p in ids]
    m = pa.array(mask)
    return table.filter(pc.invert(m)), table.filter(m)
