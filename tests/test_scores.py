"""Scores against values computed independently (closed forms, scipy)."""

import math

import numpy as np
import pytest
from scipy import ndimage

from catalog_render.quality import scores


def test_psnr_of_known_arrays():
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.full((8, 8, 3), 10, np.uint8)
    # MSE = 100 -> PSNR = 10 log10(255^2 / 100)
    assert scores.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert scores.psnr(a, a) == math.inf


def test_ssim_closed_form_for_constant_images():
    # Constant images: variances and covariance are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 255)^2
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert scores.ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), rel=1e-9)
    assert scores.ssim(a, a) == pytest.approx(1.0)


def test_sharpness_matches_scipy_laplacian_and_orders_blur():
    rng = np.random.default_rng(0)
    img = np.full((32, 32, 3), 255, np.uint8)
    img[8:24, 8:24] = rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)  # grey noise patch, white border
    grey = img[..., 0].astype(float) / 255.0  # R = G = B, so grey = any channel
    expected = ndimage.laplace(grey, mode="reflect").var()
    assert scores.sharpness(img) == pytest.approx(expected, rel=1e-6)
    assert scores.sharpness(np.full((32, 32, 3), 128, np.uint8)) == 0.0
    blurred = ndimage.uniform_filter(img, size=(5, 5, 1))
    assert scores.sharpness(blurred) < scores.sharpness(img)


def test_background_whiteness_counts_border_band():
    img = np.full((20, 20, 3), 255, np.uint8)
    img[:, 0] = 0  # left column dark: band is 1 px wide (5% of 20)
    band = 20 * 20 - 18 * 18  # 76 border pixels
    assert scores.background_whiteness(img, 240, 0.05) == pytest.approx((band - 20) / band)
    assert scores.background_whiteness(np.full((20, 20, 3), 239, np.uint8), 240, 0.05) == 0.0


def test_fill_ratio_is_bounding_box_share():
    img = np.full((100, 50, 3), 255, np.uint8)
    img[10:30, 5:15] = (200, 0, 0)
    img[60, 40] = (0, 0, 0)  # bbox now rows 10..60, cols 5..40
    assert scores.fill_ratio(img) == pytest.approx((51 * 36) / (100 * 50))
    assert scores.fill_ratio(np.full((10, 10, 3), 255, np.uint8)) == 0.0


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB uint8"):
        scores.sharpness(np.zeros((4, 4), np.uint8))


def test_score_image_reports_the_non_dominant_share():
    img = np.full((20, 20, 3), 255, np.uint8)
    img[5:9, 5:10] = (10, 200, 10)  # 20 of 400 pixels differ from the white background
    out = scores.score_image(img)
    assert out["non_dominant_share"] == pytest.approx(20 / 400) == scores.non_dominant_share(img)
    assert scores.non_dominant_share(np.zeros((7, 5, 3), np.uint8)) == 0.0
