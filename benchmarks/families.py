"""The family comparison of docs/FAMILIES.md: train, fine-tune, evaluate, tabulate, draw grids.

    python benchmarks/families.py prepare   # ingest + split ../shared/data/{fashion,ikea}, the 150-product IKEA set
    python benchmarks/families.py train     # 3 families x 2 catalogs, jobs/compare.toml (10 CPU-minutes each)
    python benchmarks/families.py finetune  # fashion base -> 150 IKEA products vs scratch, 5 CPU-minutes each
    python benchmarks/families.py evaluate  # catalog-render evaluate for every model, one judge per catalog
    python benchmarks/families.py report    # docs/FAMILIES.md tables + docs/families/*.png grids

Every step shells out to the `catalog-render` CLI (what a user runs) and skips work already done
(a model directory with config.json, an evaluation.json). Work files go to runs/cmp/ (gitignored).
Two trainings may run at once: each uses one thread and its budget is CPU time, so sharing the
machine does not change what a model gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "runs" / "cmp"
CR = str(Path(sys.executable).parent / "catalog-render")
JOB = str(ROOT / "jobs" / "compare.toml")
FAMILIES = ("gan", "vae", "diffusion")
CATALOGS = ("fashion", "ikea")
MAPS = {
    "fashion": "product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,"
    "attributes.usage=usage,attributes.season=season,image_uri=image_file",
    "ikea": "product_id=id,title=name,category=type,attributes.color=color,attributes.size=size,image_uri=image_file",
}
#: Fine-tuning experiment: (name, base model or None, extra CLI options).
FINETUNES = (
    ("gan-scratch", None, ["--family", "gan"]),
    ("gan-ft-lower", "gan-fashion", ["--freeze", "lower"]),
    ("gan-ft-none", "gan-fashion", ["--freeze", "none"]),
    ("diffusion-scratch", None, ["--family", "diffusion"]),
    ("diffusion-lora8", "diffusion-fashion", ["--lora", "8"]),
)
FINETUNE_CPU_MINUTES = "5"
DOCS = ROOT / "docs"


def sh(*args: str, log: Path | None = None) -> None:
    print("+", " ".join(args), flush=True)
    if log:
        with open(log, "w") as f:
            subprocess.run(args, check=True, stdout=f, stderr=subprocess.STDOUT)
    else:
        subprocess.run(args, check=True)


def prepare() -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    WORK.mkdir(parents=True, exist_ok=True)
    for c in CATALOGS:
        if not (WORK / f"{c}.parquet").exists():
            sh(CR, "ingest", "--csv", str(DATA / c / "metadata.csv"), "--images", str(DATA / c), "--map", MAPS[c], "--out", str(WORK / f"{c}.parquet"))
        sh(CR, "split", "--catalog", str(WORK / f"{c}.parquet"), "--train-out", str(WORK / f"{c}-train.parquet"),
           "--holdout-out", str(WORK / f"{c}-holdout.parquet"), "--fraction", "0.15")
    # A small new catalog: 10 training-split products from each of the 15 most common IKEA types.
    t = pq.read_table(WORK / "ikea-train.parquet")
    t = t.filter(pc.invert(pc.is_null(t["image_uri"])))
    cats = t["category"].to_pylist()
    top = [c for c, _ in Counter(cats).most_common(15)]
    rows = sorted(i for c in top for i in [j for j, v in enumerate(cats) if v == c][:10])
    pq.write_table(t.take(pa.array(rows)), WORK / "ikea-150.parquet")


def _trained(model: Path) -> bool:
    return (model / "config.json").exists()


def train(only: str | None = None) -> None:
    for c in CATALOGS:
        for f in FAMILIES:
            name = f"{f}-{c}"
            model = WORK / "models" / name
            if (only and name != only) or _trained(model):
                continue
            sh(CR, "train", "--family", f, "--catalog", str(WORK / f"{c}-train.parquet"), "--out", str(model), "--job", JOB,
               log=WORK / f"train-{name}.log")


def finetune(only: str | None = None) -> None:
    for name, base, extra in FINETUNES:
        model = WORK / "models" / f"ikea150-{name}"
        if (only and name != only) or _trained(model):
            continue
        cmd = ["finetune", "--base", str(WORK / "models" / base)] if base else ["train"]
        sh(CR, *cmd, *extra, "--catalog", str(WORK / "ikea-150.parquet"), "--out", str(model), "--job", JOB,
           "--max-cpu-minutes", FINETUNE_CPU_MINUTES, log=WORK / f"train-ikea150-{name}.log")


def _models() -> list[tuple[str, str]]:
    """(model name, catalog it is evaluated on)."""
    out = [(f"{f}-{c}", c) for c in CATALOGS for f in FAMILIES]
    return out + [(f"ikea150-{n}", "ikea") for n, _, _ in FINETUNES]


def evaluate(only: str | None = None) -> None:
    for name, c in _models():
        model, out = WORK / "models" / name, WORK / "eval" / name
        if (only and name != only) or not _trained(model) or (out / "evaluation.json").exists():
            continue
        sh(CR, "evaluate", "--model", str(model), "--catalog", str(WORK / f"{c}.parquet"), "--out", str(out), "--job", JOB,
           "--judge", str(WORK / f"judge-{c}"), log=WORK / f"eval-{name}.log")


# --------------------------------------------------------------------------------------- report


def _fmt(v, spec=".2f", none="–"):
    return none if v is None else format(v, spec)


def _row(name: str, ev: dict, card: dict) -> str:
    cat, col, fd, t, ref = ev["category_fidelity"], ev["colour_fidelity"], ev["frechet_distance"], ev["timing"], ev["reference_metrics"]
    params = card.get("parameters") or {}
    gen_params = params.get("generator") or params.get("unet") or sum(v for v in params.values() if isinstance(v, int))
    recon = "–"
    if ref.get("applicable"):
        recon = f"{_fmt((ref.get('psnr_db') or {}).get('median'), '.1f')} dB / {_fmt((ref.get('ssim') or {}).get('median'), '.3f')}"
    return (
        f"| {name} | {card.get('cpu_seconds', 0) / 60:.1f} | {card.get('steps')} | {gen_params / 1e6:.2f} M | "
        f"{_fmt(t.get('sampling_cpu_seconds_per_image'), '.3f')} | "
        f"{_fmt(cat.get('accuracy_render'))} ({_fmt(cat.get('accuracy_real'))}) | "
        f"{_fmt(col.get('match_share_render'))} ({_fmt(col.get('match_share_real'))}) | "
        f"{_fmt(fd.get('render_vs_real'), '.1f')} ({_fmt(fd.get('real_vs_real_floor'), '.1f')}) | {recon} | {ev['rendered']} |"
    )


HEADER = (
    "| model | training CPU-min | steps | generator params | sampling CPU-s / image | category acc. renders (real) | "
    "colour match renders (real) | Fréchet renders vs real (floor) | reconstruction PSNR / SSIM (median) | rendered |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _load(name: str) -> tuple[dict, dict] | None:
    ev, card = WORK / "eval" / name / "evaluation.json", WORK / "models" / name / "model_card.json"
    if not ev.exists():
        return None
    return json.loads(ev.read_text()), json.loads(card.read_text())


def grids() -> None:
    """docs/families/<family>-<catalog>.png: the same 16 held-out products (2 rows of 8) rendered by
    each family with the same seeds; docs/families/fashion-real.png: their photos (the fashion
    catalog may be shown; the IKEA photos are non-commercial and never shipped)."""
    import numpy as np
    from PIL import Image

    from catalog_render import catalog
    from catalog_render.config import load_job
    from catalog_render.generators import registry
    from catalog_render.generators.base import GenerationParams
    from catalog_render.training.data import load_image_set
    from catalog_render.training.loop import grid

    gen_spec = load_job(JOB).generation
    params = GenerationParams(num_inference_steps=gen_spec.num_inference_steps, guidance_scale=gen_spec.guidance_scale, scheduler=gen_spec.scheduler)
    out = DOCS / "families"
    out.mkdir(parents=True, exist_ok=True)
    for c in CATALOGS:
        held = catalog.read_catalog(str(WORK / f"{c}-holdout.parquet"))
        models = {f: registry.load_generator(str(WORK / "models" / f"{f}-{c}")) for f in FAMILIES if _trained(WORK / "models" / f"{f}-{c}")}
        if not models:
            continue
        data = load_image_set(held, 48, 64)
        ok = [i for i, cond in enumerate(data.conditionings) if all(m.conditioning_problem(cond) is None for m in models.values())]
        # 16 products, most common categories first so a reader sees what each family does with them
        counts = Counter(data.conditionings[i].category for i in ok)
        pick = sorted(ok, key=lambda i: (-counts[data.conditionings[i].category], data.product_ids[i]))[::max(1, len(ok) // 16)][:16]
        conds, seeds = [data.conditionings[i] for i in pick], [1000 + k for k in range(len(pick))]
        for f, m in models.items():
            ims = m.generate(conds, seeds, params)
            g = grid(ims, 8)
            g.resize((g.width * 2, g.height * 2), Image.Resampling.NEAREST).save(out / f"{f}-{c}.png", optimize=True)
        if c == "fashion":
            real = [Image.fromarray(np.ascontiguousarray(data.images[i].permute(1, 2, 0).numpy())) for i in pick]
            g = grid(real, 8)
            g.resize((g.width * 2, g.height * 2), Image.Resampling.NEAREST).save(out / "fashion-real.png", optimize=True)
        (out / f"{c}-products.json").write_text(json.dumps([{"product_id": data.product_ids[i], "category": data.conditionings[i].category,
                                                             "color": data.conditionings[i].value("attributes.color")} for i in pick], indent=1))


def report() -> None:
    grids()
    lines = []
    for c in CATALOGS:
        lines += [f"### {c}", "", HEADER]
        for f in FAMILIES:
            got = _load(f"{f}-{c}")
            if got:
                lines.append(_row(f, *got))
        lines.append("")
    lines += ["### Fine-tuning on 150 IKEA products (15 types) versus training from scratch", "", HEADER]
    for n, _, _ in FINETUNES:
        got = _load(f"ikea150-{n}")
        if got:
            lines.append(_row(n, *got))
    (WORK / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    step = sys.argv[1] if len(sys.argv) > 1 else "report"
    only = sys.argv[2] if len(sys.argv) > 2 else None
    {"prepare": prepare, "train": lambda: train(only), "finetune": lambda: finetune(only), "evaluate": lambda: evaluate(only), "report": report}[step]()
