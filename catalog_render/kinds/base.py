"""What a kind of image provides, and the helpers every kind shares.

A work item is "one output image from these inputs". A kind turns catalog rows into work items
(``plan``) and work items into images (an actor class whose ``__init__`` is the per-actor setup,
loading its models once, and whose ``__call__`` maps a pyarrow batch of work items to manifest
rows). :mod:`catalog_render.execution` runs every kind through the same Ray Data pipeline, lease,
manifest sink and resume logic; a new kind is a new module of this package registered in
:data:`catalog_render.kinds.KINDS`.

Kinds that start from a photo (main-image, variant, and later comparison/design/label) subclass
:class:`catalog_render.kinds.photo_worker.PhotoKind` and share its actor
:class:`catalog_render.kinds.photo_worker.PhotoWorker`, which calls the kind's ``setup`` once per
actor and ``render(item, state)`` per item (:class:`Rendered`: image + provenance + extra manifest
fields + scores), writes the image and its preset renditions, and returns the row.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import pyarrow as pa

from catalog_render import planning, recognisability, storage
from catalog_render.config import JobSpec
from catalog_render.generators.base import GenerationParams

#: Columns the actors return; the driver casts them to the manifest schema (missing ones are null).
ROW_FIELDS = (
    "product_id", "render_key", "status", "error", "image_uri", "reference_uri", "seed", "model_id", "family",
    "generation_params", "conditioning", "prompt", "width", "height", "sharpness", "background_whiteness",
    "fill_ratio", "psnr", "ssim", "lpips", "render_seconds", "write_seconds", "reused", "worker", "plan_reason", "quality_status", "quality_failed",
    "preset", "compliance_failed", "compliance_advisories", "tries", "try_index", "try_history", "publish_uri", "renditions", "phash",
    "clipped_highlights", "clipped_shadows", "colourfulness", "colour_delta_e", "colour_match", "upscaler", "upscale_seconds", "finished_at",
    "kind", "source_uri", "source_sha256", "source_product_id", "method", "target_colour", "mask_model", "members", "never_main",
    *recognisability.COLUMNS,
)

#: Work-item columns of the kinds that start from a photo: :data:`planning.WORK_SCHEMA` plus
#: ``kind`` and ``inputs`` (JSON object of everything the image depends on: source photo URI and
#: sha256, sibling, target colour, method, mask model, preset...). ``render_key`` hashes ``inputs``.
PHOTO_WORK_SCHEMA = pa.schema(list(planning.WORK_SCHEMA) + [("kind", pa.string()), ("inputs", pa.string())])

#: Fault injection for the reliability tests (never set in production): a comma-separated list of
#: product ids. The actor process rendering one of them exits abruptly (``os._exit``, as an OOM kill
#: would) just before writing that product's image, i.e. mid-batch. With
#: ``CATALOG_RENDER_FAILPOINT_ONCE_DIR`` set, each product crashes its worker only the first time
#: (a marker file per product, created with O_EXCL), which models a transient crash.
FAILPOINT_ENV = "CATALOG_RENDER_FAILPOINT_CRASH_ON"
FAILPOINT_ONCE_ENV = "CATALOG_RENDER_FAILPOINT_ONCE_DIR"


def failpoint_crash(product_id: str) -> None:
    """Exit the process (``os._exit(77)``) when :data:`FAILPOINT_ENV` names ``product_id``."""
    ids = os.environ.get(FAILPOINT_ENV)
    if not ids or product_id not in ids.split(","):
        return
    once_dir = os.environ.get(FAILPOINT_ONCE_ENV)
    if once_dir:
        try:
            os.close(os.open(os.path.join(once_dir, storage.safe_key(product_id)), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os._exit(77)


def generation_params(spec: JobSpec) -> GenerationParams:
    """The generator's parameters from the job's ``[generation]`` section."""
    g = spec.generation
    return GenerationParams(
        num_inference_steps=g.num_inference_steps, guidance_scale=g.guidance_scale, scheduler=g.scheduler,
        height=g.height, width=g.width, negative_prompt=g.negative_prompt,
    )


def inputs_key(kind: str, inputs: dict) -> str:
    """The render_key of a photo kind's work item: sha256 hex of the canonical JSON of
    ``{"kind": kind, "inputs": inputs}`` (sorted keys, no whitespace). ``inputs`` must hold every
    input the pixels depend on (source photo sha256, models, preset, parameters)."""
    doc = json.dumps({"kind": kind, "inputs": inputs}, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


@dataclass
class PlanContext:
    """What the driver knows when a kind plans: the output's manifest (``past``), the ok render
    keys (render_key -> image_uri), the image objects under the output, review feedback, and the
    run's options. ``model_uri``/``info`` are set only for kinds that need a generator."""

    output_uri: str
    past: pa.Table
    done_keys: dict[str, str]
    existing_images: set[str]
    feedback: pa.Table | None = None
    limit: int | None = None
    hide_images: bool = False
    model_uri: str | None = None
    info: Any = None
    threads: int = 16


def local_worker_name() -> str:
    """The manifest's ``worker`` of an actor made outside Ray (benchmarks): ``<hostname>:<pid>``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkerContext:
    """What an actor is built with: output, run, model (None for photo kinds), CPU threads, GPU,
    and ``worker_name``: called once in the actor, it gives the manifest's ``worker`` column
    (:func:`catalog_render.execution.ray_worker_name` under Ray: host, Ray node id and pid; a
    module-level function, so it pickles by reference)."""

    output_uri: str
    run_id: str
    threads: int
    use_gpu: bool
    model_uri: str | None = None
    model_id: str | None = None
    worker_name: Callable[[], str] = local_worker_name


@dataclass
class Rendered:
    """One item's result from a photo kind's ``render``. ``image`` None = the item was not made:
    ``status`` is then ``left-alone`` (the photo is left as it is, e.g. "left alone: several
    products in the frame"), ``skipped`` (quarantined: "quarantined: no pixel of the sibling's
    colour"; both decisions follow from the inputs) or ``failed`` (an error), with ``error`` the reason. ``image``:
    the output (RGB PIL image, the file written to ``image_uri``); ``published``: the preset's main
    image when it differs from ``image`` (else None: ``image`` is the main image); ``provenance``:
    :class:`catalog_render.quality.provenance.ProvenanceMetadata`; ``fields``: extra manifest
    columns (scores, method, target colour, ...); ``format``: the file format of ``image``
    (``png``, ``jpeg``, ``webp``); ``preset``: a marketplace preset whose thumbnails are written
    beside the image (None: none)."""

    image: Any = None
    status: str = "ok"
    error: str | None = None
    published: Any = None
    provenance: Any = None
    fields: dict = field(default_factory=dict)
    format: str = "png"
    preset: str | None = None


class Kind(Protocol):
    """A kind of image. ``name`` is its ``--kind`` / job ``kind`` value; ``needs_model`` whether
    ``run`` needs ``--model``."""

    name: str
    needs_model: bool

    def preflight(self, spec: JobSpec) -> None:
        """Before planning: load-check the pretrained models the kind uses (raises
        DependencyMissing / WeightFileError, exit 10)."""

    def plan(self, catalog: pa.Table, spec: JobSpec, ctx: PlanContext) -> planning.Plan:
        """Work items (one per output image) with a render_key covering every input, products
        already up to date, and quarantined rows with their reason."""

    def after_plan(self, work: pa.Table) -> None:
        """Checks that depend on the plan (e.g. LPIPS weights when a work item has a reference)."""

    def worker(self, spec: JobSpec, ctx: WorkerContext) -> tuple[type, dict]:
        """The Ray Data actor class and its constructor kwargs."""

    def describe_run(self) -> dict:
        """Fields the kind adds to the run record (after ``plan``)."""

    def notes(self) -> list[str]:
        """One-line notes for the user at the end of the run."""


def skipped_is_done(past: pa.Table) -> set[str]:
    """Render keys whose photo-kind item ended ``left-alone``, or ``skipped`` with a decision that
    follows from its inputs alone (``error`` starting with ``quarantined:``): the same inputs give
    the same decision, so a re-run does not redo them (a changed photo changes the key)."""
    import pyarrow.compute as pc

    if past.num_rows == 0 or "kind" not in past.column_names:
        return set()
    rows = past.filter(pc.and_(pc.is_in(past.column("status"), pa.array(["skipped", "left-alone"])), pc.invert(pc.is_null(past.column("render_key")))))
    return {r["render_key"] for r in rows.select(["render_key", "error"]).to_pylist()
            if (r["error"] or "").startswith(("left alone:", "quarantined:"))}

