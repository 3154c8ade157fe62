"""Storage over local disk and a real S3 server (moto, HTTP on 127.0.0.1)."""

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from catalog_render import storage


def test_local_atomic_write_leaves_no_temp_files(tmp_path):
    uri = str(tmp_path / "a" / "b.bin")
    storage.write_bytes(uri, b"x" * 1000)
    storage.write_bytes(uri, b"y")
    assert storage.read_bytes(uri) == b"y"
    assert sorted(os.listdir(tmp_path / "a")) == ["b.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(uri).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert storage.exists(uri) and not storage.exists(str(tmp_path / "nope"))
    with pytest.raises(storage.ObjectNotFound, match="not found"):
        storage.read_bytes(str(tmp_path / "nope"))


def test_safe_key_is_injective_and_cannot_escape():
    ids = ["a/b", "a%2Fb", "..", ".", "../../etc", "/abs", "ü", "a b"]
    keys = [storage.safe_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    assert all("/" not in k and k not in (".", "..") for k in keys)
    assert storage.join("s3://b/out", "images", storage.safe_key("../x")) == "s3://b/out/images/..%2Fx"


def test_s3_roundtrip_list_exists_parquet(bucket):
    base = f"s3://{bucket}/p"
    storage.write_bytes(f"{base}/x/1.bin", b"one")
    storage.write_bytes(f"{base}/x/2.bin", b"two")
    storage.write_bytes(f"{base}/y.txt", b"three")
    assert storage.read_bytes(f"{base}/x/2.bin") == b"two"
    assert storage.list_uris(base) == [f"{base}/x/1.bin", f"{base}/x/2.bin", f"{base}/y.txt"]
    assert storage.list_uris(base, suffix=".bin") == [f"{base}/x/1.bin", f"{base}/x/2.bin"]
    assert storage.list_uris(f"s3://{bucket}/nothing") == []
    assert storage.exists(f"{base}/y.txt") and not storage.exists(f"{base}/z")
    t = pa.table({"a": [1, 2]})
    storage.write_parquet(t, f"{base}/t.parquet")
    assert storage.read_parquet(f"{base}/t.parquet").equals(t)
    with pytest.raises(storage.ObjectNotFound):
        storage.read_bytes(f"s3://{bucket}/missing")


def test_unreachable_endpoint_is_one_clear_error(tmp_path):
    # A fresh process so the client picks up the endpoint; port 9 on loopback has no listener.
    code = (
        "from catalog_render import storage\n"
        "try:\n    storage.read_bytes('s3://b/k')\n"
        "except storage.StorageError as e:\n    print('ERR', e)\n"
    )
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "CATALOG_RENDER_S3_MAX_ATTEMPTS": "2", "CATALOG_RENDER_S3_CONNECT_TIMEOUT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ERR cannot reach the S3 endpoint for s3://b/k (http://127.0.0.1:9/b/k)"


def test_long_ids_get_bounded_distinct_keys_that_can_be_written(tmp_path):
    ids = ["y" * 256, "y" * 257, "é" * 200, "日本" * 15, "y" * 200]
    keys = [storage.safe_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    assert [len(k) for k in keys] == [storage.MAX_KEY_SEGMENT + 1] * 4 + [200]
    for k in keys:
        storage.write_bytes(str(tmp_path / k / "x.png"), b"1")  # a file system accepts every key
    assert len(os.listdir(tmp_path)) == len(ids)
