"""The catalog colour table (catalog_render.kinds.catalog_colours): measured on real fashion photos of
../shared/data, looked up by variant planning, with answers computed independently."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from skimage.color import rgb2lab

from catalog_render import catalog, manifest
from catalog_render.config import JobSpec
from catalog_render.errors import ConfigError
from catalog_render.kinds import catalog_colours, recolour
from catalog_render.kinds.base import PlanContext
from test_photos import _catalog

BROWN = ("2374", "2987", "3246", "3553")  # brown casual shoes on white
BLACK = ("2031", "2246", "2108")  # a jacket, a backpack, shorts


@pytest.fixture(scope="module")
def masker():
    from catalog_render.pretrained.mask import ProductMasker

    return ProductMasker(threads=1)


def _rgb(fashion, pid: str) -> np.ndarray:
    return np.asarray(Image.open(fashion / "images" / f"{pid}.jpg").convert("RGB"))


def test_a_products_colour_is_the_lab_mean_of_its_colour_region(fashion, masker):
    threshold = JobSpec().photos.mask_threshold
    for pid, colour in (("2246", "Black"), ("2374", "Brown")):
        rgb = _rgb(fashion, pid)
        prob = masker.mask(rgb)
        lab, n = catalog_colours.product_colour(rgb, prob, colour, threshold)
        region = recolour.colour_region(rgb, prob >= threshold, colour)
        assert n == region.sum() > 1000
        assert np.allclose(lab, rgb2lab(rgb)[region].mean(axis=0))
        # independently of the region: the product is far darker than the white background
        assert lab[0] < rgb2lab(rgb)[prob < threshold][..., 0].mean() - 30
    assert catalog_colours.product_colour(_rgb(fashion, "2246"), np.zeros((2400, 1800), np.float32), "Black", threshold) == (None, 0)


def test_the_table_measures_a_sample_per_colour_and_lists_what_it_left_out(tmp_path, fashion, masker):
    uri = _catalog(tmp_path, fashion, {**{p: p for p in BROWN + BLACK}, "3131": b"not a jpeg", "3315": None})  # 3131/3315: brown T-shirts
    table = catalog.read_catalog(uri)
    result, skipped = catalog_colours.build(table, masker, 0.5, per_colour=3)
    rows = result.to_pylist()
    keys = [r["colour_key"] for r in rows]
    # 3 of the 5 brown rows with a photo URI (3315 has none), chosen by hash; all 3 black
    brown_ids = sorted(["2374", "2987", "3246", "3553", "3131"], key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:3]
    assert sorted(r["product_id"] for r in rows if r["colour_key"] == "black") == sorted(BLACK)
    assert keys.count("brown") + sum(1 for p, _ in skipped if p in brown_ids) == 3
    assert {p for p, _ in skipped} <= {"3131"} and all("undecodable" in why for _, why in skipped)
    for r in rows:
        rgb = catalog_colours.reduced(_rgb(fashion, r["product_id"]))
        assert max(rgb.shape[:2]) <= catalog_colours.MEASURE_SIDE
        lab, n = catalog_colours.product_colour(rgb, masker.mask(rgb), r["colour"], 0.5)
        assert r["region_pixels"] == n and np.allclose([r["l"], r["a"], r["b"]], lab)
    black = np.array([[r["l"], r["a"], r["b"]] for r in rows if r["colour_key"] == "black"])
    colours = catalog_colours.ColourTable(result)
    assert np.allclose(colours.target("Black"), np.median(black, axis=0))
    assert colours.target("black", exclude="2031") is None  # 2 left: fewer than MIN_SAMPLES
    assert colours.target("Navy Blue") is None


def _table(values: dict[str, tuple[str, tuple[float, float, float]]]) -> pa.Table:
    return pa.Table.from_pylist([{"product_id": pid, "colour": c, "colour_key": catalog_colours.colour_key(c), "l": lab[0], "a": lab[1], "b": lab[2],
                                  "region_pixels": 100, "source_sha256": "x"} for pid, (c, lab) in values.items()], schema=catalog_colours.SCHEMA)


def test_targets_are_medians_without_the_product_and_the_identity_follows_the_values():
    values = {"a": ("Brown", (30.0, 10.0, 20.0)), "b": ("brown", (40.0, 12.0, 18.0)), "c": ("BROWN ", (50.0, 30.0, 40.0)), "d": ("Brown", (35.0, 11.0, 25.0))}
    t = catalog_colours.ColourTable(_table(values))
    assert np.allclose(t.target("Brown"), [37.5, 11.5, 22.5])  # medians of 30/40/50/35, 10/12/30/11, 20/18/40/25
    assert np.allclose(t.target("brown", exclude="c"), [35.0, 11.0, 20.0])
    assert t.target("Brown", exclude="zzz") is not None and t.target(None) is None
    changed = catalog_colours.ColourTable(_table({**values, "d": ("Brown", (35.0, 11.0, 25.5))}))
    assert t.identity.startswith("catalog-colours:") and changed.identity != t.identity
    assert catalog_colours.ColourTable(_table(dict(reversed(values.items())))).identity == t.identity  # row order does not matter


def test_a_bad_colour_table_fails_naming_the_field(tmp_path):
    from catalog_render import storage

    with pytest.raises(ConfigError, match=r"photos.colour_table: .*not found|photos.colour_table: .*no such"):
        catalog_colours.ColourTable.load(str(tmp_path / "missing.parquet"))
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match="photos.colour_table: .* is not a Parquet colour table"):
        catalog_colours.ColourTable.load(str(tmp_path / "x.parquet"))
    storage.write_parquet(pa.table({"product_id": ["1"]}), str(tmp_path / "other.parquet"))
    with pytest.raises(ConfigError, match="photos.colour_table: not a colour table .* no column colour, colour_key"):
        catalog_colours.ColourTable.load(str(tmp_path / "other.parquet"))


def test_variant_planning_takes_its_target_from_the_table_and_keys_on_it(tmp_path, fashion):
    from catalog_render import storage
    from catalog_render.kinds.variant import VariantKind

    uri = _catalog(tmp_path, fashion, {"5614": None, "5615": "5615"})  # Brown sandal without a photo, its Grey sibling with one
    ctx = PlanContext(str(tmp_path / "out"), manifest.manifest_schema().empty_table(), {}, set())
    plain = VariantKind().plan(catalog.read_catalog(uri), JobSpec().with_overrides(kind="variant"), ctx).work.to_pylist()[0]
    values = {"b1": ("Brown", (31.0, 9.0, 20.0)), "b2": ("Brown", (35.0, 12.0, 24.0)), "b3": ("Brown", (44.0, 15.0, 30.0)),
              "5614": ("Brown", (90.0, 0.0, 0.0))}  # the product itself never counts
    storage.write_parquet(_table(values), str(tmp_path / "colours.parquet"))
    spec = JobSpec().with_overrides(kind="variant", **{"photos.colour_table": str(tmp_path / "colours.parquet")})
    item = VariantKind().plan(catalog.read_catalog(uri), spec, ctx).work.to_pylist()[0]
    inputs, identity = json.loads(item["inputs"]), catalog_colours.ColourTable(_table(values)).identity
    assert inputs["target_lab"] == [35.0, 12.0, 24.0] and inputs["method"] == f"lab-transfer+{identity}"
    assert json.loads(plain["inputs"])["target_lab"] == [round(float(x), 3) for x in recolour.target_lab("Brown")]
    assert item["render_key"] != plain["render_key"]
    # a table without the name: the name's reference, and the key of a run without a table
    storage.write_parquet(_table({k: ("Grey", v[1]) for k, v in values.items()}), str(tmp_path / "grey.parquet"))
    grey = VariantKind().plan(catalog.read_catalog(uri), spec.with_overrides(**{"photos.colour_table": str(tmp_path / "grey.parquet")}), ctx)
    assert grey.work.to_pylist()[0]["render_key"] == plain["render_key"]


def test_colour_table_command_writes_what_build_measures_and_refuses_a_catalog_without_photos(tmp_path, fashion, masker):
    from typer.testing import CliRunner

    from catalog_render.cli import app

    uri = _catalog(tmp_path, fashion, {p: p for p in BLACK})
    out = tmp_path / "colours.parquet"
    r = CliRunner().invoke(app, ["colour-table", "--catalog", uri, "--out", str(out), "--per-colour", "3"])
    assert r.exit_code == 0, r.output
    written = catalog_colours.ColourTable.load(str(out))
    expected, _ = catalog_colours.build(catalog.read_catalog(uri), masker, JobSpec().photos.mask_threshold, per_colour=3)
    assert written.identity == catalog_colours.ColourTable(expected).identity and written.identity in r.output
    assert "wrote 3 measurements of 1 colour name to" in r.output and "fewer than" not in r.output
    (tmp_path / "two").mkdir()
    two = _catalog(tmp_path / "two", fashion, {"2031": "2031", "2246": "2246", "3131": None})  # 3131: brown, no photo
    r = CliRunner().invoke(app, ["colour-table", "--catalog", two, "--out", str(tmp_path / "two.parquet")])
    assert r.exit_code == 0 and "fewer than 3 measurements (their variants aim at the name's reference colour instead): black (2), brown (0)" in r.output
    (tmp_path / "none").mkdir()
    none = _catalog(tmp_path / "none", fashion, {"2031": None, "2246": None})
    r = CliRunner().invoke(app, ["colour-table", "--catalog", none, "--out", str(tmp_path / "x.parquet")])
    assert r.exit_code == 4 and "none has a photo and a colour name the variant method knows" in r.output
    assert not (tmp_path / "x.parquet").exists()


def test_photos_are_measured_at_most_measure_side_pixels(fashion):
    rgb = _rgb(fashion, "2246")
    big = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * 4, rgb.shape[0] * 4), Image.Resampling.LANCZOS))
    small = catalog_colours.reduced(big)
    assert max(small.shape[:2]) == catalog_colours.MEASURE_SIDE and abs(small.shape[1] / small.shape[0] - big.shape[1] / big.shape[0]) < 0.01
    assert catalog_colours.reduced(rgb) is rgb  # 300 px: unchanged
    # the mean colour survives the reduction: within 1 CIELAB unit
    assert np.abs(rgb2lab(small).reshape(-1, 3).mean(0) - rgb2lab(big).reshape(-1, 3).mean(0)).max() < 1.0
