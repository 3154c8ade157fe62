"""Comparison and label images on the real catalogs (docs/comparison-label.md).

    python benchmarks/compare_label.py prepare --data ../shared/data --out runs/cl
        fashion-300.csv: the first 300 fashion products by id with a made-up ``price`` column
        (``(id * 7919 mod 28 + 2) * 100 - 1``: 199 to 2899), fashion-50.csv: its first 50,
        ikea-50.csv: the first 50 IKEA products by id with a photo and a description (besides the scraped
        "View more product information"); each ingested to Parquet.
    catalog-render run --kind comparison --job benchmarks/compare_label.toml --catalog runs/cl/fashion-300.parquet --output runs/cl/comparison
    catalog-render run --kind label --job benchmarks/compare_label.toml --catalog runs/cl/fashion-50.parquet --output runs/cl/label
    catalog-render run --kind label --job benchmarks/compare_label.toml --catalog runs/cl/ikea-50.parquet --output runs/cl/ikea-label
    python benchmarks/compare_label.py summary runs/cl/comparison runs/cl/label runs/cl/ikea-label
        per run: rows by status, CPU-free timings per image (render_seconds of the manifest:
        median, p90, max), groups and members.
    python benchmarks/compare_label.py cost comparison runs/cl/fashion-300.parquet --n 8   (and: cost label ... --n 10)
        CPU seconds per image, in-process, one thread (the machine is shared: wall time is not the cost).
    python benchmarks/compare_label.py sheet runs/cl/comparison runs/cl/label --out docs/figures/comparison-label-fashion.png
        two comparison images and four labels on one PNG (fashion only: IKEA photos are not to be shipped).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

FASHION_MAP = ("product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,"
               "attributes.usage=usage,attributes.season=season,attributes.price=price,image_uri=image_file")
IKEA_MAP = ("product_id=id,title=name,category=type,description=desc,attributes.color=color,attributes.size=size,image_uri=image_file")


def _write(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _ingest(csv_path: Path, images: Path, mapping: str) -> None:
    cr = Path(sys.executable).with_name("catalog-render")
    subprocess.run([str(cr), "ingest", "--csv", str(csv_path), "--images", str(images), "--map", mapping,
                    "--out", str(csv_path.with_suffix(".parquet"))], check=True)


def prepare(data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(csv.DictReader(open(data / "fashion" / "metadata.csv", encoding="utf-8")), key=lambda r: int(r["id"]))[:300]
    for r in rows:
        r["price"] = str((int(r["id"]) * 7919 % 28 + 2) * 100 - 1)
    _write(rows, out / "fashion-300.csv")
    _write(rows[:50], out / "fashion-50.csv")
    ikea = [r for r in csv.DictReader(open(data / "ikea" / "metadata.csv", encoding="utf-8"))
            if r["image_file"] and r["desc"].replace("View more product information", "").strip()]
    _write(sorted(ikea, key=lambda r: r["id"])[:50], out / "ikea-50.csv")
    for name, sub, mapping in (("fashion-300", "fashion", FASHION_MAP), ("fashion-50", "fashion", FASHION_MAP), ("ikea-50", "ikea", IKEA_MAP)):
        _ingest(out / f"{name}.csv", data / sub, mapping)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["articleType"]] = counts.get(r["articleType"], 0) + 1
    big = {k: v for k, v in sorted(counts.items()) if v >= 3}
    print(f"articleTypes with >= 3 products in the slice: {len(big)} ({sum(big.values())} products): {big}")


def summary(outputs: list[str]) -> None:
    import numpy as np

    from catalog_render import manifest

    for out in outputs:
        t = manifest.read_manifest(out).to_pylist()
        runs = sorted({r["run_id"] for r in t})
        by_status: dict[str, int] = {}
        for r in t:
            by_status[r["status"]] = by_status.get(r["status"], 0) + 1
        secs = np.array([r["render_seconds"] for r in t if r["status"] == "ok"])
        print(f"{out}: runs {len(runs)}, rows {by_status}")
        if secs.size:
            print(f"  render_seconds per image: median {np.median(secs):.2f}, p90 {np.percentile(secs, 90):.2f}, max {secs.max():.2f}, "
                  f"total {secs.sum():.1f}")
        for r in t:
            if r["status"] != "ok":
                print(f"  {r['status']}: {r['product_id']}: {r['error']}")
        members = [len(json.loads(r["members"])) for r in t if r["status"] == "ok" and r["members"]]
        if members:
            from collections import Counter

            print(f"  groups {len(members)}, members {sum(members)}, groups by size {dict(sorted(Counter(members).items()))}")
        for pid_record in sorted(Path(out, "runs").glob("*.json")):
            rec = json.loads(pid_record.read_text())
            print(f"  run {rec['run_id']}: planned {rec['planned']}, up to date {rec['up_to_date']}, quarantined {rec['quarantined']}, "
                  f"wall {rec.get('wall_seconds')} s, counts {rec.get('counts')}")


def cost(kind_name: str, catalog_uri: str, n: int) -> None:
    """CPU seconds (time.process_time, this process, 1 thread) per image for the first ``n`` work
    items of ``kind_name`` planned on ``catalog_uri`` with benchmarks/compare_label.toml, rendered
    in-process (no Ray); the mask model's load is excluded."""
    import time

    import numpy as np
    import torch

    from catalog_render import catalog, manifest
    from catalog_render.config import load_job
    from catalog_render.kinds import get_kind
    from catalog_render.kinds.base import PlanContext

    torch.set_num_threads(1)
    spec = load_job(Path(__file__).with_name("compare_label.toml")).with_overrides(kind=kind_name)
    kind = get_kind(kind_name)
    items = kind.plan(catalog.read_catalog(catalog_uri), spec, PlanContext("/nonexistent", manifest.manifest_schema().empty_table(), {}, set(),
                                                                           limit=n)).work.to_pylist()
    state = kind.setup(spec, 1)
    secs, members = [], []
    for it in items[:n]:
        t0 = time.process_time()
        kind.render(it, state)
        secs.append(time.process_time() - t0)
        members.append(len(json.loads(it["inputs"]).get("members", [1])))
    print(f"{kind_name}: {len(secs)} images, CPU s per image: median {np.median(secs):.2f}, mean {np.mean(secs):.2f}, max {max(secs):.2f}; "
          f"products per image: mean {np.mean(members):.2f}; CPU s per product shown: {sum(secs) / sum(members):.2f}")


def sheet(comparison: str, label: str, out: str) -> None:
    from PIL import Image

    from catalog_render import manifest

    cmp_rows = [r for r in manifest.read_manifest(comparison).to_pylist() if r["status"] == "ok"]
    lab_rows = [r for r in manifest.read_manifest(label).to_pylist() if r["status"] == "ok"]
    four = [r for r in cmp_rows if len(json.loads(r["members"])) == 4][:1] + [r for r in cmp_rows if len(json.loads(r["members"])) == 3][:1]
    width = 1400
    parts = []
    for r in four:
        im = Image.open(r["image_uri"]).convert("RGB")
        parts.append(im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS))
    labels = [Image.open(r["image_uri"]).convert("RGB").resize((width // 4 - 6, width // 4 - 6), Image.Resampling.LANCZOS)
              for r in lab_rows[:4]]
    h = sum(p.height + 8 for p in parts) + (labels[0].height if labels else 0)
    canvas = Image.new("RGB", (width, h), (200, 204, 210))
    y = 0
    for p in parts:
        canvas.paste(p, (0, y))
        y += p.height + 8
    for k, im in enumerate(labels):
        canvas.paste(im, (k * (width // 4) + 3, y))
    canvas = canvas.resize((width * 3 // 4, h * 3 // 4), Image.Resampling.LANCZOS)
    canvas.save(out, optimize=True)
    print(f"{out}: {canvas.size}, {Path(out).stat().st_size // 1024} KB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="runs/cl")
    s = sub.add_parser("summary")
    s.add_argument("outputs", nargs="+")
    c = sub.add_parser("cost")
    c.add_argument("kind", choices=["comparison", "label"])
    c.add_argument("catalog")
    c.add_argument("--n", type=int, default=8)
    f = sub.add_parser("sheet")
    f.add_argument("comparison")
    f.add_argument("label")
    f.add_argument("--out", default="docs/figures/comparison-label-fashion.png")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(Path(a.data), Path(a.out))
    elif a.cmd == "summary":
        summary(a.outputs)
    elif a.cmd == "cost":
        cost(a.kind, a.catalog, a.n)
    else:
        sheet(a.comparison, a.label, a.out)


if __name__ == "__main__":
    main()
