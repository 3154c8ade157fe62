"""Which upscaler for marketplace sizes? Real-ESRGAN models against Lanczos, on real photos.

Quality: real fashion photos (225x300) are reduced with bicubic to the size a render has (48x64,
the GAN's native size) and to half size (112x150), then enlarged back to 225x300 by each method
and compared with the original photo:

- ``resolution``: quality.metrics.resolution_energy of the result over that of the original photo
  (1.0 = as much fine detail as the photo; a plain interpolation of a 64 px image scores near 0);
- ``lpips``: LPIPS-Alex between the result and the original photo (lower = closer);
- ``cpu_s``: CPU seconds of the enlargement per image (time.process_time: every thread of this
  process, so ncnn's own threads count), and ``wall_s``.

A method ``a+b`` runs Real-ESRGAN model a, then b (then Lanczos to the exact size, as every
method does when its integer scale misses 225x300).

Cost at marketplace sizes: a 48x64 image enlarged to fit each preset's canvas (Amazon 1000,
Google 1500, Shopify 2048, Walmart 2200 px) by the candidate chains, CPU seconds per image.

    python benchmarks/upscalers.py [--photos 16] [--images DIR] [--out DIR]

Photos default to the embedded sample (examples/fashion-sample/images), the first N by
sha256(file name). Results: a JSON file and side-by-side crops in --out (default
runs/upscalers), and a markdown table on stdout for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from catalog_render.pretrained.upscale import Upscaler, lanczos_resize  # noqa: E402
from catalog_render.quality import metrics  # noqa: E402

SINGLE = ["realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4", "realesrgan-x4plus", "realesrgan-x4plus-anime"]
SHORT = {"realesr-animevideov3-x2": "av3-x2", "realesr-animevideov3-x3": "av3-x3", "realesr-animevideov3-x4": "av3-x4",
         "realesrgan-x4plus": "x4plus", "realesrgan-x4plus-anime": "x4plus-anime"}
SETUPS = {"48x64 (x4.7)": (48, 64), "112x150 (x2)": (112, 150)}
CHAINS_48 = ["realesr-animevideov3-x2+realesr-animevideov3-x3", "realesr-animevideov3-x4+realesr-animevideov3-x4"]
#: (spec, max_passes) timed at marketplace sizes (64x48 -> canvas); the last model of a spec repeats.
MARKET_CHAINS = [("realesr-animevideov3-x4", 1), ("realesr-animevideov3-x4", 2), ("realesr-animevideov3-x4+realesr-animevideov3-x2", 2),
                 ("realesrgan-x4plus+realesr-animevideov3-x4", 2)]
CANVASES = {"amazon 1000": 1000, "google 1500": 1500, "shopify 2048": 2048, "walmart 2200": 2200}


def short(spec: str) -> str:
    return "+".join(SHORT[m] for m in spec.split("+"))


def photos(directory: Path, n: int) -> list[tuple[str, Image.Image]]:
    names = sorted((p.name for p in directory.glob("*.jpg")), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    out = []
    for name in names:
        im = Image.open(directory / name).convert("RGB")
        if im.size == (225, 300):
            out.append((name, im))
        if len(out) == n:
            break
    return out


def timed(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def quality(sample, out_dir: Path) -> list[dict]:
    lp = metrics.load_lpips()
    upscalers: dict[str, Upscaler] = {}
    rows = []
    for setup, small_size in SETUPS.items():
        methods = ["lanczos"] + SINGLE + (CHAINS_48 if small_size == (48, 64) else [])
        for method in methods:
            res, lps, cpu, wall = [], [], [], []
            for k, (name, photo) in enumerate(sample):
                small = photo.resize(small_size, Image.Resampling.BICUBIC)
                if method == "lanczos":
                    out, c, w = timed(lambda: lanczos_resize(small, photo.size))
                else:
                    up = upscalers.setdefault(method, Upscaler(method, max_passes=len(method.split("+"))))
                    # every model of the chain runs (the chain is what is measured), then Lanczos to 225x300
                    out, c, w = timed(lambda: lanczos_resize(_chain(up, small), photo.size))
                res.append(metrics.resolution_energy(out) / metrics.resolution_energy(photo))
                lps.append(lp([np.asarray(photo)], [np.asarray(out)])[0])
                cpu.append(c)
                wall.append(w)
                if k < 4:
                    out.save(out_dir / f"{setup.split()[0]}-{short(method) if method != 'lanczos' else 'lanczos'}-{name}.png")
            row = {"setup": setup, "method": method, "photos": len(sample), "resolution_ratio_median": float(np.median(res)),
                   "resolution_ratio_mean": float(np.mean(res)), "lpips_mean": float(np.mean(lps)), "lpips_median": float(np.median(lps)),
                   "cpu_s_per_image": float(np.mean(cpu)), "wall_s_per_image": float(np.mean(wall))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _chain(up: Upscaler, image: Image.Image) -> Image.Image:
    for k in range(len(up.models)):
        image = up.run_model(image, up.model_for_pass(k))
    return image


def market(sample) -> list[dict]:
    rows = []
    inputs = [photo.resize((48, 64), Image.Resampling.BICUBIC) for _, photo in sample[:4]]
    for spec, max_passes in MARKET_CHAINS:
        up = Upscaler(spec, max_passes=max_passes)
        for canvas_name, side in CANVASES.items():
            target = (round(side * 48 / 64), side)  # fit a 3:4 image in the square canvas
            cpu, wall, sizes = [], [], []
            for im in inputs:
                out, c, w = timed(lambda: up.resize(im, target))
                cpu.append(c)
                wall.append(w)
                sizes.append(out.size)
            row = {"spec": spec, "canvas": canvas_name, "target": list(target), "passes": up.passes_for(max(target[0] / 48, target[1] / 64)),
                   "cpu_s_per_image": float(np.mean(cpu)), "wall_s_per_image": float(np.mean(wall)), "images": len(inputs)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def markdown(q: list[dict], m: list[dict]) -> str:
    lines = ["| input | method | resolution (ratio to photo, median) | LPIPS vs photo (mean) | CPU s / image | wall s / image |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in q:
        lines.append(f"| {r['setup']} | {short(r['method']) if r['method'] != 'lanczos' else 'Lanczos'} | {r['resolution_ratio_median']:.3f} | "
                     f"{r['lpips_mean']:.4f} | {r['cpu_s_per_image']:.3f} | {r['wall_s_per_image']:.3f} |")
    lines += ["", "| 48x64 -> canvas | chain (passes run) | CPU s / image | wall s / image |", "| --- | --- | --- | --- |"]
    for r in m:
        lines.append(f"| {r['canvas']} ({r['target'][0]}x{r['target'][1]}) | {'+'.join(short(p) for p in r['passes'])} then Lanczos | "
                     f"{r['cpu_s_per_image']:.2f} | {r['wall_s_per_image']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=16)
    ap.add_argument("--images", type=Path, default=REPO / "examples" / "fashion-sample" / "images")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "upscalers")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(2)
    sample = photos(args.images, args.photos)
    q = quality(sample, args.out)
    m = market(sample)
    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
    (args.out / "upscalers.json").write_text(json.dumps({"env": env, "quality": q, "market": m}, indent=2))
    print(markdown(q, m))


if __name__ == "__main__":
    main()
