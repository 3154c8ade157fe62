"""Pick a generator family from a model directory (local path or s3:// prefix).

* ``config.json`` with ``"family": "gan"`` -> :mod:`catalog_render.generators.gan`
* ``model_index.json`` (diffusers pipeline layout, e.g. Stable Diffusion) ->
  :mod:`catalog_render.generators.diffusers_pipeline`

Weights are read with safetensors only; nothing is ever downloaded from a hub. A directory whose
weights are pickle checkpoints only (:data:`PICKLE_SUFFIXES`) is refused with a ModelError naming
the file, before any of its bytes are read: unpickling a file runs whatever code it names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from catalog_render import storage
from catalog_render.errors import ModelError, StorageError
from catalog_render.generators.base import GenerationParams, hash_files

KNOWN_FAMILIES = ("gan", "diffusers-pipeline")
#: File name endings of pickle checkpoints (torch.save, pickle, joblib): never loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")


def pickle_refusal(model_uri: str, pickles: list[str]) -> ModelError:
    """The ModelError for a directory that offers pickle checkpoints instead of safetensors."""
    shown = ", ".join(pickles[:5]) + (f" and {len(pickles) - 5} more" if len(pickles) > 5 else "")
    return ModelError(
        f"model directory {model_uri} has pickle checkpoint(s) {shown} and no safetensors weights: "
        "pickle checkpoints are not loaded (unpickling runs code); convert them to safetensors"
    )


def _pickles(model_uri: str, under: str = "") -> list[str]:
    """Relative names of the pickle checkpoints in a model directory (or its ``under`` folder)."""
    base = model_uri.rstrip("/")
    rel = [f[len(base) :].lstrip("/").replace("\\", "/") for f in _files(model_uri)]
    return [r for r in rel if r.endswith(PICKLE_SUFFIXES) and (not under or r.startswith(under.rstrip("/") + "/"))]


def read_safetensors(model_uri: str, name: str) -> bytes:
    """The bytes of ``name`` (a .safetensors file) in a model directory. Raises ModelError when it
    is missing: naming the directory's pickle checkpoints, if any, as refused (never read)."""
    try:
        return storage.read_bytes(storage.join(model_uri, name))
    except storage.ObjectNotFound:
        pickles = _pickles(model_uri)
        if pickles:
            raise pickle_refusal(model_uri, pickles) from None
        raise ModelError(f"model directory {model_uri} has no {name}") from None


@dataclass(frozen=True)
class ModelInfo:
    """What the driver needs to plan without loading the model: family, identity, native size
    (pixels), and for a class-conditional model its vocabulary: ``conditions`` holds
    (field, values) pairs in config order (empty for a text-to-image pipeline)."""

    uri: str
    family: str
    model_id: str
    width: int
    height: int
    conditions: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def conditioning_problem(self, conditioning) -> str | None:
        """Why this model cannot condition a render on ``conditioning``, or None (see
        :meth:`catalog_render.generators.base.Generator.conditioning_problem`): a GAN checks its
        vocabulary (:func:`catalog_render.generators.gan.conditioning_problem`); a diffusers
        pipeline takes any prompt."""
        if self.family != "gan":
            return None
        from catalog_render.generators import gan

        return gan.conditioning_problem([{"field": f, "values": list(v)} for f, v in self.conditions], conditioning)

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
        weights = read_safetensors(model_uri, "model.safetensors")
        import torch

        from catalog_render.generators import gan

        try:
            model = gan.GanModel.from_bytes(config, raw, weights, device=device, dtype=dtype or torch.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{model_uri}/config.json: invalid GAN config ({type(exc).__name__}: {exc})") from None
        conditions = tuple((c["field"], tuple(c["values"])) for c in config["conditions"])
        return ModelInfo(model_uri, "gan", model.model_id, int(config["width"]), int(config["height"]), conditions), model
    index = _read_json(storage.join(model_uri, "model_index.json"))
    if index is not None:
        files = _files(model_uri)
        base = model_uri.rstrip("/")
        rel = [f[len(base) :].lstrip("/").replace("\\", "/") for f in files]
        if not any(r.endswith(".safetensors") for r in rel) and any(r.endswith(PICKLE_SUFFIXES) for r in rel):
            raise pickle_refusal(model_uri, [r for r in rel if r.endswith(PICKLE_SUFFIXES)])
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
    pickles = _pickles(model_uri)
    if pickles:
        raise pickle_refusal(model_uri, pickles)
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
