"""The quality gate: thresholds a job sets, a verdict per render, and best-of-N selection.

:class:`QualityThresholds` is a pydantic model meant to be embedded in the job spec (``[quality]``).
Every threshold defaults to None = "not gated"; each field's description gives a suggested value
and where it comes from. One check needs no threshold and is always on: ``blank`` (see
:data:`BLANK_MAX_SHARE`) fails a render of (nearly) one flat colour, which no job wants; a blank
render is retried with the next seed up to :data:`BLANK_MAX_TRIES` tries whatever ``max_tries``
says (:func:`should_retry`). :func:`judge` turns one render's scores (:func:`catalog_render.quality.scores.score_image` plus
the measurements of :func:`catalog_render.quality.presets.measure`) and its preset compliance into
passed / failed checks; :func:`pick_best` chooses among a product's tries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from catalog_render.quality.presets import Compliance


class QualityThresholds(BaseModel):
    """Per-render thresholds. None disables a check. Ranges and units are those of the scores."""

    # strict: a TOML `true` is not a number of tries, "yes" is not a bool; no inf/nan thresholds
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    preset: Literal["amazon", "google", "ebay", "shopify", "walmart", "none"] = Field(
        "none", description="Marketplace preset whose required rules must pass (catalog_render.quality.presets).")
    upscaler: str = Field("auto", description=(
        "How a render is enlarged to the preset's canvas: 'auto' = Real-ESRGAN (DEFAULT_UPSCALER) for presets whose canvas is"
        " >= 1000 px (amazon, google, shopify, walmart), Lanczos otherwise; 'lanczos' = Pillow's Lanczos always (no detail"
        " added; for machines without libvulkan1/libomp5); or a Real-ESRGAN model spec (catalog_render.pretrained.upscale.MODELS,"
        " chained with '+') used for every preset that enlarges. Chosen by benchmarks/upscalers.py."))
    upscaler_passes: int = Field(2, ge=1, le=3, description=(
        "Most Real-ESRGAN passes per render (each multiplies pixels, and time, by the model's scale squared); Lanczos does the rest."))
    upscaler_gpuid: int = Field(-1, ge=-1, description=(
        "-1 = Real-ESRGAN on the CPU; k >= 0 = the k-th Vulkan GPU (ncnn; needs the GPU's Vulkan driver)."))
    apparel: bool = Field(False, description="Apply apparel-only preset rules (Google: 250 x 250 px; Amazon: the model may be cut by the "
                          "frame) to every product; without it they apply to worn garments only (quality.presets.is_worn).")
    max_tries: int = Field(1, ge=1, le=16, description=(
        "Renders per product (each with its own seed); the best passing one is kept (pick_best). 1 = no retry."))
    min_sharpness: float | None = Field(None, ge=0, description=(
        "Minimum variance of the Laplacian (scores.sharpness, grey in [0,1]). Suggested 0.01: the scores module's"
        " 'crisp at 64 px' mark; the reference run's renders had p10 0.011, median 0.033 (docs/results.md)."))
    min_background_whiteness: float | None = Field(None, ge=0, le=1, description=(
        "Minimum share of the border band that is near-white (scores.background_whiteness), [0,1]. Suggested 0.9:"
        " the reference run's renders had p10 0.85, median 1.00 (docs/results.md)."))
    min_fill_ratio: float | None = Field(None, ge=0, le=1, description=(
        "Minimum bounding-box area share of the product (scores.fill_ratio), [0,1]. Amazon's 85 % rule is checked"
        " by preset 'amazon' on the post-processed image; this guards against near-empty renders (suggested 0.1)."))
    max_fill_ratio: float | None = Field(None, ge=0, le=1, description=(
        "Maximum fill_ratio, [0,1]: 1.0 means the render has no background margin at all (suggested 0.98)."))
    max_clipped_highlights: float | None = Field(None, ge=0, le=1, description=(
        "Maximum share of the product region with every channel >= 250 (checks.exposure), [0,1]. Suggested 0.05."))
    max_clipped_shadows: float | None = Field(None, ge=0, le=1, description=(
        "Maximum share of the product region with every channel <= 5 (checks.exposure), [0,1]. Suggested 0.05"
        " (black products are dark, not clipped: they sit around 20-40 on 0-255)."))
    min_colourfulness: float | None = Field(None, ge=0, description=(
        "Minimum Hasler-Susstrunk colourfulness M of the product region. Off by default: grey, black and white"
        " products are legitimately near 0."))
    require_colour_match: bool = Field(False, description=(
        "Fail renders whose dominant colour does not match the catalog colour (checks.colour_match, ΔE00 <= 25)."
        " Unknown or multi-colour names never fail. Off by default: on real catalog photos it accepts ~61 % under"
        " their own colour and 17 % under a wrong one (checks.colour_match)."))
    min_recognisability: Union[float, Literal["auto"], Literal[False]] = Field("auto", description=(
        "Minimum recognisability of a render: the model's category judge's probability that it shows its catalog category"
        " (catalog_render.quality.category_judge, MODEL/judge/). 'auto' (default) = the judge's calibrated threshold, the"
        " 5th percentile of that probability on real photos of the catalog the judge did not train on (about 95 % of real"
        " photos pass), or the render's probability of 'not a product photo' when that is higher; a render whose category"
        " is not one of the judge's classes gets the product check instead: its probability of showing some product"
        " (1 - P(not a product photo)) against the judge's calibrated product threshold (catalog_render.recognisability,"
        " docs/evaluation.md). A model without a judge skips the check with a one-line note. A number in [0, 1] = that"
        " threshold for either check (the model must have a judge). false = no recognisability score and no check."
        " A failing render is retried like a blank one (up to BLANK_MAX_TRIES seeds)."))
    product_colour: bool = Field(True, description=(
        "With a recognisability check: also measure the kept render's colour on its product region (U²-Net-p mask,"
        " manifest product_colour_delta_e / product_colour_match; reported, never gated). Costs about 0.5 CPU-s per"
        " product (the mask network sees 320 x 320 px whatever the render's size), far more than a GAN render: false saves it."))
    near_duplicate_max_distance: int | None = Field(None, ge=0, le=64, description=(
        "Flag renders of different products whose phashes are within this many bits (checks.near_duplicate_groups)."
        " None = checks.NEAR_DUPLICATE_MAX_DISTANCE (6). Reported in the run record and report, never gates a render."))

    @field_validator("upscaler")
    @classmethod
    def _valid_upscaler(cls, value: str) -> str:
        return _check_upscaler(value)

    @field_validator("min_recognisability", mode="before")
    @classmethod
    def _valid_recognisability(cls, value):
        if value == "auto" or value is False:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        raise ValueError(f'expected "auto", false, or a probability in [0, 1], got {value!r}')


#: The Real-ESRGAN spec ``quality.upscaler = "auto"`` uses (benchmarks/upscalers.py, benchmarks/RESULTS.md).
DEFAULT_UPSCALER = "realesr-animevideov3-x4"


def _check_upscaler(value: str) -> str:
    if value in ("auto", "lanczos"):
        return value
    from catalog_render.pretrained.upscale import parse_spec

    return "+".join(parse_spec(value))  # ValueError names the models


def upscaler_spec(thresholds: "QualityThresholds") -> str | None:
    """The Real-ESRGAN spec a job's renders are enlarged with, or None for Lanczos: the job's
    ``quality.upscaler`` for its preset (see the field)."""
    from catalog_render.quality.presets import get_preset

    preset = get_preset(thresholds.preset)
    if preset.size is None or thresholds.upscaler == "lanczos":
        return None
    if thresholds.upscaler == "auto":
        return DEFAULT_UPSCALER if preset.super_resolution else None
    return thresholds.upscaler


#: The ``blank`` check, always on: a render fails it when at most this share of its pixels differs
#: from its dominant colour by more than scores.DOMINANT_TOLERANCE (8) levels
#: (scores.non_dominant_share): an all-black, all-white or single-colour image (share 0.0), or one
#: whose "product" is a few stray pixels (0.001 is 3 pixels of a 64x48 render). Derivation, on
#: every photo of ../shared/data (2,946 fashion + 2,187 IKEA, reproduced by
#: tests/test_gate.py::test_no_real_photo_is_blank): the lowest share is 0.0053 at the photos'
#: own size (fashion 59551, a pair of small earrings on white), 0.0085 letterboxed to 64x48 px and
#: 0.0088 to 32x32 px; the 1st percentile is 0.04-0.07. The threshold sits 5x below the lowest
#: real photo, so no real product photo fails it, while flat images fail at any size.
BLANK_MAX_SHARE = 0.001
#: Tries (seeds, see execution.try_seed) a product whose renders are all blank gets, even when
#: ``max_tries`` is lower: a blank render is never kept when another seed can give a product.
BLANK_MAX_TRIES = 3
#: Name of the always-on check in ``failed_checks``.
BLANK = "blank"
#: Name of the recognisability check in ``failed_checks`` (quality.min_recognisability).
RECOGNISABILITY = "recognisability"
#: Checks whose failure is retried with the next seeds up to BLANK_MAX_TRIES whatever ``max_tries`` says.
RETRIED_ALWAYS = (BLANK, RECOGNISABILITY)

#: Checks judge() can report, with the score key and comparison each uses.
_SCORE_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("min_sharpness", "sharpness", ">="),
    ("min_background_whiteness", "background_whiteness", ">="),
    ("min_fill_ratio", "fill_ratio", ">="),
    ("max_fill_ratio", "fill_ratio", "<="),
    ("max_clipped_highlights", "clipped_highlights", "<="),
    ("max_clipped_shadows", "clipped_shadows", "<="),
    ("min_colourfulness", "colourfulness", ">="),
)


def judge(scores: Mapping[str, object], compliance: Compliance | None, thresholds: QualityThresholds,
          min_recognisability: float | None = None) -> tuple[bool, list[str]]:
    """Decide one render: ``(passed, failed_checks)``.

    ``scores``: the render's values by name (non_dominant_share, sharpness, background_whiteness,
    fill_ratio, clipped_highlights, clipped_shadows, colourfulness, colour_match); ``compliance``:
    the result of presets.evaluate for ``thresholds.preset`` (None when the preset is ``none``).

    The ``blank`` check comes first and needs no threshold: ``non_dominant_share`` at or below
    :data:`BLANK_MAX_SHARE` fails it, a missing or NaN value fails it as ``blank (missing)``.

    ``min_recognisability``: the resolved threshold of ``quality.min_recognisability`` (the judge's
    calibrated one for ``"auto"``; None = the check is off or the model has no judge). A
    ``recognisability`` score below the render's own ``recognisability_threshold`` (set by
    :func:`catalog_render.recognisability.check`: the category or product check's threshold), or
    below ``min_recognisability`` when the scores hold none, fails :data:`RECOGNISABILITY`; a None
    score is no verdict, never a failure.

    A threshold that is set fails its check when the score is below a ``min_`` / above a ``max_``
    value, or when the score is missing or NaN (named ``<check> (missing)``): the gate never passes
    what it could not measure. ``colour_match`` fails only when it is False (None = no verdict).
    Failed required preset rules are added by id (``amazon.white_background``); a compliance for a
    different preset than ``thresholds.preset`` raises ValueError. The order of failed_checks is
    the order above, then the preset's rule order.
    """
    failed: list[str] = []
    share = scores.get("non_dominant_share")
    if share is None or (isinstance(share, float) and math.isnan(share)):
        failed.append(f"{BLANK} (missing)")
    elif share <= BLANK_MAX_SHARE:
        failed.append(BLANK)
    if min_recognisability is not None:
        rec = scores.get("recognisability")
        limit = scores.get("recognisability_threshold")
        limit = min_recognisability if limit is None else limit
        if rec is not None and not (isinstance(rec, float) and math.isnan(rec)) and rec < limit:
            failed.append(RECOGNISABILITY)
    for name, key, op in _SCORE_CHECKS:
        limit = getattr(thresholds, name)
        if limit is None:
            continue
        value = scores.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            failed.append(f"{name} (missing)")
        elif (op == ">=" and not value >= limit) or (op == "<=" and not value <= limit):
            failed.append(name)
    if thresholds.require_colour_match and scores.get("colour_match") is False:
        failed.append("colour_match")
    if thresholds.preset != "none":
        if compliance is None:
            failed.append(f"{thresholds.preset} (not evaluated)")
        elif compliance.preset != thresholds.preset:
            raise ValueError(f"compliance is for preset {compliance.preset!r}, thresholds ask for {thresholds.preset!r}")
        else:
            failed.extend(compliance.failed)
    return (not failed, failed)


def tries_allowed(thresholds: QualityThresholds) -> int:
    """The most tries any product can get: ``max(max_tries, BLANK_MAX_TRIES)``."""
    return max(thresholds.max_tries, BLANK_MAX_TRIES)


def should_retry(failed_checks: Sequence[str], tries_made: int, thresholds: QualityThresholds) -> bool:
    """Whether a product whose latest try failed ``failed_checks`` (empty: it passed) after
    ``tries_made`` tries gets another seed: a failing try is retried up to ``max_tries`` tries, a
    blank or unrecognisable one (:data:`RETRIED_ALWAYS`) up to :data:`BLANK_MAX_TRIES`."""
    if not failed_checks:
        return False
    if tries_made < thresholds.max_tries:
        return True
    return any(c in failed_checks for c in RETRIED_ALWAYS) and tries_made < BLANK_MAX_TRIES


#: Score that breaks ties between tries with the same verdict and the same number of failed checks.
TIEBREAK_SCORE = "sharpness"


def pick_best(tries: Sequence[Mapping[str, object]]) -> int:
    """Index of the best of a product's tries (best-of-N).

    Each try is a mapping with ``passed`` (bool), ``failed_checks`` (list) and its scores. Best =
    ordered by, in turn: (1) passing tries before failing ones; (1b) tries that are not ``blank``
    before blank ones (a flat image is never kept over a render that shows something); (2) fewer
    failed checks; (2b) higher ``recognisability`` (the judge's probability of the product's
    category; missing counts as lowest); (3) higher
    :data:`TIEBREAK_SCORE` (sharpness, the variance of the Laplacian: blur is a generator's most
    common defect, and at equal verdicts the crisper render is preferred; missing or NaN counts as
    lowest); (4) the earlier try (deterministic). Raises ValueError on an empty list.
    """
    if not tries:
        raise ValueError("pick_best needs at least one try")

    def number(v) -> float:
        return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    def key(i: int):
        t = tries[i]
        failed = t.get("failed_checks") or ()
        return (0 if t.get("passed") else 1, 1 if BLANK in failed else 0, len(failed), -number(t.get(RECOGNISABILITY)),
                -number(t.get(TIEBREAK_SCORE)), i)

    return min(range(len(tries)), key=key)
