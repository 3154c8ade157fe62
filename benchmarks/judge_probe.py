"""Which pretrained features the category judge uses, and how well it does on real photos.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/judge_probe.py [--ikea] [--size 48x64]

Fashion: the 2,946 photos of ../shared/data/fashion, hash split as `catalog-render split --fraction
0.15 --seed 0` (2,517 train / 429 held out), letterboxed to 48x64 px (the models' size). For each
choice of AlexNet taps, a probe is trained with catalog_render.quality.category_judge.train_judge on
the training split (its own calibration photos: 20 % of each class) and scored on the held-out
products' photos of the judge's classes, beside the majority-class baseline. IKEA (--ikea): the
2,187 photos, the `type` column as category, the same split; only types with >= 10 training photos.
Prints one line per choice (accuracy, calibration threshold, CPU seconds).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from catalog_render import catalog, imaging  # noqa: E402
from catalog_render.quality import category_judge  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CHOICES = [("relu5",), ("relu4", "relu5"), ("relu3", "relu4", "relu5"), ("relu3",)]


def load(kind: str, width: int, height: int):
    folder = DATA / kind
    rows = [r for r in csv.DictReader(open(folder / "metadata.csv", encoding="utf-8")) if r["image_file"]]
    cat_col = "articleType" if kind == "fashion" else "type"
    table = pa.table({"product_id": [r["id"] for r in rows], "category": [r[cat_col] for r in rows],
                      "file": [str(folder / r["image_file"]) for r in rows]})
    train, held = catalog.split_holdout(table, 0.15, 0)

    def arrays(t):
        ims = [imaging.to_array(imaging.letterbox(imaging.to_rgb(Image.open(f)), width, height)) for f in t.column("file").to_pylist()]
        return torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).contiguous(), t.column("category").to_pylist(), t.column("product_id").to_pylist()

    return arrays(train), arrays(held)


def all_taps(x: torch.Tensor, cache: Path) -> torch.Tensor:
    """Pooled features of every AlexNet tap (64+192+384+256+256 = 1152 columns), cached in ``cache``."""
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    from catalog_render.pretrained.features import LAYERS, PooledFeatures

    feats = PooledFeatures(LAYERS)(x)
    torch.save(feats, cache)
    return feats


def columns(layers: tuple[str, ...]) -> list[int]:
    from catalog_render.pretrained.backbones import ALEXNET_CHANNELS
    from catalog_render.pretrained.features import LAYERS

    starts = np.cumsum((0,) + ALEXNET_CHANNELS)
    return [c for name in layers for c in range(starts[LAYERS.index(name)], starts[LAYERS.index(name) + 1])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ikea", action="store_true")
    ap.add_argument("--size", default="48x64")
    ap.add_argument("--layers", default=None, help="comma-separated taps, e.g. relu4,relu5 (default: compare several)")
    ap.add_argument("--weight-decay", default=None, help="comma-separated L2 penalties to compare (default: the judge's)")
    ap.add_argument("--cache", default="/tmp/judge-probe-cache", help="folder caching the features between runs")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    kind = "ikea" if args.ikea else "fashion"
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    (xt, ct, it), (xh, ch, ih) = load(kind, w, h)
    c0 = time.process_time()
    ft, ftm, fh = (all_taps(x, cache / f"{kind}-{w}x{h}-{name}.pt") for x, name in ((xt, "train"), (xt.flip(3), "train-mirror"), (xh, "held")))
    feature_cpu = time.process_time() - c0
    classes = category_judge.judge_classes(ct)
    keep = [i for i, c in enumerate(ct) if c in classes]
    fit, _ = category_judge.calibration_split([it[i] for i in keep], [classes.index(ct[i]) for i in keep])
    n_out = max(category_judge.MIN_OUTLIERS, round(category_judge.OUTLIER_SHARE * len(fit)))
    fo = all_taps(category_judge.outlier_images(xt[keep][fit], n_out), cache / f"{kind}-{w}x{h}-outliers.pt")
    held = [i for i, c in enumerate(ch) if c in classes]
    y = [classes.index(ch[i]) for i in held]
    major = Counter(classes.index(ct[i]) for i in keep).most_common(1)[0][0]
    base = float(np.mean([t == major for t in y]))
    print(f"{kind} at {w}x{h}: {len(classes)} classes (>= {category_judge.MIN_PHOTOS} training photos), {len(keep)} training photos of them, "
          f"{len(held)} held-out photos; majority baseline {base:.3f}; features {feature_cpu:.0f} CPU-s (0 when cached)", flush=True)
    choices = [tuple(args.layers.split(","))] if args.layers else CHOICES
    decays = [float(v) for v in args.weight_decay.split(",")] if args.weight_decay else [category_judge.WEIGHT_DECAY]
    for layers in choices:
        cols = columns(layers)
        for wd in decays:
            c0 = time.process_time()
            judge = category_judge.fit_judge(ft[keep][:, cols], ftm[keep][:, cols], fo[:, cols], [ct[i] for i in keep], [it[i] for i in keep], classes,
                                             (w, h), layers, weight_decay=wd)
            cpu = time.process_time() - c0
            pred = judge.probabilities_of_features(fh[held][:, cols]).argmax(dim=1).tolist()
            acc = float(np.mean([p == t for p, t in zip(pred, y)]))
            cal = judge.info["calibration"]
            print(f"  layers={'+'.join(layers)} ({len(cols)}-d) weight_decay={wd:g}: held-out real photos accuracy {acc:.3f}; "
                  f"calibration ({cal['photos']} photos) accuracy {cal['accuracy']:.3f}, p5 true-class probability {cal['threshold']:.4f}, "
                  f"median {cal['true_probability']['p50']:.3f}; probe {cpu:.1f} CPU-s", flush=True)


if __name__ == "__main__":
    main()
