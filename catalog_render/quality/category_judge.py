"""The category judge: a linear probe (multinomial logistic regression) on frozen pretrained
features, trained on a catalog's real photos, with its calibration on photos it did not train on.

Used by ``evaluate`` (category accuracy of renders vs real photos) and by ``run``'s quality gate
(the recognisability of each render: the judge's probability that it shows its catalog category).

Features: :class:`catalog_render.pretrained.features.PooledFeatures` (ImageNet AlexNet, global
average pooled relu4 + relu5, 512-d), standardised with the training photos' mean and std.
Images are first letterboxed to the judge's ``letterbox`` size (the generator's native size, e.g.
48x64: real photos are judged at the resolution renders have).

Training (:func:`train_judge`), deterministic:

* classes = categories with at least ``min_photos`` (default :data:`MIN_PHOTOS` = 10) photos;
  other photos are not used, and a render of another category gets no score (None, with the reason);
* calibration split: per class, the :data:`CALIBRATION_SHARE` (20 %) of its photos whose
  sha256(``"judge:<seed>:<product_id>"``) is lowest (at least 1 per class) are held out;
* the probe is fitted on the remaining photos and their left-right mirror images, plus one extra
  class, "not a product photo" (:data:`OUTLIER_CLASS`), of synthetic images made from nothing or
  from the fit photos (:func:`outlier_images`: pixel noise, colour blobs, photos cut in tiles and
  shuffled): outlier exposure (Hendrycks, Mazeika & Dietterich 2019, "Deep anomaly detection with
  outlier exposure"). Without it a probe over product classes alone has no "none of these" answer
  and gave pure noise 0.96 probability of "Handbags" (tests/test_category_judge.py); with it, a
  render of noise or of textures without a product gets a low probability for every category.
  Full-batch L-BFGS on cross-entropy + ``weight_decay`` x ||W||² (W the weight matrix; bias not
  penalised), from zero weights;
* calibration: the probe's probability of the true category on the held-out photos; its
  percentiles are stored, and the gate's default threshold is the :data:`THRESHOLD_PERCENTILE`
  (5th) percentile: by construction about 95 % of real photos of the catalog score above it;
* product calibration (the "is this any product at all?" check that renders of categories the
  judge does not know get): the product probability ``1 - P(not a product photo)`` of the real
  photos of the categories the judge does not know (fewer than ``min_photos`` photos), or, when
  there are fewer than :data:`MIN_PRODUCT_CALIBRATION` of them, of those and the calibration
  photos; its :data:`THRESHOLD_PERCENTILE` th percentile is the product threshold. A judge saved
  without it (before it existed) has :data:`PRODUCT_FALLBACK_THRESHOLD`.

Saved as a directory (``MODEL/judge/``): :data:`WEIGHTS` (safetensors: ``weight`` (K, D), ``bias`` (K,),
``mean`` (D,), ``std`` (D,), float32) and :data:`CONFIG` (JSON: classes, features, letterbox size,
calibration, training record). Loading checks shapes and finiteness (ModelError naming the file).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from catalog_render import storage
from catalog_render.errors import CatalogError, ModelError

#: Fewest photos a category needs to be one of the judge's classes (2 of them go to calibration).
MIN_PHOTOS = 10
#: Share of each class's photos held out of the probe's training to calibrate it.
CALIBRATION_SHARE = 0.2
#: The gate's default threshold: this percentile of the real held-out photos' true-category probability.
THRESHOLD_PERCENTILE = 5
#: L2 penalty of the probe (on standardised features), picked by measurement (docs/evaluation.md).
WEIGHT_DECAY = 1e-3
#: Name of the probe's extra class (the last row of its weights): synthetic images that show no product.
OUTLIER_CLASS = "(not a product photo)"
#: Synthetic outliers per photo the probe fits (at least MIN_OUTLIERS).
OUTLIER_SHARE = 0.5
MIN_OUTLIERS = 24
#: Directory of a model's judge, and its files.
DIRNAME = "judge"
WEIGHTS = "head.safetensors"
CONFIG = "judge.json"
FORMAT = "catalog-render-judge/1"
_PERCENTILES = (1, 5, 10, 25, 50)
#: Fewest photos of unknown categories the product threshold is calibrated on alone (else with the calibration photos).
MIN_PRODUCT_CALIBRATION = 20
#: Product threshold of a judge saved without a product calibration: a render passes when the judge
#: finds "some product" at least as likely as "not a product photo" (the Bayes decision between the two).
PRODUCT_FALLBACK_THRESHOLD = 0.5


def _letterbox(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, height, width), each letterboxed on white (Pillow, as the
    photos a model trains on are)."""
    if tuple(images.shape[2:]) == (height, width):
        return images
    from PIL import Image

    from catalog_render import imaging

    out = [imaging.to_array(imaging.letterbox(Image.fromarray(im.permute(1, 2, 0).numpy()), width, height)) for im in images]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


@dataclass
class CategoryJudge:
    """A trained probe. ``classes``: the K category names (index = class); ``weight`` (K + 1, D),
    ``bias`` (K + 1,): the categories then :data:`OUTLIER_CLASS`; ``mean``/``std`` (D,): float32; ``letterbox``: (width, height) pixels; ``layers``:
    the AlexNet taps of its features; ``info``: calibration and training record (judge.json)."""

    classes: list[str]
    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    letterbox: tuple[int, int]
    layers: tuple[str, ...]
    info: dict = field(default_factory=dict)
    _features: object = field(default=None, repr=False)

    # ------------------------------------------------------------------------------ features
    def extractor(self):
        """The frozen feature network (loaded on first use, once)."""
        if self._features is None:
            from catalog_render.pretrained.features import PooledFeatures

            self._features = PooledFeatures(self.layers)
        return self._features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled AlexNet features (not standardised): uint8 (N, 3, H, W) -> float32 (N, D); images
        are letterboxed to :attr:`letterbox` first."""
        return self.extractor()(_letterbox(images, *self.letterbox))

    def probabilities_of_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax) of feature vectors: float (N, D) -> float32 (N, K + 1), the
        last column :data:`OUTLIER_CLASS`."""
        z = (feats.float() - self.mean) / self.std
        return torch.softmax(z @ self.weight.T + self.bias, dim=1)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> float32 (N, K + 1), rows sum to 1 (the last column: not a product photo)."""
        return self.probabilities_of_features(self.features(images))

    def product_probability(self, images: torch.Tensor) -> list[float]:
        """The probability each image shows some product, of any category: ``1 - P(not a product
        photo)``: uint8 (N, 3, H, W) -> N floats in [0, 1]."""
        return [] if not len(images) else (1 - self.probabilities(images)[:, -1]).tolist()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class indices: uint8 (N, 3, H, W) -> int64 (N,) in [0, K] (K = not a product photo)."""
        return self.probabilities(images).argmax(dim=1) if len(images) else torch.zeros(0, dtype=torch.int64)

    def label_of(self, category: str | None) -> int | None:
        """Class index of a category, or None when the judge does not know it."""
        try:
            return self.classes.index(category)
        except ValueError:
            return None

    def unknown_reason(self, category: str | None) -> str:
        """Why a render of ``category`` gets no recognisability score."""
        if not category:
            return "no catalog category"
        return f"category {category!r} is not one of the judge's {len(self.classes)} classes (categories with >= {self.info.get('min_photos', MIN_PHOTOS)} training photos)"

    def true_probability(self, images: torch.Tensor, categories: list[str | None]) -> list[float | None]:
        """The probability each image shows its category (None where the judge does not know the
        category): uint8 (N, 3, H, W) and N categories -> N floats in [0, 1] or None."""
        labels = [self.label_of(c) for c in categories]
        if not len(images):
            return []
        p = self.probabilities(images)
        return [None if y is None else float(p[i, y]) for i, y in enumerate(labels)]

    # ---------------------------------------------------------------------------- calibration
    @property
    def threshold(self) -> float:
        """The calibrated threshold: the :data:`THRESHOLD_PERCENTILE` th percentile of the
        calibration photos' true-category probability."""
        return float(self.info["calibration"]["threshold"])

    @property
    def product_threshold(self) -> float:
        """The calibrated product threshold (see the module docstring), or
        :data:`PRODUCT_FALLBACK_THRESHOLD` for a judge saved without a product calibration."""
        product = self.info.get("calibration", {}).get("product")
        return float(product["threshold"]) if product else PRODUCT_FALLBACK_THRESHOLD

    @property
    def judge_id(self) -> str:
        """sha256 of the judge's files (first 16 hex), set when saved or loaded."""
        return self.info.get("judge_id", "")

    # ------------------------------------------------------------------------------ storage
    def _files(self) -> dict[str, bytes]:
        blob = save_safetensors_bytes({"weight": self.weight.contiguous(), "bias": self.bias.contiguous(),
                                       "mean": self.mean.contiguous(), "std": self.std.contiguous()})
        info = {k: v for k, v in self.info.items() if k not in ("judge_id", "format", "classes", "letterbox", "features")}
        cfg = {"format": FORMAT, "classes": self.classes, "letterbox": {"width": self.letterbox[0], "height": self.letterbox[1]},
               "features": self.extractor_description(), **info}
        return {WEIGHTS: blob, CONFIG: json.dumps(cfg, indent=2, ensure_ascii=False).encode()}

    def extractor_description(self) -> dict:
        """The feature definition (:func:`catalog_render.pretrained.features.describe`), for JSON records."""
        from catalog_render.pretrained.features import describe

        return describe(self.layers)

    def save(self, uri: str) -> str:
        """Write :data:`WEIGHTS` and :data:`CONFIG` under ``uri`` (local or s3://); returns the judge id."""
        files = self._files()
        storage.write_bytes(storage.join(uri, WEIGHTS), files[WEIGHTS])
        storage.write_bytes(storage.join(uri, CONFIG), files[CONFIG], content_type="application/json")
        self.info["judge_id"] = _identity(files)
        return self.info["judge_id"]


def _identity(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()[:16]


def exists(uri: str) -> bool:
    """Does ``uri`` hold a judge (its judge.json)?"""
    return storage.exists(storage.join(uri, CONFIG))


def read_config(uri: str) -> dict:
    """judge.json of the judge at ``uri`` plus its ``judge_id``, without loading the network or
    the head. Raises ModelError when it is missing, incomplete or not a judge of this format."""
    try:
        raw = storage.read_bytes(storage.join(uri, CONFIG))
        blob = storage.read_bytes(storage.join(uri, WEIGHTS))
    except storage.ObjectNotFound as exc:
        raise ModelError(f"judge at {uri} is incomplete ({exc}): train a new one (`catalog-render judge` for a model's judge, "
                         "another --judge directory for evaluate)") from None
    try:
        cfg = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{storage.join(uri, CONFIG)} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelError(f"{storage.join(uri, CONFIG)} is not a {FORMAT} judge (format {cfg.get('format') if isinstance(cfg, dict) else None!r}): "
                         "train a new one (`catalog-render judge` for a model's judge, another --judge directory for evaluate)")
    cfg["judge_id"] = _identity({CONFIG: raw, WEIGHTS: blob})
    cfg["_weights"] = blob
    return cfg


def load(uri: str) -> CategoryJudge:
    """Load a judge saved by :meth:`CategoryJudge.save` (the feature network loads on first use).
    Raises ModelError when it is incomplete, of another format, or its tensors do not fit."""
    cfg = read_config(uri)
    blob = cfg.pop("_weights")
    try:
        t = load_safetensors_bytes(blob)
        classes = [str(c) for c in cfg["classes"]]
        weight, bias, mean, std = (t[k].float() for k in ("weight", "bias", "mean", "std"))
        k, d = len(classes) + 1, int(weight.shape[1])
        if weight.shape != (k, d) or bias.shape != (k,) or mean.shape != (d,) or std.shape != (d,):
            raise ValueError(f"shapes weight {tuple(weight.shape)}, bias {tuple(bias.shape)}, mean {tuple(mean.shape)}, std {tuple(std.shape)} for {k} classes")
        if not all(torch.isfinite(x).all() for x in (weight, bias, mean, std)) or not (std > 0).all():
            raise ValueError("non-finite values or a non-positive std")
        layers = tuple(cfg["features"]["layers"])
        box = (int(cfg["letterbox"]["width"]), int(cfg["letterbox"]["height"]))
        float(cfg["calibration"]["threshold"])
    except Exception as exc:  # safetensors' own error, KeyError, ValueError, ...
        raise ModelError(f"judge at {uri} is invalid ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    info = {key: v for key, v in cfg.items() if key not in ("format", "classes", "letterbox", "features")}
    return CategoryJudge(classes, weight, bias, mean, std, box, layers, info)


# ------------------------------------------------------------------------------------ training


def fit_probe(feats: torch.Tensor, labels: torch.Tensor, n_classes: int, weight_decay: float = WEIGHT_DECAY,
              max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardised features: float (N, D), int64 labels (N,)
    in [0, n_classes) -> (weight (K, D), bias (K,)) float32 minimising mean cross-entropy +
    ``weight_decay`` x ||weight||², by full-batch L-BFGS (strong Wolfe line search) from zeros.
    Deterministic on one machine."""
    x = feats.double()
    y = labels.long()
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().float(), b.detach().float()


def _rank(seed: int, pid: str) -> bytes:
    return hashlib.sha256(f"judge:{seed}:{pid}".encode()).digest()


def calibration_split(product_ids: list[str], labels: list[int], share: float = CALIBRATION_SHARE, seed: int = 0) -> tuple[list[int], list[int]]:
    """(fit, calibration) indices: per class, the ``share`` of its items with the lowest
    sha256("judge:<seed>:<product_id>") (rounded, at least 1, and at least 1 left to fit) go to
    calibration. Independent of the input order."""
    fit, cal = [], []
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    for y, idx in sorted(by_class.items()):
        idx = sorted(idx, key=lambda i: _rank(seed, str(product_ids[i])))
        n_cal = min(max(1, round(len(idx) * share)), len(idx) - 1)
        cal += idx[:n_cal]
        fit += idx[n_cal:]
    return sorted(fit), sorted(cal)


def _percentiles(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in _PERCENTILES} | {"mean": float(arr.mean()), "n": int(arr.size)}


def train_judge(images: torch.Tensor, categories: list[str | None], product_ids: list[str], *, letterbox: tuple[int, int] | None = None,
                min_photos: int = MIN_PHOTOS, seed: int = 0, weight_decay: float = WEIGHT_DECAY, layers: tuple[str, ...] | None = None,
                info: dict | None = None) -> CategoryJudge:
    """Train and calibrate a judge on real photos (see the module docstring).

    ``images`` uint8 (N, 3, H, W) in [0, 255] (letterboxed to ``letterbox`` = (width, height), default
    (W, H) of ``images``), ``categories`` and ``product_ids`` their N catalog categories (None allowed)
    and ids. ``info`` is stored in judge.json beside the calibration and the training record
    (photos, class counts, CPU seconds). Raises CatalogError when fewer than 2 categories have
    ``min_photos`` photos."""
    from catalog_render.pretrained.features import DEFAULT_LAYERS, PooledFeatures

    t0, c0 = time.monotonic(), time.process_time()
    classes = judge_classes(categories, min_photos)
    keep = [i for i, c in enumerate(categories) if c in classes]
    box = letterbox or (int(images.shape[3]), int(images.shape[2]))
    extractor = PooledFeatures(tuple(layers or DEFAULT_LAYERS))
    x = _letterbox(images[keep], *box)
    ids = [str(product_ids[i]) for i in keep]
    fit, _ = calibration_split(ids, [classes.index(categories[i]) for i in keep], seed=seed)
    outliers = outlier_images(x[fit], max(MIN_OUTLIERS, round(OUTLIER_SHARE * len(fit))), seed=seed)
    kept = set(keep)
    other = [i for i in range(len(categories)) if i not in kept]
    feats_other = extractor(_letterbox(images[other], *box)) if other else None
    judge = fit_judge(extractor(x), extractor(x.flip(3)), extractor(outliers), [categories[i] for i in keep], ids, classes,
                      box, extractor.layers, seed=seed, weight_decay=weight_decay, min_photos=min_photos, feats_other=feats_other)
    judge._features = extractor
    counts = Counter(c for c in categories if c)
    judge.info = {**(info or {}), **judge.info, "photos_unused": len(categories) - len(keep), "categories_unused": len(counts) - len(classes),
                  "wall_seconds": round(time.monotonic() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2)}
    return judge


def outlier_images(photos: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` synthetic images that show no product, uint8 (n, 3, H, W) like ``photos`` (N, 3, H, W):
    in turn (1) uniform pixel noise, (2) colour blobs: a grid of g x g' uniform random colours
    (g from 2 to 12) enlarged bilinearly, (3) a photo cut into a 4 x 4 grid of tiles, shuffled
    (real colours and textures, no object), (4) a flat random colour with faint noise (sd 8 levels).
    Deterministic for ``seed``."""
    g = torch.Generator().manual_seed(seed)
    n_photos, _, h, w = photos.shape
    out = []
    for k in range(n):
        kind = k % 4
        if kind == 0:
            im = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.int64).float()
        elif kind == 1:
            gh, gw = (int(v) for v in torch.randint(2, 13, (2,), generator=g))
            small = torch.randint(0, 256, (1, 3, gh, gw), generator=g).float()
            im = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
        elif kind == 2:
            photo = photos[int(torch.randint(0, n_photos, (1,), generator=g))].float()
            th, tw = h // 4, w // 4
            tiles = [photo[:, r * th : (r + 1) * th, c * tw : (c + 1) * tw] for r in range(4) for c in range(4)]
            order = torch.randperm(16, generator=g).tolist()
            rows = [torch.cat([tiles[order[r * 4 + c]] for c in range(4)], dim=2) for r in range(4)]
            im = torch.full((3, h, w), 255.0)
            im[:, : 4 * th, : 4 * tw] = torch.cat(rows, dim=1)
        else:
            colour = torch.randint(0, 256, (3, 1, 1), generator=g).float()
            im = colour + 8 * torch.randn((3, h, w), generator=g)
        out.append(im.round().clamp(0, 255).to(torch.uint8))
    return torch.stack(out) if out else torch.zeros(0, 3, h, w, dtype=torch.uint8)


def judge_classes(categories: list[str | None], min_photos: int = MIN_PHOTOS) -> list[str]:
    """The categories with at least ``min_photos`` photos, most frequent first (ties by name).
    Raises CatalogError when fewer than 2 qualify."""
    counts = Counter(c for c in categories if c)
    classes = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_photos]
    if len(classes) < 2:
        raise CatalogError(
            f"the category judge needs at least 2 categories with >= {min_photos} photos, found {len(classes)}"
            f" ({', '.join(f'{c}: {n}' for c, n in counts.most_common(5)) or 'no categories at all'})")
    return classes


def fit_judge(feats: torch.Tensor, feats_mirrored: torch.Tensor, feats_outliers: torch.Tensor, categories: list[str], product_ids: list[str],
              classes: list[str], letterbox: tuple[int, int], layers: tuple[str, ...], *, seed: int = 0, weight_decay: float = WEIGHT_DECAY,
              min_photos: int = MIN_PHOTOS, feats_other: torch.Tensor | None = None) -> CategoryJudge:
    """The probe and calibration of :func:`train_judge` from precomputed features: ``feats`` and
    ``feats_mirrored`` (of the left-right mirrored images) float (N, D), N categories (each one of
    ``classes``) and product ids; ``feats_outliers`` (M, D) of :func:`outlier_images` of the fit photos;
    ``feats_other`` (L, D) of the photos of categories that are not classes (the product calibration), or None."""
    labels = [classes.index(c) for c in categories]
    fit, cal = calibration_split([str(p) for p in product_ids], labels, seed=seed)
    feats_fit = torch.cat([feats[fit], feats_mirrored[fit], feats_outliers])
    y_fit = torch.tensor([labels[i] for i in fit] * 2 + [len(classes)] * len(feats_outliers), dtype=torch.int64)
    mean = feats_fit.mean(dim=0)
    std = feats_fit.std(dim=0).clamp_min(1e-6)
    w, b = fit_probe((feats_fit - mean) / std, y_fit, len(classes) + 1, weight_decay)
    judge = CategoryJudge(list(classes), w, b, mean, std, letterbox, tuple(layers), {})
    p_cal = judge.probabilities_of_features(feats[cal])
    y_cal = torch.tensor([labels[i] for i in cal])
    true_p = p_cal[torch.arange(len(cal)), y_cal].tolist()
    majority = Counter(labels[i] for i in fit).most_common(1)[0][0]
    dist = _percentiles(true_p)
    judge.info = {
        "probe": f"multinomial logistic regression (L-BFGS, weight decay {weight_decay:g} on standardised features), fitted on {len(fit)} photos "
                 f"+ their mirror images + {len(feats_outliers)} synthetic outliers (class {OUTLIER_CLASS!r})",
        "outliers": len(feats_outliers),
        "min_photos": min_photos,
        "seed": seed,
        "weight_decay": weight_decay,
        "class_counts": dict(Counter(categories).most_common()),
        "photos": len(labels),
        "photos_fit": len(fit),
        "calibration": {
            "what": f"probability of the true category on {len(cal)} real photos the probe did not train on "
                    f"({CALIBRATION_SHARE:.0%} of each class, chosen by sha256 of judge:<seed>:<product_id>)",
            "photos": len(cal),
            "true_probability": dist,
            "threshold_percentile": THRESHOLD_PERCENTILE,
            "threshold": dist[f"p{THRESHOLD_PERCENTILE}"],
            "accuracy": float((p_cal.argmax(dim=1) == y_cal).float().mean()),
            "majority_baseline": float((y_cal == majority).float().mean()),
            "product": _product_calibration(judge, p_cal, feats_other),
        },
    }
    return judge


def _product_calibration(judge: CategoryJudge, p_cal: torch.Tensor, feats_other: torch.Tensor | None) -> dict:
    """The product threshold's calibration (module docstring): percentiles of ``1 - P(not a product
    photo)`` on the photos of unknown categories (``feats_other``), with the calibration photos'
    probabilities ``p_cal`` (C, K + 1) when those are fewer than :data:`MIN_PRODUCT_CALIBRATION`."""
    other = judge.probabilities_of_features(feats_other)[:, -1] if feats_other is not None and len(feats_other) else torch.zeros(0)
    alone = len(other) >= MIN_PRODUCT_CALIBRATION
    p_out = other if alone else torch.cat([other, p_cal[:, -1]])
    dist = _percentiles((1 - p_out).tolist())
    what = (f"{len(other)} real photos of categories with fewer than the judge's min_photos photos (not among its classes)" if alone else
            f"{len(other)} real photos of categories not among the judge's classes and its {len(p_cal)} calibration photos")
    return {"what": f"probability of some product, 1 - P({OUTLIER_CLASS!r}), on {what}", "photos": int(len(p_out)),
            "product_probability": dist, "threshold_percentile": THRESHOLD_PERCENTILE, "threshold": dist[f"p{THRESHOLD_PERCENTILE}"]}
