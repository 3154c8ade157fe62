"""Transfer learning, measured: the same family and CPU budget with and without the pretrained parts.

    python benchmarks/transfer.py train      # the GAN with a scratch, projected or vision-aided discriminator (frozen
                                             # AlexNet), the x4 super-resolution stage with L1 vs L1 + LPIPS-AlexNet
    python benchmarks/transfer.py sr-eval    # the two stages on held-out real photos (64x48 -> 256x192) vs bicubic
    python benchmarks/transfer.py evaluate   # catalog-render evaluate for every model, one judge
    python benchmarks/transfer.py report     # the tables of docs/FAMILIES.md ("Transfer learning") + sample grids

Catalog: ../shared/data/fashion, split as `make families` does (`benchmarks/families.py prepare` first).
Every training runs on one thread with a CPU-time budget, so two can share the 2-core machine and
each gets the same compute. Work files go to runs/transfer/ (gitignored); steps skip work already done.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMP = ROOT / "runs" / "cmp"  # benchmarks/families.py prepare
WORK = ROOT / "runs" / "transfer"
CR = str(Path(sys.executable).parent / "catalog-render")
COMPARE = ROOT / "jobs" / "compare.toml"
#: GANs: name -> train.gan.discriminator (jobs/compare.toml otherwise: 64x48, batch 16, one thread).
GANS = {"gan-scratch": "scratch", "gan-projected": "projected", "gan-vision-aided": "vision-aided"}
#: Super-resolution stages: (name, train.sr.perceptual_weight). A stage learns from photos only, so
#: each is trained in a directory holding a copy of the scratch GAN and later joined to any base.
STAGES = (("sr-l1", 0.0), ("sr-lpips", 1.0))
#: Cascades evaluated: (name, base GAN, stage).
CASCADES = (("cascade-vision-aided", "gan-vision-aided", "sr-lpips"),)
GAN_CPU_MINUTES = "10"
SR_CPU_MINUTES = "10"


def sh(*args: str, log: Path | None = None) -> None:
    print("+", " ".join(args), flush=True)
    with open(log, "w") if log else open("/dev/null", "w") as f:
        subprocess.run(args, check=True, stdout=f if log else None, stderr=subprocess.STDOUT if log else None)


def _job(name: str, extra: str) -> Path:
    job = WORK / f"{name}.toml"
    job.write_text(COMPARE.read_text() + "\n" + extra)
    return job


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.wait():
            raise SystemExit(f"failed: {' '.join(p.args)}")


def train() -> None:
    """The GANs two at a time (one thread each), then the stages, then the cascades (a copy of the
    base GAN with the stage's sr/ directory)."""
    (WORK / "models").mkdir(parents=True, exist_ok=True)
    todo = [n for n in GANS if not (WORK / "models" / n / "config.json").exists()]
    for pair in (todo[i : i + 2] for i in range(0, len(todo), 2)):
        _wait([subprocess.Popen([CR, "train", "--family", "gan", "--catalog", str(CMP / "fashion-train.parquet"), "--out", str(WORK / "models" / n),
                                 "--job", str(_job(n, f'[train.gan]\ndiscriminator = "{GANS[n]}"\n')), "--max-cpu-minutes", GAN_CPU_MINUTES],
                                stdout=open(WORK / f"train-{n}.log", "w"), stderr=subprocess.STDOUT) for n in pair])
    procs = []
    for name, weight in STAGES:
        out = WORK / "models" / name
        if (out / "sr" / "config.json").exists():
            continue
        out.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(WORK / "models" / "gan-scratch" / f, out / f)
        procs.append(subprocess.Popen([CR, "train-sr", "--model", str(out), "--catalog", str(CMP / "fashion-train.parquet"),
                                       "--job", str(_job(name, f"[train.sr]\nperceptual_weight = {weight}\nthreads = 1\n")), "--max-cpu-minutes", SR_CPU_MINUTES],
                                      stdout=open(WORK / f"train-{name}.log", "w"), stderr=subprocess.STDOUT))
    _wait(procs)
    for name, base, stage in CASCADES:
        out = WORK / "models" / name
        if not (out / "sr" / "config.json").exists():
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(WORK / "models" / base, out, ignore=shutil.ignore_patterns("checkpoint", "samples", "training"))
            shutil.copytree(WORK / "models" / stage / "sr", out / "sr")


def sr_eval() -> None:
    """Each stage (and bicubic, and Lanczos) on 200 held-out real photos: the photo letterboxed to
    256x192 is the reference, its 64x48 antialiased downscale the input. PSNR, SSIM, LPIPS-AlexNet
    and the resolution measure (ratio to the reference's)."""
    import numpy as np
    from PIL import Image

    from catalog_render import catalog
    from catalog_render.generators import super_resolution as sr
    from catalog_render.quality import metrics
    from catalog_render.training.data import load_image_set

    held = catalog.read_catalog(str(CMP / "fashion-holdout.parquet")).slice(0, 200)
    ref = load_image_set(held, 192, 256)
    refs = [np.ascontiguousarray(ref.images[i].permute(1, 2, 0).numpy()) for i in range(ref.images.shape[0])]
    smalls = [Image.fromarray(r).resize((48, 64), Image.Resampling.BICUBIC) for r in refs]
    methods = {"bicubic": lambda ims: [im.resize((192, 256), Image.Resampling.BICUBIC) for im in ims],
               "lanczos": lambda ims: [im.resize((192, 256), Image.Resampling.LANCZOS) for im in ims]}
    for name, _ in STAGES:
        stage = sr.read_stage(str(WORK / "models" / name))
        if stage is not None:
            stage.cfg = {**stage.cfg, "input_blur_sigma": 0.0}  # clean downscaled photos: no render-time blur
            methods[name] = stage.upscale
    ref_energy = [metrics.resolution_energy(r) for r in refs]
    rows = {}
    for name, fn in methods.items():
        outs = [np.asarray(im) for im in fn(smalls)]
        energy = [metrics.resolution_energy(o) for o in outs]
        rows[name] = {
            "psnr_db": float(np.median([metrics.psnr(r, o) for r, o in zip(refs, outs)])),
            "ssim": float(np.median([metrics.ssim(r, o) for r, o in zip(refs, outs)])),
            "lpips_alex": float(np.median(metrics.lpips(refs, outs))),
            "resolution_ratio": float(np.median([e / p for e, p in zip(energy, ref_energy) if p > 0])),
            "photos": len(refs),
        }
        print(name, rows[name], flush=True)
    (WORK / "sr-eval.json").write_text(json.dumps(rows, indent=1))


def _models() -> list[str]:
    return list(GANS) + [n for n, _, _ in CASCADES]


def evaluate() -> None:
    for name in _models():
        model, out = WORK / "models" / name, WORK / "eval" / name
        if not (model / "config.json").exists() or (out / "evaluation.json").exists():
            continue
        sh(CR, "evaluate", "--model", str(model), "--catalog", str(CMP / "fashion.parquet"), "--out", str(out), "--job", str(COMPARE),
           "--judge", str(WORK / ("judge-fashion-256" if name.startswith("cascade") else "judge-fashion")), log=WORK / f"eval-{name}.log")


def _fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def report() -> None:
    from PIL import Image

    from catalog_render import catalog
    from catalog_render.generators import registry
    from catalog_render.generators.base import GenerationParams
    from catalog_render.training.data import conditionings_from_table
    from catalog_render.training.loop import grid

    lines = ["| model | pretrained parts | training CPU-min (base + stage) | native px | category acc. renders (real) | colour match renders (real) | "
             "Fréchet renders vs real (floor) | resolution ratio render / photo | sampling CPU-s / image |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in _models():
        ev_path, card_path = WORK / "eval" / name / "evaluation.json", WORK / "models" / name / "model_card.json"
        if not ev_path.exists():
            continue
        ev, card = json.loads(ev_path.read_text()), json.loads(card_path.read_text())
        stage_card = WORK / "models" / name / "sr" / "model_card.json"
        parts = list(card.get("pretrained_parts") or [])
        cpu = card.get("cpu_seconds", 0) / 60
        cpu_s = f"{cpu:.1f}"
        if stage_card.exists():
            sc = json.loads(stage_card.read_text())
            parts += sc.get("pretrained_parts") or []
            cpu_s = f"{cpu:.1f} + {sc['cpu_seconds'] / 60:.1f}"
        info = registry.describe(str(WORK / "models" / name))
        cat, col, fd, t = ev["category_fidelity"], ev["colour_fidelity"], ev["frechet_distance"], ev["timing"]
        res = (ev.get("resolution") or {}).get("ratio_render_to_photo_median")
        lines.append(f"| {name} | {'; '.join(p.split(':')[0] for p in parts) or 'none'} | {cpu_s} | {info.height}x{info.width} | "
                     f"{_fmt(cat.get('accuracy_render'))} ({_fmt(cat.get('accuracy_real'))}) | "
                     f"{_fmt(col.get('match_share_render'))} ({_fmt(col.get('match_share_real'))}) | "
                     f"{_fmt(fd.get('render_vs_real'), '.1f')} ({_fmt(fd.get('real_vs_real_floor'), '.1f')}) | {_fmt(res)} | "
                     f"{_fmt(t.get('sampling_cpu_seconds_per_image'), '.3f')} |")
    sr_rows = json.loads((WORK / "sr-eval.json").read_text()) if (WORK / "sr-eval.json").exists() else {}
    if sr_rows:
        lines += ["", "| x4 method (64x48 -> 256x192, 200 held-out photos) | PSNR dB | SSIM | LPIPS-Alex | resolution ratio |", "| --- | --- | --- | --- | --- |"]
        for name, r in sr_rows.items():
            lines.append(f"| {name} | {r['psnr_db']:.2f} | {r['ssim']:.3f} | {r['lpips_alex']:.3f} | {r['resolution_ratio']:.2f} |")
    (WORK / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    # sample grids: 16 held-out products, the same seeds for every model
    held = catalog.read_catalog(str(CMP / "fashion-holdout.parquet"))
    conds = conditionings_from_table(held)
    out = ROOT / "docs" / "families"
    for name in ("gan-scratch", "gan-vision-aided", "cascade-vision-aided"):
        if not (WORK / "models" / name / "config.json").exists():
            continue
        model = registry.load_generator(str(WORK / "models" / name))
        ok = [c for c in conds if model.conditioning_problem(c) is None][::7][:16]
        ims = model.generate(ok, [1000 + k for k in range(len(ok))], GenerationParams())
        g = grid(ims, 8)
        if g.width < 1000:
            g = g.resize((g.width * 2, g.height * 2), Image.Resampling.NEAREST)
        g.save(out / f"transfer-{name}.png", optimize=True)


if __name__ == "__main__":
    {"train": train, "sr-eval": sr_eval, "evaluate": evaluate, "report": report}[sys.argv[1] if len(sys.argv) > 1 else "report"]()
