"""Nightly backfills over the whole fashion catalog with the photo probe cache: what each one reads.

    python benchmarks/probe_cache.py [--data ../shared/data/fashion]

Ingests all 44,446 rows of ``styles_full_original.csv`` with the 2,946 photos (copied to a temp
folder, so one can be changed), then plans a backfill three times against one output, as ``run``
plans it (``plan_run.plan_output`` with the output's ``photos.ProbeCache``, saved after each):
night 1 with no cache, night 2 with nothing changed, night 3 after one photo was replaced. Prints
per night the photos downloaded and decoded, the ones answered from the cache, the products to
render, and CPU / wall seconds of planning. Nothing is rendered.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from catalog_render import catalog, photos, plan_run

MAP = ("product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,"
       "attributes.usage=usage,attributes.season=season")


class _Info:
    """The model's side of planning for a prompt-driven model (no vocabulary to check)."""

    conditioning_fields = ()

    @staticmethod
    def conditioning_problem(_):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fashion"))
    args = ap.parse_args()
    data = Path(args.data)
    with tempfile.TemporaryDirectory(prefix="probe-cache-") as tmp:
        images = Path(tmp) / "images"
        shutil.copytree(data / "images", images)
        shutil.copy(data / "styles_full_original.csv", Path(tmp) / "styles.csv")
        table = catalog.ingest(str(Path(tmp) / "styles.csv"), str(images), catalog.parse_mapping(MAP)).table
        with_photo = table.column("image_uri").drop_null()
        print(f"catalog: {table.num_rows:,} rows, {len(with_photo):,} with a photo")
        print("| night | photos read and decoded | answered from the cache | to render | CPU s | wall s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        out = str(Path(tmp) / "out")
        for night, change in ((1, None), (2, None), (3, "replace one photo")):
            if change:
                first = sorted(images.glob("*.jpg"))[0]
                shutil.copy(sorted(images.glob("*.jpg"))[1], first)
            cache = photos.ProbeCache.load(out)
            t0, w0 = time.process_time(), time.perf_counter()
            plan, _ = plan_run.plan_output(table, out, mode="backfill", model_id="m", params_used={}, job_seed=0, prompt_template="{title}",
                                           info=_Info(), probes=cache)
            cpu, wall = time.process_time() - t0, time.perf_counter() - w0
            cache.save(out)
            print(f"| {night}{' (' + change + ')' if change else ''} | {cache.probed:,} | {cache.reused:,} | {plan.work.num_rows:,} | {cpu:.2f} | {wall:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
