"""Soak: one `catalog-render run` over >= 5,000 products of the full 44k-row fashion metadata
(../shared/data/fashion/styles_full_original.csv, most rows without a photo: a real backfill),
with RSS of the driver and of every render actor sampled while it runs.

    python benchmarks/soak.py --model DIR [--products 6000] [--out DIR] [--plot PNG]

Prints (and returns, for tests/test_soak.py) the RSS curve summary: for the driver and for each
actor process, RSS (MiB) at 25 %, 50 % and 100 % of the run's sampled time and the growth between
25 % and the end. Writes the samples as CSV and, with --plot, a PNG of the curve.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
CR = str(Path(sys.executable).parent / "catalog-render")
STYLES = REPO.parent / "shared" / "data" / "fashion" / "styles_full_original.csv"
MAP = "product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,attributes.usage=usage,attributes.season=season"


def _sample(proc: psutil.Process, samples: list, stop: threading.Event, every_s: float) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        try:
            rows = [("driver", proc.pid, proc.memory_info().rss)]
            for c in proc.children(recursive=True):
                try:
                    if "RenderWorker" in " ".join(c.cmdline()):
                        rows.append(("actor", c.pid, c.memory_info().rss))
                except psutil.Error:
                    pass
        except psutil.Error:
            return
        now = time.monotonic() - t0
        # a process that has exited but not been reaped reads as RSS 0: not a sample
        samples.extend((round(now, 2), role, pid, rss) for role, pid, rss in rows if rss > 0)
        stop.wait(every_s)


def soak(model: str, products: int, out: Path, workers: int = 2, batch_size: int = 32, every_s: float = 0.5) -> dict:
    """Ingest the 44k metadata, backfill ``products`` of them, sample RSS; returns a summary dict."""
    out.mkdir(parents=True, exist_ok=True)
    catalog = out / "styles.parquet"
    if not catalog.exists():
        subprocess.run([CR, "ingest", "--csv", str(STYLES), "--map", MAP, "--out", str(catalog)], check=True, capture_output=True)
    cmd = [CR, "run", "--catalog", str(catalog), "--model", model, "--output", str(out / "renders"), "--limit", str(products),
           "--workers", str(workers), "--batch-size", str(batch_size), "--no-report"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list = []
    stop = threading.Event()
    th = threading.Thread(target=_sample, args=(psutil.Process(p.pid), samples, stop, every_s), daemon=True)
    th.start()
    stdout, stderr = p.communicate(timeout=3600)
    stop.set()
    th.join()
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"soak run failed ({p.returncode}): {stderr[-2000:]}")
    with open(out / "rss.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["seconds", "role", "pid", "rss_bytes"])
        w.writerows(samples)
    summary = {"products": products, "wall_seconds": round(wall, 1), "summary": ((stdout + stderr).strip().splitlines() or [""])[-1], "processes": {}}
    for pid in sorted({s[2] for s in samples}):
        mine = [s for s in samples if s[2] == pid]
        role = mine[0][1]
        t_end = mine[-1][0]
        t_start = mine[0][0]

        def at(frac, mine=mine, t_start=t_start, t_end=t_end):
            t = t_start + frac * (t_end - t_start)
            return min(mine, key=lambda s: abs(s[0] - t))[3] / 2**20

        summary["processes"][f"{role}:{pid}"] = {
            "seconds": round(t_end - t_start, 1), "samples": len(mine), "rss_mib_25": round(at(0.25), 1), "rss_mib_50": round(at(0.5), 1),
            "rss_mib_end": round(at(1.0), 1), "rss_mib_max": round(max(s[3] for s in mine) / 2**20, 1),
            "growth_mib_25_to_end": round(at(1.0) - at(0.25), 1),
        }
    return summary


def plot(out: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(out / "rss.csv")))
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for pid in sorted({r["pid"] for r in rows}):
        mine = [r for r in rows if r["pid"] == pid]
        ax.plot([float(r["seconds"]) for r in mine], [int(r["rss_bytes"]) / 2**20 for r in mine], label=f"{mine[0]['role']} {pid}")
    ax.set_xlabel("seconds since the command started")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("soak: RSS of the driver and render actors")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--products", type=int, default=6000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--plot", default=None)
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="soak-"))
    s = soak(a.model, a.products, out)
    import json

    print(json.dumps(s, indent=2))
    if a.plot:
        plot(out, Path(a.plot))


if __name__ == "__main__":
    main()
