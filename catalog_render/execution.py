"""The Ray Data pipeline that renders a plan: local Ray or an existing cluster, progress, manifest.

Data path: the driver plans (catalog + manifest -> work items), splits the work into
``workers * blocks_per_worker`` blocks so every actor gets work, and runs
``map_batches(<the kind's actor>, compute=ActorPoolStrategy(size=workers))``. What is planned and
how an item becomes an image is the job's kind (catalog_render.kinds: ``render`` loads the
generator once per actor; ``main-image`` and ``variant`` load the mask model and upscaler once).
Each actor renders its batch, writes every image straight to output storage, scores it, and
returns manifest rows (never image bytes). The driver streams those
rows and flushes them to Parquet parts as they arrive, so a killed run keeps its finished work.

Resume: the manifest's render_key is the one resume mechanism (not Ray's checkpointing): a re-run
plans only products whose current render_key has no ok row with an existing image.

Loopback: an embedded local Ray binds every port to 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
set before Ray is imported; its dashboard is off). Joining a cluster with ``--address`` is explicit.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import catalog as catalog_mod
from catalog_render import current, manifest, manifest_index, photos, planning, storage
from catalog_render import feedback as feedback_mod
from catalog_render import lease as lease_mod
from catalog_render.config import JobSpec
from catalog_render.errors import ConfigError, RunError
from catalog_render.generators import registry
from catalog_render.kinds import get_kind
from catalog_render.kinds.base import FAILPOINT_ENV, FAILPOINT_ONCE_ENV, PlanContext, WorkerContext, generation_params  # noqa: F401 (re-exported)
from catalog_render.kinds.render import RenderWorker, _keyed_params, try_seed  # noqa: F401 (re-exported for callers of execution)

log = logging.getLogger(__name__)


def _is_loopback_address(address: str) -> bool:
    """True for host:port / ray://host:port addresses whose host is 127.0.0.0/8, ::1 or localhost."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (RunError) when nothing listens at the head's host:port; Ray itself retries for minutes."""
    import socket as _socket
    from urllib.parse import urlsplit

    parts = urlsplit(f"//{address}")
    try:
        with _socket.create_connection((parts.hostname, parts.port or 6379), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot reach the Ray head at {address} ({getattr(exc, 'strerror', None) or exc})") from None


def _auth_token_available() -> bool:
    from pathlib import Path

    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path).is_file()


def _init_ray(address: str | None, num_cpus: int | None):
    """Connect to ``address`` (or RAY_ADDRESS), or start a local Ray bound to 127.0.0.1."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or _is_loopback_address(address):
        # Must be set before ray is imported: every Ray socket of ours binds to (and the driver
        # registers as) 127.0.0.1. A driver joining a head on 127.0.0.1 needs it as well, or it
        # registers under the machine's interface address and waits forever for its raylet.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address is None:
        # If the embedded Ray dies under us (killed, out of memory), the driver's core worker ends
        # the process once it gives up on the GCS: 15 s instead of Ray's 60 s. Finished work is
        # kept either way (images are reused, flushed manifest parts stay); the next run resumes.
        os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "15")
    if address and "RAY_AUTH_MODE" not in os.environ and _auth_token_available():
        # Ray >= 2.5x clusters use token authentication by default; a driver joining one only
        # presents its token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) in token mode.
        os.environ["RAY_AUTH_MODE"] = "token"
    if address and not address.startswith("ray://"):
        _check_reachable(address)
    import ray

    if ray.is_initialized():
        return ray
    try:
        if address:
            kwargs = {"_node_ip_address": "127.0.0.1"} if _is_loopback_address(address) else {}
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, **kwargs)
        else:
            # address="local": a new Ray, not a `ray start` cluster of this machine (ray_current_cluster)
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False, _node_ip_address="127.0.0.1")
    except Exception as exc:
        raise RunError(f"cannot start or join Ray ({'address ' + address if address else 'local'}): {type(exc).__name__}: {exc}") from None
    return ray


def _no_sigterm_note(record: logging.LogRecord) -> bool:
    return "SIGTERM handler is not set" not in record.getMessage()


class _RayStart:
    """Ray started (or joined) in a background thread while the run reads the catalog and plans:
    ``ray.init`` is mostly waiting on Ray's own processes (GCS, raylet: about 3 s for a local Ray on
    2 cores), planning is the driver's own work, so the first image comes that much sooner
    (benchmarks/RESULTS.md). A run with nothing to do has started Ray for nothing (about 3 CPU s).
    ``get()`` waits for it and raises what ``_init_ray`` raised (RunError); ``settle()`` only waits,
    so a run that fails while planning does not exit while Ray is half started.

    The thread never ends: Ray starts its GCS and raylet with PR_SET_PDEATHSIG, which Linux fires
    when the *thread* that spawned them exits, so it stays parked (a daemon, gone with the process)."""

    def __init__(self, address: str | None, num_cpus: int | None):
        import threading

        self._ray, self._exc = None, None
        self._ready = threading.Event()
        threading.Thread(target=self._start, args=(address, num_cpus), name="catalog-render-ray-start", daemon=True).start()

    def _start(self, address, num_cpus) -> None:
        import threading

        # ray.init off the main thread logs that it set no SIGTERM handler: run_job installs its own
        logging.getLogger("ray._private.worker").addFilter(_no_sigterm_note)  # once: addFilter skips a filter already there
        try:
            self._ray = _init_ray(address, num_cpus)
        except BaseException as exc:  # noqa: BLE001 -- handed to the thread that needs Ray
            self._exc = exc
        self._ready.set()
        threading.Event().wait()  # parked for the process's life (see the class docstring)

    def settle(self) -> None:
        self._ready.wait()

    def get(self):
        self._ready.wait()
        if self._exc is not None:
            raise self._exc
        return self._ray


def ray_worker_name() -> str:
    """The manifest's ``worker`` of a Ray actor: ``<hostname>:<node id>:<pid>``, the node id as ``ray list nodes`` shows it."""
    import ray
    return f"{socket.gethostname()}:{ray.get_runtime_context().get_node_id()}:{os.getpid()}"


@dataclass
class RunSummary:
    run_id: str
    counts: dict[str, int]
    planned: int
    up_to_date: int
    quarantined: int
    in_scope: int
    wall_seconds: float
    first_image_seconds: float | None
    images_per_second: float | None
    record_uri: str
    parts: list[str] = field(default_factory=list)
    quality: dict[str, int] = field(default_factory=dict)  # quality_status -> count (passed, failed-quality)
    quality_alert: str | None = None  # set when the failed-quality share exceeds quality.max_failed_share
    quarantined_already_recorded: int = 0  # quarantined rows the manifest had already: counted, not written again
    notes: list[str] = field(default_factory=list)  # one-line notes for the user (e.g. the model has no category judge)


def run_job(
    spec: JobSpec,
    catalog_uri: str,
    model_uri: str | None,
    output_uri: str,
    *,
    address: str | None = None,
    limit: int | None = None,
    hide_images: bool = False,
    progress=None,
    num_cpus: int | None = None,
    wait_lease_s: float = 0.0,
    lease: bool = True,
) -> RunSummary:
    """Plan and render. ``progress(done, total)`` is called as rows arrive.

    The run holds the output's lease (catalog_render.lease) from planning to the end, so two runs
    on one output never render the same products; with another run holding it, waits up to
    ``wait_lease_s`` seconds, then raises LeaseHeld (exit 8) naming that run. ``lease=False``
    (``--no-lease``) holds none: for a store that does not honour conditional writes, when only
    one run at a time ever writes the output.

    Raises CatalogError, ModelError, StorageError (bad inputs, before anything is written; an
    output path that is a file; lease.ConditionalWritesIgnored), PretrainedError (a pretrained
    model the run needs is not installed or its weights are corrupt: before anything is rendered),
    LeaseHeld, or RunError (Ray failed; finished rows are kept)."""
    t_start = time.monotonic()
    started_at = datetime.now(timezone.utc)
    # Absolute local paths: manifest rows must resolve from any directory, and actors may run elsewhere.
    catalog_uri, output_uri = (u if storage.is_s3(u) else storage.display(u) for u in (catalog_uri, output_uri))
    kind = get_kind(spec.kind)
    if kind.needs_model and not model_uri:
        raise ConfigError(f"--model: kind {kind.name!r} renders with a generator; give its model directory")
    if model_uri and not storage.is_s3(model_uri):
        model_uri = storage.display(model_uri)
    _check_output_is_a_folder(output_uri)
    info = registry.describe(model_uri) if kind.needs_model else None
    table = catalog_mod.read_catalog(catalog_uri)
    kind.preflight(spec)
    ray_start = _RayStart(address, num_cpus)  # the inputs are valid: Ray starts while the run plans
    try:
        run_id = manifest.new_run_id()
        if lease:
            held = lease_mod.acquire(output_uri, lease_mod.default_owner(run_id), ttl_s=spec.execution.lease_ttl_s, wait_s=wait_lease_s)
        else:
            held = lease_mod.NoLease()
        with held:  # renewed in the background; released at the end, also on errors
            if held.took_over:
                _mark_abandoned(output_uri, held.took_over)
            return _run_leased(spec, kind, table, catalog_uri, model_uri, output_uri, info, run_id, held, t_start, started_at,
                               address=address, limit=limit, hide_images=hide_images, progress=progress, ray_start=ray_start)
    finally:
        ray_start.settle()


def dry_run(spec: JobSpec, catalog_uri: str, model_uri: str, output_uri: str, *, limit: int | None = None, hide_images: bool = False) -> planning.Plan:
    """What ``run_job`` would render with ``--kind render``, planned exactly as it plans, without the
    lease, Ray or any write (see plan_run.summary). Raises as run_job does before rendering."""
    output_uri = output_uri if storage.is_s3(output_uri) else storage.display(output_uri)
    _check_output_is_a_folder(output_uri)
    model_uri = model_uri if storage.is_s3(model_uri) else storage.display(model_uri)
    info = registry.describe(model_uri)
    kind = get_kind("render")
    return kind.plan_output(catalog_mod.read_catalog(catalog_uri), spec, output_uri, model_uri, info, hide_images=hide_images, limit=limit,
                            probes=photos.ProbeCache.load(output_uri))[0]


def _check_output_is_a_folder(output_uri: str) -> None:
    """StorageError (exit 5) when a local output path, or a folder above it, is an existing file:
    the output is a folder of images, manifest parts and records. S3 prefixes are not checked (an
    object and a prefix of the same name can coexist)."""
    if storage.is_s3(output_uri):
        return
    from pathlib import Path

    path = Path(output_uri)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            what = "is a file" if p == path else f"is inside {p}, which is a file"
            raise storage.StorageError(f"--output {output_uri} {what}: the output must be a folder (or an s3:// prefix), "
                                       "where images/, manifest/, runs/ and report.html are written")


def _mark_abandoned(output_uri: str, expired: dict) -> None:
    """The run whose expired lease we took over died without finishing: say so in its record."""
    run_id = (expired.get("owner") or {}).get("run_id")
    if not run_id:
        return
    try:
        uri = storage.join(output_uri, "runs", f"{run_id}.json")
        record = json.loads(storage.read_bytes(uri))
        if record.get("status") == "running":
            record.update(status="abandoned", error=f"the run died without finishing (its lease expired at {expired.get('expires_at')}); "
                                                    "its written images and flushed manifest rows were kept")
            manifest.write_run_record(output_uri, run_id, record)
    except (storage.StorageError, ValueError):
        log.warning("could not mark run %s as abandoned", run_id)


def _run_leased(spec: JobSpec, kind, table: pa.Table, catalog_uri: str, model_uri: str | None, output_uri: str, info, run_id: str, held,
                t_start: float, started_at: datetime, *, address, limit, hide_images, progress, ray_start: _RayStart) -> RunSummary:
    probes = photos.ProbeCache.load(output_uri)  # photos unchanged since they were last probed are not read again
    if hasattr(kind, "plan_output"):
        # kinds that plan through the manifest index and the photo probe cache (plan_run: no full manifest read)
        the_plan, recorded = kind.plan_output(table, spec, output_uri, model_uri, info, hide_images=hide_images, limit=limit, probes=probes)
    else:
        past = manifest.read_manifest(output_uri)
        reviews = feedback_mod.read_feedback(output_uri)  # people's verdicts: rejected images get a new seed, approved ones stay
        existing = set(storage.list_uris(storage.join(output_uri, "images")))
        ctx = PlanContext(output_uri=output_uri, past=past, done_keys=manifest.ok_render_keys(past), existing_images=existing, feedback=reviews,
                          limit=limit, hide_images=hide_images, model_uri=model_uri, info=info)
        the_plan = kind.plan(table, spec, ctx)
        recorded = set(past.filter(pc.equal(past.column("status"), "skipped")).column("quarantine_key").drop_null().to_pylist())
    kind.after_plan(the_plan.work)
    probes.save(output_uri)  # after the last check that refuses the run: a refused run writes nothing
    model_id = info.model_id if info else None
    record = {
        "run_id": run_id, "status": "running", "catalog": catalog_uri, "kind": kind.name,
        "model": {"uri": model_uri, "model_id": info.model_id, "family": info.family} if info else None,
        "output": output_uri, "mode": spec.mode, "hide_images": hide_images, "limit": limit, "job": spec.model_dump(mode="json"),
        "started_at": started_at.isoformat(), "catalog_rows": the_plan.total, "in_scope": the_plan.in_scope,
        "up_to_date": the_plan.up_to_date, "approved_kept": the_plan.approved_kept, "planned": the_plan.work.num_rows, "quarantined": len(the_plan.quarantined),
        "workers": spec.execution.workers, "ray_address": address or os.environ.get("RAY_ADDRESS") or "local",
        "lease": not isinstance(held, lease_mod.NoLease), **kind.describe_run(),
        "photo_probes": {"probed": probes.probed, "reused": probes.reused},
    }
    # A quarantine is recorded once per (product, reason, catalog row): an unchanged re-run counts, not re-writes, them.
    new_quarantine = [{**r, "kind": kind.name} for r in the_plan.quarantine_rows(run_id, recorded)]
    record["quarantined_already_recorded"] = len(the_plan.quarantined) - len(new_quarantine)
    manifest.write_run_record(output_uri, run_id, record)
    sink = _ManifestSink(output_uri, run_id, spec.execution.manifest_flush_rows, progress, guard=held.check)
    if new_quarantine:
        sink.write_rows(new_quarantine)
    counts = sink.counts
    previous_sigterm = None
    n_work = the_plan.work.num_rows
    try:
        if n_work:
            ray = ray_start.get()
            previous_sigterm = _sigterm_as_interrupt()
            sink.total = n_work
            sink.progress_now()
            common = dict(spec=spec, kind=kind, model_uri=model_uri, model_id=model_id, output_uri=output_uri, run_id=run_id)
            sink.consume(_dataset(ray, the_plan.work, **common))
            missing = _not_returned(the_plan.work, sink.returned)
            if missing.num_rows:
                # A batch whose worker died on every try: its products are retried alone, so only a
                # product that kills its worker by itself (a poison input) is given up.
                one_batch = split_work(n_work, spec.execution.workers, spec.execution.batch_size, spec.execution.blocks_per_worker)[1]
                if missing.num_rows == n_work and n_work > one_batch:
                    raise RunError(f"every batch of run {run_id} crashed its worker process; see the Ray worker logs (not a single poison input)")
                log.warning("%d products were in batches whose worker died; retrying them one by one", missing.num_rows)
                sink.consume(_dataset(ray, missing, isolate=True, **common))
                poison = _not_returned(missing, sink.returned)
                tries = spec.execution.max_task_retries + 1
                sink.write_rows([
                    {"run_id": run_id, "product_id": r["product_id"], "render_key": r["render_key"], "seed": r["seed"], "status": "failed",
                     "model_id": model_id, "kind": kind.name, "conditioning": r["conditioning"], "prompt": r["prompt"], "reference_uri": r["reference_uri"], "plan_reason": r["plan_reason"],
                     "error": f"worker process died {tries} times while rendering this product alone (a poison input, or the worker ran out "
                              "of memory: see the Ray worker logs); failed, tried again on the next run"}
                    for r in poison.to_pylist()
                ])
            sink.flush()
    except BaseException as exc:
        # Best effort: the store may be what failed; the original error is what the user must see.
        try:
            sink.flush()  # rows whose images are written: keep them
        except Exception as flush_exc:  # noqa: BLE001
            log.warning("could not flush the last manifest rows: %s", flush_exc)
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        record.update(status="interrupted" if interrupted else "crashed", counts=counts, finished_at=datetime.now(timezone.utc).isoformat())
        if not interrupted:
            record["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        try:
            manifest.write_run_record(output_uri, run_id, record)
        except Exception as rec_exc:  # noqa: BLE001
            log.warning("could not write the run record: %s", rec_exc)
        if interrupted or isinstance(exc, (RunError, storage.StorageError)):
            raise
        raise RunError(f"run {run_id} failed: {_root_cause(exc)}; finished rows are kept, re-run to resume") from exc
    finally:
        if previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)
    first_written, parts = sink.first_written, sink.parts
    wall = time.monotonic() - t_start
    first_image_s = (first_written - started_at).total_seconds() if first_written else None
    ok = counts["ok"]
    ips = ok / wall if ok else None
    record.update(status="finished", counts=counts, finished_at=datetime.now(timezone.utc).isoformat(), wall_seconds=round(wall, 2),
                  first_image_seconds=first_image_s, images_per_second=ips, quality=sink.quality,
                  quality_alert=_quality_alert(sink.quality, counts["ok"], spec.quality.max_failed_share),
                  near_duplicates=_near_duplicates(sink.hashes, spec.quality.near_duplicate_max_distance))
    record["current_view"] = current.write_current_view(output_uri)
    manifest_index.compact(output_uri)  # the next run reads one index, not every part
    uri = manifest.write_run_record(output_uri, run_id, record)
    return RunSummary(run_id, counts, n_work, the_plan.up_to_date, len(the_plan.quarantined), the_plan.in_scope, wall, first_image_s, ips, uri, parts,
                      dict(sink.quality), record["quality_alert"], record["quarantined_already_recorded"], kind.notes())


class _ManifestSink:
    """Driver side of the manifest: takes row batches as actors return them, counts them, and
    flushes them to Parquet parts every ``flush_rows`` rows or 10 s (so a killed driver loses at
    most that much bookkeeping; the images themselves are reused by the next run)."""

    def __init__(self, output_uri: str, run_id: str, flush_rows: int, progress=None, guard=None):
        self.output_uri, self.run_id, self.flush_rows, self.progress = output_uri, run_id, flush_rows, progress
        self.guard = guard or (lambda: None)  # raises (LeaseLost) when this run may no longer write
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}  # other statuses (left-alone) are added when a row has them
        self.parts: list[str] = []
        self.returned: set[str] = set()
        self.quality: dict[str, int] = {}  # quality_status -> count
        self.hashes: dict[str, tuple[str, str]] = {}  # render_key -> (product_id, phash) of this run's renders
        self.first_written = None
        self.total = 0
        self.done = 0
        self._seq = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._last_flush = time.monotonic()

    def progress_now(self) -> None:
        if self.progress:
            self.progress(self.done, self.total)

    def write_rows(self, rows: list[dict]) -> None:
        """Rows made by the driver (quarantined, poison): written at once as their own part."""
        if rows:
            self.flush()
            self.guard()
            self.parts.append(manifest.write_part(self.output_uri, self.run_id, self._seq, rows))
            self._seq += 1
            for r in rows:
                self.counts[r["status"]] = self.counts.get(r["status"], 0) + 1
                if r.get("render_key"):
                    self.done += 1
            self.progress_now()

    def consume(self, ds) -> None:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            batch = batch.append_column("run_id", pa.array([self.run_id] * batch.num_rows, pa.string()))
            self._buffer.append(batch)
            self._buffered += batch.num_rows
            self.done += batch.num_rows
            self.returned.update(batch.column("product_id").to_pylist())
            statuses = batch.column("status").to_pylist()
            for st in statuses:
                self.counts[st] = self.counts.get(st, 0) + 1
            for q in batch.column("quality_status").to_pylist():
                if q:
                    self.quality[q] = self.quality.get(q, 0) + 1
            for pid, key, ph in zip(batch.column("product_id").to_pylist(), batch.column("render_key").to_pylist(), batch.column("phash").to_pylist()):
                if ph:
                    self.hashes[key] = (pid, ph)
            if "ok" in statuses:  # when the actor wrote it, not when the driver heard of it
                written = min(t for t, st in zip(batch.column("finished_at").to_pylist(), statuses) if st == "ok")
                self.first_written = written if self.first_written is None else min(self.first_written, written)
            if self._buffered >= self.flush_rows or time.monotonic() - self._last_flush > 10:
                self.flush()
            self.progress_now()

    def flush(self) -> None:
        if self._buffer:
            self.guard()
            tables, self._buffer, self._buffered = self._buffer, [], 0
            self.parts.append(_flush(self.output_uri, self.run_id, self._seq, tables))
            self._seq += 1
        self._last_flush = time.monotonic()


def _quality_alert(quality: dict[str, int], ok: int, max_failed_share: float | None) -> str | None:
    """The alert `run` turns into exit 9, or None: more than ``max_failed_share`` of the run's
    rendered products failed the quality gate."""
    failed = quality.get("failed-quality", 0)
    if max_failed_share is None or not ok or failed / ok <= max_failed_share:
        return None
    return f"{failed} of {ok} renders failed the quality gate ({failed / ok:.0%} > quality.max_failed_share {max_failed_share:.0%})"


def _near_duplicates(hashes: dict[str, tuple[str, str]], max_distance: int | None) -> list[list[dict]]:
    """Groups of this run's renders of different products whose phashes are within ``max_distance``
    bits (quality.checks.near_duplicate_groups; default checks.NEAR_DUPLICATE_MAX_DISTANCE)."""
    from catalog_render.quality import checks

    if len(hashes) < 2:
        return []
    groups = checks.near_duplicate_groups({k: ph for k, (_, ph) in hashes.items()},
                                          max_distance=checks.NEAR_DUPLICATE_MAX_DISTANCE if max_distance is None else max_distance)
    # The run record keeps the largest groups, capped (a GAN can render many near-identical items of
    # one category and colour); the report lists them.
    groups = sorted(groups, key=len, reverse=True)[:200]
    return [[{"product_id": hashes[k][0], "render_key": k} for k in g[:50]] for g in groups]


def _not_returned(work: pa.Table, returned: set[str]) -> pa.Table:
    """Work items whose manifest row never came back (their batch was dropped after its retries)."""
    return work.filter(pc.invert(pc.is_in(work.column("product_id"), value_set=pa.array(sorted(returned), pa.string()))))


def _sigterm_as_interrupt():
    """SIGTERM (cron/Airflow stopping the job) unwinds like Ctrl-C: received rows are flushed and the
    run record says 'interrupted'. Installed after ray.init, whose own handler would abort; returns
    the previous handler (None off the main thread) for run_job to restore."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _root_cause(exc: BaseException) -> str:
    """One line from a (possibly remote) exception: the last 'SomeError: message' line of its text."""
    import re

    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", line):
            return line[:500]
    return f"{type(exc).__name__}: {lines[0][:500] if lines else ''}"


def _flush(output_uri: str, run_id: str, seq: int, tables: list[pa.Table]) -> str:
    schema = manifest.manifest_schema()
    merged = pa.concat_tables(tables, promote_options="permissive")
    cols = [merged.column(f.name).cast(f.type) if f.name in merged.column_names else pa.nulls(merged.num_rows, f.type) for f in schema]
    return manifest.write_part(output_uri, run_id, seq, pa.Table.from_arrays(cols, schema=schema))


def split_work(n_rows: int, workers: int, batch_size: int, blocks_per_worker: int, isolate: bool = False) -> tuple[list[int], int]:
    """How ``n_rows`` work items are cut for the actor pool: ``(bounds, batch)``, where block ``i``
    is rows ``bounds[i]:bounds[i+1]`` and ``batch`` is the ``map_batches`` batch size.

    ``n_blocks = max(workers * blocks_per_worker, ceil(n_rows / batch_size))`` (at most ``n_rows``)
    blocks of near-equal size (sizes differ by at most one row): at least ``blocks_per_worker``
    blocks per actor, and blocks of at most one batch. Ray Data bundles blocks until a bundle
    holds ``batch_size`` rows, so a batch size above the block size would glue every block of a
    small run into one bundle for one actor (39 products at ``--batch-size 64`` all went to one of
    two actors); ``batch = min(batch_size, largest block)`` keeps bundles at one or two blocks,
    so every actor gets a share whatever ``--batch-size``. The pixels do not depend on the batch
    (the project's families render one image at a time; a diffusers pipeline is within one level),
    only throughput does. ``isolate``: one row per
    block and batch (products retried alone after a worker crash)."""
    if isolate:
        return list(range(n_rows + 1)), 1
    n_blocks = max(1, min(n_rows, max(workers * blocks_per_worker, -(-n_rows // batch_size))))
    bounds = [int(b) for b in np.linspace(0, n_rows, n_blocks + 1).astype(int)]
    largest = max((b - a for a, b in zip(bounds[:-1], bounds[1:])), default=1)
    return bounds, max(1, min(batch_size, largest))


def _dataset(ray, work: pa.Table, spec: JobSpec, kind, model_uri: str | None, model_id: str | None, output_uri: str, run_id: str,
             isolate: bool = False):
    """The render dataset. A task whose actor died is retried ``max_task_retries`` times on a
    restarted actor (Ray's default, -1, would retry a poison batch forever); a block that still
    fails is dropped (``max_errored_blocks=-1``) and its items come back missing, for run_job to
    retry alone (``isolate=True``: one item per block and batch)."""
    ex = spec.execution
    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = -1
    ctx.enable_progress_bars = False  # the CLI draws one bar with ETA over the whole run
    ctx.print_on_execution_start = False
    # Ray Data logs a traceback per dropped block (a worker death we handle); failures that matter
    # are raised to run_job, which reports them in one line.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=DeprecationWarning)
    # Start every actor before dispatching, or the first one ready takes all the (fast) blocks.
    ctx.wait_for_min_actors_s = ex.actor_start_timeout_s
    resources = ray.cluster_resources()
    total_cpus = float(resources.get("CPU", 1))
    use_gpu = ex.use_gpu == "always" or (ex.use_gpu == "auto" and resources.get("GPU", 0) >= 1)
    workers = ex.workers
    # Leave CPU for the read/iterate tasks, or Ray Data can wait forever for a free CPU.
    if ex.num_cpus_per_worker:
        num_cpus = ex.num_cpus_per_worker
    else:
        num_cpus = 1.0 if use_gpu else max(0.1, min(1.0, (total_cpus - 1) / workers))
    threads = max(1, int(total_cpus // workers))
    bounds, batch_size = split_work(work.num_rows, workers, ex.batch_size, ex.blocks_per_worker, isolate)
    blocks = [work.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    ds = ray.data.from_arrow(blocks)
    worker_cls, worker_kwargs = kind.worker(spec, WorkerContext(output_uri=output_uri, run_id=run_id, threads=threads, use_gpu=use_gpu,
                                                                model_uri=model_uri, model_id=model_id, worker_name=ray_worker_name))
    return ds.map_batches(
        worker_cls,
        fn_constructor_kwargs=worker_kwargs,
        batch_size=batch_size,
        batch_format="pyarrow",
        # One task at a time per actor when isolating: a poison product's crash must not also fail
        # (and use up the retries of) innocent products queued on the same actor.
        compute=ray.data.ActorPoolStrategy(size=min(workers, work.num_rows), max_tasks_in_flight_per_actor=1 if isolate else None),
        # No named parameter exists for these in Ray 2.60 (the **kwargs form is deprecated for 2.64;
        # pyproject caps ray below it).
        max_restarts=-1,
        max_task_retries=ex.max_task_retries,
        num_cpus=num_cpus,
        num_gpus=1 if use_gpu else None,
    )
