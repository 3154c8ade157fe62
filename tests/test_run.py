"""The main job on a real local Ray: real photos, a tiny trained GAN and a tiny diffusers
pipeline, real Parquet, local disk and a real S3 server on loopback."""

from __future__ import annotations

import ipaddress
import json
import os

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from catalog_render import catalog, imaging, manifest, storage
from catalog_render.config import JobSpec
from catalog_render.execution import run_job
from catalog_render.quality import scores
from conftest import upload_tree

SPEC = JobSpec().with_overrides(**{"execution.workers": 2, "execution.batch_size": 4, "generation.seed": 11})


def _backfill_catalog(small_catalog, tmp_path):
    """The 60 real products; 5 lose their image_uri, 2 point to missing files, 1 to a corrupt file."""
    t = catalog.read_catalog(str(small_catalog))
    uris = t.column("image_uri").to_pylist()
    ids = t.column("product_id").to_pylist()
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    for i in range(5):
        uris[i] = None
    uris[5] = uris[6] = str(tmp_path / "gone.jpg")
    uris[7] = str(tmp_path / "corrupt.jpg")
    t = t.set_column(t.schema.get_field_index("image_uri"), "image_uri", pa.array(uris, pa.string()))
    path = tmp_path / "catalog.parquet"
    storage.write_parquet(t, str(path))
    return str(path), set(ids[:8])


def _is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or IPv4-mapped loopback (::ffff:127.0.0.1); never 0.0.0.0/:: or an interface."""
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _listening_sockets() -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of this process tree."""
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    out = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            out.append((c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()))
    return out


def test_backfill_renders_exactly_the_missing_then_nothing_then_the_changed(ray_local, small_catalog, tiny_gan, tmp_path):
    cat_uri, expected = _backfill_catalog(small_catalog, tmp_path)
    out = str(tmp_path / "out")
    sockets: list = []
    summary = run_job(SPEC, cat_uri, str(tiny_gan), out, progress=lambda done, total: sockets.extend(_listening_sockets()))
    assert summary.counts == {"ok": 8, "failed": 0, "skipped": 0}
    # Loopback only: every socket the local Ray listens on (GCS, raylet, object manager, workers).
    assert sockets, "no listening sockets seen during the run"
    assert all(_is_loopback(ip) for ip, _, _ in sockets), sockets

    m = manifest.read_manifest(out)
    assert set(m.column("product_id").to_pylist()) == expected and m.num_rows == 8
    rows = m.to_pylist()
    for r in rows:
        assert r["status"] == "ok" and r["run_id"] == summary.run_id
        im = imaging.decode_rgb(storage.read_bytes(r["image_uri"]))
        assert im.size == (32, 32) == (r["width"], r["height"])
        assert r["image_uri"].startswith(os.path.join(out, "images", storage.safe_key(r["product_id"])))
        assert r["sharpness"] == pytest.approx(scores.sharpness(imaging.to_array(im)))
        assert r["psnr"] is None and r["ssim"] is None
    # the work was spread over both actors
    assert len({r["worker"] for r in rows}) == 2
    record = json.loads(storage.read_bytes(summary.record_uri))
    assert record["status"] == "finished" and record["counts"]["ok"] == 8 and record["planned"] == 8

    again = run_job(SPEC, cat_uri, str(tiny_gan), out)
    assert again.planned == 0 and again.up_to_date == 8 and again.counts["ok"] == 0

    t = storage.read_parquet(cat_uri)
    titles = t.column("title").to_pylist()
    titles[2] = titles[2] + " (new season)"
    t = t.set_column(t.schema.get_field_index("title"), "title", pa.array(titles, pa.string()))
    storage.write_parquet(t, cat_uri)
    third = run_job(SPEC, cat_uri, str(tiny_gan), out)
    assert third.counts["ok"] == 1
    m = manifest.read_manifest(out)
    latest = m.filter(pc.equal(m["run_id"], third.run_id))
    assert latest.column("product_id").to_pylist() == [t.column("product_id")[2].as_py()]


def test_hidden_photos_are_scored_against_the_reference(ray_local, small_catalog, tiny_gan, tmp_path):
    out = str(tmp_path / "out")
    s = run_job(SPEC, str(small_catalog), str(tiny_gan), out, hide_images=True, limit=6)
    assert s.counts["ok"] == 6 and s.planned == 6
    for r in manifest.read_manifest(out).to_pylist():
        render = imaging.to_array(imaging.decode_rgb(storage.read_bytes(r["image_uri"])))
        ref = imaging.to_array(imaging.letterbox(imaging.decode_rgb(storage.read_bytes(r["reference_uri"])), 32, 32))
        assert r["psnr"] == pytest.approx(scores.psnr(ref, render))
        assert r["ssim"] == pytest.approx(scores.ssim(ref, render))
        assert 0 < r["psnr"] < 40 and -1 <= r["ssim"] <= 1


def test_diffusers_pipeline_run_uses_the_prompt_template(ray_local, small_catalog, tiny_sd, tmp_path):
    from catalog_render.generators import registry
    from catalog_render.generators.base import Conditioning, GenerationParams

    spec = SPEC.with_overrides(**{"generation.num_inference_steps": 2, "generation.prompt_template": "{title} in {attributes.color}", "mode": "refresh"})
    out = str(tmp_path / "out")
    s = run_job(spec, str(small_catalog), str(tiny_sd), out, limit=4)
    assert s.counts["ok"] == 4
    cat = {r["product_id"]: r for r in catalog.read_catalog(str(small_catalog)).to_pylist()}
    model = registry.load_generator(str(tiny_sd))
    for r in manifest.read_manifest(out).to_pylist():
        p = cat[r["product_id"]]
        assert r["prompt"] == f"{p['title']} in {dict(p['attributes'])['color']}"
        assert r["family"] == "diffusers-pipeline"
        assert json.loads(r["generation_params"])["num_inference_steps"] == 2
        direct = model.generate([Conditioning(prompt=r["prompt"])], [r["seed"]], GenerationParams(num_inference_steps=2))[0]
        rendered = imaging.to_array(imaging.decode_rgb(storage.read_bytes(r["image_uri"])))
        assert np.abs(rendered.astype(int) - np.asarray(direct, dtype=int)).max() <= 1


def test_catalog_model_and_output_on_s3(ray_local, small_catalog, tiny_gan, bucket, tmp_path):
    cat_uri = f"s3://{bucket}/catalogs/fashion.parquet"
    storage.write_bytes(cat_uri, small_catalog.read_bytes())
    model_uri = upload_tree(tiny_gan, f"s3://{bucket}/models/tiny-gan")
    out = f"s3://{bucket}/renders"
    s = run_job(SPEC, cat_uri, model_uri, out, hide_images=True, limit=5)
    assert s.counts["ok"] == 5
    m = manifest.read_manifest(out)
    assert m.num_rows == 5
    for uri in m.column("image_uri").to_pylist():
        assert uri.startswith(f"s3://{bucket}/renders/images/")
        assert imaging.decode_rgb(storage.read_bytes(uri)).size == (32, 32)
    assert storage.list_uris(f"{out}/manifest") and storage.list_uris(f"{out}/runs")
    # --limit takes the next products: the first five are up to date, five others are rendered
    again = run_job(SPEC, cat_uri, model_uri, out, hide_images=True, limit=5)
    assert again.up_to_date == 5 and again.counts["ok"] == 5
    m2 = manifest.read_manifest(out)
    first = set(m.column("product_id").to_pylist())
    second = set(m2.filter(pc.equal(m2["run_id"], again.run_id)).column("product_id").to_pylist())
    assert len(second) == 5 and not first & second
    from catalog_render.report import write_report

    assert storage.read_bytes(write_report(out)).startswith(b"<!DOCTYPE html>")


@pytest.mark.parametrize("family", ["vae", "diffusion"])
def test_run_renders_with_every_trained_family(family, ray_local, small_catalog, tmp_path):
    """`run` picks the family from the model directory; renders equal the generator's own output;
    num_inference_steps is part of the render key for diffusion only."""
    from catalog_render.generators import registry
    from catalog_render.generators.base import GenerationParams
    from catalog_render.training.data import conditionings_from_table, load_image_set
    from catalog_render.training.loop import train
    from test_training import tiny_spec

    table = catalog.read_catalog(str(small_catalog))
    model = str(tmp_path / "model")
    train(load_image_set(table, 32, 32), tiny_spec(family, max_steps=2), model, str(small_catalog), "h")
    three = str(tmp_path / "three.parquet")
    storage.write_parquet(table.slice(0, 3), three)
    spec = SPEC.with_overrides(**{"generation.num_inference_steps": 2, "generation.guidance_scale": 1.0, "mode": "refresh"})
    out = str(tmp_path / "out")
    s = run_job(spec, three, model, out)
    assert s.counts["ok"] == 3
    gen = registry.load_generator(model)
    conds = {p: c for p, c in zip(table.column("product_id").to_pylist(), conditionings_from_table(table))}
    rows = manifest.read_manifest(out).to_pylist()
    for r in rows:
        assert r["family"] == family and r["model_id"] == gen.model_id
        direct = gen.generate([conds[r["product_id"]]], [r["seed"]], GenerationParams(num_inference_steps=2, guidance_scale=1.0))[0]
        rendered = imaging.to_array(imaging.decode_rgb(storage.read_bytes(r["image_uri"])))
        assert np.abs(rendered.astype(int) - np.asarray(direct, dtype=int)).max() <= 1
    more_steps = run_job(spec.with_overrides(**{"generation.num_inference_steps": 3}), three, model, out)
    assert more_steps.planned == (3 if family == "diffusion" else 0)


def test_same_pixels_whatever_the_batch_size_and_every_actor_renders(ray_local, small_catalog, tiny_gan, tmp_path):
    """The promise of docs/planning.md ("Same pixels whatever the batch size"), on real runs: the same
    render_key and seed give the same pixels with --batch-size 1 and 16; and with 2 workers both actors
    render, also when the batch size is not below the number of products (16 products at batch 16: the
    case where one actor took every block while the other stayed idle)."""
    products = 16
    runs = {}
    for bs in (1, 16):
        spec = SPEC.with_overrides(**{"execution.batch_size": bs, "mode": "refresh"})
        out = str(tmp_path / f"bs{bs}")
        assert run_job(spec, str(small_catalog), str(tiny_gan), out, limit=products).counts["ok"] == products
        rows = manifest.read_manifest(out).to_pylist()
        assert len({r["worker"] for r in rows}) == 2, (bs, [r["worker"] for r in rows])
        runs[bs] = {r["product_id"]: (r["render_key"], r["seed"], imaging.to_array(imaging.decode_rgb(storage.read_bytes(r["image_uri"]))))
                    for r in rows}
    assert len(runs[1]) == products and runs[16].keys() == runs[1].keys()
    for pid, (key, seed, pixels) in runs[1].items():
        assert runs[16][pid][:2] == (key, seed)
        assert np.array_equal(runs[16][pid][2], pixels), pid


def test_an_actors_first_item_is_rendered_and_written_before_the_rest_of_its_first_batch(small_catalog, tiny_gan, tmp_path):
    """RenderWorker renders its first batch as [first item] then [the rest], so the run's first image
    is written after one render, not a whole batch: the first item's render_seconds is its own
    generation time, the rest share their chunk's (render_seconds = chunk time / chunk size, the same
    for every first try of a chunk). Later batches are one chunk. Pixels are those of an unchunked batch."""
    from catalog_render import planning
    from catalog_render.execution import RenderWorker, generation_params
    from catalog_render.generators import registry

    spec = SPEC.with_overrides(**{"quality.max_tries": 1})
    params = generation_params(spec)
    info = registry.describe(str(tiny_gan))
    work = planning.plan(catalog.read_catalog(str(small_catalog)), mode="backfill", model_id=info.model_id, params_used=info.params_used(params),
                         job_seed=spec.generation.seed, prompt_template=spec.generation.prompt_template, done_keys={}, existing_images=set(),
                         hide_images=True, limit=10, conditioning_problem=info.conditioning_problem).work
    assert work.num_rows == 10

    def worker(out):
        return RenderWorker(str(tiny_gan), info.model_id, str(tmp_path / out), params.__dict__, "png", "r", spec.scores.white_threshold,
                            spec.scores.border_fraction, threads=1, use_gpu=False, quality=spec.quality.model_dump(exclude={"max_failed_share"}))

    fresh = worker("fresh")
    first = fresh(work.slice(0, 5)).to_pylist()
    later = fresh(work.slice(5, 5)).to_pylist()
    assert [r["product_id"] for r in first + later] == work.column("product_id").to_pylist()
    once = [r["render_seconds"] for r in first if r["tries"] == 1]
    assert first[0]["tries"] == 1 and len(set(once[1:])) == 1 and once[0] != once[1]  # [item 0] then [items 1-4]
    assert len({r["render_seconds"] for r in later if r["tries"] == 1}) == 1  # one chunk
    warmed = worker("warmed")
    warmed(work.slice(5, 1))
    whole = warmed(work.slice(0, 5)).to_pylist()  # not the actor's first batch: one chunk
    assert len({r["render_seconds"] for r in whole if r["tries"] == 1}) == 1
    for a, b in zip(first, whole):
        assert (a["render_key"], a["seed"]) == (b["render_key"], b["seed"])
        pixels = [imaging.to_array(imaging.decode_rgb(storage.read_bytes(r["image_uri"]))) for r in (a, b)]
        assert np.array_equal(*pixels), a["product_id"]
