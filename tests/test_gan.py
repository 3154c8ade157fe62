"""The GAN family: trained on real photos (tiny), saved, reloaded, deterministic."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from catalog_render.errors import ModelError
from catalog_render.generators import gan, registry
from catalog_render.generators.base import Conditioning, GenerationParams

SHIRT = Conditioning(title="Blue shirt", category="Shirts", attributes={"color": "Blue", "gender": "Men"})
UNSEEN = Conditioning(title="Lamp", category="Lamps", attributes={"color": "Chartreuse"})
P = GenerationParams()


def px(im):
    return np.asarray(im, dtype=np.int16)


def test_model_directory_layout_and_card(tiny_gan, small_catalog):
    assert {p.name for p in tiny_gan.iterdir()} >= {"config.json", "model.safetensors", "model_card.json", "samples.png"}
    card = json.loads((tiny_gan / "model_card.json").read_text())
    assert card["steps"] == 6 and card["stopped_by"] == "max_steps"
    assert card["training_catalog"]["uri"] == str(small_catalog)
    import hashlib

    assert card["training_catalog"]["sha256"] == hashlib.sha256(small_catalog.read_bytes()).hexdigest()
    assert card["resolution"] == {"height": 32, "width": 32}
    assert [p["step"] for p in card["loss_curve"]] == [1, 6]  # from the first step on
    cfg = json.loads((tiny_gan / "config.json").read_text())
    assert [c["field"] for c in cfg["conditions"]] == ["category", "attributes.color", "attributes.gender"]
    assert all(c["values"][0] == gan.UNKNOWN for c in cfg["conditions"])


def test_generate_is_deterministic_per_seed_and_batch_independent(tiny_gan):
    m = registry.load_generator(str(tiny_gan))
    assert m.family == "gan" and m.model_id == registry.describe(str(tiny_gan)).model_id
    a = m.generate([SHIRT, UNSEEN, SHIRT], [1, 2, 3], P)
    assert [im.size for im in a] == [(32, 32)] * 3 and all(im.mode == "RGB" for im in a)
    again = registry.load_generator(str(tiny_gan)).generate([SHIRT], [1], P)[0]
    assert np.array_equal(px(a[0]), px(again))  # same seed, fresh load, batch of 1 vs 3: same pixels
    assert np.abs(px(a[0]) - px(a[2])).max() > 0  # another seed, another image
    assert np.array_equal(px(m.generate([UNSEEN], [2], P)[0]), px(a[1]))


def test_renders_do_not_depend_on_the_batch_bit_for_bit(tiny_gan, small_catalog):
    """The float renders, before quantisation to uint8, are identical whatever the batch: a batched
    forward pass on CPU rounds differently from single images (by up to about 1e-7, in every
    image), which flips a uint8 level now and then (1 of 199 fashion renders of a 64x48 GAN
    between batches of 16 and of 1). Float equality is the stronger form of "same pixels"."""
    from catalog_render import catalog, planning

    rows = catalog.read_catalog(str(small_catalog)).to_pylist()
    conds = [Conditioning(title=r["title"], category=r["category"], attributes=dict(r["attributes"] or [])) for r in rows]
    seeds = [planning.product_seed(11, r["product_id"]) for r in rows]
    m = registry.load_generator(str(tiny_gan))
    single = torch.cat([m.generate_tensor([c], [s]) for c, s in zip(conds, seeds)])
    for bs in (16, len(conds)):
        batched = torch.cat([m.generate_tensor(conds[i : i + bs], seeds[i : i + bs]) for i in range(0, len(conds), bs)])
        assert torch.equal(batched, single), f"batch {bs}: max difference {float((batched - single).abs().max())}"
    pixels = [px(im) for im in m.generate(conds, seeds, P)]
    assert all(np.array_equal(a, px(b)) for a, b in zip(pixels, gan.to_pil(single)))


def test_unseen_values_map_to_unknown(tiny_gan):
    cfg = json.loads((tiny_gan / "config.json").read_text())
    idx = gan.condition_indices(cfg, [UNSEEN])
    assert idx[0, 0].item() == 0 and idx[0, 1].item() == 0


def test_requested_size_resizes(tiny_gan):
    m = registry.load_generator(str(tiny_gan))
    assert m.generate([SHIRT], [1], GenerationParams(width=48, height=64))[0].size == (48, 64)


def test_model_id_tracks_weights_and_bad_directories_fail_clearly(tiny_gan, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_gan, copy)
    assert registry.describe(str(copy)).model_id == registry.describe(str(tiny_gan)).model_id
    state = load_file(copy / "model.safetensors")
    state["out.bias"] = state["out.bias"] + 0.1
    save_file(state, copy / "model.safetensors")
    assert registry.describe(str(copy)).model_id != registry.describe(str(tiny_gan)).model_id

    no_cfg = tmp_path / "no-config"
    shutil.copytree(tiny_gan, no_cfg)
    (no_cfg / "config.json").unlink()
    with pytest.raises(ModelError, match="no config.json"):
        registry.describe(str(no_cfg))
    with pytest.raises(ModelError, match="not found or empty"):
        registry.describe(str(tmp_path / "nothing"))
    odd = tmp_path / "odd"
    shutil.copytree(tiny_gan, odd)
    cfg = json.loads((odd / "config.json").read_text())
    cfg["family"] = "flow"
    (odd / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="unknown model family 'flow'"):
        registry.describe(str(odd))
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_gan, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, pickled / "model.bin")
    with pytest.raises(ModelError, match=r"pickle checkpoint\(s\) model.bin and no safetensors weights: pickle checkpoints are not loaded"):
        registry.describe(str(pickled))
    (pickled / "model.safetensors").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelError, match="not a valid safetensors"):
        registry.describe(str(pickled))
    mismatch = tmp_path / "mismatch"
    shutil.copytree(tiny_gan, mismatch)
    cfg = json.loads((mismatch / "config.json").read_text())
    cfg["conditions"][0]["values"].append("Extra")
    (mismatch / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="do not match config.json"):
        registry.describe(str(mismatch))


def test_training_on_fewer_photos_than_the_sample_sheet(small_catalog, tmp_path):
    from catalog_render import catalog
    from catalog_render.config import TrainSpec
    from catalog_render.training.data import load_image_set
    from catalog_render.training.loop import train as train_gan

    spec = TrainSpec(height=32, width=32, base_channels=16, z_dim=8, embed_dim=4, batch_size=4, max_steps=1, min_count=1)
    data = load_image_set(catalog.read_catalog(str(small_catalog)).slice(0, 5), 32, 32)
    r = train_gan(data, spec, str(tmp_path / "m"), "c", "h")
    assert r.steps == 1 and registry.describe(str(tmp_path / "m")).model_id == r.model_id


def test_a_file_is_not_a_model_directory(tiny_gan):
    with pytest.raises(ModelError, match="is a file"):
        registry.describe(str(tiny_gan / "config.json"))
