"""Train the conditional VAE on a catalog's photos (see catalog_render.generators.vae).

Objective: the negative evidence lower bound of Kingma & Welling 2014, with the KL term weighted by
``beta`` (Higgins et al. 2017; beta = 1 is the plain ELBO), per image, averaged over the batch::

    loss = sum_pixels (x - x_hat)**2  +  beta * KL(q(z | x, y) || N(0, I))
    KL   = 1/2 * sum_j (mu_j**2 + exp(logvar_j) - 1 - logvar_j)

Reconstruction term: squared error summed over the 3 * H * W values of the image (in [-1, 1]), i.e.
the negative log-likelihood of a Gaussian decoder with fixed variance 1/2, up to a constant. MSE
rather than L1 because it is that likelihood (the KL weighting then means what beta says) and
because the evaluation scores reconstructions by PSNR, a function of MSE. Summed per image rather
than averaged per pixel so that its balance against the KL term (summed over latent dimensions)
does not shrink with the image size: a per-pixel mean would weight the KL 3 * H * W times more and
collapse the posterior to the prior.

``augment`` (the job's kornia pipeline) is applied to the input photo, and the augmented photo is
also the target. The EMA of the whole VAE (encoder included) is what samples and is saved
(Karras et al. 2018; Yazici et al. 2019), with the GAN's warm-up.
"""

from __future__ import annotations

import copy

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from catalog_render.config import TrainSpec
from catalog_render.errors import ConfigError
from catalog_render.generators import vae
from catalog_render.generators.conditioning import latents
from catalog_render.training.gan_trainer import _grow_tables

NUM_DOWNSAMPLES = 4


class VaeTrainer:
    """The conditional VAE's side of :class:`catalog_render.training.loop.Trainer`.

    ``freeze="lower"`` freezes the encoder's convolution stack (``vae.encoder.convs.*``, the
    low-level image features); the condition embeddings, the encoder's ``mu``/``logvar`` heads and
    the whole decoder train, so new catalog values are learnt in both directions. LoRA is not offered
    for the VAE (ConfigError)."""

    family = vae.FAMILY

    def __init__(self, spec: TrainSpec, conditions: list[dict], base=None, freeze: str = "none", lora_rank: int | None = None):
        if lora_rank is not None:
            raise ConfigError("--lora: LoRA adapters are for the diffusion family's UNet; fine-tune a VAE with --freeze lower|none")
        if freeze not in ("lower", "none"):
            raise ConfigError(f"--freeze: expected lower or none, got {freeze!r}")
        self.spec = spec
        if base is not None:
            b = base.config
            if (b["height"], b["width"]) != (spec.height, spec.width):
                raise ConfigError(f"train.height/width: the base model renders {b['height']}x{b['width']} px, the job asks {spec.height}x{spec.width}")
            self.config = {**b, "conditions": conditions}
        else:
            m = 2**NUM_DOWNSAMPLES
            if spec.height % m or spec.width % m:
                raise ConfigError(f"train.height/width: the VAE needs multiples of {m} px ({NUM_DOWNSAMPLES} downsamplings), got {spec.height}x{spec.width}")
            self.config = {
                "family": vae.FAMILY,
                "height": spec.height,
                "width": spec.width,
                "latent_dim": spec.vae.latent_dim,
                "base_channels": spec.vae.base_channels,
                "embed_dim": spec.embed_dim,
                "num_downsamples": NUM_DOWNSAMPLES,
                "conditions": conditions,
            }
        self.beta = spec.vae.beta
        self.vae = vae.ConditionalVae(self.config)
        if base is not None:
            from catalog_render.generators.weights import read_safetensors

            state = load_safetensors_bytes(read_safetensors(base.uri, "model.safetensors"))
            self.vae.load_state_dict(_grow_tables(state, "cond.tables.", [len(c["values"]) for c in conditions]))
        self.vae_ema = copy.deepcopy(self.vae).eval()
        for p in self.vae_ema.parameters():
            p.requires_grad_(False)
        self.frozen: list[str] = []
        if freeze == "lower":
            for name, p in self.vae.named_parameters():
                if name.startswith("encoder.convs."):
                    p.requires_grad_(False)
                    self.frozen.append(f"vae.{name}")
        self.opt = torch.optim.Adam([p for p in self.vae.parameters() if p.requires_grad], lr=spec.lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae, "vae_ema": self.vae_ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": self.opt}

    def train_step(self, real: torch.Tensor, idx: torch.Tensor, augment: nn.Module, step: int) -> dict[str, float]:
        """One Adam step on the beta-weighted negative ELBO (module docstring). ``real`` float32
        (B, 3, H, W) in [-1, 1]; the augmented photo is both input and target. Returns per-image
        batch means: ``loss``, ``recon`` (summed squared error) and ``kl`` (nats)."""
        self.vae.train()
        x = augment(real)
        eps = torch.randn(x.shape[0], self.config["latent_dim"])
        x_hat, mu, logvar = self.vae(x, idx, eps)
        recon = (x_hat - x).pow(2).flatten(1).sum(dim=1).mean()
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum(dim=1).mean()
        loss = recon + self.beta * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        decay = min(self.spec.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(self.vae_ema.parameters(), self.vae.parameters()):
                if p.requires_grad:  # frozen parameters stay bitwise equal to the base's
                    pe.lerp_(p, 1 - decay)
            for be, b in zip(self.vae_ema.buffers(), self.vae.buffers()):
                be.copy_(b)
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

    def sample(self, idx: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """EMA decoder on z ~ N(0, I), one torch.Generator per seed: (B, 3, H, W) in [-1, 1]."""
        return self.vae_ema.decode(latents(seeds, self.config["latent_dim"]), idx)

    def export(self) -> dict[str, bytes]:
        """``model.safetensors``: the EMA VAE's state dict (the whole model, its only file)."""
        return {"model.safetensors": save_safetensors_bytes({k: v.detach().contiguous() for k, v in self.vae_ema.state_dict().items()})}

    def describe(self) -> dict:
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        n = self.config.get("num_downsamples", NUM_DOWNSAMPLES)
        return {
            "architecture": (
                f"conditional VAE (Kingma & Welling 2014; conditional: Sohn et al. 2015): encoder {n} strided 4x4 convs "
                f"(GroupNorm, SiLU) + linear mu/logvar heads, decoder linear + {n} upsample/conv blocks, tanh output; "
                f"per-field condition embeddings shared by encoder and decoder; loss summed squared error + beta * KL "
                f"(beta={self.beta}; Higgins et al. 2017); EMA weights"
            ),
            "parameters": {
                "encoder": count(self.vae.encoder),
                "decoder": count(self.vae.decoder),
                "condition_embeddings": count(self.vae.cond),
            },
            "latent_dim": self.config["latent_dim"],
            "beta": self.beta,
        }
