"""Outputs for the review page's tests and benchmark, written with the project's own manifest writer.

Not a test module. :func:`write_output` lays out an output as a run does (``images/<product>/<key>.png``
written before the manifest rows, parts of ``part_rows`` rows under ``manifest/run=<id>/``), with
real fashion photos reduced to 48x64 px as the "renders", the full photos as references, and
chosen scores and quality statuses, so tests know every value independently. Local paths or
``s3://`` (through :mod:`catalog_render.storage`).
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from catalog_render import imaging, manifest, storage

RUN_ID = "20260101T000000Z-review"


def fashion_rows(fashion: Path, n: int) -> list[dict]:
    """The first ``n`` rows of the fashion catalog's metadata.csv that have a photo."""
    with open(fashion / "metadata.csv", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("image_file")]
    return rows[:n]


def render_png(photo: Path) -> bytes:
    """A render-sized (48x64) PNG of a real photo."""
    return imaging.encode(Image.open(photo).convert("RGB").resize((48, 64), Image.Resampling.LANCZOS))


def write_output(out: str, fashion: Path, meta: list[dict], *, run_id: str = RUN_ID, part_rows: int = 64, kinds: list[str] | None = None,
                 link=None, cycle: int | None = None, rows: int | None = None) -> list[dict]:
    """Write an output of ``rows`` renders (default: one per ``meta`` row; with ``cycle``, meta rows
    are reused and product ids are ``P000000``...) and return its manifest rows.

    Row ``i``: render_key ``f"{i:016x}" + "0" * 48``; sharpness ``(i * 7919 % 1000) / 1e4``;
    background_whiteness ``(i % 100) / 100``; quality_status ``failed-quality`` (failing
    ``min_sharpness``) when ``i % 4 == 0``, else ``passed``; ``kind`` from ``kinds`` (cycled) when
    given (the column is left out otherwise). ``link(src_path, dest_path)``: make image files by
    linking one PNG (local outputs only; the benchmark's 50,000 renders)."""
    n = rows if rows is not None else len(meta)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    one = None
    out_rows, part, seq = [], [], 0
    for i in range(n):
        m = meta[i % len(meta)]
        pid = f"P{i:06d}" if cycle else m["id"]
        key = f"{i:016x}" + "0" * 48
        uri = manifest.image_uri_for(out, pid, key, "png")
        photo = fashion / m["image_file"]
        if link is not None:
            if one is None:
                one = Path(out) / "_render.png"
                one.parent.mkdir(parents=True, exist_ok=True)
                one.write_bytes(render_png(photo))
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            link(one, uri)
        else:
            storage.write_bytes(uri, render_png(photo))
        failed = i % 4 == 0
        row = {"run_id": run_id, "product_id": pid, "render_key": key, "status": "ok", "image_uri": uri, "reference_uri": str(photo),
               "conditioning": json.dumps({"title": m["productDisplayName"], "category": m["articleType"],
                                           "attributes": {"color": m["baseColour"], "gender": m["gender"]}}),
               "seed": i, "model_id": "synthetic", "family": "gan", "width": 48, "height": 64,
               "sharpness": (i * 7919 % 1000) / 1e4, "background_whiteness": (i % 100) / 100, "fill_ratio": 0.8,
               "quality_status": "failed-quality" if failed else "passed", "quality_failed": json.dumps(["min_sharpness"] if failed else []),
               "finished_at": t0 + timedelta(milliseconds=i)}
        out_rows.append(row)
        part.append(row)
        if len(part) == part_rows:
            _write(out, run_id, seq, part, kinds, i + 1 - len(part))
            part, seq = [], seq + 1
    if part:
        _write(out, run_id, seq, part, kinds, n - len(part))
    return out_rows


def _write(out: str, run_id: str, seq: int, rows: list[dict], kinds: list[str] | None, start: int) -> None:
    table = manifest.to_table([dict(r) for r in rows])
    if kinds:
        import pyarrow as pa

        values = pa.array([kinds[(start + j) % len(kinds)] for j in range(len(rows))], pa.string())
        if "kind" in table.column_names:  # the manifest schema's own column (render kinds)
            table = table.set_column(table.column_names.index("kind"), "kind", values)
        else:
            table = table.append_column("kind", values)
        storage.write_parquet(table, storage.join(manifest.manifest_prefix(out), f"run={run_id}", f"part-{seq:05d}.parquet"))
    else:
        manifest.write_part(out, run_id, seq, table)


class LiveServer:
    """``catalog_render.review.server.make_server`` run in a thread on ``host`` (127.0.0.1) and a free port
    (a context manager): ``url``, ``port``, ``app``; stopped (and its pending current-view rewrite
    flushed by the app's shutdown) on exit."""

    def __init__(self, output: str, reviewer: str = "carol", host: str = "127.0.0.1", **kw):
        import threading
        import time

        from catalog_render.review.server import make_server

        self.server = make_server(output, host=host, port=0, reviewer=reviewer, **kw)
        self.port = self.server.config.port
        self.url = f"http://{host}:{self.port}"
        self.app = self.server.config.app
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("review server did not start")
            time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(60)
