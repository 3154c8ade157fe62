"""The Ray Data actor of the kinds that start from a photo (main-image, variant, ...).

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

import os
import socket
import time
from datetime import datetime, timezone

import pyarrow as pa

from catalog_render import manifest, storage
from catalog_render.config import JobSpec
from catalog_render.kinds import get_kind
from catalog_render.kinds.base import ROW_FIELDS, failpoint_crash


class PhotoWorker:
    """Actor: ``kind`` (a registered kind name with ``setup`` and ``render``), ``spec`` (the job
    spec as a dict), ``output_uri``, ``run_id``, ``threads`` (CPU threads for the models)."""

    def __init__(self, kind: str, spec: dict, output_uri: str, run_id: str, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.kind = get_kind(kind)
        self.spec = JobSpec.model_validate(spec)
        self.output_uri, self.run_id = output_uri, run_id
        self.state = self.kind.setup(self.spec, max(1, threads))
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        from catalog_render.quality import checks, presets

        rows = []
        for it in batch.to_pylist():
            row = {k: None for k in ROW_FIELDS}
            row.update(product_id=it["product_id"], render_key=it["render_key"], conditioning=it["conditioning"], reference_uri=it["reference_uri"],
                       plan_reason=it["plan_reason"], worker=self.worker, kind=self.kind.name, reused=False)
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
    import json

    return json.dumps(obj, sort_keys=True)
