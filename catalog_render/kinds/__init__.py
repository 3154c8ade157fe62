"""Kinds of image a run makes (``--kind`` on ``run``, ``kind`` in the job spec).

Each kind is a small plug-in (see :mod:`catalog_render.kinds.base`): ``plan`` (catalog rows ->
work items with an idempotency key), an actor (``setup`` once, render per item) and the manifest
columns it fills. :data:`KINDS` maps a name to ``"module:Class"``; the module is imported only
when the kind is used (this package imports nothing, so the job spec can validate names without
pulling in torch).

| kind | one output image from | module |
| --- | --- | --- |
| ``render`` | a product's catalog fields, by a trained generator (``--model``) | ``render.py`` |
| ``main-image`` | the product's own photo: masked, on pure white, centred, scaled, upscaled | ``main_image.py`` |
| ``variant`` | a photographed sibling's photo, recoloured to the product's catalog colour | ``variant.py`` |
| ``comparison`` | several products' photos (or renders) side by side, an attribute row each beneath | ``comparison.py`` |
| ``label`` | the product's photo beside a panel of its key facts (never a main image) | ``label.py`` |
| ``design`` | a product's catalog fields with one field swept or the latent walked, by a trained generator | ``design.py`` |
"""

from __future__ import annotations

import importlib

KINDS: dict[str, str] = {
    "render": "catalog_render.kinds.render:RenderKind",
    "main-image": "catalog_render.kinds.main_image:MainImageKind",
    "variant": "catalog_render.kinds.variant:VariantKind",
    "comparison": "catalog_render.kinds.comparison:ComparisonKind",
    "label": "catalog_render.kinds.label:LabelKind",
    "design": "catalog_render.kinds.design:DesignKind",
}
DEFAULT_KIND = "render"


def unknown_kind(name: str) -> str | None:
    """None for a registered kind name, else the message naming the known ones."""
    return None if name in KINDS else f"unknown kind {name!r} (known: {', '.join(KINDS)})"


def get_kind(name: str):
    """A new instance of the kind called ``name``. Raises ValueError naming the known kinds."""
    problem = unknown_kind(name)
    if problem:
        raise ValueError(problem)
    module, cls = KINDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
