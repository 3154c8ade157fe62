"""``--kind design``: design variations of a product, made by a trained generator (``--model``).

Per product, ``[design]`` of the job (:class:`catalog_render.kinds.design_spec.DesignSpec`) says
which N variations: a **sweep** holds the latent fixed (the product's seed, the one ``--kind
render`` uses: ``planning.product_seed(generation.seed, product_id)``) and sets one conditioning
field to each of N values of the model's vocabulary (colours, a gender, the category's nearest
neighbours); a **walk** holds the product's conditioning fixed and moves the latent from the
product's towards a second one (slerp, :mod:`catalog_render.kinds.design_sheet`).

Each variation is one work item and one manifest row, and so is the product's **design sheet**
(its own render beside the N variations, captioned), each with its own render_key: sha256 of
(kind, the product's catalog fields, the model id, the generation parameters that change pixels,
the seed, and the variation's conditioning / latent parameters; the sheet's key covers every
variation and the tile size). Changing a title, the model, the seed or the list of values
re-renders exactly the images whose inputs changed; an unchanged re-run renders nothing.

Manifest rows: ``kind`` ``design``; ``conditioning`` the variation's own (a colour sweep's row
holds the swept colour); ``method`` ``design-sweep <field>=<value>``, ``design-walk t=<t>`` or
``design-sheet``; ``target_colour`` the swept colour; ``source_product_id`` the product;
``seed``, ``model_id``, ``family`` and ``generation_params`` (the design parameters included).
Images carry provenance (IPTC trainedAlgorithmicMedia, model id, render_key, seed). Design images
are proposals, never a product's published image: ``current.parquet`` leaves them out. A
reviewer's approval of a variation (``feedback import`` or the review page) is exported as a
proposed catalog row by ``catalog-render design export`` (:mod:`catalog_render.kinds.design_export`).

Refused before anything is rendered (ConfigError, exit 3, naming the field): a ``sweep_field`` the
model does not condition on, a value outside the model's vocabulary for that field, more
variations than the vocabulary offers, a walk on a family without an explicit latent, a model
without a vocabulary (a text-to-image pipeline). Quarantined with the reason while the rest of the
run completes: a bad or duplicated product id, a product the model cannot render (a category
outside its vocabulary).
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from catalog_render import planning
from catalog_render.config import JobSpec
from catalog_render.errors import ConfigError, ModelError
from catalog_render.generators.base import Conditioning
from catalog_render.generators.conditioning import UNKNOWN
from catalog_render.kinds.base import PlanContext, Rendered, WorkerContext, generation_params, inputs_key
from catalog_render.kinds.design_sheet import LATENT_FAMILIES
from catalog_render.kinds.photo_worker import PhotoKind, PhotoWorker

COLOUR_FIELDS = ("attributes.color", "attributes.colour")


def walk_end_seed(seed: int) -> int:
    """The seed of a walk's far end: first 8 bytes of sha256("<seed>:design-walk") mod 2**63."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:design-walk".encode()).digest()[:8], "big") % 2**planning.SEED_BITS


def vocabulary(info, field: str) -> list[str]:
    """The model's values for a conditioning field, in its order, without the unknown token.
    Raises ConfigError naming ``design.sweep_field`` when the model does not condition on it."""
    vocab = dict(info.conditions)
    if field not in vocab:
        raise ConfigError(f"design.sweep_field: the model does not condition on {field!r} (it conditions on {', '.join(vocab) or 'nothing'})")
    return [v for v in vocab[field] if v != UNKNOWN]


def check_design(spec: JobSpec, info) -> None:
    """The ``[design]`` rules that need the model (see the module doc); ConfigError naming the field."""
    d = spec.design
    if not info.conditions:
        raise ConfigError(f"design: --kind design sweeps a class-conditional model's vocabulary; {info.uri} is a {info.family} with none")
    if d.mode == "walk":
        if info.family not in LATENT_FAMILIES:
            raise ConfigError(f"design.mode: a latent walk needs a {' or '.join(LATENT_FAMILIES)} model (explicit latent); this one is {info.family}")
        return
    known = vocabulary(info, d.sweep_field)
    for v in d.values:
        if v not in known:
            shown = ", ".join(known[:12]) + (f", ... ({len(known)} in all)" if len(known) > 12 else "")
            raise ConfigError(f"design.values: {v!r} is not in the model's {d.sweep_field} vocabulary (known: {shown})")
    if not d.values and d.count > len(known) - 1:
        raise ConfigError(f"design.variations: {d.count} asked, but the model's {d.sweep_field} vocabulary has {len(known)} values, "
                          f"so at most {max(0, len(known) - 1)} besides a product's own; ask fewer or list design.values")


def category_neighbours(model_uri: str, info) -> dict[str, list[str]]:
    """Each category of the model's vocabulary -> the others, nearest first, by cosine similarity
    of the model's learnt category embedding rows (its ``net.cond`` table for ``category``); ties
    by vocabulary order. Raises ConfigError (naming ``design.values``) for a family without such
    a table."""
    import torch

    from catalog_render.generators import registry

    fields = [f for f, _ in info.conditions]
    gen = registry.load_generator(model_uri)
    table = getattr(getattr(gen, "net", None), "cond", None)
    if table is None or "category" not in fields:
        raise ConfigError("design.values: category neighbours come from a gan or vae model's category embeddings; list the categories instead")
    w = table.tables[fields.index("category")].weight.detach().double()
    w = torch.nn.functional.normalize(w, dim=1)
    sim = (w @ w.T).numpy()
    names = list(dict(info.conditions)["category"])
    out = {}
    for i, name in enumerate(names):
        if name == UNKNOWN:
            continue
        order = sorted((j for j in range(len(names)) if j != i and names[j] != UNKNOWN), key=lambda j: (-sim[i, j], j))
        out[name] = [names[j] for j in order]
    return out


class DesignKind(PhotoKind):
    """``--kind design`` (see the module doc). Needs ``--model``."""

    name = "design"
    needs_model = True
    products: int = 0  # products given variations by the last plan()

    def preflight(self, spec: JobSpec) -> None:
        return None

    def describe_run(self) -> dict:
        return {"design": {"products": self.products}}

    def variations(self, spec: JobSpec, cond: Conditioning, seed: int, known: list[str], neighbours: dict | None) -> list[dict]:
        """The N variation dicts of one product (:mod:`catalog_render.kinds.design_sheet`)."""
        d = spec.design
        n = d.count
        if d.mode == "walk":
            end = walk_end_seed(seed)
            return [{"index": k, "mode": "walk", "t": round(d.walk_span * (k + 1) / n, 6), "end_seed": end} for k in range(n)]
        if d.values:
            values = list(d.values)
        else:
            own = cond.value(d.sweep_field)
            pool = neighbours.get(own, known) if neighbours is not None else known
            values = [v for v in pool if v != own][:n]
        return [{"index": k, "mode": "sweep", "field": d.sweep_field, "value": v} for k, v in enumerate(values)]

    def plan(self, catalog: pa.Table, spec: JobSpec, ctx: PlanContext) -> planning.Plan:
        info = ctx.info
        check_design(spec, info)
        d = spec.design
        known = vocabulary(info, d.sweep_field) if d.mode == "sweep" else []
        neighbours = category_neighbours(ctx.model_uri, info) if d.mode == "sweep" and d.sweep_field == "category" and not d.values else None
        params = generation_params(spec)
        used = {**info.params_used(params), "format": spec.generation.image_format}
        design = {"mode": d.mode, "count": d.count, "tile_px": d.tile_px}
        rows = catalog.to_pylist()
        quarantined, valid = self.screen(rows)
        work, up_to_date, in_scope, products = [], 0, 0, 0
        done = set()
        for i, r in valid:
            pid = r["product_id"]
            attrs = dict(r.get("attributes") or [])
            cond = Conditioning(title=r.get("title"), category=r.get("category"), attributes=attrs)
            problem = info.conditioning_problem(cond)
            if problem:
                quarantined.append((i, pid, problem))
                continue
            in_scope += 1
            seed = planning.product_seed(spec.generation.seed, pid)
            base = {"product": json.loads(cond.to_json()), "model_id": info.model_id, "params": used, "seed": seed}
            variations = self.variations(spec, cond, seed, known, neighbours)
            items = [({**base, "role": "variation", "variation": v}, self.variation_conditioning(cond, v)) for v in variations]
            items.append(({**base, "role": "sheet", "variations": variations, "design": design}, cond))
            todo = []
            for inputs, c in items:
                key = inputs_key(self.name, inputs)
                if not self.is_done(key, ctx, done):
                    todo.append(self.design_item(pid, key, inputs, c))
            up_to_date += not todo  # products, as in_scope counts them: every one of its N + 1 images is done
            if todo:
                products += 1
                work.extend(todo)
                if ctx.limit is not None and products >= ctx.limit:
                    break
        self.products = products
        return self.finish(work, quarantined, up_to_date, in_scope, rows)

    @staticmethod
    def variation_conditioning(cond: Conditioning, variation: dict) -> Conditioning:
        from catalog_render.kinds.design_sheet import conditioning_of

        return conditioning_of(cond, variation)

    def design_item(self, pid: str, key: str, inputs: dict, cond: Conditioning) -> dict:
        """One work item (kinds.base.PHOTO_WORK_SCHEMA); ``conditioning`` is the image's own."""
        doc = json.loads(cond.to_json())
        doc.pop("prompt", None)
        role = inputs["role"]
        reason = "design sheet" if role == "sheet" else f"design variation {inputs['variation']['index'] + 1}"
        return {"product_id": pid, "render_key": key, "seed": inputs["seed"], "prompt": None, "reference_uri": None,
                "conditioning": json.dumps(doc, sort_keys=True, ensure_ascii=False), "plan_reason": f"{reason}: render_key not in manifest",
                "kind": self.name, "inputs": json.dumps(inputs, sort_keys=True, ensure_ascii=False)}

    def worker(self, spec: JobSpec, ctx: WorkerContext) -> tuple[type, dict]:
        return DesignWorker, dict(spec=spec.model_dump(mode="json"), output_uri=ctx.output_uri, run_id=ctx.run_id, threads=ctx.threads,
                                  model_uri=ctx.model_uri, model_id=ctx.model_id, use_gpu=ctx.use_gpu)

    # ------------------------------------------------------------------------- in the actor

    def render(self, item: dict, state: dict) -> Rendered:
        """One variation image, or the product's design sheet (see the module doc)."""
        from catalog_render.kinds import design_sheet as ds
        from catalog_render.quality.provenance import ProvenanceMetadata

        gen, params = state["generator"], state["params"]
        inputs = json.loads(item["inputs"])
        p = inputs["product"]
        base = Conditioning(title=p.get("title"), category=p.get("category"), attributes=p.get("attributes") or {})
        seed = int(inputs["seed"])
        fields = {"model_id": gen.model_id, "family": gen.family, "seed": seed, "source_product_id": item["product_id"],
                  "generation_params": json.dumps({**inputs["params"], "design": inputs.get("variation") or inputs.get("design"), "product": p},
                                                sort_keys=True, ensure_ascii=False)}
        if inputs["role"] == "variation":
            v = inputs["variation"]
            image = ds.render_variations(gen, base, [v], seed, params)[0]
            fields["method"] = f"design-sweep {v['field']}={v['value']}" if v["mode"] == "sweep" else f"design-walk t={v['t']:.4g}"
            if v["mode"] == "sweep" and v["field"] in COLOUR_FIELDS:
                fields["target_colour"] = v["value"]
        else:
            vs = inputs["variations"]
            images = ds.render_variations(gen, base, [{"mode": "base"}, *vs], seed, params)
            how = (f"{vs[0]['field']} swept, latent held fixed" if vs and vs[0]["mode"] == "sweep"
                   else "latent walk (slerp), conditioning held fixed")
            subtitle = f"product {item['product_id']} · {p.get('category')} · {how} · model {gen.model_id[:8]}"
            image = ds.compose_sheet(images[0], images[1:], [ds.label(v) for v in vs], p.get("title") or item["product_id"], subtitle,
                                     inputs["design"]["tile_px"])
            fields["method"] = "design-sheet"
        meta = ProvenanceMetadata(model_id=gen.model_id, render_key=item["render_key"], family=gen.family, product_id=item["product_id"], seed=seed)
        return Rendered(image=image, provenance=meta, fields=fields, format=inputs["params"]["format"])


class DesignWorker(PhotoWorker):
    """Ray Data actor of ``--kind design``: loads the generator once (ModelError when its identity
    is not the one planned), then renders batches as :class:`PhotoWorker` does (one row per item,
    a failing item fails alone)."""

    def __init__(self, spec: dict, output_uri: str, run_id: str, threads: int, model_uri: str, model_id: str, use_gpu: bool):
        import os
        import socket

        import torch

        from catalog_render.generators import registry

        torch.set_num_threads(max(1, threads))
        self.kind = DesignKind()
        self.spec = JobSpec.model_validate(spec)
        self.output_uri, self.run_id = output_uri, run_id
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        gen = registry.load_generator(model_uri, device=device)
        if gen.model_id != model_id:
            raise ModelError(f"model {model_uri} changed since the run was planned (planned {model_id}, loaded {gen.model_id})")
        self.state = {"generator": gen, "params": generation_params(self.spec)}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
