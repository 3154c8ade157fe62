"""A model's category judge (``MODEL/judge/``): trained from the model's training photos, at the
model's size, so ``run`` can score every render's recognisability
(:mod:`catalog_render.quality.category_judge` holds the judge itself; :mod:`catalog_render.recognisability`
its use in ``run``).

``catalog-render train`` / ``finetune`` call :func:`add_judge` at the end of training with the photos
they trained on; ``catalog-render judge --model M --catalog C`` adds one to an existing model.
Cost: the AlexNet features of each photo, its mirror image and the synthetic outliers, plus an
L-BFGS probe: 64 CPU-seconds for the 2,517 photos of the fashion training split (docs/evaluation.md).
"""

from __future__ import annotations

from catalog_render import catalog, storage
from catalog_render.generators import registry
from catalog_render.quality import category_judge
from catalog_render.training.data import ImageSet, load_image_set


def judge_uri(model_uri: str) -> str:
    """``MODEL/judge``."""
    return storage.join(model_uri, category_judge.DIRNAME)


def add_judge(model_uri: str, catalog_uri: str, data: ImageSet | None = None, min_photos: int = category_judge.MIN_PHOTOS,
              seed: int = 0) -> category_judge.CategoryJudge:
    """Train a judge on the photos of ``catalog_uri`` (or the already loaded ``data``, photos at
    the model's size) and save it in ``MODEL/judge/`` (replacing one that is there).

    Raises ModelError (bad model directory), CatalogError (unreadable catalog, no photos, fewer
    than 2 categories with ``min_photos`` photos), DependencyMissing / WeightFileError (the
    pretrained AlexNet cannot be loaded)."""
    info = registry.describe(model_uri)
    if data is None:
        data = load_image_set(catalog.read_catalog(catalog_uri), info.width, info.height)
    cats = [c.category for c in data.conditionings]
    judge = category_judge.train_judge(data.images, cats, [str(p) for p in data.product_ids], letterbox=(info.width, info.height),
                                       min_photos=min_photos, seed=seed,
                                       info={"catalog_uri": storage.display(catalog_uri), "model_id": info.model_id})
    judge.save(judge_uri(model_uri))
    return judge


def summary(judge: category_judge.CategoryJudge) -> str:
    """One line for the command line: classes, calibration accuracy and threshold."""
    cal = judge.info["calibration"]
    return (f"category judge: {len(judge.classes)} categories ({judge.info['photos']} photos; {judge.info.get('categories_unused', 0)} categories "
            f"with < {judge.info['min_photos']} photos left out), accuracy {cal['accuracy']:.2f} on {cal['photos']} held-out real photos "
            f"(majority class {cal['majority_baseline']:.2f}); gate threshold {cal['threshold']:.3f} (p{cal['threshold_percentile']} of their "
            f"true-category probability); product threshold {judge.product_threshold:.3f} (categories it does not know); "
            f"{judge.info['cpu_seconds']:.0f} CPU-s")
