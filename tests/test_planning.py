"""Planning selects exactly the right products (real files on disk, no Ray)."""

import hashlib
import json

import pyarrow as pa
import pytest
from PIL import Image

from catalog_render import catalog, planning
from catalog_render.errors import ConfigError
from catalog_render.generators.base import Conditioning

TEMPLATE = "a photo of {title}, {category}, {attributes.color}"


def _catalog(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20), "blue").save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    rows = [
        ("has-photo", "Blue shirt", "Shirts", [("color", "Blue")], str(good)),
        ("missing-file", "Red shoe", "Shoes", [("color", "Red")], str(tmp_path / "nope.jpg")),
        ("corrupt", "Green bag", "Bags", [("color", "Green")], str(corrupt)),
        ("zero-bytes", "Black belt", "Belts", [], str(empty)),
        ("no-uri", "White cap", "Caps", [("color", "White")], None),
        ("   ", "Blank id", "Caps", [], None),
        ("no-fields", None, None, [], None),
    ]
    t = pa.table(
        {
            "product_id": [r[0] for r in rows],
            "title": [r[1] for r in rows],
            "category": [r[2] for r in rows],
            "attributes": pa.array([r[3] for r in rows], pa.map_(pa.string(), pa.string())),
            "image_uri": [r[4] for r in rows],
        }
    )
    return catalog.conform(t)


def _plan(table, mode, done=None, existing=None, **kw):
    return planning.plan(
        table, mode=mode, model_id="m1", params_used={"width": 32, "height": 32}, job_seed=7,
        prompt_template=TEMPLATE, done_keys=done or {}, existing_images=existing or set(), **kw,
    )


def test_product_seed_is_sha256_derived():
    expected = int(hashlib.sha256(b"7:abc").hexdigest()[:16], 16) % 2**63
    assert planning.product_seed(7, "abc") == expected
    assert planning.product_seed(8, "abc") != expected


def test_backfill_selects_exactly_missing_or_unreadable_photos(tmp_path):
    p = _plan(_catalog(tmp_path), "backfill")
    assert sorted(p.work.column("product_id").to_pylist()) == ["corrupt", "missing-file", "no-uri", "zero-bytes"]
    reasons = dict(zip(p.work.column("product_id").to_pylist(), p.work.column("plan_reason").to_pylist()))
    assert reasons == {
        "missing-file": "image missing (not found)",
        "no-uri": "image missing (no image_uri)",
        "zero-bytes": "image undecodable: empty file (0 bytes)",
        "corrupt": reasons["corrupt"],
    }
    assert reasons["corrupt"].startswith("image undecodable: truncated (")
    assert p.quarantined == [("   ", "bad product_id: is blank (only whitespace)"), ("no-fields", "bad row: no title and no category to condition on")]
    assert p.work.column("reference_uri").to_pylist() == [None] * 4


def test_hide_images_renders_products_with_photos_and_keeps_them_as_reference(tmp_path):
    p = _plan(_catalog(tmp_path), "backfill", hide_images=True)
    rows = {r["product_id"]: r for r in p.work.to_pylist()}
    assert set(rows) == {"has-photo", "corrupt", "missing-file", "no-uri", "zero-bytes"}
    assert rows["has-photo"]["reference_uri"] == str(tmp_path / "good.png")
    assert rows["has-photo"]["plan_reason"] == "photo hidden (--hide-images)"


def test_refresh_is_idempotent_and_rerenders_exactly_a_changed_title(tmp_path):
    table = _catalog(tmp_path)
    first = _plan(table, "refresh")
    assert first.work.num_rows == 5
    reasons = dict(zip(first.work.column("product_id").to_pylist(), first.work.column("plan_reason").to_pylist()))
    assert reasons["has-photo"] == reasons["no-uri"] == "render_key not in manifest"
    assert reasons["missing-file"] == "render_key not in manifest; no reference: image missing (not found)"
    assert reasons["zero-bytes"] == "render_key not in manifest; no reference: image undecodable: empty file (0 bytes)"
    done = {r["render_key"]: f"img/{r['product_id']}" for r in first.work.to_pylist()}
    existing = set(done.values())
    again = _plan(table, "refresh", done, existing)
    assert again.work.num_rows == 0 and again.up_to_date == 5
    # the image of one done product vanished from storage: it is rendered again
    gone = _plan(table, "refresh", done, existing - {"img/corrupt"})
    assert gone.work.column("product_id").to_pylist() == ["corrupt"]
    assert gone.work.column("plan_reason")[0].as_py().startswith("render_key in manifest but its image is missing; no reference: image undecodable: ")
    # one title changes: exactly that product
    titles = table.column("title").to_pylist()
    titles[1] = "Red running shoe"
    changed = table.set_column(1, "title", pa.array(titles, pa.string()))
    p = _plan(changed, "refresh", done, existing)
    assert p.work.column("product_id").to_pylist() == ["missing-file"]
    # a different model renders everything again
    p = planning.plan(table, mode="refresh", model_id="m2", params_used={"width": 32, "height": 32}, job_seed=7,
                      prompt_template=TEMPLATE, done_keys=done, existing_images=existing)
    assert p.work.num_rows == 5


def test_render_key_covers_every_input():
    c = Conditioning(title="t", category="c", attributes={"color": "Red"}, prompt="p")
    base = planning.render_key(c, "m", {"width": 8}, 1)
    doc = json.dumps({"conditioning": json.loads(c.to_json()), "model_id": "m", "params": {"width": 8}, "seed": 1},
                     sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert base == hashlib.sha256(doc.encode()).hexdigest()
    variants = [
        planning.render_key(Conditioning(title="t2", category="c", attributes={"color": "Red"}, prompt="p"), "m", {"width": 8}, 1),
        planning.render_key(Conditioning(title="t", category="c", attributes={"color": "Blue"}, prompt="p"), "m", {"width": 8}, 1),
        planning.render_key(c, "m2", {"width": 8}, 1),
        planning.render_key(c, "m", {"width": 16}, 1),
        planning.render_key(c, "m", {"width": 8}, 2),
    ]
    assert len(set(variants + [base])) == 6


def test_limit_and_prompt_template(tmp_path):
    p = _plan(_catalog(tmp_path), "refresh", limit=2)
    assert p.work.num_rows == 2
    assert p.work.column("prompt").to_pylist()[0] == "a photo of Blue shirt, Shirts, Blue"
    belt = _plan(_catalog(tmp_path), "backfill").work.filter(pa.compute.equal(_plan(_catalog(tmp_path), "backfill").work["product_id"], "zero-bytes"))
    assert belt.column("prompt").to_pylist() == ["a photo of Black belt, Belts"]  # missing colour collapsed
    with pytest.raises(ConfigError, match=r"generation.prompt_template: unknown placeholder \{colour\}"):
        planning.check_template("{title} {colour}")
    with pytest.raises(ConfigError, match="mode"):
        _plan(_catalog(tmp_path), "nightly")


def test_a_photo_that_cannot_be_checked_stops_the_plan(tmp_path):
    from catalog_render.errors import StorageError

    table = _catalog(tmp_path)
    uris = table.column("image_uri").to_pylist()
    uris[0] = str(tmp_path)  # a directory: the store answers with an error, not "not found"
    table = table.set_column(table.schema.get_field_index("image_uri"), "image_uri", pa.array(uris, pa.string()))
    with pytest.raises(StorageError, match="is a directory"):
        _plan(table, "backfill")


def test_a_quarantine_is_identified_by_product_reason_and_row_content(tmp_path):
    """quarantine_key = sha256 of the canonical JSON of (product_id, reason, the row): the same on
    a re-plan, another when the row or the reason changes; rows already recorded are left out."""
    import json

    t = _catalog(tmp_path)
    p = _plan(t, "backfill")
    assert len(p.quarantine_keys) == len(p.quarantined) == 2
    row = t.slice(6, 1).to_pylist()[0]  # "no-fields"
    doc = json.dumps({"product_id": "no-fields", "reason": "bad row: no title and no category to condition on",
                      "row": {**row, "attributes": []}}, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    assert p.quarantine_keys[1] == hashlib.sha256(doc.encode()).hexdigest()
    assert _plan(t, "refresh").quarantine_keys == p.quarantine_keys  # same rows, same reasons: same keys
    before = _plan(t.append_column("description", pa.array([None] * 7, pa.string())), "backfill").quarantine_keys
    after = _plan(t.append_column("description", pa.array([None] * 6 + ["now described"], pa.string())), "backfill").quarantine_keys
    assert after[0] == before[0] and after[1] != before[1]  # only the row that changed is a new quarantine
    rows = p.quarantine_rows("r2", recorded={p.quarantine_keys[0]})
    assert [(r["product_id"], r["quarantine_key"]) for r in rows] == [("no-fields", p.quarantine_keys[1])]
    # attribute maps count by content, whatever their order
    assert planning.quarantine_key("x", "r", {"attributes": [("b", "2"), ("a", "1")]}) == planning.quarantine_key("x", "r", {"attributes": [("a", "1"), ("b", "2")]})
