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
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from catalog_render import imaging, storage
from catalog_render.catalog import (
    conditioning_fields_problem,
    image_uri_problem,
    product_id_problem,
)
from catalog_render.errors import ConfigError
from catalog_render.generators.base import Conditioning

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


def probe_image(uri: str) -> str | None:
    """None when the image object exists and decodes within the caps, else why not:
    ``image missing (not found)``, ``image undecodable: <empty file (0 bytes) | not an image |
    truncated (...) | corrupt (...)>``, ``image refused: exceeds pixel cap: 900,000,000 px (...)``
    or ``image refused: exceeds byte cap: ...`` (caps: :data:`imaging.MAX_PIXELS`,
    :data:`imaging.MAX_BYTES`; an over-cap object is refused before it is read or decompressed).

    Raises StorageError when the store cannot answer (unreachable endpoint, denied access, a
    directory): a photo that cannot be checked is not a missing photo, and a backfill must not
    render a whole catalog because S3 is down."""
    try:
        imaging.decode_rgb(storage.read_bytes(uri, max_bytes=imaging.MAX_BYTES))
        return None
    except storage.ObjectNotFound:
        return "image missing (not found)"
    except storage.ObjectTooLarge as exc:
        return f"image refused: exceeds byte cap: {exc.size:,} bytes (max {exc.limit:,})"
    except imaging.ImageTooLarge as exc:
        return f"image refused: {exc}"
    except imaging.ImageDecodeError as exc:
        return f"image undecodable: {exc}"


def photo_problem(uri: str | None, probe: Callable[[str], str | None] = probe_image) -> str | None:
    """Why a catalog row's photo cannot be used (the reason a backfill renders the product), or
    None: ``image missing (no image_uri)``, ``image_uri refused: <why>`` (catalog.image_uri_problem),
    or what ``probe`` (:func:`probe_image`) says. Raises StorageError as ``probe`` does."""
    if not uri:
        return "image missing (no image_uri)"
    refused = image_uri_problem(uri)
    return f"image_uri refused: {refused}" if refused else probe(uri)


def check_photos(catalog: pa.Table, threads: int = 16, probe: Callable[[str], str | None] = probe_image) -> tuple[list, int]:
    """Probe every photo of a catalog as a backfill would (:func:`photo_problem`), ``threads`` at a
    time. Returns ``(problems, without_uri)``: ``problems`` lists ``(row, product_id, reason)`` in
    row order for every row whose ``image_uri`` is set but unusable (missing object, empty, not an
    image, truncated, over the caps, refused path); ``without_uri`` counts rows with no
    ``image_uri`` (not a problem: a backfill renders them). Raises StorageError when the store
    cannot answer (``validate --check-images`` exits 5 then)."""
    rows = catalog.select([c for c in ("product_id", "image_uri") if c in catalog.column_names]).to_pylist()
    uris = [r.get("image_uri") for r in rows]
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(lambda u: photo_problem(u, probe) if u else None, uris))
    problems = [(i, r.get("product_id"), why) for i, (r, why) in enumerate(zip(rows, found)) if why]
    return problems, sum(1 for u in uris if not u)


def plan(
    catalog: pa.Table,
    *,
    mode: str,
    model_id: str,
    params_used: dict,
    job_seed: int,
    prompt_template: str,
    done_keys: dict[str, str],
    existing_images: set[str],
    hide_images: bool = False,
    limit: int | None = None,
    probe: Callable[[str], str | None] = probe_image,
    threads: int = 16,
    conditioning_problem: Callable[[Conditioning], str | None] | None = None,
    feedback: pa.Table | None = None,
    manifest_table: pa.Table | None = None,
) -> Plan:
    """Decide what to render. ``catalog`` follows the catalog schema (see catalog.conform);
    ``done_keys`` maps render_key -> image_uri of ok manifest rows; ``existing_images`` is the set
    of image URIs present under the output. ``limit`` caps the work rows (catalog order).
    ``conditioning_problem`` is the model's check (``ModelInfo.conditioning_problem``): a product
    the run would render and it objects to is quarantined as ``cannot condition: <its reason>``
    (products the mode does not select are not checked: the model does not matter to them).

    Quarantined (with the reason, in catalog order; the rest of the catalog is planned as usual):
    a product id that :func:`catalog.product_id_problem` refuses (``bad product_id: ...``); every
    row of a product id that appears more than once (``duplicate product_id: N rows share this
    id``): which row is right cannot be known, so none is rendered rather than one at random; a row
    with neither title nor category; a row the model cannot condition on.

    Not quarantined: a photo that is missing, undecodable, over the caps or at a refused
    ``image_uri`` is exactly why a backfill renders the product (the reason is its
    ``plan_reason``); it is never used as reference. Photos in odd modes (CMYK, greyscale, 16-bit,
    alpha, palette) are valid: they decode to RGB and serve as reference.

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
    product that has a valid photo because its render was rejected).

    Raises ConfigError for an unknown mode or a bad prompt template, StorageError when a photo
    cannot be checked (see :func:`probe_image`), ValueError when ``feedback`` holds approvals but
    ``manifest_table`` is None (an approval cannot be used without the render's conditioning)."""
    if mode not in ("backfill", "refresh"):
        raise ConfigError(f"mode: must be backfill or refresh, got {mode!r}")
    check_template(prompt_template)
    rejected, approved = _review_index(feedback, manifest_table, existing_images)
    rows = catalog.to_pylist()
    counts = Counter(r["product_id"] for r in rows if isinstance(r["product_id"], str))
    quarantined: list[tuple[int, str | None, str]] = []  # (catalog row, product_id, reason)
    candidates = []
    for i, r in enumerate(rows):
        pid = r["product_id"]
        why = product_id_problem(pid)
        if why:
            quarantined.append((i, pid if isinstance(pid, str) else None, f"bad product_id: {why}"))
            continue
        if counts[pid] > 1:
            quarantined.append((i, pid, f"duplicate product_id: {counts[pid]} rows share this id (none is rendered: which is right cannot be known)"))
            continue
        why = conditioning_fields_problem(r.get("title"), r.get("category"))
        if why:
            quarantined.append((i, pid, f"bad row: {why}"))
            continue
        candidates.append((i, r))

    # Photos: probe only what matters (backfill needs validity; refresh only uses valid ones as reference).
    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(lambda uri: photo_problem(uri, probe), [r.get("image_uri") for _, r in candidates]))

    work_rows = []
    up_to_date = 0
    in_scope = 0
    approved_kept = 0
    for (i, r), photo in zip(candidates, problems):
        if mode == "backfill" and photo is None and not hide_images:
            continue
        pid = r["product_id"]
        attrs = dict(r.get("attributes") or [])
        prompt = build_prompt(prompt_template, pid, r.get("title"), r.get("category"), r.get("description"), attrs)
        cond = Conditioning(title=r.get("title"), category=r.get("category"), attributes=attrs, prompt=prompt)
        why = conditioning_problem(cond) if conditioning_problem else None
        if why:  # only products the run would render: the model does not matter to the others
            quarantined.append((i, pid, f"cannot condition: {why}"))
            continue
        in_scope += 1
        if approved.get(pid) and json.loads(cond.to_json()) in approved[pid]:
            up_to_date += 1
            approved_kept += 1
            continue
        attempt, seed, key, last_rejected = 0, product_seed(job_seed, pid), None, None
        while True:
            key = render_key(cond, model_id, params_used, seed)
            if (pid, key) not in rejected:
                break
            last_rejected = key
            attempt += 1
            if attempt >= MAX_ATTEMPTS:
                break
            seed = attempt_seed(job_seed, pid, attempt)
        if attempt >= MAX_ATTEMPTS:
            quarantined.append((i, pid, f"every render rejected: the renders of all {MAX_ATTEMPTS} seeds tried were rejected in review"
                                        f" (last {last_rejected[:12]} by {rejected[(pid, last_rejected)]})"))
            continue
        if key in done_keys and done_keys[key] in existing_images:
            up_to_date += 1
            continue
        rejection = f"rejected render {last_rejected[:12]} by {rejected[(pid, last_rejected)]}: new seed (attempt {attempt})" if attempt else None
        if mode == "backfill":
            reason = "photo hidden (--hide-images)" if photo is None else photo
            if rejection:
                reason = f"{rejection}; {reason}"
        else:
            if rejection:
                reason = rejection
            else:
                reason = "render_key in manifest but its image is missing" if key in done_keys else "render_key not in manifest"
            if photo is not None and r.get("image_uri"):
                reason += f"; no reference: {photo}"
        work_rows.append(
            {
                "product_id": pid,
                "render_key": key,
                "seed": seed,
                "conditioning": cond.to_json(),
                "prompt": prompt,
                "reference_uri": r.get("image_uri") if photo is None else None,
                "plan_reason": reason,
            }
        )
        if limit is not None and len(work_rows) >= limit:
            break
    quarantined.sort(key=lambda q: q[0])
    return Plan(pa.Table.from_pylist(work_rows, schema=WORK_SCHEMA), [(p, w) for _, p, w in quarantined], up_to_date, in_scope, len(rows),
                approved_kept, [quarantine_key(p, w, rows[i]) for i, p, w in quarantined])


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
