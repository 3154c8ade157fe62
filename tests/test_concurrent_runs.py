"""Two `run` commands on one output at once (local disk and S3): the second refuses (exit 8)
naming the first, or waits with --wait-lease; the lease of a SIGKILLed run is taken over and its
run record marked abandoned; nothing is rendered twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog_render import lease, manifest, storage
from conftest import upload_tree

CR = str(Path(sys.executable).parent / "catalog-render")


def _wait_for_lease(output: str, proc: subprocess.Popen, timeout: float = 120) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rec = lease.read_lease(output)
        if rec:
            return rec
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.1)
    pytest.fail("the first run never took the lease")


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_second_run_refuses_then_waits_and_nothing_is_rendered_twice(where, small_catalog, tiny_gan, tmp_path, request):
    if where == "s3":
        bucket = request.getfixturevalue("bucket")
        cat = f"s3://{bucket}/c.parquet"
        storage.write_bytes(cat, small_catalog.read_bytes())
        model = upload_tree(tiny_gan, f"s3://{bucket}/m")
        out = f"s3://{bucket}/out"
    else:
        cat, model, out = str(small_catalog), str(tiny_gan), str(tmp_path / "out")
    args = ["run", "--catalog", cat, "--model", model, "--output", out, "--hide-images", "--no-report", "--workers", "1", "--batch-size", "2"]
    first = subprocess.Popen([CR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = _wait_for_lease(out, first)
    second = subprocess.run([CR, *args], capture_output=True, text=True, timeout=300)
    assert second.returncode == 8, second.stderr[-2000:]
    err = second.stderr.strip()
    assert err.startswith("error: output") and "in use by run " + held["owner"]["run_id"] in err and f"pid {first.pid}" in err, err
    third = subprocess.run([CR, *args, "--wait-lease", "600"], capture_output=True, text=True, timeout=900)
    assert first.wait(timeout=600) == 0
    assert third.returncode == 0, third.stderr[-2000:]
    assert "nothing to render" in third.stdout + third.stderr
    rows = manifest.read_manifest(out).to_pylist()
    assert len(rows) == 60 and len({r["product_id"] for r in rows}) == 60 and {r["status"] for r in rows} == {"ok"}
    assert lease.read_lease(out) is None  # released


def test_lease_of_a_killed_run_is_taken_over_and_its_record_marked(small_catalog, tiny_gan, tmp_path):
    out = str(tmp_path / "out")
    args = ["run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", out, "--hide-images", "--no-report",
            "--workers", "1", "--batch-size", "2"]
    first = subprocess.Popen([CR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = _wait_for_lease(out, first)
    record = os.path.join(out, "runs", f"{held['owner']['run_id']}.json")
    while not os.path.exists(record):  # the lease is taken before planning; the record after it
        assert first.poll() is None
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    # Same host, holder gone: taken over at once, long before the 120 s ttl.
    t0 = time.monotonic()
    again = subprocess.run([CR, *args], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert time.monotonic() - t0 < 110
    killed = json.loads(storage.read_bytes(record))
    assert killed["status"] == "abandoned"
    rows = manifest.read_manifest(out).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(r["product_id"] for r in ok) == sorted({r["product_id"] for r in ok}) and len(ok) == 60


def test_run_refuses_a_store_that_ignores_conditional_writes_unless_no_lease(ray_local, small_catalog, tiny_gan, bucket, s3_server,
                                                                                monkeypatch):
    """The output's store, reached through a real proxy that drops If-None-Match / If-Match: `run`
    exits 5 naming the problem and --no-lease before anything is written; with --no-lease it runs
    (the run record says it held no lease)."""
    from typer.testing import CliRunner

    from catalog_render.cli import app
    from catalog_render.config import JobSpec
    from catalog_render.execution import run_job
    from faultproxy import FaultProxy

    cat = f"s3://{bucket}/c.parquet"
    storage.write_bytes(cat, small_catalog.read_bytes())
    out = f"s3://{bucket}/out"
    with FaultProxy(s3_server, strip_headers=("If-None-Match", "If-Match")) as ignoring:
        monkeypatch.setenv("AWS_ENDPOINT_URL", ignoring.endpoint)
        storage._clients.clear()
        try:
            r = CliRunner().invoke(app, ["run", "--catalog", cat, "--model", str(tiny_gan), "--output", out, "--no-report", "--limit", "3"])
            assert r.exit_code == 5, (r.exit_code, r.stderr)
            assert r.stderr.startswith(f"error: the S3 store at {ignoring.endpoint} (output {out})") and "does not honour conditional writes" in r.stderr and "--no-lease" in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1
            assert storage.list_uris(out) == []  # nothing written
            spec = JobSpec().with_overrides(**{"execution.workers": 2, "execution.batch_size": 2, "mode": "refresh"})
            s = run_job(spec, cat, str(tiny_gan), out, limit=3, lease=False)
        finally:
            monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
            storage._clients.clear()
    assert s.counts["ok"] == 3
    assert json.loads(storage.read_bytes(s.record_uri))["lease"] is False
    assert lease.read_lease(out) is None and not storage.exists(f"{out}/{lease.PROBE_NAME}")
