"""Credentials never leak: a planted secret access key, session token and Ray auth token are
searched for in everything a run leaves behind — the CLI's stdout/stderr (a successful run, a
failing one and `report`), every object under the output (manifest parts, run records, report,
images), and every file of the run's Ray session (worker, raylet and GCS logs). Task and actor
names, which a Ray dashboard shows, are fixed class names (``MapWorker(MapBatches(RenderWorker))``);
credentials reach workers only through their inherited environment, never as task arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3

from conftest import upload_tree

CR = str(Path(sys.executable).parent / "catalog-render")
SECRET = "PLANTEDsecretKEY-4f1c9e2a7b"
TOKEN = "PLANTEDsessionTOKEN-88d0c3"


def _leaks(data: bytes) -> list[str]:
    return [s for s in (SECRET, TOKEN) if s.encode() in data]


def test_planted_secrets_appear_in_no_output(small_catalog, tiny_gan, bucket, s3_server, tmp_path):
    cat_uri = f"s3://{bucket}/catalog.parquet"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.put_object(Bucket=bucket, Key="catalog.parquet", Body=small_catalog.read_bytes())
    model_uri = upload_tree(tiny_gan, f"s3://{bucket}/model")
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's unix sockets live under it
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN, "RAY_TMPDIR": ray_tmp}
    out = f"s3://{bucket}/renders"
    try:
        outputs = []
        ok = subprocess.run([CR, "run", "--catalog", cat_uri, "--model", model_uri, "--output", out, "--hide-images", "--limit", "12",
                             "--workers", "2", "--batch-size", "4"], env=env, capture_output=True, timeout=600)
        assert ok.returncode == 0, ok.stderr[-2000:]
        outputs += [ok.stdout, ok.stderr]
        # failures: a missing catalog, a bucket that does not exist, the report command
        for args in (["run", "--catalog", f"s3://{bucket}/nope.parquet", "--model", model_uri, "--output", out],
                     ["run", "--catalog", cat_uri, "--model", model_uri, "--output", "s3://no-such-bucket-x/out"],
                     ["report", out]):
            r = subprocess.run([CR, *args], env=env, capture_output=True, timeout=600)
            outputs += [r.stdout, r.stderr]
        for i, data in enumerate(outputs):
            assert not _leaks(data), f"secret in CLI output #{i}"

        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="renders/") for o in page.get("Contents", [])]
        assert any(k.endswith(".parquet") for k in keys) and any(k.endswith(".json") for k in keys) and "renders/report.html" in keys
        for k in keys:
            assert not _leaks(s3.get_object(Bucket=bucket, Key=k)["Body"].read()), k

        session_files = [p for p in Path(ray_tmp).rglob("*") if p.is_file() and not p.is_socket()]
        assert any("worker" in p.name for p in session_files), "the run's Ray session logs were not found"
        for p in session_files:
            try:
                data = p.read_bytes()
            except OSError:
                continue
            assert not _leaks(data), f"secret in Ray session file {p}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
