"""Planning: render keys, seeds, and which products a run must render (backfill / refresh).

Pure functions over Arrow tables plus an injectable image probe, so they test without Ray.

* ``render_key`` (the idempotency key) = sha256 of the conditioning fields (title, category,
  attributes, prompt), the model identity, the generation parameters that affect the pixels, and
  the seed. A product is up to date when the manifest holds an ``ok`` row for its current
  render_key and that image object exists.
* ``backfill`` selects products whose ``image_uri`` is empty or points to a missing or undecodable
  object (or all products with ``hide_images``, an evaluation that keeps the photo as reference),
  minus those already up to date.
* ``refresh`` selects every product that is not up to date.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

from catalog_render import imaging, storage
from catalog_render.catalog import product_id_problem
from catalog_render.errors import ConfigError
from catalog_render.generators.base import Conditioning

SEED_BITS = 63


def product_seed(job_seed: int, product_id: str) -> int:
    """Seed of one product's torch.Generator: first 8 bytes of sha256("job_seed:product_id") mod 2**63."""
    return int.from_bytes(hashlib.sha256(f"{job_seed}:{product_id}".encode()).digest()[:8], "big") % 2**SEED_BITS


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
    """``work``: one row per product to render (product_id, render_key, seed, conditioning JSON,
    prompt, reference_uri, reason). ``quarantined``: (product_id, reason) rows that cannot be
    rendered. ``up_to_date``: products in scope that already have a current ok render."""

    work: pa.Table
    quarantined: list[tuple[str | None, str]]
    up_to_date: int
    in_scope: int
    total: int


WORK_SCHEMA = pa.schema(
    [
        ("product_id", pa.string()),
        ("render_key", pa.string()),
        ("seed", pa.int64()),
        ("conditioning", pa.string()),
        ("prompt", pa.string()),
        ("reference_uri", pa.string()),
        ("reason", pa.string()),
    ]
)


def probe_image(uri: str) -> str | None:
    """None when the image object exists and decodes (within the pixel caps), else why not.

    Raises StorageError when the store cannot answer (unreachable endpoint, denied access, a
    directory): a photo that cannot be checked is not a missing photo, and a backfill must not
    render a whole catalog because S3 is down."""
    try:
        imaging.decode_rgb(storage.read_bytes(uri, max_bytes=imaging.MAX_BYTES))
        return None
    except storage.ObjectNotFound:
        return "image missing"
    except imaging.ImageDecodeError as exc:
        return f"image undecodable ({exc})"


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
) -> Plan:
    """Decide what to render. ``catalog`` follows the catalog schema (see catalog.conform);
    ``done_keys`` maps render_key -> image_uri of ok manifest rows; ``existing_images`` is the set
    of image URIs present under the output. ``limit`` caps the work rows (catalog order).
    Raises ConfigError for an unknown mode or a bad prompt template."""
    if mode not in ("backfill", "refresh"):
        raise ConfigError(f"mode: must be backfill or refresh, got {mode!r}")
    check_template(prompt_template)
    rows = catalog.to_pylist()
    quarantined: list[tuple[str | None, str]] = []
    candidates = []
    for r in rows:
        pid = r["product_id"]
        why = product_id_problem(pid)
        if why:
            quarantined.append((pid if isinstance(pid, str) else None, f"bad product_id: {why}"))
            continue
        if not (r.get("title") or "").strip() and not (r.get("category") or "").strip():
            quarantined.append((pid, "bad row: no title and no category to condition on"))
            continue
        candidates.append(r)

    # Photos: probe only what matters (backfill needs validity; refresh only uses valid ones as reference).
    uris = [r.get("image_uri") for r in candidates]
    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(lambda u: probe(u) if u else "no image_uri", uris))

    work_rows = []
    up_to_date = 0
    in_scope = 0
    for r, photo_problem in zip(candidates, problems):
        if mode == "backfill" and photo_problem is None and not hide_images:
            continue
        in_scope += 1
        attrs = dict(r.get("attributes") or [])
        prompt = build_prompt(prompt_template, r["product_id"], r.get("title"), r.get("category"), r.get("description"), attrs)
        cond = Conditioning(title=r.get("title"), category=r.get("category"), attributes=attrs, prompt=prompt)
        seed = product_seed(job_seed, r["product_id"])
        key = render_key(cond, model_id, params_used, seed)
        if key in done_keys and done_keys[key] in existing_images:
            up_to_date += 1
            continue
        if mode == "backfill":
            reason = "photo hidden (evaluation)" if photo_problem is None else photo_problem
        else:
            reason = "no current render"
        work_rows.append(
            {
                "product_id": r["product_id"],
                "render_key": key,
                "seed": seed,
                "conditioning": cond.to_json(),
                "prompt": prompt,
                "reference_uri": r.get("image_uri") if photo_problem is None else None,
                "reason": reason,
            }
        )
        if limit is not None and len(work_rows) >= limit:
            break
    return Plan(pa.Table.from_pylist(work_rows, schema=WORK_SCHEMA), quarantined, up_to_date, in_scope, len(rows))
