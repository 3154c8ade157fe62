"""``--kind label``: a secondary listing image telling the product's key facts at a glance: the
product's photo on white (catalog_render.kinds.tiles) beside a panel with its title and facts.

Facts (catalog_render.kinds.facts.label_facts): colour (with a swatch per colour named), material,
size or dimensions, care, each from the catalog attributes or else parsed from the description
(and title, for material); then the ``[label] attributes`` entries. The "View more product
information" text scraped into many IKEA descriptions is removed first.

Layout on a ``[label] size`` square (default 1000 px, the size Amazon's zoom needs): the picture
in the left 52 %, the panel on the right: the title in bold (at most 3 lines), then per fact a
header (the job's ``language``) and its value (at most 2 lines; care 3). Text is wrapped at word
boundaries (CJK: between characters) and ended with … when longer; a fact that no longer fits the
panel's height is left out, never drawn past it (the row's ``plan_reason`` names what was shortened
or left out). Fonts and shaping: catalog_render.kinds.text.

Out of scope: products without ``image_uri``. Quarantined with the reason: an unusable photo,
and a product with nothing to tell (no colour, attributes or parsable description). Rows have
``never_main`` true: a label carries text, which Amazon forbids on a main image, so it is written
without a preset main rendition and must only fill a secondary-image slot. render_key = sha256 of
the product's catalog content, its photo's sha256, the layout, fonts, text engine, mask model and
``[photos]`` thresholds.
"""

from __future__ import annotations

import json

import pyarrow as pa

from catalog_render import planning
from catalog_render.config import JobSpec
from catalog_render.kinds import facts, photo, text
from catalog_render.kinds.base import PlanContext, Rendered
from catalog_render.kinds.photo_worker import PhotoKind

METHOD = "label-v3"
PANEL_BG = (244, 245, 247)
#: Font sizes and spacing at a 1000 px label (scaled with ``[label] size``).
TITLE_PX, HEAD_PX, VALUE_PX, PAD = 36, 22, 28, 40
MAX_LINES = {"care": 3, "about": 3}


class LabelKind(PhotoKind):
    """``--kind label`` (see the module doc). Needs no generator."""

    name = "label"

    def preflight(self, spec: JobSpec) -> None:
        photo.load_masker(spec.photos.mask_model)
        text.check_fonts()

    def plan(self, catalog: pa.Table, spec: JobSpec, ctx: PlanContext) -> planning.Plan:
        ls = spec.label
        params = {"size": ls.size, "label_attributes": ls.attributes, "language": ls.language, "currency": ls.currency, "fonts": text.fonts_id(),
                  "engine": text.engine(), "mask_model": photo.mask_model_id(spec.photos.mask_model), "method": METHOD,
                  "layout": {"title": TITLE_PX, "head": HEAD_PX, "value": VALUE_PX, "pad": PAD, "max_lines": MAX_LINES},
                  "photos": spec.photos.model_dump(exclude={"group_column", "variant_method"})}

        def inputs_for(r: dict, src) -> dict | str:
            attrs = dict(r.get("attributes") or [])
            if not facts.label_facts({**r, "attributes": attrs}, ls.attributes, ls.language, ls.currency):
                return "nothing to put on a label: no colour, attributes or parsable description"
            return {"source_uri": src.uri, "source_sha256": src.sha256, "title": r.get("title"), "description": r.get("description"),
                    "category": r.get("category"), "attributes": dict(sorted(attrs.items())), **params}

        return self.plan_own_photos(catalog, ctx, inputs_for)

    # ------------------------------------------------------------------------- in the actor

    def render(self, item: dict, state: dict) -> Rendered:
        from catalog_render.kinds import tiles
        from catalog_render.quality.provenance import ProvenanceMetadata

        inputs = json.loads(item["inputs"])
        s = inputs["size"]
        image = photo.load_source(inputs["source_uri"], inputs["source_sha256"])
        pic, note = tiles.product_tile(image, state["masker"], state["spec"], inputs["category"], inputs["title"], (round(s * 0.52), s), 0.85)
        row = {"product_id": item["product_id"], **{k: inputs[k] for k in ("title", "description", "category", "attributes")}}
        found = facts.label_facts(row, inputs["label_attributes"], inputs["language"], inputs["currency"])
        out, notes = compose(pic, inputs["title"], found, s, inputs["category"])
        fields = {"source_uri": inputs["source_uri"], "source_sha256": inputs["source_sha256"], "method": METHOD, "mask_model": inputs["mask_model"],
                  "never_main": True,
                  "plan_reason": "; ".join([item["plan_reason"], *([note] if note else []), *notes])}
        meta = ProvenanceMetadata(model_id=inputs["mask_model"], render_key=item["render_key"], family=self.name, product_id=item["product_id"],
                                  digital_source_type=photo.COMPOSITE_WITH_TRAINED, source_uri=inputs["source_uri"], source_sha256=inputs["source_sha256"])
        return Rendered(image=out, provenance=meta, fields=fields, format="png")


def compose(picture, title: str | None, found: list[facts.Fact], size: int, category: str | None = None):
    """(RGB PIL image ``size`` x ``size``, notes): ``picture`` (the product on white, 52 % of the
    width, full height) beside the panel of ``title`` (with ``category`` beneath it when the title
    does not name it) and ``found`` (module doc), centred vertically in the panel."""
    from PIL import Image, ImageDraw

    k = size / 1000
    title_px, head_px, value_px, pad = (max(8, round(v * k)) for v in (TITLE_PX, HEAD_PX, VALUE_PX, PAD))
    im = Image.new("RGB", (size, size), (255, 255, 255))
    im.paste(picture, (0, 0))
    draw = ImageDraw.Draw(im)
    left = picture.width + round(10 * k)
    draw.rounded_rectangle([left, pad // 2, size - pad // 2, size - pad // 2], radius=round(18 * k), fill=PANEL_BG)
    # The panel's content is drawn on its own canvas, then centred vertically in the panel.
    x0, top = round(left + pad * 0.75), pad
    w, bottom = round(size - pad // 2 - left - pad * 1.5), size - 2 * pad
    content = Image.new("RGB", (w, bottom), PANEL_BG)
    draw = ImageDraw.Draw(content)
    x = 0
    notes: list[str] = []
    y = 0
    t, missing = text.clean(title)
    if missing:
        notes.append(f"{missing} character(s) of the title no font holds drawn as U+FFFD")
    lines, cut = text.wrap(t, w, "bold", title_px, 3)
    if cut:
        notes.append("title shortened with …")
    y = text.draw_lines(draw, lines, (x, y, w), "bold", title_px, (20, 24, 28))
    if category and category.lower() not in (title or "").lower():  # IKEA titles are series names: say what the product is
        sub, _ = text.clean(category)
        y = text.draw_lines(draw, text.wrap(sub, w, "regular", value_px, 2)[0], (x, y, w), "regular", value_px, (70, 76, 86))
    y += round(12 * k)
    draw.line([(x, y), (x + w, y)], fill=(205, 208, 214), width=max(1, round(2 * k)))
    y += round(22 * k)
    head_h, value_h = round(head_px * 1.25), round(value_px * 1.25)
    sw = round(value_px * 1.0)
    for n, f in enumerate(found):
        value, missing = text.clean(f.value)
        if missing:
            notes.append(f"{missing} character(s) of {f.key} no font holds drawn as U+FFFD")
        off = len(f.swatches) * (sw + round(6 * k)) + (round(4 * k) if f.swatches else 0)
        vlines, cut = text.wrap(value, w - off, "regular", value_px, MAX_LINES.get(f.key, 2))
        need = head_h + len(vlines) * value_h + round(14 * k)
        if y + need > bottom:
            notes.append(f"left out for lack of room: {', '.join(g.key for g in found[n:])}")
            break
        if cut:
            notes.append(f"{f.key} shortened with …")
        if f.problem:
            notes.append(f.problem)
        text.draw_lines(draw, text.wrap(f.header.upper(), w, "bold", head_px, 1)[0], (round(x), y, round(w)), "bold", head_px, (96, 102, 112))
        y += head_h
        sx = x
        for rgb in f.swatches:
            draw.rounded_rectangle([sx, y + 2, sx + sw, y + 2 + sw], radius=round(4 * k), fill=rgb, outline=(150, 150, 150))
            sx += sw + round(6 * k)
        y = text.draw_lines(draw, vlines, (round(x + off), y, round(w - off)), "regular", value_px, (20, 24, 28)) + round(14 * k)
    im.paste(content.crop((0, 0, w, y)), (x0, top + (bottom - y) // 2))
    return im, notes
