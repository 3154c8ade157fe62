"""Train the conditional GAN on a catalog's photos (see catalog_render.generators.gan).

Loss: hinge loss (Lim & Ye 2017; Miyato et al. 2018). Discriminator: spectral norm (Miyato et al.
2018) with a projection head per conditioning field (Miyato & Koyama 2018). Differentiable
augmentation of real and fake images alike (Zhao et al. 2020, "DiffAugment"): horizontal flip and
small translations via kornia; no colour jitter, since colour is a conditioning attribute.
EMA of the generator weights is what gets saved (Karras et al. 2018; Yazici et al. 2019).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors_bytes
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from catalog_render import storage
from catalog_render.config import TrainSpec
from catalog_render.generators import gan
from catalog_render.training.data import ImageSet, build_vocab


class ProjectionDiscriminator(nn.Module):
    """images (B, 3, H, W) in [-1, 1] + condition indices (B, F) -> logits (B,)."""

    def __init__(self, vocab_sizes: list[int], base: int = 32, n_down: int = 4):
        super().__init__()
        layers, cin = [], 3
        for i in range(n_down):
            cout = base * 2**i
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            layers += [spectral_norm(nn.Conv2d(cout, cout, 3, padding=1)), nn.LeakyReLU(0.2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(cin, 1))
        self.embeds = nn.ModuleList(spectral_norm(nn.Embedding(n, cin)) for n in vocab_sizes)

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))
        out = self.linear(h).squeeze(1)
        for i, e in enumerate(self.embeds):
            out = out + (e(idx[:, i]) * h).sum(dim=1)
        return out


@dataclass
class TrainResult:
    steps: int
    wall_seconds: float
    loss_curve: list[dict]
    model_id: str
    stopped_by: str  # "max_steps" | "max_minutes"


def _grid(images: list[Image.Image], cols: int) -> Image.Image:
    w, h = images[0].size
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    return grid


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def train_gan(data: ImageSet, spec: TrainSpec, out_uri: str, catalog_uri: str, catalog_sha256: str, progress=None) -> TrainResult:
    """Train on ``data`` until ``spec.max_steps`` or ``spec.max_minutes`` (wall clock), then save a
    model directory at ``out_uri``: config.json, model.safetensors (EMA generator), model_card.json,
    samples.png. ``progress(step, total, losses)`` is called every few steps if given."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    t0 = time.monotonic()
    deadline = t0 + spec.max_minutes * 60
    vocab = build_vocab(data.conditionings, list(spec.conditions), spec.min_count)
    cfg = {
        "family": gan.FAMILY,
        "height": spec.height,
        "width": spec.width,
        "z_dim": spec.z_dim,
        "embed_dim": spec.embed_dim,
        "base_channels": spec.base_channels,
        "num_upsamples": 4,
        "conditions": [{"field": k, "values": v} for k, v in vocab.items()],
    }
    G = gan.GanGenerator(cfg)
    D = ProjectionDiscriminator([len(v) for v in vocab.values()])
    G_ema = copy.deepcopy(G).eval()
    for p in G_ema.parameters():
        p.requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=spec.lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=spec.lr * 2, betas=(0.0, 0.99))
    augment = nn.Sequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.9, 1.1), padding_mode="border", p=0.8),
    )
    idx_all = gan.condition_indices(cfg, data.conditionings)
    real_all = data.images  # uint8 (N, 3, H, W)
    n = real_all.shape[0]
    gen = torch.Generator().manual_seed(spec.seed)
    bs = min(spec.batch_size, n)
    # Fixed sample sheet: the most common conditions, same latents every time.
    n_samples = min(32, n)
    sample_idx = idx_all[torch.randperm(n, generator=torch.Generator().manual_seed(1))[:n_samples]]
    sample_z = gan.latents(list(range(n_samples)), spec.z_dim)
    curve: list[dict] = []
    step = 0
    stopped_by = "max_steps"
    acc = {"d_loss": 0.0, "g_loss": 0.0, "n": 0}
    while step < spec.max_steps:
        if time.monotonic() >= deadline:
            stopped_by = "max_minutes"
            break
        sel = torch.randint(0, n, (bs,), generator=gen)
        real = real_all[sel].float() / 127.5 - 1.0
        idx = idx_all[sel]
        drop = torch.rand(idx.shape, generator=gen) < spec.condition_dropout
        idx = idx.masked_fill(drop, 0)
        z = torch.randn(bs, spec.z_dim, generator=gen)
        # discriminator step
        fake = G(z, idx)
        d_real = D(augment(real), idx)
        d_fake = D(augment(fake.detach()), idx)
        d_loss = torch.relu(1 - d_real).mean() + torch.relu(1 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # generator step
        g_loss = -D(augment(fake), idx).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        # EMA of weights, buffers (batch-norm statistics) copied
        decay = min(spec.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - decay)
            for be, b in zip(G_ema.buffers(), G.buffers()):
                be.copy_(b)
        step += 1
        acc["d_loss"] += d_loss.item()
        acc["g_loss"] += g_loss.item()
        acc["n"] += 1
        if step % 25 == 0 or step == spec.max_steps:
            curve.append({"step": step, "seconds": round(time.monotonic() - t0, 1), "d_loss": acc["d_loss"] / acc["n"], "g_loss": acc["g_loss"] / acc["n"]})
            acc = {"d_loss": 0.0, "g_loss": 0.0, "n": 0}
            if progress:
                progress(step, spec.max_steps, curve[-1])
        if step % spec.sample_every == 0:
            with torch.no_grad():
                storage.write_bytes(storage.join(out_uri, "samples", f"step-{step:06d}.png"), _png(_grid(gan.to_pil(G_ema(sample_z, sample_idx)), 8)))
    wall = time.monotonic() - t0
    config_bytes = gan.config_json(cfg)
    weights = save_safetensors_bytes({k: v.detach().contiguous() for k, v in G_ema.state_dict().items()})
    storage.write_bytes(storage.join(out_uri, "model.safetensors"), weights)
    with torch.no_grad():
        storage.write_bytes(storage.join(out_uri, "samples.png"), _png(_grid(gan.to_pil(G_ema(sample_z, sample_idx)), 8)))
    model_id = gan.hash_files([("config.json", config_bytes), ("model.safetensors", weights)])
    card = {
        "family": gan.FAMILY,
        "model_id": model_id,
        "architecture": "conditional DCGAN generator (conditional batch norm) + spectral-norm projection discriminator, hinge loss, EMA generator",
        "parameters": {"generator": sum(p.numel() for p in G.parameters()), "discriminator": sum(p.numel() for p in D.parameters())},
        "training_catalog": {"uri": catalog_uri, "sha256": catalog_sha256, "images": n, "skipped": len(data.skipped)},
        "resolution": {"height": spec.height, "width": spec.width},
        "conditions": {k: len(v) - 1 for k, v in vocab.items()},
        "steps": step,
        "batch_size": bs,
        "stopped_by": stopped_by,
        "wall_seconds": round(wall, 1),
        "seconds_per_step": round(wall / max(step, 1), 3),
        "train_spec": spec.model_dump(mode="json"),
        "loss_curve": curve,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    storage.write_bytes(storage.join(out_uri, "model_card.json"), json.dumps(card, indent=2, ensure_ascii=False).encode())
    # config last: a directory without config.json is not a model, so a crash mid-save is visible
    storage.write_bytes(storage.join(out_uri, "config.json"), config_bytes)
    return TrainResult(step, wall, curve, model_id, stopped_by)


def sha256_of(uri: str) -> str:
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()
