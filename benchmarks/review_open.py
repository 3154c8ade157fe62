"""How fast does the review page open on an output with 50,000 renders?

Builds a synthetic output the way runs leave one: ``--rows`` ok manifest rows written by
``catalog_render.manifest.write_part`` in parts of ``--part-rows`` rows (a run flushes every 64 rows
by default, ``execution.manifest_flush_rows``), real conditioning JSON from the fashion catalog's
metadata (cycled), scores, a quarter failing the quality gate, and one image object per render
(``images/<product>/<render_key>.png``: hard links to one 48x64 PNG of a real photo) with the
product's real photo as reference (``tests/review_outputs.py``). Then it measures, on this machine:

1. server side, cold: a new app (``catalog_render.review.app.create_app``), the first ``GET /``
   through Starlette's TestClient: listing and reading every manifest part, building the review
   table, the page query and the HTML (CPU s of this process and wall s);
2. server side, warm: the same page again, then a filtered and score-sorted page;
3. browser: headless Debian chromium (selenium) against a fresh uvicorn server on 127.0.0.1 (so the
   first request pays the cold load): from ``driver.get`` to the page loaded with every image in
   the first screen decoded;
4. one verdict: the POST's wall time, and the background rewrite of ``current.parquet`` it causes
   (``catalog_render.current.write_current_view`` over all 50,000 rows).

    python benchmarks/review_open.py [--rows 50000] [--part-rows 64] [--keep DIR] [--no-browser]
    python benchmarks/review_open.py --screenshot docs/review-page.png --output OUTPUT [--path '/?category=X'] [--keys jx]

(the second form only takes a screenshot of the page of an existing output, for docs/review.md).

Results: benchmarks/RESULTS.md ("Review page").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
FASHION = REPO.parent / "shared" / "data" / "fashion"
SAMPLE = REPO / "examples" / "fashion-sample"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build(out: Path, rows: int, part_rows: int) -> None:
    """The synthetic output (see the module docstring; tests/review_outputs.py writes it)."""
    from review_outputs import fashion_rows, write_output

    src = FASHION if (FASHION / "metadata.csv").is_file() else SAMPLE
    write_output(str(out), src, fashion_rows(src, 500), part_rows=part_rows, link=os.link, cycle=True, rows=rows)


def server_side(out: Path) -> dict:
    from starlette.testclient import TestClient

    from catalog_render.review.app import create_app

    res = {}
    app = create_app(str(out), "bench")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        c0, w0 = cpu(), time.perf_counter()
        r = client.get("/")
        res["cold_cpu_s"], res["cold_wall_s"] = cpu() - c0, time.perf_counter() - w0
        assert r.status_code == 200, r.text[:500]
        res["tiles"] = len(re.findall(r'class="rtile"', r.text))
        c0, w0 = cpu(), time.perf_counter()
        client.get("/")
        res["warm_cpu_s"], res["warm_wall_s"] = cpu() - c0, time.perf_counter() - w0
        c0, w0 = cpu(), time.perf_counter()
        r = client.get("/?failed=1&unreviewed=1&sort=sharpness&desc=1&page=3")
        res["filtered_cpu_s"], res["filtered_wall_s"] = cpu() - c0, time.perf_counter() - w0
        assert r.status_code == 200
        token = re.search(r'name=csrf-token content="([^"]+)"', r.text).group(1)
        key = re.search(r'data-key="([0-9a-f]+)"', r.text).group(1)
        c0, w0 = cpu(), time.perf_counter()
        r = client.post("/api/verdict", data={"verdict": "reject", "key": key}, headers={"X-CSRF-Token": token})
        res["verdict_wall_s"] = time.perf_counter() - w0
        assert r.status_code == 200, r.text
        app.state.refresher.wait(600)  # the process does nothing else meanwhile: its CPU is the rewrite's
        res["current_view_rewrite_cpu_s"], res["current_view_rewrite_wall_s"] = cpu() - c0, time.perf_counter() - w0
        assert app.state.refresher.last_error is None, app.state.refresher.last_error
    return res


SHOWN = ("return document.readyState === 'complete' && Array.from(document.images).filter(i => "
         "i.getBoundingClientRect().top < innerHeight).every(i => i.complete && i.naturalWidth > 0)")


def _start(out: str, reviewer: str, size: str = "1400,1000"):
    """(server, its thread, a headless chromium driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from catalog_render.review.server import make_server

    server = make_server(out, port=0, reviewer=reviewer)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={size}", "--hide-scrollbars"):
        opts.add_argument(a)
    opts.binary_location = "/usr/bin/chromium"
    return server, thread, webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))


def screenshot(out: str, dest: Path, path: str, keys: str, reviewer: str) -> None:
    """A PNG of the page ``path`` of the review server on ``out`` after typing ``keys`` (e.g. ``jxjx``)."""
    from selenium.webdriver.common.action_chains import ActionChains

    server, thread, driver = _start(out, reviewer, "1360,900")
    try:
        driver.get(f"http://127.0.0.1:{server.config.port}{path}")
        while not driver.execute_script(SHOWN):
            time.sleep(0.05)
        for ch in keys:
            ActionChains(driver).send_keys(ch).perform()
        time.sleep(0.5)
        driver.save_screenshot(str(dest))
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(30)


def browser(out: Path) -> dict:
    server, thread, driver = _start(str(out), "bench")
    shown = SHOWN
    try:
        driver.get("about:blank")
        w0 = time.perf_counter()
        driver.get(f"http://127.0.0.1:{server.config.port}/")
        while not driver.execute_script(shown):
            time.sleep(0.01)
        first = time.perf_counter() - w0
        nav = driver.execute_script("const n = performance.getEntriesByType('navigation')[0]; return [n.responseEnd, n.loadEventEnd];")
        w0 = time.perf_counter()
        driver.get(f"http://127.0.0.1:{server.config.port}/?page=2")
        while not driver.execute_script(shown):
            time.sleep(0.01)
        second = time.perf_counter() - w0
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(30)
    return {"browser_first_page_s": first, "browser_html_received_s": nav[0] / 1000, "browser_load_event_s": nav[1] / 1000,
            "browser_next_page_s": second}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--part-rows", type=int, default=64)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the output here instead of a temporary folder")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--screenshot", type=Path, help="only take a screenshot of the page of --output into this PNG")
    ap.add_argument("--output", help="the output to screenshot (local or s3://)")
    ap.add_argument("--path", default="/", help="page of the screenshot, e.g. '/?category=Tshirts'")
    ap.add_argument("--keys", default="", help="keys typed before the screenshot, e.g. 'jx'")
    ap.add_argument("--reviewer", default="alice", help="reviewer name of the screenshot's server")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if args.screenshot:
        screenshot(args.output, args.screenshot, args.path, args.keys, args.reviewer)
        return
    tmp = None
    out = args.keep
    if out is None:
        tmp = tempfile.mkdtemp(prefix="review-bench-")
        out = Path(tmp) / "out"
    try:
        if not (out / "manifest").is_dir():
            w0 = time.perf_counter()
            build(out, args.rows, args.part_rows)
            print(f"built {args.rows} renders in {-(-args.rows // args.part_rows)} parts under {out} in {time.perf_counter() - w0:.1f} s")
        res = {"rows": args.rows, "part_rows": args.part_rows, **server_side(out)}
        if not args.no_browser:
            res.update(browser(out))
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}, indent=1))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
