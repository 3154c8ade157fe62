"""``--kind variant``: a missing colour variant rendered from a photographed sibling's photo.

Planning: variant groups (catalog_render.kinds.recolour.variant_groups: same category and titles
equal without colour words, or ``[photos] group_column``). A product of a group without a usable
photo (``--hide-images``: every product of a group, its own photo kept as reference) is rendered
from a sibling of another colour with a usable photo (not byte-identical to its own): the sibling
whose product id is nearest (numerically when both are integers, else in catalog order; adjacent
ids are usually the same style). Products in no group are out of scope (``--kind render`` makes
those).

Quarantined with the reason while the rest of the run completes: a target colour the method does
not know (no single CIELAB reference: Multi, Pine...), a group whose siblings all lack a usable
photo (each sibling's problem named: missing, undecodable, over the pixel cap...), and, in the
actor, a mask that covers nothing or everything (``quarantined: ...`` rows, counted as done for
the same inputs). The image: the sibling's photo at its full resolution with the product region
recoloured to the target colour (catalog_render.kinds.recolour; the target is the catalog's own
measured colour of the name with ``[photos] colour_table``, catalog_render.kinds.catalog_colours,
else the name's reference), the rest untouched, PNG (the
job's ``generation.image_format``), with provenance compositeWithTrainedAlgorithmicMedia and the
source photo's URI and sha256. The manifest records the source sibling, method and target colour.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from catalog_render import planning
from catalog_render.config import JobSpec
from catalog_render.kinds import catalog_colours, photo, recolour
from catalog_render.kinds.base import PlanContext, Rendered, inputs_key, skipped_is_done
from catalog_render.kinds.photo_worker import PhotoKind


def _distance(a: str, b: str, order: dict[str, int]) -> tuple:
    if a.isdigit() and b.isdigit():
        return (abs(int(a) - int(b)), b)
    return (abs(order[a] - order[b]), b)


class VariantKind(PhotoKind):
    """``--kind variant`` (see the module doc). Needs no generator."""

    name = "variant"

    def preflight(self, spec: JobSpec) -> None:
        photo.load_masker(spec.photos.mask_model)
        if spec.photos.colour_table:
            catalog_colours.ColourTable.load(spec.photos.colour_table)  # ConfigError naming photos.colour_table

    groups_found: int | None = None  # variant groups the last plan() found

    def notes(self) -> list[str]:
        """One line when the catalog has no variant group (so nothing can be made from a sibling)."""
        if self.groups_found == 0:
            return ["no variant groups in this catalog: products group by the same category and titles that differ only by colour "
                    "words, or by the job's photos.group_column (docs/photos.md)"]
        return []

    def plan(self, catalog: pa.Table, spec: JobSpec, ctx: PlanContext) -> planning.Plan:
        from concurrent.futures import ThreadPoolExecutor

        rows = catalog.to_pylist()
        for r in rows:
            r["attributes"] = dict(r.get("attributes") or [])
        quarantined, valid = self.screen(rows)
        groups = recolour.variant_groups([r for _, r in valid], spec.photos.group_column)
        members: dict[str, list[tuple[int, dict]]] = {}
        for i, r in valid:
            if r["product_id"] in groups:
                members.setdefault(groups[r["product_id"]], []).append((i, r))
        grouped = [ir for ms in members.values() for ir in ms]
        self.groups_found = len(members)
        with ThreadPoolExecutor(ctx.threads) as pool:
            srcs = dict(zip([r["product_id"] for _, r in grouped], pool.map(lambda ir: photo.source_photo(ir[1].get("image_uri")), grouped)))
        order = {r["product_id"]: i for i, r in valid}
        params = {"mask_model": photo.mask_model_id(spec.photos.mask_model), "method": spec.photos.variant_method,
                  "region": {"clusters": recolour.REGION_CLUSTERS, "max_delta_e": recolour.REGION_MAX_DELTA_E, "l_range": list(recolour.L_RANGE),
                             "feather": recolour.FEATHER_SIGMA},
                  "photos": spec.photos.model_dump(include={"mask_threshold", "min_mask_share", "max_mask_share"}), "format": spec.generation.image_format}
        table = catalog_colours.ColourTable.load(spec.photos.colour_table) if spec.photos.colour_table else None
        done = skipped_is_done(ctx.past)
        work, up_to_date, in_scope = [], 0, 0
        for i, r in sorted(grouped, key=lambda ir: ir[0]):
            pid = r["product_id"]
            own = srcs[pid]
            if own.problem is None and not ctx.hide_images:
                continue  # has its photo: nothing to make
            in_scope += 1
            target = r["attributes"].get("color")
            # the catalog's own measurement of the name (never this product's photo), else the name's reference
            lab = table.target(target, exclude=pid) if table is not None else None
            method = f"{spec.photos.variant_method}+{table.identity}" if lab is not None else spec.photos.variant_method
            lab = recolour.target_lab(target) if lab is None else lab
            if lab is None:
                quarantined.append((i, pid, f"target colour {target!r} unknown to {spec.photos.variant_method} (no single CIELAB reference)"))
                continue
            siblings = [s for _, s in members[groups[pid]] if s["product_id"] != pid
                        and (s["attributes"].get("color") or "").strip().lower() != target.strip().lower()]
            usable = [s for s in siblings if srcs[s["product_id"]].problem is None and srcs[s["product_id"]].sha256 != own.sha256]
            if not usable:
                whys = "; ".join(f"{s['product_id']}: {srcs[s['product_id']].problem or 'same photo bytes as this product'}" for s in siblings[:5])
                quarantined.append((i, pid, f"variant group: no sibling of another colour has a usable photo ({whys})"))
                continue
            sib = min(usable, key=lambda s: _distance(pid, s["product_id"], order))
            src = srcs[sib["product_id"]]
            inputs = {"source_uri": src.uri, "source_sha256": src.sha256, "source_product_id": sib["product_id"],
                      "source_colour": sib["attributes"].get("color"), "target_colour": target, "target_lab": [round(float(x), 3) for x in lab], **params, "method": method}
            key = inputs_key(self.name, inputs)
            if self.is_done(key, ctx, done):
                up_to_date += 1
                continue
            reason = "photo hidden (--hide-images)" if own.problem is None else own.problem
            work.append(self.item(r, key, inputs, r.get("image_uri") if own.problem is None else None, f"{reason}; from sibling {sib['product_id']}"))
            if ctx.limit is not None and len(work) >= ctx.limit:
                break
        return self.finish(work, quarantined, up_to_date, in_scope, rows)

    # ------------------------------------------------------------------------- in the actor

    def render(self, item: dict, state: dict) -> Rendered:
        from PIL import Image

        from catalog_render.quality import checks
        from catalog_render.quality.provenance import ProvenanceMetadata

        inputs = json.loads(item["inputs"])
        fields = {k: inputs[k] for k in ("source_uri", "source_sha256", "source_product_id", "method", "target_colour", "mask_model")}
        image = photo.load_source(inputs["source_uri"], inputs["source_sha256"])
        rgb = np.asarray(image)
        out, region, reason = make_variant(rgb, state["masker"].mask(image), inputs["source_colour"], np.asarray(inputs["target_lab"]), state["spec"])
        if reason:
            return Rendered(status="skipped", error=f"quarantined: {reason}", fields=fields)
        cm = checks.colour_match(out, inputs["target_colour"], mask=region)
        fields.update(colour_delta_e=cm.delta_e if cm else None, colour_match=cm.match if cm else None, fill_ratio=float(region.mean()))
        meta = ProvenanceMetadata(model_id=inputs["mask_model"], render_key=item["render_key"], family=self.name, product_id=item["product_id"],
                                  digital_source_type=photo.COMPOSITE_WITH_TRAINED, source_uri=inputs["source_uri"], source_sha256=inputs["source_sha256"])
        return Rendered(image=Image.fromarray(out), provenance=meta, fields=fields, format=inputs["format"])


def make_variant(rgb: np.ndarray, prob: np.ndarray, source_colour: str | None, target: np.ndarray, spec: JobSpec
                 ) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(recoloured uint8 (H, W, 3), region bool (H, W), None), or (None, None, reason) when the
    mask covers nothing or everything or no pixel of the product's colour is found. ``prob``: the
    saliency map of ``rgb``; ``target``: CIELAB (recolour.target_lab)."""
    ps = spec.photos
    v = photo.judge_mask(prob, threshold=ps.mask_threshold, min_share=ps.min_mask_share, max_share=ps.max_mask_share,
                         min_component_share=ps.min_component_share, max_edge_touch=1.0, pairs_allowed=True, check_edges=False)
    if v.reason and not v.reason.startswith("several products"):
        return None, None, v.reason
    mask = np.asarray(prob) >= ps.mask_threshold
    region = recolour.colour_region(rgb, mask, source_colour)
    if not region.any():
        return None, None, f"no pixel of the sibling's colour ({source_colour}) found in its mask"
    return recolour.recolour(rgb, region, target), region, None
