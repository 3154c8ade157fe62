"""The diffusion family: tiny UNets trained a few steps on real photos (pixel and latent space),
saved, reloaded, rendered deterministically; resume, freeze="lower" and LoRA fine-tunes."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from catalog_render import catalog
from catalog_render.config import DiffusionSpec, TrainSpec
from catalog_render.errors import ConfigError, ModelError
from catalog_render.generators import diffusion, registry
from catalog_render.generators.base import Conditioning, GenerationParams
from catalog_render.training.data import load_image_set
from catalog_render.training.loop import train

SHIRT = Conditioning(title="Blue shirt", category="Tshirts", attributes={"color": "Blue", "gender": "Men"})
SHOE = Conditioning(title="Shoe", category="Sports Shoes", attributes={"color": "White", "gender": "Women"})
NEW = "Capes"  # a category no fixture photo has: the LoRA fine-tune relabels photos with it
CAPE = Conditioning(title="Red cape", category=NEW, attributes={"color": "Red", "gender": "Men"})
P = GenerationParams(num_inference_steps=8, guidance_scale=3.0)


def px(im):
    return np.asarray(im, dtype=np.int16)


def spec(space="pixel", **kw):
    d = DiffusionSpec(space=space, block_out_channels=(16, 32), autoencoder_channels=(16, 32), latent_channels=4)
    base = dict(family="diffusion", height=32, width=32, batch_size=8, max_steps=4, min_count=1, embed_dim=8, threads=1,
                checkpoint_every=2, diffusion=d)
    return TrainSpec(**{**base, **kw})


@pytest.fixture(scope="module")
def data(small_catalog):
    return load_image_set(catalog.read_catalog(str(small_catalog)), 32, 32)


def _train(data, s, out, small_catalog, **kw):
    torch.set_num_threads(1)
    return train(data, s, str(out), str(small_catalog), "sha", **kw)


@pytest.fixture(scope="module")
def pixel_model(data, small_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("diff") / "pixel"
    _train(data, spec(), out, small_catalog)
    return out


@pytest.fixture(scope="module")
def latent_model(data, small_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("diff") / "latent"
    _train(data, spec("latent"), out, small_catalog)
    return out


def _unet(d):
    return load_file(d / diffusion.UNET_WEIGHTS)


def test_pixel_model_directory_card_and_identity(pixel_model):
    files = {p.relative_to(pixel_model).as_posix() for p in pixel_model.rglob("*") if p.is_file()}
    assert {"config.json", "model_card.json", "condition_encoder.safetensors", "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"} <= files
    assert not any(f.startswith("vae/") for f in files)
    card = json.loads((pixel_model / "model_card.json").read_text())
    cfg = json.loads((pixel_model / "config.json").read_text())
    assert cfg["family"] == "diffusion" and cfg["space"] == "pixel" and cfg["scaling_factor"] == 1.0
    assert card["steps"] == 4 and "Ho et al. 2020" in card["architecture"] and card["parameters"]["unet"] > 10_000
    info = registry.describe(str(pixel_model))
    assert info.family == "diffusion" and info.model_id == card["model_id"] and (info.width, info.height) == (32, 32)
    assert info.params_fields == ("num_inference_steps", "guidance_scale", "scheduler")
    unet_cfg = json.loads((pixel_model / "unet/config.json").read_text())
    # attention only at the lowest level (attention_levels=1) and in the middle block
    assert unet_cfg["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D"]
    assert unet_cfg["up_block_types"] == ["AttnUpBlock2D", "UpBlock2D"]
    assert unet_cfg["class_embed_type"] == "identity"


def test_generation_is_deterministic_and_batch_independent(pixel_model):
    m = registry.load_generator(str(pixel_model))
    assert m.family == "diffusion" and m.model_id == registry.describe(str(pixel_model)).model_id
    a = m.generate([SHIRT, SHOE, SHIRT], [1, 2, 3], P)
    assert [im.size for im in a] == [(32, 32)] * 3 and all(im.mode == "RGB" for im in a)
    again = registry.load_generator(str(pixel_model)).generate([SHOE], [2], P)[0]
    assert np.array_equal(px(a[1]), px(again))  # fresh load, batch of 1 vs 3: same pixels
    assert np.abs(px(a[0]) - px(a[2])).max() > 0  # another seed, another image
    assert px(a[0]).std() > 1  # not a flat image


def test_schedulers_steps_and_guidance_change_the_output(pixel_model):
    m = registry.load_generator(str(pixel_model))
    ddim = px(m.generate([SHIRT], [5], P)[0])
    dpm = px(m.generate([SHIRT], [5], dataclasses.replace(P, scheduler="DPMSolverMultistepScheduler"))[0])
    named = px(m.generate([SHIRT], [5], dataclasses.replace(P, scheduler="DDIMScheduler"))[0])
    fewer = px(m.generate([SHIRT], [5], dataclasses.replace(P, num_inference_steps=3))[0])
    no_cfg = px(m.generate([SHIRT], [5], dataclasses.replace(P, guidance_scale=1.0))[0])
    assert np.array_equal(ddim, named)  # DDIM is the default
    assert np.abs(ddim - dpm).max() > 0 and np.abs(ddim - fewer).max() > 0 and np.abs(ddim - no_cfg).max() > 0
    dpm_again = px(m.generate([SHOE, SHIRT], [9, 5], dataclasses.replace(P, scheduler="DPMSolverMultistepScheduler"))[1])
    assert np.array_equal(dpm, dpm_again)
    with pytest.raises(ConfigError, match="generation.scheduler"):
        m.generate([SHIRT], [5], dataclasses.replace(P, scheduler="EulerDiscreteScheduler"))
    assert m.params_used(P) == {"width": 32, "height": 32, "num_inference_steps": 8, "guidance_scale": 3.0, "scheduler": None}
    assert m.generate([SHIRT], [5], dataclasses.replace(P, width=48, height=64))[0].size == (48, 64)


def test_latent_model_trains_autoencoder_then_unet_and_renders(latent_model):
    cfg = json.loads((latent_model / "config.json").read_text())
    assert cfg["space"] == "latent" and cfg["autoencoder_steps"] == 1
    assert 0 < cfg["scaling_factor"] < 1e3 and cfg["scaling_factor"] != 1.0
    card = json.loads((latent_model / "model_card.json").read_text())
    assert card["latent"]["shape"] == [4, 16, 16] and card["parameters"]["autoencoder"] > 1000
    assert (latent_model / "vae/diffusion_pytorch_model.safetensors").is_file()
    assert registry.describe(str(latent_model)).model_id == card["model_id"]
    m = registry.load_generator(str(latent_model))
    a = m.generate([SHIRT, SHOE], [1, 2], P)
    b = registry.load_generator(str(latent_model)).generate([SHOE], [2], P)[0]
    assert np.array_equal(px(a[1]), px(b)) and a[0].size == (32, 32)


def test_mismatched_weights_and_changed_files(pixel_model, tmp_path):
    copy = shutil.copytree(pixel_model, tmp_path / "copy")
    state = _unet(copy)
    state["conv_out.bias"] = state["conv_out.bias"] + 0.1
    save_file(state, copy / diffusion.UNET_WEIGHTS)
    assert registry.describe(str(copy)).model_id != registry.describe(str(pixel_model)).model_id
    del state["conv_out.bias"]
    save_file(state, copy / diffusion.UNET_WEIGHTS)
    with pytest.raises(ModelError, match="does not match"):
        registry.describe(str(copy))


def test_resume_continues_exactly(latent_model, data, small_catalog, tmp_path):
    """Latent space: the phase boundary (step 1) and scaling factor survive the resume."""
    out = tmp_path / "resumed"
    _train(data, spec("latent", max_steps=2), out, small_catalog)
    _train(data, spec("latent", max_steps=4), out, small_catalog, resume=True)
    assert (out / diffusion.UNET_WEIGHTS).read_bytes() == (latent_model / diffusion.UNET_WEIGHTS).read_bytes()
    assert (out / diffusion.VAE_WEIGHTS).read_bytes() == (latent_model / diffusion.VAE_WEIGHTS).read_bytes()
    assert json.loads((out / "config.json").read_text()) == json.loads((latent_model / "config.json").read_text())


def test_freeze_lower_keeps_encoder_side(pixel_model, data, small_catalog, tmp_path):
    out = tmp_path / "ft"
    res = _train(data, spec(max_steps=2, lr=1e-3), out, small_catalog, base=registry.base_model(str(pixel_model)), freeze="lower")
    assert res.frozen and all(f.startswith(("unet.conv_in.", "unet.down_blocks.")) for f in res.frozen)
    before, after = _unet(pixel_model), _unet(out)
    frozen = {f[len("unet."):] for f in res.frozen}
    assert frozen == {k for k in before if k.startswith(("conv_in.", "down_blocks."))}
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    changed = [k for k in before if k not in frozen and not torch.equal(before[k], after[k])]
    assert set(changed) == set(before) - frozen  # every other UNet weight trained
    card = json.loads((out / "model_card.json").read_text())
    assert card["fine_tune"]["frozen_parameters"] == res.frozen


def test_lora_adapter_on_a_verified_base(pixel_model, data, small_catalog, tmp_path):
    base_dir = shutil.copytree(pixel_model, tmp_path / "base")
    relabelled = [Conditioning(title=c.title, category=NEW, attributes=c.attributes) if i < 12 else c for i, c in enumerate(data.conditionings)]
    ft_data = dataclasses.replace(data, conditionings=relabelled)
    out = tmp_path / "lora"
    base = registry.base_model(str(base_dir))
    res = _train(ft_data, spec(max_steps=3, lr=3e-3), out, small_catalog, base=base, lora_rank=4)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.as_posix().startswith(str(out / "checkpoint"))}
    assert {"config.json", "adapter/adapter_model.safetensors", "condition_encoder.safetensors"} <= files
    assert not any(f.startswith(("unet/", "vae/", "scheduler/")) for f in files)  # no full UNet copy
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["base"] == {"uri": str(base_dir), "model_id": base.model_id} and cfg["lora"]["rank"] == 4
    assert set(cfg["lora"]["target_modules"]) == {"to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"}
    adapter = load_file(out / diffusion.ADAPTER_WEIGHTS)
    assert adapter and all("lora_" in k for k in adapter) and any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in adapter.items())
    # every base UNet weight frozen and, in the trained state, unchanged
    state = load_file(out / "checkpoint/state.safetensors")
    base_unet = _unet(base_dir)
    assert len(res.frozen) == len(base_unet)
    for k, v in base_unet.items():
        key = f"module.unet.{k}"
        if key not in state:  # an adapted layer keeps its weight under base_layer
            key = f"module.unet.{k.rsplit('.', 1)[0]}.base_layer.{k.rsplit('.', 1)[1]}"
        assert torch.equal(state[key], v), k

    lora = registry.load_generator(str(out))
    plain = registry.load_generator(str(base_dir))
    assert lora.model_id == registry.describe(str(out)).model_id == json.loads((out / "model_card.json").read_text())["model_id"]
    assert lora.model_id != plain.model_id
    assert np.abs(px(lora.generate([SHIRT], [4], P)[0]) - px(plain.generate([SHIRT], [4], P)[0])).max() > 0
    assert plain.conditioning_problem(CAPE) is not None and lora.conditioning_problem(CAPE) is None
    cape = lora.generate([CAPE, CAPE], [4, 5], P)
    assert cape[0].size == (32, 32) and np.abs(px(cape[0]) - px(cape[1])).max() > 0

    changed = _unet(base_dir)
    changed["conv_out.bias"] = changed["conv_out.bias"] + 0.5
    save_file(changed, base_dir / diffusion.UNET_WEIGHTS)
    with pytest.raises(ModelError, match="base model changed"):
        registry.load_generator(str(out))


def test_bad_options_are_config_errors(pixel_model, data, small_catalog, tmp_path):
    with pytest.raises(ConfigError, match="height/width"):
        _train(data, spec(height=48, width=32), tmp_path / "a", small_catalog, base=registry.base_model(str(pixel_model)))
    with pytest.raises(ConfigError, match="--lora"):
        _train(data, spec(), tmp_path / "b", small_catalog, lora_rank=4)
    with pytest.raises(ConfigError, match="multiples of"):
        _train(data, spec(height=33), tmp_path / "c", small_catalog)
