"""``--kind main-image``: a marketplace-compliant main image from the product's own photo.

Per product with a usable photo: U²-Net-p masks the product (catalog_render.pretrained.mask), the
mask is judged (:func:`catalog_render.kinds.photo.judge_mask`), the product is composited over pure
white RGB 255, centred, scaled so it spans the preset's ``fill`` of the canvas (Amazon 0.92, a
margin over its 85 % rule; presets without a fill rule: :data:`DEFAULT_FILL`), enlarged with
Real-ESRGAN (the job's ``quality.upscaler``; ``auto``: :data:`PHOTO_UPSCALER`) to the preset's canvas, and written with provenance
IPTC DigitalSourceType ``compositeWithTrainedAlgorithmicMedia`` plus the source photo's URI and
sha256. Preset ``none`` makes Amazon's image (the main-image rules are Amazon's).

Left alone (a ``left-alone`` row, ``error`` ``left alone: <reason>``, counted as done on re-runs with
the same inputs): no salient product, several products in the frame (two regions allowed for pairs:
:data:`catalog_render.kinds.photo.PAIR_WORDS`), the product cut by the frame (the edge is named).
Worn apparel on a model is the exception the category decides: an upper-body garment whose mask
touches only the bottom edge, or a lower-body one touching only the top edge, is the *model* cut
by the frame (legs, torso), not the garment; it is placed with that edge flush with the canvas
edge (``anchor``) instead of centred (``[photos] anchor_worn = false`` leaves them alone too).

render_key = sha256 of (kind, source sha256, mask model id, preset, canvas, fill, upscaler spec and
passes, the [photos] thresholds, whether pairs / anchoring apply), so a changed photo, mask model
or preset re-renders exactly the affected products.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa

from catalog_render import planning
from catalog_render.config import JobSpec
from catalog_render.kinds import photo
from catalog_render.kinds.base import PlanContext, Rendered
from catalog_render.kinds.photo_worker import PhotoKind
from catalog_render.quality.presets import LOWER_WORN, UPPER_WORN, is_worn

#: Share of the canvas a product spans under presets without a fill rule (Google, eBay, Shopify, Walmart).
DEFAULT_FILL = 0.85
METHOD = "u2netp-mask+white+centre+realesrgan"


def method_of(mask_model_id: str) -> str:
    """The manifest's ``method`` of a main image: :data:`METHOD` with the mask model's kind
    (``u2netp``, ``matting``: the part of ``mask_model`` before the colon) in front."""
    return METHOD.replace("u2netp", mask_model_id.split(":", 1)[0], 1)
#: The Real-ESRGAN model ``quality.upscaler = "auto"`` means for main images made from photos:
#: against realesr-animevideov3-x4 (the default for generator renders, an anime model) on fashion
#: photos reduced 4x and enlarged back, it is closer to the photo by LPIPS and DISTS, keeps white
#: collars, soles and print edges white, and does not paint faces flat, at about 25 times the CPU
#: of one pass (``python benchmarks/photos.py upscale``, docs/photos.md).
PHOTO_UPSCALER = "realesrgan-x4plus"
def main_preset(spec: JobSpec) -> str:
    """The preset main images are made for: the job's, or ``amazon`` when it is ``none``."""
    return "amazon" if spec.quality.preset == "none" else spec.quality.preset


def anchor_edge(category: str | None, edges: dict[str, float], limit: float) -> str | None:
    """``"bottom"`` / ``"top"`` when the mask is cut only at that edge and ``category`` is worn on the
    upper / lower body (:data:`catalog_render.quality.presets.UPPER_WORN`, ``LOWER_WORN``), else None."""
    cut = {e for e, share in edges.items() if share > limit}
    c = (category or "").lower()
    if cut == {"bottom"} and any(re.search(rf"\b{w}", c) for w in UPPER_WORN):
        return "bottom"
    if cut == {"top"} and any(re.search(rf"\b{w}", c) for w in LOWER_WORN):
        return "top"
    return None


class MainImageKind(PhotoKind):
    """``--kind main-image`` (see the module doc). Needs no generator."""

    name = "main-image"

    def preflight(self, spec: JobSpec) -> None:
        photo.load_masker(spec.photos.mask_model)
        _upscaler(spec)

    def params(self, spec: JobSpec) -> dict:
        """Everything besides the photo the image depends on (hashed into render_key)."""
        from catalog_render.quality import presets

        preset = presets.get_preset(main_preset(spec))
        up = photo_upscaler(spec)
        mask_model = photo.mask_model_id(spec.photos.mask_model)
        return {"mask_model": mask_model, "preset": preset.name, "canvas": list(preset.size), "fill": preset.fill or DEFAULT_FILL,
                "upscaler": up, "upscaler_passes": spec.quality.upscaler_passes if up else None, "method": method_of(mask_model),
                "photos": spec.photos.model_dump(exclude={"group_column", "variant_method"})}

    def plan(self, catalog: pa.Table, spec: JobSpec, ctx: PlanContext) -> planning.Plan:
        """One work item per product with a usable photo whose key is not done. Rows without
        ``image_uri`` are out of scope (nothing to start from: ``--kind render`` or ``variant``);
        a bad product id, a duplicated id or an unusable photo (missing, undecodable, over the
        caps, refused path) is quarantined with its reason."""
        params = self.params(spec)
        return self.plan_own_photos(catalog, ctx, lambda r, src: {
            "source_uri": src.uri, "source_sha256": src.sha256, "category": r.get("category"),
            "pairs": photo.is_pair_product(r.get("category"), r.get("title")), **params})

    # ------------------------------------------------------------------------- in the actor

    def setup(self, spec: JobSpec, threads: int) -> dict:
        """Per actor, once: the mask model and the upscaler."""
        return {"masker": photo.load_masker(spec.photos.mask_model, threads), "upscaler": _upscaler(spec), "spec": spec}

    def render(self, item: dict, state: dict) -> Rendered:
        """One main image (see the module doc). Raises what reading, masking or upscaling raise
        (the worker turns that into a failed row)."""
        from catalog_render.quality import presets
        from catalog_render.quality.provenance import ProvenanceMetadata

        inputs = json.loads(item["inputs"])
        spec: JobSpec = state["spec"]
        ps = spec.photos
        image = photo.load_source(inputs["source_uri"], inputs["source_sha256"])
        prob = state["masker"].mask(image)
        verdict = photo.judge_mask(prob, threshold=ps.mask_threshold, min_share=ps.min_mask_share, max_share=ps.max_mask_share,
                                   min_component_share=ps.min_component_share, max_edge_touch=ps.max_edge_touch, pairs_allowed=inputs["pairs"])
        fields = {"source_uri": inputs["source_uri"], "source_sha256": inputs["source_sha256"], "method": method_of(inputs["mask_model"]),
                  "mask_model": inputs["mask_model"], "preset": inputs["preset"]}
        anchor = None
        if verdict.reason and verdict.reason.startswith("product cut") and ps.anchor_worn:
            anchor = anchor_edge(inputs.get("category"), verdict.edges, ps.max_edge_touch)
        if verdict.reason and not anchor:
            return Rendered(status="left-alone", error=f"left alone: {verdict.reason}", fields=fields)
        alpha = photo.soft_alpha(prob, verdict.mask)
        box = photo.mask_box(verdict.mask)
        out, _ = photo.place_on_canvas(image, alpha, box, tuple(inputs["canvas"]), inputs["fill"], upscaler=state["upscaler"], anchor=anchor)
        colour = json.loads(item["conditioning"]).get("attributes", {}).get("color")
        m = presets.measure(out, colour)
        comp = presets.evaluate(out, inputs["preset"], colour, apparel=spec.quality.apparel or is_worn(inputs.get("category")), measurements=m)
        meta = ProvenanceMetadata(model_id=inputs["mask_model"], render_key=item["render_key"], family=self.name, product_id=item["product_id"],
                                  digital_source_type=photo.COMPOSITE_WITH_TRAINED, source_uri=inputs["source_uri"], source_sha256=inputs["source_sha256"])
        fields.update(
            quality_status="passed" if comp.verdict else "failed-quality", quality_failed=json.dumps(comp.failed), compliance_failed=json.dumps(comp.failed),
            compliance_advisories=json.dumps(comp.advisories), fill_ratio=m["box_area_ratio"], background_whiteness=m["edge_whiteness"],
            upscaler="+".join(state["upscaler"].last_passes) if state["upscaler"] and state["upscaler"].last_passes else "lanczos",
            colour_match=m["colour_match"], colour_delta_e=m["colour_delta_e"], colourfulness=m["colourfulness"],
            clipped_highlights=m["clipped_highlights"], clipped_shadows=m["clipped_shadows"],
            plan_reason=item["plan_reason"] + (f"; model cut by the frame at the {anchor} edge: placed flush with it" if anchor else ""),
        )
        return Rendered(image=out, provenance=meta, fields=fields, format=presets.get_preset(inputs["preset"]).format.lower(), preset=inputs["preset"])


def photo_upscaler(spec: JobSpec) -> str | None:
    """The Real-ESRGAN spec main images are enlarged with: the job's ``quality.upscaler``, where
    ``auto`` means :data:`PHOTO_UPSCALER` for presets that enlarge with Real-ESRGAN
    (quality.gate.upscaler_spec); None = Lanczos."""
    from catalog_render.quality import gate

    name = gate.upscaler_spec(spec.quality.model_copy(update={"preset": main_preset(spec)}))
    return PHOTO_UPSCALER if name and spec.quality.upscaler == "auto" else name


def _upscaler(spec: JobSpec):
    """Real-ESRGAN for the main-image preset's canvas (None when ``quality.upscaler`` is lanczos)."""
    name = photo_upscaler(spec)
    if not name:
        return None
    from catalog_render.pretrained.upscale import Upscaler

    return Upscaler(name, gpuid=spec.quality.upscaler_gpuid, max_passes=spec.quality.upscaler_passes)
