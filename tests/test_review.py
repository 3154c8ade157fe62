"""The review page over HTTP: a real run's output (local Ray, tiny GAN, real fashion photos) served by
the real Starlette app, through Starlette's TestClient and against the live uvicorn server on
127.0.0.1; outputs written by the project's manifest writer (tests/review_outputs.py) for the
cases a run does not make (a deleted image, an older manifest, other kinds, S3 on moto).
Browser-level checks are in test_review_browser.py."""

from __future__ import annotations

import html
import http.client
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from catalog_render import catalog, current, feedback, manifest, storage
from catalog_render.cli import app as cli_app
from catalog_render.config import JobSpec
from catalog_render.errors import ConfigError
from catalog_render.execution import run_job
from catalog_render.review.app import create_app
from catalog_render.review.server import make_server
from review_outputs import LiveServer, fashion_rows, render_png, write_output

SPEC = JobSpec().with_overrides(**{"mode": "refresh", "execution.workers": 1, "execution.batch_size": 4, "generation.seed": 5})
KEY = re.compile(r'class="rtile" data-key="([^"]+)"')


@dataclass
class Run:
    out: str
    rows: dict[str, dict]  # product_id -> its manifest row
    titles: dict[str, str]


@pytest.fixture(scope="module")
def run(ray_local, small_catalog, tiny_gan, tmp_path_factory) -> Run:
    """A real run of 6 real fashion products."""
    d = tmp_path_factory.mktemp("review-run")
    cat = catalog.read_catalog(str(small_catalog)).slice(0, 6)
    storage.write_parquet(cat, str(d / "catalog.parquet"))
    out = storage.display(str(d / "out"))
    s = run_job(SPEC, str(d / "catalog.parquet"), str(tiny_gan), out)
    assert s.counts["ok"] == 6
    rows = {r["product_id"]: r for r in manifest.read_manifest(out).to_pylist()}
    return Run(out, rows, dict(zip(cat.column("product_id").to_pylist(), cat.column("title").to_pylist())))


def client(out: str, reviewer: str = "alice") -> TestClient:
    return TestClient(create_app(out, reviewer), base_url="http://127.0.0.1")


def token(c: TestClient) -> str:
    r = c.get("/")
    return re.search(r'name=csrf-token content="([^"]+)"', r.text).group(1)


def message(page: str) -> str:
    """The error page's message, unescaped."""
    m = re.search(r"id=error-message>(.*?)</p>", page, re.S)
    return html.unescape(m.group(1)) if m else ""


def parts(out: str) -> list[str]:
    return storage.list_uris(feedback.feedback_prefix(out), suffix=".parquet")


def test_grid_shows_every_render_of_a_real_run_with_its_product(run):
    with client(run.out) as c:
        r = c.get("/")
    assert r.status_code == 200
    assert sorted(KEY.findall(r.text)) == sorted(row["render_key"] for row in run.rows.values())
    for pid, row in run.rows.items():
        assert f'<code class=pid>{pid}</code>' in r.text
        assert run.titles[pid].replace("'", "&#x27;") in r.text
        assert f"/image/{row['render_key']}/reference_thumb" in r.text  # the real photo beside the render
    assert "reviewer <b id=reviewer>alice</b>" in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["x-frame-options"] == "DENY"


def test_images_are_the_objects_the_manifest_names(run):
    with client(run.out) as c:
        for row in run.rows.values():
            r = c.get(f"/image/{row['render_key']}/render")
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert r.content == storage.read_bytes(row["image_uri"])
            ref = c.get(f"/image/{row['render_key']}/reference")
            assert ref.headers["content-type"] == "image/jpeg" and ref.content == storage.read_bytes(row["reference_uri"])


def test_no_path_from_the_url_reaches_storage(run):
    """Raw request lines against the live server (no client-side normalisation of ``..``)."""
    key = next(iter(run.rows.values()))["render_key"]
    with LiveServer(run.out) as live:
        for path in ("/image/../../etc/passwd", "/image/..%2F..%2Fetc%2Fpasswd/render", "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd/render",
                     f"/image/{key}/..%2F..%2F..%2Fetc%2Fpasswd", f"/image/{key}/%2Fetc%2Fpasswd", "/image/" + "0" * 64 + "/render",
                     f"/image/{run.rows[next(iter(run.rows))]['image_uri']}/render", "/render/..%2F..%2Fetc%2Fpasswd", "/static/../../etc/passwd"):
            conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
            conn.putrequest("GET", path, skip_host=True)
            conn.putheader("Host", "127.0.0.1")
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read().decode()
            assert resp.status == 404, (path, resp.status)
            assert "root:" not in body and "Traceback" not in body
            assert resp.getheader("content-type").startswith("text/html")
            conn.close()


def test_csrf_token_is_required_on_every_post(run):
    key = next(iter(run.rows.values()))["render_key"]
    before = parts(run.out)
    with client(run.out) as c, client(run.out) as other:
        good, foreign = token(c), token(other)
        assert good != foreign
        for headers in ({}, {"X-CSRF-Token": "x" * 43}, {"X-CSRF-Token": foreign}):
            for url, data in (("/api/verdict", {"verdict": "reject", "key": key}), ("/api/undo", {})):
                r = c.post(url, data=data, headers=headers)
                assert r.status_code == 403 and "CSRF" in r.json()["error"]
        r = c.post("/api/verdict", data={"verdict": "reject", "key": key, "csrf": "nope"}, headers={"accept": "text/html"})
        assert r.status_code == 403 and "CSRF token" in message(r.text)
        fresh = TestClient(create_app(run.out, "mallory"), base_url="http://127.0.0.1")  # no session cookie at all
        assert fresh.post("/api/verdict", data={"verdict": "reject", "key": key}, headers={"X-CSRF-Token": good}).status_code == 403
    assert parts(run.out) == before


def test_a_foreign_host_header_is_refused(run):
    with client(run.out) as c:
        assert c.get("/", headers={"host": "attacker.example"}).status_code == 400
        assert c.get("/", headers={"host": "localhost:8765"}).status_code == 200


def test_a_verdict_is_stored_as_feedback_import_stores_it_and_the_current_view_follows(run, tmp_path):
    a, b, *_ = sorted(run.rows)
    ka, kb = run.rows[a]["render_key"], run.rows[b]["render_key"]
    csv_path = tmp_path / "review.csv"
    csv_path.write_text(f"product_id,render_key,verdict,reviewer,comment\n{b},{kb},approve,bob,fine\n", encoding="utf-8")
    app = create_app(run.out, "alice")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        start = set(parts(run.out))
        r = c.post("/api/verdict", data={"verdict": "reject", "key": ka, "comment": "wrong colour"}, headers={"X-CSRF-Token": token(c)})
        assert r.status_code == 200
        assert r.json()["verdicts"] == {ka: {"verdict": "reject", "reviewer": "alice", "comment": "wrong colour"}}
        assert CliRunner().invoke(cli_app, ["feedback", "import", str(csv_path), "--output", run.out]).exit_code == 0
        assert app.state.refresher.wait(60)
    new = sorted(set(parts(run.out)) - start)
    assert len(new) == 2
    tables = [pq.read_table(p) for p in new]
    assert all(t.schema.equals(feedback.FEEDBACK_SCHEMA) for t in tables)  # the same parts, column for column
    page_part = next(t for t in tables if t.column("source")[0].as_py() == "review page").to_pylist()
    assert [(x["product_id"], x["render_key"], x["verdict"], x["reviewer"], x["comment"], x["source_line"]) for x in page_part] == [
        (a, ka, "reject", "alice", "wrong colour", 1)]
    latest = {(x["product_id"]): (x["verdict"], x["reviewer"]) for x in feedback.read_feedback(run.out).to_pylist()}
    assert latest[a] == ("reject", "alice") and latest[b] == ("approve", "bob")
    # current.parquet is what an import leaves: computed independently from the manifest, the feedback and the images
    expected = current.current_view(manifest.read_manifest(run.out), feedback.read_feedback(run.out),
                                     set(storage.list_uris(storage.join(run.out, "images"))))
    got = storage.read_parquet(storage.join(run.out, "current.parquet"))
    assert got.equals(expected)
    assert a not in got.column("product_id").to_pylist()


def test_a_verdict_for_a_render_not_in_the_manifest_is_a_clear_4xx(run):
    key = next(iter(run.rows.values()))["render_key"]
    before = parts(run.out)
    with client(run.out) as c:
        t = token(c)
        r = c.post("/api/verdict", data={"verdict": "approve", "key": [key, "f" * 64]}, headers={"X-CSRF-Token": t})
        assert r.status_code == 404
        assert r.json()["error"] == f"no rendered image with render_key {'f' * 64!r} in the manifest of {run.out}: nothing was stored"
        r = c.post("/api/verdict", data={"verdict": "maybe", "key": key}, headers={"X-CSRF-Token": t})
        assert r.status_code == 400 and r.json()["error"] == "field 'verdict': 'maybe' is not approve or reject"
        r = c.post("/api/verdict", data={"verdict": "approve"}, headers={"X-CSRF-Token": t})
        assert r.status_code == 400 and r.json()["error"] == "field 'key': no render selected"
        r = c.post("/api/verdict", data={"verdict": "approve", "key": "f" * 64}, headers={"X-CSRF-Token": t, "accept": "text/html"})
        assert r.status_code == 404 and "nothing was stored" in message(r.text) and "Traceback" not in r.text
    assert parts(run.out) == before


# --- outputs written by the manifest writer ------------------------------------------------------


@pytest.fixture
def synth(fashion, tmp_path):
    """An output of 20 renders of real photos (tests/review_outputs.py), part size 7."""
    out = storage.display(str(tmp_path / "out"))
    rows = write_output(out, fashion, fashion_rows(fashion, 20), part_rows=7)
    return out, rows


def test_filters_sort_and_paging_answer_from_the_columns(synth):
    out, rows = synth
    with client(out) as c:
        keys = KEY.findall(c.get("/?failed=1&sort=sharpness&desc=1").text)
        failed = [r for r in rows if r["quality_status"] == "failed-quality"]
        assert keys == [r["render_key"] for r in sorted(failed, key=lambda r: (-r["sharpness"], r["product_id"]))]
        cat = rows[3]["conditioning"].split('"category": "')[1].split('"')[0]
        want = sorted((r for r in rows if f'"category": "{cat}"' in r["conditioning"]), key=lambda r: (r["product_id"], r["render_key"]))
        assert KEY.findall(c.get("/", params={"category": cat}).text) == [r["render_key"] for r in want]
        by_id = sorted(rows, key=lambda r: (r["product_id"], r["render_key"]))
        assert KEY.findall(c.get("/?per=6&page=2").text) == [r["render_key"] for r in by_id[6:12]]
        assert KEY.findall(c.get("/?per=6&page=99").text) == [r["render_key"] for r in by_id[18:]]  # clamped to the last page
        t = token(c)
        c.post("/api/verdict", data={"verdict": "approve", "key": [by_id[0]["render_key"], by_id[1]["render_key"]]}, headers={"X-CSRF-Token": t})
        assert KEY.findall(c.get("/?unreviewed=1").text) == [r["render_key"] for r in by_id[2:]]
        for q, field in (("sort=bogus", "'sort'"), ("page=abc", "'page'"), ("per=0", "'per'"), ("scope=run:nope", "'scope'"), ("failed=maybe", "'failed'")):
            r = c.get("/?" + q)
            assert r.status_code == 400 and message(r.text).startswith(f"parameter {field}"), q
        assert "runs: 20260101T000000Z-review" in message(c.get("/?scope=run:nope").text)


def test_undo_restores_the_previous_verdict_and_never_another_reviewers(synth):
    out, rows = synth
    ka, kb = rows[1]["render_key"], rows[2]["render_key"]
    alice, bob = create_app(out, "alice"), create_app(out, "bob")
    with TestClient(alice, base_url="http://127.0.0.1") as ca, TestClient(bob, base_url="http://127.0.0.1") as cb:
        ta, tb = token(ca), token(cb)

        def state(key):
            fb = {x["render_key"]: (x["verdict"], x["reviewer"], x["comment"]) for x in feedback.read_feedback(out).to_pylist()}
            return fb.get(key)

        ca.post("/api/verdict", data={"verdict": "approve", "key": ka, "comment": "good"}, headers={"X-CSRF-Token": ta})
        ca.post("/api/verdict", data={"verdict": "reject", "key": ka}, headers={"X-CSRF-Token": ta})
        assert state(ka) == ("reject", "alice", None)
        r = ca.post("/api/undo", headers={"X-CSRF-Token": ta})
        assert r.status_code == 200 and r.json()["verdicts"] == {ka: {"verdict": "approve", "reviewer": "alice", "comment": "good"}}
        assert state(ka) == ("approve", "alice", "good")
        ca.post("/api/undo", headers={"X-CSRF-Token": ta})
        assert state(ka) is None  # withdrawn: not reviewed, as before the first verdict
        assert ka not in feedback.read_feedback(out).column("render_key").to_pylist()
        r = ca.post("/api/undo", headers={"X-CSRF-Token": ta})
        assert r.status_code == 409 and r.json()["error"].startswith("nothing to undo: alice")
        # bob judged after alice: alice's undo leaves bob's verdict
        ca.post("/api/verdict", data={"verdict": "reject", "key": kb}, headers={"X-CSRF-Token": ta})
        cb.post("/api/verdict", data={"verdict": "approve", "key": kb}, headers={"X-CSRF-Token": tb})
        r = ca.post("/api/undo", headers={"X-CSRF-Token": ta})
        assert r.status_code == 409  # alice's only standing action was overridden by bob
        assert state(kb) == ("approve", "bob", None)
        assert alice.state.refresher.wait(60) and bob.state.refresher.wait(60)
    hist = feedback.feedback_history(out).to_pylist()
    assert [h["verdict"] for h in hist if h["render_key"] == ka] == ["approve", "reject", "approve", "withdraw"]
    assert [h["source"].split(" by ")[-1] for h in hist if h["source"].startswith("undo of ")] == ["alice", "alice"]


def test_two_reviewers_at_once_never_lose_a_verdict(synth):
    out, rows = synth
    apps = {name: create_app(out, name) for name in ("alice", "bob")}
    clients = {name: TestClient(a, base_url="http://127.0.0.1") for name, a in apps.items()}
    tokens = {name: token(c) for name, c in clients.items()}
    mine = {"alice": [r["render_key"] for r in rows[0::2]], "bob": [r["render_key"] for r in rows[1::2]]}
    barrier = threading.Barrier(2)
    codes = []

    def review(name):
        barrier.wait()
        for i, key in enumerate(mine[name]):
            r = clients[name].post("/api/verdict", data={"verdict": "reject" if i % 3 == 0 else "approve", "key": key},
                                   headers={"X-CSRF-Token": tokens[name]})
            codes.append(r.status_code)

    threads = [threading.Thread(target=review, args=(n,)) for n in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == [200] * 20
    assert len(parts(out)) == 20
    latest = {x["render_key"]: (x["verdict"], x["reviewer"]) for x in feedback.read_feedback(out).to_pylist()}
    assert latest == {k: ("reject" if i % 3 == 0 else "approve", n) for n in mine for i, k in enumerate(mine[n])}
    for a in apps.values():
        assert a.state.refresher.wait(60) and a.state.refresher.last_error is None
    got = storage.read_parquet(storage.join(out, "current.parquet"))
    expected = current.current_view(manifest.read_manifest(out), feedback.read_feedback(out), set(storage.list_uris(storage.join(out, "images"))))
    assert got.equals(expected)  # the last rewrite saw both reviewers' parts
    for c in clients.values():
        c.close()


def test_a_deleted_image_is_a_clear_page(synth):
    out, rows = synth
    gone = rows[5]
    storage.delete(gone["image_uri"])
    with client(out) as c:
        assert c.get("/").status_code == 200
        r = c.get(f"/image/{gone['render_key']}/render")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert message(r.text) == (f"the image object of render {gone['render_key']!r} (product {gone['product_id']!r}) is gone: "
                                   f"{gone['image_uri']} was deleted after the run recorded it. The next `catalog-render run` on this "
                                   "output renders the product again.")
        page = c.get(f"/render/{gone['render_key']}")
        assert page.status_code == 200 and f"The image of this render is gone: <code>{gone['image_uri']}</code>" in page.text
        assert c.get(f"/image/{rows[6]['render_key']}/render").content == render_png(Path(rows[6]["reference_uri"]))


def test_an_output_without_manifest_is_a_clear_page(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "missing"):
        with client(str(out)) as c:
            r = c.get("/")
            assert r.status_code == 404 and "Traceback" not in r.text
            assert message(r.text).startswith(f"{out} has no manifest ({out}/manifest holds no Parquet part): no run has written renders")
            assert c.get("/image/" + "0" * 64 + "/render").status_code == 404


def test_a_manifest_from_an_older_version_is_a_clear_page(synth, fashion):
    out, rows = synth
    part = storage.list_uris(manifest.manifest_prefix(out), suffix=".parquet")[0]
    t = pq.read_table(part)
    pq.write_table(t.drop_columns(["finished_at"]), part)  # an older writer without a required column
    with client(out) as c:
        r = c.get("/")
        assert r.status_code == 409
        assert message(r.text) == (f"the manifest part {part} was written by another (older) version of catalog-render: it lacks the "
                                   "required column(s) finished_at. Review it with the version that wrote it, or render into a new output "
                                   "with this one.")
    pq.write_table(t.set_column(t.schema.get_field_index("seed"), "seed", pa.array(["s"] * t.num_rows)), part)  # another type
    with client(out) as c:
        r = c.get("/")
        assert r.status_code == 409 and message(r.text).startswith("the manifest does not match this version's schema")
    storage.write_bytes(part, b"not parquet")
    with client(out) as c:
        r = c.get("/")
        assert r.status_code == 409 and message(r.text).startswith(f"the manifest part {part} is not readable Parquet")


def test_every_kind_of_render_is_shown_and_filtered(fashion, tmp_path):
    out = storage.display(str(tmp_path / "out"))
    rows = write_output(out, fashion, fashion_rows(fashion, 9), kinds=["main-image", "comparison", "a-kind-from-the-future"])
    with client(out) as c:
        page = c.get("/").text
        assert len(KEY.findall(page)) == 9 and "<span class=kind>a-kind-from-the-future</span>" in page
        got = KEY.findall(c.get("/?kind=comparison").text)
        assert sorted(got) == sorted(r["render_key"] for i, r in enumerate(rows) if i % 3 == 1)


def test_an_s3_output_is_reviewed_through_the_storage_layer(fashion, bucket):
    out = f"s3://{bucket}/shop/renders"
    rows = write_output(out, fashion, fashion_rows(fashion, 5))
    app = create_app(out, "alice")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert sorted(KEY.findall(c.get("/").text)) == sorted(r["render_key"] for r in rows)
        assert c.get(f"/image/{rows[0]['render_key']}/render").content == storage.read_bytes(rows[0]["image_uri"])
        r = c.post("/api/verdict", data={"verdict": "reject", "key": rows[0]["render_key"]}, headers={"X-CSRF-Token": token(c)})
        assert r.status_code == 200
        assert app.state.refresher.wait(60) and app.state.refresher.last_error is None
    [part] = parts(out)
    assert part.startswith(f"s3://{bucket}/shop/renders/feedback/part-")
    view = storage.read_parquet(f"{out}/current.parquet")
    assert sorted(view.column("product_id").to_pylist()) == sorted(r["product_id"] for r in rows[1:] if r["quality_status"] == "passed")


def test_the_server_listens_on_loopback_unless_told_otherwise(synth):
    out, _ = synth
    with pytest.raises(ConfigError, match="--allow-remote"):
        make_server(out, host="0.0.0.0", port=0, reviewer="alice")
    warnings = []
    with pytest.raises(ConfigError, match="cannot listen there"):  # TEST-NET-1: no interface here, so nothing is ever bound
        make_server(out, host="192.0.2.1", port=0, reviewer="alice", allow_remote=True, warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith("warning: the review page listens on 192.0.2.1:0, reachable from other machines")
    with LiveServer(out) as live:  # a port in use: one line, exit 3, before anything is printed
        r = CliRunner().invoke(cli_app, ["review", out, "--port", str(live.port)])
        assert r.exit_code == 3 and r.stderr == f"error: --host 127.0.0.1 --port {live.port}: cannot listen there (Address already in use)\n"
    r = CliRunner().invoke(cli_app, ["review", out, "--host", "192.0.2.1"])
    assert r.exit_code == 3 and r.stderr.startswith("error: --host 192.0.2.1: the review page listens on loopback (127.0.0.1) only")
    r = CliRunner().invoke(cli_app, ["review", out, "--reviewer", " "])
    assert r.exit_code == 3 and "--reviewer: empty name" in r.stderr


def test_title_category_colour_follow_the_reports_rules():
    """review.loading.derived (one pyarrow.json parse) against report_data.conditioning_fields row by row,
    on the shapes a manifest may hold, including ones that send every row through the slow path."""
    import json as _json

    from catalog_render.report_data import conditioning_fields
    from catalog_render.review.loading import derived

    base = [_json.dumps({"title": "A T-shirt", "category": "Tshirts", "attributes": {"gender": "Men", "color": "Blue"}}), None, "", "  ",
            _json.dumps({"title": "", "category": "Watches", "attributes": {"colour": ""}}),
            _json.dumps({"title": "X", "attributes": {"baseColour": "Red"}}), _json.dumps({"category": 7})]
    for cond in (base, base + ["{not json"], base + [_json.dumps({"title": "t", "attributes": [["color", "Red"]]})],
                 base + ['{"title": "two\\nlines"}'], []):
        title, category, colour = derived(pa.chunked_array([pa.array(cond, pa.string())]))
        expected = []
        for raw in cond:
            try:
                obj = _json.loads(raw) if raw and raw.strip() else {}
            except ValueError:
                obj = {}
            expected.append(((obj.get("title") if isinstance(obj, dict) else None) or None, *conditioning_fields(raw)))
        assert list(zip(title.to_pylist(), category.to_pylist(), colour.to_pylist())) == expected, cond
