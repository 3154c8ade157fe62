"""The review page in a real browser: Debian's chromium, headless, driven by selenium through
chromium-driver, against the live server (uvicorn, 127.0.0.1) on the output of a real run (local Ray,
tiny GAN, real fashion photos). A reviewer filters, approves one render and rejects another with
the keyboard (and undoes and redoes the rejection), reloads; then the feedback parts on disk, the
current view and the next run's renders are checked."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
from collections import Counter

import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from catalog_render import catalog, current, feedback, manifest, planning, storage
from catalog_render.config import JobSpec
from catalog_render.execution import run_job
from review_outputs import LiveServer

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SPEC = JobSpec().with_overrides(**{"mode": "refresh", "execution.workers": 1, "execution.batch_size": 4, "generation.seed": 23})

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} absent: apt-get install chromium chromium-driver")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or DRIVER))
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _listening(port: int) -> list[str]:
    """Addresses this process listens on at ``port``."""
    me = os.getpid()
    return [c.laddr.ip for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid == me and c.laddr.port == port]


def test_a_reviewer_approves_and_rejects_with_the_keyboard_and_the_next_run_follows(ray_local, small_catalog, tiny_gan, tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    cat = catalog.read_catalog(str(small_catalog)).slice(0, 8)
    cat_uri = str(tmp_path / "catalog.parquet")
    storage.write_parquet(cat, cat_uri)
    out = storage.display(str(tmp_path / "out"))
    first = run_job(SPEC, cat_uri, str(tiny_gan), out)
    assert first.counts["ok"] == 8
    rows = {r["product_id"]: r for r in manifest.read_manifest(out).to_pylist()}
    category, n = Counter(cat.column("category").to_pylist()).most_common(1)[0]
    assert n >= 2
    in_category = sorted(pid for pid, c in zip(cat.column("product_id").to_pylist(), cat.column("category").to_pylist()) if c == category)

    def keys(*chars):
        for ch in chars:
            ActionChains(browser).send_keys(ch).perform()

    def status_says(text):
        WebDriverWait(browser, 30).until(lambda d: text in d.find_element(By.ID, "status").text)

    def badges():
        return {t.get_attribute("data-key"): t.find_element(By.CSS_SELECTOR, ".vbadge").text for t in browser.find_elements(By.CSS_SELECTOR, ".rtile")}

    with LiveServer(out, reviewer="carol") as live:
        addrs = _listening(live.port)
        assert addrs and all(ipaddress.ip_address(a).is_loopback for a in addrs), addrs  # 127.0.0.1 only, never 0.0.0.0
        browser.get(live.url + "/")
        assert len(browser.find_elements(By.CSS_SELECTOR, ".rtile")) == 8
        Select(browser.find_element(By.ID, "f-category")).select_by_value(category)
        browser.find_element(By.ID, "apply").click()
        WebDriverWait(browser, 30).until(lambda d: "category=" in d.current_url)
        tiles = browser.find_elements(By.CSS_SELECTOR, ".rtile")
        assert [t.find_element(By.CSS_SELECTOR, "code.pid").text for t in tiles] == in_category
        approved, rejected = in_category[0], in_category[1]
        # every image on the page is loaded (render and real photo), none broken
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
        assert browser.execute_script("return Array.from(document.images).filter(i => i.naturalWidth === 0).length") == 0

        keys("j", "a", "r")  # focus the first render, approve it (focus moves on), reject the second: typed at once, none dropped
        WebDriverWait(browser, 30).until(lambda d: badges()[rows[rejected]["render_key"]] == "rejected · carol")
        assert badges()[rows[approved]["render_key"]] == "approved · carol"
        counts = [browser.find_element(By.ID, f"count-{c}").text for c in ("unreviewed", "approve", "reject")]
        assert counts == ["6", "1", "1"]  # the header (all 8 renders in view) follows without a reload
        keys("u")  # undo the rejection ...
        status_says("undid ")
        assert badges()[rows[rejected]["render_key"]] == "not reviewed"
        keys("c")  # ... and reject again, with a comment
        browser.switch_to.active_element.send_keys("colour is off")
        keys("\ue007", "r")  # Enter leaves the comment box; r rejects the focused render
        status_says("rejected 1 render")

        browser.refresh()  # the verdicts are stored, not just shown
        b = badges()
        assert b[rows[approved]["render_key"]] == "approved · carol"
        assert b[rows[rejected]["render_key"]] == "rejected · carol · \u201ccolour is off\u201d"
        browser.find_element(By.ID, "f-unreviewed").click()
        browser.find_element(By.ID, "apply").click()
        WebDriverWait(browser, 30).until(lambda d: "unreviewed=1" in d.current_url)
        assert [t.find_element(By.CSS_SELECTOR, "code.pid").text for t in browser.find_elements(By.CSS_SELECTOR, ".rtile")] == in_category[2:]
        assert live.app.state.refresher.wait(60)

    # the feedback parts: one per action, as `feedback import` stores them
    part_uris = storage.list_uris(feedback.feedback_prefix(out), suffix=".parquet")
    stored = [pq.read_table(p) for p in part_uris]
    assert len(stored) == 4 and all(t.schema.equals(feedback.FEEDBACK_SCHEMA) and t.num_rows == 1 for t in stored)
    history = [(h["product_id"], h["verdict"], h["reviewer"], h["comment"]) for h in feedback.feedback_history(out).to_pylist()]
    assert history == [(approved, "approve", "carol", None), (rejected, "reject", "carol", None), (rejected, "withdraw", "carol", None),
                       (rejected, "reject", "carol", "colour is off")]
    view = {r["product_id"]: r for r in storage.read_parquet(storage.join(out, current.CURRENT_VIEW)).to_pylist()}
    assert rejected not in view and view[approved]["verdict"] == "approve" and view[approved]["reviewer"] == "carol"

    # the next run renders the rejected product again with the next seed and keeps the approved one
    second = run_job(SPEC, cat_uri, str(tiny_gan), out)
    assert (second.planned, second.counts["ok"]) == (1, 1)
    m = manifest.read_manifest(out)
    [new] = m.filter(pc.equal(m.column("run_id"), second.run_id)).to_pylist()
    assert new["product_id"] == rejected
    assert new["seed"] == planning.attempt_seed(23, rejected, 1) != rows[rejected]["seed"]
    assert new["plan_reason"].startswith(f"rejected render {rows[rejected]['render_key'][:12]} by carol")
    view = {r["product_id"]: r for r in storage.read_parquet(storage.join(out, current.CURRENT_VIEW)).to_pylist()}
    assert view[approved]["render_key"] == rows[approved]["render_key"] and view[rejected]["render_key"] == new["render_key"]
    assert json.loads(new["conditioning"]) == json.loads(rows[rejected]["conditioning"])
