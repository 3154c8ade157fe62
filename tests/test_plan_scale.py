"""The columnar planner gives exactly what the row-loop planner gave (tests/legacy_planning.py):
the same work items (render_key, seed, conditioning JSON, prompt, reference, plan_reason), counts
and quarantines, on real catalogs and on rows built to trip every shortcut it takes. An output
rendered before the planner became columnar therefore renders nothing new."""

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from legacy_planning import legacy_plan

from catalog_render import catalog, planning

FASHION_MAP = ("product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,"
               "attributes.usage=usage,attributes.season=season")
TEMPLATES = ["a photo of {title}, {category}, {attributes.color}", "{category} , {attributes.gender} {attributes.usage},{title}",
             "{title!s} {attributes.season:>8}"]  # the last one takes the per-row path (conversion, format spec)


def _same(table, **kw):
    new, old = planning.plan(table, batch_rows=kw.pop("batch_rows", 1000), **kw), legacy_plan(table, **kw)
    assert new.work.to_pylist() == old.work.to_pylist()
    assert (new.quarantined, new.quarantine_keys) == (old.quarantined, old.quarantine_keys)
    assert (new.up_to_date, new.in_scope, new.total, new.approved_kept) == (old.up_to_date, old.in_scope, old.total, old.approved_kept)
    return new


def _kw(mode, template=TEMPLATES[0], **extra):
    return {"mode": mode, "model_id": "m-é", "params_used": {"width": 64, "height": 48, "scheduler": "DDIM", "q": [1, "ü"]}, "job_seed": 11,
            "prompt_template": template, "done_keys": {}, "existing_images": set(), **extra}


def test_sample_catalog_both_modes_templates_limits_and_done_keys(tmp_path):
    sample = Path(__file__).resolve().parents[1] / "examples" / "fashion-sample"
    table = catalog.ingest(str(sample / "metadata.csv"), str(sample), catalog.parse_mapping(FASHION_MAP + ",image_uri=image_file")).table
    assert table.num_rows == 384
    for template in TEMPLATES:
        for mode in ("backfill", "refresh"):
            first = _same(table, **_kw(mode, template, hide_images=True))
            assert first.work.num_rows == 384
    # Half of the products rendered (ok rows), a quarter of those images gone: up to date / missing image / not in manifest.
    full = _same(table, **_kw("refresh"))
    keys = full.work.column("render_key").to_pylist()
    done = {k: f"/out/{k}.png" for k in keys[::2]}
    existing = {u for i, u in enumerate(done.values()) if i % 4}
    p = _same(table, **_kw("refresh", done_keys=done, existing_images=existing))
    assert p.up_to_date == len(existing) and p.work.num_rows == 384 - len(existing)
    assert {r["plan_reason"] for r in p.work.to_pylist()} == {"render_key not in manifest", "render_key in manifest but its image is missing"}
    for limit in (1, 7, 150):
        assert _same(table, **_kw("refresh", done_keys=done, existing_images=existing, limit=limit), batch_rows=50).work.num_rows == limit


def test_edge_rows_match_the_row_loop(tmp_path):
    photo = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(photo)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    m = pa.map_(pa.string(), pa.string())
    rows = [
        ("plain-1", "Blue  shirt ,  , x", "Shirts", [("color", "Blue")], None),
        ("quote\"id", 'He said "hi" \\ back\\', "Bags", [("usage", "Casual"), ("color", 'Re"d')], str(photo)),
        ("ctl", "tab\there\x01bell\nnew", "Caps", [("color", "x\x1fy")], str(tmp_path / "bad.jpg")),
        ("Jäger-Schal-42", "Ünïcödé\u3000title\u2028sep\u00a0nb", "Schals", [("farbe", "Grün"), ("color", "é")], None),
        ("AB/123-4", None, "Watches", None, str(tmp_path / "missing.jpg")),
        ("dupkeys", "t", "c", [("z", "1"), ("a", "2"), ("z", "3"), ("a", None)], None),
        ("nullval", "t2", None, [("color", None)], "../etc/passwd"),
        ("dup", "one", "c", [], None),
        ("dup", "two", "c", [], None),
        ("", "empty id", "c", [], None),
        (None, "null id", "c", [], None),
        ("../x", "path id", "c", [], None),
        ("zw\u200bsp", "zero width", "c", [], None),
        ("blank-row", " \u3000 ", "\t", [], None),
        ("empty-title", "", "Shoes", [], ""),
        ("000.780.32", "IKEA id", "Chair", [("color", "")], None),
        (" lead", "space id", ",", [], None),
    ]
    t = catalog.conform(pa.table({
        "product_id": pa.array([r[0] for r in rows], pa.string()), "title": [r[1] for r in rows], "category": [r[2] for r in rows],
        "description": ["d\\" if i % 2 else None for i in range(len(rows))],
        "attributes": pa.array([r[3] for r in rows], m), "image_uri": [r[4] for r in rows],
    }))
    for template in TEMPLATES + ["{description} {product_id} {attributes.a} {attributes.z} {attributes.farbe}", "fixed text"]:
        for mode in ("backfill", "refresh"):
            for batch_rows in (3, 100):
                _same(t, **_kw(mode, template), batch_rows=batch_rows)
    p = _same(t, **_kw("refresh"))
    reasons = dict((pid, w) for pid, w in p.quarantined if pid != "dup")
    assert reasons == {"": "bad product_id: is empty", None: "bad product_id: is null",
                       "../x": "bad product_id: has a '.' or '..' path segment: a path, not a product id",
                       "zw\u200bsp": "bad product_id: contains invisible format characters (U+200B)",
                       "blank-row": "bad row: no title and no category to condition on"}
    assert [w[:34] for pid, w in p.quarantined if pid == "dup"] == ["duplicate product_id: 2 rows share"] * 2
    assert p.work.num_rows == len(rows) - 7


def test_model_check_once_per_category_matches_the_row_loop(tiny_gan, small_catalog):
    """A class-conditional model objects to categories outside its vocabulary: checked once per
    category (conditioning_fields), the quarantines equal the per-row check's."""
    from catalog_render.generators import registry

    info = registry.describe(str(tiny_gan))
    table = catalog.read_catalog(str(small_catalog))
    table = table.set_column(table.column_names.index("category"), "category",
                             pa.array([c if i % 5 else "Spaceships" for i, c in enumerate(table.column("category").to_pylist())], pa.string()))
    kw = _kw("refresh", conditioning_problem=info.conditioning_problem)
    new = planning.plan(table, conditioning_fields=info.conditioning_fields, **kw)
    old = legacy_plan(table, **kw)
    assert new.work.to_pylist() == old.work.to_pylist() and new.quarantined == old.quarantined and new.in_scope == old.in_scope
    assert sum(1 for _, w in new.quarantined if w.startswith("cannot condition: category 'Spaceships'")) == (table.num_rows + 4) // 5


@pytest.mark.slow
def test_whole_fashion_catalog_matches_the_row_loop(fashion, tmp_path):
    """All 44,446 rows of styles_full_original.csv (22 with commas in the title, 2,946 with photos
    probed for real), both modes."""
    csv = tmp_path / "styles.csv"
    shutil.copy(fashion / "styles_full_original.csv", csv)
    table = catalog.ingest(str(csv), str(fashion / "images"), catalog.parse_mapping(FASHION_MAP)).table
    assert table.num_rows == 44_446
    back = _same(table, **_kw("backfill"), batch_rows=10_000)
    assert back.work.num_rows == 44_446 - 2_946 + sum(1 for r in back.work.column("plan_reason").to_pylist() if r.startswith("image undecodable"))
    _same(table, **_kw("refresh", TEMPLATES[1]), batch_rows=10_000)


def test_done_index_lookup_equals_set_membership():
    import hashlib

    from catalog_render.done_index import DoneIndex

    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    known, current = keys[:3000], keys[:3000:3]
    for idx in (DoneIndex(current, known), DoneIndex(current + ["x"], known + ["x"]), DoneIndex([], [])):  # digests, strings, empty
        for queries in (pa.array(keys[::-1]), pa.array(keys[::-1] + ["not-a-key", "x"])):
            cur, kn = idx.lookup(queries)
            want_known, want_current = set(idx.known.to_pylist()), set(idx.current.to_pylist())
            assert kn.tolist() == [q in want_known for q in queries.to_pylist()]
            assert cur.tolist() == [q in want_current for q in queries.to_pylist()]
    assert DoneIndex(current, known).lookup(pa.array(keys[:5]))[1].tolist() == [True] * 5
