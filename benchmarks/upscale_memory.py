"""Resident memory and CPU time of one Real-ESRGAN pass on the CPU, by ncnn tile size.

Each tile size runs in a fresh process (ncnn's allocators keep what they took): one pass of the
model over a real fashion photo resized to several sizes (ncnn sizes its buffers per input size),
printing the process's resident set size (psutil) after each pass, its CPU seconds, and the mean
absolute difference (levels of 255) of the first output from the untiled one (tile 0).

    python benchmarks/upscale_memory.py [--model realesrgan-x4plus] [--tiles 0,128,64] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZES = [(225, 300), (180, 260), (200, 231), (150, 200), (210, 290)]

CHILD = """
import json, sys, time
import numpy as np, psutil
from PIL import Image
from catalog_render.pretrained.upscale import Upscaler
model, tile, photo, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
u = Upscaler(model, max_passes=1, tilesize=tile)
base = Image.open(photo).convert("RGB")
rss, cpu = [], []
for i, (w, h) in enumerate(json.loads(sys.argv[5])):
    t = time.process_time()
    im = u.run_model(base.resize((w, h)), u.models[0])
    cpu.append(time.process_time() - t)
    rss.append(psutil.Process().memory_info().rss / 2**30)
    if i == 0:
        np.save(out, np.asarray(im))
print(json.dumps({"rss_gib": rss, "cpu_s": cpu}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\\n")[0])
    ap.add_argument("--model", default="realesrgan-x4plus")
    ap.add_argument("--tiles", default="0,128,64")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = ap.parse_args()
    import numpy as np

    photo = str(Path(args.data) / "fashion" / "images" / "1563.jpg")
    first = {}
    print("| tile (px) | RSS after each pass (GiB) | CPU s per pass (mean) | mean abs difference from tile 0 (levels) |")
    print("| --- | --- | --- | --- |")
    for tile in [int(t) for t in args.tiles.split(",")]:
        out = f"/tmp/upscale-memory-{tile}.npy"
        res = subprocess.run([sys.executable, "-c", CHILD, args.model, str(tile), photo, out, json.dumps(SIZES)],
                             capture_output=True, text=True, check=True, cwd=REPO)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        first[tile] = np.load(out).astype(int)
        diff = f"{np.abs(first[tile] - first[0]).mean():.2f}" if 0 in first else "-"
        print(f"| {tile or 'auto'} | {', '.join(f'{x:.2f}' for x in r['rss_gib'])} | {np.mean(r['cpu_s']):.1f} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
