"""The VAE family: trained on real photos (tiny, 32x32 px) through the shared loop, saved, reloaded,
deterministic, reconstructing, fine-tuned with frozen lower layers, resumed bit for bit."""

import json
import shutil

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from catalog_render import catalog
from catalog_render.config import AugmentSpec, TrainSpec, VaeSpec
from catalog_render.errors import ConfigError, ModelError
from catalog_render.generators import registry, vae
from catalog_render.generators.base import Conditioning, GenerationParams
from catalog_render.training.data import load_image_set
from catalog_render.training.loop import train

SHIRT = Conditioning(title="Blue shirt", category="Tshirts", attributes={"color": "Blue", "gender": "Men"})
UNSEEN = Conditioning(title="Lamp", category="Lamps", attributes={"color": "Chartreuse"})
SHOE = Conditioning(title="Runner", category="Sports Shoes", attributes={"color": "White", "gender": "Men"})
P = GenerationParams()
NO_AUGMENT = AugmentSpec(hflip=0.0, affine_p=0.0)


def px(im):
    return np.asarray(im, dtype=np.int16)


def spec(**kw) -> TrainSpec:
    base = dict(family="vae", height=32, width=32, embed_dim=4, batch_size=8, max_steps=2, min_count=1, threads=1,
                vae=VaeSpec(latent_dim=16, base_channels=8), sample_every=10**6, checkpoint_every=10**6)
    return TrainSpec(**{**base, **kw})


@pytest.fixture(scope="module")
def table(small_catalog):
    return catalog.read_catalog(str(small_catalog))


@pytest.fixture(scope="module")
def tiny_vae(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny-vae"
    result = train(load_image_set(table, 32, 32), spec(max_steps=3), str(out), "catalog", "sha")
    return out, result


def test_trains_through_the_loop_and_registry_identifies_it(tiny_vae):
    out, result = tiny_vae
    card = json.loads((out / "model_card.json").read_text())
    assert card["family"] == "vae" and card["steps"] == 3 and card["model_id"] == result.model_id
    assert set(card["loss_curve"][0]) == {"step", "seconds", "loss", "recon", "kl"}
    c = card["loss_curve"][0]
    assert c["recon"] > 0 and c["kl"] >= 0 and c["loss"] == pytest.approx(c["recon"] + c["kl"], rel=1e-6)
    assert "Kingma & Welling 2014" in card["architecture"] and "Sohn et al. 2015" in card["architecture"]
    assert card["parameters"]["encoder"] > 0 and card["parameters"]["decoder"] > 0
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "model_card.json", "samples.png"}
    info = registry.describe(str(out))
    assert (info.family, info.model_id, info.width, info.height) == ("vae", result.model_id, 32, 32)
    assert info.params_fields == ()


def test_generate_is_deterministic_per_seed_and_batch_independent(tiny_vae):
    out, result = tiny_vae
    m = registry.load_generator(str(out))
    assert isinstance(m, vae.VaeModel) and m.family == "vae" and m.model_id == result.model_id
    a = m.generate([SHIRT, UNSEEN, SHIRT], [1, 2, 3], P)
    assert [im.size for im in a] == [(32, 32)] * 3 and all(im.mode == "RGB" for im in a)
    again = registry.load_generator(str(out)).generate([SHIRT], [1], P)[0]
    assert np.array_equal(px(a[0]), px(again))  # same seed, fresh load, batch of 1 vs 3
    assert np.abs(px(a[0]) - px(a[2])).max() > 0  # another seed, another image
    assert np.array_equal(px(m.generate([UNSEEN], [2], P)[0]), px(a[1]))
    assert m.generate([SHIRT], [1], GenerationParams(width=48, height=64))[0].size == (48, 64)
    assert m.conditioning_problem(SHIRT) is None
    assert "'Lamps' is not in the model's vocabulary" in m.conditioning_problem(UNSEEN)


def test_reconstruct_letterboxes_to_native_size_and_is_deterministic(tiny_vae, table):
    out, _ = tiny_vae
    m = registry.load_generator(str(out))
    photos = [Image.new("RGB", (60, 80), (200, 30, 30)), Image.new("RGB", (32, 32), (0, 0, 255))]
    r = m.reconstruct(photos)
    assert [im.size for im in r] == [(32, 32)] * 2 and all(im.mode == "RGB" for im in r)
    assert np.array_equal(px(r[1]), px(m.reconstruct(photos[1:])[0]))  # batch-independent, posterior mean
    assert m.reconstruct([]) == []
    with pytest.raises(ValueError, match="one conditioning per image"):
        m.reconstruct(photos, [SHIRT])


def _recon_mse(model_dir, data) -> float:
    m = registry.load_generator(str(model_dir))
    photos = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in data.images]
    rec = m.reconstruct(photos, data.conditionings)
    return float(np.mean([(px(a) - px(b)).astype(np.float64) ** 2 for a, b in zip(photos, rec)]))


def test_training_improves_reconstructions(table, tmp_path):
    data = load_image_set(table.slice(0, 6), 32, 32)
    kw = dict(batch_size=6, lr=2e-3, ema_decay=0.5, augment=NO_AUGMENT, condition_dropout=0.0)
    train(data, spec(max_steps=1, **kw), str(tmp_path / "s1"), "c", "h")
    train(data, spec(max_steps=40, **kw), str(tmp_path / "s40"), "c", "h")
    early, late = _recon_mse(tmp_path / "s1", data), _recon_mse(tmp_path / "s40", data)
    grey = float(np.mean([(px(Image.fromarray(a.permute(1, 2, 0).numpy())) - 128.0) ** 2 for a in data.images]))
    assert late < 0.7 * early and late < 0.7 * grey, (early, late, grey)


def test_finetune_freezes_the_encoder_convs_and_learns_a_new_category(table, tmp_path):
    is_shoe = pc.equal(table.column("category"), "Sports Shoes")
    base_rows, shoe_rows = table.filter(pc.invert(is_shoe)), table.filter(is_shoe)
    assert shoe_rows.num_rows >= 3
    train(load_image_set(base_rows, 32, 32), spec(max_steps=2), str(tmp_path / "base"), "c", "h")
    base = registry.base_model(str(tmp_path / "base"))
    assert "Sports Shoes" not in base.config["conditions"][0]["values"]
    with pytest.raises(ConfigError, match="--lora: LoRA adapters are for the diffusion family's UNet; fine-tune a VAE"):
        train(load_image_set(shoe_rows, 32, 32), spec(), str(tmp_path / "lora"), "c", "h", base=base, lora_rank=4)
    with pytest.raises(ConfigError, match="the base model renders 32x32 px, the job asks 48x32"):
        train(load_image_set(shoe_rows, 32, 48), spec(height=48), str(tmp_path / "size"), "c", "h", base=base)

    ft = train(load_image_set(shoe_rows, 32, 32), spec(max_steps=3, condition_dropout=0.0), str(tmp_path / "ft"), "c", "h",
               base=base, freeze="lower")
    assert ft.frozen and all(n.startswith("vae.encoder.convs.") for n in ft.frozen)
    assert "vae.encoder.convs.0.weight" in ft.frozen and "vae.encoder.convs.0.bias" in ft.frozen
    card = json.loads((tmp_path / "ft" / "model_card.json").read_text())
    assert card["fine_tune"]["frozen_parameters"] == ft.frozen and card["fine_tune"]["new_values"]["category"] == ["Sports Shoes"]

    before, after = load_file(tmp_path / "base" / "model.safetensors"), load_file(tmp_path / "ft" / "model.safetensors")
    assert set(before) == set(after)
    frozen = {n[len("vae."):] for n in ft.frozen}
    assert frozen == {k for k in before if k.startswith("encoder.convs.")}
    for k in before:
        if k in frozen:
            assert torch.equal(before[k], after[k]), k  # bitwise unchanged
        else:
            assert before[k].shape != after[k].shape or not torch.equal(before[k], after[k]), k  # trained
    cats = json.loads((tmp_path / "ft" / "config.json").read_text())["conditions"][0]["values"]
    assert cats == base.config["conditions"][0]["values"] + ["Sports Shoes"]
    table0 = after["cond.tables.0.weight"]
    assert table0.shape[0] == before["cond.tables.0.weight"].shape[0] + 1
    assert not torch.equal(table0[-1], table0[0])  # the new row started as "unknown" and was learnt

    m = registry.load_generator(str(tmp_path / "ft"))
    assert m.conditioning_problem(SHOE) is None
    assert registry.load_generator(str(tmp_path / "base")).conditioning_problem(SHOE) is not None
    shoe, unknown = m.generate([SHOE, Conditioning(category=None)], [5, 5], P)
    assert shoe.size == (32, 32) and np.abs(px(shoe) - px(unknown)).max() > 0


def test_resume_continues_bit_for_bit(table, tmp_path):
    data = load_image_set(table.slice(0, 20), 32, 32)
    straight = train(data, spec(max_steps=4, checkpoint_every=2), str(tmp_path / "straight"), "c", "h")
    train(data, spec(max_steps=2, checkpoint_every=2), str(tmp_path / "resumed"), "c", "h")
    first = (tmp_path / "resumed" / "model.safetensors").read_bytes()
    resumed = train(data, spec(max_steps=4, checkpoint_every=2), str(tmp_path / "resumed"), "c", "h", resume=True)
    a, b = (tmp_path / "straight" / "model.safetensors").read_bytes(), (tmp_path / "resumed" / "model.safetensors").read_bytes()
    assert a == b and a != first
    assert resumed.model_id == straight.model_id and resumed.steps == 4


def test_weights_not_matching_config_are_refused(tiny_vae, tmp_path):
    out, _ = tiny_vae
    extra = shutil.copytree(out, tmp_path / "extra")
    cfg = json.loads((extra / "config.json").read_text())
    cfg["conditions"][0]["values"].append("Extra")
    (extra / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="VAE weights do not match config.json"):
        registry.describe(str(extra))
    wider = shutil.copytree(out, tmp_path / "wider")
    cfg = json.loads((wider / "config.json").read_text())
    cfg["latent_dim"] = 32
    (wider / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="VAE weights do not match config.json"):
        registry.describe(str(wider))
    (wider / "model.safetensors").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelError, match="not a valid safetensors"):
        registry.describe(str(wider))


def test_sizes_must_be_multiples_of_16(table, tmp_path):
    with pytest.raises(ConfigError, match="multiples of 16"):
        train(load_image_set(table.slice(0, 4), 40, 24), spec(height=24, width=40), str(tmp_path / "m"), "c", "h")
