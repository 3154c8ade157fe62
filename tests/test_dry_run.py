"""``run --dry-run`` and the manifest index, on a real output left by a real run (local Ray)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from catalog_render import manifest, manifest_index, plan_run
from catalog_render.config import JobSpec
from catalog_render.execution import dry_run, run_job

SPEC = JobSpec().with_overrides(**{"execution.workers": 2, "execution.batch_size": 4, "mode": "refresh"})  # keys as the CLI's default job


def _files(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


def _cli_dry_run(*args: str) -> tuple[int, str, bool]:
    """The CLI in a fresh interpreter: exit code, stdout, and whether ray was ever imported."""
    code = ("import sys; from catalog_render.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code or 0\n"
            "print('RAY_IMPORTED=%s' % ('ray' in sys.modules)); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "run", "--dry-run", *args], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "COLUMNS": "200"})
    return p.returncode, p.stdout + p.stderr, "RAY_IMPORTED=True" in p.stdout


def test_dry_run_plans_like_the_run_and_writes_nothing(ray_local, small_catalog, tiny_gan, tmp_path):
    out = tmp_path / "out"
    # A fresh output: nothing exists, nothing is created (no lease, no run record, no folder).
    rc, text, ray_imported = _cli_dry_run("--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(out), "--mode", "refresh")
    assert rc == 0 and not ray_imported and not out.exists(), text
    assert "dry run (refresh): 60 to render, 0 of 60 in scope up to date" in text
    assert "       60  render_key not in manifest  e.g. '1563', " in text
    rc, text, _ = _cli_dry_run("--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(out), "--json", "--hide-images", "--limit", "2")
    assert rc == 0 and not out.exists()
    assert json.loads(text.splitlines()[0]) == {"mode": "backfill", "catalog_rows": 60, "in_scope": 2, "up_to_date": 0, "approved_kept": 0, "to_render": 2,
                                                "quarantined": 0, "plan_reasons": {"photo hidden (--hide-images)": {"count": 2, "sample": ["1563", "1580"]}},
                                                "quarantine_reasons": {}}

    first = run_job(SPEC, str(small_catalog), str(tiny_gan), str(out), limit=4)
    assert first.counts["ok"] == 4
    idx_uri = Path(manifest_index.index_uri(str(out)))
    assert idx_uri.exists()
    assert json.loads(pq.read_schema(idx_uri).metadata[b"covered_runs"]) == [first.run_id]
    done = manifest.read_manifest(str(out)).filter(manifest.pc.equal(manifest.read_manifest(str(out)).column("status"), "ok"))
    gone = Path(done.column("image_uri")[0].as_py())
    gone.unlink()  # one image vanished from the store
    before = _files(out)

    s = plan_run.summary(dry_run(SPEC, str(small_catalog), str(tiny_gan), str(out)))
    assert _files(out) == before
    assert (s["to_render"], s["up_to_date"], s["in_scope"]) == (57, 3, 60)
    assert s["plan_reasons"]["render_key in manifest but its image is missing"] == {"count": 1, "sample": [done.column("product_id")[0].as_py()]}
    assert s["plan_reasons"]["render_key not in manifest"]["count"] == 56

    # The run plans the same: it renders the dry run's first work items, in its order.
    plan = dry_run(SPEC, str(small_catalog), str(tiny_gan), str(out))
    second = run_job(SPEC, str(small_catalog), str(tiny_gan), str(out), limit=3)
    rendered = manifest.read_manifest(str(out)).filter(manifest.pc.equal(manifest.read_manifest(str(out)).column("run_id"), second.run_id))
    assert sorted(rendered.column("render_key").to_pylist()) == sorted(plan.work.column("render_key").to_pylist()[:3])
    assert plan_run.summary(dry_run(SPEC, str(small_catalog), str(tiny_gan), str(out)))["to_render"] == 54


def test_index_reads_only_the_parts_it_does_not_cover(ray_local, small_catalog, tiny_gan, tmp_path):
    """After a run, the index covers its parts: they are never read again (here: overwritten with
    garbage, which read_manifest would refuse), while a later run's parts are read until compacted."""
    out = tmp_path / "out"
    first = run_job(SPEC, str(small_catalog), str(tiny_gan), str(out), limit=6)
    keys = set(manifest.ok_render_keys(manifest.read_manifest(str(out))))
    assert len(keys) == 6
    for part in first.parts:
        Path(part).write_bytes(b"not parquet")
    idx = manifest_index.read_index(str(out))
    assert idx.covered_runs == {first.run_id}
    assert set(idx.done([]).known.to_pylist()) == keys and len(idx.done([]).current) == 0
    images = [str(p) for p in (out / "images").rglob("*.png")]
    assert set(idx.done(images).current.to_pylist()) == keys
    # A part of a run the index does not cover yet (written as the manifest writes parts) is read.
    late = str(out / "images" / "p" / ("f" * 64 + ".png"))
    manifest.write_part(str(out), "20990101T000000Z-abcdef", 0,
                        [{"run_id": "x", "product_id": "p", "render_key": "f" * 64, "status": "ok", "image_uri": late}])
    idx = manifest_index.read_index(str(out))
    assert "f" * 64 in idx.done([]).known.to_pylist() and "20990101T000000Z-abcdef" in idx.covered_runs
    assert idx.done([late]).current.to_pylist() == ["f" * 64]
    manifest_index.compact(str(out))
    assert set(json.loads(pq.read_schema(manifest_index.index_uri(str(out))).metadata[b"covered_runs"])) == {first.run_id, "20990101T000000Z-abcdef"}
