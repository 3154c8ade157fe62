"""The category judge (linear probe on frozen AlexNet features) on real photos of ../shared/data,
its calibration, storage, and its use by the quality gate."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from catalog_render import imaging
from catalog_render.config import JobSpec
from catalog_render.errors import ConfigError, ModelError
from catalog_render.quality import category_judge, gate

CATEGORIES = ("Tshirts", "Watches", "Casual Shoes", "Handbags")
#: Photos per category: the first TRAIN (by id) train the judge, the next HELD are held out.
TRAIN, HELD = 10, 5


def _photos(fashion, n_train: int = TRAIN, n_held: int = HELD):
    rows = list(csv.DictReader(open(fashion / "metadata.csv", encoding="utf-8")))
    by_cat = {c: sorted((r for r in rows if r["articleType"] == c), key=lambda r: int(r["id"]))[: n_train + n_held] for c in CATEGORIES}

    def load(rs):
        ims = [imaging.to_array(imaging.letterbox(imaging.to_rgb(Image.open(fashion / r["image_file"])), 48, 64)) for r in rs]
        return torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).contiguous(), [r["articleType"] for r in rs], [r["id"] for r in rs]

    train = load([r for c in CATEGORIES for r in by_cat[c][:n_train]])
    held = load([r for c in CATEGORIES for r in by_cat[c][n_train:]])
    return train, held


@pytest.fixture(scope="module")
def trained(fashion):
    train, held = _photos(fashion)
    judge = category_judge.train_judge(*train, letterbox=(48, 64))
    return judge, train, held


def test_judge_classifies_held_out_real_photos_better_than_the_majority_baseline(trained):
    judge, (xt, ct, _), (xh, ch, _) = trained
    assert sorted(judge.classes) == sorted(CATEGORIES)
    # calibration: 20 % of each class's 10 photos held out of the probe's fit
    cal = judge.info["calibration"]
    assert cal["photos"] == 2 * len(CATEGORIES) and judge.info["photos_fit"] == 8 * len(CATEGORIES)
    pred = judge.predict(xh).tolist()
    truth = [judge.classes.index(c) for c in ch]
    accuracy = np.mean([p == t for p, t in zip(pred, truth)])
    # the baseline that always answers the most common training category
    majority = judge.classes.index(Counter(ct).most_common(1)[0][0])
    baseline = np.mean([t == majority for t in truth])
    print(f"judge accuracy on {len(truth)} held-out real photos: {accuracy:.2f} (majority baseline {baseline:.2f})")
    assert accuracy > baseline + 0.25
    probs = judge.probabilities(xh)
    # one column per category, then "not a product photo"
    assert probs.shape == (len(truth), len(CATEGORIES) + 1) and torch.allclose(probs.sum(dim=1), torch.ones(len(truth)), atol=1e-5)
    # the true-category probability is the softmax entry of the category; None for an unknown one
    p_true = judge.true_probability(xh, ch)
    assert p_true == pytest.approx([float(probs[i, judge.classes.index(c)]) for i, c in enumerate(ch)])
    assert judge.true_probability(xh[:1], ["Sarees"]) == [None]
    assert "not one of the judge's 4 classes" in judge.unknown_reason("Sarees")


def test_calibration_threshold_is_the_5th_percentile_of_held_out_true_probabilities(trained):
    judge, (xt, ct, it), _ = trained
    labels = [judge.classes.index(c) for c in ct]
    fit, cal = category_judge.calibration_split(it, labels)
    assert len(cal) == 8 and not set(fit) & set(cal)
    # independently: the probability of the true class on the calibration photos, then the percentile
    p = judge.probabilities(xt[cal])
    true_p = [float(p[k, labels[i]]) for k, i in enumerate(cal)]
    assert judge.threshold == pytest.approx(float(np.percentile(true_p, 5)), rel=1e-5)
    assert 0 < judge.threshold < 1


def test_pure_noise_is_below_the_calibrated_threshold(trained):
    judge, _, _ = trained
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.integers(0, 256, (3, 3, 64, 48), dtype=np.uint8))
    # colour noise in blobs, like an untrained generator's render: 6x8 random colours scaled up
    blobs = torch.nn.functional.interpolate(torch.from_numpy(rng.integers(0, 256, (3, 3, 8, 6), dtype=np.uint8)).float(), size=(64, 48),
                                            mode="bilinear").round().to(torch.uint8)
    for images in (noise, blobs):
        for category in CATEGORIES:
            scores = judge.true_probability(images, [category] * len(images))
            assert max(scores) < judge.threshold, (category, scores, judge.threshold)


def test_saved_judge_loads_with_the_same_answers_and_a_corrupt_one_is_refused(trained, tmp_path):
    judge, _, (xh, ch, _) = trained
    judge_id = judge.save(str(tmp_path / "judge"))
    loaded = category_judge.load(str(tmp_path / "judge"))
    assert loaded.judge_id == judge_id and loaded.classes == judge.classes and loaded.letterbox == (48, 64)
    assert torch.allclose(loaded.probabilities(xh), judge.probabilities(xh), atol=1e-6)
    cfg = json.loads((tmp_path / "judge" / category_judge.CONFIG).read_text())
    assert cfg["features"]["layers"] == ["relu4", "relu5"] and cfg["calibration"]["threshold"] == pytest.approx(judge.threshold)
    (tmp_path / "judge" / category_judge.WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="judge at .* is invalid"):
        category_judge.load(str(tmp_path / "judge"))
    (tmp_path / "judge" / category_judge.CONFIG).write_text('{"format": "something else"}')
    with pytest.raises(ModelError, match="not a catalog-render-judge/1 judge"):
        category_judge.load(str(tmp_path / "judge"))


def test_too_few_categories_is_a_catalog_error(trained):
    from catalog_render.errors import CatalogError

    _, (xt, ct, it), _ = trained
    with pytest.raises(CatalogError, match="at least 2 categories with >= 10 photos, found 1"):
        category_judge.train_judge(xt[:12], ct[:12], it[:12])


# --------------------------------------------------------------------------------- the gate


def test_gate_fails_renders_below_the_threshold_and_never_an_unscored_one():
    t = gate.QualityThresholds()
    ok = {"non_dominant_share": 0.5}
    assert gate.judge({**ok, "recognisability": 0.05}, None, t, 0.1) == (False, ["recognisability"])
    assert gate.judge({**ok, "recognisability": 0.1}, None, t, 0.1) == (True, [])
    assert gate.judge({**ok, "recognisability": None}, None, t, 0.1) == (True, [])  # category unknown to the judge
    assert gate.judge({**ok, "recognisability": 0.05}, None, t, None) == (True, [])  # no judge: not checked
    # retried like a blank render, up to BLANK_MAX_TRIES, even at max_tries 1
    assert gate.should_retry(["recognisability"], 1, t) and gate.should_retry(["recognisability"], 2, t)
    assert not gate.should_retry(["recognisability"], gate.BLANK_MAX_TRIES, t)
    # among failing tries, the more recognisable one is kept
    tries = [{"passed": False, "failed_checks": ["recognisability"], "recognisability": 0.02, "sharpness": 0.9},
             {"passed": False, "failed_checks": ["recognisability"], "recognisability": 0.08, "sharpness": 0.1}]
    assert gate.pick_best(tries) == 1


@pytest.mark.parametrize("value, ok", [("auto", True), (False, True), (0.2, True), (1, True), (True, False), ("on", False), (1.5, False), (-0.1, False)])
def test_min_recognisability_values(value, ok, tmp_path):
    from catalog_render.config import load_job

    job = tmp_path / "job.toml"
    job.write_text(f"[quality]\nmin_recognisability = {json.dumps(value)}\n".replace("false", "false").replace("true", "true"))
    if ok:
        assert load_job(job).quality.min_recognisability == value
    else:
        with pytest.raises(ConfigError, match=r"quality\.min_recognisability: .*expected \"auto\", false, or a probability in \[0, 1\]"):
            load_job(job)
    assert JobSpec().quality.min_recognisability == "auto"


# ------------------------------------------------------------------ the product check (unknown categories)


def _other_photos(fashion, category: str = "Sarees", n: int = 3):
    """``n`` real photos of a category the 4-class judge does not know."""
    rows = sorted((r for r in csv.DictReader(open(fashion / "metadata.csv", encoding="utf-8")) if r["articleType"] == category),
                  key=lambda r: int(r["id"]))[:n]
    ims = [imaging.to_array(imaging.letterbox(imaging.to_rgb(Image.open(fashion / r["image_file"])), 48, 64)) for r in rows]
    return torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).contiguous(), [category] * n, [r["id"] for r in rows]


def test_product_threshold_is_the_5th_percentile_of_real_photos_product_probability(trained, fashion):
    _, (xt, ct, it), _ = trained
    xo, co, io = _other_photos(fashion)
    judge = category_judge.train_judge(torch.cat([xt, xo]), ct + co, it + io, letterbox=(48, 64))
    assert judge.classes == category_judge.judge_classes(ct)  # 3 Sarees photos are too few to be a class
    # independently: 1 - P(not a product photo) on the 3 Sarees photos and, as they are fewer than
    # MIN_PRODUCT_CALIBRATION, the 8 calibration photos; then the 5th percentile
    labels = [judge.classes.index(c) for c in ct]
    _, cal = category_judge.calibration_split(it, labels)
    p_product = (1 - judge.probabilities(torch.cat([xo, xt[cal]]))[:, -1]).tolist()
    product = judge.info["calibration"]["product"]
    assert product["photos"] == 3 + len(cal)
    assert judge.product_threshold == pytest.approx(float(np.percentile(p_product, 5)), rel=1e-5)
    assert judge.product_probability(xo) == pytest.approx(p_product[:3], abs=1e-6)
    # noise and colour blobs are no product at all for the judge
    rng = np.random.default_rng(1)
    noise = torch.from_numpy(rng.integers(0, 256, (4, 3, 64, 48), dtype=np.uint8))
    assert max(judge.product_probability(noise)) < judge.product_threshold
    # a judge saved before the product calibration existed: the Bayes decision, 0.5
    judge.info["calibration"].pop("product")
    assert judge.product_threshold == category_judge.PRODUCT_FALLBACK_THRESHOLD == 0.5


def test_check_names_the_check_and_compares_with_the_outlier_probability(trained):
    from catalog_render import recognisability

    judge, _, _ = trained
    plan = recognisability.Plan(True, threshold=0.1, product_threshold=0.9, outlier_comparison=True)
    probs = [0.3, 0.05, 0.05, 0.2, 0.4]  # 4 categories, then P(not a product photo) = 0.4
    c = judge.classes
    got = recognisability.check(judge, probs, c[0], plan)
    # P(category) 0.3 against max(0.1, 0.4): fails although it is 3x the calibrated threshold
    assert got["recognisability"] == 0.3 and got["recognisability_threshold"] == 0.4 and got["recognisability_note"].startswith("category check")
    assert gate.judge({"non_dominant_share": 0.5, **got}, None, gate.QualityThresholds(), 0.1) == (False, ["recognisability"])
    got = recognisability.check(judge, [0.1, 0.7, 0.1, 0.05, 0.05], c[1], plan)
    assert got["recognisability_threshold"] == 0.1 and gate.judge({"non_dominant_share": 0.5, **got}, None, gate.QualityThresholds(), 0.1)[0]
    # an unknown category, or none: the product check, 1 - 0.4 against the product threshold
    for category in ("Sarees", None):
        got = recognisability.check(judge, probs, category, plan)
        assert got["recognisability"] == pytest.approx(0.6) and got["recognisability_threshold"] == 0.9
        assert got["recognisability_note"].startswith("product check")
    # a number for quality.min_recognisability: that threshold for either check, no outlier comparison
    fixed = recognisability.Plan(True, threshold=0.2, product_threshold=0.2, outlier_comparison=False)
    assert recognisability.check(judge, probs, c[0], fixed)["recognisability_threshold"] == 0.2
    assert recognisability.check(judge, probs, "Sarees", fixed)["recognisability_threshold"] == 0.2
