"""Throughput: `catalog-render run` (Ray actor pool) versus a plain single-process loop.

Both render the same products with the same model and parameters and do the same per-image work
(generate, PNG-encode, atomic write, score against the reference photo). Prints images/s for each,
their ratio, and the fixed start-up cost of the Ray path (command start -> first image written).

    python benchmarks/throughput.py [--model DIR] [--catalog PARQUET] [--limit N] [--workers N] [--preset NAME] [--no-loop]

Without --catalog, the 2,946 photographed products of ../shared/data/fashion are ingested (the
embedded 384-product sample when that folder is absent); ``--limit`` (default 1,000) products are
rendered with their photos hidden. Without --model, a model is trained for 60 s on that catalog.
Time to the first image is measured from the command's launch to the first file in
``OUTPUT/images/`` (wall), with the CPU seconds the command's process tree had used by then
(psutil, polled every 0.2 s: the driver, Ray's processes and the actors).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CR = str(Path(sys.executable).parent / "catalog-render")
MAP = "product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,image_uri=image_file"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, cwd=REPO)


def _tree_cpu(proc, seen: dict[int, float]) -> float:
    """CPU seconds (user + system) of ``proc`` and its descendants, remembering exited ones."""
    import psutil

    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            seen[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return sum(seen.values())


def timed_run(args: list[str], images_dir: Path) -> dict:
    """Run ``args``; return wall seconds to exit, and wall and tree-CPU seconds to the first image file."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO)
    ps = psutil.Process(proc.pid)
    seen: dict[int, float] = {}
    first = None
    while proc.poll() is None:
        cpu = _tree_cpu(ps, seen)
        if first is None and images_dir.is_dir() and any(images_dir.rglob("*.png")):
            first = {"wall_s": time.perf_counter() - t0, "cpu_s": cpu}
        time.sleep(0.2)
    if proc.returncode:
        raise SystemExit(f"{args[:2]} failed with exit code {proc.returncode}")
    return {"total_s": time.perf_counter() - t0, "first": first, "cpu_s_seen": sum(seen.values())}


def plain_loop(catalog_uri: str, model_uri: str, out_dir: str, limit: int, batch_size: int, preset: str = "none") -> tuple[float, float, int]:
    """The same work without Ray: the actor class itself (catalog_render.execution.RenderWorker) called
    in this process on the same batches: render, score and judge each image, write it with its
    provenance metadata. Returns (model load seconds, render seconds, images)."""
    from catalog_render import catalog, planning
    from catalog_render.config import JobSpec
    from catalog_render.execution import RenderWorker, generation_params
    from catalog_render.generators import registry

    spec = JobSpec.model_validate({"quality": {"preset": preset}})
    params = generation_params(spec)
    info = registry.describe(model_uri)
    t0 = time.perf_counter()
    worker = RenderWorker(model_uri, info.model_id, out_dir, params.__dict__, "png", "bench", spec.scores.white_threshold,
                          spec.scores.border_fraction, threads=os.cpu_count() or 1, use_gpu=False, quality=spec.quality.model_dump(exclude={"max_failed_share"}))
    load_s = time.perf_counter() - t0
    plan = planning.plan(catalog.read_catalog(catalog_uri), mode="backfill", model_id=info.model_id, params_used=info.params_used(params),
                         job_seed=spec.generation.seed, prompt_template=spec.generation.prompt_template, done_keys={},
                         existing_images=set(), hide_images=True, limit=limit, conditioning_problem=info.conditioning_problem)
    t0 = time.perf_counter()
    for i in range(0, plan.work.num_rows, batch_size):
        worker(plan.work.slice(i, batch_size))
    return load_s, time.perf_counter() - t0, plan.work.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--catalog")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--preset", default="none")
    ap.add_argument("--no-loop", action="store_true", help="skip the single-process loop")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="catalog-render-bench-"))
    catalog_uri = args.catalog
    if not catalog_uri:
        catalog_uri = str(work / "catalog.parquet")
        data = REPO.parent / "shared" / "data" / "fashion"
        src = data if (data / "metadata.csv").is_file() else REPO / "examples" / "fashion-sample"
        sh(CR, "ingest", "--csv", str(src / "metadata.csv"), "--images", str(src / "images"), "--map", MAP, "--out", catalog_uri)
    model_uri = args.model
    if not model_uri:
        model_uri = str(work / "model")
        sh(CR, "train", "--catalog", catalog_uri, "--out", model_uri, "--job", "jobs/demo.toml", "--max-minutes", "1")

    out = str(work / "ray-out")
    timing = timed_run([CR, "run", "--catalog", catalog_uri, "--model", model_uri, "--output", out, "--hide-images", "--limit", str(args.limit),
                        "--workers", str(args.workers), "--batch-size", str(args.batch_size), "--preset", args.preset, "--no-report"],
                       Path(out) / "images")
    ray_total = timing["total_s"]
    record = json.loads(next((Path(out) / "runs").glob("*.json")).read_text())
    n_ray = record["counts"]["ok"]
    first = record["first_image_seconds"]
    from catalog_render.manifest import read_manifest

    m = read_manifest(out)
    done = sorted(t for t, st in zip(m.column("finished_at").to_pylist(), m.column("status").to_pylist()) if st == "ok")  # when each image was written
    steady = (len(done) - 1) / (done[-1] - done[0]).total_seconds() if len(done) > 1 and done[-1] > done[0] else float("nan")

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"\nmodel: {model_uri}  products: {n_ray}  batch size: {args.batch_size}  workers: {args.workers}  preset: {args.preset}")
    print(f"(a) catalog-render run : {n_ray / ray_total:8.2f} images/s end to end ({ray_total:.1f}s, process start included, "
          f"{timing['cpu_s_seen']:.1f} CPU s in its process tree); {steady:.2f} images/s from first to last image written (all actors)")
    if timing["first"]:
        print(f"first image (a)        : {timing['first']['wall_s']:.1f}s wall from the command's launch, {timing['first']['cpu_s']:.1f} CPU s "
              f"of its process tree by then; the run record says {first:.1f}s from run_job's start")
    if args.no_loop:
        print(f"outputs under {work}")
        return
    load_s, loop_s, n_loop = plain_loop(catalog_uri, model_uri, str(work / "loop-out"), args.limit, args.batch_size, args.preset)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads in the loop")
    print(f"(b) plain loop         : {n_loop / (loop_s + load_s):8.2f} images/s end to end ({loop_s + load_s:.1f}s incl. {load_s:.1f}s model load); "
          f"{n_loop / loop_s:.2f} images/s rendering")
    print(f"ratio (a)/(b)          : {(n_ray / ray_total) / (n_loop / (loop_s + load_s)):8.2f} end to end, {steady / (n_loop / loop_s):.2f} steady state")
    print(f"fixed start-up cost (a): {first:.1f}s from run start to the first image written (planning, Ray start, actor start + model load)")
    print(f"outputs under {work}")


if __name__ == "__main__":
    main()
