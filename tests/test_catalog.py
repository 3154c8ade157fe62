"""Catalog ingest/validate on real files and crafted edge cases."""

import csv

import pyarrow as pa
import pytest

from catalog_render import catalog, storage
from catalog_render.errors import CatalogError

FASHION_MAP = "product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.usage=usage,attributes.season=season"


def test_parse_mapping_errors_name_the_entry():
    assert catalog.parse_mapping("product_id=id, title = name ,attributes.color=c") == {"product_id": "id", "title": "name", "attributes.color": "c"}
    with pytest.raises(CatalogError, match="unknown catalog field 'colour'"):
        catalog.parse_mapping("product_id=id,colour=c")
    with pytest.raises(CatalogError, match="not of the form"):
        catalog.parse_mapping("product_id=id,title")
    with pytest.raises(CatalogError, match="must map product_id"):
        catalog.parse_mapping("title=x")
    with pytest.raises(CatalogError, match="twice"):
        catalog.parse_mapping("product_id=id,title=a,title=b")


def test_csv_rows_with_unquoted_commas_are_merged_into_the_title():
    data = "id,name,color\n1,Plain shirt,Blue\n2,Shirt, tie, and socks,Red\n3,short\n".encode()
    r = catalog.read_csv_rows(data, overflow_column="name")
    assert [row["name"] for row in r.rows] == ["Plain shirt", "Shirt, tie, and socks"]
    assert [row["color"] for row in r.rows] == ["Blue", "Red"]
    assert r.repaired == [3]
    assert r.rejected == [(4, "2 fields, header has 3")]


def test_ingest_real_full_metadata_repairs_every_bad_row(fashion, tmp_path):
    src = fashion / "styles_full_original.csv"
    # Independent count of the malformed rows: lines with more fields than the header.
    with open(src, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    n_fields = len(rows[0])
    expected_repaired = {i + 1 for i, r in enumerate(rows) if len(r) > n_fields}
    assert len(expected_repaired) == 22  # as the data README says

    result = catalog.ingest(str(src), str(fashion / "images"), catalog.parse_mapping(FASHION_MAP))
    assert set(result.repaired_lines) == expected_repaired
    assert result.rejected == []
    assert result.table.num_rows == len(rows) - 1
    by_id = {r["product_id"]: r for r in result.table.to_pylist()}
    assert by_id["3413"]["title"] == "Myntra Men's Yes, its all about me White T-shirt"
    assert by_id["3413"]["category"] == "Tshirts"
    # photos: exactly the ids that have a file in images/
    have = {p.stem for p in (fashion / "images").glob("*.jpg")}
    with_photo = {pid for pid, r in by_id.items() if r["image_uri"]}
    assert with_photo == have & set(by_id)
    assert result.missing_images == len(by_id) - len(with_photo)
    # "NA" and empty cells are missing values: those attributes are absent
    na_ids = [r[0] for r in rows[1:] if len(r) == n_fields and r[8] == "NA"]
    assert na_ids and all("usage" not in dict(by_id[i]["attributes"]) for i in na_ids)


def test_ingest_non_ascii_and_image_lookup_by_stem(tmp_path):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    from PIL import Image

    Image.new("RGB", (10, 10), "red").save(img_dir / "a1.png")
    (tmp_path / "c.csv").write_text("sku,name,cat\na1,POÄNG Sessel – Birke,Chairs\nb2,Bänk,\n", encoding="utf-8")
    r = catalog.ingest(str(tmp_path / "c.csv"), str(img_dir), catalog.parse_mapping("product_id=sku,title=name,category=cat"))
    rows = r.table.to_pylist()
    assert rows[0]["title"] == "POÄNG Sessel – Birke" and rows[0]["image_uri"] == str(img_dir / "a1.png")
    assert rows[1]["category"] is None and rows[1]["image_uri"] is None
    assert r.missing_images == 1
    assert r.without_photo == [(3, "b2", "no b2.jpg/.jpeg/.png/.webp under --images")]
    # with an image column: an empty cell and a file name that is not in the folder, each named
    (tmp_path / "d.csv").write_text("sku,name,img\na1,A,a1.png\nb2,B,\nc3,C,c3.jpg\n", encoding="utf-8")
    r = catalog.ingest(str(tmp_path / "d.csv"), str(img_dir), catalog.parse_mapping("product_id=sku,title=name,image_uri=img"))
    assert r.without_photo == [(3, "b2", "column 'img' is empty"), (4, "c3", "no file 'c3.jpg' under --images (looked up by relative path, then by file name)")]
    assert r.table.schema.equals(catalog.catalog_schema().arrow)
    # without --images the column holds the URIs: a local path that names no file is no photo; S3 is not probed here
    (tmp_path / "e.csv").write_text(f"sku,img\na1,{img_dir / 'a1.png'}\nb2,{tmp_path / 'gone.jpg'}\nc3,s3://bucket/c3.jpg\n", encoding="utf-8")
    r = catalog.ingest(str(tmp_path / "e.csv"), None, catalog.parse_mapping("product_id=sku,image_uri=img"))
    assert [x["image_uri"] for x in r.table.to_pylist()] == [str(img_dir / "a1.png"), None, "s3://bucket/c3.jpg"]
    assert r.missing_images == 1 and r.without_photo[0][:2] == (3, "b2") and str(tmp_path / "gone.jpg") in r.without_photo[0][2]


def test_ingest_errors(tmp_path):
    (tmp_path / "c.csv").write_text("id,name\n1,a\n2,b\n1,c\n3,d\n2,e\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"duplicate product_id values \(2\): 1, 2"):
        catalog.ingest(str(tmp_path / "c.csv"), None, catalog.parse_mapping("product_id=id,title=name"))
    with pytest.raises(CatalogError, match="not in the CSV: category=articleType"):
        catalog.ingest(str(tmp_path / "c.csv"), None, catalog.parse_mapping("product_id=id,category=articleType"))


def test_validate_reports_every_problem_with_its_row():
    t = pa.table({
        "product_id": ["a", "", None, "a", "x" * 300, "ok\x00", "../up", "/abs", "zw\u200bsp", "b"],
        "title": ["t"] * 9 + [" "],
        "image_uri": [None, None, None, "../../etc/passwd", None, None, None, None, None, None],
    })
    problems = [str(p) for p in catalog.validate(t)]
    assert problems == [
        "table: category: required column is missing",
        "row 1 (product_id=''): product_id: is empty",
        "row 2: product_id: is null",
        "row 3 (product_id='a'): product_id: duplicate of row 0",
        f"row 4 (product_id='{'x' * 300}'): product_id: is 300 characters long (max 256)",
        "row 5 (product_id='ok\\x00'): product_id: contains control characters (U+0000)",
        "row 6 (product_id='../up'): product_id: has a '.' or '..' path segment: a path, not a product id",
        "row 7 (product_id='/abs'): product_id: starts with '/': a path, not a product id",
        "row 8 (product_id='zw\\u200bsp'): product_id: contains invisible format characters (U+200B)",
        "row 9 (product_id='b'): title/category: no title and no category to condition on",
        "row 3 (product_id='a'): image_uri: contains a '..' segment",
    ]


def test_read_catalog_structural_errors(tmp_path):
    storage.write_parquet(pa.table({"id": ["1"], "title": ["x"], "category": ["c"]}), str(tmp_path / "noid.parquet"))
    with pytest.raises(CatalogError, match="product_id: required column is missing"):
        catalog.read_catalog(str(tmp_path / "noid.parquet"))
    with pytest.raises(CatalogError, match="catalog not found"):
        catalog.read_catalog(str(tmp_path / "missing.parquet"))
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet")
    with pytest.raises(CatalogError, match="is not a Parquet file: make one from a CSV .* with `catalog-render ingest"):
        catalog.read_catalog(str(tmp_path / "garbage.parquet"))
    (tmp_path / "cut.parquet").write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")  # Parquet's magic, no valid footer
    with pytest.raises(CatalogError, match="cut.parquet is damaged Parquet: "):
        catalog.read_catalog(str(tmp_path / "cut.parquet"))
    # duplicates are row problems: read_catalog keeps the rows, the planner quarantines them all
    storage.write_parquet(pa.table({"product_id": ["1", "1"], "title": ["x", "y"], "category": ["c", "c"]}), str(tmp_path / "dup.parquet"))
    assert catalog.read_catalog(str(tmp_path / "dup.parquet")).column("title").to_pylist() == ["x", "y"]


def test_split_is_deterministic_and_disjoint():
    t = pa.table({"product_id": [str(i) for i in range(1000)]})
    a_train, a_hold = catalog.split_holdout(t, 0.2, seed=3)
    b_train, b_hold = catalog.split_holdout(t.take(list(range(999, -1, -1))), 0.2, seed=3)
    assert set(a_hold["product_id"].to_pylist()) == set(b_hold["product_id"].to_pylist())
    assert not set(a_hold["product_id"].to_pylist()) & set(a_train["product_id"].to_pylist())
    assert 150 < a_hold.num_rows < 250
