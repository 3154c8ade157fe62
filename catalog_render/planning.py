"""Planning: render keys, seeds, and which products a run must render (backfill / refresh).

Pure functions over Arrow tables plus an injectable image probe, so they test without Ray.

* ``render_key`` (the idempotency key) = sha256 of the conditioning fields (title, category,
  attributes, prompt), the model identity, the generation parameters that affect the pixels, and
  the seed. A product is up to date when the manifest holds an ``ok`` row for its current
  render_key and that image object exists.
* ``backfill`` selects products whose ``image_uri`` is empty or points to a missing, undecodable
  or over-cap object (or all products with ``hide_images``, an evaluation that keeps the photo as
  reference), minus those already up to date.
* ``refresh`` selects every product that is not up to date.
* Review feedback (:mod:`catalog_render.feedback`) steers both modes: a rejected render is never
  current (the product is rendered again with the next attempt's seed, :func:`attempt_seed`), and
  an approved render keeps its product up to date until the product's conditioning changes, even
  when the model or the generation parameters change.
* Rows that cannot be rendered (bad or duplicate product ids, nothing to condition on, a
  conditioning the model cannot use) are quarantined with their reason; see :func:`plan`.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import plan_columns
from catalog_render.catalog import MAX_PRODUCT_ID_CHARS, conditioning_fields_problem, product_id_problem
from catalog_render.errors import ConfigError
from catalog_render.done_index import DoneIndex
from catalog_render.generators.base import Conditioning
from catalog_render.photos import photo_problem, probe_image

SEED_BITS = 63


def product_seed(job_seed: int, product_id: str) -> int:
    """Seed of one product's torch.Generator: first 8 bytes of sha256("job_seed:product_id") mod 2**63."""
    return int.from_bytes(hashlib.sha256(f"{job_seed}:{product_id}".encode()).digest()[:8], "big") % 2**SEED_BITS


#: Seeds tried per product before giving up when each one's render was rejected (see :func:`plan`).
MAX_ATTEMPTS = 100


def attempt_seed(job_seed: int, product_id: str, attempt: int) -> int:
    """Seed of a product's render attempt ``attempt`` (0-based). Attempt 0 is :func:`product_seed`;
    attempt k >= 1 (after k rejections) is the first 8 bytes of sha256("job_seed:product_id:attempt=k")
    mod 2**63. Raises ValueError for a negative attempt."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if attempt == 0:
        return product_seed(job_seed, product_id)
    digest = hashlib.sha256(f"{job_seed}:{product_id}:attempt={attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**SEED_BITS


def render_key(conditioning: Conditioning, model_id: str, params_used: dict, seed: int) -> str:
    """sha256 hex of the canonical JSON of (conditioning, model_id, params_used, seed)."""
    doc = json.dumps(
        {"conditioning": json.loads(conditioning.to_json()), "model_id": model_id, "params": params_used, "seed": seed},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(doc.encode()).hexdigest()


class _Attrs:
    def __init__(self, attrs: dict[str, str]):
        self._a = attrs

    def __getattr__(self, name: str) -> str:
        return self._a.get(name, "")


_PLACEHOLDERS = {"title", "category", "description", "product_id", "attributes"}


def check_template(template: str) -> None:
    """Raise ConfigError (naming generation.prompt_template) for placeholders other than title,
    category, description, product_id and attributes.<name>."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"generation.prompt_template: {exc}") from None
    for f in fields:
        root = f.split(".", 1)[0]
        if root not in _PLACEHOLDERS or (root == "attributes" and "." not in f) or (root != "attributes" and "." in f):
            raise ConfigError(f"generation.prompt_template: unknown placeholder {{{f}}} (use title, category, description, product_id, attributes.<name>)")


def build_prompt(template: str, product_id: str, title, category, description, attributes: dict[str, str]) -> str:
    """Fill the template; missing fields become empty and the resulting ', ,' runs are collapsed."""
    text = template.format(
        title=title or "", category=category or "", description=description or "", product_id=product_id, attributes=_Attrs(attributes)
    )
    text = re.sub(r"(\s*,\s*)+", ", ", text)
    return re.sub(r"\s+", " ", text).strip(" ,")


@dataclass
class Plan:
    """What a run must do.

    ``work``: one row per product to render (:data:`WORK_SCHEMA`: product_id, render_key, seed,
    conditioning JSON, prompt, reference_uri, plan_reason). ``quarantined``: (product_id, reason)
    of rows that cannot be rendered, in catalog order (product_id None when it is not a string).
    ``up_to_date``: products in scope that already have a current ok render (including
    ``approved_kept``: those kept by an approved render, see :func:`plan`);
    ``in_scope``: products the mode selects (up to date or not); ``total``: catalog rows."""

    work: pa.Table
    quarantined: list[tuple[str | None, str]]
    up_to_date: int
    in_scope: int
    total: int
    approved_kept: int = 0
    #: :func:`quarantine_key` of each ``quarantined`` entry, in the same order.
    quarantine_keys: list[str] = field(default_factory=list)

    def quarantine_rows(self, run_id: str, recorded: set[str] | frozenset = frozenset()) -> list[dict]:
        """The manifest rows of the quarantined products: status ``skipped``, ``error`` the reason,
        ``plan_reason`` ``"rejected: <reason>"``, ``quarantine_key``; a product_id that is not a
        string is recorded as ``""`` (the manifest's product_id is not nullable). Quarantines whose
        key is in ``recorded`` (the output's manifest has them already) are left out: a bad row is
        recorded once, not on every run."""
        return [
            {"run_id": run_id, "product_id": pid if pid is not None else "", "status": "skipped", "error": why, "plan_reason": f"rejected: {why}",
             "quarantine_key": key}
            for (pid, why), key in zip(self.quarantined, self.quarantine_keys)
            if key not in recorded
        ]


def quarantine_key(product_id, reason: str, row: dict) -> str:
    """sha256 hex of the canonical JSON of (product_id, reason, the catalog row's content: every
    column, maps as sorted key/value pairs): the identity of one quarantine. The same bad row
    quarantined for the same reason has the same key on every run; a change to the row (or to the
    reason) makes a new one."""
    def canon(v):
        if isinstance(v, list) and all(isinstance(x, tuple) and len(x) == 2 for x in v):
            return sorted([str(k), canon(x)] for k, x in v)
        return v

    doc = json.dumps({"product_id": product_id, "reason": reason, "row": {k: canon(v) for k, v in row.items()}},
                     sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


#: Columns of the work-item table. ``plan_reason`` says why the planner selected the product:
#: ``image missing (no image_uri)``, ``image missing (not found)``, ``image undecodable: <why>``,
#: ``image refused: exceeds pixel cap: ...`` / ``exceeds byte cap: ...``, ``image_uri refused:
#: <why>`` (backfill), ``photo hidden (--hide-images)``, ``render_key not in manifest`` /
#: ``render_key in manifest but its image is missing`` (refresh; ``; no reference: <why>`` is
#: appended when the product's photo cannot serve as reference). A product whose render was
#: rejected in review is planned with ``rejected render <first 12 of key> by <reviewer>: new seed
#: (attempt k)`` (backfill: followed by ``; `` and the photo reason above; refresh: followed by the
#: ``; no reference`` note when it applies).
WORK_SCHEMA = pa.schema(
    [
        ("product_id", pa.string()),
        ("render_key", pa.string()),
        ("seed", pa.int64()),
        ("conditioning", pa.string()),
        ("prompt", pa.string()),
        ("reference_uri", pa.string()),
        ("plan_reason", pa.string()),
    ]
)


def duplicate_ids(product_ids) -> dict[str, int]:
    """product_id -> number of rows for every id that appears more than once (nulls ignored).
    ``product_ids``: a string (Chunked)Array, e.g. the catalog's column read alone."""
    counts = pc.value_counts(product_ids.combine_chunks() if isinstance(product_ids, pa.ChunkedArray) else product_ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    return {v: c for v, c in zip(repeated.field("values").to_pylist(), repeated.field("counts").to_pylist()) if v is not None}


def plan(catalog: pa.Table, *, batch_rows: int = 100_000, **options) -> Plan:
    """Decide what to render. ``catalog`` follows the catalog schema (see catalog.conform); the
    catalog is planned ``batch_rows`` rows at a time (see :class:`Planner`, which also documents
    ``options``: the same keywords).

    Raises ConfigError for an unknown mode or a bad prompt template, StorageError when a photo
    cannot be checked (see :func:`probe_image`), ValueError when ``feedback`` holds approvals but
    ``manifest_table`` is None (an approval cannot be used without the render's conditioning)."""
    planner = Planner(duplicates=duplicate_ids(catalog.column("product_id")) if catalog.num_rows else {}, **options)
    work = [planner.add(catalog.slice(start, batch_rows)) for start in range(0, catalog.num_rows, batch_rows)]
    return planner.result(work)


_SIMPLE_ID = r"^[A-Za-z0-9][A-Za-z0-9_\-.:#+ ]*$"  # ids product_id_problem accepts without looking closer


class Planner:
    """The planner, fed one catalog batch at a time (:meth:`add`), so a catalog of any size is
    planned in memory proportional to a batch plus the work found (10^7 rows: stream the Parquet
    row groups, see benchmarks/plan_scale.py). Every step is columnar (pyarrow compute,
    :mod:`catalog_render.plan_columns`); Python runs per row only for rare rows (ids that are not
    plain ASCII, quarantines, products with review feedback) and for the sha256 digests.

    Options: ``mode`` (backfill | refresh), ``model_id``, ``params_used``, ``job_seed``,
    ``prompt_template``; ``done_keys``: a :class:`DoneIndex`, or a dict render_key -> image_uri of
    ok manifest rows together with ``existing_images`` (the set of image URIs present under the
    output). ``limit`` caps the work rows (catalog order). ``duplicates``: :func:`duplicate_ids` of
    the whole catalog. ``conditioning_problem`` is the model's check (``ModelInfo.conditioning_problem``):
    a product the run would render and it objects to is quarantined as ``cannot condition: <its
    reason>`` (products the mode does not select are not checked: the model does not matter to
    them). ``conditioning_fields``: the Conditioning fields that check reads (``ModelInfo.
    conditioning_fields``, e.g. ``("category",)``); it is then called once per distinct value
    combination with a Conditioning holding only those fields. None: once per row, with the full
    Conditioning.

    Quarantined (with the reason, in catalog order; the rest of the catalog is planned as usual):
    a product id that :func:`catalog.product_id_problem` refuses (``bad product_id: ...``); every
    row of a product id that appears more than once (``duplicate product_id: N rows share this
    id``): which row is right cannot be known, so none is rendered rather than one at random; a row
    with neither title nor category; a row the model cannot condition on.

    Not quarantined: a photo that is missing, undecodable, over the caps or at a refused
    ``image_uri`` is exactly why a backfill renders the product (the reason is its
    ``plan_reason``); it is never used as reference. Photos in odd modes (CMYK, greyscale, 16-bit,
    alpha, palette) are valid: they decode to RGB and serve as reference. A backfill probes every
    photo of the catalog (``probe``, ``threads`` at a time); a refresh probes only the photos of the
    products it renders (to use them as reference).

    Review feedback: ``feedback`` is the table of :func:`catalog_render.feedback.read_feedback`
    (the latest verdict per (product_id, render_key); when a pair repeats, its last row wins) and
    ``manifest_table`` the output's manifest (:func:`catalog_render.manifest.read_manifest`), where
    approved renders are looked up. For each product the mode selects (both modes):

    * an approved render (an ``ok`` manifest row of the product whose pair's verdict is
      ``approve`` and whose image is in ``existing_images``) whose ``conditioning`` JSON equals the
      product's current conditioning (title, category, attributes, prompt) keeps the product up to
      date, whatever the model, the generation parameters or the job seed: approved renders are not
      rendered again until the product changes. Such products count in ``up_to_date`` and
      ``approved_kept``.
    * otherwise the product's render_key is computed with attempt 0's seed (:func:`attempt_seed`);
      while the pair (product_id, that render_key) is rejected, the next attempt's seed is used, so
      a rejected render is never current and each rejection moves the product to the next seed,
      deterministically. The resulting render_key is then up to date or planned as usual; a product
      planned on attempt k >= 1 has plan_reason ``rejected render <first 12 of the last rejected
      key> by <its reviewer>: new seed (attempt k)``. A product whose first :data:`MAX_ATTEMPTS`
      renders are all rejected is quarantined (``every render rejected: ...``).

    Products the mode does not select are untouched by feedback (a backfill does not re-render a
    product that has a valid photo because its render was rejected). With ``limit``, the products
    after the one that fills the limit are not looked at (not counted, not checked by the model);
    the id and row checks still quarantine bad rows of the whole catalog."""

    def __init__(self, *, mode: str, model_id: str, params_used: dict, job_seed: int, prompt_template: str, done_keys,
                 existing_images=frozenset(), hide_images: bool = False, limit: int | None = None,
                 probe: Callable[[str], str | None] = probe_image, threads: int = 16,
                 conditioning_problem: Callable[[Conditioning], str | None] | None = None,
                 conditioning_fields: tuple[str, ...] | None = None, feedback: pa.Table | None = None,
                 manifest_table: pa.Table | None = None, duplicates: dict[str, int] | None = None):
        if mode not in ("backfill", "refresh"):
            raise ConfigError(f"mode: must be backfill or refresh, got {mode!r}")
        check_template(prompt_template)
        self.mode, self.model_id, self.params_used, self.job_seed, self.template = mode, model_id, params_used, job_seed, prompt_template
        self.parts = plan_columns.template_parts(prompt_template)
        self.done = done_keys if isinstance(done_keys, DoneIndex) else DoneIndex.from_mapping(done_keys, existing_images)
        self.hide_images, self.limit, self.probe, self.threads = hide_images, limit, probe, threads
        self.check, self.check_fields = conditioning_problem, conditioning_fields
        self.rejected, self.approved = _review_index(feedback, manifest_table, existing_images)
        self.rejected_ids = pa.array(sorted({pid for pid, _ in self.rejected}), pa.string())
        self.duplicates = duplicates or {}
        self.duplicate_ids = pa.array(list(self.duplicates), pa.string())
        self.quarantined: list[tuple[int, str | None, str, dict]] = []  # (catalog row, product_id, reason, row)
        self.total = self.up_to_date = self.in_scope = self.approved_kept = self.n_work = 0

    def result(self, work: list[pa.Table]) -> Plan:
        """The :class:`Plan` of everything added; ``work`` the tables :meth:`add` returned."""
        q = sorted(self.quarantined, key=lambda x: x[0])
        table = pa.concat_tables(work) if work else WORK_SCHEMA.empty_table()
        return Plan(table, [(p, w) for _, p, w, _ in q], self.up_to_date, self.in_scope, self.total, self.approved_kept,
                    [quarantine_key(p, w, row) for _, p, w, row in q])

    def _quarantine(self, batch: pa.Table, base: int, rows, pids, reasons) -> None:
        full = batch.take(pa.array(rows, pa.int64())).to_pylist() if len(rows) else []
        self.quarantined.extend((base + int(i), p, w, r) for i, p, w, r in zip(rows, pids, reasons, full))

    def _row_checks(self, batch: pa.Table, base: int) -> np.ndarray:
        """Quarantine bad ids, duplicate ids and rows with nothing to condition on; returns the
        mask of the rows that pass."""
        n = batch.num_rows
        pid = plan_columns._str(batch.column("product_id"))
        simple = pc.and_(pc.match_substring_regex(pid, _SIMPLE_ID), pc.less_equal(pc.utf8_length(pid), MAX_PRODUCT_ID_CHARS))
        bad: dict[int, tuple[str | None, str]] = {}
        unsure = np.flatnonzero(~np.asarray(simple.fill_null(False)))
        for i, p in zip(unsure, pid.take(pa.array(unsure, pa.int64())).to_pylist()):
            why = product_id_problem(p)
            if why:
                bad[int(i)] = (p, f"bad product_id: {why}")
        if self.duplicates:
            dup = np.flatnonzero(np.asarray(pc.is_in(pid, value_set=self.duplicate_ids).fill_null(False)))
            for i, p in zip(dup, pid.take(pa.array(dup, pa.int64())).to_pylist()):
                if int(i) not in bad:
                    bad[int(i)] = (p, f"duplicate product_id: {self.duplicates[p]} rows share this id (none is rendered: which is right cannot be known)")
        content = [pc.match_substring_regex(plan_columns._str(batch.column(c)), f"[^{plan_columns.PY_SPACE}]").fill_null(False)
                   for c in ("title", "category") if c in batch.column_names]
        has = np.zeros(n, bool)
        for c in content:
            has |= np.asarray(c)
        for i in np.flatnonzero(~has):
            if int(i) not in bad:
                bad[int(i)] = (pid[int(i)].as_py(), f"bad row: {conditioning_fields_problem(None, None)}")
        rows = sorted(bad)
        self._quarantine(batch, base, rows, [bad[i][0] for i in rows], [bad[i][1] for i in rows])
        ok = np.ones(n, bool)
        ok[rows] = False
        return ok

    def _photos(self, uris: list) -> list:
        """photo_problem of each URI; probes run ``threads`` at a time, only for non-empty URIs."""
        out = ["image missing (no image_uri)" if not u else None for u in uris]
        todo = [i for i, u in enumerate(uris) if u]
        if todo:
            with ThreadPoolExecutor(min(self.threads, len(todo))) as pool:
                for i, why in zip(todo, pool.map(lambda u: photo_problem(u, self.probe), [uris[i] for i in todo])):
                    out[i] = why
        return out

    def _model_check(self, cand: pa.Table, attrs, prompts: pa.Array) -> list:
        """The model's objection (or None) per row of ``cand``."""
        n = cand.num_rows
        if self.check is None or n == 0:
            return [None] * n
        if self.check_fields is None:
            rows = cand.select([c for c in ("title", "category", "attributes") if c in cand.column_names]).to_pylist()
            return [self.check(Conditioning(title=r.get("title"), category=r.get("category"), attributes=dict(r.get("attributes") or []), prompt=p))
                    for r, p in zip(rows, prompts.to_pylist())]

        def raw(name: str) -> list:
            if name.startswith("attributes."):
                return attrs.lookup(name.split(".", 1)[1], missing=None, null=None).to_pylist()
            return cand.column(name).to_pylist() if name in cand.column_names else [None] * n

        columns = [raw(f) for f in self.check_fields]
        combos = list(zip(*columns)) if columns else [()] * n
        verdicts: dict[tuple, str | None] = {}
        for combo in set(combos):
            fields = dict(zip(self.check_fields, combo))
            extra = {k.split(".", 1)[1]: v for k, v in fields.items() if k.startswith("attributes.") and v is not None}
            verdicts[combo] = self.check(Conditioning(title=fields.get("title"), category=fields.get("category"), attributes=extra))
        return [verdicts[c] for c in combos]

    def add(self, batch: pa.Table) -> pa.Table:
        """Plan one catalog batch (rows in catalog order, after every batch added before);
        returns its work items (:data:`WORK_SCHEMA`) and updates the counts and quarantines."""
        base, n = self.total, batch.num_rows
        self.total += n
        passed = self._row_checks(batch, base)
        if self.limit is not None and self.n_work >= self.limit:
            return WORK_SCHEMA.empty_table()
        rows = np.flatnonzero(passed)
        cand = batch.take(pa.array(rows, pa.int64()))
        uris = cand.column("image_uri").to_pylist() if "image_uri" in cand.column_names else [None] * len(rows)
        photo = None
        if self.mode == "backfill":
            photo = self._photos(uris)
            if not self.hide_images:
                keep = [i for i, why in enumerate(photo) if why is not None]
                rows, cand, uris, photo = rows[keep], cand.take(pa.array(keep, pa.int64())), [uris[i] for i in keep], [photo[i] for i in keep]
        attrs = plan_columns.Attributes(cand.column("attributes") if "attributes" in cand.column_names else None, cand.num_rows)
        # Python ids only when rows may need Python: review feedback or the model's check
        pids = cand.column("product_id").to_pylist() if (self.rejected or self.approved or self.check) else None
        if self.parts is None:
            rows_py = cand.to_pylist()
            prompts = pa.array([build_prompt(self.template, r["product_id"], r.get("title"), r.get("category"), r.get("description"),
                                             dict(r.get("attributes") or [])) for r in rows_py], pa.string())
        else:
            prompts = plan_columns.prompts(self.parts, cand, attrs)
        title = cand.column("title") if "title" in cand.column_names else pa.nulls(len(rows), pa.string())
        category = cand.column("category") if "category" in cand.column_names else pa.nulls(len(rows), pa.string())
        jsons = tuple(plan_columns.json_strings(c) for c in (title, category, prompts))
        compact = plan_columns.conditioning_json(*jsons, attrs, compact=True)
        seeds = plan_columns.product_seeds(self.job_seed, cand.column("product_id"))
        keys = plan_columns.render_keys(compact, self.model_id, self.params_used, seeds)
        objections = self._model_check(cand, attrs, prompts)
        status = ["" if why is None else f"cannot condition: {why}" for why in objections]  # "" = in scope, to be decided
        rejection: dict[int, str] = {}
        special = set(np.flatnonzero(np.asarray(pc.is_in(cand.column("product_id"), value_set=self.rejected_ids)))) if self.rejected else set()
        if self.approved:
            special |= {i for i, p in enumerate(pids) if p in self.approved}
        for i in sorted(special):
            if status[i]:
                continue
            doc = json.loads(compact[i].as_py())
            if self.approved.get(pids[i]) and doc in self.approved[pids[i]]:
                status[i] = "approved"
                continue
            attempt, seed, key, last = 0, int(seeds[i]), keys[i], None
            while (pids[i], key) in self.rejected:
                last, attempt = key, attempt + 1
                if attempt >= MAX_ATTEMPTS:
                    break
                seed = attempt_seed(self.job_seed, pids[i], attempt)
                key = render_key(Conditioning(**doc), self.model_id, self.params_used, seed)
            if attempt >= MAX_ATTEMPTS:
                status[i] = (f"every render rejected: the renders of all {MAX_ATTEMPTS} seeds tried were rejected in review"
                             f" (last {last[:12]} by {self.rejected[(pids[i], last)]})")
            elif attempt:
                seeds[i], keys[i] = seed, key
                rejection[i] = f"rejected render {last[:12]} by {self.rejected[(pids[i], last)]}: new seed (attempt {attempt})"
        key_arr = pa.array(keys, pa.string())
        current, known = self.done.lookup(key_arr)
        in_scope = np.array([s in ("", "approved") for s in status], bool) if special or self.check else np.ones(len(rows), bool)
        fresh = np.array([s == "" for s in status], bool) if special or self.check else np.ones(len(rows), bool)
        work = fresh & ~current
        cut = len(rows)
        if self.limit is not None and work.sum() >= self.limit - self.n_work:
            cut = int(np.flatnonzero(work)[self.limit - self.n_work - 1]) + 1  # the candidate that fills the limit: nothing after it counts
        self.in_scope += int(in_scope[:cut].sum())
        self.approved_kept += sum(1 for s in status[:cut] if s == "approved")
        self.up_to_date += int((fresh & current)[:cut].sum()) + sum(1 for s in status[:cut] if s == "approved")
        bad = [i for i in range(cut) if status[i] not in ("", "approved")]
        self._quarantine(batch, base, rows[bad], [pids[i] for i in bad], [status[i] for i in bad])
        idx = np.flatnonzero(work[:cut])
        self.n_work += len(idx)
        return self._work(cand, idx, uris, photo, prompts, jsons, attrs, seeds, key_arr, known, rejection)

    def _work(self, cand, idx, uris, photo, prompts, jsons, attrs, seeds, keys, known, rejection) -> pa.Table:
        """The work items of ``cand``'s rows ``idx`` (see :data:`WORK_SCHEMA` for plan_reason)."""
        take = pa.array(idx, pa.int64())
        uris = [uris[i] for i in idx]
        if photo is None:  # refresh: probe only what is rendered, for its reference
            photo = self._photos(uris)
        else:
            photo = [photo[i] for i in idx]
        if self.mode == "backfill":
            reasons = ["photo hidden (--hide-images)" if why is None else why for why in photo]
            reasons = [f"{rejection[i]}; {r}" if i in rejection else r for i, r in zip(idx, reasons)]
        else:
            kn = known[idx]
            reasons = [rejection.get(i) or ("render_key in manifest but its image is missing" if k else "render_key not in manifest")
                       for i, k in zip(idx, kn)]
            reasons = [f"{r}; no reference: {why}" if why is not None and u else r for r, why, u in zip(reasons, photo, uris)]
        sub = attrs.take(idx)
        return pa.table({
            "product_id": cand.column("product_id").take(take),
            "render_key": keys.take(take),
            "seed": pa.array(seeds[idx], pa.int64()),
            "conditioning": plan_columns.conditioning_json(*(j.take(take) for j in jsons), sub, compact=False),
            "prompt": prompts.take(take),
            "reference_uri": pa.array([u if why is None else None for u, why in zip(uris, photo)], pa.string()),
            "plan_reason": pa.array(reasons, pa.string()),
        }, schema=WORK_SCHEMA)


def _review_index(feedback: pa.Table | None, manifest_table: pa.Table | None,
                  existing_images: set[str]) -> tuple[dict[tuple[str, str], str], dict[str, list[dict]]]:
    """``(rejected, approved)`` from the feedback table: rejected maps (product_id, render_key) ->
    reviewer; approved maps product_id -> the parsed conditioning of each of its approved ``ok``
    manifest rows whose image is in ``existing_images``. See :func:`plan` for the ValueError."""
    if feedback is None or feedback.num_rows == 0:
        return {}, {}
    verdicts: dict[tuple[str, str], tuple[str, str]] = {}
    for r in feedback.select(["product_id", "render_key", "verdict", "reviewer"]).to_pylist():
        verdicts[(r["product_id"], r["render_key"])] = (r["verdict"], r["reviewer"])  # last row wins
    rejected = {pair: who for pair, (verdict, who) in verdicts.items() if verdict == "reject"}
    approved_pairs = {pair for pair, (verdict, _) in verdicts.items() if verdict == "approve"}
    approved: dict[str, list[dict]] = {}
    if approved_pairs:
        if manifest_table is None:
            raise ValueError("plan: feedback holds approvals but no manifest_table was given to look their renders up")
        cols = manifest_table.select(["product_id", "render_key", "status", "image_uri", "conditioning"]).to_pylist()
        for r in cols:
            if (r["status"] == "ok" and (r["product_id"], r["render_key"]) in approved_pairs and r["conditioning"]
                    and r["image_uri"] in existing_images):
                approved.setdefault(r["product_id"], []).append(json.loads(r["conditioning"]))
    return rejected, approved
