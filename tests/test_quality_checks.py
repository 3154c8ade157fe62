"""Per-image checks against values computed by hand, and on real photos of ../shared/data."""

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageOps

from catalog_render.quality import checks

WHITE = (255, 255, 255)


def _product_on_white(h=60, w=80, colour=(200, 20, 30), box=(15, 45, 20, 60), seed=0):
    """White canvas with a textured product (colour +- noise) in box (top, bottom, left, right)."""
    img = np.full((h, w, 3), 255, np.uint8)
    t, b, left, r = box
    rng = np.random.default_rng(seed)
    patch = np.clip(np.array(colour) + rng.integers(-8, 9, (b - t, r - left, 3)), 0, 255)
    img[t:b, left:r] = patch.astype(np.uint8)
    return img


# ------------------------------------------------------------------------------------ exposure


def test_exposure_counts_pixels_with_every_channel_clipped():
    img = np.full((10, 10, 3), 128, np.uint8)
    img[0, :] = (250, 251, 255)  # 10 clipped highlights
    img[1, :5] = (255, 255, 255)  # 5 more
    img[1, 5] = (255, 255, 249)  # one channel below 250: not clipped
    img[2, :3] = (5, 0, 3)  # 3 clipped shadows
    img[2, 3] = (6, 0, 0)  # one channel above 5: not clipped
    e = checks.exposure(img)
    assert e.clipped_highlights == pytest.approx(15 / 100)
    assert e.clipped_shadows == pytest.approx(3 / 100)
    mask = np.zeros((10, 10), bool)
    mask[:2, :] = True  # 20 pixels, 15 of them highlights
    assert checks.exposure(img, mask).clipped_highlights == pytest.approx(15 / 20)
    assert checks.exposure(img, np.zeros((10, 10), bool)) == checks.Exposure(0.0, 0.0)


# ------------------------------------------------------------------------------- colourfulness


def test_colourfulness_of_half_red_half_blue_by_hand():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, :2] = (255, 0, 0)
    img[:, 2:] = (0, 0, 255)
    # rg: red 255, blue 0 -> mean 127.5, std 127.5
    # yb = (R+G)/2 - B: red 127.5, blue -255 -> mean -63.75, std 191.25
    expected = math.sqrt(127.5**2 + 191.25**2) + 0.3 * math.sqrt(127.5**2 + 63.75**2)
    assert checks.colourfulness(img) == pytest.approx(expected)
    assert checks.colourfulness(Image.fromarray(img)) == pytest.approx(expected)


def test_colourfulness_is_zero_for_grey_and_positive_for_a_uniform_colour():
    grey = np.dstack([np.arange(256, dtype=np.uint8).reshape(16, 16)] * 3)
    assert checks.colourfulness(grey) == 0.0
    red = np.full((3, 3, 3), (200, 0, 0), np.uint8)
    # no spread; rg = 200, yb = 100: M = 0.3 * sqrt(200^2 + 100^2)
    assert checks.colourfulness(red) == pytest.approx(0.3 * math.hypot(200, 100))


# ---------------------------------------------------------------------------------- resolution


def test_resolution_of_array_and_pil_image():
    r = checks.resolution(np.zeros((48, 64, 3), np.uint8))
    assert (r.width, r.height, r.longest_side, r.shortest_side) == (64, 48, 64, 48)
    assert r.aspect_ratio == pytest.approx(64 / 48)
    assert checks.resolution(Image.new("RGB", (300, 1000))).aspect_ratio == pytest.approx(0.3)


def test_rejects_non_rgb_arrays():
    with pytest.raises(ValueError, match="RGB uint8"):
        checks.exposure(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        checks.colourfulness(np.zeros((4, 4, 3), np.float32))


# ------------------------------------------------------------------------- foreground and fill


def test_foreground_mask_and_fill_of_a_product_on_white():
    img = _product_on_white(60, 80, box=(15, 45, 20, 60))
    mask = checks.foreground_mask(img)
    assert checks.background_colour(img) == WHITE
    assert mask[15:45, 20:60].all() and mask.sum() == 30 * 40
    # span 30/60 rows, 40/80 columns -> frame_fill 0.5; box area 1200 / 4800
    assert checks.frame_fill(mask) == pytest.approx(0.5)
    assert checks.box_area_ratio(mask) == pytest.approx(0.25)
    assert checks.frame_fill(np.zeros((5, 5), bool)) == 0.0


def test_foreground_mask_fills_holes_inside_the_product():
    img = _product_on_white(60, 80, colour=(30, 30, 30), box=(10, 50, 10, 70))
    img[20:40, 30:50] = 255  # a white highlight enclosed by the product
    assert checks.foreground_mask(img)[20:40, 30:50].all()


# ---------------------------------------------------------------------------------------- border


def test_black_frame_is_a_border_of_its_width():
    img = _product_on_white(60, 80)
    framed = np.asarray(ImageOps.expand(Image.fromarray(img), border=3, fill=(0, 0, 0)))
    b = checks.detect_border(framed)
    assert b.present and b.width_px == 3
    assert b.sides == {"top": 3, "bottom": 3, "left": 3, "right": 3}
    assert b.colour == (0, 0, 0)


def test_white_margin_around_a_product_is_not_a_border():
    b = checks.detect_border(_product_on_white(60, 80, box=(2, 58, 3, 77)))
    assert not b.present and b.width_px == 0 and b.colour is None


def test_bars_on_two_sides_are_a_border():
    img = _product_on_white(60, 80)
    img[:5] = (90, 90, 90)
    img[-5:] = (90, 90, 90)
    b = checks.detect_border(img)
    assert b.present and b.sides == {"top": 5, "bottom": 5, "left": 0, "right": 0}


def test_white_padding_around_a_grey_background_photo_is_a_border():
    photo = np.full((64, 48, 3), 200, np.uint8)  # grey studio background
    photo[20:44, 14:34] = (40, 40, 120)
    padded = np.asarray(ImageOps.pad(Image.fromarray(photo), (64, 64), color=WHITE))
    b = checks.detect_border(padded)
    assert b.present and b.sides["left"] == 8 and b.sides["right"] == 8 and b.colour == WHITE


def test_smooth_gradient_background_is_not_a_border():
    ramp = np.linspace(170, 235, 80).astype(np.uint8)  # a studio backdrop, lighter towards the right
    img = np.dstack([np.tile(ramp, (60, 1))] * 3)
    img[20:40, 30:50] = (150, 30, 30)
    assert not checks.detect_border(img).present


def test_real_photos_have_no_border_until_one_is_added(fashion):
    ikea = fashion.parent / "ikea" / "images"
    paths = sorted(ikea.glob("*.jpg"))[::200] + sorted((fashion / "images").glob("*.jpg"))[::300]
    assert len(paths) >= 20
    for p in paths:
        img = Image.open(p).convert("RGB")
        assert not checks.detect_border(img).present, p.name
    framed = ImageOps.expand(Image.open(paths[0]).convert("RGB"), border=6, fill=(30, 60, 150))
    buf = io.BytesIO()
    framed.save(buf, "JPEG", quality=85)  # the frame survives JPEG noise
    b = checks.detect_border(Image.open(buf))
    assert b.present and b.width_px == 6


# ------------------------------------------------------------------------------ near duplicates


def test_hash_distance_is_the_number_of_differing_bits():
    a, b = "3c00ff00aa550f0f", "3c01fe00aa550f1f"
    assert checks.hash_distance(a, b) == (int(a, 16) ^ int(b, 16)).bit_count() == 3
    assert checks.hash_distance("ffffffffffffffff", "0000000000000000") == 64


def test_groups_are_connected_components_of_close_pairs():
    hashes = {
        "a": "0000000000000000",
        "b": "0000000000000003",  # 2 bits from a
        "c": "000000000000000f",  # 2 from b, 4 from a
        "d": "ffffffffffffffff",
        "e": "fffffffffffffffc",  # 2 from d
        "f": "00000000ffff0000",  # 16 from a: alone
    }
    assert checks.near_duplicate_groups(hashes, max_distance=2) == [["a", "b", "c"], ["d", "e"]]
    assert checks.near_duplicate_groups(hashes, max_distance=0) == []
    assert checks.near_duplicate_groups({"a": hashes["a"]}) == []
    # colour variants of one layout are kept apart when colours are given
    colours = {"a": (200, 20, 30), "b": (200, 25, 30), "c": (20, 160, 40)}
    assert checks.near_duplicate_groups({k: hashes[k] for k in "abc"}, 2, colours=colours) == [["a", "b"]]


def test_phash_links_a_resized_reencoded_copy_not_a_different_product(fashion):
    photo = Image.open(fashion / "images" / "1988.jpg").convert("RGB")  # red T-shirt on a model
    small = photo.resize((48, 64), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=70)
    copy = Image.open(buf).convert("RGB")
    other = Image.open(fashion / "images" / "1636.jpg").convert("RGB")  # a white sports shoe
    hashes = {"orig": checks.perceptual_hash(photo), "copy": checks.perceptual_hash(copy), "shoe": checks.perceptual_hash(other)}
    assert len(hashes["orig"]) == 16
    assert checks.hash_distance(hashes["orig"], hashes["copy"]) <= checks.NEAR_DUPLICATE_MAX_DISTANCE
    assert checks.hash_distance(hashes["orig"], hashes["shoe"]) > 20
    assert checks.near_duplicate_groups(hashes) == [["copy", "orig"]]


# -------------------------------------------------------------------------------- colour names


@pytest.mark.parametrize("name, rgb", [
    ("Black", (0, 0, 0)),  # CSS Color 4: black #000000
    ("White", (255, 255, 255)),  # white #ffffff
    ("Red", (255, 0, 0)),  # red #ff0000
    ("Beige", (245, 245, 220)),  # beige #f5f5dc
    ("grey", (128, 128, 128)),  # grey #808080
    ("Navy Blue", (0x00, 0x11, 0x46)),  # xkcd rgb.txt: "navy blue #001146"
    ("Dark grey", (0x36, 0x37, 0x37)),  # xkcd: "dark grey #363737" (CSS darkgrey is lighter than grey)
    ("Off-white", (0xFF, 0xFF, 0xE4)),  # xkcd: "off white #ffffe4"
    ("Mustard", (0xCE, 0xB3, 0x01)),  # xkcd: "mustard #ceb301"
])
def test_reference_colours(name, rgb):
    ref = checks.reference_colour(name)
    assert ref is not None and ref.rgb == rgb
    assert ("CSS" in ref.source) == (" " not in name and "-" not in name and name != "Mustard")


@pytest.mark.parametrize("name", ["Multi", "Multicolour", "Assorted colours", "White,black", "Black/Red", "Pine",
                                  "Stainless steel", "Skin", "Grey Melange", "Metallic", "", None])
def test_names_without_a_single_reference(name):
    assert checks.reference_colour(name) is None


def test_colour_match_on_a_synthetic_product():
    img = np.full((40, 40, 3), 255, np.uint8)
    img[10:30, 10:30] = (200, 20, 30)
    m = checks.colour_match(img, "Red")
    assert m.dominant == (200, 20, 30)
    assert m.delta_e == pytest.approx(checks.delta_e((200, 20, 30), (255, 0, 0)))
    assert m.match and m.threshold == checks.COLOUR_MATCH_MAX_DELTA_E
    assert not checks.colour_match(img, "Green").match
    assert not checks.colour_match(img, "Navy Blue").match
    assert checks.colour_match(img, "Multi") is None
    assert checks.colour_match(np.full((20, 20, 3), 255, np.uint8), "Red") is None  # no product found


def test_delta_e_basics():
    assert checks.delta_e((10, 20, 30), (10, 20, 30)) == 0.0
    assert checks.delta_e((255, 0, 0), (0, 0, 255)) == pytest.approx(checks.delta_e((0, 0, 255), (255, 0, 0)))
    assert checks.delta_e((0, 0, 0), (255, 255, 255)) == pytest.approx(100.0, abs=0.01)  # L* 0 vs 100, no chroma


#: Measured agreement on the first 20 photos (by id) of each colour in ../shared/data/fashion:
#: own colour Black 0.85, White 0.65, Red 0.75, Navy Blue 0.70 (0.74 overall); the same photos
#: matched a wrong one of the four colours 0.17 of the time (mostly Black vs Navy Blue). Asserted
#: with margin below.
COLOUR_SAMPLE = ("Black", "White", "Red", "Navy Blue")


def test_colour_match_agreement_on_real_fashion_photos(fashion):
    import pandas as pd

    meta = pd.read_csv(fashion / "metadata.csv")
    own: dict[str, list[bool]] = {}
    wrong: list[bool] = []
    for colour in COLOUR_SAMPLE:
        ids = meta[meta.baseColour == colour].sort_values("id").id.head(20)
        for pid in ids:
            img = Image.open(fashion / "images" / f"{pid}.jpg")
            m = checks.colour_match(img, colour)
            own.setdefault(colour, []).append(bool(m and m.match))
            for other in COLOUR_SAMPLE:
                if other != colour:
                    wrong.append(checks.delta_e(m.dominant, checks.reference_colour(other).rgb) <= m.threshold)
    rates = {c: float(np.mean(v)) for c, v in own.items()}
    overall = float(np.mean([x for v in own.values() for x in v]))
    print(f"colour match: own {rates}, overall {overall:.2f}, wrong colour {np.mean(wrong):.2f}")
    assert overall >= 0.65
    assert min(rates.values()) >= 0.5
    assert np.mean(wrong) <= 0.25
    assert overall - np.mean(wrong) >= 0.4
