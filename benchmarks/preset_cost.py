"""What a marketplace preset adds to the actor's per-image work: CPU seconds per image, one process.

    python benchmarks/preset_cost.py --model DIR --catalog PARQUET [--n 48] [--presets none amazon] [--upscalers lanczos auto] [--profile]

For each (preset, upscaler) the actor class itself (``kinds.render.RenderWorker``) renders the same
``--n`` products (backfill with photos hidden: every render is scored against its photo) in batches
of 16, after one warm-up batch, with one torch thread. Prints CPU seconds per image (process time,
every thread) and the ratio to ``--presets``' first entry; ``--profile`` adds the top functions
(cProfile, cumulative) of each configuration.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--presets", nargs="+", default=["none", "amazon"])
    ap.add_argument("--upscalers", nargs="+", default=["lanczos", "auto"])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from catalog_render import catalog, planning
    from catalog_render.config import JobSpec
    from catalog_render.generators import registry
    from catalog_render.kinds.base import generation_params
    from catalog_render.kinds.render import RenderWorker

    info = registry.describe(args.model)
    base = None
    configs = [(p, u) for p in args.presets for u in (args.upscalers if p != "none" else ["-"])]
    for preset, upscaler in configs:
        spec = JobSpec.model_validate({"quality": {"preset": preset, **({"upscaler": upscaler} if upscaler != "-" else {})}})
        params = generation_params(spec)
        plan = planning.plan(catalog.read_catalog(args.catalog), mode="backfill", model_id=info.model_id, params_used=info.params_used(params),
                             job_seed=spec.generation.seed, prompt_template=spec.generation.prompt_template, done_keys={}, existing_images=set(),
                             hide_images=True, limit=args.n + 16, conditioning_problem=info.conditioning_problem)
        with tempfile.TemporaryDirectory(prefix="preset-cost-") as out:
            worker = RenderWorker(args.model, info.model_id, out, params.__dict__, "png", "bench", spec.scores.white_threshold, spec.scores.border_fraction,
                                  threads=1, use_gpu=False, quality=spec.quality.model_dump(exclude={"max_failed_share"}))
            worker(plan.work.slice(0, 16))  # warm-up: lazy loads (LPIPS, Real-ESRGAN) happen here
            prof = cProfile.Profile() if args.profile else None
            c0, w0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            n = 0
            for i in range(16, plan.work.num_rows, 16):
                n += worker(plan.work.slice(i, 16)).num_rows
            if prof:
                prof.disable()
            cpu, wall = (time.process_time() - c0) / n, (time.perf_counter() - w0) / n
        base = base or cpu
        print(f"| {preset} | {upscaler} | {n} | {cpu * 1000:.1f} | {wall * 1000:.1f} | {cpu / base:.2f} |", flush=True)
        if prof:
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(30)
            print(s.getvalue())


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
