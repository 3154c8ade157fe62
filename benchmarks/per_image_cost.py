"""What rendering the GAN one image at a time costs, against one batched forward pass.

The GAN renders each image in its own forward pass so that its pixels do not depend on the batch
(docs/planning.md, "Same pixels whatever the batch size"). This measures
the price in process CPU time per image, with one torch thread (what each of 2 actors gets on 2
CPUs): (1) the generator alone, batches of 16 and 32 against one at a time; (2) the actor's whole
per-image work (`execution.RenderWorker` called in this process on batches of 16: render, scores,
quality checks, PNG with provenance, atomic write), with the GAN's forward pass one image at a time
(as shipped) and batched (swapped in here for the comparison only).

    python benchmarks/per_image_cost.py --model MODEL_DIR --catalog CATALOG.parquet [--limit 338]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a gan model directory")
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--limit", type=int, default=338)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from catalog_render import catalog, planning
    from catalog_render.config import JobSpec
    from catalog_render.execution import RenderWorker, generation_params
    from catalog_render.generators import gan, registry
    from catalog_render.generators.base import Conditioning
    from catalog_render.generators.conditioning import condition_indices, latents

    m = registry.load_generator(args.model)
    rows = catalog.read_catalog(args.catalog).to_pylist()[: args.limit]
    conds = [Conditioning(title=r["title"], category=r["category"], attributes=dict(r["attributes"] or [])) for r in rows]
    seeds = [planning.product_seed(1, r["product_id"]) for r in rows]
    n = len(rows)
    z, idx = latents(seeds, m.cfg["z_dim"]), condition_indices(m.cfg, conds)

    def batched_pass(bs: int):
        with torch.inference_mode():
            return torch.cat([m.net(z[i : i + bs], idx[i : i + bs]) for i in range(0, n, bs)])

    def one_at_a_time():
        return m.generate_tensor(conds, seeds)

    for name, fn in (("batch 16", lambda: batched_pass(16)), ("batch 32", lambda: batched_pass(32)), ("one at a time", one_at_a_time)):
        fn()
        best = min(_cpu(fn) for _ in range(3))
        print(f"generator, {name}: {best / n * 1000:.2f} ms CPU per image (best of 3, {n} images)")

    spec = JobSpec()
    params = generation_params(spec)
    info = registry.describe(args.model)
    plan = planning.plan(catalog.read_catalog(args.catalog), mode="backfill", model_id=info.model_id, params_used=info.params_used(params),
                         job_seed=1, prompt_template=spec.generation.prompt_template, done_keys={}, existing_images=set(), hide_images=True,
                         limit=args.limit, conditioning_problem=info.conditioning_problem)
    shipped = gan.GanModel.generate_tensor

    @torch.inference_mode()
    def batched(self, conditionings, seeds_):
        return self.net(latents(seeds_, self.cfg["z_dim"]), condition_indices(self.cfg, conditionings))

    for name, impl in (("one image at a time", shipped), ("batched", batched)) * 2:
        gan.GanModel.generate_tensor = impl
        worker = RenderWorker(args.model, info.model_id, tempfile.mkdtemp(), params.__dict__, "png", "bench", spec.scores.white_threshold,
                              spec.scores.border_fraction, threads=1, use_gpu=False, quality=spec.quality.model_dump(exclude={"max_failed_share"}))
        cpu = _cpu(lambda: [worker(plan.work.slice(i, 16)) for i in range(0, plan.work.num_rows, 16)])
        print(f"actor's whole per-image work, GAN {name}: {cpu / plan.work.num_rows * 1000:.1f} ms CPU per image ({plan.work.num_rows} images)")
    gan.GanModel.generate_tensor = shipped


def _cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


if __name__ == "__main__":
    main()
