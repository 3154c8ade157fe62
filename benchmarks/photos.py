"""Main images from existing photos: mask quality, and marketplace pass counts before vs after.

``masks``: U²-Net-p (catalog_render.pretrained.mask, threshold 0.5) against a hand-checkable mask
on the fashion photos where one exists: dark products (Black, Navy Blue, Red, Brown, Blue shoes,
bags, watches, wallets, backpacks) on white backgrounds (the outer 3 % band >= 250 in every
channel for 99.5 % of its pixels). The reference is catalog_render.kinds.photo.threshold_mask ("any channel
< 235", enclosed holes under 1 % of the image filled): on such photos every product pixel is
darker than the background. Reports IoU (mean, median, 10th percentile, min) and CPU seconds per mask.

``passes OUTPUT``: the amazon rules (catalog_render.quality.presets) on each source photo
("before") and on the main-image run's output ("after": the written image's compliance as the
actor recorded it in the manifest, or the source photo when the product was left alone or failed), per rule, over the products the run has a row for;
plus the left-alone reasons. ``--before-only CATALOG`` counts "before" for a whole catalog.

``sheet OUTPUT --out PNG``: before | after pairs of the run's ok rows (ids chosen by sha256, so the
sheet is the same on every machine), for docs/ (fashion only: the IKEA photos are for
non-commercial use).

    python benchmarks/photos.py masks --data ../shared/data
    python benchmarks/photos.py passes runs/main-image [--before-only catalog.parquet]
    python benchmarks/photos.py sheet runs/main-image --out docs/figures/main-image-fashion.png
    python benchmarks/photos.py cost --n 12
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DARK = ("Black", "Navy Blue", "Red", "Brown", "Blue")
CATEGORIES = ("Casual Shoes", "Handbags", "Watches", "Wallets", "Backpacks")


def white_background(rgb: np.ndarray) -> bool:
    from catalog_render.quality import scores

    return scores.background_whiteness(rgb, 250, 0.03) > 0.995


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def cmd_masks(args) -> None:
    from catalog_render.kinds import photo
    from catalog_render.pretrained.mask import ProductMasker

    folder = Path(args.data) / "fashion"
    masker = ProductMasker(threads=1)
    ious, cpu = [], 0.0
    for r in csv.DictReader(open(folder / "metadata.csv", encoding="utf-8")):
        if r["articleType"] not in CATEGORIES or r["baseColour"] not in DARK:
            continue
        rgb = np.asarray(Image.open(folder / r["image_file"]).convert("RGB"))
        if not white_background(rgb):
            continue
        t = time.process_time()
        m = masker.mask(rgb) >= 0.5
        cpu += time.process_time() - t
        ious.append(iou(m, photo.threshold_mask(rgb)))
    a = np.asarray(ious)
    print(f"U2-Net-p vs threshold mask on {len(a)} white-background dark-product fashion photos: IoU mean {a.mean():.3f}, "
          f"median {np.median(a):.3f}, p10 {np.percentile(a, 10):.3f}, min {a.min():.3f}; {cpu / len(a):.2f} CPU s per mask")


def _before_after(output: str):
    from catalog_render import imaging, manifest

    t = manifest.read_manifest(output).to_pylist()
    latest = {}
    for r in t:
        if r["kind"] == "main-image" and r["render_key"]:
            latest[r["product_id"]] = r
    return latest, imaging


def cmd_passes(args) -> None:
    from catalog_render.quality import presets

    if args.before_only:
        import pyarrow.parquet as pq

        rows = pq.read_table(args.before_only).to_pylist()
        count, n = Counter(), 0
        for r in rows:
            if not r.get("image_uri"):
                continue
            colour = dict(r.get("attributes") or []).get("color")
            c = presets.evaluate(Image.open(r["image_uri"]).convert("RGB"), "amazon", colour)
            n += 1
            count.update(c.failed)
            count["passed"] += c.verdict
        print(f"before, whole catalog ({n} photos): passed {count['passed']}; failing per rule: "
              + ", ".join(f"{k} {v}" for k, v in sorted(count.items()) if k != "passed"))
        return
    latest, imaging = _before_after(args.output)
    before, after, reasons, status = Counter(), Counter(), Counter(), Counter()
    for pid, r in latest.items():
        status[r["status"]] += 1
        colour = json.loads(r["conditioning"] or "{}").get("attributes", {}).get("color")
        src = Image.open(r["source_uri"] or r["reference_uri"]).convert("RGB")
        b = presets.evaluate(src, "amazon", colour)
        before.update(b.failed)
        before["passed"] += b.verdict
        if r["status"] == "ok":  # the actor's own evaluation of the written image (presets.evaluate)
            failed = json.loads(r["compliance_failed"] or "[]")
        else:
            failed = b.failed
            reasons[(r["error"] or "").split(" (")[0]] += 1
        after.update(failed)
        after["passed"] += not failed
    rules = sorted({k for k in before | after if k != "passed"})
    print(f"products with a row: {len(latest)} ({dict(status)})")
    print("| amazon rule | photos failing before | failing after |")
    print("| --- | --- | --- |")
    for k in rules:
        print(f"| {k} | {before[k]} | {after[k]} |")
    print(f"| **passes every required rule** | **{before['passed']}** | **{after['passed']}** |")
    print("\nleft alone / not made:", dict(reasons))


def cmd_sheet(args) -> None:
    latest, _ = _before_after(args.output)
    ok = sorted((r for r in latest.values() if r["status"] == "ok"), key=lambda r: hashlib.sha256(r["product_id"].encode()).hexdigest())
    picks = ok[: args.n]
    tile = args.tile
    cols = 4  # two before/after pairs per row
    rows = (len(picks) + 1) // 2
    sheet = Image.new("RGB", (cols * tile, rows * tile), (255, 255, 255))
    for i, r in enumerate(picks):
        for k, path in enumerate((r["source_uri"], r["image_uri"])):
            im = Image.open(path).convert("RGB")
            im.thumbnail((tile - 6, tile - 6), Image.Resampling.LANCZOS)
            x, y = ((i % 2) * 2 + k) * tile, (i // 2) * tile
            bg = Image.new("RGB", (tile, tile), (235, 235, 235) if k == 0 else (255, 255, 255))
            bg.paste(im, ((tile - im.width) // 2, (tile - im.height) // 2))
            sheet.paste(bg, (x, y))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}: {len(picks)} before/after pairs ({Path(args.out).stat().st_size // 1024} KB); ids {[r['product_id'] for r in picks]}")


def cmd_cost(args) -> None:
    """CPU seconds per main image (the kind's render: mask, compositing, one Real-ESRGAN pass,
    compliance) on the first ``--n`` fashion photos, and what two full Real-ESRGAN passes to the
    same scale (Upscaler.upscale, no Lanczos pre-enlargement) cost on the same products."""
    from catalog_render import catalog as catalog_mod
    from catalog_render import manifest
    from catalog_render.config import JobSpec
    from catalog_render.kinds import photo
    from catalog_render.kinds.base import PlanContext
    from catalog_render.kinds.main_image import MainImageKind

    folder = Path(args.data) / "fashion"
    table = catalog_mod.ingest(str(folder / "metadata.csv"), str(folder), catalog_mod.parse_mapping(
        "product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,image_uri=image_file")).table.slice(0, args.n)
    spec = JobSpec().with_overrides(kind="main-image", **{"quality.preset": "amazon"})
    kind = MainImageKind()
    plan = kind.plan(table, spec, PlanContext("/nonexistent", manifest.manifest_schema().empty_table(), {}, set()))
    state = kind.setup(spec, 1)
    one, two = [], []
    for it in plan.work.to_pylist():
        t = time.process_time()
        r = kind.render(it, state)
        if r.image is None:
            continue
        one.append(time.process_time() - t)
        inputs = json.loads(it["inputs"])
        rgb = np.asarray(Image.open(inputs["source_uri"]).convert("RGB"))
        prob = state["masker"].mask(rgb)
        keep = prob >= 0.5
        left, top, right, bottom = photo.mask_box(keep)
        crop = Image.fromarray(photo.on_white(rgb[top:bottom, left:right], photo.soft_alpha(prob, keep)[top:bottom, left:right]))
        scale = 0.92 * 1000 / max(crop.size)
        t = time.process_time()
        state["upscaler"].upscale(crop, scale)
        two.append(time.process_time() - t if len(state["upscaler"].last_passes) > 1 else float("nan"))
    print(f"{len(one)} main images: {np.mean(one):.2f} CPU s each (median {np.median(one):.2f}); two Real-ESRGAN passes alone, where the scale"
          f" needs them ({int(np.sum(~np.isnan(two)))} photos): {np.nanmin(two):.1f}-{np.nanmax(two):.1f} CPU s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("masks")
    m.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p = sub.add_parser("passes")
    p.add_argument("output", nargs="?")
    p.add_argument("--before-only", default=None)
    s = sub.add_parser("sheet")
    s.add_argument("output")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=8)
    s.add_argument("--tile", type=int, default=220)
    c = sub.add_parser("cost")
    c.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    c.add_argument("--n", type=int, default=12)
    args = ap.parse_args()
    {"masks": cmd_masks, "passes": cmd_passes, "sheet": cmd_sheet, "cost": cmd_cost}[args.cmd](args)


if __name__ == "__main__":
    main()
