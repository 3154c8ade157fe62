"""Review feedback: validation with line numbers, Parquet parts beside the manifest, latest verdict wins."""

import re
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog_render import feedback, manifest, storage
from catalog_render.errors import FeedbackError

KEY_A, KEY_B, KEY_C = "a" * 64, "b" * 64, "c" * 64
T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def _output_with_manifest(out: str) -> str:
    rows = [
        {"run_id": "r1", "product_id": "p1", "render_key": KEY_A, "status": "ok", "image_uri": "x"},
        {"run_id": "r1", "product_id": "p2", "render_key": KEY_B, "status": "ok", "image_uri": "y"},
        {"run_id": "r1", "product_id": "p/3", "render_key": KEY_C, "status": "ok", "image_uri": "z"},
        {"run_id": "r1", "product_id": "p4", "render_key": "d" * 64, "status": "failed", "error": "boom"},
    ]
    manifest.write_part(out, "r1", 0, rows)
    return out


def _write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_import_csv_and_read_back(tmp_path):
    out = _output_with_manifest(str(tmp_path / "out"))
    src = _write(tmp_path / "review.csv",
                 "product_id,render_key,verdict,comment,reviewer,extra\n"
                 f"p1,{KEY_A},approve,,alice,1\n"
                 f'p2,{KEY_B}, Reject ,"too blurry, colour off",bob,2\n')
    res = feedback.import_feedback(src, out, now=T0)
    assert re.fullmatch(r".*/feedback/part-20261130T120000000000Z-[0-9a-f]{6}\.parquet", res.uri)
    assert (res.rows, res.approved, res.rejected, res.ignored_columns) == (2, 1, 1, ["extra"])
    t = feedback.read_feedback(out)
    assert t.schema.equals(feedback.FEEDBACK_SCHEMA)
    assert t.select(["product_id", "verdict", "comment", "reviewer", "source_line"]).to_pylist() == [
        {"product_id": "p1", "verdict": "approve", "comment": None, "reviewer": "alice", "source_line": 2},
        {"product_id": "p2", "verdict": "reject", "comment": "too blurry, colour off", "reviewer": "bob", "source_line": 3},
    ]
    assert t.column("imported_at").to_pylist() == [T0, T0]
    assert set(t.column("source").to_pylist()) == {"review.csv"}


def test_bad_rows_are_reported_with_their_lines_and_nothing_is_written(tmp_path):
    out = _output_with_manifest(str(tmp_path / "out"))
    src = _write(tmp_path / "review.csv",
                 "product_id,render_key,verdict,comment,reviewer\n"  # line 1
                 f"p1,{KEY_A},aprove,,alice\n"  # 2: bad verdict
                 f'p2,{KEY_B},approve,"a comment\nover two lines",bob\n'  # 3-4: fine
                 f"p/3,{KEY_C},reject,,\n"  # 5: no reviewer
                 "\n"  # 6: blank, skipped
                 f"p1,{KEY_A},approve,alice\n"  # 7: 4 fields
                 f"p9,{KEY_A},approve,,carol\n"  # 8: not in the manifest
                 f"p1,{KEY_A},,,dave\n")  # 9: empty verdict
    with pytest.raises(FeedbackError) as exc:
        feedback.import_feedback(src, out)
    assert exc.value.problems == [
        "line 2: verdict 'aprove' is not approve or reject",
        "line 5: reviewer is empty",
        "line 7: 4 fields, the header has 5",
        f"line 8: no rendered image of product 'p9' with render_key '{KEY_A}' in the manifest of {storage.display(out)}",
        "line 9: verdict empty is not approve or reject",
    ]
    assert "5 bad row(s)" in str(exc.value) and "'aprove'" in str(exc.value)
    assert storage.list_uris(feedback.feedback_prefix(out)) == []
    assert feedback.read_feedback(out).num_rows == 0


def test_missing_columns_are_named(tmp_path):
    src = _write(tmp_path / "f.csv", "product_id,verdict\np1,approve\n")
    with pytest.raises(FeedbackError, match="missing required column.s. render_key, reviewer"):
        feedback.import_feedback(src, str(tmp_path / "out"))
    with pytest.raises(FeedbackError, match="empty"):
        feedback.import_feedback(_write(tmp_path / "e.csv", ""), str(tmp_path / "out"))
    with pytest.raises(FeedbackError, match="no feedback rows"):
        feedback.import_feedback(_write(tmp_path / "h.csv", "product_id,render_key,verdict,reviewer\n"), str(tmp_path / "out"))
    with pytest.raises(FeedbackError, match="cannot read feedback file"):
        feedback.import_feedback(str(tmp_path / "nope.csv"), str(tmp_path / "out"))


def test_parquet_rows_are_numbered_from_one_and_checked(tmp_path):
    out = _output_with_manifest(str(tmp_path / "out"))
    good = pa.table({"product_id": ["p1", "p2"], "render_key": [KEY_A, KEY_B], "verdict": ["APPROVE", "reject"],
                     "reviewer": ["alice", "bob"]})
    pq.write_table(good, tmp_path / "good.parquet")
    assert feedback.import_feedback(str(tmp_path / "good.parquet"), out).rows == 2
    bad = pa.table({"product_id": [1, None], "render_key": [KEY_A, KEY_B], "verdict": ["ok", "reject"], "reviewer": ["a", "b"]})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(FeedbackError) as exc:
        feedback.import_feedback(str(tmp_path / "bad.parquet"), out)
    assert exc.value.problems == ["row 1: verdict 'ok' is not approve or reject", "row 2: product_id is empty"]


def test_latest_verdict_wins_across_imports_and_within_a_file(tmp_path):
    out = _output_with_manifest(str(tmp_path / "out"))
    first = _write(tmp_path / "1.csv", "product_id,render_key,verdict,reviewer\n"
                   f"p1,{KEY_A},approve,alice\np2,{KEY_B},approve,alice\n")
    second = _write(tmp_path / "2.csv", "product_id,render_key,verdict,reviewer\n"
                    f"p1,{KEY_A},reject,bob\np1,{KEY_A},approve,carol\np/3,{KEY_C},reject,bob\n")
    feedback.import_feedback(first, out, now=T0)
    feedback.import_feedback(second, out, now=T0 + timedelta(hours=1))
    t = feedback.read_feedback(out)
    got = {(r["product_id"], r["verdict"], r["reviewer"]) for r in t.to_pylist()}
    assert got == {("p1", "approve", "carol"), ("p2", "approve", "alice"), ("p/3", "reject", "bob")}
    assert t.num_rows == 3


def test_unknown_pairs_allowed_when_the_manifest_is_not_checked(tmp_path):
    src = _write(tmp_path / "f.csv", f"product_id,render_key,verdict,reviewer\np1,{KEY_A},approve,a\n")
    res = feedback.import_feedback(src, str(tmp_path / "empty-out"), check_manifest=False)
    assert res.rows == 1 and feedback.read_feedback(str(tmp_path / "empty-out")).num_rows == 1


def test_feedback_on_s3(bucket, tmp_path):
    out = _output_with_manifest(f"s3://{bucket}/renders")
    storage.write_bytes(f"s3://{bucket}/inbox/review.csv",
                        f"product_id,render_key,verdict,reviewer\np2,{KEY_B},reject,bob\n".encode())
    res = feedback.import_feedback(f"s3://{bucket}/inbox/review.csv", out, now=T0)
    assert res.uri.startswith(f"s3://{bucket}/renders/feedback/part-20261130T120000000000Z-")
    t = feedback.read_feedback(out)
    assert t.select(["product_id", "verdict"]).to_pylist() == [{"product_id": "p2", "verdict": "reject"}]


def test_product_ids_are_kept_exactly_other_fields_trimmed():
    rows, problems, _ = feedback.validate_feedback(b"product_id,render_key,verdict,reviewer\n SKU 7 ,abc, reject , ann \n")
    assert not problems
    assert rows[0]["product_id"] == " SKU 7 " and rows[0]["verdict"] == "reject" and rows[0]["reviewer"] == "ann"
