"""The review page shows each render's recognisability, the threshold the gate compared it with and
the note saying which check applied, sorts by it, and still opens outputs whose older manifest parts
lack those columns (outputs written by tests/review_outputs.py, served by the real Starlette app)."""

from __future__ import annotations

import html
import re

import pyarrow as pa
import pyarrow.parquet as pq
from starlette.testclient import TestClient

from catalog_render import manifest, storage
from catalog_render.review.app import create_app
from review_outputs import fashion_rows, write_output

KEY = re.compile(r'class="rtile" data-key="([^"]+)"')
RECOG = ("recognisability", "recognisability_note", "recognisability_threshold")
THRESHOLD = 0.25


def _value(i: int) -> float | None:
    """Row i's recognisability: every third row has none (its note says why), the rest spread over [0, 1)."""
    return None if i % 3 == 2 else round((i * 37 % 100) / 100, 2)


def _note(i: int) -> str:
    return "no catalog category" if i % 3 == 2 else ("category check: Tshirts" if i % 2 else "product check: 'Lounge Shorts' is not one of the judge's 47 classes")


def _output(fashion, tmp_path):
    """20 renders in parts of 7 rows; the first part is an older writer's (no recognisability columns)."""
    out = storage.display(str(tmp_path / "out"))
    rows = write_output(out, fashion, fashion_rows(fashion, 20), part_rows=7)
    parts = storage.list_uris(manifest.manifest_prefix(out), suffix=".parquet")
    assert len(parts) == 3
    start = 0
    for k, part in enumerate(parts):
        t = pq.read_table(part)
        n = t.num_rows
        if k == 0:
            t = t.drop_columns([c for c in RECOG if c in t.column_names])
        else:
            idx = range(start, start + n)
            for name, values, typ in (("recognisability", [_value(i) for i in idx], pa.float64()),
                                      ("recognisability_note", [_note(i) for i in idx], pa.string()),
                                      ("recognisability_threshold", [THRESHOLD] * n, pa.float64())):
                t = t.set_column(t.column_names.index(name), name, pa.array(values, typ))
        pq.write_table(t, part)
        start += n
    return out, rows, 7


def _tile(page: str, key: str) -> str:
    """The HTML of one render's tile on the grid."""
    start = page.index(f'data-key="{key}"')
    return page[start:page.index("</article>", start)]


def test_review_grid_shows_recognisability_its_threshold_and_note_and_sorts_by_it(fashion, tmp_path):
    out, rows, old = _output(fashion, tmp_path)
    with TestClient(create_app(out, "alice"), base_url="http://127.0.0.1") as c:
        r = c.get("/?per=200")
        assert r.status_code == 200 and len(KEY.findall(r.text)) == 20
        for i, row in enumerate(rows):
            tile = html.unescape(_tile(r.text, row["render_key"]))
            if i < old:  # the older part: no column, nothing shown, no error
                assert "recognisability" not in tile
                continue
            v = _value(i)
            if v is None:
                assert f'<div class="recog none" title="{_note(i)}">recognisability not scored</div>' in tile
            else:
                below = v < THRESHOLD
                want = f'<div class="recog{" below" if below else ""}" title="{_note(i)}">recognisability {v:.3g} {"<" if below else "≥"} {THRESHOLD:.3g}</div>'
                assert want in tile, (i, tile)
        # sorting by recognisability: highest first, unscored renders (and the old part's) last
        got = KEY.findall(c.get("/?per=200&sort=recognisability&desc=1").text)
        scored = sorted((i for i in range(old, 20) if _value(i) is not None), key=lambda i: (-_value(i), rows[i]["product_id"]))
        assert got[: len(scored)] == [rows[i]["render_key"] for i in scored]
        assert sorted(got[len(scored):]) == sorted(r["render_key"] for i, r in enumerate(rows) if i < old or _value(i) is None)
        # the render's own page: the score in the scores table, the note beside the value
        i = next(i for i in range(old, 20) if _value(i) is not None)
        page = html.unescape(c.get(f"/render/{rows[i]['render_key']}").text)
        assert f"<tr><td>recognisability</td><td class=num>{_value(i):.4g}</td><td>higher</td></tr>" in page
        assert f"<span class=rnote> · {_note(i)}</span>" in page
        old_page = html.unescape(c.get(f"/render/{rows[0]['render_key']}").text)
        assert old_page.count("recognisability") == 0
