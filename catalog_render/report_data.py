"""Reading an output for the report: the run's manifest rows, run records, counts, score
statistics and reviewers' verdicts. No HTML here (:mod:`catalog_render.report` builds the page).

All I/O goes through :mod:`catalog_render.storage`, so the output may be a local path or an
``s3://`` URI.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import feedback, storage
from catalog_render.errors import StorageError
from catalog_render.manifest import STATUSES, read_manifest

#: Scores shown in the report, in manifest column order.
SCORES = ("sharpness", "background_whiteness", "fill_ratio", "psnr", "ssim", "lpips", "recognisability")
#: quality_status values of the quality gate (:mod:`catalog_render.quality.gate`).
QUALITY_PASSED = "passed"
QUALITY_FAILED = "failed-quality"


def _basename(uri: str) -> str:
    return str(uri).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def run_record_uris(output_uri: str) -> dict[str, str]:
    """run id -> URI of its run record (``OUTPUT/runs/<run_id>.json``)."""
    uris = storage.list_uris(storage.join(output_uri, "runs"), suffix=".json")
    return {_basename(u)[: -len(".json")]: u for u in uris}


def read_record(uri: str | None) -> tuple[dict | None, str | None]:
    """(record, problem): a run record, or None with why it could not be used."""
    if uri is None:
        return None, "no run record"
    try:
        rec = json.loads(storage.read_bytes(uri, max_bytes=16 * 1024 * 1024))
    except StorageError as exc:
        return None, f"run record unreadable: {exc}"
    except ValueError as exc:
        return None, f"run record is not valid JSON: {exc}"
    if not isinstance(rec, dict):
        return None, "run record is not a JSON object"
    return rec, None


def load_run(output_uri: str, run_id: str | None):
    """(manifest, selected run id, that run's rows, record URIs by run id). ``run_id`` None picks
    the latest run with manifest rows (a no-op re-run has none). Raises StorageError when the
    output has no manifest rows or no such run."""
    manifest = read_manifest(output_uri)
    if manifest.num_rows == 0:
        raise StorageError(f"no manifest under {output_uri}")
    records = run_record_uris(output_uri)
    known = sorted(set(manifest.column("run_id").unique().to_pylist()) | set(records))
    if run_id is None:  # the latest run that rendered something (a no-op re-run has no rows)
        run_id = sorted(set(manifest.column("run_id").unique().to_pylist()))[-1]
    elif run_id not in known:
        raise StorageError(f"no run {run_id} under {output_uri} (runs: {', '.join(known) or 'none'})")
    rows = manifest.filter(pc.equal(manifest.column("run_id"), run_id))
    return manifest, run_id, rows, records


def status_counts(table: pa.Table) -> dict[str, int]:
    """status -> number of rows, for every manifest status (0 when absent)."""
    counts = dict.fromkeys(STATUSES, 0)
    if table.num_rows:
        vc = pc.value_counts(table.column("status")).to_pylist()
        for item in vc:
            counts[item["values"]] = item["counts"]
    return counts


def counts_by_run(manifest: pa.Table) -> dict[str, dict[str, int]]:
    """run id -> status -> number of rows."""
    out: dict[str, dict[str, int]] = {}
    if manifest.num_rows == 0:
        return out
    grouped = manifest.group_by(["run_id", "status"]).aggregate([("product_id", "count")])
    for rid, status, n in zip(grouped.column("run_id").to_pylist(), grouped.column("status").to_pylist(), grouped.column("product_id_count").to_pylist()):
        out.setdefault(rid, dict.fromkeys(STATUSES, 0))[status] = n
    return out


def ok_rows(rows: pa.Table) -> pa.Table:
    return rows.filter(pc.equal(rows.column("status"), "ok"))


def sorted_ok(rows: pa.Table) -> pa.Table:
    """ok rows, lowest first: by ssim (rows without ssim after all rows with it), then sharpness, then product id."""
    ok = ok_rows(rows)
    if ok.num_rows == 0:
        return ok
    idx = pc.sort_indices(ok, sort_keys=[("ssim", "ascending"), ("sharpness", "ascending"), ("product_id", "ascending")])
    return ok.take(idx)


def conditioning_fields(raw: str | None) -> tuple[str | None, str | None]:
    """(category, colour) from a conditioning JSON string; (None, None) when absent or malformed."""
    if not raw:
        return None, None
    try:
        cond = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(cond, dict):
        return None, None
    attrs = cond.get("attributes") or {}
    if isinstance(attrs, list):  # [[key, value], ...] as Arrow maps serialise
        try:
            attrs = {str(k): v for k, v in attrs}
        except (TypeError, ValueError):
            attrs = {}
    colour = None
    if isinstance(attrs, dict):
        for key, val in attrs.items():
            if "colo" in str(key).lower() and val not in (None, ""):
                colour = val
                break
    category = cond.get("category")
    return (None if category in (None, "") else str(category)), (None if colour is None else str(colour))


def score_values(ok: pa.Table, name: str) -> tuple[int, np.ndarray]:
    """(number of non-null values, the finite ones as float64)."""
    col = pc.drop_null(ok.column(name))
    values = np.asarray(col.to_numpy(), dtype=np.float64) if len(col) else np.empty(0)
    return len(col), values[np.isfinite(values)]


def score_stats(ok: pa.Table) -> dict[str, dict[str, float | int | None]]:
    """Per score: count (non-null values), nonfinite (inf/nan, left out of the statistics), and
    mean, median, p10, p90, min, max over the finite values (None when there are none).
    Percentiles use numpy's default linear interpolation."""
    out: dict[str, dict] = {}
    for name in SCORES:
        count, v = score_values(ok, name)
        stats: dict = {"count": count, "nonfinite": count - int(v.size)}
        if v.size:
            stats.update(
                mean=float(v.mean()),
                median=float(np.median(v)),
                p10=float(np.percentile(v, 10)),
                p90=float(np.percentile(v, 90)),
                min=float(v.min()),
                max=float(v.max()),
            )
        else:
            stats.update(mean=None, median=None, p10=None, p90=None, min=None, max=None)
        out[name] = stats
    return out


def json_list(raw) -> list | None:
    """A JSON-list-in-string manifest value as a list; None when null, malformed or not a list."""
    if raw is None:
        return None
    try:
        val = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return val if isinstance(val, list) else None


def rows_with(rows: pa.Table, col: str) -> list[dict]:
    """Rows (as dicts) whose ``col`` is not null."""
    sub = rows.filter(pc.is_valid(rows.column(col)))
    return sub.to_pylist()


def run_presets(rows: pa.Table) -> list[str]:
    """The marketplace presets named by the run's rows, sorted ("none" included)."""
    return sorted({p for p in rows.column("preset").to_pylist() if p})


def read_verdicts(output_uri: str) -> tuple[pa.Table | None, str | None]:
    """(latest verdict per render (:func:`catalog_render.feedback.read_feedback`), or None; why not)."""
    try:
        table = feedback.read_feedback(output_uri)
    except (StorageError, pa.ArrowException, OSError, KeyError, ValueError) as exc:
        return None, f"feedback unreadable: {exc}"
    return table, None
