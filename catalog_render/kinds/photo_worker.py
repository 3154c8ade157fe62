"""The Ray Data actor of the kinds that start from a photo (main-image, variant, ...), and
:class:`PhotoKind`, the base those kinds share.

``__init__`` is the per-actor setup: the kind's ``setup`` loads its models once (mask model,
upscaler). ``__call__`` takes a pyarrow batch of work items
(:data:`catalog_render.kinds.base.PHOTO_WORK_SCHEMA`) and returns one manifest row per item, in
order: the kind's ``render(item, state)`` makes the image, which is written with its provenance
(preset thumbnails first, the image last, each atomically), then the row is returned with the
kind's extra fields. An item whose render raises is ``failed`` with the reason; a decision the kind
takes from the inputs (``left alone: ...``, ``quarantined: ...``) is ``skipped``; the rest of the
batch completes either way.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pyarrow as pa

from catalog_render import manifest, planning, storage
from catalog_render.config import JobSpec
from catalog_render.kinds import get_kind
from catalog_render.kinds.base import PHOTO_WORK_SCHEMA, ROW_FIELDS, PlanContext, WorkerContext, failpoint_crash, local_worker_name


class PhotoWorker:
    """Actor: ``kind`` (a registered kind name with ``setup`` and ``render``), ``spec`` (the job
    spec as a dict), ``output_uri``, ``run_id``, ``threads`` (CPU threads for the models),
    ``worker_name`` (gives the manifest's ``worker``: :class:`catalog_render.kinds.base.WorkerContext`)."""

    def __init__(self, kind: str, spec: dict, output_uri: str, run_id: str, threads: int, worker_name=local_worker_name):
        import torch

        torch.set_num_threads(max(1, threads))
        self.kind = get_kind(kind)
        self.spec = JobSpec.model_validate(spec)
        self.output_uri, self.run_id = output_uri, run_id
        self.state = self.kind.setup(self.spec, max(1, threads))
        self.worker = worker_name()  # the manifest's `worker`: which node and process rendered the row

    def __call__(self, batch: pa.Table) -> pa.Table:
        from catalog_render.quality import checks, presets

        rows = []
        for it in batch.to_pylist():
            row = {k: None for k in ROW_FIELDS}
            row.update(product_id=it["product_id"], render_key=it["render_key"], seed=it.get("seed"), conditioning=it["conditioning"],
                       reference_uri=it["reference_uri"], plan_reason=it["plan_reason"], worker=self.worker, kind=self.kind.name, reused=False)
            t0 = time.perf_counter()
            try:
                result = self.kind.render(it, self.state)
            except Exception as exc:  # one product's failure fails that product only
                row.update(status="failed", error=f"{self.kind.name} failed: {type(exc).__name__}: {exc}"[:500], render_seconds=time.perf_counter() - t0)
                row["finished_at"] = datetime.now(timezone.utc)
                rows.append(row)
                continue
            row.update(result.fields)
            row["render_seconds"] = time.perf_counter() - t0
            if result.image is None:
                row.update(status=result.status, error=result.error)
            else:
                try:
                    uri = manifest.image_uri_for(self.output_uri, it["product_id"], it["render_key"], result.format)
                    t1 = time.perf_counter()
                    renditions = {}
                    if result.preset:
                        preset = presets.get_preset(result.preset)
                        stem, ext = uri.rsplit(".", 1)
                        for name, im in presets.renditions(result.image, preset, main=result.image).items():
                            if name != "main":
                                renditions[name] = f"{stem}.{name}.{ext}"
                                storage.write_bytes(renditions[name], presets.export(im, preset, metadata=result.provenance),
                                                    content_type=f"image/{preset.format.lower()}")
                    failpoint_crash(it["product_id"])
                    storage.write_bytes(uri, presets.export(result.image, result.format, metadata=result.provenance), content_type=f"image/{result.format}")
                    renditions["main"] = uri
                    row.update(status="ok", image_uri=uri, publish_uri=uri, renditions=json_dumps(renditions), width=result.image.width,
                               height=result.image.height, phash=checks.perceptual_hash(result.image), write_seconds=time.perf_counter() - t1)
                except Exception as exc:
                    row.update(status="failed", image_uri=None, publish_uri=None, renditions=None, quality_status=None,
                               error=f"write failed: {type(exc).__name__}: {exc}"[:500])
            row["finished_at"] = datetime.now(timezone.utc)
            rows.append(row)
        return pa.Table.from_pylist(rows)


def json_dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)


class PhotoKind:
    """What the photo kinds share: no generator, the :class:`PhotoWorker` actor, the id screening
    and the work-item / Plan assembly of their ``plan``. Subclasses set ``name`` and implement
    ``plan``, ``setup`` and ``render``."""

    name = ""
    needs_model = False

    def after_plan(self, work: pa.Table) -> None:
        return None

    def describe_run(self) -> dict:
        return {}

    def notes(self) -> list[str]:
        return []

    def worker(self, spec: JobSpec, ctx: WorkerContext) -> tuple[type, dict]:
        return PhotoWorker, dict(kind=self.name, spec=spec.model_dump(mode="json"), output_uri=ctx.output_uri, run_id=ctx.run_id,
                                 threads=ctx.threads, worker_name=ctx.worker_name)

    def setup(self, spec: JobSpec, threads: int) -> dict:
        """Per actor, once: the product mask model (``[photos] mask_model``) and the job spec."""
        from catalog_render.kinds import photo

        return {"masker": photo.load_masker(spec.photos.mask_model, threads), "spec": spec}

    def plan_own_photos(self, catalog: pa.Table, ctx: PlanContext, inputs_for) -> planning.Plan:
        """The plan of a kind made from each product's own photo: one work item per product with a
        usable photo whose key is not done. Rows without ``image_uri`` are out of scope; a bad or
        duplicated product id and an unusable photo (missing, undecodable, over the caps, refused
        path) are quarantined with the reason. ``inputs_for(row, source)`` (source:
        :class:`catalog_render.kinds.photo.SourcePhoto`) returns the item's inputs (hashed into its
        render_key), or a string: the reason to quarantine the product instead."""
        from concurrent.futures import ThreadPoolExecutor

        from catalog_render.kinds import photo
        from catalog_render.kinds.base import inputs_key, skipped_is_done

        rows = catalog.to_pylist()
        quarantined, valid = self.screen(rows)
        candidates = [(i, r) for i, r in valid if r.get("image_uri")]
        with ThreadPoolExecutor(ctx.threads) as pool:
            sources = list(pool.map(lambda ir: photo.source_photo(ir[1].get("image_uri")), candidates))
        done = skipped_is_done(ctx.past)
        work, up_to_date, in_scope = [], 0, 0
        for (i, r), src in zip(candidates, sources):
            inputs = f"source photo unusable: {src.problem}" if src.problem else inputs_for(r, src)
            if isinstance(inputs, str):
                quarantined.append((i, r["product_id"], inputs))
                continue
            in_scope += 1
            key = inputs_key(self.name, inputs)
            if self.is_done(key, ctx, done):
                up_to_date += 1
                continue
            work.append(self.item(r, key, inputs, src.uri, "render_key not in manifest"))
            if ctx.limit is not None and len(work) >= ctx.limit:
                break
        return self.finish(work, quarantined, up_to_date, in_scope, rows)

    @staticmethod
    def screen(rows: list[dict]) -> tuple[list[tuple[int, str | None, str]], list[tuple[int, dict]]]:
        """``(quarantined, valid)``: rows with a product id :func:`catalog.product_id_problem`
        refuses, or an id on several rows (none is made: which row is right cannot be known), are
        quarantined as (row index, product_id or None, reason); the others are (row index, row)."""
        from collections import Counter

        from catalog_render.catalog import product_id_problem

        counts = Counter(r["product_id"] for r in rows if isinstance(r["product_id"], str))
        quarantined, valid = [], []
        for i, r in enumerate(rows):
            pid = r["product_id"]
            why = product_id_problem(pid)
            if why:
                quarantined.append((i, pid if isinstance(pid, str) else None, f"bad product_id: {why}"))
            elif counts[pid] > 1:
                quarantined.append((i, pid, f"duplicate product_id: {counts[pid]} rows share this id (none is rendered: which is right cannot be known)"))
            else:
                valid.append((i, r))
        return quarantined, valid

    def item(self, row: dict, key: str, inputs: dict, reference_uri: str | None, plan_reason: str) -> dict:
        """One work item (:data:`PHOTO_WORK_SCHEMA`) for catalog ``row``."""
        attrs = row.get("attributes") or {}
        attrs = attrs if isinstance(attrs, dict) else dict(attrs)
        return {"product_id": row["product_id"], "render_key": key, "seed": None, "prompt": None, "reference_uri": reference_uri,
                "conditioning": json.dumps({"title": row.get("title"), "category": row.get("category"), "attributes": attrs}, sort_keys=True,
                                           ensure_ascii=False),
                "plan_reason": plan_reason, "kind": self.name, "inputs": json.dumps(inputs, sort_keys=True)}

    @staticmethod
    def is_done(key: str, ctx: PlanContext, done: set[str]) -> bool:
        """The key has an ok row whose image exists, or a decision taken from the same inputs (kinds.base.skipped_is_done)."""
        return (key in ctx.done_keys and ctx.done_keys[key] in ctx.existing_images) or key in done

    @staticmethod
    def finish(work: list[dict], quarantined: list, up_to_date: int, in_scope: int, rows: list[dict]) -> planning.Plan:
        """The Plan: work items, quarantines in catalog order with their keys (planning.quarantine_key)."""
        quarantined = sorted(quarantined, key=lambda q: q[0])
        return planning.Plan(pa.Table.from_pylist(work, schema=PHOTO_WORK_SCHEMA), [(p, w) for _, p, w in quarantined], up_to_date, in_scope,
                             len(rows), 0, [planning.quarantine_key(p, w, rows[i]) for i, p, w in quarantined])
