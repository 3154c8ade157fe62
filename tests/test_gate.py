"""The quality gate: thresholds as a job-spec section, judge() and best-of-N pick_best(), and the
always-on blank check against every real photo of ../shared/data."""

import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from catalog_render import imaging
from catalog_render.quality import gate, presets, scores
from catalog_render.quality.gate import QualityThresholds, judge, pick_best, should_retry

GOOD = {"non_dominant_share": 0.3, "sharpness": 0.03, "background_whiteness": 1.0, "fill_ratio": 0.5, "clipped_highlights": 0.0,
        "clipped_shadows": 0.01, "colourfulness": 20.0, "colour_match": True}


def test_defaults_gate_only_blank_renders():
    t = QualityThresholds()
    assert judge({"non_dominant_share": 0.3}, None, t) == (True, [])
    assert judge({"non_dominant_share": 0.0}, None, t) == (False, ["blank"])
    assert judge({}, None, t) == (False, ["blank (missing)"])  # never passes what it could not measure
    assert t.max_tries == 1 and t.preset == "none"


def _flat(colour, h=64, w=48):
    return np.full((h, w, 3), colour, np.uint8)


def test_flat_images_fail_the_blank_check_whatever_the_thresholds():
    rng = np.random.default_rng(0)
    noisy = np.clip(_flat((200, 30, 30)).astype(int) + rng.integers(-4, 5, (64, 48, 3)), 0, 255).astype(np.uint8)
    speck = _flat(255)
    speck[10, 10] = speck[40, 20] = (0, 0, 0)  # 2 of 3,072 pixels: 0.00065
    flats = {"black": _flat(0), "white": _flat(255), "red": _flat((200, 30, 30)), "grey 128": _flat(128, 512, 512),
             "red with +-4 noise": noisy, "white with 2 dark pixels": speck}
    lenient = QualityThresholds(max_tries=4)  # no threshold set: the blank check is on anyway
    strict = QualityThresholds(min_sharpness=0.0, min_background_whiteness=0.0, max_fill_ratio=1.0)
    for name, img in flats.items():
        values = scores.score_image(img)
        assert values["non_dominant_share"] <= gate.BLANK_MAX_SHARE, name
        for t in (lenient, strict):
            passed, failed = judge(values, None, t)
            assert not passed and failed[0] == "blank", (name, failed)
    # a product, however small, on a flat background is not blank: a 6x4 patch is 24 of 3,072 pixels
    patch = _flat(255)
    patch[30:36, 20:24] = (90, 60, 30)
    assert scores.non_dominant_share(patch) == pytest.approx(24 / 3072)
    assert judge(scores.score_image(patch), None, lenient) == (True, [])


def test_non_dominant_share_counts_pixels_beyond_the_tolerance():
    img = _flat((250, 250, 250))
    img[:8] = (250, 250, 250 - 8)  # within the 8-level tolerance: the same colour
    img[8:16] = (250, 241, 250)  # 9 levels off in one channel: another colour
    assert scores.non_dominant_share(img) == pytest.approx(8 * 48 / (64 * 48))
    half = _flat(0)
    half[:, :30] = 255  # the dominant colour is the larger part, white: the black part counts
    assert scores.non_dominant_share(half) == pytest.approx(18 / 48)


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (DATA / "ikea" / "images").is_dir(), reason="real photos absent")
@pytest.mark.parametrize("size", ["own", pytest.param("64x48", marks=pytest.mark.slow)])
def test_no_real_photo_is_blank(size):
    """Every one of the 2,946 fashion + 2,187 IKEA photos passes the blank check with a margin of
    5x, at its own size (where the lowest share is; about 10 s of CPU) and letterboxed to a 64x48
    render's size (slow: the resizing costs about 30 s more); gate.BLANK_MAX_SHARE's derivation."""
    files = sorted((DATA / "fashion" / "images").glob("*.jpg")) + sorted((DATA / "ikea" / "images").glob("*.jpg"))
    assert len(files) == 2946 + 2187
    lowest = (1.0, "")
    for f in files:
        im = imaging.decode_rgb(f.read_bytes())
        arr = imaging.to_array(im if size == "own" else imaging.letterbox(im, 48, 64))
        lowest = min(lowest, (scores.non_dominant_share(arr), f.name))
    assert lowest[0] > 5 * gate.BLANK_MAX_SHARE, lowest
    assert lowest[1] == "59551.jpg"  # the pair of small earrings on white the docstring names


def test_blank_renders_are_retried_up_to_blank_max_tries():
    t = QualityThresholds()  # max_tries 1
    assert gate.tries_allowed(t) == gate.BLANK_MAX_TRIES == 3
    assert should_retry(["blank", "min_sharpness"], 1, t) and should_retry(["blank"], 2, t)
    assert not should_retry(["blank"], 3, t)
    assert not should_retry(["min_sharpness"], 1, t)  # only blank renders get tries beyond max_tries
    assert not should_retry([], 1, QualityThresholds(max_tries=5))  # passed
    five = QualityThresholds(max_tries=5, min_sharpness=0.01)
    assert gate.tries_allowed(five) == 5 and should_retry(["min_sharpness"], 4, five) and not should_retry(["blank"], 5, five)


def test_thresholds_validate_like_the_job_spec():
    with pytest.raises(ValidationError, match="max_tries"):
        QualityThresholds(max_tries=0)
    with pytest.raises(ValidationError, match="min_background_whiteness"):
        QualityThresholds(min_background_whiteness=1.5)
    with pytest.raises(ValidationError, match="extra"):
        QualityThresholds(min_sharpnes=0.01)
    assert QualityThresholds.model_validate({"preset": "amazon", "max_tries": 4}).max_tries == 4


def test_each_threshold_fails_its_own_check():
    t = QualityThresholds(min_sharpness=0.01, min_background_whiteness=0.9, min_fill_ratio=0.1, max_fill_ratio=0.98,
                          max_clipped_highlights=0.05, max_clipped_shadows=0.05, min_colourfulness=5, require_colour_match=True)
    assert judge(GOOD, None, t) == (True, [])
    bad = dict(GOOD, sharpness=0.005, fill_ratio=0.99, clipped_shadows=0.2, colour_match=False)
    assert judge(bad, None, t) == (False, ["min_sharpness", "max_fill_ratio", "max_clipped_shadows", "colour_match"])
    # at the limit passes; missing or NaN fails; colour_match None is no verdict
    edge = dict(GOOD, sharpness=0.01, colour_match=None)
    assert judge(edge, None, t) == (True, [])
    gone = dict(GOOD, sharpness=float("nan"))
    del gone["background_whiteness"]
    assert judge(gone, None, t)[1] == ["min_sharpness (missing)", "min_background_whiteness (missing)"]


def test_preset_failures_are_added_by_rule_id():
    img = np.full((64, 48, 3), 255, np.uint8)
    img[10:54, 8:40] = (150, 40, 40)
    compliance = presets.evaluate(img, "amazon")
    t = QualityThresholds(preset="amazon", min_sharpness=0.5)
    passed, failed = judge(GOOD, compliance, t)
    assert not passed and failed == ["min_sharpness", *compliance.failed] and "amazon.zoom_1000" in failed
    assert judge(GOOD, None, t)[1][-1] == "amazon (not evaluated)"
    with pytest.raises(ValueError, match="preset 'ebay'"):
        judge(GOOD, presets.evaluate(img, "ebay"), t)


def test_pick_best_orders_by_verdict_then_failures_then_sharpness_then_index():
    tries = [
        {"passed": False, "failed_checks": ["a"], "sharpness": 0.9},
        {"passed": True, "failed_checks": [], "sharpness": 0.02},
        {"passed": True, "failed_checks": [], "sharpness": 0.05},
        {"passed": True, "failed_checks": [], "sharpness": 0.05},
    ]
    assert pick_best(tries) == 2  # passing, sharpest, earliest of the tie
    failing = [
        {"passed": False, "failed_checks": ["a", "b"], "sharpness": 0.9},
        {"passed": False, "failed_checks": ["a"], "sharpness": math.nan},
        {"passed": False, "failed_checks": ["b"], "sharpness": 0.01},
    ]
    assert pick_best(failing) == 2  # fewest failures, then a real sharpness beats NaN
    assert pick_best([{"passed": False}]) == 0
    # a blank try is never kept over one that shows something, even with fewer failed checks
    blank_first = [{"passed": False, "failed_checks": ["blank"], "sharpness": 0.0},
                   {"passed": False, "failed_checks": ["min_sharpness", "min_fill_ratio"], "sharpness": 0.001}]
    assert pick_best(blank_first) == 1
    with pytest.raises(ValueError):
        pick_best([])
