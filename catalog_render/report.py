"""A self-contained HTML report of one run (``OUTPUT/report.html``), and a PNG contact sheet for the README.

``write_report`` reads an output's manifest (``OUTPUT/manifest/``) and run records
(``OUTPUT/runs/<run_id>.json``) and writes ``OUTPUT/report.html``: a run summary, score statistics
with the definitions from :mod:`catalog_render.quality.scores`, one histogram per score, the failed,
quarantined (manifest status ``skipped``) and left-alone rows, and a contact sheet of the run's renders beside their reference photos, lowest
score first; then the quality gate and marketplace-rule pass rates, the renders that failed the
gate, best-of-N tries, reviewers' verdicts (``OUTPUT/feedback/``) and near-duplicate groups.
Every image is embedded as a ``data:`` URI (small thumbnails), so the page opens
offline, from a local disk or from a downloaded S3 object, and needs no JavaScript.

This module builds the page: one plain mapping per section from the output's rows
(:mod:`catalog_render.report_data`) and pictures (:mod:`catalog_render.report_figures`), rendered
by the Jinja2 template ``templates/report.html`` (:mod:`catalog_render.templating`, autoescaping
on: product ids, errors, comments and conditioning values are untrusted text and are always
HTML-escaped).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import storage
from catalog_render.manifest import STATUSES
from catalog_render.report_data import (
    QUALITY_FAILED,
    QUALITY_PASSED,
    SCORES,
    conditioning_fields,
    counts_by_run,
    json_list,
    load_run,
    ok_rows,
    read_record,
    read_verdicts,
    rows_with,
    run_presets,
    score_stats,
    score_values,
    sorted_ok,
    status_counts,
)
from catalog_render.report_figures import (
    SHEET_GAP,
    SHEET_LABEL_H,
    SHEET_MAX_BYTES,
    SHEET_THUMB,
    THUMB_BOX,
    contact_sheet_size,
    histogram_png,
    thumbnails,
    upscaling,
    write_contact_sheet_png,
)
from catalog_render.templating import data_uri, format_number, render

#: The report's interface: the page, the README's contact sheet and how the page prints numbers.
__all__ = ["write_report", "write_contact_sheet_png", "contact_sheet_size", "score_stats", "score_definitions", "format_number",
           "SHEET_THUMB", "SHEET_GAP", "SHEET_LABEL_H", "SHEET_MAX_BYTES", "THUMB_BOX", "MAX_FAILURES", "MAX_QUALITY_FAILURES"]

#: Short labels used on contact-sheet tiles.
SCORE_LABELS = {"sharpness": "sharp", "background_whiteness": "white", "fill_ratio": "fill", "psnr": "psnr", "ssim": "ssim", "lpips": "lpips",
                "recognisability": "recog"}
#: Run-record keys shown in the run summary, in this order (others go under "other fields").
RECORD_KEYS = ("catalog", "kind", "model", "mode", "started_at", "finished_at", "wall_seconds", "counts", "workers", "images_per_second")
#: Run-record keys with a section of their own (kept out of "Other run-record fields").
SECTION_RECORD_KEYS = ("near_duplicates",)
#: Failed/skipped rows listed at most (the rest are counted).
MAX_FAILURES = 1000
#: Images listed at most in the "failed the quality gate" section (the rest are counted).
MAX_QUALITY_FAILURES = 60
#: Products listed at most in the best-of-N table, most tries first.
MAX_TRY_PRODUCTS = 200
#: Rejected renders listed at most.
MAX_REJECTED = 500
#: Near-duplicate groups listed at most, and how many of them get thumbnails.
MAX_DUP_GROUPS = 200
MAX_DUP_THUMB_GROUPS = 30
#: Score statistics columns, in table order.
STAT_COLUMNS = ("count", "mean", "median", "p10", "p90", "min", "max")
#: Section ids and their labels in the page's navigation line, in page order.
NAV = {"summary": "summary", "scores": "scores", "compliance": "quality gate", "quality-failures": "failed quality",
       "tries": "best-of-N", "upscaling": "upscaling", "verdicts": "verdicts", "near-duplicates": "near-duplicates", "failures": "failures",
       "sheet": "contact sheet"}

_FALLBACK_DEFS = {
    "sharpness": ("variance of the Laplacian of the grey image scaled to [0, 1]", "[0, inf)", "higher"),
    "background_whiteness": ("share of near-white pixels in the outer border band", "[0, 1]", "higher"),
    "fill_ratio": ("area of the bounding box of non-white pixels over the image area", "[0, 1]", "closer to ~0.85"),
    "psnr": ("peak signal-to-noise ratio against the reference photo, dB", "[0, inf)", "higher"),
    "ssim": ("structural similarity against the reference photo", "[-1, 1]", "higher"),
    "lpips": ("LPIPS v0.1 AlexNet distance to the reference photo (Zhang et al. 2018)", "[0, ~1]", "lower"),
    "recognisability": ("the model's category judge's probability that the render shows its catalog category (linear probe on ImageNet AlexNet "
                        "features; for a category the judge does not know, its probability of showing some product; the gate fails "
                        "renders below their recognisability_threshold)", "[0, 1]", "higher"),
}


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


# --------------------------------------------------------------------------------------------
# one mapping per section (None: the section is omitted)


def _summary(output_uri: str, rows: pa.Table, record: dict | None, record_problem: str | None) -> dict:
    counts = status_counts(rows)
    rec = record or {}
    models = [(col.replace("_", " "), sorted(v for v in rows.column(col).unique().to_pylist() if v)) for col in ("model_id", "family")]
    ips = None
    if "images_per_second" not in rec and isinstance(rec.get("wall_seconds"), (int, float)) and rec["wall_seconds"] > 0:
        ips = counts["ok"] / rec["wall_seconds"]  # ok rows / wall seconds
    finished = None
    if rows.num_rows:
        first, last = pc.min(rows.column("finished_at")).as_py(), pc.max(rows.column("finished_at")).as_py()
        finished = tuple(t.isoformat(timespec="seconds") if t else None for t in (first, last))
    others = {k: v for k, v in rec.items() if k not in RECORD_KEYS and k not in SECTION_RECORD_KEYS and k != "run_id"}
    return {
        "output": storage.display(output_uri),
        "record_items": [(key.replace("_", " "), rec[key]) for key in RECORD_KEYS if key != "counts" and key in rec] + _per_image(rows),
        "model_items": [(label, vals) for label, vals in models if vals],
        "images_per_second": ips,
        "rows_finished": finished,
        "counts": counts,
        "run_counts": rec.get("counts"),
        "record_problem": record_problem,
        "other_fields": json.dumps(others, indent=2, default=str, ensure_ascii=False, sort_keys=True) if others else None,
    }


def _per_image(rows: pa.Table) -> list[tuple[str, str]]:
    """[("seconds per image", "median, p90, max over n")] of the run's ok rows' render_seconds
    (the actor's time to make one image, writing excluded), or [] when none has one."""
    v = np.asarray(pc.drop_null(ok_rows(rows).column("render_seconds")).to_numpy(zero_copy_only=False), dtype=np.float64)
    if not v.size:
        return []
    return [("seconds per image", f"median {np.median(v):.2f}, p90 {np.percentile(v, 90):.2f}, max {v.max():.2f} over {v.size} images "
                                  "(render_seconds: the actor's time to make one image)")]


def _runs(manifest: pa.Table, run_id: str, record_ids) -> dict:
    by_run = counts_by_run(manifest)
    rows = []
    for rid in sorted(set(by_run) | set(record_ids)):
        c = by_run.get(rid, dict.fromkeys(STATUSES, 0))
        rows.append({"run_id": rid, "counts": c, "total": sum(c.values()), "has_record": rid in record_ids, "selected": rid == run_id})
    return {"statuses": STATUSES, "rows": rows}


def _scores(ok: pa.Table) -> dict:
    defs = score_definitions()
    stats = score_stats(ok)
    rows, hists = [], []
    for name in SCORES:
        definition, rng, better = defs[name]
        rows.append({"name": name, "stats": stats[name], "definition": definition, "range": rng, "better": better})
        _, values = score_values(ok, name)
        src = data_uri(histogram_png(values, name), "image/png") if values.size else None
        hists.append({"name": name, "src": src, "n": values.size})
    return {"ok_rows": ok.num_rows, "columns": STAT_COLUMNS, "rows": rows, "histograms": hists}


def _compliance_table(preset_name: str, judged: list[dict], run_date) -> dict:
    """Per-rule failure counts of one preset over the renders evaluated for it."""
    from catalog_render.quality import presets

    preset = presets.PRESETS.get(preset_name)
    n = len(judged)
    failed_by: dict[str, int] = {}
    advised_by: dict[str, int] = {}
    unreadable = 0
    for r in judged:
        failed, advisories = json_list(r["compliance_failed"]), json_list(r["compliance_advisories"])
        if failed is None or (r["compliance_advisories"] is not None and advisories is None):
            unreadable += 1
        for rid in set(map(str, failed or ())):
            failed_by[rid] = failed_by.get(rid, 0) + 1
        for rid in set(map(str, advisories or ())):
            advised_by[rid] = advised_by.get(rid, 0) + 1
    rules = []
    for rule in preset.rules if preset else ():
        kind = "required" if rule.required else "recommended"
        if rule.apparel is True:
            kind += ", apparel only"
        elif rule.apparel is False:
            kind += ", non-apparel only"
        in_force = rule.effective_from is None or run_date is None or run_date >= rule.effective_from
        rules.append({"id": rule.id, "description": rule.description, "kind": kind, "source": rule.source,
                      "unmeasurable": rule.measurement is None,
                      "not_before": None if in_force else rule.effective_from.isoformat(),
                      "failed": (failed_by if rule.required else advised_by).get(rule.id, 0)})
    known = {r["id"] for r in rules}
    other_rules = [{"id": rid, "kind": "required" if rid in failed_by else "recommended", "failed": failed_by.get(rid, 0) + advised_by.get(rid, 0)}
                   for rid in sorted((set(failed_by) | set(advised_by)) - known)]  # ids the preset table does not (or no longer) list
    return {"name": preset_name, "title": preset.title if preset else None, "n": n, "unreadable": unreadable,
            "passed": sum(1 for r in judged if json_list(r["compliance_failed"]) == []), "rules": rules, "other_rules": other_rules}


def _compliance(rows: pa.Table, record: dict | None = None) -> dict:
    """Quality gate pass rate, failed checks, and per-rule pass rates of the run's preset(s)."""
    judged = rows_with(rows, "quality_status")
    counts: dict[str, int] = {}
    for r in judged:
        counts[r["quality_status"]] = counts.get(r["quality_status"], 0) + 1
    npass, nfail = counts.pop(QUALITY_PASSED, 0), counts.pop(QUALITY_FAILED, 0)
    by_check: dict[str, int] = {}
    for r in judged:
        for c in set(map(str, json_list(r["quality_failed"]) or ())):
            by_check[c] = by_check.get(c, 0) + 1
    presets_used = run_presets(rows)
    marketplace = [p for p in presets_used if p != "none"]
    tables = []
    if marketplace:
        fa = pc.max(rows.column("finished_at")).as_py() if rows.num_rows else None
        run_date = fa.date() if fa else None
        for name in marketplace:
            tables.append(_compliance_table(name, [r for r in rows_with(rows, "compliance_failed") if r["preset"] == name], run_date))
    return {"judged": len(judged), "passed": npass, "failed": nfail, "other_statuses": sorted(counts.items()),
            "checks": sorted(by_check.items(), key=lambda kv: (-kv[1], kv[0])), "presets": tables, "preset_none": bool(presets_used),
            "recognisability": _recognisability(judged, record)}


def _recognisability(judged: list[dict], record: dict | None) -> dict:
    """The recognisability check of the run (catalog_render.recognisability): renders scored, below
    their threshold, scored by the category check and by the product check (categories unknown to
    the judge), not scorable (rows written before the product check), the thresholds of the run's
    plan (else the rows' distinct ones), and the run's note (e.g. no judge)."""
    plan = (record or {}).get("recognisability") or {}
    scored = [r for r in judged if r.get("recognisability") is not None]
    product = sum(1 for r in scored if (r.get("recognisability_note") or "").startswith("product check"))  # recognisability.PRODUCT_CHECK
    if plan.get("threshold") is not None:
        thresholds = [plan["threshold"]]
    else:
        thresholds = sorted({r["recognisability_threshold"] for r in judged if r.get("recognisability_threshold") is not None})
    unknown = sum(1 for r in judged if r.get("recognisability") is None and r.get("recognisability_note"))
    below = sum(1 for r in scored if r.get("recognisability_threshold") is not None and r["recognisability"] < r["recognisability_threshold"])
    return {"scored": len(scored), "below": below, "unknown": unknown, "thresholds": thresholds, "note": plan.get("note"),
            "source": plan.get("threshold_source"), "judge_id": plan.get("judge_id"), "category": len(scored) - product,
            "product": product, "product_threshold": plan.get("product_threshold")}


def _quality_failures(rows: pa.Table, verdicts: dict) -> dict | None:
    """The renders that failed the quality gate, with the checks each failed (None: no row was judged)."""
    if not any(s is not None for s in rows.column("quality_status").to_pylist()):
        return None
    bad = rows.filter(pc.equal(rows.column("quality_status"), QUALITY_FAILED))
    total = bad.num_rows
    bad = bad.take(pc.sort_indices(bad, sort_keys=[("product_id", "ascending")]))
    shown = bad.slice(0, MAX_QUALITY_FAILURES).to_pylist()
    thumbs = thumbnails([r["publish_uri"] or r["image_uri"] for r in shown])
    tiles = []
    for r in shown:
        uri = r["publish_uri"] or r["image_uri"]
        kind = "preset-size" if r["publish_uri"] else "render"  # made at the preset's size; failing the gate, it is not published
        tries = (r["try_index"] + 1, r["tries"]) if (r["tries"] or 0) > 1 and r["try_index"] is not None else None
        tiles.append({"thumb": thumbs.get(uri, (None, "no image")) if uri else (None, "no image"), "alt": f"{kind} image of {r['product_id']}",
                      "kind": kind, "product_id": r["product_id"], "verdict": verdicts.get((r["product_id"], r["render_key"])),
                      "tries": tries, "checks": json_list(r["quality_failed"])})
    return {"total": total, "tiles": tiles, "more": total - len(shown)}


def _tries(rows: pa.Table) -> dict | None:
    """Best-of-N: products rendered more than once, every try with its seed, verdict, failed checks
    and sharpness (None: no product had more than one try)."""
    multi = rows.filter(pc.fill_null(pc.greater(rows.column("tries"), 1), False))
    if multi.num_rows == 0:
        return None
    multi = multi.take(pc.sort_indices(multi, sort_keys=[("tries", "descending"), ("product_id", "ascending")]))
    items = multi.to_pylist()
    rescued = still_failed = 0
    for r in items:
        hist = json_list(r["try_history"]) or []
        first_passed = bool(hist and isinstance(hist[0], dict) and hist[0].get("passed"))
        if r["quality_status"] == QUALITY_PASSED and not first_passed:
            rescued += 1
        elif r["quality_status"] == QUALITY_FAILED:
            still_failed += 1
    products = []
    for r in items[:MAX_TRY_PRODUCTS]:
        hist = json_list(r["try_history"])
        kept = r["try_index"]
        tries = None
        if hist:
            tries = []
            for i, t in enumerate(hist):
                t = t if isinstance(t, dict) else {}
                checks = t.get("failed_checks")
                tries.append({"seed": t.get("seed"), "passed": t.get("passed"), "checks": checks if isinstance(checks, list) else None,
                              "sharpness": t.get("sharpness"), "kept": i == kept})
        products.append({"product_id": r["product_id"], "tries": r["tries"], "kept": kept, "span": len(hist) if hist else 1, "history": tries})
    return {"count": len(items), "products": products, "more": max(0, len(items) - MAX_TRY_PRODUCTS), "rescued": rescued, "still_failed": still_failed}


def _verdicts(rows: pa.Table, fb: pa.Table | None, problem: str | None) -> dict:
    """Reviewer verdicts on this run's renders: counts, agreement with the gate, rejected renders."""
    if fb is None:
        return {"problem": problem}
    if fb.num_rows == 0:
        return {"problem": None, "empty": True}
    run_rows = {(r["product_id"], r["render_key"]): r for r in rows.select(["product_id", "render_key", "quality_status", "status"]).to_pylist()
                if r["status"] == "ok"}
    mine = [v for v in fb.to_pylist() if (v["product_id"], v["render_key"]) in run_rows]
    gate_vs_reviewers = None
    if any(run_rows[(v["product_id"], v["render_key"])]["quality_status"] for v in mine):
        cross: dict[tuple[str, str], int] = {}
        for v in mine:
            q = run_rows[(v["product_id"], v["render_key"])]["quality_status"] or "not judged"
            cross[(q, v["verdict"])] = cross.get((q, v["verdict"]), 0) + 1
        gate_vs_reviewers = [(q, cross.get((q, "approve"), 0), cross.get((q, "reject"), 0))
                             for q in (QUALITY_PASSED, QUALITY_FAILED, "not judged") if any(k[0] == q for k in cross)]
    rejected = [{**v, "quality_status": run_rows[(v["product_id"], v["render_key"])]["quality_status"]} for v in mine if v["verdict"] == "reject"]
    return {"problem": None, "empty": False, "judged": len(mine), "ok_renders": len(run_rows), "other_runs": fb.num_rows - len(mine),
            "approved": sum(v["verdict"] == "approve" for v in mine), "gate_vs_reviewers": gate_vs_reviewers,
            "rejected": rejected, "max_rejected": MAX_REJECTED}


def _near_duplicates(rows: pa.Table, record: dict | None, verdicts: dict) -> dict | None:
    """Groups of near-duplicate renders the run record lists under ``near_duplicates`` (None: no such key)."""
    if not record or "near_duplicates" not in record:
        return None
    groups = record["near_duplicates"]
    if not isinstance(groups, list):
        return {"not_a_list": True}
    groups = [g for g in groups if isinstance(g, list) and g]
    uri_of = {r["render_key"]: r["publish_uri"] or r["image_uri"] for r in rows.select(["render_key", "image_uri", "publish_uri"]).to_pylist()
              if r["render_key"]}

    def member(m) -> tuple[str | None, str | None]:
        if isinstance(m, dict):
            return m.get("product_id"), m.get("render_key")
        return None, str(m)  # a bare render key

    shown = groups[:MAX_DUP_GROUPS]
    thumbs = thumbnails([uri_of.get(member(m)[1]) for g in shown[:MAX_DUP_THUMB_GROUPS] for m in g])
    out = []
    for gi, g in enumerate(shown, 1):
        members = []
        for m in g:
            pid, key = member(m)
            uri = uri_of.get(key)
            thumb = (thumbs.get(uri, (None, "no image")) if uri else (None, "not in this run")) if gi <= MAX_DUP_THUMB_GROUPS else None
            members.append({"product_id": pid, "render_key": key, "thumb": thumb, "alt": f"render of {pid}", "verdict": verdicts.get((pid, key))})
        out.append({"members": members, "thumbs": gi <= MAX_DUP_THUMB_GROUPS})
    return {"not_a_list": False, "total": len(groups), "groups": out, "more": len(groups) - len(shown), "thumb_groups": MAX_DUP_THUMB_GROUPS}


def _failures(rows: pa.Table) -> dict:
    bad = rows.filter(pc.not_equal(rows.column("status"), "ok"))
    if bad.num_rows:
        bad = bad.take(pc.sort_indices(bad, sort_keys=[("status", "ascending"), ("product_id", "ascending")]))
    return {"total": bad.num_rows, "rows": bad.slice(0, MAX_FAILURES).select(["product_id", "status", "error"]).to_pylist()}


def _sheet(rows: pa.Table, max_sheet: int, verdicts: dict) -> dict:
    ranked = sorted_ok(rows)
    shown = ranked.slice(0, max_sheet).to_pylist() if max_sheet else []
    thumbs = thumbnails([r["image_uri"] for r in shown] + [r["reference_uri"] for r in shown])
    tiles = []
    for r in shown:
        category, colour = conditioning_fields(r["conditioning"])
        tiles.append({"product_id": r["product_id"], "render": thumbs.get(r["image_uri"], (None, "no image_uri")),
                      "reference": thumbs[r["reference_uri"]] if r["reference_uri"] else None,
                      "category": category, "colour": colour, "quality_status": r["quality_status"],
                      "scores": [(SCORE_LABELS[s], r[s]) for s in SCORES if r[s] is not None],
                      "verdict": verdicts.get((r["product_id"], r["render_key"])),
                      "method": r["method"] if r.get("kind") == "design" else None})  # the variation: a swept value, a walk's t, the sheet
    key = "ssim" if any(r["ssim"] is not None for r in shown) else "sharpness"
    return {"total": ranked.num_rows, "tiles": tiles, "key": key, "thumb_height": THUMB_BOX[1]}


def write_report(output_uri: str, run_id: str | None = None, max_sheet: int = 120) -> str:
    """Write ``OUTPUT/report.html`` for one run and return its URI.

    ``output_uri`` is a local path or ``s3://`` URI holding ``manifest/`` (and usually ``runs/``).
    ``run_id`` selects the run; None picks the latest run id (run ids sort by start time) among
    those with manifest rows or a run record. The page is one self-contained HTML file (no
    JavaScript, no network): images are embedded as base64 ``data:`` URIs.

    Shown: (1) run summary: run id, output, the run record's catalog, kind, model, mode, started/finished
    times, wall seconds, counts (e.g. up to date / planned / quarantined), workers and images per
    second when present, the median / p90 / max seconds per image (render_seconds of the ok rows), the model ids and families in the manifest, and the manifest's row counts
    by status; plus a table of every run in the output with its status counts. (2) For each score
    (sharpness, background_whiteness, fill_ratio, psnr in dB, ssim): count, mean, median, p10,
    p90, min and max over the run's ok rows, with its definition, range and direction from
    :mod:`catalog_render.quality.scores`; non-finite values (an infinite PSNR) are left out of the
    statistics and counted. (3) One histogram per score (PNG). (4) Failed, quarantined (status ``skipped``) and left-alone rows
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
    (:data:`catalog_render.report_figures.UPSCALE_CROP` px, centred on the product) of one published
    main image beside the same crop of the same render post-processed with Lanczos only (omitted
    otherwise).
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
    manifest, run_id, rows, record_uris = load_run(output_uri, run_id)
    record, problem = read_record(record_uris.get(run_id))
    fb, fb_problem = read_verdicts(output_uri)
    verdicts = {} if fb is None else {(v["product_id"], v["render_key"]): v for v in fb.to_pylist()}
    sections = {
        "summary": _summary(output_uri, rows, record, problem),
        "runs": _runs(manifest, run_id, set(record_uris)),
        "scores": _scores(ok_rows(rows)),
        "compliance": _compliance(rows, record),
        "quality_failures": _quality_failures(rows, verdicts),
        "tries": _tries(rows),
        "upscaling": upscaling(rows),
        "verdicts": _verdicts(rows, fb, fb_problem),
        "near_duplicates": _near_duplicates(rows, record, verdicts),
        "failures": _failures(rows),
        "sheet": _sheet(rows, max_sheet, verdicts),
    }
    nav = [(key, label) for key, label in NAV.items() if sections[key.replace("-", "_")] is not None]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = render("report.html", run_id=run_id, generated=generated, nav=nav, **sections)
    uri = storage.join(output_uri, "report.html")
    storage.write_bytes(uri, page.encode("utf-8"), content_type="text/html; charset=utf-8")
    return uri
