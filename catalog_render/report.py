"""A self-contained HTML report of one run, and a PNG contact sheet for the README.

``write_report`` reads an output's manifest (``OUTPUT/manifest/``) and run records
(``OUTPUT/runs/<run_id>.json``) and writes ``OUTPUT/report.html``: a run summary, score statistics
with the definitions from :mod:`catalog_render.quality.scores`, one histogram per score, the failed
and skipped rows, and a contact sheet of the run's renders beside their reference photos, lowest
score first; then the quality gate and marketplace-rule pass rates, the renders that failed the
gate, best-of-N tries, reviewers' verdicts (``OUTPUT/feedback/``) and near-duplicate groups.
Every image is embedded as a ``data:`` URI (small thumbnails), so the page opens
offline, from a local disk or from a downloaded S3 object, and needs no JavaScript.

All I/O goes through :mod:`catalog_render.storage`, so the output may be a local path or an
``s3://`` URI. Product ids, errors and conditioning values are untrusted text and are always
HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw, ImageFont

from catalog_render import imaging, storage
from catalog_render.errors import StorageError
from catalog_render.manifest import STATUSES, read_manifest

#: Scores shown in the report, in manifest column order.
SCORES = ("sharpness", "background_whiteness", "fill_ratio", "psnr", "ssim", "lpips")
#: Short labels used on contact-sheet tiles.
SCORE_LABELS = {"sharpness": "sharp", "background_whiteness": "white", "fill_ratio": "fill", "psnr": "psnr", "ssim": "ssim", "lpips": "lpips"}
#: Units of each score, for histogram axes.
SCORE_UNITS = {"psnr": "dB"}
#: Run-record keys shown in the run summary, in this order (others go under "other fields").
RECORD_KEYS = ("catalog", "model", "mode", "started_at", "finished_at", "wall_seconds", "counts", "workers", "images_per_second")
#: Thumbnail bounding box in the HTML report, pixels (width, height): at most 128 px tall.
THUMB_BOX = (256, 128)
#: JPEG quality of embedded thumbnails.
THUMB_QUALITY = 85
#: Failed/skipped rows listed at most (the rest are counted).
MAX_FAILURES = 1000

#: PNG contact sheet geometry, pixels: each cell is render|reference (SHEET_THUMB square each,
#: SHEET_GAP apart) over a SHEET_LABEL_H label; cells are SHEET_GAP apart and from the edges.
SHEET_THUMB = 96
SHEET_GAP = 4
SHEET_LABEL_H = 14
#: Largest PNG contact sheet, bytes.
SHEET_MAX_BYTES = 500_000

DASH = "\u2013"

_FALLBACK_DEFS = {
    "sharpness": ("variance of the Laplacian of the grey image scaled to [0, 1]", "[0, inf)", "higher"),
    "background_whiteness": ("share of near-white pixels in the outer border band", "[0, 1]", "higher"),
    "fill_ratio": ("area of the bounding box of non-white pixels over the image area", "[0, 1]", "closer to ~0.85"),
    "psnr": ("peak signal-to-noise ratio against the reference photo, dB", "[0, inf)", "higher"),
    "ssim": ("structural similarity against the reference photo", "[-1, 1]", "higher"),
    "lpips": ("LPIPS v0.1 AlexNet distance to the reference photo (Zhang et al. 2018)", "[0, ~1]", "lower"),
}


# --------------------------------------------------------------------------------------------
# formatting helpers


def esc(value) -> str:
    """HTML-escape any value (quotes included); None -> empty string."""
    return "" if value is None else html.escape(str(value), quote=True)


def format_number(value, digits: int = 4) -> str:
    """How the report prints a number: ``digits`` significant digits (``f"{v:.4g}"``), ints as
    is, ``inf``/``-inf``/``nan`` spelled out, None as an en dash."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def _fmt_value(value) -> str:
    """A free-form run-record value as escaped HTML (dicts as key: value lines)."""
    if isinstance(value, dict):
        if not value:
            return "\u2013"
        return "<br>".join(f"{esc(k)}: {_fmt_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt_value(v) for v in value) or "\u2013"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return esc(format_number(value))
    return esc("\u2013" if value is None else value)


def score_definitions() -> dict[str, tuple[str, str, str]]:
    """score -> (definition, range, better), parsed from the table in the
    :mod:`catalog_render.quality.scores` docstring (falls back to a short built-in text)."""
    out = dict(_FALLBACK_DEFS)
    try:
        from catalog_render.quality import scores

        doc = scores.__doc__ or ""
    except Exception:  # the report must not depend on scikit-image importing
        return out
    for line in doc.splitlines():
        cells = [c.strip().replace("``", "") for c in line.strip().strip("|").split(" | ")]
        if line.strip().startswith("|") and len(cells) == 4 and cells[0] in SCORES:
            out[cells[0]] = (cells[1], cells[2], cells[3])
    return out


def _basename(uri: str) -> str:
    return str(uri).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------------
# loading


def _run_record_uris(output_uri: str) -> dict[str, str]:
    uris = storage.list_uris(storage.join(output_uri, "runs"), suffix=".json")
    return {_basename(u)[: -len(".json")]: u for u in uris}


def _read_record(uri: str | None) -> tuple[dict | None, str | None]:
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


def _load(output_uri: str, run_id: str | None):
    """(manifest, selected run id, that run's rows, record URIs by run id). Raises StorageError."""
    manifest = read_manifest(output_uri)
    if manifest.num_rows == 0:
        raise StorageError(f"no manifest under {output_uri}")
    records = _run_record_uris(output_uri)
    known = sorted(set(manifest.column("run_id").unique().to_pylist()) | set(records))
    if run_id is None:  # the latest run that rendered something (a no-op re-run has no rows)
        run_id = sorted(set(manifest.column("run_id").unique().to_pylist()))[-1]
    elif run_id not in known:
        raise StorageError(f"no run {run_id} under {output_uri} (runs: {', '.join(known) or 'none'})")
    rows = manifest.filter(pc.equal(manifest.column("run_id"), run_id))
    return manifest, run_id, rows, records


def _status_counts(table: pa.Table) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    if table.num_rows:
        vc = pc.value_counts(table.column("status")).to_pylist()
        for item in vc:
            counts[item["values"]] = item["counts"]
    return counts


def _counts_by_run(manifest: pa.Table) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    if manifest.num_rows == 0:
        return out
    grouped = manifest.group_by(["run_id", "status"]).aggregate([("product_id", "count")])
    for rid, status, n in zip(grouped.column("run_id").to_pylist(), grouped.column("status").to_pylist(), grouped.column("product_id_count").to_pylist()):
        out.setdefault(rid, dict.fromkeys(STATUSES, 0))[status] = n
    return out


def _ok_rows(rows: pa.Table) -> pa.Table:
    return rows.filter(pc.equal(rows.column("status"), "ok"))


def _sorted_ok(rows: pa.Table) -> pa.Table:
    """ok rows, lowest first: by ssim (rows without ssim after all rows with it), then sharpness, then product id."""
    ok = _ok_rows(rows)
    if ok.num_rows == 0:
        return ok
    idx = pc.sort_indices(ok, sort_keys=[("ssim", "ascending"), ("sharpness", "ascending"), ("product_id", "ascending")])
    return ok.take(idx)


def _conditioning(raw: str | None) -> tuple[str | None, str | None]:
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


# --------------------------------------------------------------------------------------------
# images


def _load_image(uri: str) -> Image.Image:
    """Read and decode one image; raises StorageError or ImageDecodeError."""
    return imaging.decode_rgb(storage.read_bytes(uri, max_bytes=imaging.MAX_BYTES))


def _thumbnail(uri: str | None) -> tuple[str | None, str]:
    """(data URI of a JPEG thumbnail at most THUMB_BOX, or None; why not / size text)."""
    if not uri:
        return None, "no image"
    try:
        im = _load_image(uri)
    except storage.ObjectNotFound:
        return None, "image missing"
    except StorageError as exc:
        return None, f"unreadable: {exc}"
    except imaging.ImageDecodeError as exc:
        return None, f"undecodable: {exc}"
    size = f"{im.width}\u00d7{im.height}"
    im.thumbnail(THUMB_BOX, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=THUMB_QUALITY)
    return _data_uri(buf.getvalue(), "image/jpeg"), size


def _thumbnails(uris: list[str | None]) -> dict[str, tuple[str | None, str]]:
    """Thumbnails of distinct URIs, read a few at a time (S3 latency dominates)."""
    distinct = sorted({u for u in uris if u})
    if not distinct:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(distinct))) as pool:
        return dict(zip(distinct, pool.map(_thumbnail, distinct)))


def _histogram_png(values: np.ndarray, name: str) -> bytes:
    """A small histogram (260x180 px) as PNG bytes, drawn with matplotlib's Agg canvas
    (no pyplot, so no global backend state is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(3.25, 2.25), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bins = int(min(30, max(5, math.sqrt(values.size) * 2)))
    ax.hist(values, bins=bins, color="#4a78b5", edgecolor="white", linewidth=0.5)
    median = float(np.median(values))
    ax.axvline(median, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_title(f"median {format_number(median)} (dashed)", fontsize=8, color="#c0392b")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    unit = SCORE_UNITS.get(name)
    ax.set_xlabel(f"{name} ({unit})" if unit else name, fontsize=8)
    ax.set_ylabel("renders", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout(pad=0.4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# sections


def _score_values(ok: pa.Table, name: str) -> tuple[int, np.ndarray]:
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
        count, v = _score_values(ok, name)
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


def _dl(items: list[tuple[str, str]]) -> str:
    """Key/value rows (values already HTML)."""
    return '<table class="kv">' + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items) + "</table>"


def _summary_section(output_uri: str, run_id: str, rows: pa.Table, record: dict | None, record_problem: str | None) -> str:
    counts = _status_counts(rows)
    items: list[tuple[str, str]] = [("run_id", f"<code>{esc(run_id)}</code>"), ("output", f"<code>{esc(storage.display(output_uri))}</code>")]
    rec = record or {}
    for key in RECORD_KEYS:
        if key == "counts" or key not in rec:
            continue
        items.append((key.replace("_", " "), _fmt_value(rec[key])))
    for col in ("model_id", "family"):
        vals = sorted(v for v in rows.column(col).unique().to_pylist() if v)
        if vals:
            items.append((col.replace("_", " "), ", ".join(f"<code>{esc(v)}</code>" for v in vals)))
    if "images_per_second" not in rec and isinstance(rec.get("wall_seconds"), (int, float)) and rec["wall_seconds"] > 0:
        items.append(("images per second", f"{esc(format_number(counts['ok'] / rec['wall_seconds']))} <span class=note>(ok rows / wall seconds)</span>"))
    if rows.num_rows:
        fa = rows.column("finished_at")
        first, last = pc.min(fa).as_py(), pc.max(fa).as_py()
        items.append(("rows finished", f"{esc(first.isoformat(timespec='seconds') if first else None)} \u2192 {esc(last.isoformat(timespec='seconds') if last else None)}"))
    status_html = " ".join(f'<span class="badge {s}">{esc(s)} <b id="count-{s}">{counts[s]}</b></span>' for s in STATUSES)
    items.append(("manifest rows", status_html))
    rec_counts = rec.get("counts")
    if isinstance(rec_counts, dict) and rec_counts:
        items.append(("run counts", " ".join(f'<span class="badge">{esc(str(k).replace("_", " "))} <b>{_fmt_value(v)}</b></span>' for k, v in rec_counts.items())))
    elif rec_counts is not None:
        items.append(("run counts", _fmt_value(rec_counts)))
    parts = ["<section id=summary><h2>Run summary</h2>", _dl(items)]
    if record_problem:
        parts.append(f'<p class="note">{esc(record_problem)} \u2014 figures above come from the manifest only.</p>')
    others = {k: v for k, v in rec.items() if k not in RECORD_KEYS and k not in SECTION_RECORD_KEYS and k != "run_id"}
    if others:
        text = json.dumps(others, indent=2, default=str, ensure_ascii=False, sort_keys=True)
        parts.append(f"<details><summary>Other run-record fields</summary><pre>{esc(text)}</pre></details>")
    parts.append("</section>")
    return "".join(parts)


def _runs_section(manifest: pa.Table, run_id: str, record_ids) -> str:
    by_run = _counts_by_run(manifest)
    ids = sorted(set(by_run) | set(record_ids))
    head = "<tr><th>run_id</th>" + "".join(f"<th class=num>{s}</th>" for s in STATUSES) + "<th class=num>total</th><th>run record</th></tr>"
    body = []
    for rid in ids:
        c = by_run.get(rid, dict.fromkeys(STATUSES, 0))
        cls = ' class="selected"' if rid == run_id else ""
        cells = "".join(f"<td class=num>{c[s]}</td>" for s in STATUSES)
        mark = " \u25c0 this report" if rid == run_id else ""
        body.append(f"<tr{cls}><td><code>{esc(rid)}</code>{mark}</td>{cells}<td class=num>{sum(c.values())}</td><td>{'yes' if rid in record_ids else 'no'}</td></tr>")
    return f"<section id=runs><h2>All runs in this output ({len(ids)})</h2><table>{head}{''.join(body)}</table></section>"


def _scores_section(ok: pa.Table) -> str:
    defs = score_definitions()
    stats = score_stats(ok)
    cols = ("count", "mean", "median", "p10", "p90", "min", "max")
    head = "<tr><th>score</th>" + "".join(f"<th class=num>{c}</th>" for c in cols) + "<th>definition</th><th>range</th><th>better</th></tr>"
    body = []
    hists = []
    for name in SCORES:
        s = stats[name]
        cells = "".join(f'<td class="num {c}">{esc(format_number(s[c]))}</td>' for c in cols)
        definition, rng, better = defs[name]
        note = f' <span class=note>({s["nonfinite"]} non-finite left out)</span>' if s["nonfinite"] else ""
        body.append(f'<tr id="score-{name}"><th scope=row><code>{esc(name)}</code></th>{cells}<td class=def>{esc(definition)}{note}</td><td>{esc(rng)}</td><td>{esc(better)}</td></tr>')
        _, values = _score_values(ok, name)
        if values.size:
            src = _data_uri(_histogram_png(values, name), "image/png")
            hists.append(f'<figure class=hist><img src="{src}" alt="histogram of {esc(name)}"><figcaption>{esc(name)} (n={values.size})</figcaption></figure>')
        else:
            hists.append(f'<figure class=hist><div class="ph hist-ph">no {esc(name)} values</div><figcaption>{esc(name)}</figcaption></figure>')
    table = f"<table class=scores>{head}{''.join(body)}</table>"
    caption = f'<p class=note>Over the {ok.num_rows} ok rows of this run; count is the number of rows with a value (psnr, ssim and lpips need a reference photo).</p>'
    return f"<section id=scores><h2>Scores</h2>{caption}{table}<h3>Histograms</h3><div class=hists>{''.join(hists)}</div></section>"


def _failures_section(rows: pa.Table) -> str:
    bad = rows.filter(pc.not_equal(rows.column("status"), "ok"))
    if bad.num_rows == 0:
        return "<section id=failures><h2>Failed and skipped (0)</h2><p class=note>None.</p></section>"
    bad = bad.take(pc.sort_indices(bad, sort_keys=[("status", "ascending"), ("product_id", "ascending")]))
    shown = bad.slice(0, MAX_FAILURES).select(["product_id", "status", "error"]).to_pylist()
    body = "".join(
        f'<tr class="{esc(r["status"])}"><td><code>{esc(r["product_id"])}</code></td><td>{esc(r["status"])}</td><td class=err>{esc(r["error"]) or DASH}</td></tr>' for r in shown
    )
    more = f"<p class=note>{bad.num_rows - len(shown)} more not listed.</p>" if bad.num_rows > len(shown) else ""
    return f"<section id=failures><h2>Failed and skipped ({bad.num_rows})</h2><table><tr><th>product_id</th><th>status</th><th>error</th></tr>{body}</table>{more}</section>"


# --------------------------------------------------------------------------------------------
# quality gate, marketplace compliance, best-of-N, reviewer verdicts, near-duplicates

#: Images listed at most in the "failed the quality gate" section (the rest are counted).
MAX_QUALITY_FAILURES = 60
#: Products listed at most in the best-of-N table, most tries first.
MAX_TRY_PRODUCTS = 200
#: Rejected renders listed at most.
MAX_REJECTED = 500
#: Near-duplicate groups listed at most, and how many of them get thumbnails.
MAX_DUP_GROUPS = 200
MAX_DUP_THUMB_GROUPS = 30
#: Run-record keys with a section of their own (kept out of "Other run-record fields").
SECTION_RECORD_KEYS = ("near_duplicates",)

QUALITY_PASSED = "passed"
QUALITY_FAILED = "failed-quality"


def _pct(n: int, d: int) -> str:
    """``n / d`` as a percentage: whole numbers without decimals (40%), else one decimal (33.3%)."""
    if not d:
        return DASH
    p = 100.0 * n / d
    return f"{p:.0f}%" if abs(p - round(p)) < 1e-9 else f"{p:.1f}%"


def _json_list(raw) -> list | None:
    """A JSON-list-in-string manifest value as a list; None when null, malformed or not a list."""
    if raw is None:
        return None
    try:
        val = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return val if isinstance(val, list) else None


def _rows_with(rows: pa.Table, col: str) -> list[dict]:
    """Rows (as dicts) whose ``col`` is not null."""
    sub = rows.filter(pc.is_valid(rows.column(col)))
    return sub.to_pylist()


def _run_presets(rows: pa.Table) -> list[str]:
    return sorted({p for p in rows.column("preset").to_pylist() if p})


def _compliance_table(preset_name: str, judged: list[dict], run_date) -> str:
    """Per-rule failure counts of one preset over the renders evaluated for it."""
    from catalog_render.quality import presets

    preset = presets.PRESETS.get(preset_name)
    n = len(judged)
    failed_by: dict[str, int] = {}
    advised_by: dict[str, int] = {}
    unreadable = 0
    for r in judged:
        failed, advisories = _json_list(r["compliance_failed"]), _json_list(r["compliance_advisories"])
        if failed is None or (r["compliance_advisories"] is not None and advisories is None):
            unreadable += 1
        for rid in set(map(str, failed or ())):
            failed_by[rid] = failed_by.get(rid, 0) + 1
        for rid in set(map(str, advisories or ())):
            advised_by[rid] = advised_by.get(rid, 0) + 1
    head = ("<tr><th>rule</th><th>title</th><th>kind</th><th class=num>failed</th><th class=num>share failed</th>"
            "<th class=num>pass rate</th><th>source</th></tr>")
    body = []
    known = set()
    for rule in preset.rules if preset else ():
        known.add(rule.id)
        kind = "required" if rule.required else "recommended"
        if rule.apparel is True:
            kind += ", apparel only"
        elif rule.apparel is False:
            kind += ", non-apparel only"
        if rule.measurement is None:
            cells = '<td class=num colspan=3><span class=note>not measurable from pixels: review by other means</span></td>'
        elif rule.effective_from is not None and run_date is not None and run_date < rule.effective_from:
            cells = f'<td class=num colspan=3><span class=note>not in force before {esc(rule.effective_from.isoformat())}</span></td>'
        else:
            k = (failed_by if rule.required else advised_by).get(rule.id, 0)
            cells = f"<td class=num>{k} of {n}</td><td class=num>{_pct(k, n)}</td><td class=num>{_pct(n - k, n)}</td>"
        body.append(f'<tr id="rule-{esc(rule.id)}"><th scope=row><code>{esc(rule.id)}</code></th><td>{esc(rule.description)}</td>'
                    f"<td>{esc(kind)}</td>{cells}<td class=def>{esc(rule.source)}</td></tr>")
    for rid in sorted((set(failed_by) | set(advised_by)) - known):  # ids the preset table does not (or no longer) list
        k = failed_by.get(rid, 0) + advised_by.get(rid, 0)
        body.append(f'<tr><th scope=row><code>{esc(rid)}</code></th><td><span class=note>not a rule of this preset now</span></td>'
                    f"<td>{'required' if rid in failed_by else 'recommended'}</td><td class=num>{k} of {n}</td>"
                    f"<td class=num>{_pct(k, n)}</td><td class=num>{_pct(n - k, n)}</td><td></td></tr>")
    title = f"{preset.title} (<code>{esc(preset_name)}</code>)" if preset else f"<code>{esc(preset_name)}</code> (unknown preset)"
    passed = sum(1 for r in judged if _json_list(r["compliance_failed"]) == [])
    note = (f"<p class=note>{n} renders evaluated against this preset (the published image); {passed} of {n} met every"
            f" required rule ({_pct(passed, n)}). Recommended rules never fail the gate. A rule limited to apparel or"
            f" non-apparel applies only to jobs of that kind, so 0 failures may mean it did not apply.")
    if unreadable:
        note += f" {unreadable} rows had unreadable compliance columns."
    note += "</p>"
    return f"<h3>Marketplace rules: {title}</h3>{note}<table class=rules>{head}{''.join(body)}</table>"


def _compliance_section(rows: pa.Table) -> str:
    """Quality gate pass rate, failed checks, and per-rule pass rates of the run's preset(s)."""
    parts = ["<section id=compliance><h2>Quality gate and marketplace compliance</h2>"]
    judged = _rows_with(rows, "quality_status")
    if not judged:
        parts.append("<p class=note>No quality gate verdicts in this run (the manifest predates the gate or no image was made).</p>")
    else:
        n = len(judged)
        counts: dict[str, int] = {}
        for r in judged:
            counts[r["quality_status"]] = counts.get(r["quality_status"], 0) + 1
        npass, nfail = counts.pop(QUALITY_PASSED, 0), counts.pop(QUALITY_FAILED, 0)
        other = "".join(f' <span class="badge">{esc(k)} <b>{v}</b></span>' for k, v in sorted(counts.items()))
        parts.append(
            f'<p id=gate-rate><b>{npass} of {n} passed the quality gate ({_pct(npass, n)})</b> \u00b7 '
            f'<span class="badge ok">passed <b id="count-gate-passed">{npass}</b></span>'
            f'<span class="badge failed">failed-quality <b id="count-gate-failed">{nfail}</b></span>{other}</p>')
        by_check: dict[str, int] = {}
        for r in judged:
            for c in set(map(str, _json_list(r["quality_failed"]) or ())):
                by_check[c] = by_check.get(c, 0) + 1
        if by_check:
            trs = "".join(f'<tr><td><code>{esc(c)}</code></td><td class=num>{k} of {n}</td><td class=num>{_pct(k, n)}</td></tr>'
                          for c, k in sorted(by_check.items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append("<h3>Checks failed by the kept renders</h3><p class=note>Gate thresholds of the job and required preset"
                         f" rules, over the {n} judged renders.</p><table class=checks><tr><th>check</th><th class=num>failed</th>"
                         f"<th class=num>share</th></tr>{trs}</table>")
    presets_used = _run_presets(rows)
    marketplace = [p for p in presets_used if p != "none"]
    if not marketplace:
        why = " (preset none)" if presets_used else ""
        parts.append(f"<p class=note id=no-preset>No marketplace preset{why}.</p>")
    else:
        fa = pc.max(rows.column("finished_at")).as_py() if rows.num_rows else None
        run_date = fa.date() if fa else None
        for name in marketplace:
            evaluated = [r for r in _rows_with(rows, "compliance_failed") if r["preset"] == name]
            parts.append(_compliance_table(name, evaluated, run_date))
    parts.append("</section>")
    return "".join(parts)


def _verdict_badge(v: dict | None) -> str:
    """A small approve/reject badge for an image (reviewer and comment in the tooltip)."""
    if not v:
        return ""
    word = "approved" if v["verdict"] == "approve" else "rejected"
    tip = f"{word} by {v['reviewer']}" + (f": {v['comment']}" if v.get("comment") else "")
    return f'<div class="verdict {esc(v["verdict"])}" title="{esc(tip)}">{esc(word)} \u00b7 {esc(v["reviewer"])}</div>'


def _quality_badge(status: str | None) -> str:
    if not status:
        return ""
    cls = "ok" if status == QUALITY_PASSED else "failed"
    return f'<span class="badge {cls} q">{esc(status)}</span>'


def _quality_failures_section(rows: pa.Table, verdicts: dict) -> str:
    """Thumbnails of the renders that failed the quality gate, with the checks each failed."""
    if not any(s is not None for s in rows.column("quality_status").to_pylist()):
        return ""
    bad = rows.filter(pc.equal(rows.column("quality_status"), QUALITY_FAILED))
    total = bad.num_rows
    if total == 0:
        return "<section id=quality-failures><h2>Failed the quality gate (0)</h2><p class=note>Every judged render passed.</p></section>"
    bad = bad.take(pc.sort_indices(bad, sort_keys=[("product_id", "ascending")]))
    shown = bad.slice(0, MAX_QUALITY_FAILURES).to_pylist()
    thumbs = _thumbnails([r["publish_uri"] or r["image_uri"] for r in shown])
    tiles = []
    for r in shown:
        uri = r["publish_uri"] or r["image_uri"]
        kind = "published" if r["publish_uri"] else "render"
        img = _image_cell(thumbs.get(uri, (None, "no image")) if uri else (None, "no image"), f"{kind} image of {r['product_id']}", kind)
        checks = _json_list(r["quality_failed"])
        if checks is None:
            checks_html = '<span class=note>failed checks unknown</span>'
        else:
            checks_html = "<ul class=checks>" + "".join(f"<li><code>{esc(c)}</code></li>" for c in checks) + "</ul>"
        tries = f'<div class=note>try {r["try_index"] + 1} of {r["tries"]}</div>' if (r["tries"] or 0) > 1 and r["try_index"] is not None else ""
        tiles.append(f'<div class="tile qf"><div class=pair>{img}</div><div class=pid><code>{esc(r["product_id"])}</code></div>'
                     f'{_verdict_badge(verdicts.get((r["product_id"], r["render_key"])))}{tries}{checks_html}</div>')
    more = f'<p class=note id=qf-more>and {total - len(shown)} more not shown.</p>' if total > len(shown) else ""
    return (f"<section id=quality-failures><h2>Failed the quality gate ({total})</h2><p class=note>The kept render of each product"
            f" whose quality_status is failed-quality (the published image when there is one), by product id, with the checks it"
            f" failed.</p><div class=sheet>{''.join(tiles)}</div>{more}</section>")


def _tries_section(rows: pa.Table) -> str:
    """Best-of-N: products rendered more than once, every try with its seed, verdict, failed checks and sharpness."""
    multi = rows.filter(pc.fill_null(pc.greater(rows.column("tries"), 1), False))
    if multi.num_rows == 0:
        return ""
    multi = multi.take(pc.sort_indices(multi, sort_keys=[("tries", "descending"), ("product_id", "ascending")]))
    items = multi.to_pylist()
    rescued = still_failed = 0
    for r in items:
        hist = _json_list(r["try_history"]) or []
        first_passed = bool(hist and isinstance(hist[0], dict) and hist[0].get("passed"))
        if r["quality_status"] == QUALITY_PASSED and not first_passed:
            rescued += 1
        elif r["quality_status"] == QUALITY_FAILED:
            still_failed += 1
    head = ("<tr><th>product_id</th><th class=num>tries</th><th class=num>kept try</th><th class=num>try</th><th class=num>seed</th>"
            "<th>passed</th><th>failed checks</th><th class=num>sharpness</th></tr>")
    body = []
    for r in items[:MAX_TRY_PRODUCTS]:
        hist = _json_list(r["try_history"])
        kept = r["try_index"]
        span = len(hist) if hist else 1
        lead = (f'<td rowspan={span}><code>{esc(r["product_id"])}</code></td><td class=num rowspan={span}>{r["tries"]}</td>'
                f'<td class=num rowspan={span}>{DASH if kept is None else kept}</td>')
        if not hist:
            body.append(f'<tr>{lead}<td colspan=5><span class=note>try history unavailable</span></td></tr>')
            continue
        for i, t in enumerate(hist):
            t = t if isinstance(t, dict) else {}
            checks = t.get("failed_checks")
            checks_html = ", ".join(f"<code>{esc(c)}</code>" for c in checks) if isinstance(checks, list) else DASH
            passed = t.get("passed")
            passed_html = DASH if passed is None else ("yes" if passed else "no")
            cls = ' class="kept"' if i == kept else ""
            mark = " \u2713 kept" if i == kept else ""
            body.append(f"<tr{cls}>{lead if i == 0 else ''}<td class=num>{i}{mark}</td>"
                        f'<td class=num>{esc(format_number(t.get("seed")))}</td><td>{passed_html}</td><td>{checks_html or DASH}</td>'
                        f'<td class=num>{esc(format_number(t.get("sharpness")))}</td></tr>')
    n = len(items)
    more = f"<p class=note>{n - MAX_TRY_PRODUCTS} more products not listed.</p>" if n > MAX_TRY_PRODUCTS else ""
    note = (f"<p class=note id=tries-summary>{n} products rendered more than once; {rescued} passed the gate only after a retry,"
            f" {still_failed} failed it on every try. Tries are 0-based; the kept one is the best by pick_best (passing first,"
            f" then fewer failed checks, then sharper).</p>")
    return f"<section id=tries><h2>Best-of-N tries</h2>{note}<table class=tries>{head}{''.join(body)}</table>{more}</section>"


def _read_verdicts(output_uri: str) -> tuple[pa.Table | None, str | None]:
    """(latest verdict per render, or None; why not)."""
    from catalog_render import feedback

    try:
        table = feedback.read_feedback(output_uri)
    except (StorageError, pa.ArrowException, OSError, KeyError, ValueError) as exc:
        return None, f"feedback unreadable: {exc}"
    return table, None


def _verdicts_section(rows: pa.Table, fb: pa.Table | None, problem: str | None) -> str:
    """Reviewer verdicts on this run's renders: counts, agreement with the gate, rejected renders."""
    head = "<section id=verdicts><h2>Reviewer verdicts</h2>"
    if fb is None:
        return f"{head}<p class=note>{esc(problem)}</p></section>"
    if fb.num_rows == 0:
        return f"{head}<p class=note>No reviewer verdicts under this output (import them with feedback.import_feedback).</p></section>"
    run_rows = {(r["product_id"], r["render_key"]): r for r in rows.select(["product_id", "render_key", "quality_status", "status"]).to_pylist()
                if r["status"] == "ok"}
    mine = [v for v in fb.to_pylist() if (v["product_id"], v["render_key"]) in run_rows]
    others = fb.num_rows - len(mine)
    napprove = sum(v["verdict"] == "approve" for v in mine)
    nreject = len(mine) - napprove
    parts = [head, f'<p id=verdict-counts>{len(mine)} of this run\'s {len(run_rows)} ok renders have a verdict: '
                   f'<span class="badge ok">approve <b id="count-approve">{napprove}</b></span>'
                   f'<span class="badge failed">reject <b id="count-reject">{nreject}</b></span>'
                   f'<span class=note>(latest verdict per render; {others} verdicts under this output concern renders of other runs)</span></p>']
    if any(run_rows[(v["product_id"], v["render_key"])]["quality_status"] for v in mine):
        cross = {}
        for v in mine:
            q = run_rows[(v["product_id"], v["render_key"])]["quality_status"] or "not judged"
            cross[(q, v["verdict"])] = cross.get((q, v["verdict"]), 0) + 1
        qs = [q for q in (QUALITY_PASSED, QUALITY_FAILED, "not judged") if any(k[0] == q for k in cross)]
        trs = "".join(f"<tr><th scope=row>{esc(q)}</th><td class=num>{cross.get((q, 'approve'), 0)}</td>"
                      f"<td class=num>{cross.get((q, 'reject'), 0)}</td></tr>" for q in qs)
        parts.append("<h3>Gate vs reviewers</h3><table class=agree><tr><th>quality gate</th><th class=num>approved</th>"
                     f"<th class=num>rejected</th></tr>{trs}</table>")
    rejected = [v for v in mine if v["verdict"] == "reject"]
    if rejected:
        trs = "".join(
            f'<tr><td><code>{esc(v["product_id"])}</code></td><td><code>{esc(v["render_key"])}</code></td><td>{esc(v["reviewer"])}</td>'
            f'<td>{esc(v["comment"]) or DASH}</td><td>{esc(run_rows[(v["product_id"], v["render_key"])]["quality_status"]) or DASH}</td></tr>'
            for v in rejected[:MAX_REJECTED])
        more = f"<p class=note>{len(rejected) - MAX_REJECTED} more not listed.</p>" if len(rejected) > MAX_REJECTED else ""
        parts.append(f"<h3>Rejected renders ({len(rejected)})</h3><table class=rejected><tr><th>product_id</th><th>render_key</th>"
                     f"<th>reviewer</th><th>comment</th><th>quality gate</th></tr>{trs}</table>{more}")
    parts.append("</section>")
    return "".join(parts)


def _near_duplicates_section(rows: pa.Table, record: dict | None, verdicts: dict) -> str:
    """Groups of near-duplicate renders the run record lists under ``near_duplicates``."""
    if not record or "near_duplicates" not in record:
        return ""
    groups = record["near_duplicates"]
    head = "<section id=near-duplicates><h2>Near-duplicate renders</h2>"
    if not isinstance(groups, list):
        return f"{head}<p class=note>The run record's near_duplicates is not a list.</p></section>"
    groups = [g for g in groups if isinstance(g, list) and g]
    if not groups:
        return f"{head}<p class=note>No near-duplicate renders in this run.</p></section>"
    uri_of = {r["render_key"]: r["publish_uri"] or r["image_uri"] for r in rows.select(["render_key", "image_uri", "publish_uri"]).to_pylist()
              if r["render_key"]}

    def member(m) -> tuple[str | None, str | None]:
        if isinstance(m, dict):
            return m.get("product_id"), m.get("render_key")
        return None, str(m)  # a bare render key

    shown = groups[:MAX_DUP_GROUPS]
    thumbs = _thumbnails([uri_of.get(member(m)[1]) for g in shown[:MAX_DUP_THUMB_GROUPS] for m in g])
    blocks = []
    for gi, g in enumerate(shown, 1):
        cells = []
        for m in g:
            pid, key = member(m)
            label = f'<code>{esc(pid) or DASH}</code> <span class=note title="{esc(key)}">{esc((key or "")[:12])}</span>'
            if gi <= MAX_DUP_THUMB_GROUPS:
                uri = uri_of.get(key)
                img = _image_cell(thumbs.get(uri, (None, "no image")) if uri else (None, "not in this run"), f"render of {pid}", "render")
                cells.append(f"<div class=tile><div class=pair>{img}</div><div class=pid>{label}</div>{_verdict_badge(verdicts.get((pid, key)))}</div>")
            else:
                cells.append(f"<span class=dupm>{label}</span>")
        wrap = "sheet" if gi <= MAX_DUP_THUMB_GROUPS else "dupline"
        blocks.append(f'<div class=dupgroup id="dup-{gi}"><h3>Group {gi} ({len(g)} renders)</h3><div class={wrap}>{"".join(cells)}</div></div>')
    more = f"<p class=note>{len(groups) - len(shown)} more groups not listed.</p>" if len(groups) > len(shown) else ""
    note = (f"<p class=note>{len(groups)} group{'' if len(groups) == 1 else 's'} of renders of different products whose perceptual hashes are within the job's"
            f" near_duplicate_max_distance; thumbnails for the first {MAX_DUP_THUMB_GROUPS} groups.</p>")
    return f"{head}{note}{''.join(blocks)}{more}</section>"


#: Side of the full-size crops the upscaling section shows, pixels (1 image pixel = 1 CSS pixel).
UPSCALE_CROP = 320


def _crop_box(published: Image.Image, side: int) -> tuple[int, int, int, int]:
    """A ``side`` x ``side`` box centred on the product (the non-white pixels' box) of a published
    image, inside the image."""
    a = np.asarray(published)
    nonwhite = (a < 250).any(axis=2)
    if nonwhite.any():
        rows, cols = np.flatnonzero(nonwhite.any(axis=1)), np.flatnonzero(nonwhite.any(axis=0))
        cy, cx = (rows[0] + rows[-1]) // 2, (cols[0] + cols[-1]) // 2
    else:
        cy, cx = published.height // 2, published.width // 2
    side = min(side, published.width, published.height)
    left = int(min(max(0, cx - side // 2), published.width - side))
    top = int(min(max(0, cy - side // 2), published.height - side))
    return left, top, left + side, top + side


def _png_data_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return _data_uri(buf.getvalue(), "image/png")


def _upscaling_section(rows: pa.Table) -> str:
    """Real-ESRGAN against Lanczos on one render of the run, at full size: a crop of the published
    main image (as written, Real-ESRGAN then Lanczos to the canvas) beside the same crop of the
    same raw render post-processed with Lanczos only. Omitted when no ok row of the run was
    upscaled with Real-ESRGAN (an ``upscaler`` other than ``lanczos``)."""
    if "upscaler" not in rows.column_names:
        return ""
    cand = [r for r in _rows_with(rows, "upscaler") if r["status"] == "ok" and r["upscaler"] not in (None, "lanczos")
            and r.get("image_uri") and r.get("publish_uri")]
    if not cand:
        return ""
    from catalog_render.quality import presets

    # the product whose render fills most of its frame shows the most detail at full size
    cand.sort(key=lambda r: (-(r.get("fill_ratio") or 0.0), str(r["product_id"])))
    head = "<section id=upscaling><h2>Upscaling: Real-ESRGAN vs Lanczos</h2>"
    for r in cand[:5]:
        try:
            published = _load_image(r["publish_uri"])
            raw = _load_image(r["image_uri"])
        except (StorageError, imaging.ImageDecodeError):
            continue
        lanczos = presets.postprocess(raw, r["preset"], size=published.size)
        box = _crop_box(published, UPSCALE_CROP)
        side = box[2] - box[0]
        seconds = f", {format_number(r['upscale_seconds'], 3)} s" if r.get("upscale_seconds") is not None else ""
        figs = (f'<figure><img src="{_png_data_uri(published.crop(box))}" width={side} height={side} alt="Real-ESRGAN crop">'
                f"<figcaption>published: {esc(r['upscaler'])} then Lanczos{esc(seconds)}</figcaption></figure>"
                f'<figure><img src="{_png_data_uri(lanczos.crop(box))}" width={side} height={side} alt="Lanczos crop">'
                f"<figcaption>the same render, Lanczos only</figcaption></figure>")
        note = (f"<p class=note>Product <code>{esc(r['product_id'])}</code>: a {side}×{side} px crop at full size (one image pixel per"
                f" screen pixel) of its {published.width}×{published.height} px {esc(r['preset'])} main image, made from a"
                f" {raw.width}×{raw.height} px render. The preset's size rule means real pixels only where the upscaler adds detail;"
                " compare the edges and textures.</p>")
        return head + note + f"<div class=upscale>{figs}</div></section>"
    return head + "<p class=note>The upscaled images of this run could not be read.</p></section>"


def _image_cell(thumb: tuple[str | None, str], alt: str, kind: str) -> str:
    src, info = thumb
    if src is None:
        return f'<div class="ph {kind}" title="{esc(info)}">{esc(kind)}:<br>{esc(info)}</div>'
    return f'<figure class="img {kind}"><img src="{src}" alt="{esc(alt)}" title="{esc(alt)} ({esc(info)})"><span>{esc(kind)}</span></figure>'


def _sheet_section(rows: pa.Table, max_sheet: int, verdicts: dict | None = None) -> str:
    ranked = _sorted_ok(rows)
    total = ranked.num_rows
    shown = ranked.slice(0, max_sheet).to_pylist() if max_sheet else []
    key = "ssim" if any(r["ssim"] is not None for r in shown) else "sharpness"
    thumbs = _thumbnails([r["image_uri"] for r in shown] + [r["reference_uri"] for r in shown])
    tiles = []
    for i, r in enumerate(shown, 1):
        pid = r["product_id"]
        imgs = _image_cell(thumbs.get(r["image_uri"], (None, "no image_uri")), f"render of {pid}", "render")
        if r["reference_uri"]:
            imgs += _image_cell(thumbs[r["reference_uri"]], f"reference photo of {pid}", "reference")
        category, colour = _conditioning(r["conditioning"])
        cond = " \u00b7 ".join(esc(v) for v in (category, colour) if v) or '<span class=note>no category/colour</span>'
        scores = " ".join(f"{SCORE_LABELS[s]}&nbsp;{esc(format_number(r[s], 3))}" for s in SCORES if r[s] is not None)
        tiles.append(
            f'<div class=tile data-rank="{i}"><div class=pair>{imgs}</div>'
            f'<div class=pid><code>{esc(pid)}</code> {_quality_badge(r["quality_status"])}</div><div class=cond>{cond}</div>'
            f'<div class=sc>{scores or "no scores"}</div>{_verdict_badge((verdicts or {}).get((pid, r["render_key"])))}</div>'
        )
    note = f"{len(shown)} of {total} ok renders, lowest {key} first"
    if key == "ssim":
        note += " (renders without ssim come last, by sharpness)"
    if not shown:
        body = "<p class=note>No ok renders to show.</p>"
    else:
        body = f"<div class=sheet>{''.join(tiles)}</div>"
    return f"<section id=sheet><h2>Contact sheet</h2><p class=note>{esc(note)}; thumbnails at most {THUMB_BOX[1]} px tall.</p>{body}</section>"


_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2329;background:#f5f6f8;margin:0;padding:20px 28px;max-width:1500px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 10px}h3{font-size:15px;margin:16px 0 8px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:14px 18px;margin:14px 0}
code{font:12.5px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e6e9ed;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}
th[scope=row]{background:none;white-space:nowrap}th[scope=row] code{word-break:normal}
table.kv th{width:160px;background:none;color:#56606b;font-weight:500}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.def{max-width:520px;color:#37414b}
#failures td:first-child{max-width:380px}
td.err{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word;max-width:900px}
tr.selected td{background:#eef5ff;font-weight:600}
tr.failed td:nth-child(2){color:#b42318;font-weight:600}tr.skipped td:nth-child(2){color:#8a6100;font-weight:600}
.note{color:#66707a;font-size:12.5px}
.meta{color:#66707a;margin:0}
.badge{display:inline-block;border:1px solid #d0d5db;border-radius:10px;padding:1px 9px;margin:0 4px 3px 0;font-size:12.5px;background:#f7f8fa}
.badge.ok{border-color:#9bd3ae;background:#edf8f0}.badge.failed{border-color:#f1a9a0;background:#fdf0ee}.badge.skipped{border-color:#e9cf8c;background:#fdf7e6}
.hists{display:flex;flex-wrap:wrap;gap:10px}
.upscale{display:flex;flex-wrap:wrap;gap:12px}.upscale img{image-rendering:auto;border:1px solid #e6e9ed;max-width:none}
.upscale figcaption{font-size:12px;color:#56606b}
figure{margin:0}
.hist{border:1px solid #e6e9ed;border-radius:4px;padding:4px;background:#fff}
.hist figcaption{font-size:12px;color:#56606b;text-align:center}
.hist-ph{width:260px;height:180px}
.sheet{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.tile{border:1px solid #dde1e6;border-radius:4px;padding:6px;background:#fafbfc;width:min-content;min-width:140px}
.pair{display:flex;gap:4px}
.img{position:relative;line-height:0}
.img img{height:128px;width:auto;max-width:256px;image-rendering:pixelated;background:#fff;border:1px solid #e6e9ed}
.img span{position:absolute;left:2px;bottom:2px;font-size:9px;line-height:1.2;background:rgba(255,255,255,.8);color:#444;padding:0 3px;border-radius:2px}
.ph{display:flex;align-items:center;justify-content:center;text-align:center;background:#eceef1;color:#6b7580;border:1px dashed #c3c9d0;font-size:11px;padding:6px;overflow-wrap:anywhere}
.pair .ph{width:128px;height:128px}
.pid{margin-top:5px;font-size:12px}
.cond{font-size:12px;color:#37414b}
.sc{font-size:11px;color:#56606b;font-variant-numeric:tabular-nums;word-spacing:2px}
.verdict{display:inline-block;margin-top:3px;font-size:11px;border-radius:3px;padding:0 5px}
.verdict.approve{background:#edf8f0;color:#1e6b3a;border:1px solid #9bd3ae}.verdict.reject{background:#fdf0ee;color:#b42318;border:1px solid #f1a9a0}
.badge.q{font-size:10.5px;padding:0 6px}
ul.checks{margin:4px 0 0;padding-left:16px;font-size:11.5px}ul.checks code{font-size:11px}
tr.kept td:not([rowspan]){background:#eef5ff;font-weight:600}
.dupgroup h3{font-size:13px;margin:10px 0 4px}.dupline{font-size:12px}.dupm{display:inline-block;margin-right:12px}
details{margin-top:8px}pre{font-size:12px;background:#f7f8fa;padding:8px;overflow:auto;max-height:400px}
"""


def write_report(output_uri: str, run_id: str | None = None, max_sheet: int = 120) -> str:
    """Write ``OUTPUT/report.html`` for one run and return its URI.

    ``output_uri`` is a local path or ``s3://`` URI holding ``manifest/`` (and usually ``runs/``).
    ``run_id`` selects the run; None picks the latest run id (run ids sort by start time) among
    those with manifest rows or a run record. The page is one self-contained HTML file (no
    JavaScript, no network): images are embedded as base64 ``data:`` URIs.

    Shown: (1) run summary: run id, output, the run record's catalog, model, mode, started/finished
    times, wall seconds, counts (e.g. up to date / planned / quarantined), workers and images per
    second when present, the model ids and families in the manifest, and the manifest's row counts
    by status; plus a table of every run in the output with its status counts. (2) For each score
    (sharpness, background_whiteness, fill_ratio, psnr in dB, ssim): count, mean, median, p10,
    p90, min and max over the run's ok rows, with its definition, range and direction from
    :mod:`catalog_render.quality.scores`; non-finite values (an infinite PSNR) are left out of the
    statistics and counted. (3) One histogram per score (PNG). (4) Failed and skipped rows
    (product id, status, error; at most :data:`MAX_FAILURES`). (5) A contact sheet of up to
    ``max_sheet`` ok renders, lowest ssim first (renders without ssim after, by sharpness), each
    with its reference photo when the row has one, product id, category and colour from the
    conditioning, and rounded scores; thumbnails are JPEG q85, at most 128 px tall. An image that
    is missing or cannot be decoded is shown as a placeholder with the reason.

    Quality sections (each degrades on manifests written before the quality columns existed):
    (6) quality gate: "N of M passed the quality gate" over the rows with a quality_status, the
    checks the kept renders failed (quality_failed) with counts, and for each marketplace preset of
    the run one row per rule of ``presets.PRESETS[preset].rules`` (id, title, required /
    recommended, "k of n" failed, share, pass rate, source) counted from compliance_failed
    (required rules) and compliance_advisories (recommendations) over the rows evaluated for that
    preset; rules not measurable from pixels and rules not yet in force at the run's date are
    marked as such; "No marketplace preset" when no row has one. (7) Renders whose quality_status
    is failed-quality: thumbnail of publish_uri (else image_uri) with their failed checks, at most
    :data:`MAX_QUALITY_FAILURES` (omitted when no row has a quality_status). (8) Best-of-N: products
    with tries > 1, most tries first: tries, kept try index, and per try (try_history) its seed,
    passed, failed checks and sharpness (omitted when no product has more than one try).
    (8b) Upscaling: for a run whose preset enlarged renders with Real-ESRGAN, a full-size crop
    (:data:`UPSCALE_CROP` px, centred on the product) of one published main image beside the same
    crop of the same render post-processed with Lanczos only (omitted otherwise).
    (9) Reviewer verdicts from :func:`catalog_render.feedback.read_feedback` on this run's ok
    renders: approve/reject counts, gate status vs verdict, rejected renders with reviewer and
    comment; verdict badges on every thumbnail of a judged render. (10) Near-duplicate groups from
    the run record's ``near_duplicates`` key (a list of groups of {product_id, render_key}),
    omitted when the key is absent.

    Raises StorageError when the output has no manifest rows, when ``run_id`` is not a run of this
    output, or when the output cannot be read or the report written; ValueError when
    ``max_sheet`` is negative.
    """
    if max_sheet < 0:
        raise ValueError(f"max_sheet must be >= 0, got {max_sheet}")
    manifest, run_id, rows, record_uris = _load(output_uri, run_id)
    record, problem = _read_record(record_uris.get(run_id))
    ok = _ok_rows(rows)
    fb, fb_problem = _read_verdicts(output_uri)
    verdicts = {} if fb is None else {(v["product_id"], v["render_key"]): v for v in fb.to_pylist()}
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        _summary_section(output_uri, run_id, rows, record, problem),
        _runs_section(manifest, run_id, set(record_uris)),
        _scores_section(ok),
        _compliance_section(rows),
        _quality_failures_section(rows, verdicts),
        _tries_section(rows),
        _upscaling_section(rows),
        _verdicts_section(rows, fb, fb_problem),
        _near_duplicates_section(rows, record, verdicts),
        _failures_section(rows),
        _sheet_section(rows, max_sheet, verdicts),
    ]
    labels = {"summary": "summary", "scores": "scores", "compliance": "quality gate", "quality-failures": "failed quality",
              "tries": "best-of-N", "upscaling": "upscaling", "verdicts": "verdicts", "near-duplicates": "near-duplicates", "failures": "failures",
              "sheet": "contact sheet"}
    present = [k for k in labels if any(sec.startswith(f"<section id={k}>") for sec in sections)]
    nav = " \u00b7 ".join(f'<a href="#{k}">{labels[k]}</a>' for k in present)
    page = (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>catalog-render report \u2014 {esc(run_id)}</title><style>{_CSS}</style></head><body>"
        f"<h1>catalog-render report</h1><p class=meta>run <code>{esc(run_id)}</code> \u00b7 generated {esc(generated)} \u00b7 "
        + nav
        + "</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
    uri = storage.join(output_uri, "report.html")
    storage.write_bytes(uri, page.encode("utf-8"), content_type="text/html; charset=utf-8")
    return uri


# --------------------------------------------------------------------------------------------
# PNG contact sheet


def contact_sheet_size(count: int, cols: int) -> tuple[int, int]:
    """Pixel size (width, height) of a PNG contact sheet of ``count`` cells at most ``cols`` wide
    (before any downscaling to fit :data:`SHEET_MAX_BYTES`)."""
    ncols = max(1, min(cols, count))
    nrows = max(1, math.ceil(count / ncols))
    cell_w, cell_h = 2 * SHEET_THUMB + SHEET_GAP, SHEET_THUMB + SHEET_LABEL_H
    return ncols * cell_w + (ncols + 1) * SHEET_GAP, nrows * cell_h + (nrows + 1) * SHEET_GAP


def _sheet_cell_image(uri: str | None, fallback: str) -> Image.Image:
    box = (SHEET_THUMB, SHEET_THUMB)
    if uri:
        try:
            return imaging.letterbox(_load_image(uri), *box)
        except (StorageError, imaging.ImageDecodeError) as exc:
            fallback = "missing" if isinstance(exc, storage.ObjectNotFound) else "unreadable"
    im = Image.new("RGB", box, (236, 238, 241))
    draw = ImageDraw.Draw(im)
    font = _font(10)
    w = draw.textlength(fallback, font=font)
    draw.text(((SHEET_THUMB - w) / 2, SHEET_THUMB / 2 - 6), fallback, fill=(110, 117, 128), font=font)
    return im


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "\u2026", font=font) > width:
        text = text[:-1]
    return text + "\u2026"


def _encode_capped(im: Image.Image, max_bytes: int) -> bytes:
    """PNG of ``im`` within ``max_bytes``: full colour, else a 256-colour palette, else the
    palette image downscaled in 15% steps. Raises ValueError if even a tiny version is too big."""
    def png(x: Image.Image) -> bytes:
        buf = io.BytesIO()
        x.save(buf, "PNG", optimize=True)
        return buf.getvalue()

    data = png(im)
    scaled = im
    while len(data) > max_bytes:
        data = png(scaled.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
        if len(data) <= max_bytes:
            break
        w, h = int(scaled.width * 0.85), int(scaled.height * 0.85)
        if w < 32 or h < 16:
            raise ValueError(f"cannot fit a contact sheet in {max_bytes} bytes")
        scaled = im.resize((w, h), Image.Resampling.LANCZOS)
        data = png(scaled)
    return data


def write_contact_sheet_png(output_uri: str, dest_path: str, run_id: str | None = None, n: int = 48, cols: int = 8, max_bytes: int = SHEET_MAX_BYTES) -> str:
    """Write a PNG grid of up to ``n`` ok renders of a run (for a README) and return ``dest_path``.

    Cells are render | reference photo (each letterboxed on white into SHEET_THUMB = 96 px
    squares; a grey "no reference" / "missing" / "unreadable" square stands in when there is none)
    over a tiny product-id label (white cells on grey gutters), in the report's order (lowest ssim first, then by sharpness),
    ``min(cols, count)`` cells per row; the size is :func:`contact_sheet_size`. With no ok render
    the sheet is one empty cell saying so. The PNG is kept within ``max_bytes`` (default 500 KB)
    by palette quantisation and, if needed, downscaling. ``dest_path`` is a local path or
    ``s3://`` URI (written atomically via :mod:`catalog_render.storage`).

    Raises StorageError (no manifest, unknown run, unreadable output, failed write) and ValueError
    (``n`` or ``cols`` < 1).
    """
    if n < 1 or cols < 1:
        raise ValueError(f"n and cols must be >= 1, got n={n}, cols={cols}")
    _, run_id, rows, _ = _load(output_uri, run_id)
    shown = _sorted_ok(rows).slice(0, n).select(["product_id", "image_uri", "reference_uri"]).to_pylist()
    count = len(shown)
    width, height = contact_sheet_size(max(count, 1), cols)
    ncols = max(1, min(cols, count))
    sheet = Image.new("RGB", (width, height), (226, 229, 233))  # grey gutters separate the cells
    draw = ImageDraw.Draw(sheet)
    font = _font(10)
    cell_w, cell_h = 2 * SHEET_THUMB + SHEET_GAP, SHEET_THUMB + SHEET_LABEL_H
    if not shown:
        draw.rectangle((SHEET_GAP, SHEET_GAP, SHEET_GAP + cell_w - 1, SHEET_GAP + cell_h - 1), fill=(255, 255, 255))
        draw.text((SHEET_GAP + 4, SHEET_GAP + SHEET_THUMB // 2), _fit_text(draw, f"no ok renders in run {run_id}", font, cell_w - 8), fill=(90, 90, 90), font=font)

    def cell(r: dict) -> tuple[Image.Image, Image.Image]:
        return _sheet_cell_image(r["image_uri"], "no render"), _sheet_cell_image(r["reference_uri"], "no reference")

    with ThreadPoolExecutor(max_workers=min(8, max(1, count))) as pool:
        pairs = list(pool.map(cell, shown))
    for i, (r, (render, ref)) in enumerate(zip(shown, pairs)):
        x = SHEET_GAP + (i % ncols) * (cell_w + SHEET_GAP)
        y = SHEET_GAP + (i // ncols) * (cell_h + SHEET_GAP)
        draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=(255, 255, 255))
        sheet.paste(render, (x, y))
        sheet.paste(ref, (x + SHEET_THUMB + SHEET_GAP, y))
        label = _fit_text(draw, str(r["product_id"]), font, cell_w - 4)
        draw.text((x + 2, y + SHEET_THUMB + 1), label, fill=(40, 40, 40), font=font)
    storage.write_bytes(dest_path, _encode_capped(sheet, max_bytes), content_type="image/png")
    return dest_path
