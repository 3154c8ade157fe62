"""Evaluation metrics against values computed independently from their formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from catalog_render.quality import metrics


def test_psnr_matches_the_formula_on_known_arrays():
    a = np.full((16, 12, 3), 100, dtype=np.uint8)
    b = a.copy()
    b[:8] = 110  # error 10 on half of the pixels
    b[8:] = 80  # error 20 on the other half
    mse = (10**2 + 20**2) / 2  # = 250, by hand
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    assert metrics.psnr(a, b) == pytest.approx(24.1514, abs=1e-4)
    assert metrics.psnr(a, a) == math.inf


def test_psnr_and_ssim_refuse_wrong_inputs():
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(a, np.zeros((16, 15, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        metrics.ssim(a, a.astype(np.float32))


@pytest.mark.parametrize("va, vb", [(100, 100), (100, 120), (30, 200), (0, 255)])
def test_ssim_of_constant_images_is_the_luminance_term(va, vb):
    # zero variance and covariance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) * (0 + C2) / (0 + C2)
    c1 = (0.01 * 255) ** 2
    expected = (2 * va * vb + c1) / (va**2 + vb**2 + c1)
    a = np.full((24, 20, 3), va, dtype=np.uint8)
    b = np.full((24, 20, 3), vb, dtype=np.uint8)
    assert metrics.ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_ssim_of_identical_images_is_one_and_agrees_with_torchmetrics_on_noise():
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:40]
    a = np.stack([(y * 5) % 256, (x * 6) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    ours = metrics.ssim(a, b)

    def t(z):
        return torch.from_numpy(z).permute(2, 0, 1)[None].double()

    # an independent implementation with the same Gaussian settings (it pads borders differently)
    theirs = float(structural_similarity_index_measure(t(b), t(a), data_range=255.0, gaussian_kernel=True, sigma=1.5, kernel_size=11))
    assert ours < 0.5
    assert ours == pytest.approx(theirs, abs=0.01)


def _features(mean: np.ndarray, std: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n vectors whose sample mean is exactly ``mean`` and sample covariance (N-1) exactly diag(std^2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(mean)))
    x -= x.mean(axis=0)
    q, _ = np.linalg.qr(x)  # orthonormal, zero-mean columns
    return q * math.sqrt(n - 1) * std + mean


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    mu1, s1 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 2.0, 0.5, 1.5])
    mu2, s2 = np.array([1.0, 1.0, 0.0, 0.5]), np.array([2.0, 1.0, 0.5, 3.0])
    a, b = _features(mu1, s1, 300, 1), _features(mu2, s2, 200, 2)
    # the construction is exact: check the moments independently first
    assert np.allclose(a.mean(axis=0), mu1) and np.allclose(np.cov(a, rowvar=False), np.diag(s1**2))
    expected = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())  # means: 1 + 0 + 4 + 0; stds: 1 + 1 + 0 + 2.25; = 9.25
    assert expected == pytest.approx(1 + 0 + 4 + 0 + 1 + 1 + 0 + 2.25)
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert metrics.frechet_distance(b, a) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_of_a_shift_is_its_square():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(100, 8)) @ rng.normal(size=(8, 8))  # correlated features
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.arange(8, dtype=float)
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)


def test_frechet_distance_refuses_mismatched_sets():
    with pytest.raises(ValueError, match="same D"):
        metrics.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_perceptual_metrics_refuse_bad_pairs_and_skip_tiny_images():
    a = np.zeros((40, 40, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.lpips([a], [np.zeros((40, 41, 3), dtype=np.uint8)])
    tiny = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="at least 32 px"):
        metrics.lpips([tiny], [tiny])
    assert metrics.perceptual_or_skip("lpips", [tiny], [tiny]) == {"computed": False, "skipped_reason": "images smaller than 32 px per side (16x16)"}
    assert metrics.perceptual_or_skip("dists", [], []) == {"computed": False, "skipped_reason": "no pairs"}


def test_lpips_batches_pairs_of_different_shapes_in_order():
    rng = np.random.default_rng(1)
    a1, b1 = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    a2 = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    together = metrics.lpips([a1, a2, a1], [b1, a2, a1])
    assert together[0] == pytest.approx(metrics.lpips([a1], [b1])[0], rel=1e-5) and together[0] > 0.1
    assert together[1] == pytest.approx(0.0, abs=1e-6) and together[2] == pytest.approx(0.0, abs=1e-6)


def _photo_like(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_resolution_energy_matches_its_definition_step_by_step():
    from PIL import Image

    a = _photo_like(120, 90, 0)  # (H, W): longest side 120 -> x is 256 x 192 (W x H = 192 x 256)
    chans = [Image.fromarray(a[..., c].astype(np.float32), mode="F") for c in range(3)]
    x = [c.resize((192, 256), Image.Resampling.BICUBIC) for c in chans]
    y = [c.resize((48, 64), Image.Resampling.BICUBIC).resize((192, 256), Image.Resampling.BICUBIC) for c in x]
    expected = np.mean([(np.asarray(xc, float) / 255 - np.asarray(yc, float) / 255) ** 2 for xc, yc in zip(x, y)])
    assert metrics.resolution_energy(a) == pytest.approx(float(expected), rel=1e-9)
    assert metrics.resolution_energy(Image.fromarray(a)) == pytest.approx(float(expected), rel=1e-9)


def test_resolution_energy_is_zero_for_flat_images_and_near_zero_for_upscaled_small_ones():
    from PIL import Image

    assert metrics.resolution_energy(np.full((300, 225, 3), 128, dtype=np.uint8)) == pytest.approx(0.0, abs=1e-12)
    noise = _photo_like(300, 225, 1)
    upscaled = np.asarray(Image.fromarray(noise).resize((48, 64), Image.Resampling.BICUBIC).resize((225, 300), Image.Resampling.LANCZOS))
    e_noise, e_up = metrics.resolution_energy(noise), metrics.resolution_energy(upscaled)
    assert e_noise > 0.01 and e_up < 0.05 * e_noise


def test_summary_leaves_out_infinite_values():
    s = metrics.summary([1.0, 2.0, 3.0, math.inf, None])
    assert s["n"] == 4 and s["n_infinite"] == 1
    assert s["mean"] == pytest.approx(2.0) and s["median"] == pytest.approx(2.0)
    assert metrics.summary([])["mean"] is None


def test_resolution_energy_of_a_real_photo_and_of_its_64px_version_scaled_up(fashion):
    """A real catalog photo (225x300) holds detail finer than 64 px; the same photo reduced to 48x64
    and scaled back up holds none. The photo's energy is computed here step by step from the
    definition (numpy on Pillow's bicubic resizes), independently of the function's code path."""
    from PIL import Image

    photo = Image.open(fashion / "images" / "10007.jpg").convert("RGB")
    assert photo.size == (225, 300)
    x = np.stack([np.asarray(c.convert("F").resize((192, 256), Image.Resampling.BICUBIC), float) for c in photo.split()], -1) / 255
    y = np.stack([np.asarray(Image.fromarray((x[..., k] * 255).astype(np.float32), mode="F").resize((48, 64), Image.Resampling.BICUBIC)
                             .resize((192, 256), Image.Resampling.BICUBIC), float) for k in range(3)], -1) / 255
    expected = float(np.mean((x - y) ** 2))
    assert expected > 1e-4
    assert metrics.resolution_energy(photo) == pytest.approx(expected, rel=1e-6)
    small_up = photo.resize((48, 64), Image.Resampling.BICUBIC).resize((225, 300), Image.Resampling.BICUBIC)
    assert metrics.resolution_energy(small_up) < 0.05 * expected
