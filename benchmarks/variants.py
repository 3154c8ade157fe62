"""Colour variants from a sibling's photo, measured on real variant pairs against the hidden photo.

Pairs: the ``variant`` kind's own plan with ``--hide-images`` semantics on each catalog (every
photographed product of a variant group is planned from its nearest-id photographed sibling of
another colour whose photo is not byte-identical); each unordered pair is kept once (the product
planned first in catalog order is hidden and rendered from the other). Products whose colour the
method does not know (Multi, Steel...) are counted and left out. ``--max-pairs`` keeps the first N
pairs by sha256 of their ids (a fixed, unbiased sample).

Per pair, against the hidden real photo (everything at the hidden photo's size, Lanczos):

- ``lpips``: LPIPS-Alex (catalog_render.quality.metrics.load_lpips; lower = closer);
- ``ssim``: SSIM (catalog_render.quality.metrics.ssim; higher = closer);
- ``colour_de``: CIEDE2000 between the dominant colour of the image's product region and the
  dominant colour of the hidden photo's product region (both: U²-Net-p mask, then the pixels of the
  product's colour, catalog_render.kinds.recolour.colour_region); lower = closer;
- ``colour_match``: share of images whose product region matches the target catalog colour by the
  project's colour check (quality.checks.colour_match: dominant colour within ΔE00 25 of the
  name's reference), the proxy for "a person would take it for the target colour".

Methods: ``lab-transfer`` (the variant kind), ``sibling`` (the sibling's photo unchanged) and,
with ``--model``, ``generator`` (that model's render of the hidden product from its catalog
fields, seed = planning.product_seed(0, id), enlarged with Lanczos). The product region of the
sibling baseline is the sibling's own; of the generator's render, checks.foreground_mask. With
``--colour-table T`` (``catalog-render colour-table`` of the fashion catalog), also ``lab-transfer,
catalog colours``: the same region moved to the table's median colour of the target name, never
counting the hidden product's own measurement (catalog_render.kinds.catalog_colours; the name's
reference where the table has fewer than 3 other measurements).

    python benchmarks/variants.py --data ../shared/data [--max-pairs 120] [--model DIR] [--holdout PARQUET] [--colour-table PARQUET]
        [--sheet docs/figures/variants-fashion.png]  (the sheet shows the catalog-colours renders when --colour-table is given)

``--holdout``: a catalog of the products ``--model`` never trained on (e.g. runs/cmp/fashion-holdout.parquet
for models/fashion-reference): the table gets rows for the pairs whose hidden product is one of them.

Prints a markdown table (benchmarks/RESULTS.md, docs/photos.md) and writes --out/variants.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MAPS = {
    "fashion": "product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,image_uri=image_file",
    "ikea": "product_id=id,title=name,category=type,attributes.color=color,attributes.size=size,image_uri=image_file",
}


def pairs_of(catalog, spec, max_pairs: int):
    """(work items of one direction per unordered pair, sampled; total pairs; plan)."""
    from catalog_render import manifest
    from catalog_render.kinds.base import PlanContext
    from catalog_render.kinds.variant import VariantKind

    plan = VariantKind().plan(catalog, spec, PlanContext("/nonexistent", manifest.manifest_schema().empty_table(), {}, set(), hide_images=True))
    seen, items = set(), []
    for it in plan.work.to_pylist():
        inputs = json.loads(it["inputs"])
        pair = frozenset((it["product_id"], inputs["source_product_id"]))
        if pair not in seen:
            seen.add(pair)
            items.append((it, inputs))
    total = len(items)
    items.sort(key=lambda x: hashlib.sha256("|".join(sorted((x[0]["product_id"], x[1]["source_product_id"]))).encode()).hexdigest())
    return items[:max_pairs], total, plan


def region_colour(rgb, masker, colour):
    """Dominant sRGB of the product-coloured part of ``rgb``'s mask (None when none)."""
    from catalog_render.kinds import recolour
    from catalog_render.quality import checks

    mask = masker.mask(Image.fromarray(rgb)) >= 0.5
    region = recolour.colour_region(rgb, mask, colour)
    return checks.dominant_colour(rgb, region) if region.sum() >= 40 else None, region


def measure(catalog_name: str, catalog, spec, masker, lpips, max_pairs: int, generator=None, sheet_rows: list | None = None,
            holdout: set | None = None, colours=None) -> dict:
    from catalog_render import imaging
    from catalog_render.generators.base import Conditioning, GenerationParams
    from catalog_render.kinds import recolour
    from catalog_render.kinds.variant import make_variant
    from catalog_render.planning import product_seed
    from catalog_render.quality import checks, metrics

    items, total, plan = pairs_of(catalog, spec, max_pairs)
    unknown = sum(1 for _, why in plan.quarantined if why.startswith("target colour"))
    rows = {r["product_id"]: r for r in catalog.to_pylist()}
    results = {m: {"lpips": [], "ssim": [], "colour_de": [], "colour_match": [], "ids": []}
               for m in ("lab-transfer", "lab-transfer, catalog colours", "sibling", "generator")}
    skipped, cpu0 = [], time.process_time()
    for it, inputs in items:
        real = np.asarray(imaging.decode_rgb(open(rows[it["product_id"]]["image_uri"], "rb").read()))
        src = np.asarray(imaging.decode_rgb(open(inputs["source_uri"], "rb").read()))
        out, region, why = make_variant(src, masker.mask(Image.fromarray(src)), inputs["source_colour"], np.asarray(inputs["target_lab"]), spec)
        if why:
            skipped.append((it["product_id"], why))
            continue
        size = (real.shape[1], real.shape[0])
        fit = lambda a: np.asarray(Image.fromarray(a).resize(size, Image.Resampling.LANCZOS)) if a.shape[:2] != real.shape[:2] else a  # noqa: E731
        fit_mask = lambda m: np.asarray(Image.fromarray(m).resize(size, Image.Resampling.NEAREST)) if m.shape != real.shape[:2] else m  # noqa: E731
        real_dom, _ = region_colour(real, masker, inputs["target_colour"])
        sib_region = fit_mask(recolour_region(src, masker, inputs["source_colour"]))
        images = {"lab-transfer": (fit(out), fit_mask(region)), "sibling": (fit(src), sib_region)}
        if colours is not None:
            # the catalog's measured colour of the name, never counting the hidden product's own photo
            lab = colours.target(inputs["target_colour"], exclude=it["product_id"])
            measured = recolour.recolour(src, region, lab) if lab is not None else out
            images["lab-transfer, catalog colours"] = (fit(measured), fit_mask(region))
        if generator is not None:
            c = json.loads(it["conditioning"])
            g = generator.generate([Conditioning(title=c["title"], category=c["category"], attributes=c["attributes"])],
                                   [product_seed(0, it["product_id"])], GenerationParams())[0]
            g = np.asarray(g.convert("RGB").resize(size, Image.Resampling.LANCZOS))
            images["generator"] = (g, checks.foreground_mask(g))
        for method, (img, reg) in images.items():
            r = results[method]
            r["ids"].append(it["product_id"])
            r["lpips"].append(lpips([real], [img])[0])
            r["ssim"].append(metrics.ssim(real, img))
            dom = checks.dominant_colour(img, reg) if reg.sum() >= 40 else None
            r["colour_de"].append(checks.delta_e(dom, real_dom) if dom is not None and real_dom is not None else None)
            cm = checks.colour_match(img, inputs["target_colour"], mask=reg) if reg.sum() >= 40 else None
            r["colour_match"].append(bool(cm.match) if cm is not None and cm.match is not None else False)
        if sheet_rows is not None:
            shown = measured if colours is not None else out  # with --colour-table the sheet shows its renders
            sheet_rows.append((src, shown, real, f"{inputs['source_colour']} -> {inputs['target_colour']}"))
    summary = {"catalog": catalog_name, "pairs_total": total, "pairs_measured": len(items) - len(skipped), "pairs_sampled": len(items),
               "unknown_target_colour": unknown, "skipped": skipped, "cpu_s": round(time.process_time() - cpu0, 1), "methods": {}}
    summary["methods"] = _by_method(results)
    if holdout is not None:
        summary["holdout"] = {"ids": len(holdout), "methods": _by_method(results, holdout)}
    summary["pairs"] = {m: {k: [None if v is None else float(v) if not isinstance(v, str) else v for v in vals] for k, vals in r.items()}
                        for m, r in results.items() if r["ids"]}
    return summary


def _by_method(results: dict, keep: set | None = None) -> dict:
    """Mean LPIPS and SSIM, median ΔE00, colour-match share per method, over the pairs whose hidden
    product id is in ``keep`` (all when None)."""
    out = {}
    for method, r in results.items():
        sel = [i for i, pid in enumerate(r["ids"]) if keep is None or pid in keep]
        if not sel:
            continue
        des = [r["colour_de"][i] for i in sel if r["colour_de"][i] is not None]
        out[method] = {"lpips": float(np.mean([r["lpips"][i] for i in sel])), "ssim": float(np.mean([r["ssim"][i] for i in sel])),
                       "colour_de": float(np.median(des)) if des else None, "colour_match": float(np.mean([r["colour_match"][i] for i in sel])),
                       "n": len(sel)}
    return out


def recolour_region(rgb, masker, colour):
    return region_colour(rgb, masker, colour)[1]


def write_sheet(rows: list, path: Path, n: int = 8, tile: tuple[int, int] = (135, 180), method: str = "lab-transfer") -> None:
    """Rows of sibling | render | hidden real photo, ``n`` rows, JPEG-compressed PNG-free sheet."""
    from PIL import ImageDraw

    rows = rows[:n]
    w, h = tile
    sheet = Image.new("RGB", (3 * w, len(rows) * (h + 14) + 14), "white")
    d = ImageDraw.Draw(sheet)
    for k, title in enumerate(("sibling photo", f"render ({method})", "hidden real photo")):
        d.text((k * w + 4, 1), title, fill=(0, 0, 0))
    for i, (src, out, real, label) in enumerate(rows):
        y = 14 + i * (h + 14)
        for k, a in enumerate((src, out, real)):
            im = Image.fromarray(a)
            im.thumbnail(tile, Image.Resampling.LANCZOS)
            sheet.paste(im, (k * w + (w - im.width) // 2, y))
        d.text((4, y + h), label, fill=(80, 80, 80))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder holding fashion/ and ikea/")
    ap.add_argument("--catalogs", default="fashion,ikea")
    ap.add_argument("--max-pairs", type=int, default=120)
    ap.add_argument("--model", default=None, help="generator model directory for the generator baseline")
    ap.add_argument("--sheet", default=None, help="PNG sheet of fashion pairs (sibling | render | hidden photo)")
    ap.add_argument("--out", default="runs/variants")
    ap.add_argument("--colour-table", default=None, help="colour table (catalog-render colour-table) of the fashion catalog: also measure lab-transfer with its targets")
    ap.add_argument("--holdout", default=None, help="catalog Parquet of products the --model never trained on: also report the pairs whose hidden product is one")
    args = ap.parse_args()

    import torch

    from catalog_render import catalog as catalog_mod
    from catalog_render.config import JobSpec
    from catalog_render.pretrained.mask import ProductMasker
    from catalog_render.quality import metrics

    torch.set_num_threads(1)
    spec = JobSpec().with_overrides(kind="variant")
    masker, lpips = ProductMasker(threads=1), metrics.load_lpips()
    generator = None
    if args.model:
        from catalog_render.generators import registry

        generator = registry.load_generator(args.model)
    out = {}
    for name in args.catalogs.split(","):
        folder = Path(args.data) / name
        table = catalog_mod.ingest(str(folder / "metadata.csv"), str(folder), catalog_mod.parse_mapping(MAPS[name])).table
        sheet_rows = [] if (args.sheet and name == "fashion") else None
        holdout = None
        if args.holdout and name == "fashion":
            import pyarrow.parquet as pq

            holdout = set(pq.read_table(args.holdout, columns=["product_id"]).column("product_id").to_pylist())
        colours = None
        if args.colour_table and name == "fashion":
            from catalog_render.kinds.catalog_colours import ColourTable

            colours = ColourTable.load(args.colour_table)
        out[name] = measure(name, table, spec, masker, lpips, args.max_pairs, generator if name == "fashion" else None, sheet_rows, holdout,
                            colours)
        if sheet_rows is not None:
            write_sheet(sheet_rows, Path(args.sheet), method="catalog colours" if args.colour_table else "lab-transfer")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "variants.json").write_text(json.dumps(out, indent=2))
    print("| catalog | pairs (measured / sampled / all) | method | LPIPS ↓ | SSIM ↑ | ΔE00 to the hidden photo's colour (median) ↓ | target colour matched ↑ |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, s in out.items():
        for method, m in s["methods"].items():
            de = f"{m['colour_de']:.1f}" if m["colour_de"] is not None else "-"
            print(f"| {name} | {s['pairs_measured']} / {s['pairs_sampled']} / {s['pairs_total']} | {method} | {m['lpips']:.4f} | {m['ssim']:.4f} | {de} | {m['colour_match']:.0%} |")
        for method, m in s.get("holdout", {}).get("methods", {}).items():
            de = f"{m['colour_de']:.1f}" if m["colour_de"] is not None else "-"
            print(f"| {name}, hidden product held out of --model's training | {m['n']} | {method} | {m['lpips']:.4f} | {m['ssim']:.4f} | {de} | {m['colour_match']:.0%} |")
        print(f"<!-- {name}: {s['unknown_target_colour']} products with a colour the method does not know; skipped {len(s['skipped'])}; {s['cpu_s']} CPU s -->")
        for line in paired_intervals(s["pairs"]):
            print(f"{name}: {line}")


def paired_intervals(pairs: dict, baseline: str = "sibling", resamples: int = 5000) -> list[str]:
    """Per method: the mean paired difference to ``baseline`` in LPIPS and SSIM over the same pairs,
    with a 95 % percentile bootstrap interval (``resamples`` resamples of the pairs, seed 0) and the
    share of pairs where the method is better."""
    if baseline not in pairs:
        return []
    rng, out = np.random.default_rng(0), []
    for method, r in pairs.items():
        if method == baseline or r["ids"] != pairs[baseline]["ids"]:
            continue
        for metric, sign in (("lpips", -1), ("ssim", 1)):
            diff = np.asarray(r[metric], float) - np.asarray(pairs[baseline][metric], float)
            boot = [diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(resamples)]
            lo, hi = np.percentile(boot, [2.5, 97.5])
            out.append(f"{method} - {baseline}, {metric}: {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}], better in {np.mean(sign * diff > 0):.0%} of pairs")
    return out


if __name__ == "__main__":
    main()
