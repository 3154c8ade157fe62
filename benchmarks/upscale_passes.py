"""Is a second Real-ESRGAN pass worth it for a 256x192 render? CPU seconds and what it adds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/upscale_passes.py [--model models/fashion-reference] [--n 8]

For ``--n`` renders of the model (categories of its vocabulary, seed = index): one
``realesr-animevideov3-x4`` pass then Lanczos x1.2 (what a 1000 px Amazon canvas asks of a
256x192 render, catalog_render.pretrained.upscale.LANCZOS_MAX_STRETCH), against two passes reduced
by Lanczos to the same size. Prints the CPU seconds of each pass, the resolution measure of both
(quality.metrics.resolution_energy) and their mean absolute difference (0-255 levels).
"""

from __future__ import annotations

import argparse
import statistics as st
import time

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/fashion-reference")
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args()
    from catalog_render.generators import registry
    from catalog_render.generators.base import Conditioning, GenerationParams
    from catalog_render.pretrained.upscale import Upscaler
    from catalog_render.quality.metrics import resolution_energy

    gen = registry.load_generator(args.model)
    cats = [c for c in gen.config["conditions"][0]["values"][1:]][: args.n]
    up = Upscaler("realesr-animevideov3-x4", max_passes=2)
    rows = []
    for i, cat in enumerate(cats):
        im = gen.generate([Conditioning(category=cat)], [i], GenerationParams())[0]
        t = time.process_time()
        one = up.run_model(im, "realesr-animevideov3-x4")
        c1 = time.process_time() - t
        t = time.process_time()
        two = up.run_model(one, "realesr-animevideov3-x4")
        c2 = time.process_time() - t
        size = (round(one.width * 1.2), round(one.height * 1.2))
        a, b = one.resize(size, Image.Resampling.LANCZOS), two.resize(size, Image.Resampling.LANCZOS)
        rows.append((c1, c2, resolution_energy(a), resolution_energy(b), float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean())))
        print(f"{cat}: pass 1 {c1:.2f} CPU s, pass 2 {c2:.2f} CPU s; resolution {rows[-1][2]:.4f} vs {rows[-1][3]:.4f}; mean |diff| {rows[-1][4]:.2f}")
    med = [st.median(col) for col in zip(*rows)]
    print(f"median of {len(rows)} ({im.width}x{im.height} renders): pass 1 {med[0]:.2f} CPU s, pass 2 {med[1]:.2f} CPU s; "
          f"resolution one pass {med[2]:.4f}, two passes {med[3]:.4f}; mean |diff| {med[4]:.2f} levels")


if __name__ == "__main__":
    main()
