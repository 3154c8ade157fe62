"""Planning a run against an output: what the planner reads from the output (manifest index, image
listing, review feedback) and the summary ``run --dry-run`` prints. Reads only; writes nothing.
"""

from __future__ import annotations

import re
from collections import Counter

import pyarrow.compute as pc

from catalog_render import feedback as feedback_mod
from catalog_render import manifest, manifest_index, photos, planning, storage


def plan_output(table, output_uri: str, *, mode: str, model_id: str, params_used: dict, job_seed: int, prompt_template: str, info,
                hide_images: bool = False, limit: int | None = None,
                probes: photos.ProbeCache | None = None) -> tuple[planning.Plan, set[str]]:
    """Plan ``table`` (a conformed catalog) for ``output_uri``: ok renders and recorded quarantines
    come from the manifest index (:func:`manifest_index.read_index`: the compacted index plus any
    parts it does not cover), images present from listing ``OUTPUT/images/``, verdicts from the
    output's feedback. The full manifest is read only when a reviewer approved a render (the
    planner compares the approved render's conditioning). ``info``: the model's
    :class:`~catalog_render.generators.registry.ModelInfo`. ``probes``: the photo probe to use,
    normally the output's :class:`photos.ProbeCache` (prefetched here for a backfill). Returns ``(plan, recorded)``:
    ``recorded`` the quarantine_keys the manifest already holds. Raises as
    :func:`planning.plan` does, and StorageError when the output cannot be read."""
    reviews = feedback_mod.read_feedback(output_uri)
    index = manifest_index.read_index(output_uri)
    images = storage.list_uris(storage.join(output_uri, "images"))
    approvals = reviews.num_rows and pc.any(pc.equal(reviews.column("verdict"), "approve")).as_py()
    past = manifest.read_manifest(output_uri) if approvals else None
    if probes is not None and mode == "backfill" and "image_uri" in table.column_names:
        probes.prefetch(table.column("image_uri").drop_null().unique().to_pylist())
    the_plan = planning.plan(
        table, probe=probes or photos.probe_image, mode=mode, model_id=model_id, params_used=params_used, job_seed=job_seed, prompt_template=prompt_template,
        done_keys=index.done(images), existing_images=set(images) if reviews.num_rows else frozenset(), hide_images=hide_images, limit=limit,
        conditioning_problem=info.conditioning_problem, conditioning_fields=info.conditioning_fields, feedback=reviews, manifest_table=past,
    )
    return the_plan, index.quarantine_keys()


def reason_class(reason: str) -> str:
    """A plan or quarantine reason without its particulars: ``image undecodable: truncated (...)``
    -> ``image undecodable``; ``rejected render 3f2a.. by ana: new seed (attempt 2); ...`` ->
    ``rejected render: new seed``; ``render_key not in manifest; no reference: ...`` ->
    ``render_key not in manifest``."""
    if reason.startswith("rejected render "):
        return "rejected render: new seed"
    return re.split(r"; |: ", reason, maxsplit=1)[0]


def summary(the_plan: planning.Plan, sample: int = 5) -> dict:
    """What a run would do, as plain data (what ``run --dry-run`` prints, and ``--json`` dumps):
    ``catalog_rows``, ``in_scope``, ``up_to_date``, ``approved_kept``, ``to_render``,
    ``quarantined``, and ``plan_reasons`` / ``quarantine_reasons``: {reason class
    (:func:`reason_class`): {"count": n, "sample": the first ``sample`` product ids in catalog
    order}}, most frequent first."""
    def grouped(pairs) -> dict:
        counts: Counter = Counter()
        ids: dict[str, list] = {}
        for pid, why in pairs:
            cls = reason_class(why)
            counts[cls] += 1
            if len(ids.setdefault(cls, [])) < sample:
                ids[cls].append(pid)
        return {cls: {"count": n, "sample": ids[cls]} for cls, n in counts.most_common()}

    work = the_plan.work
    classes = pc.replace_substring_regex(pc.replace_substring_regex(work.column("plan_reason"), r"^rejected render .*$", "rejected render: new seed"),
                                         r"(; |: ).*$", "")
    plan_reasons = {}
    for entry in sorted(pc.value_counts(classes).to_pylist(), key=lambda e: -e["counts"]):
        ids = work.column("product_id").filter(pc.equal(classes, entry["values"])).slice(0, sample).to_pylist()
        plan_reasons[entry["values"]] = {"count": entry["counts"], "sample": ids}
    return {
        "catalog_rows": the_plan.total, "in_scope": the_plan.in_scope, "up_to_date": the_plan.up_to_date,
        "approved_kept": the_plan.approved_kept, "to_render": work.num_rows, "quarantined": len(the_plan.quarantined),
        "plan_reasons": plan_reasons,
        "quarantine_reasons": grouped(the_plan.quarantined),
    }
