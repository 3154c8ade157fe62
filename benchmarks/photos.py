"""Main images from existing photos: mask quality, and marketplace pass counts before vs after.

``masks``: U²-Net-p (catalog_render.pretrained.mask, threshold 0.5) against a hand-checkable mask
on the fashion photos where one exists: dark products (Black, Navy Blue, Red, Brown, Blue shoes,
bags, watches, wallets, backpacks) on white backgrounds (the outer 3 % band >= 250 in every
channel for 99.5 % of its pixels). The reference is catalog_render.kinds.photo.threshold_mask ("any channel
< 235", enclosed holes under 1 % of the image filled): on such photos every product pixel is
darker than the background. Also (``--sets ikea``) the IKEA products the matting model never trained
on (training.matting_trainer.is_holdout), cut-outs laid over each background kind in turn
(white, flat colour, studio sweep, smooth noise; fixed seeds), the reference being the composited
alpha. ``--matting DIR`` (repeatable) adds a model of ``catalog-render train-matting`` beside
U²-Net-p. Reports IoU (mean, median, 10th percentile, min) and CPU seconds per mask (1 thread).

``passes OUTPUT``: the amazon rules (catalog_render.quality.presets, with the apparel rules for
garments worn on a model: quality.presets.is_worn) on each source photo ("before") and on the
main-image run's output ("after": the compliance the actor recorded in the manifest, the written
image checked again for garments worn on a model, whose rule is the apparel one, unless
``--recorded``; the source photo when the product was left alone or failed), per rule, over the products the run has a row for; plus the
left-alone reasons. ``--before-only CATALOG`` counts "before" for a whole catalog.

``sheet OUTPUT --out PNG``: before | after pairs of the run's ok rows (ids chosen by sha256, so the
sheet is the same on every machine), for docs/ (fashion only: the IKEA photos are for
non-commercial use).

    python benchmarks/photos.py masks --data ../shared/data [--matting models/ikea-matting] [--sets fashion,ikea]
    python benchmarks/photos.py mask-sheet --matting models/ikea-matting --out docs/figures/masks-fashion.png
    python benchmarks/photos.py passes runs/main-image [--before-only catalog.parquet]
    python benchmarks/photos.py sheet runs/main-image --out docs/figures/main-image-fashion.png
    python benchmarks/photos.py cost --n 12
    python benchmarks/photos.py upscale --n 12 --cost-n 2 --out runs/upscalers-photos
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


def _mask_sets(data: Path, sets: str):
    """The hand-checkable mask sets: (name, list of (uint8 (H, W, 3) image, bool (H, W) reference))."""
    from catalog_render.kinds import photo

    if "fashion" in sets:
        folder, items = data / "fashion", []
        for r in csv.DictReader(open(folder / "metadata.csv", encoding="utf-8")):
            if r["articleType"] not in CATEGORIES or r["baseColour"] not in DARK:
                continue
            rgb = np.asarray(Image.open(folder / r["image_file"]).convert("RGB"))
            if white_background(rgb):
                items.append((rgb, photo.threshold_mask(rgb)))
        yield "fashion: dark products on white", items
    if "ikea" in sets:
        from catalog_render.training import matting_trainer as mt

        folder = data / "ikea"
        uris = [str(folder / r["image_file"]) for r in csv.DictReader(open(folder / "metadata.csv", encoding="utf-8"))
                if r["image_file"] and mt.is_holdout(r["id"])]
        photos, masks, _ = mt.load_cutouts(uris, 320)
        for name, imgs, refs in mt.held_out_composites(photos, masks):
            yield f"IKEA held-out cut-outs on {name}", list(zip(imgs, refs))


def cmd_masks(args) -> None:
    import torch

    from catalog_render.matting import MattingMasker
    from catalog_render.training.matting_trainer import iou
    from catalog_render.pretrained.mask import ProductMasker

    torch.set_num_threads(1)
    maskers = {} if args.no_u2netp else {"U2-Net-p": ProductMasker(threads=1)}
    maskers.update({f"matting {Path(m).name}": MattingMasker(m, threads=1) for m in args.matting})
    print("| set | photos | mask | IoU mean | median | 10th percentile | min | CPU s per mask |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, items in _mask_sets(Path(args.data), args.sets):
        for label, masker in maskers.items():
            ious, cpu = [], 0.0
            for rgb, ref in items:
                t = time.process_time()
                m = masker.mask(rgb) >= 0.5
                cpu += time.process_time() - t
                ious.append(iou(m, ref))
            a = np.asarray(ious)
            print(f"| {name} | {len(a)} | {label} | {a.mean():.3f} | {np.median(a):.3f} | {np.percentile(a, 10):.3f} | {a.min():.3f} | "
                  f"{cpu / len(a):.2f} |", flush=True)


#: Fashion photos of the mask sheet: grey studio backdrops, white garments, people, bags, a ring.
MASK_SHEET_IDS = ("1584", "1783", "1614", "1563", "4584", "1943", "49012", "1580")


def cmd_mask_sheet(args) -> None:
    """photo | U²-Net-p | matting model, the mask's outside grey (so white garments stay visible),
    two triples a row, for docs/ (fashion photos only)."""
    from PIL import ImageDraw

    from catalog_render.matting import MattingMasker
    from catalog_render.pretrained.mask import ProductMasker

    maskers = (ProductMasker(threads=1), MattingMasker(args.matting, threads=1))
    w, h = 150, 200
    sheet = Image.new("RGB", (6 * w + 10, ((len(MASK_SHEET_IDS) + 1) // 2) * (h + 4) + 16), "white")
    d = ImageDraw.Draw(sheet)
    for k, title in enumerate(("photo", "U2-Net-p", "matting (IKEA)") * 2):
        d.text((k * w + 4 + (10 if k >= 3 else 0), 2), title, fill=(0, 0, 0))
    for i, pid in enumerate(MASK_SHEET_IDS):
        rgb = np.asarray(Image.open(Path(args.data) / "fashion" / "images" / f"{pid}.jpg").convert("RGB"))
        tiles = [Image.fromarray(rgb)] + [Image.fromarray(np.where((m.mask(rgb) >= 0.5)[..., None], rgb, 180).astype(np.uint8)) for m in maskers]
        x0, y = (0 if i % 2 == 0 else 3 * w + 10), 16 + (i // 2) * (h + 4)
        for k, im in enumerate(tiles):
            im.thumbnail((w, h), Image.Resampling.LANCZOS)
            sheet.paste(im, (x0 + k * w + (w - im.width) // 2, y))
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


def _before_after(output: str):
    from catalog_render import imaging, manifest

    t = manifest.read_manifest(output).to_pylist()
    latest = {}
    for r in t:
        if r["kind"] == "main-image" and r["render_key"]:
            latest[r["product_id"]] = r
    return latest, imaging


def cmd_passes(args) -> None:
    from catalog_render.quality.presets import is_worn
    from catalog_render.quality import presets

    if args.before_only:
        import pyarrow.parquet as pq

        rows = pq.read_table(args.before_only).to_pylist()
        count, n = Counter(), 0
        for r in rows:
            if not r.get("image_uri"):
                continue
            colour = dict(r.get("attributes") or []).get("color")
            c = presets.evaluate(Image.open(r["image_uri"]).convert("RGB"), "amazon", colour, apparel=is_worn(r.get("category")))
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
        cond = json.loads(r["conditioning"] or "{}")
        colour, worn = cond.get("attributes", {}).get("color"), is_worn(cond.get("category"))
        src = Image.open(r["source_uri"] or r["reference_uri"]).convert("RGB")
        b = presets.evaluate(src, "amazon", colour, apparel=worn)
        before.update(b.failed)
        before["passed"] += b.verdict
        if r["status"] == "ok":  # the actor's own evaluation of the written image (presets.evaluate) ...
            failed = json.loads(r["compliance_failed"] or "[]")
            if worn and not args.recorded:  # ... checked again for worn garments: rows made before the apparel rule
                failed = presets.evaluate(Image.open(r["image_uri"]).convert("RGB"), "amazon", colour, apparel=True).failed
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


UPSCALE_METHODS = ("lanczos", "realesr-animevideov3-x4", "realesrgan-x4plus")


def cmd_upscale(args) -> None:
    """Which Real-ESRGAN model for photos? Each photo's product composited over white at the
    photo's own scale (the main-image kind's first step: U²-Net-p mask, soft alpha, the mask's box)
    is the reference; it is reduced 4x (bicubic) and enlarged back 4x by each method (Lanczos for
    the exact size), then compared with the reference: LPIPS-Alex and DISTS (lower = closer), and
    ``white kept``: of the reference's white pixels (every channel >= 250) inside the product's box,
    the share still white (a white collar, sole or print edge that turns grey lowers it). Photos:
    the first ``--n`` 225x300 fashion photos by sha256 of their id among garments worn on a model
    (quality.presets.is_worn: faces and skin in frame) and ``--n`` among the others. CPU s per image:
    one x4 pass on the full-size composite (the main-image kind's pass, about 225x300 -> 900x1200),
    on the first ``--cost-n`` photos of each group."""
    from catalog_render.kinds import photo
    from catalog_render.quality.presets import is_worn
    from catalog_render.pretrained.mask import ProductMasker
    from catalog_render.pretrained.upscale import Upscaler
    from catalog_render.quality import metrics

    folder = Path(args.data) / "fashion"
    rows = sorted(csv.DictReader(open(folder / "metadata.csv", encoding="utf-8")), key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
    groups: dict[str, list] = {"worn on a model": [], "other products": []}
    masker = ProductMasker(threads=1)
    for r in rows:
        g = groups["worn on a model" if is_worn(r["articleType"]) else "other products"]
        if len(g) >= args.n:
            continue
        im = Image.open(folder / r["image_file"]).convert("RGB")
        if im.size != (225, 300):
            continue
        rgb = np.asarray(im)
        prob = masker.mask(rgb)
        keep = prob >= 0.5
        if keep.mean() < 0.01:
            continue
        left, top, right, bottom = photo.mask_box(keep)
        comp = photo.on_white(rgb[top:bottom, left:right], photo.soft_alpha(prob, keep)[top:bottom, left:right])
        h, w = (comp.shape[0] // 4) * 4, (comp.shape[1] // 4) * 4
        g.append((r["id"], comp[:h, :w]))
        if all(len(v) >= args.n for v in groups.values()):
            break
    ups = {m: Upscaler(m, max_passes=1) for m in UPSCALE_METHODS if m != "lanczos"}
    lp, ds = metrics.load_lpips(), metrics.load_dists()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    print("| photos | method | LPIPS ↓ | DISTS ↓ | white kept ↑ | CPU s per x4 pass on the composite |")
    print("| --- | --- | --- | --- | --- | --- |")
    for gname, items in groups.items():
        for m in UPSCALE_METHODS:
            refs, outs, kept = [], [], []
            for pid, ref in items:
                small = Image.fromarray(ref).resize((ref.shape[1] // 4, ref.shape[0] // 4), Image.Resampling.BICUBIC)
                up = small.resize((ref.shape[1], ref.shape[0]), Image.Resampling.LANCZOS) if m == "lanczos" else ups[m].resize(small, (ref.shape[1], ref.shape[0]))
                a = np.asarray(up)
                white = (ref >= 250).all(axis=2)
                kept.append(float((a[white] >= 250).all(axis=1).mean()) if white.any() else 1.0)
                refs.append(ref)
                outs.append(a)
            lps, dis = lp(refs, outs), ds(refs, outs)
            cpu = []
            for pid, ref in items[: args.cost_n]:
                if m == "lanczos":
                    continue
                t = time.process_time()
                ups[m].upscale(Image.fromarray(ref), 4)
                cpu.append(time.process_time() - t)
            results[(gname, m)] = outs
            print(f"| {gname} ({len(items)}) | {m} | {np.mean(lps):.4f} | {np.mean(dis):.4f} | {np.mean(kept):.3f} | "
                  f"{np.mean(cpu):.1f} |" if cpu else f"| {gname} ({len(items)}) | {m} | {np.mean(lps):.4f} | {np.mean(dis):.4f} | {np.mean(kept):.3f} | - |", flush=True)
    # a sheet: reference | each method, the first 3 photos of each group side by side, the top 40 % (faces, collars)
    cols = len(UPSCALE_METHODS) + 1
    crops = {g: [[ref[: int(ref.shape[0] * 0.4)]] + [results[(g, m)][k][: int(ref.shape[0] * 0.4)] for m in UPSCALE_METHODS]
                 for k, (_, ref) in enumerate(items[:3])] for g, items in groups.items()}
    tw = max(a.shape[1] for rows_ in crops.values() for row in rows_ for a in row)
    th = max(a.shape[0] for rows_ in crops.values() for row in rows_ for a in row)
    sheet = Image.new("RGB", (tw * cols * len(groups), th * 3), (255, 255, 255))
    for gi, rows_ in enumerate(crops.values()):
        for k, row in enumerate(rows_):
            for j, a in enumerate(row):
                sheet.paste(Image.fromarray(a), ((gi * cols + j) * tw, k * th))
    sheet.save(out_dir / "upscalers-photos.png", optimize=True)
    print(f"sheet: {out_dir / 'upscalers-photos.png'} (columns: reference, {', '.join(UPSCALE_METHODS)}; worn left, others right)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("masks")
    m.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    m.add_argument("--matting", action="append", default=[], help="a matting model directory to measure beside U2-Net-p (repeatable)")
    m.add_argument("--sets", default="fashion,ikea", help="fashion, ikea or both (comma-separated)")
    m.add_argument("--no-u2netp", action="store_true", help="measure only the --matting models")
    ms = sub.add_parser("mask-sheet")
    ms.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ms.add_argument("--matting", required=True, help="matting model directory (catalog-render train-matting)")
    ms.add_argument("--out", required=True)
    p = sub.add_parser("passes")
    p.add_argument("output", nargs="?")
    p.add_argument("--before-only", default=None)
    p.add_argument("--recorded", action="store_true", help="after = the compliance the actor recorded (default: worn garments' images checked again)")
    s = sub.add_parser("sheet")
    s.add_argument("output")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=8)
    s.add_argument("--tile", type=int, default=220)
    c = sub.add_parser("cost")
    c.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    c.add_argument("--n", type=int, default=12)
    u = sub.add_parser("upscale")
    u.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    u.add_argument("--n", type=int, default=12)
    u.add_argument("--cost-n", type=int, default=2)
    u.add_argument("--out", default="runs/upscalers-photos")
    args = ap.parse_args()
    {"masks": cmd_masks, "mask-sheet": cmd_mask_sheet, "passes": cmd_passes, "sheet": cmd_sheet, "cost": cmd_cost, "upscale": cmd_upscale}[args.cmd](args)


if __name__ == "__main__":
    main()
