"""``--kind design``: variations of a product by a trained generator (a sweep with the latent
fixed, a latent walk with the conditioning fixed), the design sheet, idempotency, and the export
of approved variations as proposed catalog rows. Real tiny GAN, real Ray, real Parquet."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from catalog_render import catalog, manifest, planning, storage
from catalog_render.config import JobSpec, load_job
from catalog_render.errors import ConfigError, FeedbackError
from catalog_render.generators import registry
from catalog_render.generators.base import Conditioning, GenerationParams
from catalog_render.kinds import design_sheet as ds
from catalog_render.kinds.base import PlanContext
from catalog_render.kinds.design import DesignKind, walk_end_seed


def design_spec(**design) -> JobSpec:
    return JobSpec.model_validate({**JobSpec().model_dump(), "kind": "design", "execution": {"workers": 1}, "design": design})


def plan(catalog_table, spec, model):
    ctx = PlanContext(output_uri="/nonexistent", past=manifest.manifest_schema().empty_table(), done_keys={}, existing_images=set(),
                      model_uri=str(model), info=registry.describe(str(model)))
    return DesignKind().plan(catalog_table, spec, ctx)


def px(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("toml, field", [
    ("[design]\nvariations = 0\n", "design.variations"),
    ("[design]\nvariations = 1000\n", "design.variations"),
    ("[design]\nsweep_field = \"colour\"\n", "design.sweep_field"),
    ("[design]\nvalues = [\"Red\", \"Red\"]\n", "design.values"),
    ("[design]\nmode = \"walk\"\nvalues = [\"Red\"]\n", "values"),
    ("[design]\nvariations = 3\nvalues = [\"Red\"]\n", "variations"),
    ("[design]\nwalk_span = 0\n", "design.walk_span"),
])
def test_bad_design_spec_fails_when_the_job_loads_naming_the_field(tmp_path, toml, field):
    path = tmp_path / "job.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_job(path)


def test_model_dependent_rules_fail_before_rendering_naming_the_field(tiny_gan, small_catalog):
    table = catalog.read_catalog(str(small_catalog))
    with pytest.raises(ConfigError, match=r"design\.values: 'Chartreuse' is not in the model's attributes\.color vocabulary \(known: "):
        plan(table, design_spec(values=["Blue", "Chartreuse"]), tiny_gan)
    with pytest.raises(ConfigError, match=r"design\.sweep_field: the model does not condition on 'attributes\.material'"):
        plan(table, design_spec(sweep_field="attributes.material", values=["Cotton"]), tiny_gan)
    genders = [v for f, vs in registry.describe(str(tiny_gan)).conditions if f == "attributes.gender" for v in vs if v != "<unk>"]
    with pytest.raises(ConfigError, match=rf"design\.variations: {len(genders)} asked, .* has {len(genders)} values"):
        plan(table, design_spec(sweep_field="attributes.gender", variations=len(genders)), tiny_gan)


def test_plan_gives_n_variations_and_a_sheet_per_product_each_with_its_own_key(tiny_gan, small_catalog):
    table = catalog.read_catalog(str(small_catalog)).slice(0, 4)
    p = plan(table, design_spec(values=["Black", "White", "Blue"]), tiny_gan)
    rows = p.work.to_pylist()
    assert len(rows) == 4 * (3 + 1) and p.in_scope == 4 and not p.quarantined
    assert len({r["render_key"] for r in rows}) == len(rows)
    first = [r for r in rows if r["product_id"] == table.column("product_id")[0].as_py()]
    colours = [json.loads(r["conditioning"])["attributes"]["color"] for r in first[:3]]
    assert colours == ["Black", "White", "Blue"]
    assert {r["seed"] for r in first} == {planning.product_seed(0, first[0]["product_id"])}  # the latent held fixed: the render kind's seed
    # auto values: the vocabulary in order, the product's own colour left out
    auto = plan(table.slice(0, 1), design_spec(variations=2), tiny_gan).work.to_pylist()
    vocab = [v for f, vs in registry.describe(str(tiny_gan)).conditions if f == "attributes.color" for v in vs if v != "<unk>"]
    own = dict(table.column("attributes")[0].as_py())["color"]
    assert [json.loads(r["conditioning"])["attributes"]["color"] for r in auto[:2]] == [v for v in vocab if v != own][:2]
    # a walk: t in equal steps up to walk_span, towards the far seed
    walk = plan(table.slice(0, 1), design_spec(mode="walk", variations=4, walk_span=0.8), tiny_gan).work.to_pylist()
    ts = [json.loads(r["inputs"])["variation"]["t"] for r in walk[:4]]
    assert ts == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert json.loads(walk[0]["inputs"])["variation"]["end_seed"] == walk_end_seed(walk[0]["seed"])


def test_slerp_is_the_great_circle_and_a_walk_starts_at_the_products_render(tiny_gan):
    h = math.sqrt(0.5)
    assert ds.slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5) == pytest.approx([h, h])
    assert ds.slerp(np.array([2.0, 0.0]), np.array([0.0, 2.0]), 1 / 3) == pytest.approx([2 * math.cos(math.pi / 6), 2 * math.sin(math.pi / 6)])
    gen = registry.load_generator(str(tiny_gan))
    cond = Conditioning(title="Blue shirt", category="Shirts", attributes={"color": "Blue", "gender": "Men"})
    p = GenerationParams()
    start, end, mid = ds.render_variations(gen, cond, [{"mode": "walk", "t": 0.0, "end_seed": 99}, {"mode": "walk", "t": 1.0, "end_seed": 99},
                                                       {"mode": "walk", "t": 0.5, "end_seed": 99}], 7, p)
    assert np.array_equal(px(start), px(gen.generate([cond], [7], p)[0]))  # t=0: the product's own render, bit for bit
    assert np.abs(px(end) - px(gen.generate([cond], [99], p)[0])).max() <= 1  # t=1: the far latent (slerp rounds in float64)
    assert np.abs(px(mid) - px(start)).max() > 0 and np.abs(px(mid) - px(end)).max() > 0
    red = ds.render_variations(gen, cond, [{"mode": "sweep", "field": "attributes.color", "value": "Red"}], 7, p)[0]
    assert np.array_equal(px(red), px(gen.generate([ds.with_value(cond, "attributes.color", "Red")], [7], p)[0]))


def test_design_run_writes_variations_and_sheets_is_idempotent_and_exports_approved_ones(ray_local, tiny_gan, small_catalog, tmp_path):
    from catalog_render import current, feedback
    from catalog_render.execution import run_job
    from catalog_render.kinds.design_export import export_approved
    from catalog_render.quality.provenance import read_provenance

    table = catalog.read_catalog(str(small_catalog)).slice(0, 2)
    uri, out = str(tmp_path / "cat.parquet"), str(tmp_path / "out")
    storage.write_parquet(table, uri)
    spec = design_spec(values=["Black", "White"])
    s = run_job(spec, uri, str(tiny_gan), out, num_cpus=2)
    assert s.counts == {"ok": 6, "failed": 0, "skipped": 0} and s.planned == 6
    m = manifest.read_manifest(out).to_pylist()
    assert {r["kind"] for r in m} == {"design"} and len({r["render_key"] for r in m}) == 6
    gen = registry.load_generator(str(tiny_gan))
    for r in m:
        data = storage.read_bytes(r["image_uri"])
        assert read_provenance(data)["RenderKey"] == r["render_key"] and r["render_seconds"] > 0
        cond = json.loads(r["conditioning"])
        if r["method"] == "design-sheet":
            sheet = Image.open(r["image_uri"])
            assert sheet.size == (16 + 3 * (192 + 16), 64 + 192 + 28 + 16 + 16)  # the product + 2 variations, 32x32 tiles at 192 px
            continue
        assert r["method"] == f"design-sweep attributes.color={cond['attributes']['color']}" and r["target_colour"] == cond["attributes"]["color"]
        expected = gen.generate([Conditioning(title=cond["title"], category=cond["category"], attributes=cond["attributes"])],
                                [planning.product_seed(0, r["product_id"])], GenerationParams())[0]
        assert np.array_equal(px(Image.open(r["image_uri"])), px(expected))
    assert pq.read_table(current.write_current_view(out)).num_rows == 0  # proposals are never a product's published image

    again = run_job(spec, uri, str(tiny_gan), out, num_cpus=2)
    assert again.planned == 0 and again.up_to_date == 2  # products

    with pytest.raises(FeedbackError, match="no approved design variation"):
        export_approved(out, str(tmp_path / "none.parquet"))
    assert not (tmp_path / "none.parquet").exists()
    white = next(r for r in m if r["method"] == "design-sweep attributes.color=White")
    sheet = next(r for r in m if r["method"] == "design-sheet")
    feedback.record_verdicts(out, [{**{k: r[k] for k in ("product_id", "render_key")}, "verdict": "approve", "reviewer": "ana", "comment": "go"}
                                   for r in (white, sheet)], source="test")
    res = export_approved(out, str(tmp_path / "proposals.parquet"))
    assert (res.rows, res.sheets_skipped) == (1, 1)
    proposed = catalog.read_catalog(str(tmp_path / "proposals.parquet"))
    assert catalog.validate(proposed) == []
    (row,) = proposed.to_pylist()
    src = next(r for r in table.to_pylist() if r["product_id"] == white["product_id"])
    attrs = dict(row["attributes"])
    assert row["product_id"] == f"{white['product_id']}-design-{white['render_key'][:10]}" and row["image_uri"] == white["image_uri"]
    assert attrs["color"] == "White" and attrs["design_source_product"] == white["product_id"] and attrs["design_approved_by"] == "ana"
    own = dict(src["attributes"])["color"]
    assert row["title"] == (src["title"].replace(own, "White") if own in src["title"] else f"{src['title']} (White)")
    assert row["category"] == src["category"] and row["description"].endswith("approved by ana: go")

    # a changed title re-renders exactly that product's variations and sheet (planned as run_job plans, from the output's manifest)
    changed = table.to_pylist()
    changed[0]["title"] = changed[0]["title"] + " v2"
    past = manifest.read_manifest(out)
    ctx = PlanContext(output_uri=out, past=past, done_keys=manifest.ok_render_keys(past), existing_images=set(storage.list_uris(storage.join(out, "images"))),
                      model_uri=str(tiny_gan), info=registry.describe(str(tiny_gan)))
    third = DesignKind().plan(pa.Table.from_pylist(changed, schema=table.schema), spec, ctx)
    assert third.work.num_rows == 3 and third.up_to_date == 1 and set(third.work.column("product_id").to_pylist()) == {changed[0]["product_id"]}


def test_category_neighbours_are_the_nearest_learnt_embeddings(tiny_gan, small_catalog):
    from safetensors.numpy import load_file

    from catalog_render.kinds.design import category_neighbours

    info = registry.describe(str(tiny_gan))
    names = list(dict(info.conditions)["category"])
    w = load_file(str(tiny_gan / "model.safetensors"))["cond.tables.0.weight"].astype(np.float64)  # category is the first condition
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    table = catalog.read_catalog(str(small_catalog)).slice(0, 1)
    own = table.column("category")[0].as_py()
    i = names.index(own)
    expected = [names[j] for j in sorted((j for j in range(1, len(names)) if j != i), key=lambda j: (-float(w[i] @ w[j]), j))]
    assert category_neighbours(str(tiny_gan), info)[own] == expected
    work = plan(table, design_spec(sweep_field="category", variations=2), tiny_gan).work.to_pylist()
    assert [json.loads(r["conditioning"])["category"] for r in work[:2]] == expected[:2]


def test_design_export_without_approvals_exits_2_naming_what_to_do(tmp_path):
    from typer.testing import CliRunner

    from catalog_render.cli import app

    result = CliRunner().invoke(app, ["design", "export", "--output", str(tmp_path / "out"), "--out", str(tmp_path / "p.parquet")])
    assert result.exit_code == 2 and "no approved design variation" in result.output and "approve variations" in result.output
    assert not (tmp_path / "p.parquet").exists()
