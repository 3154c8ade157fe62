"""Reference models on both catalogs, the other families, and fine-tuning versus scratch (docs/FAMILIES.md).

    python benchmarks/storefront.py train [--fashion-scratch] [--native]  # two lanes of trainings (below)
    python benchmarks/storefront.py evaluate [--wait]  # catalog-render evaluate for every trained model
    python benchmarks/storefront.py report     # runs/storefront/tables.md + docs/families/storefront-*.png grids

Needs `benchmarks/families.py prepare` (the splits in runs/cmp/); `--fashion-scratch` also needs
`benchmarks/transfer.py train` (its L1-only fashion x4 stage, runs/transfer/models/sr-l1).
Each training runs on one thread (the optional fashion-scratch GAN on two) with a CPU-time budget,
so the two lanes share a 2-core machine and each model gets the compute its row says, whatever
else the machine runs. `evaluate --wait` runs beside `train` and evaluates each model once it is
trained. Work files go to runs/storefront/ (gitignored); every step skips work already done (a
model directory with config.json, an evaluation.json).

What is trained and evaluated (about 55 CPU-minutes a lane, then about 5 CPU-minutes an evaluation):
- the committed reference, models/fashion-reference (evaluated only).
- IKEA at 64x64 -> 256x256 through an x4 stage trained on IKEA photos with L1 + LPIPS (10
  CPU-minutes): the GAN with the vision-aided and with the from-scratch discriminator, 15
  CPU-minutes each.
- the VAE and latent diffusion on fashion, 20 CPU-minutes each.
- fine-tuning versus scratch: the reference's 64x48 GAN fine-tuned on the IKEA training split
  (every IKEA type is a category the base never saw) against the same GAN from random weights,
  both vision-aided, 15 CPU-minutes each, judged on the held-out IKEA products.
- `--fashion-scratch`: the reference's GAN settings without its pretrained parts (from-scratch
  discriminator, 60 CPU-minutes on 2 threads), joined to the L1-only x4 stage.
- `--native`: fashion at 256x192 natively, the vision-aided GAN with 6 up-sampling blocks, 20
  CPU-minutes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMP = ROOT / "runs" / "cmp"
TRANSFER = ROOT / "runs" / "transfer"
WORK = ROOT / "runs" / "storefront"
CR = str(Path(sys.executable).parent / "catalog-render")
COMPARE = (ROOT / "jobs" / "compare.toml").read_text()
REFERENCE = ROOT / "models" / "fashion-reference"


def job(name: str, *, width: int = 48, discriminator: str | None = None, extra: str = "", native: bool = False) -> Path:
    """jobs/compare.toml (64 px high, batch 16, one thread) with this width and [train.gan]
    discriminator; ``native``: 256x192 px from 6 up-sampling blocks of 512 -> 8 channels."""
    text = COMPARE.replace("width = 48", f"width = {width}")
    if native:
        text = text.replace("height = 64\nwidth = 48", "height = 256\nwidth = 192\nbase_channels = 512")
    if discriminator:
        text += f'\n[train.gan]\ndiscriminator = "{discriminator}"\n' + ("num_upsamples = 6\n" if native else "")
    path = WORK / f"{name}.toml"
    path.write_text(text + extra)
    return path


def _run(args: list[str], log: Path) -> None:
    print("+", " ".join(args), flush=True)
    with open(log, "w") as f:
        if subprocess.run(args, stdout=f, stderr=subprocess.STDOUT).returncode:
            raise SystemExit(f"failed ({log}): {' '.join(args)}")


def _done(name: str) -> bool:
    return (WORK / "models" / name / "config.json").exists()


def _train(name: str, catalog: str, family: str, minutes: int, threads: int = 1, **job_kw) -> None:
    if not _done(name):
        path = job(name, **job_kw)
        path.write_text(path.read_text().replace("threads = 1", f"threads = {threads}", 1))
        _run([CR, "train", "--family", family, "--catalog", str(CMP / catalog), "--out", str(WORK / "models" / name),
              "--job", str(path), "--max-cpu-minutes", str(minutes)], WORK / f"train-{name}.log")


def _stage(name: str, base: str, catalog: str, minutes: int, weight: float) -> None:
    """An x4 stage trained in a copy of `base` (a stage learns from photos only)."""
    out = WORK / "models" / name
    if (out / "sr" / "config.json").exists():
        return
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(WORK / "models" / base, out, ignore=shutil.ignore_patterns("checkpoint", "samples", "training", "sr"))
    width = json.loads((out / "config.json").read_text())["width"]
    _run([CR, "train-sr", "--model", str(out), "--catalog", str(CMP / catalog), "--max-cpu-minutes", str(minutes),
          "--job", str(job(name, width=width, extra=f"\n[train.sr]\nperceptual_weight = {weight}\nthreads = 1\n"))], WORK / f"train-{name}.log")


def cascade(name: str, base: Path, stage: Path) -> None:
    """A model directory holding `base` and the sr/ stage of `stage`, rendering with the stage's
    default input blur (0.5 px, as models/fashion-reference does)."""
    out = WORK / "models" / name
    if not (out / "sr" / "config.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(base, out, ignore=shutil.ignore_patterns("checkpoint", "samples", "training", "sr"))
        shutil.copytree(stage / "sr", out / "sr")
    _default_blur(out)


def _default_blur(model: Path) -> None:
    """Stages trained before ``input_blur_sigma`` existed (benchmarks/transfer.py's) render without
    blur; set the current default so every cascade of the tables renders alike."""
    from catalog_render.config import SrSpec

    path = model / "sr" / "config.json"
    cfg = json.loads(path.read_text())
    if "input_blur_sigma" not in cfg:
        path.write_text(json.dumps({**cfg, "input_blur_sigma": SrSpec().input_blur_sigma}, indent=2))


def _finetune_ikea48() -> None:
    if not _done("ikea48-gan-finetuned"):
        base = WORK / "fashion-reference-base"  # the reference without its fashion stage
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(REFERENCE, base, ignore=shutil.ignore_patterns("sr", "judge"))
        _run([CR, "finetune", "--base", str(base), "--catalog", str(CMP / "ikea-train.parquet"), "--out", str(WORK / "models" / "ikea48-gan-finetuned"),
              "--job", str(job("ikea48-gan-finetuned", discriminator="vision-aided")), "--freeze", "none", "--max-cpu-minutes", "15"],
             WORK / "train-ikea48-gan-finetuned.log")


def lane_a() -> None:
    """IKEA at 64x64 -> 256x256 with and without the pretrained discriminator, then the
    from-random-weights side of fine-tuning versus scratch (55 CPU-minutes)."""
    _train("ikea-gan-vision-aided", "ikea-train.parquet", "gan", 15, width=64, discriminator="vision-aided")
    _stage("ikea-sr-lpips", "ikea-gan-vision-aided", "ikea-train.parquet", 10, 1.0)
    _train("ikea-gan-scratch", "ikea-train.parquet", "gan", 15, width=64, discriminator="scratch")
    cascade("ikea-cascade-vision-aided", WORK / "models" / "ikea-gan-vision-aided", WORK / "models" / "ikea-sr-lpips")
    cascade("ikea-cascade-scratch", WORK / "models" / "ikea-gan-scratch", WORK / "models" / "ikea-sr-lpips")
    # fine-tuning versus scratch: same family, discriminator, size (the base's 64x48) and CPU budget
    _train("ikea48-gan-scratch-init", "ikea-train.parquet", "gan", 15, discriminator="vision-aided")


def lane_b() -> None:
    """The other families on fashion, the fine-tuned side of fine-tuning versus scratch (55
    CPU-minutes), then the optional fashion rows."""
    _train("fashion-vae", "fashion-train.parquet", "vae", 20)
    _train("fashion-diffusion", "fashion-train.parquet", "diffusion", 20)
    _finetune_ikea48()
    if "--fashion-scratch" in sys.argv:
        # the reference's settings (jobs/reference.toml: 2 threads, 60 CPU-minutes) without its
        # pretrained parts, joined to benchmarks/transfer.py's L1-only x4 stage
        _train("fashion-gan-scratch", "fashion-train.parquet", "gan", 60, threads=2, discriminator="scratch")
        cascade("fashion-cascade-scratch", WORK / "models" / "fashion-gan-scratch", TRANSFER / "models" / "sr-l1")
    if "--native" in sys.argv:
        _train("fashion-gan-native256", "fashion-train.parquet", "gan", 20, width=48, discriminator="vision-aided", native=True)


def train() -> None:
    (WORK / "models").mkdir(parents=True, exist_ok=True)
    errors: list[BaseException] = []

    def go(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported after both lanes end
            errors.append(e)

    lanes = [threading.Thread(target=go, args=(fn,)) for fn in (lane_a, lane_b)]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} lane(s) failed: {errors}")


#: Evaluated models: name -> (catalog, judge directory). A judge is trained on the first evaluation
#: that names it (real photos letterboxed to the renders' size) and reused by the others.
EVALS = {
    "fashion-reference": ("fashion", WORK / "judge-fashion-256"),
    "ikea-cascade-vision-aided": ("ikea", WORK / "judge-ikea-256"),
    "fashion-vae": ("fashion", WORK / "judge-fashion-64"),
    "ikea48-gan-finetuned": ("ikea", WORK / "judge-ikea-48"),
    "fashion-diffusion": ("fashion", WORK / "judge-fashion-64"),
    "ikea48-gan-scratch-init": ("ikea", WORK / "judge-ikea-48"),
    "ikea-cascade-scratch": ("ikea", WORK / "judge-ikea-256"),
    "fashion-cascade-scratch": ("fashion", WORK / "judge-fashion-256"),
    "fashion-gan-native256": ("fashion", WORK / "judge-fashion-256"),
    "fashion-cascade-20min": ("fashion", WORK / "judge-fashion-256"),
}
#: Models that live outside runs/storefront/models (the committed reference, benchmarks/transfer.py's).
EXTERNAL = {"fashion-reference": REFERENCE, "fashion-cascade-20min": TRANSFER / "models" / "cascade-vision-aided"}
#: Models the default `train` does not make: evaluated when present, skipped otherwise.
OPTIONAL = {"fashion-cascade-scratch", "fashion-gan-native256", "fashion-cascade-20min"}


def evaluate(wait: bool = False) -> None:
    """Evaluate each model once it is trained (``wait``: poll until every model is, for running
    beside `train`); an IKEA judge's first evaluation runs alone so the second reuses it."""
    import time

    pending = dict(EVALS)
    while pending:
        for name, (cat, judge) in list(pending.items()):
            model, out = _dirs(name)
            if (out / "evaluation.json").exists():
                del pending[name]
                continue
            if not (model / ("sr" if "cascade" in name else "") / "config.json").exists():
                if name in OPTIONAL:
                    del pending[name]
                continue
            if "cascade" in name:
                _default_blur(model)
            _run([CR, "evaluate", "--model", str(model), "--catalog", str(CMP / f"{cat}.parquet"), "--out", str(out),
                  "--job", str(ROOT / "jobs" / "compare.toml"), "--judge", str(judge)], WORK / f"eval-{name}.log")
            del pending[name]
        if pending and not wait:
            print("not trained yet:", ", ".join(pending))
            return
        if pending:
            time.sleep(60)


def _fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def _dirs(name: str) -> tuple[Path, Path]:
    """(model directory, evaluation directory) of a row."""
    return EXTERNAL.get(name, WORK / "models" / name), WORK / "eval" / name


def upscale_cpu_seconds(model_dir: Path, longest: int = 1000, n: int = 8) -> float:
    """CPU seconds per image to take a render of `model_dir` to `longest` px on its longest side
    with the default Real-ESRGAN upscaler (the presets' path), median of `n` renders."""
    import time

    import numpy as np

    from catalog_render import catalog
    from catalog_render.generators import registry
    from catalog_render.generators.base import GenerationParams
    from catalog_render.pretrained.upscale import Upscaler
    from catalog_render.training.data import conditionings_from_table

    model = registry.load_generator(str(model_dir))
    cat = "ikea" if "ikea" in model_dir.name else "fashion"
    conds = [c for c in conditionings_from_table(catalog.read_catalog(str(CMP / f"{cat}-holdout.parquet"))) if model.conditioning_problem(c) is None][:n]
    ims = model.generate(conds, list(range(len(conds))), GenerationParams())
    up, cpu = Upscaler(), []
    for im in ims:
        s = longest / max(im.size)
        t0 = time.process_time()
        up.resize(im, (round(im.width * s), round(im.height * s)))
        cpu.append(time.process_time() - t0)
    return float(np.median(cpu))


ROWS = ("fashion-reference", "fashion-cascade-scratch", "fashion-cascade-20min", "fashion-gan-native256", "fashion-vae", "fashion-diffusion",
        "ikea-cascade-vision-aided", "ikea-cascade-scratch", "ikea48-gan-scratch-init", "ikea48-gan-finetuned")


def report() -> None:
    from PIL import Image

    from catalog_render import catalog
    from catalog_render.generators import registry
    from catalog_render.generators.base import GenerationParams
    from catalog_render.training.data import conditionings_from_table
    from catalog_render.training.loop import grid

    lines = ["| model | pretrained parts | training CPU-min (base + stage) | native px | category acc. renders (real, products judged) | "
             "colour match renders (real) | Fréchet renders vs real (floor) | LPIPS render vs photo (median) | resolution ratio render / photo | "
             "sampling CPU-s / image | + Real-ESRGAN to 1000 px, CPU-s / image |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in ROWS:
        model, ev_dir = _dirs(name)
        if not (ev_dir / "evaluation.json").exists():
            continue
        ev, card = json.loads((ev_dir / "evaluation.json").read_text()), json.loads((model / "model_card.json").read_text())
        parts = list(card.get("pretrained_parts") or [])
        cpu_s = f"{card.get('cpu_seconds', 0) / 60:.1f}"
        if (model / "sr" / "model_card.json").exists():
            sc = json.loads((model / "sr" / "model_card.json").read_text())
            parts += sc.get("pretrained_parts") or []
            cpu_s += f" + {sc['cpu_seconds'] / 60:.1f}"
        if card.get("base"):
            cpu_s += " (fine-tune)"
        info = registry.describe(str(model))
        cat, col, fd, t = ev["category_fidelity"], ev["colour_fidelity"], ev["frechet_distance"], ev["timing"]
        res = (ev.get("resolution") or {}).get("ratio_render_to_photo_median")
        lp = (ev.get("render_vs_photo") or {}).get("lpips") or {}
        lines.append(f"| {name} | {'; '.join(p.split(':')[0] for p in parts) or 'none'} | {cpu_s} | {info.height}x{info.width} | "
                     f"{_fmt(cat.get('accuracy_render'))} ({_fmt(cat.get('accuracy_real'))}, {cat.get('products', 0)}) | "
                     f"{_fmt(col.get('match_share_render'))} ({_fmt(col.get('match_share_real'))}) | "
                     f"{_fmt(fd.get('render_vs_real'), '.1f')} ({_fmt(fd.get('real_vs_real_floor'), '.1f')}) | {_fmt(lp.get('median'), '.3f')} | {_fmt(res)} | "
                     f"{_fmt(t.get('sampling_cpu_seconds_per_image'), '.3f')} | {_fmt(upscale_cpu_seconds(model), '.2f')} |")
    (WORK / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    # full-size grids: the same 12 held-out products and seeds for every model of a catalog (fashion:
    # and their photos, letterboxed to 256x192; the IKEA photos are non-commercial and never shipped)
    import numpy as np

    from catalog_render.training.data import load_image_set

    out = ROOT / "docs" / "families"
    for cat in ("fashion", "ikea"):
        names = [n for n in ROWS if n.startswith(cat) and (_dirs(n)[0] / "config.json").exists()]
        if not names:
            continue
        held = catalog.read_catalog(str(CMP / f"{cat}-holdout.parquet"))
        conds = conditionings_from_table(held)
        models = {name: registry.load_generator(str(_dirs(name)[0])) for name in names}
        pick = [i for i, c in enumerate(conds) if models[names[0]].conditioning_problem(c) is None][::5][:12]
        for name, model in models.items():
            ok = [i for i in pick if model.conditioning_problem(conds[i]) is None]
            g = grid(model.generate([conds[i] for i in ok], [1000 + i for i in ok], GenerationParams()), 6)
            path = out / f"storefront-{name}.png"
            g.save(path, optimize=True)
            if path.stat().st_size > 500_000:  # the docs' PNG limit: a 256-colour palette instead
                g.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
            print(name, g.size, path.stat().st_size // 1024, "KB")
        if cat == "fashion":
            photos = load_image_set(held.take(pick), 192, 256)
            g = grid([Image.fromarray(np.ascontiguousarray(photos.images[k].permute(1, 2, 0).numpy())) for k in range(len(pick))], 6)
            g.save(out / "storefront-fashion-real.png", optimize=True)
        (out / f"storefront-{cat}-products.json").write_text(json.dumps(
            [{"product_id": held["product_id"][i].as_py(), "category": conds[i].category, "color": conds[i].value("attributes.color")} for i in pick], indent=1))

if __name__ == "__main__":
    known = {"train": {"--fashion-scratch", "--native"}, "evaluate": {"--wait"}, "report": set()}
    if len(sys.argv) < 2 or sys.argv[1] not in known or set(sys.argv[2:]) - known[sys.argv[1]]:
        raise SystemExit(__doc__)
    if sys.argv[1] == "evaluate":
        evaluate(wait="--wait" in sys.argv)
    else:
        {"train": train, "report": report}[sys.argv[1]]()
