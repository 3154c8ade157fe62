"""Train the class-conditional diffusion model on a catalog's photos (see
catalog_render.generators.diffusion for the model and its directory).

Objective: DDPM (Ho et al. 2020): noise a training image (or latent) to a uniformly drawn timestep
with the DDPMScheduler's ``add_noise`` and regress the noise epsilon (or v, Salimans & Ho 2022, with
``prediction_type = "v_prediction"``) with a mean-squared error. AdamW at ``spec.lr``; an exponential
moving average of the UNet and of the condition encoder (decay ``spec.ema_decay`` with the GAN's
warm-up min(decay, (1+k)/(10+k)), k = steps into the UNet phase) is what gets saved and sampled.
Condition dropout (the loop sets indices to 0 = unknown with ``spec.condition_dropout``) teaches the
unconditional prediction that classifier-free guidance needs (Ho & Salimans 2022). The job's
``[train.augment]`` pipeline is applied to the input photos.

Latent space (Rombach et al. 2022): the first ``autoencoder_share`` of ``max_steps`` train a diffusers
AutoencoderKL (L1 + MSE reconstruction + ``kl_weight`` x KL); at the first UNet step the scaling
factor is fixed to 1 / std of that batch's latents, and the UNet then trains on scaled latents of the
frozen autoencoder. The step number decides the phase and the phase boundary and scaling factor
live in a checkpointed module (``latent``), so a resumed run continues exactly; both are written into
config.json at export (``autoencoder_steps``, ``scaling_factor``).

Fine-tuning from a base diffusion model: its weights are loaded with the embedding tables grown to
the new vocabulary (new rows start as the unknown row). A fine-tune never retrains the base's
autoencoder (the base UNet learnt its latent space): it is listed as frozen. ``freeze="lower"``
also freezes the UNet's encoder side (``conv_in``, ``down_blocks``); the middle and up blocks, the
time embedding and the condition encoder train. ``lora_rank=r`` freezes the whole UNet and trains
peft LoRA adapters (Hu et al. 2021; rank r, alpha r) on the attention projections and the ResNet
convolutions (:data:`catalog_render.generators.diffusion.LORA_TARGETS`) plus the condition encoder;
the export is then the adapter, the condition encoder and a config.json pointing at the base.
"""

from __future__ import annotations

import copy

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from catalog_render.config import TrainSpec
from catalog_render.errors import ConfigError
from catalog_render.generators import diffusion as dm
from catalog_render.training.gan_trainer import _grow_tables


class LatentState(nn.Module):
    """Checkpointed latent-space bookkeeping: ``autoencoder_steps`` (int64 scalar, steps of the
    autoencoder phase) and ``scaling_factor`` (float32 scalar, 0 until fixed; 1 in pixel space)."""

    def __init__(self, autoencoder_steps: int, scaling_factor: float):
        super().__init__()
        self.register_buffer("autoencoder_steps", torch.tensor(autoencoder_steps, dtype=torch.int64))
        self.register_buffer("scaling_factor", torch.tensor(scaling_factor, dtype=torch.float32))


def _state_bytes(module_or_state) -> bytes:
    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    return save_safetensors_bytes({k: v.detach().contiguous().clone() for k, v in state.items()})


class DiffusionTrainer:
    """The diffusion family's side of :class:`catalog_render.training.loop.Trainer` (see the
    module docstring)."""

    family = dm.FAMILY

    def __init__(self, spec: TrainSpec, conditions: list[dict], base=None, freeze: str = "none", lora_rank: int | None = None):
        if freeze not in ("none", "lower"):
            raise ConfigError(f"--freeze: expected lower or none, got {freeze!r}")
        if lora_rank is not None and base is None:
            raise ConfigError("--lora: LoRA adapters fine-tune a trained model; give --base")
        self.spec = spec
        self.base = base
        self.lora_rank = lora_rank
        d = spec.diffusion
        vocab_sizes = [len(c["values"]) for c in conditions]
        if base is not None:
            b = base.config
            if "base" in b:
                raise ConfigError(f"--base: {base.uri} is a LoRA adapter; fine-tune its base model ({b['base']['uri']}) instead")
            if (b["height"], b["width"]) != (spec.height, spec.width):
                raise ConfigError(f"train.height/width: the base model renders {b['height']}x{b['width']} px, the job asks {spec.height}x{spec.width}")
            self.config = {**b, "conditions": conditions}
            unet_cfg = dm._json(base.uri, dm.UNET_CONFIG)[0]
            self.sched_cfg = dm._json(base.uri, dm.SCHEDULER_CONFIG)[0]
        else:
            self.config = {
                "family": dm.FAMILY,
                "height": spec.height,
                "width": spec.width,
                "space": d.space,
                "embed_dim": spec.embed_dim,
                "block_out_channels": list(d.block_out_channels),
                "layers_per_block": d.layers_per_block,
                "attention_levels": min(d.attention_levels, len(d.block_out_channels)),
                "num_train_timesteps": d.num_train_timesteps,
                "prediction_type": d.prediction_type,
                "beta_schedule": d.beta_schedule,
                "conditions": conditions,
            }
            if d.space == "latent":
                self.config |= {"latent_channels": d.latent_channels, "autoencoder_channels": list(d.autoencoder_channels),
                                "kl_weight": d.kl_weight, "autoencoder_steps": None, "scaling_factor": None}
            else:
                self.config["scaling_factor"] = 1.0
            f = dm.downscale(self.config) * 2 ** (len(d.block_out_channels) - 1)
            if spec.height % f or spec.width % f:
                raise ConfigError(f"train.height/width: {spec.height}x{spec.width} px must be multiples of {f} for this "
                                  f"{'autoencoder and ' if d.space == 'latent' else ''}UNet ({len(d.block_out_channels)} levels)")
            unet_cfg = dm.unet_config(self.config)
            self.sched_cfg = dm.scheduler_config(self.config)
        self.latent_space = self.config["space"] == "latent"
        self.unet = dm.build_unet(unet_cfg)
        self.cond = dm.ConditionProjector(vocab_sizes, self.config["embed_dim"], dm.time_embed_dim(unet_cfg))
        self.vae = dm.build_autoencoder(dm._json(base.uri, dm.VAE_CONFIG)[0] if base else dm.autoencoder_config(self.config)) if self.latent_space else None
        if base is not None:
            from catalog_render.generators.weights import read_safetensors

            dm.load_state(self.unet, load_safetensors_bytes(read_safetensors(base.uri, dm.UNET_WEIGHTS)), f"{base.uri}/{dm.UNET_WEIGHTS}")
            cstate = _grow_tables(load_safetensors_bytes(read_safetensors(base.uri, dm.CONDITION_ENCODER)), "cond.tables.", vocab_sizes)
            dm.load_state(self.cond, cstate, f"{base.uri}/{dm.CONDITION_ENCODER}")
            if self.vae is not None:
                dm.load_state(self.vae, load_safetensors_bytes(read_safetensors(base.uri, dm.VAE_WEIGHTS)), f"{base.uri}/{dm.VAE_WEIGHTS}")
            self.latent = LatentState(0, float(b.get("scaling_factor") or 1.0))
        elif self.latent_space:
            ae_steps = d.autoencoder_steps if d.autoencoder_steps is not None else round(d.autoencoder_share * spec.max_steps)
            self.latent = LatentState(max(1, min(spec.max_steps - 1, ae_steps)), 0.0)
        else:
            self.latent = LatentState(0, 1.0)
        self.noise = _ddpm(self.sched_cfg)

        self.frozen: list[str] = []
        if self.vae is not None and base is not None:
            for name, p in self.vae.named_parameters():
                p.requires_grad_(False)
                self.frozen.append(f"vae.{name}")
        if lora_rank is not None:
            dm.add_lora(self.unet, lora_rank, lora_rank, list(dm.LORA_TARGETS))
            for name, p in self.unet.named_parameters():
                p.requires_grad_("lora_" in name)
                if not p.requires_grad:  # every base UNet weight (adapted layers' under ".base_layer.")
                    self.frozen.append(f"unet.{name}")
            self.config = {**self.config, "base": {"uri": base.uri, "model_id": base.model_id},
                           "lora": {"rank": lora_rank, "alpha": lora_rank, "target_modules": list(dm.LORA_TARGETS)}}
        elif freeze == "lower":
            for name, p in self.unet.named_parameters():
                if name.startswith(("conv_in.", "down_blocks.")):
                    p.requires_grad_(False)
                    self.frozen.append(f"unet.{name}")
        self.unet_ema = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.cond_ema = copy.deepcopy(self.cond).eval().requires_grad_(False)
        self._ema_pairs = [(pe, p) for m, me in ((self.unet, self.unet_ema), (self.cond, self.cond_ema))
                           for pe, p in zip(me.parameters(), m.parameters()) if p.requires_grad]
        trainable = [p for p in self.unet.parameters() if p.requires_grad] + list(self.cond.parameters())
        self.opt = torch.optim.AdamW(trainable, lr=spec.lr)
        self.opt_ae = torch.optim.AdamW(self.vae.parameters(), lr=spec.lr) if self.vae is not None and base is None else None

    # --- Trainer protocol ------------------------------------------------------------------------

    def modules(self) -> dict[str, nn.Module]:
        out = {"unet": self.unet, "cond": self.cond, "unet_ema": self.unet_ema, "cond_ema": self.cond_ema, "latent": self.latent}
        if self.vae is not None:
            out["vae"] = self.vae
        return out

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"unet": self.opt, **({"autoencoder": self.opt_ae} if self.opt_ae is not None else {})}

    def train_step(self, real: torch.Tensor, idx: torch.Tensor, augment: nn.Module, step: int) -> dict[str, float]:
        """Returns ``{"loss": float}``: in the autoencoder phase (latent space, step <
        autoencoder_steps) the autoencoder's L1 + MSE + kl_weight x KL, then the UNet's MSE on
        epsilon or v. One key in both phases: the loop's loss curve expects the same keys at every
        point (config.json's ``autoencoder_steps`` says where the curve changes meaning)."""
        x = augment(real)
        ae_steps = int(self.latent.autoencoder_steps)
        if self.opt_ae is not None and step < ae_steps:
            return self._autoencoder_step(x)
        if self.vae is not None:
            with torch.no_grad():
                z = self.vae.encode(x).latent_dist.sample()
                if float(self.latent.scaling_factor) == 0.0:
                    self.latent.scaling_factor.fill_(1.0 / z.float().std().clamp_min(1e-6))
                x = z * self.latent.scaling_factor
        noise = torch.randn_like(x)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (x.shape[0],), dtype=torch.int64)
        noisy = self.noise.add_noise(x, noise, t)
        target = noise if self.noise.config.prediction_type == "epsilon" else self.noise.get_velocity(x, noise, t)
        pred = self.unet(noisy, t, class_labels=self.cond(idx)).sample
        loss = nn.functional.mse_loss(pred, target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        k = step - ae_steps
        decay = min(self.spec.ema_decay, (1 + k) / (10 + k))
        with torch.no_grad():
            for pe, p in self._ema_pairs:
                pe.lerp_(p, 1 - decay)
        return {"loss": loss.item()}

    def _autoencoder_step(self, x: torch.Tensor) -> dict[str, float]:
        posterior = self.vae.encode(x).latent_dist
        rec = self.vae.decode(posterior.sample()).sample
        rec_loss = (rec - x).abs().mean() + nn.functional.mse_loss(rec, x)
        kl = posterior.kl().mean() / x[0].numel()  # per pixel value, comparable to the reconstruction terms
        loss = rec_loss + self.config["kl_weight"] * kl
        self.opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_ae.step()
        return {"loss": loss.item()}

    def sample(self, idx: torch.Tensor, seeds: list[int], steps: int = 20, guidance: float = 1.0) -> torch.Tensor:
        """EMA UNet + condition encoder, DDIM ``steps`` steps, batched (a sample sheet):
        float (B, 3, H, W) in [-1, 1]. During the autoencoder phase the UNet is untrained: noise."""
        scaling = float(self.latent.scaling_factor) or 1.0
        return dm.denoise(self.unet_ema, self.cond_ema, self.vae, scaling, self.sched_cfg, idx, seeds, dm.sample_shape(self.config),
                          steps=steps, guidance=guidance, per_image=False)

    def export(self) -> dict[str, bytes]:
        """A full model's files, or for LoRA the adapter + condition encoder only. Fills
        config.json's ``scaling_factor`` and ``autoencoder_steps`` (latent space, from scratch)."""
        files = {dm.CONDITION_ENCODER: _state_bytes(self.cond_ema)}
        if self.lora_rank is not None:
            from peft import get_peft_model_state_dict

            files[dm.ADAPTER_WEIGHTS] = _state_bytes(get_peft_model_state_dict(self.unet_ema))
            return files
        if self.latent_space and self.base is None:
            self.config["scaling_factor"] = float(self.latent.scaling_factor) or None
            self.config["autoencoder_steps"] = int(self.latent.autoencoder_steps)
        files[dm.UNET_CONFIG] = dm.config_bytes_of(self.unet_ema.config, "UNet2DModel")
        files[dm.UNET_WEIGHTS] = _state_bytes(self.unet_ema)
        files[dm.SCHEDULER_CONFIG] = dm.config_bytes_of(self.sched_cfg, "DDPMScheduler")
        if self.vae is not None:
            files[dm.VAE_CONFIG] = dm.config_bytes_of(self.vae.config, "AutoencoderKL")
            files[dm.VAE_WEIGHTS] = _state_bytes(self.vae)
        return files

    def describe(self) -> dict:
        def count(m, trainable=False):
            return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable) if m is not None else 0

        latent = self.latent_space
        arch = (
            "class-conditional DDPM (Ho et al. 2020) on a diffusers UNet2DModel, self-attention at the lowest "
            f"{self.config['attention_levels']} level(s) and the middle block, conditioned by per-field embeddings projected "
            "onto the time embedding; EMA weights; "
            + ("latent diffusion on a small AutoencoderKL, latents scaled to unit variance (Rombach et al. 2022); " if latent else "pixel space; ")
            + f"{self.config['prediction_type']} prediction, {self.config.get('beta_schedule', 'linear')} noise schedule; "
            "sampling with DDIM (Song et al. 2021) or DPM-Solver++ (Lu et al. 2022) and classifier-free guidance "
            "(Ho & Salimans 2022, condition dropout)"
            + (f"; LoRA adapters rank {self.lora_rank} (Hu et al. 2021) on a frozen base UNet" if self.lora_rank is not None else "")
        )
        params = {"unet": sum(p.numel() for n, p in self.unet.named_parameters() if "lora_" not in n),
                  "condition_encoder": count(self.cond), "trainable": count(self.unet, True) + count(self.cond, True)}
        if latent:
            params["autoencoder"] = count(self.vae)
        if self.lora_rank is not None:
            params["lora_adapter"] = sum(p.numel() for n, p in self.unet.named_parameters() if "lora_" in n)
        out = {"architecture": arch, "parameters": params, "space": self.config["space"]}
        if latent:
            out["latent"] = {"autoencoder_steps": int(self.latent.autoencoder_steps), "scaling_factor": float(self.latent.scaling_factor),
                             "shape": list(dm.sample_shape(self.config))}
        return out


def _ddpm(sched_cfg: dict):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(sched_cfg)

