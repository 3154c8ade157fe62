"""Crashing workers, for real: the actor process exits abruptly (os._exit, as an OOM kill does)
mid-batch, through the failpoint in execution.py that only the tests set. Each run is a real CLI
process with its own local Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


import pytest

from catalog_render import catalog, manifest, storage
from catalog_render.execution import FAILPOINT_ENV, FAILPOINT_ONCE_ENV

CR = str(Path(sys.executable).parent / "catalog-render")


def _job(tmp_path: Path, retries: int) -> Path:
    job = tmp_path / "job.toml"
    job.write_text(f"[generation]\nseed = 5\n[execution]\nworkers = 2\nbatch_size = 4\nmax_task_retries = {retries}\n", encoding="utf-8")
    return job


def _run(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([CR, "run", *args], env=env, capture_output=True, text=True, timeout=600)


def _worker_pid(worker: str) -> int:
    return int(worker.rsplit(":", 1)[1])


def test_poison_products_are_quarantined_and_the_rest_completes(small_catalog, tiny_gan, tmp_path):
    ids = catalog.read_catalog(str(small_catalog)).column("product_id").to_pylist()
    poison = {ids[6], ids[33]}
    out = tmp_path / "out"
    r = _run(["--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(out), "--job", str(_job(tmp_path, 1)), "--hide-images", "--no-report"],
             {FAILPOINT_ENV: ",".join(sorted(poison))})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = manifest.read_manifest(str(out)).to_pylist()
    by_id = {}
    for row in rows:
        assert row["product_id"] not in by_id, f"two rows for {row['product_id']}"
        by_id[row["product_id"]] = row
    assert set(by_id) == set(ids)
    failed = {p for p, row in by_id.items() if row["status"] == "failed"}
    assert failed == poison
    for p in poison:
        assert "died 2 times" in by_id[p]["error"] and "poison" in by_id[p]["error"], by_id[p]["error"]
        assert by_id[p]["image_uri"] is None
        assert not storage.list_uris(str(out / "images" / storage.safe_key(p)))
    ok = [row for row in rows if row["status"] == "ok"]
    assert len(ok) == len(ids) - 2
    for row in ok:
        assert Path(row["image_uri"]).is_file()
    # Worker processes were replaced: more distinct actor processes than the 2 actors of the pool.
    assert len({_worker_pid(row["worker"]) for row in ok}) > 2
    # Products that shared a batch with a poison one were written before the crash and then reused
    # by the retry, or rendered by the retry: never two image files for one product.
    for p in set(ids) - poison:
        assert len(storage.list_uris(str(out / "images" / storage.safe_key(p)))) == 1


@pytest.mark.slow  # the poison test above also proves replacement and retry; this one the transient case
def test_a_worker_that_dies_once_is_replaced_and_its_batch_retried(small_catalog, tiny_gan, tmp_path):
    ids = catalog.read_catalog(str(small_catalog)).column("product_id").to_pylist()
    crashing = {ids[2], ids[41]}
    once = tmp_path / "once"
    once.mkdir()
    out = tmp_path / "out"
    r = _run(["--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(out), "--job", str(_job(tmp_path, 2)), "--hide-images", "--no-report"],
             {FAILPOINT_ENV: ",".join(sorted(crashing)), FAILPOINT_ONCE_ENV: str(once)})
    assert r.returncode == 0, r.stderr[-3000:]
    # The failpoint fired once per product (its marker exists): two real worker deaths.
    assert sorted(os.listdir(once)) == sorted(storage.safe_key(p) for p in crashing)
    m = manifest.read_manifest(str(out))
    rows = m.to_pylist()
    assert sorted(row["product_id"] for row in rows) == sorted(ids)
    assert all(row["status"] == "ok" for row in rows)
    for row in rows:
        assert len(storage.list_uris(str(out / "images" / storage.safe_key(row["product_id"])))) == 1
    assert len({_worker_pid(row["worker"]) for row in rows}) > 2
