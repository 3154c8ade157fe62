"""The white-background rule for apparel on a model (quality.backdrop, amazon.white_background_apparel)
on real fashion photos of ../shared/data, with answers counted independently from the pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from catalog_render.quality import presets, scores
from catalog_render.quality.backdrop import backdrop_whiteness


def _rgb(fashion, pid: str) -> np.ndarray:
    return np.asarray(Image.open(fashion / "images" / f"{pid}.jpg").convert("RGB"))


def _white(a: np.ndarray) -> np.ndarray:
    return (a >= 250).all(axis=2)


def test_a_model_cut_by_the_bottom_edge_is_not_background(fashion):
    rgb = _rgb(fashion, "1563")  # a T-shirt on a model on white, legs cut by the photo's bottom edge
    h, w = rgb.shape[:2]
    b = backdrop_whiteness(rgb)
    assert b.crossing == "bottom" and b.whiteness == 1.0
    # independently: the bottom 1 % band's non-white columns are one stretch away from both corners ...
    bh = max(1, round(h * 0.01))
    cols = np.flatnonzero(~_white(rgb[h - bh:]).all(axis=0))
    assert cols[0] > 0.02 * w and cols[-1] < 0.98 * w
    assert abs(b.crossing_share - (cols[-1] - cols[0] + 1) / w) < 1e-9
    # ... and the plain band measure counts those pixels as background, failing the 99 % rule
    assert scores.background_whiteness(rgb, 250, 0.01) < 0.9


def test_a_backdrop_reaching_the_corners_is_never_excused(fashion):
    grey = _rgb(fashion, "1584")  # grey studio backdrop: every band is grey
    assert backdrop_whiteness(grey).whiteness == 0.0 and backdrop_whiteness(grey).crossing is None
    # a white-background photo with a grey floor strip along its whole bottom edge
    rgb = _rgb(fashion, "1563").copy()
    rgb[-6:] = 200
    b = backdrop_whiteness(rgb)
    assert b.crossing is None and b.whiteness < 0.8
    band = np.zeros(rgb.shape[:2], bool)
    bh, bw = max(1, round(rgb.shape[0] * 0.01)), max(1, round(rgb.shape[1] * 0.01))
    band[:bh] = band[-bh:] = True
    band[:, :bw] = band[:, -bw:] = True
    assert b.whiteness == _white(rgb)[band].mean()


def test_the_apparel_rule_applies_to_apparel_only(fashion):
    rgb = Image.fromarray(_rgb(fashion, "1563"))
    plain, worn = presets.evaluate(rgb, "amazon"), presets.evaluate(rgb, "amazon", apparel=True)
    assert "amazon.white_background" in plain.failed and "amazon.white_background_apparel" not in plain.failed
    assert "amazon.white_background" not in worn.failed and "amazon.white_background_apparel" not in worn.failed
    grey = Image.fromarray(_rgb(fashion, "1584"))
    assert "amazon.white_background_apparel" in presets.evaluate(grey, "amazon", apparel=True).failed


def test_render_kind_judges_worn_garments_by_the_apparel_rule(fashion, tiny_gan):
    """A render of a worn category gets the apparel rule, like --kind main-image, whatever the job's
    ``quality.apparel``; other categories keep the non-apparel rule unless the job sets it."""
    from catalog_render.generators import registry
    from catalog_render.kinds.render import RenderWorker

    model_id = registry.load_generator(str(tiny_gan)).model_id

    def worker(**quality):
        return RenderWorker(str(tiny_gan), model_id, "/nonexistent", {}, "png", "r", 250, 0.01, 1, False,
                            quality={"preset": "amazon", "upscaler": "lanczos", **quality})

    photo = Image.open(fashion / "images" / "1563.jpg").convert("RGB")  # T-shirt on a model cut at the bottom
    # independent of the kind: the photo fails the non-apparel white-background rule, passes the apparel one
    assert "amazon.white_background" in presets.evaluate(photo, "amazon").failed
    assert "amazon.white_background_apparel" not in presets.evaluate(photo, "amazon", apparel=True).failed
    default, everything = worker(), worker(apparel=True)

    def failed(w, category):
        return w._assess(photo, None, "White", category)["compliance"].failed

    assert failed(default, "Tshirts") == [] and failed(everything, "Tshirts") == []
    assert failed(default, "Watches") == ["amazon.white_background"]  # not worn: the model's cut legs are not background
    assert failed(everything, "Watches") == []
