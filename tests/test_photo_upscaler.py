"""Which Real-ESRGAN model main images from photos use (kinds.main_image.photo_upscaler), and that
it is part of their render_key."""

from __future__ import annotations

from catalog_render.config import JobSpec
from catalog_render.kinds.main_image import PHOTO_UPSCALER, MainImageKind, photo_upscaler


def _spec(**quality) -> JobSpec:
    return JobSpec().with_overrides(kind="main-image", **{f"quality.{k}": v for k, v in quality.items()})


def test_auto_means_the_photo_model_and_an_explicit_choice_wins():
    assert PHOTO_UPSCALER == "realesrgan-x4plus"
    assert photo_upscaler(_spec(preset="amazon")) == "realesrgan-x4plus"
    assert photo_upscaler(_spec(preset="none")) == "realesrgan-x4plus"  # preset none makes Amazon's image
    assert photo_upscaler(_spec(preset="amazon", upscaler="realesr-animevideov3-x4")) == "realesr-animevideov3-x4"
    assert photo_upscaler(_spec(preset="amazon", upscaler="lanczos")) is None
    assert photo_upscaler(_spec(preset="ebay")) is None  # 500 px: Lanczos, as for renders


def test_the_upscaler_is_part_of_the_inputs_a_main_image_key_covers():
    kind = MainImageKind()
    auto, anime = kind.params(_spec(preset="amazon")), kind.params(_spec(preset="amazon", upscaler="realesr-animevideov3-x4"))
    assert auto["upscaler"] == "realesrgan-x4plus" and anime["upscaler"] == "realesr-animevideov3-x4"
    assert {k: v for k, v in auto.items() if k != "upscaler"} == {k: v for k, v in anime.items() if k != "upscaler"}
