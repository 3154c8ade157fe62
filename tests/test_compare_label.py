"""Comparison and label images (catalog_render.kinds.comparison / label) on real fashion photos:
text that never overflows and never shows a glyph its font lacks, facts parsed from descriptions,
groups and their keys, every bad input of issue 15 with its result, and idempotent runs on a real
local Ray."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw

from catalog_render import catalog, manifest, storage
from catalog_render.config import JobSpec
from catalog_render.kinds import facts, text
from catalog_render.kinds.base import PlanContext
from catalog_render.quality.provenance import read_provenance

LONG = "Extra soft brushed fleece " * 200  # 5,200 characters
RTL = "قميص قطني أزرق للرجال"
CJK = "男士黑色运动鞋轻便透气"


def _catalog(tmp_path, fashion, spec: dict) -> str:
    """Real fashion rows: ``spec`` maps product_id -> dict of overrides (``photo``: a fashion id to
    copy, None for no photo; ``title``, ``description``, and attribute names)."""
    meta = {r["id"]: r for r in csv.DictReader(open(fashion / "metadata.csv", encoding="utf-8"))}
    (tmp_path / "photos").mkdir(exist_ok=True)
    rows = []
    for pid, over in spec.items():
        over = dict(over)
        r = meta[pid.split("-")[0]]
        src = over.pop("photo", pid.split("-")[0])
        uri = None
        if src:
            uri = str(tmp_path / "photos" / f"{pid}.jpg")
            shutil.copy(fashion / "images" / f"{src}.jpg", uri)
        title, desc = over.pop("title", r["productDisplayName"]), over.pop("description", None)
        attrs = {"color": r["baseColour"], "gender": r["gender"], "usage": r["usage"], **over}
        rows.append({"product_id": pid, "title": title, "description": desc, "category": r["articleType"], "attributes": list(attrs.items()),
                     "image_uri": uri, "updated_at": None})
    out = tmp_path / "catalog.parquet"
    storage.write_parquet(pa.Table.from_pylist(rows, schema=catalog.catalog_schema().arrow), str(out))
    return str(out)


def _ctx(tmp_path):
    return PlanContext(str(tmp_path / "out"), manifest.manifest_schema().empty_table(), {}, set())


# ----------------------------------------------------------------------------- text and facts


@pytest.mark.parametrize("value,lines", [(LONG, 2), (CJK * 30, 3), (RTL * 20, 2), ("x" * 400, 2)])
def test_wrapped_text_never_overflows_and_ends_with_an_ellipsis(value, lines):
    clean, missing = text.clean(value)
    out, cut = text.wrap(clean, 280, "regular", 21, lines)
    assert missing == 0 and cut and len(out) == lines and out[-1].text.endswith(text.ELLIPSIS)
    for line in out:  # each line's real ink stays inside the 280 px box
        im = Image.new("L", (600, 40), 0)
        text.draw_lines(ImageDraw.Draw(im), [text.Line(line.runs, line.width, False)], (0, 5, 280), "regular", 21, 255)
        cols = np.flatnonzero(np.asarray(im).max(axis=0) > 0)
        assert line.width <= 280 and cols[-1] < 282


def test_every_character_is_drawn_with_a_font_that_holds_it():
    from fontTools.ttLib import TTFont

    value, missing = text.clean(f"Puma {CJK} {RTL} ₹1,299 €12 \x00\u200b𓀀")
    assert missing == 1 and "\x00" not in value and "\u200b" not in value and text.REPLACEMENT in value
    held = [set(TTFont(p)["cmap"].getBestCmap()) for p, _ in text.FONTS["regular"]]
    lines, _ = text.wrap(value, 2000, "regular", 20, 1)
    for run, idx in lines[0].runs:
        assert all(ord(c) in held[idx] for c in run if c != " ")
    assert {idx for _, idx in lines[0].runs} == {0, 1}  # DejaVu, and Droid Sans Fallback for the CJK run


def test_facts_come_from_attributes_else_the_description():
    row = {"title": "STRANDMON Wing chair", "category": "Wing chair", "attributes": {"color": "Rattan,black", "size": ""},
           "description": "View more product information Solid wood frame, seat in 100% polyester fabric. 82x96x101 cm. "
                          "Machine wash the cover at 40°C. View more product information"}
    got = {f.key: f for f in facts.label_facts(row, ["attributes.price"], "en")}
    assert got["material"].value == "Solid wood, 100% polyester"
    assert got["size"].value == "82x96x101 cm" and got["care"].value == "Machine wash the cover at 40°C."
    assert got["colour"].value == "Rattan,black" and got["colour"].swatches == [(0, 0, 0)]  # rattan names no single colour
    assert got["about"].value == "Solid wood frame, seat in 100% polyester fabric."  # the first sentence that is not the care one
    assert "price" not in got and "View more" not in facts.description_text(row["description"])
    assert facts.swatches("Black-brown") == [(0, 0, 0), (101, 55, 0)] and facts.swatches("Multi") == []
    navy = facts.swatches("Navy Blue")[0]
    assert navy[2] > 60 and navy[0] < 40 and navy[1] < 40
    assert facts.header("colour", "de") == "Farbe" and facts.header("price", "xx") == "Price"
    assert [facts.price_value(v) for v in ("1,299.00", "₹ 799", "12,5", "abc", "")] == [1299.0, 799.0, 12.5, None, None]


# ----------------------------------------------------------------------------- planning


def test_comparison_groups_are_ordered_split_and_keyed_by_every_member(tmp_path, fashion):
    from catalog_render.kinds.comparison import ComparisonKind

    shoes = {p: {"price": str(price)} for p, price in (("1636", 900), ("1657", 300), ("1788", 1200), ("1827", 50), ("1841", 700))}
    uri = _catalog(tmp_path, fashion, {**shoes, "1563": {}, "1595": {}, "1783": {}})  # + 2 Tshirts, 1 Sandals
    spec = JobSpec().with_overrides(kind="comparison", **{"comparison.order_by": "attributes.price", "comparison.min_size": 2})
    kind = ComparisonKind()
    plan = kind.plan(catalog.read_catalog(uri), spec, _ctx(tmp_path))
    groups = {r["product_id"]: json.loads(r["conditioning"])["members"] for r in plan.work.to_pylist()}
    # 5 shoes, max 4: 3 + 2, cheapest first; the lone sandal is out of scope, not quarantined
    assert groups == {"comparison:Sports Shoes:1of2": ["1827", "1657", "1841"], "comparison:Sports Shoes:2of2": ["1636", "1788"],
                      "comparison:Tshirts": ["1563", "1595"]}
    assert plan.quarantined == [] and plan.in_scope == 3
    keys = {r["product_id"]: r["render_key"] for r in plan.work.to_pylist()}
    shutil.copy(fashion / "images" / "1636.jpg", tmp_path / "photos" / "1657.jpg")  # one member's photo changes
    again = {r["product_id"]: r["render_key"] for r in kind.plan(catalog.read_catalog(uri), spec, _ctx(tmp_path)).work.to_pylist()}
    assert [g for g in keys if keys[g] != again[g]] == ["comparison:Sports Shoes:1of2"]


def test_members_whose_price_is_not_a_number_come_after_the_priced_ones():
    from catalog_render.kinds.comparison import _order

    rows = [{"product_id": p, "attributes": {"price": v}} for p, v in (("1", "abc"), ("2", "1,200"), ("3", None), ("10", "90"), ("9", "90"))]
    assert [r["product_id"] for r in _order(rows, "attributes.price")] == ["9", "10", "2", "1", "3"]
    assert [r["product_id"] for r in _order(rows, "-attributes.price")] == ["2", "10", "9", "1", "3"]
    assert [r["product_id"] for r in _order(rows, "product_id")] == ["1", "2", "3", "9", "10"]


def test_explicit_groups_quarantine_what_cannot_be_laid_out(tmp_path, fashion):
    from catalog_render.kinds.comparison import ComparisonKind

    uri = _catalog(tmp_path, fashion, {p: {} for p in ("1636", "1657", "1788", "1827", "1841", "1563")})
    (tmp_path / "groups.csv").write_text("group,ids\nrunners,1636,1657\nall shoes,1636,1657,1788,1827,1841\none,1563\n"
                                         "ghost,1563,99999\nalso runners,1657,1788\n")
    spec = JobSpec().with_overrides(kind="comparison", **{"comparison.groups_csv": str(tmp_path / "groups.csv")})
    plan = ComparisonKind().plan(catalog.read_catalog(uri), spec, _ctx(tmp_path))
    assert [json.loads(r["conditioning"])["members"] for r in plan.work.to_pylist()] == [["1636", "1657"], ["1657", "1788"]]  # 1657 in both
    why = dict(plan.quarantined)
    assert why["comparison:all shoes"] == ("group 'all shoes' has 5 products; the layout holds at most 4 (comparison.max_size, up to 6): "
                                           "split the group")
    assert why["comparison:one"] == "group 'one' has one product: nothing to compare"
    assert why["comparison:ghost"].endswith("not in the catalog or quarantined: 99999")


def _product_box(image):
    """A render cropped to the rows and columns holding pixels that are not its border colour
    (ΔE00 >= the foreground threshold of quality.checks), as a comparison tile shows it."""
    from catalog_render.quality import checks

    m = checks.foreground_mask(image)
    ys, xs = np.nonzero(m)
    return image.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)) if m.any() and not m.all() else image


def test_members_without_a_photo_are_rendered_at_the_groups_shared_seed_unless_their_conditioning_repeats(tmp_path, fashion, tiny_gan):
    from catalog_render.generators import registry
    from catalog_render.generators.base import Conditioning
    from catalog_render.kinds import tiles
    from catalog_render.kinds.base import generation_params
    from catalog_render.kinds.comparison import ComparisonKind

    uri = _catalog(tmp_path, fashion, {"1563": {}, "1595": {"photo": None}, "1645": {"photo": None}})  # three Tshirts of the model's catalog
    spec = JobSpec().with_overrides(kind="comparison", **{"comparison.min_size": 3})
    ctx = _ctx(tmp_path)
    ctx.model_uri = str(tiny_gan)
    kind = ComparisonKind()
    [item] = kind.plan(catalog.read_catalog(uri), spec, ctx).work.to_pylist()
    members = json.loads(item["inputs"])["members"]
    # 1595 and 1645 are both Black men's Tshirts: the model conditions on nothing else, so the same seed would draw the
    # same image; the second gets the seed derived from the group's and its repeat count
    assert "source_sha256" in members[0] and members[1]["render"]["seed"] == item["seed"]
    gid = json.loads(item["conditioning"])["group"]
    assert members[2]["render"]["seed"] == int(hashlib.sha256(f"{spec.comparison.seed}:{gid}:1".encode()).hexdigest()[:8], 16) != item["seed"]
    rendered = kind.render(item, kind.setup(spec, 1))
    assert f"1595: rendered at seed {item['seed']} (no usable photo)" in rendered.fields["plan_reason"]
    assert f"1645: rendered at seed {members[2]['render']['seed']} (no usable photo)" in rendered.fields["plan_reason"]
    assert json.loads(rendered.fields["members"]) == ["1563", "1595", "1645"] and rendered.fields["model_id"] == registry.describe(str(tiny_gan)).model_id
    # the 1645 tile is the generator's image at the group's seed, fitted on white (checked against a fresh generator)
    gen = registry.load_generator(str(tiny_gan))
    r = members[2]
    image = gen.generate([Conditioning(title=r["title"], category=r["category"], attributes=r["attributes"])], [r["render"]["seed"]],
                         generation_params(spec))[0]
    height = 400  # 1563 is a T-shirt on a model: the tallest product sets the group's tiles
    want = np.asarray(tiles.fit_whole(_product_box(image.convert("RGB")), (300, height)), np.int16)
    x = 24 + 170 + 2 * (300 + 16)
    got = np.asarray(rendered.image.convert("RGB"), np.int16)[24:24 + height, x:x + 300]
    assert np.abs(got - want).max() == 0
    # 1595's tile, beside it: the generator's image at the group's seed, not the same picture
    t = members[1]
    twin_want = gen.generate([Conditioning(title=t["title"], category=t["category"], attributes=t["attributes"])], [item["seed"]],
                             generation_params(spec))[0]
    twin = np.asarray(rendered.image.convert("RGB"), np.int16)[24:24 + height, x - 316:x - 16]
    assert np.abs(twin - np.asarray(tiles.fit_whole(_product_box(twin_want.convert("RGB")), (300, height)), np.int16)).max() == 0
    assert np.abs(twin - got).max() > 0
    spec2 = spec.with_overrides(**{"comparison.seed": 7})
    assert kind.plan(catalog.read_catalog(uri), spec2, ctx).work.to_pylist()[0]["render_key"] != item["render_key"]


def test_label_quarantines_a_product_with_nothing_to_tell(tmp_path, fashion):
    from catalog_render.kinds.label import LabelKind

    uri = _catalog(tmp_path, fashion, {"1636": {"color": "NA", "gender": "", "usage": ""}, "1657": {"description": ""}})
    plan = LabelKind().plan(catalog.read_catalog(uri), JobSpec().with_overrides(kind="label"), _ctx(tmp_path))
    assert [r["product_id"] for r in plan.work.to_pylist()] == ["1657"]  # an empty description: facts from the attributes
    assert plan.quarantined == [("1636", "nothing to put on a label: no colour, attributes or parsable description")]


# ----------------------------------------------------------------------------- runs on Ray


def test_comparison_run_renders_bad_input_sensibly_and_is_idempotent(ray_local, tmp_path, fashion, tiny_gan):
    from catalog_render.execution import run_job

    uri = _catalog(tmp_path, fashion, {
        "1636": {"price": "1299", "title": RTL}, "1657": {"price": "not a price"}, "1788": {"price": "450", "usage": LONG},
        "1827": {"title": CJK + " " + LONG}, "1563": {}, "1595": {}, "1645": {"photo": None}})
    out = str(tmp_path / "out")
    spec = JobSpec().with_overrides(kind="comparison", **{"execution.workers": 1, "comparison.min_size": 3, "comparison.currency": "₹"})
    s = run_job(spec, uri, None, out, num_cpus=2)
    rows = {r["product_id"]: r for r in manifest.read_manifest(out).to_pylist()}
    assert s.counts == {"ok": 2, "failed": 0, "skipped": 0}
    shoes, tees = rows["comparison:Sports Shoes"], rows["comparison:Tshirts"]
    assert json.loads(shoes["members"]) == ["1636", "1657", "1788", "1827"] and shoes["never_main"] is True and shoes["kind"] == "comparison"
    assert "price 'not a price' is not a number" in shoes["plan_reason"] and "1827: title shortened with …" in shoes["plan_reason"]
    assert "1788: usage shortened with …" in shoes["plan_reason"]
    assert json.loads(tees["members"]) == ["1563", "1595"] and "left out: 1645 (image missing (no image_uri); no --model to render it)" in tees["plan_reason"]
    im = np.asarray(Image.open(shoes["image_uri"]).convert("RGB"))
    assert im.shape[1] == 2 * 24 + 170 + 4 * 300 + 3 * 16 and (im[:20] == 255).all()  # four tiles, white margin
    assert read_provenance(open(shoes["image_uri"], "rb").read())["DigitalSourceType"].endswith("compositeWithTrainedAlgorithmicMedia")
    assert shoes["render_seconds"] > 0
    from catalog_render.report import write_report

    page = open(write_report(out), encoding="utf-8").read()
    assert "<th>kind</th><td>comparison</td>" in page and "seconds per image" in page and "comparison:Sports Shoes" in page
    again = run_job(spec, uri, None, out, num_cpus=2)
    assert again.planned == 0 and again.up_to_date == 2
    from catalog_render.generators import registry

    # with a model, 1645 is rendered: the row records the group's seed and the model, the member's seed in plan_reason
    run_job(spec, uri, str(tiny_gan), str(tmp_path / "with-model"), num_cpus=2)
    tees = {r["product_id"]: r for r in manifest.read_manifest(str(tmp_path / "with-model")).to_pylist()}["comparison:Tshirts"]
    gid_seed = int(hashlib.sha256(f"{spec.comparison.seed}:{tees['product_id']}".encode()).hexdigest()[:8], 16)
    assert json.loads(tees["members"]) == ["1563", "1595", "1645"] and tees["seed"] == gid_seed
    assert tees["model_id"] == registry.describe(str(tiny_gan)).model_id and f"1645: rendered at seed {gid_seed}" in tees["plan_reason"]


def test_label_run_writes_never_main_labels_and_is_idempotent(ray_local, tmp_path, fashion):
    from catalog_render.execution import run_job

    uri = _catalog(tmp_path, fashion, {
        "1636": {"title": RTL, "description": "Upper in leather and mesh. Wipe with a damp cloth."},
        "1657": {"description": "", "price": "₹ 2,499"}, "1827": {"title": CJK + LONG, "material": LONG}, "1563-bad": {"photo": None}})
    (tmp_path / "photos" / "1563-bad.jpg").write_bytes(b"not a jpeg")
    t = catalog.read_catalog(uri).to_pylist()
    t[-1]["image_uri"] = str(tmp_path / "photos" / "1563-bad.jpg")
    storage.write_parquet(pa.Table.from_pylist(t, schema=catalog.catalog_schema().arrow), uri)
    out = str(tmp_path / "out")
    spec = JobSpec().with_overrides(kind="label", **{"execution.workers": 1, "label.size": 800})
    s = run_job(spec, uri, None, out, num_cpus=2)
    rows = {r["product_id"]: r for r in manifest.read_manifest(out).to_pylist()}
    assert s.counts == {"ok": 3, "failed": 0, "skipped": 1}
    assert rows["1563-bad"]["error"].startswith("source photo unusable: image undecodable")
    for pid in ("1636", "1657", "1827"):
        r = rows[pid]
        assert r["never_main"] is True and r["kind"] == "label" and json.loads(r["renditions"]) == {"main": r["image_uri"]}
        assert Image.open(r["image_uri"]).size == (800, 800)
    assert "material shortened with …" in rows["1827"]["plan_reason"] and "title shortened with …" in rows["1827"]["plan_reason"]
    assert run_job(spec, uri, None, out, num_cpus=2).planned == 0


def test_a_line_mixing_right_to_left_and_cjk_is_ordered_by_the_bidi_algorithm_across_fonts():
    """UAX #9 on "مرحبا 中文 hello" in a right-to-left paragraph: the Arabic word (level 1) is read
    first, so it is drawn rightmost; the left-to-right "中文 hello" (level 2, two fonts) keeps its
    own order to its left. In a left-to-right paragraph a number after Arabic goes to its left."""
    mixed = "مرحبا 中文 hello"
    runs = text._runs(mixed, "regular")
    assert text.visual_runs(runs, rtl=True) == [("中文 ", 1, False), ("hello", 0, False), ("مرحبا ", 0, True)]
    assert text.visual_runs(text._runs("Shirt قميص 42", "regular"), rtl=False) == [
        ("Shirt ", 0, False), ("42", 0, False), ("قميص ", 0, True)]
    # drawn: the left part is the left-to-right text drawn alone, the right part the Arabic drawn alone
    size, (line,) = 24, text.wrap(mixed, 1000, "regular", 24, 1)[0]
    assert line.rtl

    def ink(lines, w):  # a box exactly the line's width: a right-to-left line starts at x = 0
        im = Image.new("L", (round(w) + 20, 40), 0)
        text.draw_lines(ImageDraw.Draw(im), lines, (0, 5, w), "regular", size, 255)
        return np.asarray(im)

    whole = ink([line], line.width)
    ltr_text, arabic = "中文 hello", "مرحبا "
    left_w = text.width(ltr_text + " ", "regular", size)
    left = ink([text.Line(text._runs(ltr_text, "regular"), text.width(ltr_text, "regular", size), False)], line.width)
    cut = int(left_w) - 2
    assert whole[:, :cut].max() == 255 and np.array_equal(whole[:, :cut], left[:, :cut])
    right = ink([text.Line(text._runs(arabic.strip(), "regular"), text.width(arabic.strip(), "regular", size), True)], line.width)
    cols = np.flatnonzero(right.max(axis=0) > 0)
    assert np.array_equal(whole[:, cols[0]:cols[-1] + 1], right[:, cols[0]:cols[-1] + 1])
