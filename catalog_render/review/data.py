"""Reading an output for the review page: its renders, verdicts and current view, and the page
queries (filters, sort, paging) over them.

Everything goes through :mod:`catalog_render.storage` (local path or ``s3://``). The manifest is
read once and kept while its list of parts is unchanged (a run that adds parts is picked up on the
next page load); feedback parts are read once each (they are never rewritten). Filters, sorting and
paging are pyarrow compute kernels over whole columns, so a page of an output with 50,000 renders
is answered in milliseconds once the manifest is loaded (``benchmarks/review_open.py``).

The renders shown are the manifest's ``ok`` rows with a render_key and an image_uri, one per
render_key (its latest row). Any ``kind`` value a manifest holds is shown as is; a manifest
without a ``kind`` column counts every row as ``render``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import feedback, storage
from catalog_render.current import CURRENT_VIEW
from catalog_render.errors import StorageError
from catalog_render.report_data import QUALITY_FAILED
from catalog_render.review.errors import (  # noqa: F401  (re-exported: the page's errors)
    ImageGone,
    NoManifest,
    OldManifest,
    ReviewError,
    StorageUnavailable,
    UnknownRender,
)
from catalog_render.review.loading import RECOGNISABILITY_COLUMNS, SCORE_COLUMNS, ManifestCache, derived

#: Scores a page can be sorted by: manifest column -> (label, which end is better). Definitions:
#: README "Quality scores" (catalog_render/quality/scores.py and checks.py); recognisability:
#: docs/evaluation.md (catalog_render/recognisability.py).
SCORES: dict[str, tuple[str, str]] = dict(zip(SCORE_COLUMNS, (
    ("sharpness", "higher"), ("background whiteness", "higher"), ("fill ratio", "near 0.85"), ("PSNR (dB)", "higher"),
    ("SSIM", "higher"), ("LPIPS", "lower"), ("colourfulness", "-"), ("colour ΔE00", "lower"), ("clipped highlights", "lower"),
    ("clipped shadows", "lower"), ("recognisability", "higher"))))
#: Sort keys besides the scores.
SORTS = {"product_id": "product id", "newest": "newest first"} | {k: v[0] for k, v in SCORES.items()}
#: Scopes: the renders of the current view plus the last run (default), every render, or one run
#: (``run:<run_id>``).
SCOPE_CURRENT, SCOPE_ALL = "current", "all"
#: Renders per page by default and at most.
PER_PAGE, MAX_PER_PAGE = 48, 200
#: Seconds an image request may reuse the loaded manifest without listing its parts again.
IMAGE_LISTING_TTL_S = 10.0
#: Columns of the review table (besides the derived title, category, colour).
KEEP = ("product_id", "render_key", "image_uri", "publish_uri", "reference_uri", "renditions", "run_id", "finished_at",
        "quality_status", "quality_failed", "compliance_failed", "preset", "family", "model_id", "seed", "width", "height",
        "tries", "plan_reason", "kind", "_part", *SCORES, *RECOGNISABILITY_COLUMNS)


@dataclass
class Query:
    """A page request: ``scope`` (``current``, ``all`` or ``run:<id>``), filters, ``sort`` (a key of
    :data:`SORTS`), ``desc``, 1-based ``page`` and ``per`` (renders per page)."""

    scope: str = SCOPE_CURRENT
    failed_quality: bool = False
    unreviewed: bool = False
    category: str = ""
    kind: str = ""
    sort: str = "product_id"
    desc: bool = False
    page: int = 1
    per: int = PER_PAGE

    @classmethod
    def from_params(cls, params) -> Query:
        """From URL query parameters (a mapping of str -> str). Raises ReviewError naming the
        parameter for a value that cannot be used (unknown sort, a page that is not a number)."""
        def flag(name: str) -> bool:
            v = params.get(name, "")
            if v not in ("", "0", "1", "on", "true"):
                raise ReviewError(f"parameter {name!r}: {v!r} is not 1 or 0")
            return v in ("1", "on", "true")

        def number(name: str, default: int, lo: int, hi: int) -> int:
            raw = params.get(name, "")
            if raw == "":
                return default
            try:
                n = int(raw)
            except ValueError:
                raise ReviewError(f"parameter {name!r}: {raw[:40]!r} is not a whole number") from None
            if not lo <= n <= hi:
                raise ReviewError(f"parameter {name!r}: {n} is outside {lo}..{hi}")
            return n

        sort = params.get("sort", "") or "product_id"
        if sort not in SORTS:
            raise ReviewError(f"parameter 'sort': {sort[:60]!r} is not one of {', '.join(SORTS)}")
        return cls(scope=params.get("scope", "") or SCOPE_CURRENT, failed_quality=flag("failed"), unreviewed=flag("unreviewed"),
                   category=params.get("category", ""), kind=params.get("kind", ""), sort=sort, desc=flag("desc"),
                   page=number("page", 1, 1, 10**9), per=number("per", PER_PAGE, 1, MAX_PER_PAGE))

    def params(self, **changes) -> dict[str, str]:
        """URL query parameters of this query with ``changes`` applied (defaults left out)."""
        q = {**self.__dict__, **changes}
        out = {"scope": q["scope"] if q["scope"] != SCOPE_CURRENT else "", "failed": "1" if q["failed_quality"] else "",
               "unreviewed": "1" if q["unreviewed"] else "", "category": q["category"], "kind": q["kind"],
               "sort": q["sort"] if q["sort"] != "product_id" else "", "desc": "1" if q["desc"] else "",
               "page": str(q["page"]) if q["page"] != 1 else "", "per": str(q["per"]) if q["per"] != PER_PAGE else ""}
        return {k: v for k, v in out.items() if v}


@dataclass
class Page:
    """One page of renders: ``rows`` (dicts of the review table plus verdict, reviewer, comment),
    ``total`` (renders matching the query), the clamped ``page`` and ``pages``, ``counts`` of the
    scope before filters (renders, failed_quality, unreviewed, approve, reject), ``categories`` and
    ``kinds`` (value, count) in scope, the output's ``runs`` (run_id, renders), ``last_run``."""

    rows: list[dict]
    total: int
    page: int
    pages: int
    counts: dict[str, int]
    categories: list[tuple[str, int]]
    kinds: list[tuple[str, int]]
    runs: list[tuple[str, int]]
    last_run: str | None
    manifest_rows: int
    failed_or_skipped: int


def _renders(m: pa.Table) -> pa.Table:
    """The review table: one row per render_key (its latest ok row with an image), the columns of
    :data:`KEEP`, ``title``, ``category``, ``colour``."""
    ok = m.filter(pc.and_(pc.equal(m.column("status"), "ok"), pc.and_(pc.is_valid(m.column("render_key")), pc.is_valid(m.column("image_uri")))))
    if pc.count_distinct(ok.column("render_key")).as_py() < ok.num_rows:  # a render recorded twice: keep its latest row
        ok = ok.append_column("_i", pa.array(range(ok.num_rows), pa.int64()))
        last = ok.group_by(["render_key"]).aggregate([("_i", "max")]).column("_i_max")
        ok = ok.take(pc.sort_indices(last))
    title, category, colour = derived(ok.column("conditioning"))
    return ok.select(list(KEEP)).append_column("title", title).append_column("category", category).append_column("colour", colour)


class ReviewData:
    """One output as the review page sees it. Thread-safe (the server answers requests in a
    thread pool); every read goes through :mod:`catalog_render.storage`."""

    def __init__(self, output_uri: str):
        self.output_uri = output_uri if storage.is_s3(output_uri) else storage.display(output_uri)
        self._lock = threading.Lock()
        self._cache = ManifestCache(self.output_uri)
        self._parts: list[str] | None = None
        self._listed_at = 0.0
        self._manifest: pa.Table | None = None
        self._renders: pa.Table | None = None
        self.feedback_cache: dict[str, pa.Table] = {}

    # --- loading ------------------------------------------------------------------------------

    def renders(self, max_age_s: float = 0.0) -> pa.Table:
        """The review table (see :func:`_renders`), rebuilt when the manifest's parts changed
        (only new parts are read). ``max_age_s``: reuse the last listing when it is younger
        (image requests).

        Raises NoManifest (no manifest part), OldManifest (a part lacks a column this version
        requires, holds one of another type, or is not Parquet) or StorageUnavailable."""
        with self._lock:
            if self._renders is not None and time.monotonic() - self._listed_at < max_age_s:
                return self._renders
            parts = self._cache.list_parts()
            self._listed_at = time.monotonic()
            if parts != self._parts or self._renders is None:
                try:
                    m = self._cache.load(parts)
                except NoManifest:
                    self._parts = self._manifest = self._renders = None
                    raise
                self._manifest, self._renders, self._parts = m, _renders(m), parts
            return self._renders

    def manifest(self, max_age_s: float = IMAGE_LISTING_TTL_S) -> pa.Table:
        """Every manifest row (the columns of :data:`catalog_render.review.loading.READ`, ``kind``
        and ``_part``), in :func:`catalog_render.manifest.read_manifest`'s order; ``max_age_s`` as
        for :meth:`renders`."""
        self.renders(max_age_s=max_age_s)
        return self._manifest

    def history(self) -> pa.Table:
        """Every stored verdict, oldest first (:func:`catalog_render.feedback.feedback_history`)."""
        try:
            return feedback.feedback_history(self.output_uri, self.feedback_cache)
        except StorageError as exc:
            raise StorageUnavailable(f"cannot read the feedback of {self.output_uri}: {exc}") from None
        except (pa.ArrowException, KeyError) as exc:
            raise OldManifest(f"a feedback part under {self.output_uri} does not hold verdicts as this version stores them: {exc}",
                              title="Unreadable feedback") from None

    def verdicts(self) -> pa.Table:
        """The verdict in force per render (:func:`catalog_render.feedback.latest_verdicts`)."""
        return feedback.latest_verdicts(self.history())

    def current_keys(self) -> pa.Array | None:
        """render_keys of ``OUTPUT/current.parquet``; None when the output has none (or it is unreadable)."""
        try:
            t = storage.read_parquet(storage.join(self.output_uri, CURRENT_VIEW))
            return t.column("render_key").combine_chunks()
        except (StorageError, KeyError):
            return None

    # --- lookups ------------------------------------------------------------------------------

    def row(self, render_key: str, max_age_s: float = 0.0) -> dict:
        """The review-table row of a render_key. Raises UnknownRender when the manifest has no
        ok render with that key."""
        t = self.renders(max_age_s)
        hit = t.filter(pc.equal(t.column("render_key"), render_key))
        if hit.num_rows == 0:
            raise UnknownRender(f"no rendered image with render_key {render_key[:80]!r} in the manifest of {self.output_uri}")
        return hit.to_pylist()[0]

    def manifest_row(self, render_key: str) -> dict:
        """Every manifest column of a render_key's latest ok row (read again from its part).
        Raises UnknownRender when the manifest has none."""
        row = self.row(render_key)
        full = self._cache.full_row(self._cache.parts[row["_part"]], render_key) if row["_part"] < len(self._cache.parts) else None
        if full is None:
            raise UnknownRender(f"no rendered image with render_key {render_key[:80]!r} in the manifest of {self.output_uri}")
        return full

    # --- the page query ----------------------------------------------------------------------------

    def page(self, q: Query) -> Page:
        """Answer a page query: scope, then filters, then sort, then the page's slice. Masks and
        sort keys are computed on the columns they need; only the page's rows are gathered.
        Raises ReviewError when the scope names no run of the output (the message lists the runs)."""
        t = self.renders()
        m = self._manifest
        runs_t = t.group_by(["run_id"]).aggregate([("render_key", "count")]).sort_by("run_id")
        runs = list(zip(runs_t.column("run_id").to_pylist(), runs_t.column("render_key_count").to_pylist()))
        last_run = runs[-1][0] if runs else None
        verdict = _verdict_columns(t, self.verdicts())
        if q.scope == SCOPE_CURRENT:
            scope = pc.equal(t.column("run_id"), last_run) if last_run else pc.is_valid(t.column("run_id"))
            current = self.current_keys()
            if current is not None:
                scope = pc.or_(scope, pc.is_in(t.column("render_key"), value_set=current))
        elif q.scope.startswith("run:"):
            rid = q.scope[len("run:"):]
            if rid not in dict(runs):
                raise ReviewError(f"parameter 'scope': no run {rid[:80]!r} with renders in {self.output_uri} "
                                  f"(runs: {', '.join(r for r, _ in runs) or 'none'})")
            scope = pc.equal(t.column("run_id"), rid)
        elif q.scope == SCOPE_ALL:
            scope = pc.is_valid(t.column("render_key"))
        else:
            raise ReviewError(f"parameter 'scope': {q.scope[:60]!r} is not current, all or run:<run_id>")
        failed = pc.fill_null(pc.equal(t.column("quality_status"), QUALITY_FAILED), False)
        unreviewed = pc.is_null(verdict["verdict"])

        def count(mask) -> int:
            return pc.sum(pc.and_(scope, pc.fill_null(mask, False))).as_py() or 0

        counts = {"renders": count(scope), "failed_quality": count(failed), "unreviewed": count(unreviewed),
                  "approve": count(pc.equal(verdict["verdict"], "approve")), "reject": count(pc.equal(verdict["verdict"], "reject"))}
        categories = _value_counts(pc.filter(t.column("category"), scope))
        kinds = _value_counts(pc.filter(t.column("kind"), scope))
        mask = scope
        if q.failed_quality:
            mask = pc.and_(mask, failed)
        if q.unreviewed:
            mask = pc.and_(mask, unreviewed)
        if q.category:
            mask = pc.and_(mask, pc.fill_null(pc.equal(t.column("category"), q.category), False))
        if q.kind:
            mask = pc.and_(mask, pc.equal(t.column("kind"), q.kind))
        chosen = pc.indices_nonzero(mask)
        if q.sort == "newest":
            keys = [("finished_at", "descending"), ("product_id", "ascending")]
        elif q.sort == "product_id":
            keys = [("product_id", "descending" if q.desc else "ascending"), ("render_key", "ascending")]
        else:
            keys = [(q.sort, "descending" if q.desc else "ascending"), ("product_id", "ascending")]
        total = len(chosen)
        pages = max(1, -(-total // q.per))
        page = min(q.page, pages)
        rows: list[dict] = []
        if total:
            by = pa.table({name: pc.take(t.column(name), chosen) for name, _ in keys})
            shown = pc.take(chosen, pc.sort_indices(by, sort_keys=keys).slice((page - 1) * q.per, q.per))
            rows = t.take(shown).to_pylist()
            extra = {name: pc.take(col, shown).to_pylist() for name, col in verdict.items()}
            for i, r in enumerate(rows):
                r.update({name: values[i] for name, values in extra.items()})
        failed_or_skipped = m.num_rows - pc.sum(pc.equal(m.column("status"), "ok")).as_py() if m.num_rows else 0
        return Page(rows, total, page, pages, counts, categories, kinds, runs, last_run, m.num_rows, failed_or_skipped)


def _verdict_columns(t: pa.Table, fb: pa.Table) -> dict[str, pa.Array]:
    """verdict, reviewer, comment of each row of ``t`` (nulls where not reviewed), from the
    latest verdicts ``fb``, matched on (product_id, render_key) with ``index_in`` (no join: the
    wide review table is never copied)."""
    sep = pa.scalar("\x1f", pa.string())
    mine = pc.binary_join_element_wise(t.column("product_id"), t.column("render_key"), sep)
    theirs = pc.binary_join_element_wise(fb.column("product_id"), fb.column("render_key"), sep)
    idx = pc.index_in(mine, value_set=theirs)
    return {name: pc.take(fb.column(name), idx) for name in ("verdict", "reviewer", "comment")}


def _value_counts(col: pa.ChunkedArray) -> list[tuple[str, int]]:
    """(value, count) of the non-null values, most frequent first, then by value."""
    vc = pc.value_counts(pc.drop_null(col)).to_pylist() if len(col) else []
    return sorted(((v["values"], v["counts"]) for v in vc), key=lambda x: (-x[1], x[0]))

