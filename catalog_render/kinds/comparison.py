"""``--kind comparison``: one image per comparison group, the products side by side at the same
framing with one row per attribute beneath, so a shopper compares them at a glance.

Groups (``[comparison]``, :class:`catalog_render.config.ComparisonSpec`): the products sharing a
value of ``group_by`` (default ``category``), ordered by ``order_by`` (numbers when every member's
value is one: a price, with values that are not numbers after them as text; the product id by
default), split into consecutive images of at
most ``max_size`` (sizes differing by at most one: 9 products, max 4 -> 3 + 3 + 3); groups under
``min_size`` are out of scope. Or explicit groups from ``groups_csv`` (one group per line), where
a group of one product, a group larger than ``max_size`` and ids not in the catalog are
quarantined with the reason, and a product may sit in several groups (each image has it).

Each member is shown by its photo on white (catalog_render.kinds.tiles, the main-image machinery)
or, without a usable photo and with ``--model``, by the generator's render at the group's seed
(one seed per group, derived from ``[comparison] seed`` and the group's name: the members differ
by their conditioning, not by a random pose; a member whose conditioning equals an earlier one's
gets a seed derived from the group's, or it would be the same image); without ``--model`` such a member is left out and
the row's ``plan_reason`` says so (a group left with fewer than two members is quarantined).

The image: pictures in tiles :data:`TILE` px wide, as tall as the group's tallest product needs
(:data:`MIN_TILE_H` to 400 px), then one row per ``attributes`` entry (headers in
``language``; values wrapped to at most :data:`MAX_LINES` lines and ended with … when longer;
colours with swatches; a price that is not a number is shown as written, marked so). The manifest
row's ``product_id`` is the group's id (``comparison:<group>[:<k>of<n>]``), ``members`` the JSON
list of its product ids, ``never_main`` true (text on the image). render_key = sha256 of every
member's catalog content and photo sha256 (or render model, seed and parameters), the layout,
fonts, text engine, mask model and ``[photos]`` thresholds: a change to one member re-renders
exactly the groups it is in.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json

import numpy as np
import pyarrow as pa

from catalog_render import planning, storage
from catalog_render.config import JobSpec
from catalog_render.errors import ConfigError
from catalog_render.kinds import facts, photo, text
from catalog_render.kinds.base import PHOTO_WORK_SCHEMA, PlanContext, Rendered, inputs_key, skipped_is_done
from catalog_render.kinds.photo_worker import PhotoKind

#: Tile width and largest height (px); a group's tiles are as tall as its tallest product needs, at least MIN_TILE_H.
TILE = (300, 400)
MIN_TILE_H = 200
FILL = 0.85
HEADER_W, GAP, MARGIN, FONT, SWATCH = 170, 16, 24, 21, 20
#: Lines a value may take (the title 3, other rows 2) before it is shortened with an ellipsis.
MAX_LINES = {"title": 3}
METHOD = "comparison-v3"


def _content(row: dict) -> dict:
    return {"product_id": row["product_id"], "title": row.get("title"), "description": row.get("description"), "category": row.get("category"),
            "attributes": dict(sorted((row.get("attributes") or {}).items()))}


def _member_seed(base: int, gid: str, group_seed: int, entry: dict, cond_fields: tuple[str, ...], seen: dict[str, int]) -> int:
    """The seed a rendered member of group ``gid`` is drawn at: the group's, unless an earlier rendered
    member of the group has the same values of every field the model conditions on
    (``cond_fields``; the whole content when the model has none). The same conditioning at the same
    seed is the same image, so the k-th repeat gets a seed derived from the group's and k."""
    from catalog_render.generators.base import Conditioning

    cond = Conditioning(title=entry["title"], category=entry["category"], attributes=entry["attributes"])
    sig = json.dumps([cond.value(f) for f in cond_fields] if cond_fields else entry, sort_keys=True, default=str, ensure_ascii=False)
    k = seen.get(sig, 0)
    seen[sig] = k + 1
    return group_seed if k == 0 else int(hashlib.sha256(f"{base}:{gid}:{k}".encode()).hexdigest()[:8], 16)


def _content_crop(image):
    """A render (RGB PIL image on its own background) cropped to the box of its product
    (:func:`catalog_render.quality.checks.foreground_mask`), so a flat product (a shoe) sets a
    flat tile like its photo would; the whole render when the mask is empty or fills it."""
    from catalog_render.quality import checks

    m = checks.foreground_mask(image)
    return image if not m.any() or m.all() else image.crop(photo.mask_box(m, pad=0))


def _chunks(ids: list[str], size: int) -> list[list[str]]:
    n = -(-len(ids) // size)
    base, extra = divmod(len(ids), n)
    out, start = [], 0
    for k in range(n):
        end = start + base + (k < extra)
        out.append(ids[start:end])
        start = end
    return out


def _order(members: list[dict], order_by: str) -> list[dict]:
    desc = order_by.startswith("-")
    col = order_by.lstrip("-")
    vals = [facts.attribute(r, col) for r in members]
    nums = [facts.price_value(v) for v in vals]
    # numbers first (in order), then other values as text, then members without a value; ties by id
    keyed = [((0, n, "") if n is not None else (1, 0.0, v.lower()) if v is not None else (2, 0.0, ""), (len(r["product_id"]), r["product_id"]), r)
             for n, v, r in zip(nums, vals, members)]
    keyed.sort(key=lambda t: (t[0], t[1]))
    if desc:
        keyed = [t for t in keyed if t[0][0] == 0][::-1] + [t for t in keyed if t[0][0] == 1][::-1] + [t for t in keyed if t[0][0] == 2]
    return [t[2] for t in keyed]


def read_groups_csv(uri: str) -> list[tuple[str, list[str]]]:
    """(name, product ids) per non-empty line of the CSV at ``uri``; a first column headed
    ``group`` names the groups (else ``line <n>``). Raises ConfigError naming the file."""
    try:
        data = storage.read_bytes(uri).decode("utf-8-sig")
    except (storage.StorageError, UnicodeDecodeError) as exc:
        raise ConfigError(f"comparison.groups_csv: cannot read {uri}: {exc}") from None
    lines = [[c.strip() for c in r] for r in csv.reader(io.StringIO(data)) if any(c.strip() for c in r)]
    named = bool(lines) and lines[0][0].lower() == "group"
    out = []
    for n, r in enumerate(lines[1:] if named else lines, start=2 if named else 1):
        name, ids = (r[0], r[1:]) if named else (f"line {n}", r)
        out.append((name or f"line {n}", [c for c in ids if c]))
    return out


class ComparisonKind(PhotoKind):
    """``--kind comparison`` (see the module doc). ``--model`` is optional (renders for members without a photo)."""

    name = "comparison"
    groups_found: int | None = None

    def preflight(self, spec: JobSpec) -> None:
        photo.load_masker(spec.photos.mask_model)
        text.check_fonts()
        if spec.comparison.groups_csv:
            read_groups_csv(spec.comparison.groups_csv)

    def notes(self) -> list[str]:
        if self.groups_found == 0:
            cs = self.spec.comparison
            how = f"the CSV {cs.groups_csv}" if cs.groups_csv else f"{cs.group_by!r} values shared by at least {cs.min_size} products"
            return [f"no comparison groups in this catalog (groups come from {how}; docs/comparison-label.md)"]
        return []

    def _groups(self, valid: list[dict], spec: JobSpec, quarantined: list) -> list[tuple[str, list[dict]]]:
        cs = spec.comparison
        by_id = {r["product_id"]: r for r in valid}
        groups: list[tuple[str, list[dict]]] = []
        if cs.groups_csv:
            for name, ids in read_groups_csv(cs.groups_csv):
                gid = f"comparison:{name}"
                unique = list(dict.fromkeys(ids))
                unknown = [i for i in unique if i not in by_id]
                if unknown:
                    quarantined.append((gid, f"group {name!r}: product ids not in the catalog or quarantined: {', '.join(unknown[:5])}", unique))
                elif len(unique) < 2:
                    quarantined.append((gid, f"group {name!r} has one product: nothing to compare", unique))
                elif len(unique) > cs.max_size:
                    quarantined.append((gid, f"group {name!r} has {len(unique)} products; the layout holds at most {cs.max_size} "
                                             "(comparison.max_size, up to 6): split the group", unique))
                else:
                    groups.append((gid, [by_id[i] for i in unique]))
            return groups
        by_value: dict[str, list[dict]] = {}
        for r in valid:
            v = facts.attribute(r, cs.group_by)
            if v is not None:
                by_value.setdefault(v, []).append(r)
        for value in sorted(by_value):
            members = _order(by_value[value], cs.order_by)
            if len(members) < cs.min_size:
                continue
            parts = _chunks([m["product_id"] for m in members], cs.max_size)
            for k, part in enumerate(parts, 1):
                gid = f"comparison:{value}" + (f":{k}of{len(parts)}" if len(parts) > 1 else "")
                groups.append((gid, [by_id[p] for p in part]))
        return groups

    def plan(self, catalog: pa.Table, spec: JobSpec, ctx: PlanContext) -> planning.Plan:
        from concurrent.futures import ThreadPoolExecutor

        self.spec = spec
        rows = catalog.to_pylist()
        for r in rows:
            r["attributes"] = dict(r.get("attributes") or [])
        bad, valid = self.screen(rows)
        group_q: list[tuple[str, str, list[str]]] = []
        groups = self._groups([r for _, r in valid], spec, group_q)
        self.groups_found = len(groups) + len(group_q)
        needed = {m["product_id"]: m for _, ms in groups for m in ms}
        with ThreadPoolExecutor(ctx.threads) as pool:
            srcs = dict(zip(needed, pool.map(lambda r: photo.source_photo(r.get("image_uri")), needed.values())))
        model, cond_fields = None, ()
        if ctx.model_uri:
            from catalog_render.generators import registry
            from catalog_render.kinds.base import generation_params

            info = registry.describe(ctx.model_uri)
            model = {"model_uri": ctx.model_uri, "model_id": info.model_id,
                     "params": json.loads(json.dumps(generation_params(spec).__dict__, default=str))}
            cond_fields = tuple(f for f, _ in info.conditions)  # () for a pipeline: its prompt holds the title
        cs = spec.comparison
        common = {"layout": {"tile": list(TILE), "fill": FILL, "header_w": HEADER_W, "font": FONT, "max_lines": MAX_LINES},
                  "attributes": cs.attributes, "language": cs.language, "currency": cs.currency, "mask_model": photo.mask_model_id(spec.photos.mask_model),
                  "fonts": text.fonts_id(), "engine": text.engine(), "method": METHOD,
                  "photos": spec.photos.model_dump(exclude={"group_column", "variant_method"})}
        done = skipped_is_done(ctx.past)
        work, up_to_date, in_scope = [], 0, 0
        for gid, members in groups:
            shown, left_out = [], []
            seed = int(hashlib.sha256(f"{cs.seed}:{gid}".encode()).hexdigest()[:8], 16)
            seen: dict[str, int] = {}  # rendered members per conditioning the model reads
            for m in members:
                src = srcs[m["product_id"]]
                entry = _content(m)
                if src.problem is None and not ctx.hide_images:
                    entry.update(source_uri=src.uri, source_sha256=src.sha256)
                elif model:
                    entry["render"] = {**model, "seed": _member_seed(cs.seed, gid, seed, entry, cond_fields, seen)}
                else:
                    left_out.append(f"{m['product_id']} ({src.problem or 'photo hidden'}; no --model to render it)")
                    continue
                shown.append(entry)
            if len(shown) < 2:
                group_q.append((gid, f"fewer than 2 members can be shown: {'; '.join(left_out)}", [m["product_id"] for m in members]))
                continue
            in_scope += 1
            inputs = {"group": gid, "members": shown, **common}
            key = inputs_key(self.name, inputs)
            if self.is_done(key, ctx, done):
                up_to_date += 1
                continue
            ids = [m["product_id"] for m in shown]
            reason = "render_key not in manifest" + (f"; left out: {', '.join(left_out)}" if left_out else "")
            work.append({"product_id": gid, "render_key": key, "seed": seed if model else None, "prompt": None, "reference_uri": None,
                         "conditioning": json.dumps({"group": gid, "members": ids}, ensure_ascii=False), "plan_reason": reason,
                         "kind": self.name, "inputs": json.dumps(inputs, sort_keys=True, ensure_ascii=False)})
            if ctx.limit is not None and len(work) >= ctx.limit:
                break
        quarantined = [(p, w) for _, p, w in sorted(bad, key=lambda q: q[0])] + [(g, w) for g, w, _ in group_q]
        keys = [planning.quarantine_key(p, w, rows[i]) for i, p, w in sorted(bad, key=lambda q: q[0])]
        keys += [planning.quarantine_key(g, w, {"members": ids}) for g, w, ids in group_q]
        return planning.Plan(pa.Table.from_pylist(work, schema=PHOTO_WORK_SCHEMA), quarantined, up_to_date, in_scope, len(rows), 0, keys)

    # ------------------------------------------------------------------------- in the actor

    def picture(self, member: dict, state: dict):
        """A :class:`catalog_render.kinds.tiles.CutOut` of one member: its photo's product, or the
        generator's render (shown whole)."""
        from catalog_render.kinds import tiles

        if "render" in member:
            from catalog_render.generators import registry
            from catalog_render.generators.base import Conditioning, GenerationParams

            r = member["render"]
            gens = state.setdefault("generators", {})  # loaded on first use, once per actor
            if r["model_uri"] not in gens:
                gens[r["model_uri"]] = registry.load_generator(r["model_uri"])
            cond = Conditioning(title=member["title"], category=member["category"], attributes=member["attributes"])
            image = gens[r["model_uri"]].generate([cond], [r["seed"]], GenerationParams(**r["params"]))[0].convert("RGB")
            return tiles.CutOut(_content_crop(image), note=f"rendered at seed {r['seed']} (no usable photo)")
        image = photo.load_source(member["source_uri"], member["source_sha256"])
        return tiles.cut_out(image, state["masker"], state["spec"], member["category"], member["title"])

    def render(self, item: dict, state: dict) -> Rendered:
        from catalog_render.quality.provenance import ProvenanceMetadata

        inputs = json.loads(item["inputs"])
        members = inputs["members"]
        cuts = [self.picture(m, state) for m in members]
        notes = [f"{m['product_id']}: {c.note}" for m, c in zip(members, cuts) if c.note]
        # One tile size for the group: as tall as its tallest product needs at the tile width (flat
        # products such as shoes get shorter tiles, not bands of white), within MIN_TILE_H..TILE[1].
        height = int(np.clip(round(max(c.aspect for c in cuts) * TILE[0]), MIN_TILE_H, TILE[1]))
        pictures = [c.place((TILE[0], height), FILL) for c in cuts]
        image, text_notes = compose(pictures, members, inputs["attributes"], inputs["language"], inputs["currency"])
        rendered = [m["render"] for m in members if "render" in m]
        fields = {"method": METHOD, "mask_model": inputs["mask_model"], "members": json.dumps([m["product_id"] for m in members]),
                  "never_main": True, "plan_reason": "; ".join([item["plan_reason"], *notes, *text_notes])}
        if rendered:  # the generator that drew the photo-less members (their seeds are in plan_reason)
            fields["model_id"] = rendered[0]["model_id"]
        meta = ProvenanceMetadata(model_id=inputs["mask_model"], render_key=item["render_key"], family=self.name, product_id=item["product_id"],
                                  digital_source_type=photo.COMPOSITE_WITH_TRAINED)
        return Rendered(image=image, provenance=meta, fields=fields, format="png")


def compose(pictures: list, members: list[dict], attributes: list[str], language: str, currency: str):
    """(RGB PIL image, notes): the tiles side by side and one row per attribute beneath (module
    doc). ``pictures``: one tile per member, in order, all :data:`TILE` wide and equally tall."""
    from PIL import Image, ImageDraw

    n = len(pictures)
    width = 2 * MARGIN + HEADER_W + n * TILE[0] + (n - 1) * GAP
    col_x = [MARGIN + HEADER_W + k * (TILE[0] + GAP) for k in range(n)]
    notes: list[str] = []
    rows = []  # (header, [(lines, swatches)])
    for name in attributes:
        key = facts.ALIASES.get(name.split(".", 1)[-1], name.split(".", 1)[-1])
        cells, any_value = [], False
        for m in members:
            f = facts.fact(m, name, language, currency)
            if f is None:
                cells.append(([], []))
                continue
            any_value = True
            if f.problem:
                notes.append(f"{m['product_id']}: {f.problem}")
            value, missing = text.clean(f.value)
            if missing:
                notes.append(f"{m['product_id']}: {missing} character(s) of {key} no font holds drawn as U+FFFD")
            sw = f.swatches
            avail = TILE[0] - (len(sw) * (SWATCH + 4) + 4 if sw else 0)
            lines, cut = text.wrap(value, avail, "regular", FONT, MAX_LINES.get(key, 2))
            if cut:
                notes.append(f"{m['product_id']}: {key} shortened with …")
            cells.append((lines, sw))
        if any_value:
            rows.append((facts.header(key, language), cells))
    line_h = round(FONT * 1.25)
    heights = [max(1, *(len(c[0]) for c in cells)) * line_h + 18 for _, cells in rows]
    tile_h = pictures[0].height
    height = MARGIN + tile_h + 12 + sum(heights) + MARGIN
    im = Image.new("RGB", (width, height), (255, 255, 255))
    for x, tile in zip(col_x, pictures):
        im.paste(tile, (x, MARGIN))
    draw = ImageDraw.Draw(im)
    y = MARGIN + tile_h + 12
    for (head, cells), h in zip(rows, heights):
        draw.line([(MARGIN, y), (width - MARGIN, y)], fill=(220, 222, 226), width=1)
        hl, _ = text.wrap(head, HEADER_W - 12, "bold", FONT - 2, 1)
        text.draw_lines(draw, hl, (MARGIN, y + 9, HEADER_W - 12), "bold", FONT - 2, (90, 96, 104))
        for x, (lines, sw) in zip(col_x, cells):
            sx = x
            for rgb in sw:
                draw.rectangle([sx, y + 10, sx + SWATCH, y + 10 + SWATCH], fill=rgb, outline=(150, 150, 150))
                sx += SWATCH + 4
            off = sx - x + (4 if sw else 0)
            text.draw_lines(draw, lines, (x + off, y + 9, TILE[0] - off), "regular", FONT, (20, 24, 28))
        y += h
    return im, notes
