"""A preset's measurements of a render's post-processing, made on a reduced copy of it.

``presets.measure(presets.postprocess(render, preset))`` enlarges a 64x48 render to the preset's
canvas (750x1000 to 1650x2200 px) and then measures it, which costs several times the render
itself: the border search and edge whiteness run on every pixel of the canvas. Every rule but the
size rules measures a ratio (fills, shares, colours), which does not depend on the canvas's scale,
and the size of the post-processed image is the preset's canvas by construction. So the same
post-processing is made on a canvas of the same aspect ratio reduced to at most
:data:`REDUCED_MAX_SIDE` px, measured there, and its size measurements are replaced by the full canvas's.
``tests/test_preset_reduced.py`` compares both on real renders and photos.
"""

from __future__ import annotations

from PIL import Image

from catalog_render.quality import presets

#: Longest side of the reduced canvas (px): a 48x64 render is enlarged 2x to it, and fills are
#: exact to about 1 px of it per edge (0.008); tests/test_preset_reduced.py checks the agreement.
REDUCED_MAX_SIDE = 128

#: Measurements in pixels that are rescaled to the full canvas (the others are ratios or colours).
_PIXEL_KEYS = ("border_width_px",)


def reduced_canvas(size: tuple[int, int], max_side: int = REDUCED_MAX_SIDE) -> tuple[tuple[int, int], float]:
    """``((width, height), scale)``: ``size`` (px) scaled so its longest side is at most ``max_side``
    px (each side at least 1), and the factor from the full size to it (1.0 when already small)."""
    scale = min(1.0, max_side / max(size))
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), scale


def measure_postprocessed(image: Image.Image, preset: str | presets.Preset, colour: str | None = None,
                          max_side: int = REDUCED_MAX_SIDE) -> tuple[dict, Image.Image]:
    """``(measurements, reduced)``: :func:`presets.measure` of ``presets.postprocess(image, preset)``
    (Lanczos, no upscaler) taken on the post-processing made on a canvas reduced to at most
    ``max_side`` px; ``width``, ``height``, ``longest_side``, ``shortest_side`` and ``aspect_ratio``
    are the full canvas's, ``border_width_px`` is scaled up to it. ``reduced`` is that small
    post-processed image (RGB). A preset without a canvas (``none``) measures the image itself.
    Raises what ``presets.measure`` raises (ValueError for an image that is not RGB-like)."""
    p = presets.get_preset(preset)
    if p.size is None:
        im = presets.postprocess(image, p)
        return presets.measure(im, colour), im
    small_size, scale = reduced_canvas(p.size, max_side)
    small = presets.postprocess(image, p, size=small_size)
    m = presets.measure(small, colour)
    w, h = p.size
    m.update(width=w, height=h, longest_side=max(w, h), shortest_side=min(w, h), aspect_ratio=w / h)
    for k in _PIXEL_KEYS:
        if m.get(k):
            m[k] = round(m[k] / scale)
    return m, small
