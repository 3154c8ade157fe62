"""Text-to-image diffusers pipelines in the Stable Diffusion layout, loaded fully offline.

A model directory (local path or ``s3://`` prefix) is what ``StableDiffusionPipeline.save_pretrained``
writes: ``model_index.json`` plus the ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and
``scheduler/`` folders, weights as safetensors (pickle ``.bin`` weights are never loaded). The
safety checker, feature extractor and image encoder are never loaded, even when listed.

Nothing touches the network: an ``s3://`` directory is first copied into a local cache folder
(one per prefix, reused while it exists), and diffusers/transformers load with
``local_files_only=True`` under ``HF_HUB_OFFLINE=1``.

Identity (``model_id``) is :func:`~catalog_render.generators.base.hash_files` over every file of the
directory (config JSONs, tokenizer files and weights; relative ``/``-separated names, names starting
with ``.`` excluded), computed exactly as :func:`catalog_render.generators.registry.describe` does
but streamed, so the two agree without holding the weights in memory twice.

Determinism: each image's initial latent comes from its own CPU ``torch.Generator`` seeded with its
seed, so an image does not depend on the batch it is rendered in (see :meth:`DiffusersPipelineModel.generate`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image

from catalog_render import storage
from catalog_render.errors import ConfigError, ModelError, StorageError
from catalog_render.generators.base import Conditioning, GenerationParams
from catalog_render.generators.weights import PICKLE_SUFFIXES

FAMILY = "diffusers-pipeline"

#: Components a Stable Diffusion text-to-image directory must provide.
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: Components StableDiffusionPipeline knows but this family never loads (passed as None).
SKIPPED_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")

_CONFIG_FILE = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "scheduler": "scheduler_config.json",
}
_WEIGHTS_FILE = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
_CACHE_ENV = "CATALOG_RENDER_MODEL_CACHE"


# --------------------------------------------------------------------------------------------
# Local copy of the model directory
# --------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Folder holding local copies of ``s3://`` model directories.

    ``$CATALOG_RENDER_MODEL_CACHE`` when set, else ``<system temp dir>/catalog-render-models``.
    """
    env = os.environ.get(_CACHE_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "catalog-render-models"


def cache_dir_for(prefix: str) -> Path:
    """The local cache folder of one ``s3://`` prefix (sha256 of the normalised prefix, 16 hex)."""
    key = hashlib.sha256(prefix.rstrip("/").encode()).hexdigest()[:16]
    return cache_root() / key


def _relative(base: str, uri: str) -> str:
    return uri[len(base.rstrip("/")) :].lstrip("/").replace("\\", "/")


def _download(prefix: str) -> Path:
    """Copy every object under an ``s3://`` prefix into its cache folder; reuse the folder if present.

    The copy is written to a sibling temp folder and renamed into place, so a reader never sees a
    half-copied directory (and two processes racing to fill it keep one complete copy).
    Raises ModelError when the prefix is empty/unreachable or a key would escape the folder.
    """
    final = cache_dir_for(prefix)
    if final.is_dir():
        return final
    try:
        uris = storage.list_uris(prefix)
    except StorageError as exc:
        raise ModelError(f"cannot list model directory {prefix}: {exc}") from None
    if not uris:
        raise ModelError(f"model directory not found or empty: {prefix}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        for uri in uris:
            rel = _relative(prefix, uri)
            if uri.endswith("/"):  # an S3 "folder" marker object
                continue
            parts = rel.split("/")
            if not rel or any(p in ("", ".", "..") for p in parts):
                raise ModelError(f"model directory {prefix}: unsafe object key {rel!r}")
            dest = tmp.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                dest.write_bytes(storage.read_bytes(uri))
            except StorageError as exc:
                raise ModelError(f"cannot read model file {uri}: {exc}") from None
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # a real failure, not another process winning the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _hash_dir(local_dir: Path) -> str:
    """``hash_files`` over every file under ``local_dir`` (names relative, ``/``-separated, names
    starting with ``.`` excluded), streamed: same 16 hex digits without loading files into memory."""
    base = str(local_dir)
    files = [(_relative(base, u), u) for u in storage.list_uris(base)]
    h = hashlib.sha256()
    for rel, path in sorted(f for f in files if not f[0].startswith(".")):
        h.update(rel.encode())
        h.update(os.path.getsize(path).to_bytes(8, "big"))
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Layout check: one clear error instead of a diffusers traceback
# --------------------------------------------------------------------------------------------


def check_layout(local_dir: Path, shown: str) -> dict:
    """Validate a Stable Diffusion pipeline directory; return the parsed ``model_index.json``.

    ``shown`` is the directory as named in error messages (the original URI). Raises ModelError
    (one line, naming the directory and the missing part) when ``model_index.json`` is missing or
    invalid, a required component is not declared or its folder/config/safetensors weights are
    missing, or the index declares components Stable Diffusion does not have (e.g. SDXL's
    ``text_encoder_2``).
    """
    try:
        index = json.loads((local_dir / "model_index.json").read_bytes())
    except FileNotFoundError:
        raise ModelError(f"model directory {shown} has no model_index.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{shown}/model_index.json is not valid JSON ({exc})") from None
    if not isinstance(index, dict):
        raise ModelError(f"{shown}/model_index.json is not a JSON object")

    declared = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] is not None}
    extra = sorted(declared - set(REQUIRED_COMPONENTS) - set(SKIPPED_COMPONENTS))
    if extra:
        raise ModelError(
            f"{shown} is a {index.get('_class_name', 'diffusers')} directory with components {', '.join(extra)}; "
            f"family {FAMILY} loads the Stable Diffusion layout only"
        )
    for name in REQUIRED_COMPONENTS:
        if name not in declared:
            raise ModelError(f"model directory {shown}: model_index.json declares no {name}")
        folder = local_dir / name
        if not folder.is_dir():
            raise ModelError(f"model directory {shown} has no {name}/ folder")
        if name == "tokenizer":
            if not ((folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
                raise ModelError(f"model directory {shown} has no tokenizer/tokenizer.json (or tokenizer/vocab.json + merges.txt)")
            continue
        if not (folder / _CONFIG_FILE[name]).is_file():
            raise ModelError(f"model directory {shown} has no {name}/{_CONFIG_FILE[name]}")
        if name in _WEIGHTS_FILE:
            weights = _WEIGHTS_FILE[name]
            if not ((folder / weights).is_file() or (folder / f"{weights}.index.json").is_file()):
                pickled = sorted(f"{name}/{p.name}" for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
                why = f" (it has pickle checkpoint(s) {', '.join(pickled)}: pickle checkpoints are not loaded)" if pickled else ""
                raise ModelError(f"model directory {shown} has no {name}/{weights}{why}")
    return index


def _dtype_kwarg() -> str:
    """diffusers >= the release with ``_resolve_dtype`` takes ``dtype`` (``torch_dtype`` is deprecated
    and warns); older ones only know ``torch_dtype`` and would silently ignore ``dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class DiffusersPipelineModel:
    """A loaded Stable Diffusion text-to-image pipeline (implements the Generator protocol).

    Not thread-safe: ``generate`` swaps ``pipe.scheduler`` per call. One instance per actor.
    """

    family = FAMILY

    def __init__(self, pipe, model_id: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.pipe = pipe
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self._own_scheduler = pipe.scheduler
        self._schedulers: dict[str, object] = {}

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) in pixels: ``unet.config.sample_size * vae_scale_factor``."""
        sample = self.pipe.unet.config.sample_size
        h, w = (sample, sample) if isinstance(sample, int) else sample
        f = self.pipe.vae_scale_factor
        return int(w) * f, int(h) * f

    def _scheduler(self, name: str | None):
        """The scheduler instance for ``name`` (None = the pipeline's own), built once from the
        pipeline's scheduler config. Raises ModelError for a name that is not a diffusers scheduler."""
        if name is None or name == type(self._own_scheduler).__name__:
            return self._own_scheduler
        if name not in self._schedulers:
            import diffusers
            from diffusers import SchedulerMixin

            cls = getattr(diffusers, name, None) if name.isidentifier() else None
            if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
                raise ModelError(f"unknown scheduler {name!r}: not a scheduler class in diffusers {diffusers.__version__}")
            try:
                self._schedulers[name] = cls.from_config(self._own_scheduler.config)
            except Exception as exc:  # a scheduler that cannot take this pipeline's config
                raise ModelError(f"scheduler {name!r} cannot be built from this pipeline's scheduler config ({_one_line(exc)})") from None
        return self._schedulers[name]

    def conditioning_problem(self, conditioning: Conditioning) -> str | None:
        """Always None: the prompt template turns any catalog fields into a prompt."""
        return None

    def params_used(self, params: GenerationParams) -> dict:
        """The parameters that actually determine the pixels (goes into the manifest).

        Returns ``num_inference_steps`` (int), ``guidance_scale`` (float), ``scheduler`` (class
        name actually used: the pipeline's own when ``params.scheduler`` is None), ``height`` and
        ``width`` (pixels; the native size when None) and ``negative_prompt`` (None when it has no
        effect: empty, or classifier-free guidance off because ``guidance_scale <= 1``).
        Raises ModelError for an unknown scheduler name.
        """
        w, h = self.native_size
        scheduler = self._scheduler(params.scheduler)
        guidance = float(params.guidance_scale)
        cfg = guidance > 1.0 and self.pipe.unet.config.time_cond_proj_dim is None
        return {
            "num_inference_steps": int(params.num_inference_steps),
            "guidance_scale": guidance,
            "scheduler": type(scheduler).__name__,
            "height": int(params.height or h),
            "width": int(params.width or w),
            "negative_prompt": (params.negative_prompt or None) if cfg else None,
        }

    @torch.inference_mode()
    def generate(self, conditionings: list[Conditioning], seeds: list[int], params: GenerationParams) -> list[Image.Image]:
        """Render one image per (conditioning, seed), in order.

        The prompt is ``conditioning.prompt``, else ``conditioning.title``, else ``""``. Image i's
        initial latent (1, 4, H/f, W/f) comes from ``torch.Generator("cpu").manual_seed(seeds[i])``
        (a CPU generator, so the noise is the same on every device), passed to the pipeline as a
        list. Returns RGB ``PIL.Image`` objects of ``params.width`` x ``params.height`` pixels
        (native size when None).

        Raises ValueError when the lengths differ, ConfigError when height/width are not multiples
        of 8 and of the VAE scale factor or ``num_inference_steps < 1``, ModelError for an unknown
        scheduler name.
        """
        if len(conditionings) != len(seeds):
            raise ValueError("one seed per conditioning is required")
        if not conditionings:
            return []
        used = self.params_used(params)
        step = max(8, self.pipe.vae_scale_factor)
        for field in ("height", "width"):
            if used[field] % step:
                raise ConfigError(f"generation.{field}: {used[field]} is not a multiple of {step} (required by this pipeline)")
        if used["num_inference_steps"] < 1:
            raise ConfigError(f"generation.num_inference_steps: must be at least 1, got {used['num_inference_steps']}")

        self.pipe.scheduler = self._scheduler(params.scheduler)
        prompts = [c.prompt if c.prompt is not None else (c.title or "") for c in conditionings]
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        negative = used["negative_prompt"]
        out = self.pipe(
            prompt=prompts,
            negative_prompt=[negative] * len(prompts) if negative is not None else None,
            height=used["height"],
            width=used["width"],
            num_inference_steps=used["num_inference_steps"],
            guidance_scale=used["guidance_scale"],
            generator=generators,
            output_type="pil",
        )
        return [im.convert("RGB") if im.mode != "RGB" else im for im in out.images]


def load(model_uri: str, device: str = "cpu", dtype: torch.dtype = torch.float32, expected_model_id: str | None = None) -> DiffusersPipelineModel:
    """Load a Stable Diffusion pipeline directory (local path or ``s3://`` prefix) offline.

    ``device`` is a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``); ``dtype`` the weights'
    and latents' dtype (float32 on CPU; float16/bfloat16 on CUDA). An ``s3://`` directory is first
    copied into :func:`cache_dir_for` (reused while present). The progress bar is disabled and the
    safety checker, feature extractor and image encoder are not loaded.

    Raises ModelError (one line naming the directory and the missing or invalid part) when the
    directory is missing/empty, is not a Stable Diffusion layout, lacks a component, its config or
    its safetensors weights, or diffusers/transformers cannot load it. With ``expected_model_id``
    (the identity the driver planned with), a cached copy of an ``s3://`` directory whose content
    no longer matches is fetched again, so a stale cache never renders under a new identity.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub on first import
    shown = model_uri if storage.is_s3(model_uri) else storage.display(model_uri)
    if storage.is_s3(model_uri):
        local_dir = _download(model_uri)
    else:
        local_dir = Path(storage.display(model_uri))
        if not local_dir.is_dir():
            raise ModelError(f"model directory not found: {shown}")
    check_layout(local_dir, shown)
    model_id = _hash_dir(local_dir)
    if storage.is_s3(model_uri) and expected_model_id and model_id != expected_model_id:
        shutil.rmtree(local_dir, ignore_errors=True)  # stale copy of an overwritten directory
        local_dir = _download(model_uri)
        check_layout(local_dir, shown)
        model_id = _hash_dir(local_dir)

    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(local_dir),
            local_files_only=True,
            use_safetensors=True,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
            **{_dtype_kwarg(): dtype},
        )
    except Exception as exc:  # diffusers/transformers raise OSError, ValueError, EnvironmentError, ...
        raise ModelError(f"cannot load diffusers pipeline {shown}: {_one_line(exc)}") from None
    if pipe.unet.dtype != dtype:
        raise ModelError(f"cannot load diffusers pipeline {shown}: weights loaded as {pipe.unet.dtype}, not {dtype}")
    from catalog_render.generators.base import check_finite

    for part in ("unet", "vae", "text_encoder"):  # a diverged pipeline renders black: refuse it, naming the tensor
        if getattr(pipe, part, None) is not None:
            check_finite(getattr(pipe, part).state_dict(), f"{shown}/{part}")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return DiffusersPipelineModel(pipe, model_id, device=device, dtype=dtype)
