"""Does the recognisability gate pass real photos and fail garbage? Measured on a model's judge.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/recognisability.py --model MODEL --catalog HELD_OUT.parquet [--output RUN_OUTPUT]

1. Real photos: the held-out catalog's photos, letterboxed to the model's size, scored by the
   model's judge (MODEL/judge/): the share of photos of the judge's classes whose true-category
   probability is at or above the gate's threshold (the judge's calibrated one). The judge never
   saw these products (they are held out of the model's training catalog, from which it was trained).
2. Pure noise (uniform pixels) and colour blobs at the model's size, one per held-out product,
   scored against that product's category: the share that fails.
3. With --output: the run's manifest (`catalog-render run` on the same products): how many kept
   renders failed recognisability, how many tries it took, how many products are published.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from catalog_render import catalog, manifest, storage  # noqa: E402
from catalog_render.generators import registry  # noqa: E402
from catalog_render.quality import category_judge  # noqa: E402
from catalog_render.training.data import load_image_set  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    info = registry.describe(args.model)
    judge = category_judge.load(storage.join(args.model, category_judge.DIRNAME))
    t = judge.threshold
    data = load_image_set(catalog.read_catalog(args.catalog), info.width, info.height)
    cats = [c.category for c in data.conditionings]
    p = judge.true_probability(data.images, cats)
    known = [v for v in p if v is not None]
    print(f"judge {judge.judge_id}: {len(judge.classes)} classes, threshold {t:.4f} ({judge.info['calibration']['what']})")
    print(f"real held-out photos: {sum(v >= t for v in known)} of {len(known)} pass ({np.mean([v >= t for v in known]):.1%}); "
          f"{len(p) - len(known)} of {len(p)} photos are of categories the judge does not know (not scored)")
    rng = np.random.default_rng(0)
    n = len(data.images)
    noise = torch.from_numpy(rng.integers(0, 256, (n, 3, info.height, info.width), dtype=np.uint8))
    blobs = torch.nn.functional.interpolate(torch.from_numpy(rng.integers(0, 256, (n, 3, 8, 6), dtype=np.uint8)).float(),
                                            size=(info.height, info.width), mode="bilinear").round().to(torch.uint8)
    for name, images in (("uniform pixel noise", noise), ("colour blobs (6x8 colours, bilinear)", blobs)):
        q = [v for v in judge.true_probability(images, cats) if v is not None]
        print(f"{name}: {sum(v < t for v in q)} of {len(q)} fail (median probability {np.median(q):.4f})")
    if args.output:
        rows = manifest.read_manifest(args.output).to_pylist()
        ok = [r for r in rows if r["status"] == "ok"]
        scored = [r for r in ok if r["recognisability"] is not None]
        failed = [r for r in scored if "recognisability" in json.loads(r["quality_failed"] or "[]")]
        tries = Counter(r["tries"] for r in ok)
        current = storage.read_parquet(storage.join(args.output, "current.parquet")).num_rows if storage.exists(storage.join(args.output, "current.parquet")) else 0
        print(f"run {args.output}: {len(ok)} renders, {len(scored)} scored, {len(failed)} failed recognisability after best-of-N "
              f"(tries per product {dict(sorted(tries.items()))}); quality_status {dict(Counter(r['quality_status'] for r in ok))}; "
              f"{current} products published in current.parquet; median recognisability {np.median([r['recognisability'] for r in scored]) if scored else None}")


if __name__ == "__main__":
    main()
