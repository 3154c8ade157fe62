"""Untrusted files: model directories load safetensors only (a pickle checkpoint is refused before
it is read), and images are decoded under a pixel cap (a decompression bomb costs no memory)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import bad_files
import pytest
import torch

from catalog_render.errors import ModelError
from catalog_render.generators import registry

PICKLE_REFUSED = "pickle checkpoints are not loaded"


class _Payload:
    """Unpickling this object calls open(marker, "w"): it creates the marker file. Nothing that
    loads a model may ever create it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(path, marker) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, path)


def _prove_the_payload_runs(path, marker) -> None:
    """The checkpoint is live: unpickling it (what catalog-render must never do) creates the marker."""
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_gan_directory_with_only_a_pickle_checkpoint_is_refused_unread(tiny_gan, tmp_path):
    marker = tmp_path / "UNPICKLED"
    model = tmp_path / "gan-pickled"
    shutil.copytree(tiny_gan, model)
    (model / "model.safetensors").unlink()
    _evil_checkpoint(model / "model.pt", marker)
    for load in (registry.describe, registry.load_generator):
        with pytest.raises(ModelError) as exc:
            load(str(model))
        assert "model.pt" in str(exc.value) and PICKLE_REFUSED in str(exc.value), str(exc.value)
    assert not marker.exists()

    bare = tmp_path / "just-a-checkpoint"  # no config.json at all, only last.ckpt
    bare.mkdir()
    _evil_checkpoint(bare / "last.ckpt", marker)
    with pytest.raises(ModelError, match=r"has pickle checkpoint\(s\) last.ckpt and no safetensors weights: pickle checkpoints are not loaded"):
        registry.describe(str(bare))
    assert not marker.exists()
    _prove_the_payload_runs(model / "model.pt", marker)


def test_diffusers_directory_with_pickle_weights_is_refused_unread(tiny_sd, tmp_path):
    marker = tmp_path / "UNPICKLED"
    one = tmp_path / "sd-unet-pickled"  # one component pickled, the others safetensors
    shutil.copytree(tiny_sd, one)
    (one / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    _evil_checkpoint(one / "unet" / "diffusion_pytorch_model.bin", marker)
    info = registry.describe(str(one))  # identified (its files hashed as bytes), not loaded
    assert info.family == "diffusers-pipeline"
    with pytest.raises(ModelError) as exc:
        registry.load_generator(str(one))
    assert str(exc.value).endswith(
        "has no unet/diffusion_pytorch_model.safetensors (it has pickle checkpoint(s) unet/diffusion_pytorch_model.bin: pickle checkpoints are not loaded)"
    ), str(exc.value)

    every = tmp_path / "sd-all-pickled"
    shutil.copytree(tiny_sd, every)
    names = []
    for st in sorted(every.rglob("*.safetensors")):
        st.unlink()
        name = st.with_name("pytorch_model.bin" if st.stem == "model" else f"{st.stem}.bin")  # diffusers' pickle names
        _evil_checkpoint(name, marker)
        names.append(name.relative_to(every).as_posix())
    assert names == ["text_encoder/pytorch_model.bin", "unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin"]
    for load in (registry.describe, registry.load_generator):
        with pytest.raises(ModelError) as exc:
            load(str(every))
        assert f"pickle checkpoint(s) {', '.join(names)} and no safetensors weights: {PICKLE_REFUSED}" in str(exc.value), str(exc.value)
    assert not marker.exists()
    _prove_the_payload_runs(every / names[0], marker)


_DECODE_AND_MEASURE = """
import sys
from catalog_render import imaging

def peak_kib():  # this process's resident-memory high-water mark (VmHWM; ru_maxrss would count the parent's)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

for path in sys.argv[1:]:
    data = open(path, "rb").read()
    before = peak_kib()
    try:
        image = imaging.decode_rgb(data)
        print("decoded", image.size)
    except imaging.ImageTooLarge as exc:
        print(exc)
    print((peak_kib() - before) // 1024)  # MiB of new peak memory
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_decompression_bombs_are_refused_without_allocating_their_pixels(tmp_path):
    """A 30000 x 30000 PNG (900,000,000 px, 0.9 MB on disk) would need 900 MB as greyscale and
    2.7 GB as RGB; an 8000 x 8000 one (over our 40 MP cap but under Pillow's own limit) 256 MB.
    Each is refused from its header: the decoding process's peak memory grows by under 20 MiB,
    while decoding a 6000 x 6000 one (under the cap) grows it by over 100 MiB."""
    paths = []
    for w, h in [(30000, 30000), (8000, 8000), (6000, 6000)]:
        data = bad_files.png_bomb(w, h)
        assert len(data) < 1_000_000
        paths.append(tmp_path / f"bomb-{w}.png")
        paths[-1].write_bytes(data)
    out = subprocess.run([sys.executable, "-c", _DECODE_AND_MEASURE, *map(str, paths)], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "exceeds pixel cap: 900,000,000 px (max 40,000,000)"
    assert lines[2] == "exceeds pixel cap: 64,000,000 px (8000x8000, max 40,000,000)"
    assert int(lines[1]) < 20 and int(lines[3]) < 20, lines
    # the measure works: a 6000 x 6000 image (36 MP, under the cap) is decoded, 36 MB grey + 108 MB RGB
    assert lines[4] == "decoded (6000, 6000)" and int(lines[5]) > 100, lines
