"""Backfill the whole fashion catalog (44,446 products, about 41,500 without a photo) end to end.

    python benchmarks/backfill_full.py --model DIR [--data ../shared/data/fashion] [--work DIR] [--job jobs/fashion.toml]

Ingests ``styles_full_original.csv`` with the 2,946 photos, runs ``catalog-render run`` (backfill,
no ``--limit``) as a child process, and samples every ``--every`` seconds the resident memory (RSS,
psutil) of the driver (the ``run`` process) and of each Ray actor (processes named ``ray::...``
whose name holds ``MapWorker``), and of Ray's own processes (raylet, GCS, idle workers) together.
Then writes the report with ``catalog-render report`` and times headless chromium
(``/usr/bin/chromium``) loading it to the ``load`` event, plus a screenshot.

Writes under ``--work``: ``catalog.parquet``, ``out/`` (the run's output), ``rss.csv`` (time s,
driver MB, actors MB each, ray-other MB), ``summary.json`` (wall and CPU seconds, images/s, peaks,
the report's size and load time) and prints the summary. ``--resume`` re-runs against an existing
output (the manifest's render_keys skip the finished products).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
CR = str(Path(sys.executable).parent / "catalog-render")
MAP = ("product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,"
       "attributes.usage=usage,attributes.season=season")


def _ray_processes(driver: psutil.Process) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(actors, other processes) below the driver: the embedded Ray's GCS, raylet and workers are
    its descendants (other Ray instances on the machine are not counted). Actors are the processes
    whose title holds ``MapWorker``."""
    actors, other = [], []
    try:
        children = driver.children(recursive=True)
    except psutil.Error:
        return actors, other
    for p in children:
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        (actors if cmd.startswith("ray::MapWorker") else other).append(p)
    return actors, other


def _rss_mb(procs) -> list[float]:
    out = []
    for p in procs:
        try:
            out.append(p.memory_info().rss / 2**20)
        except psutil.Error:
            pass
    return out


def _cpu_s(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_and_sample(cmd: list[str], rss_csv: Path, every: float) -> dict:
    """Run ``cmd``; sample RSS until it exits. Returns peaks, wall seconds and the process tree's CPU
    seconds (driver + Ray processes, as last seen alive)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    drv = psutil.Process(proc.pid)
    peak = {"driver": 0.0, "actor": 0.0, "actors_total": 0.0, "ray_other": 0.0, "all": 0.0}
    cpu_seen: dict[int, float] = {}
    with rss_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "driver_mb", "actors_mb", "ray_other_mb"])
        while proc.poll() is None:
            actors, other = _ray_processes(drv)
            d = sum(_rss_mb([drv]))
            a = _rss_mb(actors)
            o = sum(_rss_mb(other))
            for p in [drv, *actors, *other]:
                try:
                    t = p.cpu_times()
                    cpu_seen[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            w.writerow([round(time.perf_counter() - t0, 1), round(d, 1), " ".join(f"{x:.1f}" for x in a), round(o, 1)])
            f.flush()
            peak = {"driver": max(peak["driver"], d), "actor": max([peak["actor"], *a]), "actors_total": max(peak["actors_total"], sum(a)),
                    "ray_other": max(peak["ray_other"], o), "all": max(peak["all"], d + sum(a) + o)}
            time.sleep(every)
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1), "cpu_s_seen": round(sum(cpu_seen.values()), 1),
            "peak_rss_mb": {k: round(v) for k, v in peak.items()}}


def chromium_load(report: Path, shot: Path) -> dict:
    """Headless chromium: seconds to the page's load event (Selenium + Debian's chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    try:
        t0 = time.perf_counter()
        driver.get(report.as_uri())  # returns after the load event
        load_s = time.perf_counter() - t0
        n_img = driver.execute_script("return document.images.length")
        dom_nodes = driver.execute_script("return document.getElementsByTagName('*').length")
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    return {"load_s": round(load_s, 2), "images": n_img, "dom_elements": dom_nodes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fashion"))
    ap.add_argument("--work", default="/tmp/backfill-full")
    ap.add_argument("--job", default="jobs/fashion.toml")
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--resume", action="store_true", help="keep the existing output (the run skips finished products)")
    ap.add_argument("--report-only", action="store_true", help="only write and open the report of the existing output")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    catalog_uri, out = work / "catalog.parquet", work / "out"
    summary: dict = {"model": args.model}
    if not args.report_only:
        if not catalog_uri.exists():
            subprocess.run([CR, "ingest", "--csv", str(Path(args.data) / "styles_full_original.csv"), "--images", str(Path(args.data) / "images"),
                            "--map", MAP, "--out", str(catalog_uri)], check=True, cwd=REPO)
        if out.exists() and not args.resume:
            raise SystemExit(f"{out} exists: pass --resume to continue it, or remove it")
        cpu0 = time.process_time()
        summary["run"] = run_and_sample([CR, "run", "--catalog", str(catalog_uri), "--model", args.model, "--output", str(out), "--job", args.job,
                                         "--no-report"], work / "rss.csv", args.every)
        records = sorted((out / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
        rec = json.loads(records[-1].read_text())
        summary["record"] = {k: rec.get(k) for k in ("run_id", "status", "counts", "planned", "quarantined", "wall_seconds", "first_image_seconds",
                                                      "images_per_second")}
        summary["bench_cpu_s"] = round(time.process_time() - cpu0, 1)
    t0, c0 = time.perf_counter(), resource_children_cpu()
    subprocess.run([CR, "report", str(out)], check=True, cwd=REPO)
    summary["report"] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(resource_children_cpu() - c0, 1),
                         "bytes": (out / "report.html").stat().st_size}
    summary["chromium"] = chromium_load(out / "report.html", work / "report.png")
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


def resource_children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    main()
