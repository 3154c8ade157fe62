"""`catalog-render evaluate` end to end on real photos (small_catalog) and a tiny trained GAN."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from catalog_render import catalog, evaluation, storage
from catalog_render.cli import app
from catalog_render.config import EvaluateSpec
from catalog_render.errors import CatalogError, ConfigError, ModelError
from catalog_render.quality import category_judge
from catalog_render.training.data import load_image_set

#: 0.4 holds out 26 of the 60 products; the 34 left train a judge on two categories
#: (Tshirts, Casual Shoes: the only ones with >= 3 photos there).
SPEC = EvaluateSpec(holdout=0.4, judge_min_photos=3, seed=0)
SECTIONS = ("model", "catalog", "leakage", "rendered", "not_rendered", "reference_metrics", "render_vs_photo", "category_fidelity",
            "colour_fidelity", "frechet_distance", "resolution", "timing", "warnings", "units", "products")


@pytest.fixture(scope="module")
def evaluated(small_catalog, tiny_gan, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    messages = []
    result = evaluation.evaluate(str(tiny_gan), str(small_catalog), str(out), SPEC, progress=messages.append)
    return result, out, messages


def test_json_and_html_have_every_section(evaluated, small_catalog, tiny_gan):
    result, out, messages = evaluated
    on_disk = json.loads((out / "evaluation.json").read_text())
    assert on_disk == result
    assert set(SECTIONS) <= set(result)
    table = catalog.read_catalog(str(small_catalog))
    _, held = catalog.split_holdout(table, 0.4, 0)
    assert result["catalog"]["held_out"] == held.num_rows == 26
    assert result["catalog"]["evaluated"] == 26 and result["rendered"] + result["not_rendered"]["count"] == 26
    assert result["model"]["family"] == "gan" and (result["model"]["width"], result["model"]["height"]) == (32, 32)
    assert result["timing"]["sampling_seconds_per_image"] > 0
    card = json.loads((tiny_gan / "model_card.json").read_text())
    assert result["timing"]["training_steps"] == card["steps"] == 6 and result["timing"]["training_wall_seconds"] is not None
    assert {p["product_id"] for p in result["products"]} <= set(held.column("product_id").to_pylist())
    page = (out / "evaluation.html").read_text()
    assert "Fréchet distance: real vs real (floor)" in page and page.count("data:image/png;base64,") == 2 * 24
    assert any("judge saved" in m for m in messages)


def test_gan_has_no_reconstruction_metrics_but_render_vs_photo_lpips_and_dists(evaluated):
    result, _, _ = evaluated
    ref = result["reference_metrics"]
    assert ref["applicable"] is False
    assert ref["reason"] == "not applicable: gan renders have no per-product reference (they are sampled from noise, not reconstructed)"
    assert ref["lpips"] == ref["dists"] == {"computed": False, "skipped_reason": "not applicable (no reconstructions)"}
    for name in ("lpips", "dists"):
        m = result["render_vs_photo"][name]
        # a 2-step GAN's renders are nothing like the photos: far from 0 on both
        assert m["computed"] is True and m["n"] == result["rendered"] and 0.1 < m["median"] < 1, m
    psnr = result["render_vs_photo"]["psnr_db"]
    assert psnr["n"] == result["rendered"] and 0 < psnr["median"] < 30
    assert "NOT a reconstruction metric" in result["render_vs_photo"]["what"]


def test_judge_real_photo_accuracy_matches_an_independent_count(evaluated, small_catalog):
    result, out, _ = evaluated
    judge = category_judge.load(str(out / "judge"))
    cat = result["category_fidelity"]
    assert cat["judge"]["classes"] == judge.classes == ["Tshirts", "Casual Shoes"]
    # the judge never saw a held-out photo: its class counts are those of the training split
    train, held = catalog.split_holdout(catalog.read_catalog(str(small_catalog)), 0.4, 0)
    counts = Counter(train.column("category").to_pylist())
    assert cat["judge"]["class_counts"] == {c: counts[c] for c in judge.classes}
    # independent count: reload the held-out photos, predict, compare with the category
    data = load_image_set(held, 32, 32)
    pred = judge.predict(data.images).tolist()
    pairs = [(p, judge.classes.index(c.category)) for p, c in zip(pred, data.conditionings) if c.category in judge.classes]
    assert len(pairs) == cat["products_real_all_held_out"] == cat["products"] > 0
    assert cat["accuracy_real"] == pytest.approx(sum(p == y for p, y in pairs) / len(pairs))
    # per-product records agree with the summary
    rows = [p for p in result["products"] if p["judge_label"] is not None and p["rendered"]]
    assert cat["accuracy_render"] == pytest.approx(sum(p["judge_render"] == p["judge_label"] for p in rows) / len(rows))


def test_leakage_is_reported_when_evaluating_on_the_training_catalog(evaluated):
    result, _, _ = evaluated
    leak = result["leakage"]
    assert leak["checked"] and leak["held_out_in_training"] == leak["held_out"] == 26  # tiny_gan trained on all 60
    assert any(w.startswith("LEAKAGE: 26 of 26") for w in result["warnings"])


def test_no_leakage_when_the_model_was_trained_on_the_train_split(small_catalog, tiny_gan, tmp_path):
    train, _ = catalog.split_holdout(catalog.read_catalog(str(small_catalog)), 0.4, 0)
    storage.write_parquet(train, str(tmp_path / "train.parquet"))
    model = shutil.copytree(tiny_gan, tmp_path / "model")
    card = json.loads((model / "model_card.json").read_text())
    card["training_catalog"]["uri"] = str(tmp_path / "train.parquet")
    (model / "model_card.json").write_text(json.dumps(card))
    result = evaluation.evaluate(str(model), str(small_catalog), str(tmp_path / "out"), SPEC.model_copy(update={"max_products": 6}))
    assert result["leakage"]["held_out_in_training"] == 0 and result["warnings"] == []
    assert result["catalog"]["evaluated"] == 6


def test_frechet_floor_is_below_renders_of_a_barely_trained_model(evaluated):
    fd = evaluated[0]["frechet_distance"]
    assert fd["computed"] and fd["products_per_half"] == [13, 13]
    # a 2-step GAN renders blobs; real vs real of the same set sizes is far closer
    assert 0 < fd["real_vs_real_floor"] < fd["render_vs_real"] / 3
    assert fd["render_vs_real_all"] > fd["real_vs_real_floor"]


def test_colour_fidelity_counts_against_the_real_photo_ceiling(evaluated):
    col = evaluated[0]["colour_fidelity"]
    products = evaluated[0]["products"]
    assert col["field"] == "attributes.color"
    judged = [p for p in products if p["colour_match_real"] is not None]
    assert len(judged) == col["products_judged"] > 10
    assert col["match_share_real"] == pytest.approx(sum(p["colour_match_real"] for p in judged) / len(judged))
    assert col["match_share_render"] == pytest.approx(sum(bool(p["colour_match_render"]) for p in judged) / len(judged))
    assert col["match_share_real"] > col["match_share_render"]


def test_judge_is_reused_and_refused_for_another_split(evaluated, small_catalog, tiny_gan, tmp_path):
    _, out, _ = evaluated
    before = (out / "judge" / category_judge.WEIGHTS).read_bytes()
    messages = []
    again = evaluation.evaluate(str(tiny_gan), str(small_catalog), str(tmp_path / "o1"), SPEC, judge_uri=str(out / "judge"), progress=messages.append)
    assert again["category_fidelity"]["judge"]["trained_now"] is False and any("judge loaded" in m for m in messages)
    assert (out / "judge" / category_judge.WEIGHTS).read_bytes() == before
    assert again["category_fidelity"]["accuracy_real"] == evaluated[0]["category_fidelity"]["accuracy_real"]
    with pytest.raises(ConfigError, match="another catalog, split or size"):
        evaluation.evaluate(str(tiny_gan), str(small_catalog), str(tmp_path / "o2"), SPEC.model_copy(update={"holdout": 0.3}), judge_uri=str(out / "judge"))


def test_judge_training_is_deterministic(small_catalog):
    train, _ = catalog.split_holdout(catalog.read_catalog(str(small_catalog)), 0.4, 0)
    data = load_image_set(train, 32, 32)
    cats, ids = [c.category for c in data.conditionings], data.product_ids
    a = category_judge.train_judge(data.images, cats, ids, min_photos=3, seed=1)
    b = category_judge.train_judge(data.images, cats, ids, min_photos=3, seed=1)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) and a.threshold == b.threshold
    feats = a.features(data.images)
    # AlexNet relu4 + relu5, globally average pooled
    assert feats.shape == (len(data.images), 512) and feats.dtype == torch.float32


def test_resolution_measure_of_renders_vs_their_photos(evaluated, small_catalog):
    from PIL import Image

    from catalog_render.quality import metrics

    res = evaluated[0]["resolution"]
    assert res["products"] == evaluated[0]["rendered"]
    # a 32x32 render holds no detail finer than 64 px: near 0 next to the real photos at their own size
    assert res["render"]["median"] < 0.1 * res["real_photo"]["median"] and res["ratio_render_to_photo_median"] < 0.1
    # independently, per product: the photo file at its own size (> 0), and the summary of those values
    uris = dict(zip(*(catalog.read_catalog(str(small_catalog)).column(c).to_pylist() for c in ("product_id", "image_uri"))))
    rendered = [p for p in evaluated[0]["products"] if p["rendered"]]
    for p in rendered[:3]:
        assert p["resolution_real"] == pytest.approx(metrics.resolution_energy(Image.open(uris[p["product_id"]]).convert("RGB")), rel=1e-9)
        assert p["resolution_real"] > 0
    assert res["real_photo"]["median"] == pytest.approx(float(np.median([p["resolution_real"] for p in rendered])))


def test_bad_inputs_are_domain_errors(small_catalog, tiny_gan, tmp_path):
    with pytest.raises(ModelError):
        evaluation.evaluate(str(tmp_path / "nope"), str(small_catalog), str(tmp_path / "o"), SPEC)
    table = catalog.read_catalog(str(small_catalog))
    storage.write_parquet(table.drop_columns(["category"]), str(tmp_path / "nocol.parquet"))
    with pytest.raises(CatalogError, match="category: required column is missing"):
        evaluation.evaluate(str(tiny_gan), str(tmp_path / "nocol.parquet"), str(tmp_path / "o"), SPEC)
    empty = table.set_column(table.schema.get_field_index("category"), "category", pa.nulls(table.num_rows, pa.string()))
    storage.write_parquet(empty, str(tmp_path / "nocat.parquet"))
    with pytest.raises(CatalogError, match="no category values"):
        evaluation.evaluate(str(tiny_gan), str(tmp_path / "nocat.parquet"), str(tmp_path / "o"), SPEC)
    assert not (tmp_path / "o").exists()


def test_cli_evaluate(small_catalog, tiny_gan, tmp_path):
    runner = CliRunner()
    job = tmp_path / "job.toml"
    job.write_text("[evaluate]\njudge_min_photos = 3\n")
    args = ["evaluate", "--model", str(tiny_gan), "--catalog", str(small_catalog), "--out", str(tmp_path / "out"),
            "--holdout", "0.4", "--max-products", "8", "--job", str(job)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "category accuracy: renders" in res.output and "LEAKAGE" in res.output
    written = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert written["catalog"]["evaluated"] == 8 and written["category_fidelity"]["judge"]["min_photos"] == 3
    bad = runner.invoke(app, args[:-6] + ["--holdout", "1.5"])
    assert bad.exit_code == 3 and "evaluate.holdout" in bad.output
    missing = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "none"), "--catalog", str(small_catalog), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 6
    nocat = runner.invoke(app, ["evaluate", "--model", str(tiny_gan), "--catalog", str(tmp_path / "absent.parquet"), "--out", str(tmp_path / "o")])
    assert nocat.exit_code == 4


def test_reconstructing_families_get_psnr_and_ssim_of_their_reconstructions(evaluated, small_catalog, tiny_gan, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from catalog_render.generators import registry

    class Reconstructs:
        """The tiny GAN plus a reconstruct() that changes every value by exactly 8 (x XOR 8: known MSE = 64)."""

        def __init__(self, gen):
            self.gen = gen
            self.family, self.model_id = "vae-like", gen.model_id

        def __getattr__(self, name):
            return getattr(self.gen, name)

        def reconstruct(self, images):
            return [Image.fromarray((np.asarray(im) ^ 8).astype(np.uint8)) for im in images]

    real_load = registry.load_generator
    monkeypatch.setattr(registry, "load_generator", lambda uri, **kw: Reconstructs(real_load(uri, **kw)))
    _, out, _ = evaluated
    result = evaluation.evaluate(str(tiny_gan), str(small_catalog), str(tmp_path / "out"), SPEC.model_copy(update={"max_products": 5}),
                                 judge_uri=str(out / "judge"))
    ref = result["reference_metrics"]
    assert ref["applicable"] is True and ref["pairs"] == 5
    # x XOR 8 changes every value by exactly 8: PSNR = 10 log10(255^2 / 64) for every image
    assert ref["psnr_db"]["median"] == pytest.approx(10 * np.log10(255**2 / 64), abs=1e-9)
    assert ref["psnr_db"]["n"] == 5 and 0.5 < ref["ssim"]["median"] < 1
    # x XOR 8 is a faint change: LPIPS and DISTS near 0, far below the GAN renders' distances
    assert ref["lpips"]["computed"] and ref["lpips"]["n"] == 5 and ref["lpips"]["median"] < 0.1
    assert ref["dists"]["computed"] and ref["dists"]["median"] < 0.1


def test_a_real_vae_is_scored_on_its_conditioned_reconstructions(evaluated, small_catalog, tmp_path):
    import numpy as np

    from catalog_render.config import TrainSpec, VaeSpec
    from catalog_render.generators import registry
    from catalog_render.training.loop import train

    table = catalog.read_catalog(str(small_catalog))
    spec = TrainSpec(family="vae", height=32, width=32, embed_dim=4, batch_size=8, max_steps=3, min_count=1, threads=1,
                     vae=VaeSpec(latent_dim=16, base_channels=8), sample_every=10**6, checkpoint_every=10**6)
    model = tmp_path / "vae"
    train(load_image_set(table, 32, 32), spec, str(model), str(small_catalog), "sha")
    _, out, _ = evaluated
    result = evaluation.evaluate(str(model), str(small_catalog), str(tmp_path / "out"), SPEC.model_copy(update={"max_products": 8}),
                                 judge_uri=str(out / "judge"))
    ref = result["reference_metrics"]
    assert result["model"]["family"] == "vae" and ref["applicable"] and ref["pairs"] == 8
    assert "conditioned on the catalog fields" in ref["what"]
    assert result["timing"]["training_cpu_seconds"] is not None and result["timing"]["training_steps"] == 3
    # independently: reconstruct the same photos with the same conditionings, PSNR by the formula
    ids = [p["product_id"] for p in result["products"]]
    _, held = catalog.split_holdout(table, 0.4, 0)
    data = load_image_set(held, 32, 32)
    order = [data.product_ids.index(i) for i in ids]
    gen = registry.load_generator(str(model))
    photos = [data.images[i].permute(1, 2, 0).numpy() for i in order]
    from PIL import Image

    recon = gen.reconstruct([Image.fromarray(p) for p in photos], conditionings=[data.conditionings[i] for i in order])
    mse = [np.mean((p.astype(float) - np.asarray(r, dtype=float)) ** 2) for p, r in zip(photos, recon)]
    assert ref["psnr_db"]["mean"] == pytest.approx(float(np.mean([10 * np.log10(255**2 / m) for m in mse])), rel=1e-9)
    # LPIPS/DISTS of those same pairs (the metrics themselves are checked against published values in test_pretrained)
    from catalog_render.quality import metrics

    arrays = [np.asarray(r.convert("RGB")) for r in recon]
    assert ref["lpips"]["mean"] == pytest.approx(float(np.mean(metrics.lpips(photos, arrays))), rel=1e-5)
    assert ref["dists"]["mean"] == pytest.approx(float(np.mean(metrics.dists(photos, arrays))), rel=1e-5)
