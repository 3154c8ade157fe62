"""The products of docs/design.md's measurement, and per-image timings of a ``run --kind design``
output with how much each variation differs from the product's own render (mean absolute
difference per pixel and channel, 0-255).

    .venv/bin/python benchmarks/design.py prepare CATALOG OUT.parquet [N]
    .venv/bin/python benchmarks/design.py measure OUTPUT MODEL [JOB_SEED]

``prepare``: the first photographed product (by numeric id) with id >= 2000 of each of the N (20)
most frequent categories of CATALOG. ``measure`` reads OUTPUT's manifest (docs/design.md, "Measured
on the fashion catalog"); the product's own render is made again with MODEL and the product's seed
(planning.product_seed(JOB_SEED, id)).
"""

from __future__ import annotations

import json
import statistics as st
import sys

import numpy as np
import pyarrow as pa
from PIL import Image

from catalog_render import manifest, planning
from catalog_render.generators import registry
from catalog_render.generators.base import Conditioning, GenerationParams


def prepare(catalog_uri: str, out: str, n: int = 20) -> None:
    import collections

    import pyarrow.compute as pc

    from catalog_render import catalog, storage

    table = catalog.read_catalog(catalog_uri)
    table = table.filter(pc.is_valid(table.column("image_uri")))
    rows = sorted(table.select(["product_id", "category"]).to_pylist(), key=lambda r: int(r["product_id"]))
    top = [c for c, _ in collections.Counter(r["category"] for r in rows if r["category"]).most_common(n)]
    first = {}
    for r in rows:
        if int(r["product_id"]) >= 2000 and r["category"] in top:
            first.setdefault(r["category"], r["product_id"])
    ids = [first[c] for c in top if c in first]
    chosen = table.filter(pc.is_in(table.column("product_id"), value_set=pa.array(ids, pa.string())))
    storage.write_parquet(chosen, out)
    print(f"wrote {chosen.num_rows} products ({', '.join(top)}) to {out}")


def measure(out: str, model: str, job_seed: int = 1234) -> None:
    rows = [r for r in manifest.read_manifest(out).to_pylist() if r["kind"] == "design"]
    for run in sorted({r["run_id"] for r in rows}):
        mine = [r for r in rows if r["run_id"] == run and r["status"] == "ok"]
        for what, keep in (("variation", lambda r: r["method"] != "design-sheet"), ("sheet", lambda r: r["method"] == "design-sheet")):
            rs = [r for r in mine if keep(r)]
            if rs:
                rend, wr = [r["render_seconds"] for r in rs], [r["write_seconds"] for r in rs]
                print(f"run {run} {what}s: {len(rs)}; render s median {st.median(rend):.3f} mean {st.mean(rend):.3f} max {max(rend):.3f}; "
                      f"write s median {st.median(wr):.3f} mean {st.mean(wr):.3f}")
    gen = registry.load_generator(model)
    diffs: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] != "ok" or r["method"] == "design-sheet":
            continue
        p = json.loads(r["generation_params"])["product"]
        own = gen.generate([Conditioning(title=p["title"], category=p["category"], attributes=p["attributes"])],
                           [planning.product_seed(job_seed, r["product_id"])], GenerationParams())[0]
        d = np.abs(np.asarray(Image.open(r["image_uri"]).convert("RGB"), dtype=np.float64) - np.asarray(own, dtype=np.float64)).mean()
        diffs.setdefault(r["method"].split(" ")[0], []).append(float(d))
    for method, ds in diffs.items():
        print(f"{method}: {len(ds)} images, mean |difference| to the product's own render {st.mean(ds):.2f} (min {min(ds):.2f}, max {max(ds):.2f})")
    _colour_of_sweeps([r for r in rows if r["status"] == "ok" and r["method"].startswith("design-sweep attributes.color=")])


def _colour_of_sweeps(rows: list[dict]) -> None:
    """Per swept colour: how many variations' product region (U²-Net-p >= 0.5) has the swept colour
    by the evaluation's check (quality.checks.colour_match: CIEDE2000 <= 25 to the colour's sRGB)."""
    if not rows:
        return
    from catalog_render.evaluation_fidelity import MASK_LEVEL
    from catalog_render.pretrained.mask import ProductMasker
    from catalog_render.quality import checks

    masker, tally = ProductMasker(threads=1), {}
    for r in rows:
        im = np.asarray(Image.open(r["image_uri"]).convert("RGB"))
        verdict = checks.colour_match(im, r["target_colour"], mask=masker.mask(im) >= MASK_LEVEL)
        hit, n = tally.get(r["target_colour"], (0, 0))
        tally[r["target_colour"]] = (hit + bool(verdict is not None and verdict.match), n + 1)
    print("swept colour, variations whose product region has it (CIEDE2000 <= 25): "
          + ", ".join(f"{c} {h}/{n}" for c, (h, n) in tally.items()))


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) in (3, 4) and args[0] == "prepare":
        prepare(args[1], args[2], int(args[3]) if len(args) > 3 else 20)
    elif len(args) in (3, 4) and args[0] == "measure":
        measure(args[1], args[2], int(args[3]) if len(args) > 3 else 1234)
    else:
        sys.exit(__doc__)
