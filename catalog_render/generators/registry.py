"""Pick a generator family from a model directory (local path or s3:// prefix).

* ``config.json`` with ``"family"`` one of :data:`FAMILY_MODULES` (``gan``, ``vae``, ``diffusion``:
  the project's own class-conditional families) -> that module's ``load_dir``
* ``model_index.json`` (diffusers pipeline layout, e.g. Stable Diffusion) ->
  :mod:`catalog_render.generators.diffusers_pipeline`

Weights are read with safetensors only; nothing is ever downloaded from a hub. A directory whose
weights are pickle checkpoints only is refused with a ModelError naming the file, before any of
its bytes are read (:mod:`catalog_render.generators.weights`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from catalog_render import storage
from catalog_render.errors import ModelError
from catalog_render.generators.base import BaseModel, GenerationParams, hash_files
from catalog_render.generators.weights import PICKLE_SUFFIXES, _files, _pickles, pickle_refusal, read_safetensors  # noqa: F401  (read_safetensors re-exported)

#: The project's own families (config.json "family") and the module that loads each. A family
#: module provides ``load_dir(model_uri, config, config_bytes, device, dtype) -> Generator`` (a
#: loaded model with ``model_id``, ``native_size`` (width, height) and ``config``; ModelError on bad
#: files) and ``PARAMS_USED``: the GenerationParams fields that change its pixels besides the size.
FAMILY_MODULES = {
    "gan": "catalog_render.generators.gan",
    "vae": "catalog_render.generators.vae",
    "diffusion": "catalog_render.generators.diffusion",
}
KNOWN_FAMILIES = (*FAMILY_MODULES, "diffusers-pipeline")


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
    #: GenerationParams fields besides the size that change this family's pixels.
    params_fields: tuple[str, ...] = ("num_inference_steps", "guidance_scale", "scheduler", "negative_prompt")

    @property
    def conditioning_fields(self) -> tuple[str, ...]:
        """The Conditioning fields :meth:`conditioning_problem` reads (the model's conditions among
        ``conditioning.REQUIRED_FIELDS``; () for a pipeline that takes any prompt): the planner
        checks each distinct combination of their values once."""
        from catalog_render.generators.conditioning import REQUIRED_FIELDS

        return tuple(f for f, _ in self.conditions if f in REQUIRED_FIELDS)

    def conditioning_problem(self, conditioning) -> str | None:
        """Why this model cannot condition a render on ``conditioning``, or None (see
        :meth:`catalog_render.generators.base.Generator.conditioning_problem`): a class-conditional
        family checks its vocabulary
        (:func:`catalog_render.generators.conditioning.conditioning_problem`); a diffusers
        pipeline takes any prompt."""
        if not self.conditions:
            return None
        from catalog_render.generators.conditioning import conditioning_problem

        return conditioning_problem([{"field": f, "values": list(v)} for f, v in self.conditions], conditioning)

    def params_used(self, params: GenerationParams) -> dict:
        """The generation parameters that change this family's pixels (part of the render key)."""
        size = {"width": params.width or self.width, "height": params.height or self.height}
        return {**size, **{f: getattr(params, f) for f in self.params_fields}}


def _read_json(uri: str) -> tuple[dict, bytes] | None:
    try:
        raw = storage.read_bytes(uri)
    except storage.ObjectNotFound:
        return None
    try:
        return json.loads(raw), raw
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{uri} is not valid JSON ({exc})") from None


def _check_finite_file(blob: bytes, source: str) -> None:
    """ModelError when a safetensors file holds a NaN or inf value (see
    :func:`~catalog_render.generators.base.check_finite`) or is not a safetensors file."""
    from safetensors.torch import load as load_safetensors_bytes

    from catalog_render.generators.base import check_finite

    try:
        tensors = load_safetensors_bytes(blob)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ModelError(f"{source} is not a valid safetensors file ({exc})") from None
    check_finite(tensors, source)


def describe(model_uri: str) -> ModelInfo:
    """Identify a model directory. Raises ModelError when it does not exist, has neither
    config.json nor model_index.json, names an unknown family, holds pickle weights only, or any of
    its weights holds a NaN or inf value (the tensor is named)."""
    return _inspect(model_uri)[0]


def _inspect(model_uri: str, device: str = "cpu", dtype=None):
    """(ModelInfo, the loaded model or None). The project's own families are small: they are loaded
    here once, which also validates their weights against config.json; a diffusers pipeline is only
    identified."""
    if not storage.is_s3(model_uri) and storage.exists(model_uri):
        raise ModelError(f"{model_uri} is a file; --model takes a model directory")
    cfg = _read_json(storage.join(model_uri, "config.json"))
    if cfg is not None:
        config, raw = cfg
        if not isinstance(config, dict):
            raise ModelError(f"{model_uri}/config.json: expected a JSON object, got {type(config).__name__}")
        family = config.get("family")
        if family not in FAMILY_MODULES:
            raise ModelError(f"{model_uri}/config.json: unknown model family {family!r} (known: {', '.join(KNOWN_FAMILIES)})")
        import importlib

        import torch

        module = importlib.import_module(FAMILY_MODULES[family])
        try:
            model = module.load_dir(model_uri, config, raw, device=device, dtype=dtype or torch.float32)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"{model_uri}/config.json: invalid {family} config ({type(exc).__name__}: {exc})") from None
        from catalog_render.generators.super_resolution import CascadeModel, read_stage

        stage = read_stage(model_uri, device=device, dtype=dtype or torch.float32)
        if stage is not None:
            model = CascadeModel(model, stage)
        conditions = tuple((c["field"], tuple(c["values"])) for c in config.get("conditions", []))
        w, h = model.native_size
        return ModelInfo(model_uri, family, model.model_id, int(w), int(h), conditions, tuple(module.PARAMS_USED)), model
    index = _read_json(storage.join(model_uri, "model_index.json"))
    if index is not None:
        files = _files(model_uri)
        base = model_uri.rstrip("/")
        rel = [f[len(base) :].lstrip("/").replace("\\", "/") for f in files]
        if not any(r.endswith(".safetensors") for r in rel) and any(r.endswith(PICKLE_SUFFIXES) for r in rel):
            raise pickle_refusal(model_uri, [r for r in rel if r.endswith(PICKLE_SUFFIXES)])
        blobs = []
        for r, f in zip(rel, files):
            if r.startswith("."):
                continue
            blobs.append((r, storage.read_bytes(f)))
            if r.endswith(".safetensors"):
                _check_finite_file(blobs[-1][1], f"{model_uri}/{r}")
        model_id = hash_files(blobs)
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


def base_model(model_uri: str):
    """The model a fine-tune starts from (:class:`catalog_render.generators.base.BaseModel`). Raises
    ModelError when it is not one of the project's own families (a diffusers pipeline is not)."""
    if not storage.is_s3(model_uri) and storage.exists(model_uri):
        raise ModelError(f"--base {model_uri} is a file; --base takes a model directory")
    model_uri = storage.absolute(model_uri)  # a LoRA model's pointer must work from any directory
    info, model = _inspect(model_uri)
    if model is None:
        raise ModelError(f"--base {model_uri}: a {info.family} directory cannot be fine-tuned here; --base takes a gan, vae or diffusion model")
    return BaseModel(model_uri, model.config, info.model_id)


def load_generator(model_uri: str, device: str = "cpu", dtype=None):
    """Load the generator in a model directory onto ``device`` (float32 by default, float16 on CUDA
    if asked). Raises ModelError as :func:`describe` does."""
    import torch

    dtype = dtype or torch.float32
    info, model = _inspect(model_uri, device=device, dtype=dtype)
    if model is not None:
        return model  # loaded once by _inspect, not read and built a second time
    from catalog_render.generators import diffusers_pipeline

    return diffusers_pipeline.load(model_uri, device=device, dtype=dtype, expected_model_id=info.model_id)
