"""Does the recognisability gate pass real photos and fail garbage? Measured on a model's judge.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/recognisability.py --model MODEL --catalog HELD_OUT.parquet \
        [--garbage OTHER_MODEL ...] [--output RUN_OUTPUT]

1. Real photos: the held-out catalog's photos, letterboxed to the model's size, scored by the
   model's judge (MODEL/judge/). The judge never saw these products (they are held out of the
   model's training catalog, from which it was trained).
2. Pure noise (uniform pixels) and colour blobs (6x8 random colours enlarged) at the model's size,
   one per held-out product, scored against that product's category.
3. Renders of MODEL and of each --garbage model for every held-out product, tries 0, 1, 2 with the
   seeds `run` gives them (job seed --seed, kinds.render.try_seed): passing on the first try, and
   after best-of-3 (any of the 3 tries passes: what `run` keeps).
Each is counted under several gate rules: for the products whose category the judge knows, the
category check (P(category) against p5 alone, against a floor k/K, and against the render's
P(not a product photo): the rule `run` uses, computed by catalog_render.recognisability.check);
for the others, the product check (1 - P(not a product photo) against the judge's calibrated
product threshold, and against 0.5).
4. With --output: the run's manifest (`catalog-render run` on the same products): how many kept
   renders failed recognisability, by which check, how many tries it took, how many are published.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from catalog_render import catalog, imaging, manifest, recognisability, storage  # noqa: E402
from catalog_render.generators import registry  # noqa: E402
from catalog_render.generators.base import GenerationParams  # noqa: E402
from catalog_render.kinds.render import try_seed  # noqa: E402
from catalog_render.planning import product_seed  # noqa: E402
from catalog_render.quality import category_judge  # noqa: E402
from catalog_render.training.data import load_image_set  # noqa: E402

TRIES = 3


def renders(model_uri: str, data, job_seed: int) -> list[torch.Tensor]:
    """TRIES tensors uint8 (N, 3, H, W): the model's renders of every product, try t with run's seed."""
    gen = registry.load_generator(model_uri)
    out = []
    for t in range(TRIES):
        seeds = [try_seed(product_seed(job_seed, str(p)), t) for p in data.product_ids]
        ims = []
        for s in range(0, len(seeds), 64):
            ims += gen.generate(data.conditionings[s:s + 64], seeds[s:s + 64], GenerationParams())
        out.append(torch.from_numpy(np.stack([imaging.to_array(im) for im in ims])).permute(0, 3, 1, 2).contiguous())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--garbage", action="append", default=[], help="another model whose renders are scored the same way")
    ap.add_argument("--seed", type=int, default=1234, help="the job's generation.seed (jobs/demo.toml: 1234)")
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    c0 = time.process_time()
    info = registry.describe(args.model)
    judge = category_judge.load(storage.join(args.model, category_judge.DIRNAME))
    plan = recognisability.plan(args.model, "auto", product_colour=False)
    K, t5, tp = len(judge.classes), judge.threshold, plan.product_threshold
    data = load_image_set(catalog.read_catalog(args.catalog), info.width, info.height)
    cats = [c.category for c in data.conditionings]
    labels = np.array([-1 if judge.label_of(c) is None else judge.label_of(c) for c in cats])
    known = labels >= 0
    print(f"judge {judge.judge_id}: {K} classes; category threshold p5 {t5:.4f} (1/K = {1 / K:.4f}); product threshold {tp:.4f} "
          f"({(judge.info['calibration'].get('product') or {}).get('what', 'no product calibration: the fallback')})")
    print(f"held-out products: {len(cats)}, {int(known.sum())} of the judge's categories, {int((~known).sum())} of others")
    rng = np.random.default_rng(0)
    n, h, w = len(cats), info.height, info.width
    sets = {"real photos": [data.images],
            "uniform pixel noise": [torch.from_numpy(rng.integers(0, 256, (n, 3, h, w), dtype=np.uint8))],
            "colour blobs": [torch.nn.functional.interpolate(torch.from_numpy(rng.integers(0, 256, (n, 3, 8, 6), dtype=np.uint8)).float(),
                                                             size=(h, w), mode="bilinear").round().to(torch.uint8)]}
    for uri in [args.model, *args.garbage]:
        steps = json.loads(storage.read_bytes(storage.join(uri, "model_card.json"))).get("steps")
        sets[f"renders of {Path(uri).name} ({steps} steps)"] = renders(uri, data, args.seed)
    probs = {name: [judge.probabilities(x).numpy() for x in xs] for name, xs in sets.items()}

    def passes(row, category) -> bool:  # the gate's verdict as run computes it
        r = recognisability.check(judge, row.tolist(), category, plan)
        return r["recognisability"] >= r["recognisability_threshold"]

    def p_cat(P):
        return np.where(known, P[np.arange(n), np.maximum(labels, 0)], np.nan)

    category_rules = {
        "P(c) >= p5 (the calibrated threshold alone)": lambda P: p_cat(P) >= t5,
        "P(c) >= max(p5, 1/K)": lambda P: p_cat(P) >= max(t5, 1 / K),
        "P(c) >= max(p5, 2/K)": lambda P: p_cat(P) >= max(t5, 2 / K),
        "P(c) >= max(p5, P(not a product)) (run's rule)": lambda P: np.array([passes(row, c) for row, c in zip(P, cats)]),
        "P(c) >= max(p5, 1/K, P(not a product))": lambda P: (p_cat(P) >= max(t5, 1 / K)) & (p_cat(P) >= P[:, -1]),
    }
    product_rules = {f"1 - P(not a product) >= {tp:.4f} (calibrated, run's rule)": lambda P: np.array([passes(row, c) for row, c in zip(P, cats)]),
                     "1 - P(not a product) >= 0.5": lambda P: 1 - P[:, -1] >= 0.5}
    for title, rules, mask in (("category check, products of the judge's categories", category_rules, known),
                               ("product check, products of other categories", product_rules, ~known)):
        print(f"\n{title} ({int(mask.sum())} products): passing the gate (best-of-{TRIES}: any of the {TRIES} tries passes)")
        print("| rule | " + " | ".join(sets) + " |")
        print("| --- |" + " --- |" * len(sets))
        for name, rule in rules.items():
            cells = []
            for s, ps in probs.items():
                ok = np.stack([rule(P)[mask] for P in ps])
                cells.append(f"{ok[0].mean():.1%}" if s == "real photos" else
                             f"{int(ok[0].sum())}" + (f" / {int(ok.any(0).sum())}" if len(ps) > 1 else ""))
            print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"(renders: first try / best-of-{TRIES}, of {int(known.sum())} and {int((~known).sum())} products; {time.process_time() - c0:.0f} CPU-s)")
    if args.output:
        rows = manifest.read_manifest(args.output).to_pylist()
        ok = [r for r in rows if r["status"] == "ok"]
        scored = [r for r in ok if r["recognisability"] is not None]
        failed = [r for r in scored if "recognisability" in json.loads(r["quality_failed"] or "[]")]
        by_check = Counter((r["recognisability_note"] or "category check").split(":")[0] for r in scored)
        failed_by = Counter((r["recognisability_note"] or "category check").split(":")[0] for r in failed)
        tries = Counter(r["tries"] for r in ok)
        current = storage.read_parquet(storage.join(args.output, "current.parquet")).num_rows if storage.exists(storage.join(args.output, "current.parquet")) else 0
        print(f"run {args.output}: {len(ok)} renders, {len(scored)} scored {dict(by_check)}, {len(failed)} failed recognisability after "
              f"best-of-N {dict(failed_by)} (tries per product {dict(sorted(tries.items()))}); quality_status "
              f"{dict(Counter(r['quality_status'] for r in ok))}; {current} products published in current.parquet")


if __name__ == "__main__":
    main()
