"""The Generator protocol every family implements, the conditioning passed to it, and the model a
fine-tune starts from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from PIL import Image

from catalog_render.errors import ModelError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Conditioning:
    """The catalog fields one render is conditioned on.

    ``attributes`` is the catalog's attribute map (e.g. {"color": "Blue", "gender": "Men"});
    ``prompt`` is the text prompt built from the job's template (text-to-image pipelines).
    """

    title: str | None = None
    category: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    prompt: str | None = None

    def value(self, name: str) -> str | None:
        """A conditioning field by dotted name: ``category``, ``title`` or ``attributes.<name>``."""
        if name.startswith("attributes."):
            return self.attributes.get(name[len("attributes.") :])
        return getattr(self, name, None)

    def to_json(self) -> str:
        return json.dumps(
            {"title": self.title, "category": self.category, "attributes": dict(sorted(self.attributes.items())), "prompt": self.prompt},
            sort_keys=True,
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class BaseModel:
    """The model a fine-tune starts from (:func:`catalog_render.generators.registry.base_model`):
    its directory URI, parsed config.json and identity (model_id)."""

    uri: str
    config: dict
    model_id: str


@dataclass(frozen=True)
class GenerationParams:
    """Generation parameters from the job spec.

    ``num_inference_steps`` and ``guidance_scale`` apply to diffusion families only (a GAN renders
    in one forward pass and ignores them); ``height``/``width`` are pixels, None = the model's native
    size; ``scheduler`` names a diffusers scheduler class, None = the pipeline's own.
    """

    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    scheduler: str | None = None
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


@runtime_checkable
class Generator(Protocol):
    """An image generator loaded once per actor.

    ``generate`` returns one RGB Pillow image per (conditioning, seed) pair, in order; image i is
    a pure function of (model weights, conditionings[i], seeds[i], params) and does not depend on
    the batch it is rendered in: one ``torch.Generator`` per image, and the project's families
    (gan, vae, diffusion) run their networks one image at a time, since CPU kernels chosen by batch
    size round differently. A diffusers pipeline renders its batch in one call: within one uint8
    level across batch sizes.
    """

    family: str
    model_id: str  # sha256 (16 hex) of the model's config and weights

    def generate(self, conditionings: list[Conditioning], seeds: list[int], params: GenerationParams) -> list[Image.Image]: ...

    def params_used(self, params: GenerationParams) -> dict:
        """The parameters that actually affect this family's output (goes into the render key)."""
        ...

    def conditioning_problem(self, conditioning: Conditioning) -> str | None:
        """Why this model cannot condition a render on ``conditioning`` (one line, naming the field
        and value), or None when it can. A class-conditional model objects to a value outside its
        vocabulary; a text-to-image pipeline takes any prompt and returns None."""
        ...


def hash_files(blobs: list[tuple[str, bytes]]) -> str:
    """Model identity: sha256 over (name, content) pairs in name order, first 16 hex digits."""
    h = hashlib.sha256()
    for name, data in sorted(blobs):
        h.update(name.encode())
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:16]


def check_finite(tensors: Mapping[str, "torch.Tensor"], source: str) -> None:
    """Raise ModelError naming the first tensor (in name order) of ``tensors`` that holds a NaN or
    +-inf value. A model whose training diverged has such weights and renders black or flat images,
    never a product; training stops before saving one (catalog_render.training.loop.DivergenceGuard),
    so such a file was made elsewhere or damaged. ``source`` names the file in the message.
    Integer tensors are skipped. Cost: one ``torch.isfinite`` pass over every value, once per load
    (milliseconds for the project's models)."""
    import torch

    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ModelError(f"{source}: tensor {name!r} holds {bad:,} non-finite value(s) (NaN/inf) of {t.numel():,}: "
                             "the model diverged in training and cannot render; train it again (with a lower train.lr)")
