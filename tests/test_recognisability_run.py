"""Recognisability in real runs (local Ray, a tiny GAN, real catalog rows): a model with a category
judge in MODEL/judge/ gets the column, and noise renders fail the gate by default, are retried and
never published; a model without a judge runs with a one-line note."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from catalog_render import imaging, manifest, storage
from catalog_render.config import JobSpec
from catalog_render.execution import _keyed_params, generation_params, run_job, try_seed
from catalog_render.generators import registry
from catalog_render.quality import category_judge, gate
from catalog_render.training.judge import add_judge

CR = str(Path(sys.executable).parent / "catalog-render")
BASE = {"execution.workers": 1, "execution.batch_size": 4, "generation.seed": 3}


@pytest.fixture(scope="module")
def noise_gan(tiny_gan, small_catalog, tmp_path_factory):
    """The tiny GAN with its output layer's weights x 40: tanh saturates, every render is
    high-contrast colour noise (the "noise renders" of an untrained model); with a judge trained
    on the catalog's photos (categories with >= 3 photos: Tshirts, Sports Shoes, Casual Shoes, Backpacks)."""
    from safetensors.torch import load_file, save_file

    model = tmp_path_factory.mktemp("models") / "noise-gan"
    shutil.copytree(tiny_gan, model)
    state = load_file(model / "model.safetensors")
    state["out.weight"] = state["out.weight"] * 40
    save_file(state, model / "model.safetensors")
    judge = add_judge(str(model), str(small_catalog), min_photos=3)
    assert judge.classes == ["Tshirts", "Sports Shoes", "Casual Shoes", "Backpacks"]
    return model


def test_noise_renders_fail_recognisability_by_default_are_retried_and_never_current(ray_local, small_catalog, noise_gan, tmp_path):
    judge = category_judge.load(str(noise_gan / "judge"))
    spec = JobSpec().with_overrides(**BASE)
    out = str(tmp_path / "out")
    s = run_job(spec, str(small_catalog), str(noise_gan), out, hide_images=True, limit=6)
    assert s.counts["ok"] == 6 and s.notes == []
    record = manifest.read_run_records(out)[-1]
    assert record["recognisability"]["active"] and record["recognisability"]["threshold"] == pytest.approx(judge.threshold)
    rows = manifest.read_manifest(out).to_pylist()
    scored = [r for r in rows if r["recognisability"] is not None]
    assert len(scored) == 6  # every render is scored: by the category check, or by the product check for other categories
    checks = set()
    for r in rows:
        assert r["judge_id"] == judge.judge_id
        category = json.loads(r["conditioning"])["category"]
        history = json.loads(r["try_history"])
        # independently: the judge's probabilities on the kept image as written
        kept = imaging.to_array(imaging.decode_rgb(storage.read_bytes(r["image_uri"])))
        p = judge.probabilities(torch.from_numpy(kept).permute(2, 0, 1)[None].contiguous())[0].tolist()
        if category in judge.classes:  # the category check: P(category) against the calibrated threshold or P(not a product photo)
            checks.add("category")
            assert r["recognisability"] == pytest.approx(p[judge.classes.index(category)], abs=1e-5)
            assert r["recognisability_threshold"] == pytest.approx(max(judge.threshold, p[-1]), abs=1e-5)
            assert r["recognisability_note"].startswith("category check")
        else:  # a category the judge does not know: the product check, 1 - P(not a product photo) against the product threshold
            checks.add("product")
            assert r["recognisability"] == pytest.approx(1 - p[-1], abs=1e-5)
            assert r["recognisability_threshold"] == pytest.approx(judge.product_threshold)
            assert r["recognisability_note"].startswith("product check") and "not one of the judge's 4 classes" in r["recognisability_note"]
        assert r["recognisability"] < r["recognisability_threshold"]
        # failed, retried with the next seeds up to BLANK_MAX_TRIES (max_tries is 1), every try below its threshold
        assert r["quality_status"] == "failed-quality" and "recognisability" in json.loads(r["quality_failed"])
        assert r["tries"] == len(history) == gate.BLANK_MAX_TRIES
        assert [h["seed"] for h in history] == [try_seed(history[0]["seed"], t) for t in range(gate.BLANK_MAX_TRIES)]
        assert all("recognisability" in h["failed_checks"] for h in history)
        assert r["recognisability"] == max(h["recognisability"] for h in history)  # the most recognisable try is kept
    assert checks == {"category", "product"}
    # the report says it in one paragraph
    from catalog_render.report import write_report

    page = Path(write_report(out)).read_text(encoding="utf-8")
    product = sum(json.loads(r["conditioning"])["category"] not in judge.classes for r in rows)
    assert (f"{len(scored)} kept renders scored, {len(scored)} below the threshold {judge.threshold:.3g}" in page
            and f"{len(scored) - product} by the category check, {product} by the product check" in page)
    # none of the failed renders is published
    current = {c["product_id"] for c in storage.read_parquet(f"{out}/current.parquet").to_pylist()}
    assert not current & {r["product_id"] for r in scored}
    # the judge decides which try is kept: it is part of the render_key, so adding one re-renders
    info = registry.describe(str(noise_gan))
    key = _keyed_params(info, generation_params(spec), spec, {"judge": judge.judge_id, "min_recognisability": judge.threshold})
    assert key["recognisability"]["judge"] == judge.judge_id and "quality" not in key
    assert "recognisability" not in _keyed_params(info, generation_params(spec), spec)
    # switching the check or the product colour off keys nothing else (the judge's own key above is what changes)
    off = JobSpec().with_overrides(**BASE, **{"quality.min_recognisability": False, "quality.product_colour": False})
    assert _keyed_params(info, generation_params(off), off) == _keyed_params(info, generation_params(spec), spec)


def test_recognisability_can_be_set_or_switched_off(ray_local, small_catalog, noise_gan, tmp_path):
    off = JobSpec().with_overrides(**BASE, **{"quality.min_recognisability": False})
    out = str(tmp_path / "off")
    run_job(off, str(small_catalog), str(noise_gan), out, hide_images=True, limit=2)
    rows = manifest.read_manifest(out).to_pylist()
    assert all(r["recognisability"] is None and r["judge_id"] is None and r["quality_status"] == "passed" for r in rows)
    zero = JobSpec().with_overrides(**BASE, **{"quality.min_recognisability": 0.0})
    out = str(tmp_path / "zero")
    run_job(zero, str(small_catalog), str(noise_gan), out, hide_images=True, limit=2)
    rows = manifest.read_manifest(out).to_pylist()
    assert all(r["recognisability_threshold"] == 0.0 and r["quality_status"] == "passed" for r in rows)
    # the kept render's colour on its U²-Net-p product region (quality.product_colour, on by default), computed again here
    from catalog_render.pretrained.mask import ProductMasker
    from catalog_render.quality import checks

    masker = ProductMasker()
    for r in rows:
        kept = imaging.to_array(imaging.decode_rgb(storage.read_bytes(r["image_uri"])))
        match = checks.colour_match(kept, json.loads(r["conditioning"])["attributes"].get("color"), mask=masker.mask(kept) >= 0.5)
        assert r["product_colour_delta_e"] == (None if match is None else pytest.approx(match.delta_e))
        assert r["product_colour_match"] == (None if match is None else match.match)


def test_a_model_without_a_judge_runs_with_a_one_line_note(small_catalog, tiny_gan, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text("[execution]\nworkers = 1\nbatch_size = 4\n", encoding="utf-8")
    out = tmp_path / "out"
    p = subprocess.run([CR, "run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(out), "--job", str(job),
                        "--hide-images", "--limit", "2", "--no-report"], capture_output=True, text=True, timeout=600, env=os.environ)
    assert p.returncode == 0, p.stderr[-2000:]
    notes = [line for line in p.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "has no category judge" in notes[0] and "the recognisability check is skipped" in notes[0]
    assert f"catalog-render judge --model {tiny_gan}" in notes[0]
    rows = manifest.read_manifest(str(out)).to_pylist()
    assert len(rows) == 2 and all(r["recognisability"] is None and r["status"] == "ok" for r in rows)
    # a threshold given without a judge is a bad job spec naming the field (exit 3)
    job.write_text("[quality]\nmin_recognisability = 0.2\n", encoding="utf-8")
    p = subprocess.run([CR, "run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(tmp_path / "o2"), "--job", str(job),
                        "--limit", "1"], capture_output=True, text=True, timeout=600, env=os.environ)
    assert p.returncode == 3 and "quality.min_recognisability = 0.2 needs a category judge" in p.stderr


def test_judge_command_adds_a_judge_to_a_model(small_catalog, tiny_gan, tmp_path):
    from typer.testing import CliRunner

    from catalog_render.cli import app

    model = shutil.copytree(tiny_gan, tmp_path / "model")
    res = CliRunner().invoke(app, ["judge", "--model", str(model), "--catalog", str(small_catalog)])
    # 60 products: only Tshirts has >= 10 photos, so no judge can be trained at the default; the error names why
    assert res.exit_code == 4 and "at least 2 categories with >= 10 photos, found 1" in res.output
    assert not (model / "judge").exists()
    res = CliRunner().invoke(app, ["judge", "--model", str(model), "--catalog", str(small_catalog), "--min-photos", "3"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("category judge: 4 categories (45 photos;") and "gate threshold" in res.output
    judge = category_judge.load(str(model / "judge"))
    assert judge.info["model_id"] == registry.describe(str(model)).model_id and judge.letterbox == (32, 32)
