"""The project's matting model (catalog_render.matting, training.matting_trainer) on real IKEA
cut-outs and fashion photos of ../shared/data: the cut-out masks and composites checked from the
pixels, `train-matting` end to end, loading refusals, and a main-image run that masks with it."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from catalog_render import catalog, manifest, matting, storage
from catalog_render.cli import app
from catalog_render.errors import ModelError, WeightFileError
from catalog_render.kinds import photo
from catalog_render.training import matting_trainer as mt


@pytest.fixture(scope="module")
def ikea(fashion):
    return fashion.parent / "ikea"


def _ikea_rows(ikea, n: int, holdout: bool | None = None) -> list[dict]:
    rows = [r for r in csv.DictReader(open(ikea / "metadata.csv", encoding="utf-8")) if r["image_file"]]
    if holdout is not None:
        rows = [r for r in rows if mt.is_holdout(r["id"]) == holdout]
    return rows[:n]


def test_cutout_mask_is_the_threshold_mask_of_white_background_cutouts_only(ikea, fashion):
    kept = 0
    for r in _ikea_rows(ikea, 40):
        rgb = np.asarray(Image.open(ikea / r["image_file"]).convert("RGB"))
        m = mt.cutout_mask(rgb)
        border = np.concatenate([rgb[:3].reshape(-1, 3), rgb[-3:].reshape(-1, 3), rgb[:, :3].reshape(-1, 3), rgb[:, -3:].reshape(-1, 3)])
        if m is not None:
            kept += 1
            assert np.array_equal(m, photo.threshold_mask(rgb))
            assert (border >= 250).all(axis=1).mean() >= 0.98 and m.mean() >= mt.MIN_MASK_SHARE
    assert kept >= 30  # studio cut-outs: most are usable
    grey = np.asarray(Image.open(fashion / "images" / "1584.jpg").convert("RGB"))  # grey studio backdrop
    assert mt.cutout_mask(grey) is None


def test_composite_lays_the_cutout_over_the_background_with_its_alpha(ikea):
    uris = [str(ikea / r["image_file"]) for r in _ikea_rows(ikea, 12)]
    photos, masks, _ = mt.load_cutouts(uris, 96)
    x, alpha = mt.composite(photos, masks, torch.Generator().manual_seed(3), kind=1)  # flat colour
    again, _ = mt.composite(photos, masks, torch.Generator().manual_seed(3), kind=1)
    assert torch.equal(x, again)  # deterministic per seed
    assert x.shape == (len(photos), 3, 96, 96) and 0 <= float(alpha.min()) and float(alpha.max()) <= 1
    for i in range(len(x)):
        bg = alpha[i, 0] == 0
        assert bg.float().mean() > 0.05
        # outside the product: one flat colour plus sensor noise (sigma <= 0.03)
        assert float(x[i][:, bg].std(dim=1).max()) < 0.04
    white, _ = mt.composite(photos, masks, torch.Generator().manual_seed(3), kind=0)
    assert float(white[alpha.expand_as(white) == 0].mean()) > 0.95


@pytest.fixture(scope="module")
def tiny_matting(ikea, tmp_path_factory):
    """`train-matting` for 3 steps at 64 px on 24 IKEA cut-outs (plus 4 held out)."""
    tmp = tmp_path_factory.mktemp("matting")
    rows = _ikea_rows(ikea, 24, holdout=False) + _ikea_rows(ikea, 4, holdout=True)
    table = [{"product_id": r["id"], "title": r["name"], "description": None, "category": r["type"], "attributes": [],
              "image_uri": str(ikea / r["image_file"]), "updated_at": None} for r in rows]
    cat = tmp / "ikea.parquet"
    storage.write_parquet(pa.Table.from_pylist(table, schema=catalog.catalog_schema().arrow), str(cat))
    out = tmp / "model"
    res = CliRunner().invoke(app, ["train-matting", "--catalog", str(cat), "--out", str(out), "--max-steps", "3", "--side", "64"])
    assert res.exit_code == 0, res.output
    assert "saved matting model" in res.output and "3 steps" in res.output
    return out


def test_train_matting_writes_a_model_directory_that_masks_at_the_images_size(tiny_matting, fashion):
    assert {p.name for p in tiny_matting.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    cfg = json.loads((tiny_matting / "config.json").read_text())
    assert cfg["family"] == "matting" and cfg["input_side"] == 64 and cfg["steps"] == 3
    assert set(cfg["holdout_iou"]) == set(mt.BACKGROUNDS) and all(0 <= v <= 1 for v in cfg["holdout_iou"].values())
    assert "non-commercial" in (tiny_matting / "README.md").read_text()
    masker = matting.MattingMasker(tiny_matting)
    rgb = np.asarray(Image.open(fashion / "images" / "2246.jpg").convert("RGB"))
    m = masker.mask(rgb)
    assert m.shape == rgb.shape[:2] and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    assert np.array_equal(m, masker.mask(Image.fromarray(rgb)))  # PIL image or array: the same mask
    ident = photo.mask_model_id(str(tiny_matting))
    assert ident.startswith("matting:") and ident != photo.mask_model_id()


def test_loading_refuses_what_is_not_a_matting_model(tiny_matting, tiny_gan, tmp_path):
    with pytest.raises(ModelError, match="not a matting model"):
        matting.load(tiny_gan)
    with pytest.raises(ModelError, match=r"\[photos\] mask_model"):
        photo.load_masker(str(tmp_path / "missing"))
    bad = shutil.copytree(tiny_matting, tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightFileError, match="cannot be read"):
        matting.load(bad)


def test_main_image_run_masks_with_the_matting_model_and_keys_it(ray_local, tiny_matting, tmp_path, fashion):
    from catalog_render.config import JobSpec
    from catalog_render.execution import run_job

    (tmp_path / "photos").mkdir()
    meta = {r["id"]: r for r in csv.DictReader(open(fashion / "metadata.csv", encoding="utf-8"))}
    rows = []
    for pid in ("2246", "4584"):
        shutil.copy(fashion / "images" / f"{pid}.jpg", tmp_path / "photos" / f"{pid}.jpg")
        rows.append({"product_id": pid, "title": meta[pid]["productDisplayName"], "description": None, "category": meta[pid]["articleType"],
                     "attributes": [("color", meta[pid]["baseColour"])], "image_uri": str(tmp_path / "photos" / f"{pid}.jpg"), "updated_at": None})
    cat = str(tmp_path / "catalog.parquet")
    storage.write_parquet(pa.Table.from_pylist(rows, schema=catalog.catalog_schema().arrow), cat)
    spec = JobSpec().with_overrides(kind="main-image", **{"quality.preset": "amazon", "execution.workers": 1, "quality.upscaler": "lanczos",
                                                          "photos.mask_model": str(tiny_matting)})
    out = str(tmp_path / "out")
    s = run_job(spec, cat, None, out, num_cpus=2)
    got = manifest.read_manifest(out).to_pylist()
    assert s.planned == 2 and len(got) == 2
    for r in got:
        assert r["mask_model"] == photo.mask_model_id(str(tiny_matting)) and r["method"].startswith("matting-mask+")
        # a 3-step model masks badly: each photo is made or left alone with the rule it broke, none fails
        assert r["status"] in ("ok", "left-alone"), r
        assert r["status"] == "ok" or r["error"].startswith("left alone:")
    again = run_job(spec, cat, None, out, num_cpus=2)
    assert again.planned == 0 and again.up_to_date == 2
    u2 = run_job(JobSpec().with_overrides(kind="main-image", **{"quality.preset": "amazon", "execution.workers": 1, "quality.upscaler": "lanczos"}),
                 cat, None, out, num_cpus=2)
    assert u2.planned == 2  # another mask model: other render keys
    assert {r["method"] for r in manifest.read_manifest(out).to_pylist() if r["run_id"] == u2.run_id} == {"u2netp-mask+white+centre+realesrgan"}


def test_train_matting_refuses_to_overwrite_another_model_and_errors_keep_their_brackets(tiny_gan, tmp_path, small_catalog):
    runner = CliRunner()
    before = {p.name: p.read_bytes() for p in tiny_gan.iterdir() if p.is_file()}
    res = runner.invoke(app, ["train-matting", "--catalog", str(small_catalog), "--out", str(tiny_gan), "--max-steps", "1", "--side", "64"])
    assert res.exit_code == 6 and "already holds something that is not a matting model" in res.output, res.output
    assert {p.name: p.read_bytes() for p in tiny_gan.iterdir() if p.is_file()} == before  # nothing touched
    job = tmp_path / "job.toml"
    job.write_text(f'kind = "main-image"\n[photos]\nmask_model = "{tmp_path / "missing"}"\n')
    res = runner.invoke(app, ["run", "--catalog", str(small_catalog), "--output", str(tmp_path / "out"), "--job", str(job)])
    assert res.exit_code == 6 and "error: [photos] mask_model:" in res.output, res.output
    assert not (tmp_path / "out").exists()  # failed before anything was written
