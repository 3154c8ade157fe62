"""The planner as it was before planning became columnar: a Python loop over catalog rows.

Kept only for tests (tests/test_plan_scale.py): the columnar :func:`catalog_render.planning.plan`
must give the same work items, render_keys, seeds, counts and quarantines on real catalogs, so an
existing output never re-renders because the key's computation changed. Not used by the package.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from catalog_render.catalog import conditioning_fields_problem, product_id_problem
from catalog_render.errors import ConfigError
from catalog_render.generators.base import Conditioning
from catalog_render.photos import photo_problem, probe_image
from catalog_render.planning import (
    MAX_ATTEMPTS,
    WORK_SCHEMA,
    Plan,
    _review_index,
    attempt_seed,
    build_prompt,
    check_template,
    product_seed,
    quarantine_key,
    render_key,
)


def legacy_plan(
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
    """The row-loop planner (see the module docstring); same arguments as planning.plan."""
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
