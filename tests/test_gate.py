"""The quality gate: thresholds as a job-spec section, judge() and best-of-N pick_best()."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from catalog_render.quality import presets
from catalog_render.quality.gate import QualityThresholds, judge, pick_best

GOOD = {"sharpness": 0.03, "background_whiteness": 1.0, "fill_ratio": 0.5, "clipped_highlights": 0.0,
        "clipped_shadows": 0.01, "colourfulness": 20.0, "colour_match": True}


def test_defaults_gate_nothing():
    t = QualityThresholds()
    assert judge({}, None, t) == (True, [])
    assert t.max_tries == 1 and t.preset == "none"


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
    with pytest.raises(ValueError):
        pick_best([])
