"""Class-conditional diffusion (family ``diffusion``) on a diffusers ``UNet2DModel``.

Model: the denoising UNet of Ho et al. 2020 ("DDPM") as diffusers' ``UNet2DModel`` (ResNet down/up
blocks, self-attention only at the lowest ``attention_levels`` resolutions and in the middle block:
attention at full resolution is very slow on a CPU). Conditioning: the catalog fields of
config.json's ``conditions`` (category, colour, gender...) are embedded by a
:class:`~catalog_render.generators.conditioning.ConditionEncoder`, concatenated and projected to the
UNet's time-embedding size; the UNet adds that vector to its time embedding
(``class_embed_type="identity"``), so several fields condition one render at once.

Space: ``pixel`` (the UNet denoises RGB images in [-1, 1]) or ``latent`` (Rombach et al. 2022: the
UNet denoises the latents of a small diffusers ``AutoencoderKL``, multiplied by config.json's
``scaling_factor`` = 1 / std of training latents, and the autoencoder decodes the result).

Sampling: DDIM (Song et al. 2021, eta = 0, deterministic) by default, or DPM-Solver++ (Lu et al.
2022, diffusers' ``DPMSolverMultistepScheduler``) when ``GenerationParams.scheduler`` names it; both
are built with ``from_config`` from the saved ``scheduler/scheduler_config.json`` (the training
DDPMScheduler's). Classifier-free guidance (Ho & Salimans 2022): the unconditional prediction uses
condition index 0 (unknown) for every field, which training's condition dropout teaches;
``guidance_scale`` <= 1 runs the conditional pass only. Each image's initial noise comes from its own
``torch.Generator`` seeded with its seed, and each image is denoised on its own (its conditional and
unconditional passes together), so an image is the same whatever batch it is rendered in.

A model directory (diffusers ``save_pretrained`` names, all read through catalog_render.storage)::

    config.json                                family, height, width, conditions, space, scaling_factor, ...
    condition_encoder.safetensors              ConditionProjector (embedding tables + projection)
    unet/config.json + unet/diffusion_pytorch_model.safetensors   the EMA UNet
    vae/config.json + vae/diffusion_pytorch_model.safetensors     the AutoencoderKL (latent space only)
    scheduler/scheduler_config.json            the training noise schedule (DDPMScheduler)

A LoRA model (Hu et al. 2021, peft) holds only ``config.json`` (with ``"base": {"uri", "model_id"}``
and ``"lora": {"rank", "alpha", "target_modules"}``), ``adapter/adapter_model.safetensors`` (peft's
``get_peft_model_state_dict`` of the UNet) and its own ``condition_encoder.safetensors`` (its
vocabulary may have grown); the UNet, autoencoder and schedule come from the base, which must still
have the model_id recorded in the pointer.

The model_id is :func:`~catalog_render.generators.base.hash_files` over config.json and every file
listed above (what :func:`catalog_render.training.loop.train` computes).
"""

from __future__ import annotations

import json

import torch
from PIL import Image
from safetensors.torch import load as load_safetensors_bytes
from torch import nn

from catalog_render import storage
from catalog_render.errors import ConfigError, ModelError
from catalog_render.generators.base import Conditioning, GenerationParams, check_finite, hash_files
from catalog_render.generators.conditioning import (  # noqa: F401  (re-exported)
    UNKNOWN,
    ConditionEncoder,
    condition_indices,
    conditioning_problem,
    to_pil,
)

FAMILY = "diffusion"
UNET_CONFIG = "unet/config.json"
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
VAE_CONFIG = "vae/config.json"
VAE_WEIGHTS = "vae/diffusion_pytorch_model.safetensors"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
CONDITION_ENCODER = "condition_encoder.safetensors"
ADAPTER_WEIGHTS = "adapter/adapter_model.safetensors"
#: Sampling schedulers offered (``generation.scheduler``); None = DDIM.
SCHEDULERS = ("DDIMScheduler", "DPMSolverMultistepScheduler")
DEFAULT_SCHEDULER = "DDIMScheduler"
#: Modules LoRA adapts: the attention projections and, so a small UNet has something to adapt, the
#: ResNet convolutions.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")
#: GroupNorm groups of the UNet and autoencoder (channels are multiples of 8, see DiffusionSpec).
NORM_GROUPS = 8

#: GenerationParams fields (besides the size) that change a diffusion model's pixels.
PARAMS_USED: tuple[str, ...] = ("num_inference_steps", "guidance_scale", "scheduler")


class ConditionProjector(nn.Module):
    """Condition indices int64 (B, F) -> float (B, out_dim): per-field embeddings (``cond``, one
    table per field, index 0 = unknown), concatenated, then a linear projection (``proj``) to the
    UNet's time-embedding size. Saved as condition_encoder.safetensors."""

    def __init__(self, vocab_sizes: list[int], embed_dim: int, out_dim: int):
        super().__init__()
        self.cond = ConditionEncoder(vocab_sizes, embed_dim)
        self.proj = nn.Linear(self.cond.out_dim, out_dim)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.proj(self.cond(idx))


# --- configs -------------------------------------------------------------------------------------


def downscale(cfg: dict) -> int:
    """Pixels per latent cell along each side: 1 in pixel space, 2**(levels-1) in latent space."""
    return 2 ** (len(cfg["autoencoder_channels"]) - 1) if cfg["space"] == "latent" else 1


def sample_shape(cfg: dict) -> tuple[int, int, int]:
    """(channels, height, width) of what the UNet denoises."""
    f = downscale(cfg)
    c = cfg["latent_channels"] if cfg["space"] == "latent" else 3
    return c, cfg["height"] // f, cfg["width"] // f


def unet_config(cfg: dict) -> dict:
    """The UNet2DModel constructor arguments for a model config (family config.json)."""
    chans = list(cfg["block_out_channels"])
    n = len(chans)
    attn_from = n - cfg["attention_levels"]  # levels >= this one (the lowest resolutions) attend
    c, h, w = sample_shape(cfg)
    return {
        "sample_size": [h, w],
        "in_channels": c,
        "out_channels": c,
        "block_out_channels": chans,
        "layers_per_block": cfg["layers_per_block"],
        "down_block_types": ["AttnDownBlock2D" if i >= attn_from else "DownBlock2D" for i in range(n)],
        "up_block_types": ["AttnUpBlock2D" if n - 1 - i >= attn_from else "UpBlock2D" for i in range(n)],
        "add_attention": cfg["attention_levels"] > 0,  # the middle block, at the lowest resolution
        "attention_head_dim": 8,
        "norm_num_groups": NORM_GROUPS,
        "class_embed_type": "identity",
    }


def time_embed_dim(unet_cfg: dict) -> int:
    """Width of the UNet's time embedding (diffusers: block_out_channels[0] * 4 by default)."""
    return unet_cfg.get("time_embedding_dim") or unet_cfg["block_out_channels"][0] * 4


def autoencoder_config(cfg: dict) -> dict:
    """The AutoencoderKL constructor arguments for a latent-space model config."""
    chans = list(cfg["autoencoder_channels"])
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(chans),
        "up_block_types": ["UpDecoderBlock2D"] * len(chans),
        "block_out_channels": chans,
        "layers_per_block": 1,
        "latent_channels": cfg["latent_channels"],
        "norm_num_groups": NORM_GROUPS,
        "sample_size": max(cfg["height"], cfg["width"]),
        "mid_block_add_attention": True,
    }


def scheduler_config(cfg: dict) -> dict:
    """The training DDPMScheduler's arguments (saved as scheduler/scheduler_config.json). Clipping
    the predicted x0 to [-1, 1] suits pixels only (scaled latents are not bounded)."""
    return {
        "num_train_timesteps": cfg["num_train_timesteps"],
        "beta_schedule": cfg["beta_schedule"],
        "prediction_type": cfg["prediction_type"],
        "clip_sample": cfg["space"] == "pixel",
    }


def config_bytes_of(obj_config: dict, class_name: str) -> bytes:
    """A diffusers-style config file (``_class_name`` + arguments) as stable JSON bytes."""
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(obj_config).items() if not k.startswith("_")}
    return json.dumps({"_class_name": class_name, **plain}, indent=2, sort_keys=True).encode()


def make_scheduler(name: str | None, sched_cfg: dict):
    """A fresh sampling scheduler built ``from_config`` (multistep solvers keep state per run).
    Raises ConfigError naming generation.scheduler for a name not in :data:`SCHEDULERS`."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    name = name or DEFAULT_SCHEDULER
    if name == "DDIMScheduler":
        return DDIMScheduler.from_config(sched_cfg)
    if name == "DPMSolverMultistepScheduler":
        return DPMSolverMultistepScheduler.from_config(sched_cfg, algorithm_type="dpmsolver++")
    raise ConfigError(f"generation.scheduler: {name!r} is not offered by the diffusion family (use one of {', '.join(SCHEDULERS)})")


# --- sampling ------------------------------------------------------------------------------------


def initial_noise(seeds: list[int], shape: tuple[int, int, int]) -> torch.Tensor:
    """float32 (B, *shape) N(0, 1), image i from its own torch.Generator seeded with seeds[i]."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def denoise(
    unet: nn.Module,
    cond: nn.Module,
    vae: nn.Module | None,
    scaling_factor: float,
    sched_cfg: dict,
    idx: torch.Tensor,
    seeds: list[int],
    shape: tuple[int, int, int],
    *,
    steps: int = 20,
    guidance: float = 1.0,
    scheduler: str | None = None,
    per_image: bool = True,
) -> torch.Tensor:
    """Render images: float (B, 3, H, W) in [-1, 1] (decoded by ``vae`` when given).

    ``idx`` int64 (B, F) condition indices; ``seeds`` one per image (initial noise, see
    :func:`initial_noise`); ``shape`` (C, h, w) of what ``unet`` denoises; ``steps`` sampler steps;
    ``guidance`` classifier-free guidance scale (<= 1: conditional pass only). ``per_image`` denoises
    one image at a time (its conditional and unconditional passes batched together), so an image
    never depends on its batch; False batches everything (training sample sheets: faster)."""
    p = next(unet.parameters())
    device, dtype = p.device, p.dtype
    x_all = initial_noise(seeds, shape)
    groups = [[i] for i in range(len(seeds))] if per_image else [list(range(len(seeds)))]
    out = []
    for g in groups:
        sched = make_scheduler(scheduler, sched_cfg)
        sched.set_timesteps(steps)
        x = (x_all[g] * sched.init_noise_sigma).to(device, dtype)
        i = idx[g].to(device)
        if guidance > 1:
            labels = cond(torch.cat([i, torch.zeros_like(i)])).to(dtype)
        else:
            labels = cond(i).to(dtype)
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            if guidance > 1:
                pred = unet(torch.cat([inp, inp]), t, class_labels=labels).sample
                pc, pu = pred.chunk(2)
                pred = pu + guidance * (pc - pu)
            else:
                pred = unet(inp, t, class_labels=labels).sample
            if isinstance(sched, _ddim()):
                x = sched.step(pred, t, x, eta=0.0).prev_sample
            else:
                x = sched.step(pred, t, x).prev_sample
        if vae is not None:
            x = vae.decode(x / scaling_factor).sample
        out.append(x.float().clamp(-1, 1).cpu())
    return torch.cat(out)


def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler


# --- loading -------------------------------------------------------------------------------------


def _json(model_uri: str, name: str) -> tuple[dict, bytes]:
    try:
        raw = storage.read_bytes(storage.join(model_uri, name))
    except storage.ObjectNotFound:
        raise ModelError(f"model directory {model_uri} has no {name}") from None
    try:
        return json.loads(raw), raw
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{model_uri}/{name} is not valid JSON ({exc})") from None


def _weights(model_uri: str, name: str) -> tuple[dict[str, torch.Tensor], bytes]:
    from catalog_render.generators.weights import read_safetensors

    blob = read_safetensors(model_uri, name)
    try:
        state = load_safetensors_bytes(blob)
    except Exception as exc:
        raise ModelError(f"{model_uri}/{name} is not a valid safetensors file ({exc})") from None
    check_finite(state, f"{model_uri}/{name}")
    return state, blob


def load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state)``, strict; ModelError naming ``what`` on any mismatch."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ModelError(f"{what} does not match its config: {' '.join(lines[1:3])[:300]}") from None


def add_lora(unet: nn.Module, rank: int, alpha: float, target_modules: list[str]) -> nn.Module:
    """Inject peft LoRA adapters (rank, alpha) into ``unet`` in place (its own weights untouched)."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), init_lora_weights=True), unet)
    return unet


class DiffusionModel:
    """A loaded class-conditional diffusion model (implements the Generator protocol).

    ``unet``: the (EMA) UNet2DModel, adapters injected for a LoRA model; ``cond``: its
    :class:`ConditionProjector`; ``vae``: the AutoencoderKL (latent space) or None; ``sched_cfg``:
    scheduler/scheduler_config.json (of the base, for a LoRA model)."""

    family = FAMILY

    def __init__(self, cfg: dict, unet: nn.Module, cond: nn.Module, vae: nn.Module | None, sched_cfg: dict, model_id: str,
                 scaling_factor: float = 1.0, device: str = "cpu", dtype=torch.float32):
        self.cfg = cfg
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.sched_cfg = sched_cfg
        self.scaling_factor = float(scaling_factor)
        self.unet = _place(unet, device, dtype)
        self.cond = _place(cond, device, dtype)
        self.vae = _place(vae, device, dtype) if vae is not None else None
        self.shape = sample_shape(cfg)

    @property
    def config(self) -> dict:
        """config.json as loaded."""
        return self.cfg

    @property
    def native_size(self) -> tuple[int, int]:
        return self.cfg["width"], self.cfg["height"]

    def params_used(self, params: GenerationParams) -> dict:
        w, h = self.native_size
        return {"width": params.width or w, "height": params.height or h, **{f: getattr(params, f) for f in PARAMS_USED}}

    def conditioning_problem(self, conditioning: Conditioning) -> str | None:
        """See :func:`conditioning_problem` (checks the model's own vocabulary)."""
        return conditioning_problem(self.cfg["conditions"], conditioning)

    def generate(self, conditionings: list[Conditioning], seeds: list[int], params: GenerationParams) -> list[Image.Image]:
        """One RGB image per (conditioning, seed), at the native size or params' width/height
        (Lanczos resize). Raises ConfigError for an unknown ``params.scheduler``."""
        if len(conditionings) != len(seeds):
            raise ValueError("one seed per conditioning is required")
        make_scheduler(params.scheduler, self.sched_cfg)  # fail before any work on a bad name
        idx = condition_indices(self.cfg, conditionings)
        with torch.inference_mode():
            x = denoise(self.unet, self.cond, self.vae, self.scaling_factor, self.sched_cfg, idx, seeds, self.shape,
                        steps=params.num_inference_steps, guidance=params.guidance_scale, scheduler=params.scheduler)
        images = to_pil(x)
        used = self.params_used(params)
        if (used["width"], used["height"]) != self.native_size:
            images = [im.resize((used["width"], used["height"]), Image.Resampling.LANCZOS) for im in images]
        return images


def _place(module: nn.Module, device: str, dtype) -> nn.Module:
    """``module`` in eval mode on ``device``; cast only when ``dtype`` is not float32 (diffusers
    warns on every explicit dtype cast)."""
    module = module.eval().to(device=device)
    return module.to(dtype=dtype) if dtype != torch.float32 else module


def build_unet(unet_cfg: dict) -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel.from_config(unet_cfg)


def build_autoencoder(vae_cfg: dict) -> nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(vae_cfg)


def _load_full(model_uri: str, config: dict, config_bytes: bytes) -> tuple:
    """A full (non-LoRA) model's parts: (unet, condition projector, autoencoder or None,
    scheduler config, the (name, bytes) of its identity files)."""
    files = [("config.json", config_bytes)]
    unet_cfg, raw = _json(model_uri, UNET_CONFIG)
    files.append((UNET_CONFIG, raw))
    sched_cfg, raw = _json(model_uri, SCHEDULER_CONFIG)
    files.append((SCHEDULER_CONFIG, raw))
    unet = _load_component(model_uri, build_unet(unet_cfg), UNET_WEIGHTS, files)
    vae = None
    if config["space"] == "latent":
        vae_cfg, raw = _json(model_uri, VAE_CONFIG)
        files.append((VAE_CONFIG, raw))
        vae = _load_component(model_uri, build_autoencoder(vae_cfg), VAE_WEIGHTS, files)
    cond = ConditionProjector([len(c["values"]) for c in config["conditions"]], config["embed_dim"], time_embed_dim(unet_cfg))
    _load_component(model_uri, cond, CONDITION_ENCODER, files)
    return unet, cond, vae, sched_cfg, files


def _load_component(model_uri: str, module: nn.Module, weights_name: str, files: list) -> nn.Module:
    """Load ``weights_name`` (safetensors) of the directory into ``module`` and record its bytes
    in ``files`` (the identity files); ModelError when missing or not matching."""
    state, blob = _weights(model_uri, weights_name)
    files.append((weights_name, blob))
    load_state(module, state, f"{model_uri}/{weights_name}")
    return module


def load_dir(model_uri: str, config: dict, config_bytes: bytes, device: str = "cpu", dtype=torch.float32) -> DiffusionModel:
    """Registry entry point: a diffusion model (or LoRA model) from its parsed config.json and the
    directory's files. Raises ModelError for missing or mismatched files, a LoRA model whose base
    is missing or no longer has the recorded model_id ("base model changed")."""
    if "base" not in config:
        unet, cond, vae, sched_cfg, files = _load_full(model_uri, config, config_bytes)
        scaling = config.get("scaling_factor") or 1.0
        return DiffusionModel(config, unet, cond, vae, sched_cfg, hash_files(files), scaling, device, dtype)
    pointer, lora = config["base"], config["lora"]
    base_uri = pointer["uri"]
    try:
        base_raw = storage.read_bytes(storage.join(base_uri, "config.json"))
    except storage.ObjectNotFound:
        raise ModelError(f"{model_uri}: its base model {base_uri} is gone (no config.json)") from None
    base_cfg = json.loads(base_raw)
    if base_cfg.get("family") != FAMILY or "base" in base_cfg:
        raise ModelError(f"{model_uri}: base {base_uri} is not a full diffusion model")
    unet, _, vae, sched_cfg, base_files = _load_full(base_uri, base_cfg, base_raw)
    base_id = hash_files(base_files)
    if base_id != pointer["model_id"]:
        raise ModelError(f"{model_uri}: base model changed: {base_uri} is now model {base_id}, the adapter was trained on {pointer['model_id']}")
    add_lora(unet, lora["rank"], lora.get("alpha", lora["rank"]), lora["target_modules"])
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    state, blob = _weights(model_uri, ADAPTER_WEIGHTS)
    expected = set(get_peft_model_state_dict(unet))
    if set(state) != expected:
        extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
        raise ModelError(f"{model_uri}/{ADAPTER_WEIGHTS} does not match config.json's lora (unexpected {extra[:3]}, missing {missing[:3]})")
    try:
        set_peft_model_state_dict(unet, state)
    except RuntimeError as exc:
        raise ModelError(f"{model_uri}/{ADAPTER_WEIGHTS} does not match config.json's lora: {str(exc).splitlines()[-1].strip()[:300]}") from None
    cond = ConditionProjector([len(c["values"]) for c in config["conditions"]], config["embed_dim"], time_embed_dim(dict(unet.config)))
    cstate, cblob = _weights(model_uri, CONDITION_ENCODER)
    load_state(cond, cstate, f"{model_uri}/{CONDITION_ENCODER}")
    model_id = hash_files([("config.json", config_bytes), (ADAPTER_WEIGHTS, blob), (CONDITION_ENCODER, cblob)])
    scaling = base_cfg.get("scaling_factor") or 1.0
    return DiffusionModel(config, unet, cond, vae, sched_cfg, model_id, scaling, device, dtype)


def load(model_uri: str, device: str = "cpu", dtype=torch.float32) -> DiffusionModel:
    """Load a diffusion model directory (reads its config.json, then :func:`load_dir`)."""
    config, raw = _json(model_uri, "config.json")
    return load_dir(model_uri, config, raw, device=device, dtype=dtype)
