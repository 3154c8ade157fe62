"""Augmentation pipelines for training photos, built on kornia (torch-only, differentiable).

:func:`build_augment` turns the job's ``[train.augment]`` into a ``kornia.augmentation``
pipeline over float images (B, 3, H, W) in [-1, 1]. Colour jitter is left out whenever a
conditioning field is a colour (:func:`colour_fields`): jittering a "red" shirt's hue, saturation
or brightness would teach the model that "red" looks like anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
from torch import nn

from catalog_render.config import AugmentSpec

#: Attribute names (lower case, after ``attributes.``) that are colours.
COLOUR_NAMES = ("color", "colour", "basecolour", "basecolor", "colors", "colours")


def colour_fields(conditions: list[str] | tuple[str, ...]) -> list[str]:
    """The conditioning fields that are colours (``attributes.color``, ``attributes.baseColour``...)."""
    return [c for c in conditions if c.startswith("attributes.") and c.split(".", 1)[1].lower() in COLOUR_NAMES]


@dataclass
class Augment:
    """The pipeline plus a description for the model card (what is on, what was switched off, why)."""

    pipeline: nn.Module
    steps: list[str]
    notes: list[str]


class _Unit(nn.Module):
    """[-1, 1] -> [0, 1] around a kornia pipeline (kornia's colour ops expect [0, 1])."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner((x + 1) * 0.5) * 2 - 1


def build_augment(spec: AugmentSpec, conditions: list[str] | tuple[str, ...], height: int, width: int) -> Augment:
    """A kornia pipeline (random per sample, torch's global RNG) from ``spec``. Images in and out
    are float (B, 3, height, width) in [-1, 1]. Colour jitter is dropped, with a note, when
    :func:`colour_fields` finds a colour among ``conditions``."""
    ops: list[nn.Module] = []
    steps: list[str] = []
    notes: list[str] = []
    if spec.hflip > 0:
        ops.append(K.RandomHorizontalFlip(p=spec.hflip))
        steps.append(f"horizontal flip p={spec.hflip}")
    if spec.crop_p > 0:
        ops.append(K.RandomResizedCrop((height, width), scale=spec.crop_scale, ratio=(width / height * 0.9, width / height * 1.1), p=spec.crop_p))
        steps.append(f"random resized crop scale={list(spec.crop_scale)} p={spec.crop_p}")
    if spec.affine_p > 0 and (spec.translate > 0 or spec.rotation_degrees > 0 or spec.scale != (1.0, 1.0)):
        ops.append(
            K.RandomAffine(
                degrees=spec.rotation_degrees,
                translate=(spec.translate, spec.translate),
                scale=spec.scale,
                padding_mode="border",
                p=spec.affine_p,
            )
        )
        steps.append(f"affine rotation<={spec.rotation_degrees} deg translate<={spec.translate} scale={list(spec.scale)} p={spec.affine_p}")
    if spec.color_jitter > 0:
        colours = colour_fields(conditions)
        if colours:
            notes.append(f"colour jitter {spec.color_jitter} switched off: {', '.join(colours)} is a conditioning field")
        else:
            j = spec.color_jitter
            ops.append(K.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 4, p=0.8))
            steps.append(f"colour jitter {j} (hue {j / 4}) p=0.8")
    pipeline = _Unit(K.AugmentationSequential(*ops, data_keys=["input"])) if ops else nn.Identity()
    return Augment(pipeline, steps, notes)
