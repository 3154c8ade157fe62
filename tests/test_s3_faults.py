"""S3 faults injected by a real proxy (tests/faultproxy.py) in front of a real S3 server (moto over
HTTP on 127.0.0.1): 503 SlowDown, 500 InternalError and TCP resets at a 30 % rate, and outages.
Storage rides them out with botocore's retries; a real `catalog-render run` completes through them,
fails with one clear line when S3 stays down, and resumes exactly where it stopped."""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import upload_tree
from faultproxy import FaultProxy

from catalog_render import catalog, imaging, storage
from catalog_render.errors import StorageError

CR = str(Path(sys.executable).parent / "catalog-render")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def direct(s3_server):
    """A plain boto3 client straight to moto (no proxy, no retries): the independent check."""
    return boto3.client("s3", endpoint_url=s3_server)


@pytest.fixture
def via_proxy(s3_server, monkeypatch):
    """Point catalog_render.storage at a fault proxy in front of moto; yields the proxy."""

    def make(**kwargs) -> FaultProxy:
        proxy = FaultProxy(s3_server, **kwargs).start()
        proxies.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        storage._clients.clear()  # the next client is made with the proxy's endpoint
        return proxy

    proxies: list[FaultProxy] = []
    yield make
    storage._clients.clear()
    for p in proxies:
        p.stop()


def test_storage_rides_out_30_percent_faults(via_proxy, direct, bucket):
    proxy = via_proxy(fault_rate=0.3, seed=3)
    rng = random.Random(5)
    objects = {f"s3://{bucket}/objs/{i:03d}.bin": rng.randbytes(rng.randint(1, 64_000)) for i in range(200)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: storage.write_bytes(*kv), objects.items()))
        back = dict(zip(objects, pool.map(storage.read_bytes, objects)))
    assert back == objects
    assert storage.list_uris(f"s3://{bucket}/objs") == sorted(objects)
    # the bytes S3 holds, read without the proxy
    for uri, data in objects.items():
        assert direct.get_object(Bucket=bucket, Key=uri.split("/", 3)[3])["Body"].read() == data
    table = pa.table({"id": np.arange(20_000), "x": np.random.default_rng(0).normal(size=20_000), "s": [f"p{i}" for i in range(20_000)]})
    storage.write_parquet(table, f"s3://{bucket}/t.parquet")
    assert storage.read_parquet(f"s3://{bucket}/t.parquet").equals(table)
    assert pq.read_table(io.BytesIO(direct.get_object(Bucket=bucket, Key="t.parquet")["Body"].read())).equals(table)
    c = proxy.counts
    assert c["forwarded"] >= 400 and min(c["slowdown"], c["internal"], c["reset"]) >= 20, c
    assert 0.22 < proxy.injected() / (proxy.injected() + c["forwarded"]) < 0.38, c


def test_retries_are_not_cut_short_by_a_retry_quota(via_proxy, bucket, monkeypatch):
    """botocore's default standard-mode retry quota (500 tokens, 14 per retried 500) would stop
    retrying after about 18 such requests; storage's client retries every request its full attempts."""
    monkeypatch.setenv("CATALOG_RENDER_S3_MAX_ATTEMPTS", "3")
    proxy = via_proxy(fault_rate=1.0, kinds=("internal",))
    for i in range(40):
        with pytest.raises(StorageError) as info:
            storage.read_bytes(f"s3://{bucket}/k{i}")
        assert str(info.value) == (f"S3 error InternalError (HTTP 500) on s3://{bucket}/k{i} from the S3 endpoint "
                                   f"{proxy.endpoint}, after 3 attempt(s)")
    assert proxy.counts["internal"] == 120 and proxy.counts["forwarded"] == 0


def test_outage_messages_name_the_endpoint(via_proxy, bucket, monkeypatch):
    monkeypatch.setenv("CATALOG_RENDER_S3_MAX_ATTEMPTS", "2")
    proxy = via_proxy()
    storage.write_bytes(f"s3://{bucket}/k", b"v")
    proxy.set_down("reset")
    with pytest.raises(StorageError, match=rf"^connection to the S3 endpoint {proxy.endpoint} failed for s3://{bucket}/k: "
                                           r"ConnectionClosedError, after 2 attempt\(s\)$"):
        storage.read_bytes(f"s3://{bucket}/k")
    proxy.set_down("refuse")
    with pytest.raises(StorageError, match=rf"^cannot reach the S3 endpoint for s3://{bucket}/k \({proxy.endpoint}/{bucket}/k\)$"):
        storage.read_bytes(f"s3://{bucket}/k")
    proxy.set_down(None)
    assert storage.read_bytes(f"s3://{bucket}/k") == b"v"
    assert proxy.counts["down"] == 2  # the 2 reset attempts; refused connections never reach a handler


def test_proxy_forwards_chunked_uploads_byte_for_byte(s3_server, direct, bucket):
    """boto3 1.44 sends Content-Length for put_object (checksums in headers); a chunked body with a
    trailer, as aws-chunked streaming uploads send, must pass the proxy unchanged too."""
    parts = [b"a" * 1000, bytes(range(256)) * 300, b"z"]
    with FaultProxy(s3_server) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        conn.request("PUT", f"/{bucket}/chunked.bin", body=iter(parts), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
    assert resp.status == 200
    assert direct.get_object(Bucket=bucket, Key="chunked.bin")["Body"].read() == b"".join(parts)


def _run(args: list[str], endpoint: str, extra_env: dict | None = None, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "PYTHONPATH": str(REPO), **(extra_env or {})}
    t0 = time.monotonic()
    p = subprocess.run([CR, "run", *args], check=False, env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def _manifest_rows(direct, bucket: str, prefix: str) -> list[dict]:
    rows = []
    for obj in direct.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/manifest/").get("Contents", []):
        body = direct.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        rows += pq.read_table(io.BytesIO(body)).to_pylist()
    return rows


def _object_exists(direct, uri: str) -> bool:
    bucket, key = uri[len("s3://"):].split("/", 1)
    return direct.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 1


def test_run_on_s3_through_30_percent_faults(via_proxy, direct, bucket, small_catalog, tiny_gan):
    cat_uri = f"s3://{bucket}/catalogs/fashion.parquet"
    storage.write_bytes(cat_uri, small_catalog.read_bytes())
    model_uri = upload_tree(tiny_gan, f"s3://{bucket}/models/tiny-gan")
    proxy = via_proxy(fault_rate=0.3, seed=11)
    p, wall = _run(["--catalog", cat_uri, "--model", model_uri, "--output", f"s3://{bucket}/renders", "--hide-images",
                    "--limit", "12", "--workers", "2", "--batch-size", "4"], proxy.endpoint)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _manifest_rows(direct, bucket, "renders")
    expected = catalog.read_catalog(str(small_catalog)).column("product_id").to_pylist()[:12]
    assert sorted(r["product_id"] for r in rows) == sorted(expected)
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    for r in rows:  # no row points at a missing object; the images are what the run scored
        body = direct.get_object(Bucket=bucket, Key=r["image_uri"].split("/", 3)[3])["Body"].read()
        assert imaging.decode_rgb(body).size == (32, 32)
    assert _object_exists(direct, f"s3://{bucket}/renders/report.html")
    record = json.loads(direct.get_object(Bucket=bucket, Key=f"renders/runs/{rows[0]['run_id']}.json")["Body"].read())
    assert record["status"] == "finished" and record["counts"]["ok"] == 12
    c = proxy.counts
    assert min(c["slowdown"], c["internal"], c["reset"]) >= 3, c  # faults really hit the run
    # the Ray actors (which write the images) went through the proxy too: they inherit the driver's env
    image_puts = {path for m, path, k, st in proxy.log if m == "PUT" and "/renders/images/" in path and k == "forwarded"}
    assert len(image_puts) == 12, image_puts
    print(f"run through faults: {wall:.1f}s, {dict(c)}")


@pytest.mark.slow  # about a minute: two real runs and an outage
def test_s3_down_mid_run_fails_clearly_then_resumes(via_proxy, direct, bucket, small_catalog, tiny_gan, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text("[execution]\nworkers = 2\nbatch_size = 2\nmanifest_flush_rows = 4\n")
    out = f"s3://{bucket}/renders"
    args = ["--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", out, "--job", str(job), "--hide-images", "--no-report"]
    env = {"CATALOG_RENDER_S3_MAX_ATTEMPTS": "3", "CATALOG_RENDER_S3_CONNECT_TIMEOUT": "1"}
    proxy = via_proxy()
    # S3 goes down (connections refused) right after the run's second manifest part reached it
    proxy.trip_after(2, "refuse", lambda method, path: method == "PUT" and "/manifest/run" in path)
    p, wall = _run(args, proxy.endpoint, env)
    after_outage = time.monotonic() - proxy.down_since
    assert p.returncode == 5, (p.returncode, p.stderr[-3000:])
    # stderr also holds the progress bar (and a Ray core warning); the error is one last line
    err = p.stderr.strip().splitlines()[-1]
    assert "Traceback" not in p.stderr and err.startswith("error: ") and p.stderr.count("error: ") == 1, p.stderr[-3000:]
    assert f"cannot reach the S3 endpoint for {out}/" in err and proxy.endpoint in err, err
    assert after_outage < 60, after_outage  # bounded: 3 attempts per request, then the run stops
    first = _manifest_rows(direct, bucket, "renders")
    assert len(first) >= 4 and all(r["status"] == "ok" for r in first)
    assert all(_object_exists(direct, r["image_uri"]) for r in first)
    done = {r["product_id"] for r in first}

    proxy.set_down(None)
    p2, _ = _run(args, proxy.endpoint, env)
    assert p2.returncode == 0, p2.stderr[-3000:]
    rows = _manifest_rows(direct, bucket, "renders")
    second = [r for r in rows if r["run_id"] != first[0]["run_id"]]
    everything = set(catalog.read_catalog(str(small_catalog)).column("product_id").to_pylist())
    assert {r["product_id"] for r in second} == everything - done and len(second) == len(everything - done)
    assert all(r["status"] == "ok" and _object_exists(direct, r["image_uri"]) for r in rows)
    print(f"outage run: exit 5 after {wall:.1f}s ({after_outage:.1f}s after the outage), {len(first)} rows kept; resumed {len(second)}")
