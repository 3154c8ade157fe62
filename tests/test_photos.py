"""The photo kinds (main-image, variant) on real photos of ../shared/data: masks, recolouring and
compositing with known answers, the render key's dependence on the source photo, quarantines,
and idempotent runs on a real local Ray."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from catalog_render import catalog, manifest, storage
from catalog_render.config import JobSpec
from catalog_render.kinds import photo, recolour
from catalog_render.kinds.base import PlanContext
from catalog_render.quality import checks, presets
from catalog_render.quality.provenance import read_provenance

# White-background photos of dark products, where "any channel < 235, holes filled" is the product.
WHITE_BG_DARK = ("2246", "2673", "3554", "4584", "5045", "6638")


@pytest.fixture(scope="module")
def masker():
    from catalog_render.pretrained.mask import ProductMasker

    return ProductMasker(threads=1)


def _rgb(fashion, pid: str) -> np.ndarray:
    return np.asarray(Image.open(fashion / "images" / f"{pid}.jpg").convert("RGB"))


def _judge(prob, category="", title=""):
    ps = JobSpec().photos
    return photo.judge_mask(prob, threshold=ps.mask_threshold, min_share=ps.min_mask_share, max_share=ps.max_mask_share,
                            min_component_share=ps.min_component_share, max_edge_touch=ps.max_edge_touch,
                            pairs_allowed=photo.is_pair_product(category, title))


def test_mask_of_white_background_photos_matches_a_threshold_mask(fashion, masker):
    for pid in WHITE_BG_DARK:
        rgb = _rgb(fashion, pid)
        reference = photo.threshold_mask(rgb)
        m = masker.mask(rgb) >= 0.5
        iou = (m & reference).sum() / (m | reference).sum()
        assert iou >= 0.8, (pid, iou)


def test_a_photo_that_must_be_left_alone_names_its_rule(fashion, masker):
    # 1580: a swimsuit on a model cut at the knees by the photo's bottom edge
    v = _judge(masker.mask(_rgb(fashion, "1580")), "Swimwear")
    assert v.reason.startswith("product cut by the frame at the bottom edge") and v.edges["bottom"] > 0.3
    # an empty white frame: no salient product
    assert _judge(masker.mask(np.full((300, 225, 3), 255, np.uint8))).reason.startswith("no salient product found")
    # two photos side by side: several products, unless the category comes in pairs
    two = np.concatenate([_rgb(fashion, "2246"), _rgb(fashion, "4584")], axis=1)
    assert _judge(masker.mask(two), "Backpacks").reason == "several products in the frame (2 separate regions of the mask)"
    assert _judge(masker.mask(two), "Casual Shoes").reason is None
    assert _judge(masker.mask(_rgb(fashion, "2246")), "Backpacks").reason is None


def test_compositing_puts_the_product_on_pure_white_at_the_preset_fill(fashion, masker):
    rgb = _rgb(fashion, "1783")  # sandals shot on a grey studio background
    assert presets.evaluate(Image.fromarray(rgb), "amazon").failed == ["amazon.white_background", "amazon.zoom_1000"]
    prob = masker.mask(rgb)
    v = _judge(prob, "Sandals")
    out, scale = photo.place_on_canvas(Image.fromarray(rgb), photo.soft_alpha(prob, v.mask), photo.mask_box(v.mask), (1000, 1000), 0.92)
    a = np.asarray(out)
    assert out.size == (1000, 1000) and (a[:10] == 255).all() and (a[:, :10] == 255).all() and (a[-10:] == 255).all()
    m = presets.measure(out)
    assert 0.90 <= m["frame_fill"] <= 0.94
    assert presets.evaluate(out, "amazon").failed == []


def test_recolour_to_the_photos_own_colour_changes_little_and_leaves_the_rest(fashion, masker):
    from skimage.color import deltaE_ciede2000, rgb2lab

    rgb = _rgb(fashion, "4584")  # a red backpack on white
    region = recolour.colour_region(rgb, masker.mask(rgb) >= 0.5, "Red")
    assert 0.1 < region.mean() < 0.5
    own = rgb2lab(rgb)[region].mean(axis=0)
    same = recolour.recolour(rgb, region, own)
    assert np.abs(same.astype(int) - rgb.astype(int)).max() <= 2  # moved to its own mean: the same pixels
    blue = recolour.recolour(rgb, region, recolour.target_lab("Blue"))
    outside = ~__import__("scipy").ndimage.binary_dilation(region, iterations=4)
    assert (blue[outside] == rgb[outside]).all()  # the rest of the photo is untouched
    d_red = deltaE_ciede2000(rgb2lab(rgb)[region], rgb2lab(recolour.recolour(rgb, region, recolour.target_lab("Red")))[region]).mean()
    d_blue = deltaE_ciede2000(rgb2lab(rgb)[region], rgb2lab(blue)[region]).mean()
    assert d_red < 15 < 40 < d_blue
    assert checks.colour_match(blue, "Blue", mask=region).match


def test_variant_quarantines_masks_that_cover_nothing_or_everything(fashion):
    from catalog_render.kinds.variant import make_variant

    rgb, spec = _rgb(fashion, "4584"), JobSpec()
    assert make_variant(rgb, np.zeros(rgb.shape[:2], np.float32), "Red", recolour.target_lab("Blue"), spec)[2].startswith("no salient product")
    assert make_variant(rgb, np.ones(rgb.shape[:2], np.float32), "Red", recolour.target_lab("Blue"), spec)[2].startswith("mask covers everything")
    assert recolour.target_lab("Multi") is None and recolour.target_lab("Pine") is None


def test_variant_groups_follow_titles_without_colour_words():
    rows = [{"product_id": "1", "title": "ADIDAS Men Henrio Brown Floater", "category": "Sandals", "attributes": {"color": "Brown"}},
            {"product_id": "2", "title": "ADIDAS Men Henrio Grey Red Floater", "category": "Sandals", "attributes": {"color": "Grey"}},
            {"product_id": "3", "title": "ADIDAS Men Henrio Brown Floater", "category": "Sports Shoes", "attributes": {"color": "Black"}},
            {"product_id": "4", "title": "Puma Men Black Tee", "category": "Tshirts", "attributes": {"color": "Black"}},
            {"product_id": "5", "title": "Puma Men Black Tee", "category": "Tshirts", "attributes": {"color": "Black"}}]
    g = recolour.variant_groups(rows)
    assert set(g) == {"1", "2"} and g["1"] == g["2"]  # 3: another category; 4/5: the same colour
    rows[3]["attributes"]["style"] = rows[4]["attributes"]["style"] = "P1"
    rows[4]["attributes"]["color"] = "White"
    assert set(recolour.variant_groups(rows, "attributes.style")) == {"4", "5"}


def _catalog(tmp_path, fashion, spec: dict) -> str:
    """A catalog of real fashion rows: ``spec`` maps product_id -> photo source: a fashion id (copied),
    None (no photo), or bytes (written as the photo)."""
    import csv

    meta = {r["id"]: r for r in csv.DictReader(open(fashion / "metadata.csv", encoding="utf-8"))}
    rows = []
    (tmp_path / "photos").mkdir(exist_ok=True)
    for pid, src in spec.items():
        r = meta[pid.split("-")[0]]
        uri = None
        if isinstance(src, bytes):
            uri = str(tmp_path / "photos" / f"{pid}.jpg")
            open(uri, "wb").write(src)
        elif src:
            uri = str(tmp_path / "photos" / f"{pid}.jpg")
            shutil.copy(fashion / "images" / f"{src}.jpg", uri)
        rows.append({"product_id": pid, "title": r["productDisplayName"], "description": None, "category": r["articleType"],
                     "attributes": [("color", r["baseColour"])], "image_uri": uri, "updated_at": None})
    out = tmp_path / "catalog.parquet"
    storage.write_parquet(pa.Table.from_pylist(rows, schema=catalog.catalog_schema().arrow), str(out))
    return str(out)


def test_render_key_covers_the_source_photos_hash(tmp_path, fashion):
    from catalog_render.kinds.main_image import MainImageKind

    uri = _catalog(tmp_path, fashion, {"2673": "2673", "4584": "4584"})
    spec, kind = JobSpec().with_overrides(kind="main-image", **{"quality.preset": "amazon"}), MainImageKind()
    ctx = PlanContext(str(tmp_path / "out"), manifest.manifest_schema().empty_table(), {}, set())
    first = {r["product_id"]: r["render_key"] for r in kind.plan(catalog.read_catalog(uri), spec, ctx).work.to_pylist()}
    assert {r["product_id"]: r["render_key"] for r in kind.plan(catalog.read_catalog(uri), spec, ctx).work.to_pylist()} == first
    shutil.copy(fashion / "images" / "5045.jpg", tmp_path / "photos" / "2673.jpg")  # the photo changes, nothing else
    again = {r["product_id"]: r["render_key"] for r in kind.plan(catalog.read_catalog(uri), spec, ctx).work.to_pylist()}
    assert again["4584"] == first["4584"] and again["2673"] != first["2673"]
    other = {r["product_id"]: r["render_key"] for r in kind.plan(catalog.read_catalog(uri), spec.with_overrides(**{"quality.preset": "google"}),
                                                                   ctx).work.to_pylist()}
    assert other["4584"] != first["4584"]  # and the preset


def test_variant_says_when_the_catalog_has_no_variant_group(tmp_path, fashion):
    from catalog_render.kinds.variant import VariantKind

    spec, kind = JobSpec().with_overrides(kind="variant"), VariantKind()
    ctx = PlanContext(str(tmp_path / "out"), manifest.manifest_schema().empty_table(), {}, set())
    lone = _catalog(tmp_path, fashion, {"2673": "2673", "4584": None})  # different titles: no group
    assert kind.plan(catalog.read_catalog(lone), spec, ctx).work.num_rows == 0
    [note] = kind.notes()
    assert note.startswith("no variant groups in this catalog") and "photos.group_column" in note
    pair = _catalog(tmp_path, fashion, {"5614": None, "5615": "5615"})  # Brown / Grey of one sandal: a group
    assert [r["product_id"] for r in kind.plan(catalog.read_catalog(pair), spec, ctx).work.to_pylist()] == ["5614"]
    assert kind.notes() == []


def test_unknown_kind_fails_fast_naming_the_field(tmp_path):
    from catalog_render.config import load_job
    from catalog_render.errors import ConfigError

    (tmp_path / "job.toml").write_text('kind = "collage"\n')
    with pytest.raises(ConfigError, match=r"kind: unknown kind 'collage' \(known: render, main-image, variant, .*comparison, .*label.*\)"):
        load_job(tmp_path / "job.toml")


def test_main_image_run_is_compliant_leaves_bad_photos_alone_and_is_idempotent(ray_local, tmp_path, fashion):
    from catalog_render.execution import run_job

    uri = _catalog(tmp_path, fashion, {"1783": "1783", "4584": "4584", "1580": "1580", "4343-bad": b"not a jpeg", "2673": None})
    out = str(tmp_path / "out")
    spec = JobSpec().with_overrides(kind="main-image", **{"quality.preset": "amazon", "execution.workers": 1,
                                                          "quality.upscaler": "realesr-animevideov3-x4"})  # x4plus costs ~10 CPU s an image
    s = run_job(spec, uri, None, out, num_cpus=2)
    rows = {r["product_id"]: r for r in manifest.read_manifest(out).to_pylist()}
    assert s.counts == {"ok": 2, "failed": 0, "skipped": 1, "left-alone": 1} and s.in_scope == 3  # 2673 has no photo: out of scope
    assert rows["4343-bad"]["error"].startswith("source photo unusable: image undecodable")
    assert rows["1580"]["status"] == "left-alone" and "bottom edge" in rows["1580"]["error"] and rows["1580"]["error"].startswith("left alone:")
    for pid in ("1783", "4584"):
        r = rows[pid]
        assert r["kind"] == "main-image" and r["quality_status"] == "passed" and json.loads(r["quality_failed"]) == []
        data = open(r["image_uri"], "rb").read()
        im = np.asarray(Image.open(r["image_uri"]).convert("RGB"))
        assert im.shape == (1000, 1000, 3) and (im[:5] >= 250).all()
        prov = read_provenance(data)
        sha = hashlib.sha256(open(tmp_path / "photos" / f"{pid}.jpg", "rb").read()).hexdigest()
        assert prov["DigitalSourceType"].endswith("compositeWithTrainedAlgorithmicMedia") and prov["SourceSha256"] == sha == r["source_sha256"]
        assert r["mask_model"].startswith("u2netp:") and r["upscaler"].startswith("realesr")
    again = run_job(spec, uri, None, out, num_cpus=2)
    assert again.planned == 0 and again.up_to_date == 3  # two images and one decision to leave alone


def test_variant_run_renders_from_a_sibling_and_quarantines_what_it_cannot(ray_local, tmp_path, fashion):
    from catalog_render.execution import run_job

    # 5614 (Brown) has no photo; its sibling 5615 (Grey) has one. 32289/32328: a watch group whose
    # only sibling photo is corrupt.
    uri = _catalog(tmp_path, fashion, {"5614": None, "5615": "5615", "32289": None, "32328": b"\xff\xd8\xff broken"})
    out = str(tmp_path / "out")
    spec = JobSpec().with_overrides(kind="variant", **{"execution.workers": 1})
    s = run_job(spec, uri, None, out, num_cpus=2)
    rows = {r["product_id"]: r for r in manifest.read_manifest(out).to_pylist()}
    assert s.counts["ok"] == 1
    assert rows["32289"]["status"] == "skipped" and "no sibling of another colour has a usable photo (32328: image undecodable" in rows["32289"]["error"]
    r = rows["5614"]
    assert (r["kind"], r["source_product_id"], r["target_colour"], r["method"]) == ("variant", "5615", "Brown", "lab-transfer")
    made = np.asarray(Image.open(r["image_uri"]).convert("RGB"))
    src = _rgb(fashion, "5615")
    assert made.shape == src.shape and (made[:8] == src[:8]).all()  # full resolution, background untouched
    assert r["colour_match"] is True
    assert run_job(spec, uri, None, out, num_cpus=2).planned == 0
