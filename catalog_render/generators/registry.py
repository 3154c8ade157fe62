"""Pick a generator family from a model directory (local path or s3:// prefix).

* ``config.json`` with ``"family": "gan"`` -> :mod:`catalog_render.generators.gan`
* ``model_index.json`` (diffusers pipeline layout, e.g. Stable Diffusion) ->
  :mod:`catalog_render.generators.diffusers_pipeline`

Weights are read with safetensors only; nothing is ever downloaded from a hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from catalog_render import storage
from catalog_render.errors import ModelError, StorageError
from catalog_render.generators.base import GenerationParams, hash_files

KNOWN_FAMILIES = ("gan", "diffusers-pipeline")


@dataclass(frozen=True)
class ModelInfo:
    """What the driver needs to plan without loading the model: family, identity, native size (pixels)."""

    uri: str
    family: str
    model_id: str
    width: int
    height: int

    def params_used(self, params: GenerationParams) -> dict:
        """The generation parameters that change this family's pixels (part of the render key)."""
        size = {"width": params.width or self.width, "height": params.height or self.height}
        if self.family == "gan":
            return size
        return {
            **size,
            "num_inference_steps": params.num_inference_steps,
            "guidance_scale": params.guidance_scale,
            "scheduler": params.scheduler,
            "negative_prompt": params.negative_prompt,
        }


def _read_json(uri: str) -> tuple[dict, bytes] | None:
    try:
        raw = storage.read_bytes(uri)
    except storage.ObjectNotFound:
        return None
    try:
        return json.loads(raw), raw
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{uri} is not valid JSON ({exc})") from None


def _files(model_uri: str) -> list[str]:
    try:
        return storage.list_uris(model_uri)
    except StorageError as exc:
        raise ModelError(f"cannot list model directory {model_uri}: {exc}") from None


def describe(model_uri: str) -> ModelInfo:
    """Identify a model directory. Raises ModelError when it does not exist, has neither
    config.json nor model_index.json, names an unknown family, or holds pickle weights only."""
    return _inspect(model_uri)[0]


def _inspect(model_uri: str, device: str = "cpu", dtype=None):
    """(ModelInfo, the loaded GanModel or None). A GAN is small: it is loaded here once, which also
    validates its weights against config.json; a diffusers pipeline is only identified."""
    if not storage.is_s3(model_uri) and storage.exists(model_uri):
        raise ModelError(f"{model_uri} is a file; --model takes a model directory")
    cfg = _read_json(storage.join(model_uri, "config.json"))
    if cfg is not None:
        config, raw = cfg
        if not isinstance(config, dict):
            raise ModelError(f"{model_uri}/config.json: expected a JSON object, got {type(config).__name__}")
        family = config.get("family")
        if family != "gan":
            raise ModelError(f"{model_uri}/config.json: unknown model family {family!r} (known: {', '.join(KNOWN_FAMILIES)})")
        try:
            weights = storage.read_bytes(storage.join(model_uri, "model.safetensors"))
        except storage.ObjectNotFound:
            raise ModelError(f"model directory {model_uri} has no model.safetensors") from None
        import torch

        from catalog_render.generators import gan

        try:
            model = gan.GanModel.from_bytes(config, raw, weights, device=device, dtype=dtype or torch.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{model_uri}/config.json: invalid GAN config ({type(exc).__name__}: {exc})") from None
        return ModelInfo(model_uri, "gan", model.model_id, int(config["width"]), int(config["height"])), model
    index = _read_json(storage.join(model_uri, "model_index.json"))
    if index is not None:
        files = _files(model_uri)
        base = model_uri.rstrip("/")
        rel = [f[len(base) :].lstrip("/").replace("\\", "/") for f in files]
        if any(r.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")) for r in rel) and not any(r.endswith(".safetensors") for r in rel):
            raise ModelError(f"{model_uri} holds pickle weights only; catalog-render loads safetensors only")
        model_id = hash_files([(r, storage.read_bytes(f)) for r, f in zip(rel, files) if not r.startswith(".")])
        unet = _read_json(storage.join(model_uri, "unet", "config.json"))
        vae = _read_json(storage.join(model_uri, "vae", "config.json"))
        if unet is None or vae is None:
            raise ModelError(f"{model_uri}: diffusers pipeline without unet/config.json or vae/config.json")
        sample = unet[0]["sample_size"]
        scale = 2 ** (len(vae[0].get("block_out_channels", [0])) - 1)
        h, w = (sample, sample) if isinstance(sample, int) else sample
        return ModelInfo(model_uri, "diffusers-pipeline", model_id, int(w * scale), int(h * scale)), None
    if not _files(model_uri):
        raise ModelError(f"model directory not found or empty: {model_uri}")
    raise ModelError(f"{model_uri} is not a model directory: no config.json (catalog-render model) or model_index.json (diffusers pipeline)")


def load_generator(model_uri: str, device: str = "cpu", dtype=None):
    """Load the generator in a model directory onto ``device`` (float32 by default, float16 on CUDA
    if asked). Raises ModelError as :func:`describe` does."""
    import torch

    dtype = dtype or torch.float32
    info, gan_model = _inspect(model_uri, device=device, dtype=dtype)
    if gan_model is not None:
        return gan_model  # loaded once by _inspect, not read and built a second time
    from catalog_render.generators import diffusers_pipeline

    return diffusers_pipeline.load(model_uri, device=device, dtype=dtype, expected_model_id=info.model_id)
