"""Planning at catalog scale: CPU seconds and peak memory to plan a refresh of N synthetic products.

    python benchmarks/plan_scale.py --sizes 10000 100000 1000000 [--stream-above 2000000] [--legacy-up-to 100000]

For each size, two cases, each in a fresh Python process (so its peak RSS is its own):

* ``everything``: an output with no history; every product is planned (work items built).
* ``nothing``: an output whose manifest index holds an ok render_key for every product and whose
  image listing names every image: nothing to do.

Each case times what ``run`` does before rendering: read the catalog (``catalog.read_catalog``,
or streamed row group by row group above ``--stream-above`` rows), read the manifest index
(``manifest_index.read_index``: one compacted Parquet object), match it against the listing of
``OUTPUT/images/`` (given here as the list of URIs a listing returns; listing a real store is not
included: see docs/scale.md), and plan (``planning.plan`` / ``Planner``). Setup (writing the
catalog, the index) is not timed. ``--legacy-up-to`` also times the row-loop planner
(tests/legacy_planning.py) up to that size, on the same catalog. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

MODEL_ID = "0123456789abcdef"
PARAMS = {"width": 64, "height": 64}
TEMPLATE = "a photo of {title}, {category}, {attributes.color}"


def _kw() -> dict:
    return {"mode": "refresh", "model_id": MODEL_ID, "params_used": PARAMS, "job_seed": 0, "prompt_template": TEMPLATE}


def setup(root: Path, n: int) -> None:
    """Write the catalog and, for the ``nothing`` case, an output whose index covers every product."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from catalog_render import done_index, manifest_index, plan_columns, planning
    from synth_catalog import write_catalog

    write_catalog(str(root / "catalog.parquet"), n)
    keys, uris = [], []
    out = root / "out"
    f = pq.ParquetFile(root / "catalog.parquet")
    p = planning.Planner(**_kw(), done_keys=done_index.DoneIndex([], []))
    for i in range(f.num_row_groups):  # the keys every product gets
        w = p.add(f.read_row_group(i))
        keys.append(w.column("render_key"))
        uris.append(plan_columns.concat(f"{out}/images/", w.column("product_id"), "/", w.column("render_key"), ".png"))
    keys = pa.chunked_array(keys).combine_chunks()
    table = pa.table({"kind": pa.array(["ok"] * len(keys), pa.string()), "key": keys, "ext": pa.array(["png"] * len(keys), pa.string())},
                     schema=manifest_index.INDEX_SCHEMA).replace_schema_metadata({"covered_runs": json.dumps(["bench"])})
    (out / "index").mkdir(parents=True)
    pq.write_table(table, out / "index" / "manifest.parquet")
    pq.write_table(pa.table({"uri": pa.chunked_array(uris)}), root / "listing.parquet")


def measure(root: Path, case: str, stream: bool, legacy: bool) -> dict:
    """One timed case in this process: CPU seconds (process_time), wall, peak RSS."""
    import resource

    import pyarrow.parquet as pq

    from catalog_render import catalog, done_index, manifest_index, planning

    t0, w0 = time.process_time(), time.perf_counter()
    if case == "nothing":
        done = manifest_index.read_index(str(root / "out")).done(pq.read_table(root / "listing.parquet").column("uri").combine_chunks())
    else:
        done = done_index.DoneIndex([], [])
    t_index = time.process_time() - t0
    if stream:
        f = pq.ParquetFile(root / "catalog.parquet")
        dups = planning.duplicate_ids(pq.read_table(root / "catalog.parquet", columns=["product_id"]).column("product_id"))
        planner = planning.Planner(**_kw(), done_keys=done, duplicates=dups)
        planned = 0
        for i in range(f.num_row_groups):
            planned += planner.add(catalog.conform(f.read_row_group(i))).num_rows  # work items would stream on to the renderers
        up_to_date = planner.up_to_date
    else:
        table = catalog.read_catalog(str(root / "catalog.parquet"))
        if legacy:
            from legacy_planning import legacy_plan

            kw = {**_kw(), "done_keys": {k: u for k, u in zip(done.known.to_pylist(), done.known.to_pylist())},
                  "existing_images": set(done.current.to_pylist())}
            p = legacy_plan(table, **kw)
        else:
            p = planning.plan(table, **_kw(), done_keys=done)
        planned, up_to_date = p.work.num_rows, p.up_to_date
    return {"cpu_s": round(time.process_time() - t0, 2), "index_cpu_s": round(t_index, 2), "wall_s": round(time.perf_counter() - w0, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "planned": planned, "up_to_date": up_to_date}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--stream-above", type=int, default=2_000_000, help="stream the catalog's row groups above this many rows")
    ap.add_argument("--legacy-up-to", type=int, default=0, help="also time the row-loop planner up to this size")
    ap.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--_setup", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._setup:
        setup(Path(args._setup[0]), int(args._setup[1]))
        return
    if args._child:
        root, case, stream, legacy = args._child
        print(json.dumps(measure(Path(root), case, stream == "1", legacy == "1")))
        return
    print("| products | case | planner | CPU s (all) | of which index | wall s | peak RSS MB | planned | up to date |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="plan-scale-") as tmp:
            root = Path(tmp)
            # Setup in its own process too: Linux keeps ru_maxrss across fork+exec, so a big parent would inflate the children's peaks.
            subprocess.run([sys.executable, __file__, "--_setup", str(root), str(n)], check=True)
            for case in ("everything", "nothing"):
                for legacy in ([False, True] if n <= args.legacy_up_to else [False]):
                    stream = n > args.stream_above and not legacy
                    cmd = [sys.executable, __file__, "--_child", str(root), case, "1" if stream else "0", "1" if legacy else "0"]
                    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout)
                    who = "row loop (before)" if legacy else ("columnar, streamed" if stream else "columnar")
                    print(f"| {n:,} | {case} | {who} | {r['cpu_s']} | {r['index_cpu_s']} | {r['wall_s']} | {r['peak_rss_mb']:,} | {r['planned']:,} | {r['up_to_date']:,} |",
                          flush=True)


if __name__ == "__main__":
    main()
