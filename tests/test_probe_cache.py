"""The photo probe cache: a second backfill downloads and decodes no photo that did not change
(real fashion photos, on local disk and on a moto S3 server on loopback behind a request-logging
proxy)."""

import shutil

import boto3
import pyarrow as pa
from faultproxy import FaultProxy

from catalog_render import catalog, photos, planning, storage

KW = {"mode": "backfill", "model_id": "m", "params_used": {}, "job_seed": 1, "prompt_template": "{title}", "done_keys": {},
      "existing_images": set()}


class Counting:
    """The real probe, counting the photos it is asked to read."""

    def __init__(self):
        self.uris: list[str] = []

    def __call__(self, uri):
        self.uris.append(uri)
        return photos.probe_image(uri)


def _catalog(uris: list[str]) -> pa.Table:
    n = len(uris)
    return catalog.conform(pa.table({"product_id": [f"p{i}" for i in range(n)], "title": [f"T {i}" for i in range(n)],
                                     "category": ["Shirts"] * n, "image_uri": uris}))


def _backfill(table, out: str) -> tuple[planning.Plan, photos.ProbeCache, Counting]:
    counting = Counting()
    cache = photos.ProbeCache.load(out, probe=counting)
    cache.prefetch(table.column("image_uri").drop_null().to_pylist())
    plan = planning.plan(table, probe=cache, **KW)
    cache.save(out)
    return plan, cache, counting


def test_local_second_backfill_probes_only_what_changed(fashion, tmp_path):
    src = sorted((fashion / "images").glob("*.jpg"))[:25]
    photo_dir = tmp_path / "photos"
    photo_dir.mkdir()
    for p in src:
        shutil.copy(p, photo_dir / p.name)
    (photo_dir / "broken.jpg").write_bytes(src[0].read_bytes()[:500])  # truncated JPEG
    uris = [str(photo_dir / p.name) for p in src] + [str(photo_dir / "broken.jpg"), str(photo_dir / "never-there.jpg"), None]
    table, out = _catalog(uris), str(tmp_path / "out")

    first, cache, counting = _backfill(table, out)
    assert cache.probed == 26 and cache.reused == 0 and len(counting.uris) == 26  # the missing file is not downloaded
    assert [r["product_id"] for r in first.work.to_pylist()] == ["p25", "p26", "p27"]

    second, cache, counting = _backfill(table, out)
    assert counting.uris == [] and (cache.probed, cache.reused) == (0, 26)
    assert second.work.to_pylist() == first.work.to_pylist()

    # One photo replaced by another (different size), one repaired: exactly those two are read again.
    shutil.copy(src[1], photo_dir / src[0].name)
    shutil.copy(src[2], photo_dir / "broken.jpg")
    third, cache, counting = _backfill(table, out)
    assert sorted(counting.uris) == sorted([str(photo_dir / src[0].name), str(photo_dir / "broken.jpg")])
    assert [r["product_id"] for r in third.work.to_pylist()] == ["p26", "p27"]


def test_s3_second_backfill_gets_no_photo(fashion, s3_server, bucket, monkeypatch, tmp_path):
    src = sorted((fashion / "images").glob("*.jpg"))[:24]
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for p in src:
        s3.put_object(Bucket=bucket, Key=f"photos/{p.name}", Body=p.read_bytes())
    s3.put_object(Bucket=bucket, Key="photos/empty.jpg", Body=b"")
    uris = [f"s3://{bucket}/photos/{p.name}" for p in src] + [f"s3://{bucket}/photos/empty.jpg"]
    table, out = _catalog(uris), f"s3://{bucket}/out"
    with FaultProxy(s3_server) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        storage._clients.clear()

        def photo_gets():
            return sum(1 for method, path, *_ in proxy.log if method == "GET" and "/photos/" in path and "list-type" not in path)

        first, cache, _ = _backfill(table, out)
        assert photo_gets() == 25 and cache.probed == 25
        assert [r["plan_reason"] for r in first.work.to_pylist()] == ["image undecodable: empty file (0 bytes)"]
        before = len(proxy.log)
        second, cache, _ = _backfill(table, out)
        assert photo_gets() == 25 and (cache.probed, cache.reused) == (0, 25)  # no new GET of a photo
        assert sum(1 for m, p, *_ in proxy.log[before:] if m == "HEAD") == 0  # sizes and ETags came from one listing
        assert second.work.to_pylist() == first.work.to_pylist()
        s3.put_object(Bucket=bucket, Key="photos/empty.jpg", Body=src[0].read_bytes())  # the empty photo is fixed
        third, cache, _ = _backfill(table, out)
        assert photo_gets() == 26 and cache.probed == 1 and third.work.num_rows == 0
    storage._clients.clear()
