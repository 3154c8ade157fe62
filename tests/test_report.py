"""The HTML report and the PNG contact sheet, on a real output folder built in tmp_path."""

from __future__ import annotations

import base64
import io
import json
import re
import statistics

import numpy as np
import pytest
from PIL import Image

from catalog_render import manifest, report, storage
from catalog_render.errors import StorageError

OLD_RUN = "20240101T000000Z-aaaaaa"
RUN = "20240102T000000Z-bbbbbb"
SCRIPT_ERROR = "decoder said <script>alert('x')</script> & gave up"
NASTY_ID = '<b>bad&id"</b>'

# product -> known scores of the selected run's ok rows
SCORES = {
    "p-low": dict(sharpness=0.010, background_whiteness=0.90, fill_ratio=0.60, psnr=14.5, ssim=0.20),
    "p-high": dict(sharpness=0.020, background_whiteness=0.95, fill_ratio=0.80, psnr=float("inf"), ssim=0.90),
    "p-gone": dict(sharpness=0.045, background_whiteness=0.99, fill_ratio=0.70, psnr=None, ssim=None),
}


def _png(path, color, size=(64, 64), noise=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if noise:
        arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(path, "PNG")
    else:
        im = Image.new("RGB", size, (255, 255, 255))
        im.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), color), (size[0] // 4, size[1] // 4))
        im.save(path, "PNG")
    return str(path)


def _row(out, pid, status, **kw):
    cond = {"title": f"title {pid}", "category": "Tshirts", "attributes": {"color": "Blue", "gender": "Men"}, "prompt": None}
    row = dict(run_id=RUN, product_id=pid, render_key=f"key-{pid}", status=status, seed=1, model_id="abc123", family="gan",
               conditioning=json.dumps(cond), width=64, height=64)
    row.update(kw)
    return row


def build_output(tmp_path, noise=False) -> str:
    out = tmp_path / "out"
    o = str(out)
    rows = []
    # p-low: render + reference on disk
    rows.append(_row(o, "p-low", "ok", image_uri=_png(out / "images" / "p-low" / "k.png", (200, 30, 30), noise=noise),
                     reference_uri=_png(tmp_path / "refs" / "p-low.png", (30, 30, 200), size=(60, 80), noise=noise), **SCORES["p-low"]))
    # p-high: render on disk, reference is not an image (undecodable)
    bad_ref = tmp_path / "refs" / "p-high.jpg"
    bad_ref.write_bytes(b"not an image at all")
    rows.append(_row(o, "p-high", "ok", image_uri=_png(out / "images" / "p-high" / "k.png", (30, 160, 30), noise=noise),
                     reference_uri=str(bad_ref), **SCORES["p-high"]))
    # p-gone: render missing on disk, no reference
    rows.append(_row(o, "p-gone", "ok", image_uri=str(out / "images" / "p-gone" / "k.png"), reference_uri=None, **SCORES["p-gone"]))
    failed = _row(o, "p-fail", "failed", error=SCRIPT_ERROR)
    skipped = _row(o, NASTY_ID, "skipped", render_key=None, error="quarantined: product id is not valid")
    manifest.write_part(o, RUN, 0, rows[:2])
    manifest.write_part(o, RUN, 1, [rows[2], failed, skipped])
    # an older run: one ok row, no run record
    old = _row(o, "p-old", "ok", run_id=OLD_RUN, image_uri=_png(out / "images" / "p-old" / "k.png", (90, 90, 90)), sharpness=0.5)
    manifest.write_part(o, OLD_RUN, 0, [old])
    manifest.write_run_record(o, RUN, {
        "run_id": RUN, "catalog": "s3://shop/catalog.parquet", "model": {"uri": "models/gan-64", "family": "gan"},
        "mode": "incremental", "started_at": "2024-01-02T00:00:00+00:00", "finished_at": "2024-01-02T00:00:12+00:00",
        "wall_seconds": 12.5, "counts": {"planned": 5, "up_to_date": 7, "quarantined": 1}, "workers": 2,
        "images_per_second": 0.24, "seed": 1234,
    })
    return o


@pytest.fixture
def output(tmp_path):
    return build_output(tmp_path)


def _section(page: str, name: str) -> str:
    start = page.index(f"<section id={name}>")
    return page[start : page.index("</section>", start)]


def _cell(page: str, score: str, col: str) -> str:
    m = re.search(rf'<tr id="score-{score}">.*?<td class="num {col}">([^<]*)</td>', page, re.S)
    assert m, f"no {col} cell for {score}"
    return m.group(1)


def test_report_content(output):
    uri = report.write_report(output)
    assert uri == storage.join(output, "report.html")
    page = storage.read_bytes(uri).decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")

    # summary: latest run selected by default, record fields, counts by status
    summary = _section(page, "summary")
    assert RUN in summary and OLD_RUN not in summary
    assert re.search(r'id="count-ok">3<', summary) and re.search(r'id="count-failed">1<', summary) and re.search(r'id="count-skipped">1<', summary)
    for text in ("s3://shop/catalog.parquet", "incremental", "12.5", "0.24", "up to date <b>7", "planned <b>5", "quarantined <b>1", "abc123", "gan"):
        assert text in summary, text
    assert "Other run-record fields" in summary and "1234" in summary  # extra record key kept

    # all-runs table lists both runs with their counts
    runs = _section(page, "runs")
    assert OLD_RUN in runs and RUN in runs
    assert runs.index(OLD_RUN) < runs.index(RUN)

    # score statistics equal independently computed ones, formatted as the report does
    assert _cell(page, "sharpness", "mean") == report.format_number(statistics.mean(s["sharpness"] for s in SCORES.values()))
    assert _cell(page, "sharpness", "median") == report.format_number(0.020)
    assert _cell(page, "sharpness", "count") == "3"
    assert _cell(page, "ssim", "count") == "2"
    assert _cell(page, "ssim", "mean") == report.format_number(statistics.mean([0.20, 0.90]))
    # an infinite psnr is counted but left out of the statistics
    assert _cell(page, "psnr", "count") == "2"
    assert _cell(page, "psnr", "mean") == report.format_number(14.5)
    assert "1 non-finite left out" in page
    assert "Pech-Pacheco" in page  # definitions come from catalog_render.quality.scores

    # untrusted text is escaped everywhere
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; gave up" in _section(page, "failures")
    assert NASTY_ID not in page
    assert "&lt;b&gt;bad&amp;id&quot;&lt;/b&gt;" in _section(page, "failures")

    # contact sheet: lowest ssim first, rows without ssim last; missing/undecodable images as placeholders
    sheet = _section(page, "sheet")
    assert sheet.index("p-low") < sheet.index("p-high") < sheet.index("p-gone")
    assert "p-fail" not in sheet and "p-old" not in sheet
    assert "image missing" in sheet and "undecodable" in sheet
    assert "Tshirts" in sheet and "Blue" in sheet

    # embedded images: 5 histograms + p-low render and reference + p-high render
    assert page.count('src="data:image/png;base64,') == 5
    assert page.count('src="data:image/jpeg;base64,') == 3
    assert "http://" not in page.replace("http://www.w3.org", "") and "<script" not in page
    # thumbnails are at most 128 px tall
    for b64 in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page):
        assert Image.open(io.BytesIO(base64.b64decode(b64))).height <= 128


def test_report_other_run_and_sheet_limit(output):
    page = storage.read_bytes(report.write_report(output, run_id=OLD_RUN, max_sheet=0)).decode()
    assert re.search(r'id="count-ok">1<', _section(page, "summary"))
    assert "no run record" in _section(page, "summary")
    assert "data:image/jpeg" not in page  # max_sheet=0: no thumbnails
    with pytest.raises(StorageError, match="no run nope"):
        report.write_report(output, run_id="nope")


def test_no_manifest_raises(tmp_path):
    empty = str(tmp_path / "empty")
    with pytest.raises(StorageError, match="no manifest under"):
        report.write_report(empty)
    with pytest.raises(StorageError, match="no manifest under"):
        report.write_contact_sheet_png(empty, str(tmp_path / "sheet.png"))


def test_contact_sheet_png(output, tmp_path):
    dest = str(tmp_path / "docs" / "sheet.png")
    assert report.write_contact_sheet_png(output, dest, n=48, cols=2) == dest
    data = open(dest, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) <= 500_000
    im = Image.open(io.BytesIO(data))
    im.load()
    # 3 ok renders, 2 per row -> 2 x 2 cells of (render | reference) over a label
    t, gap, label = report.SHEET_THUMB, report.SHEET_GAP, report.SHEET_LABEL_H
    assert im.size == (2 * (2 * t + gap) + 3 * gap, 2 * (t + label) + 3 * gap)
    assert im.size == report.contact_sheet_size(3, 2)
    # first cell is p-low's render: its red square sits in the middle of the first thumbnail
    assert im.convert("RGB").getpixel((gap + t // 2, gap + t // 2)) == (200, 30, 30)
    # n caps the number of cells
    report.write_contact_sheet_png(output, dest, n=1, cols=8)
    assert Image.open(dest).size == report.contact_sheet_size(1, 8)


def test_run_without_ok_rows(output, tmp_path):
    newest = "20240103T000000Z-cccccc"
    manifest.write_part(output, newest, 0, [_row(output, "p-x", "failed", run_id=newest, error="out of memory")])
    page = storage.read_bytes(report.write_report(output)).decode()
    assert re.search(r'id="count-ok">0<', page) and re.search(r'id="count-failed">1<', page)
    assert "No ok renders to show." in page and "data:image/" not in page
    assert _cell(page, "ssim", "count") == "0" and _cell(page, "ssim", "mean") == report.format_number(None)
    dest = str(tmp_path / "empty.png")
    report.write_contact_sheet_png(output, dest)
    assert Image.open(dest).size == report.contact_sheet_size(1, 8)


def test_contact_sheet_png_size_cap(tmp_path):
    out = build_output(tmp_path, noise=True)  # noise does not compress
    dest = str(tmp_path / "sheet.png")
    report.write_contact_sheet_png(out, dest, cols=3, max_bytes=8_000)
    data = open(dest, "rb").read()
    assert len(data) <= 8_000
    im = Image.open(io.BytesIO(data))
    im.load()
    w, h = report.contact_sheet_size(3, 3)
    assert im.width < w and im.height < h and abs(im.width / im.height - w / h) < 0.1  # downscaled, same shape


def test_report_on_s3(tmp_path, bucket):
    out = f"s3://{bucket}/out"
    render = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(render, "PNG")
    storage.write_bytes(f"{out}/images/p1/k.png", render.getvalue())
    manifest.write_part(out, RUN, 0, [_row(out, "p1", "ok", image_uri=f"{out}/images/p1/k.png", sharpness=0.01)])
    uri = report.write_report(out)
    assert uri == f"s3://{bucket}/out/report.html"
    page = storage.read_bytes(uri).decode()
    assert RUN in page and page.count('src="data:image/jpeg;base64,') == 1
    report.write_contact_sheet_png(out, f"s3://{bucket}/docs/sheet.png")
    assert storage.read_bytes(f"s3://{bucket}/docs/sheet.png")[:8] == b"\x89PNG\r\n\x1a\n"
