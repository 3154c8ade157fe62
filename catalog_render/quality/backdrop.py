"""Whiteness of a main image's background where a model runs off the frame.

A clothing main image on Amazon is shot on a model and must show the *product* completely, not
the model (Amazon Seller Central, "Image guidelines for clothing": MAIN images "shot on a model",
"on pure white background", "shows the product completely, without any part clipped"). A top worn
by a model is photographed with the model's legs cut by the bottom of the frame, trousers with the
torso cut by the top: there the subject, not the background, meets the frame. The plain band
measure (share of the outer band that is white, :func:`catalog_render.quality.scores.background_whiteness`)
counts those subject pixels as background; :func:`backdrop_whiteness` does not.

Rule (what is excluded): on at most one of the top and bottom edges, the stretch of the outer band
between the first and last non-white column, when that stretch leaves at least
:data:`CORNER_FRACTION` of the edge white at both ends (a subject crossing the edge, with
background on either side of it). A backdrop that reaches a corner (a grey floor strip, a grey
studio sweep, a vignette) is never excluded, and the left and right bands are always measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Share of the edge at each of its ends that must stay white for a non-white stretch of the top
#: or bottom band to count as the subject crossing the frame: the main-image kind centres a
#: product across at most 0.92 of the canvas width (presets.PRESETS["amazon"].fill), leaving 4 %
#: on each side; 2 % keeps a margin under that while any backdrop reaching a corner still fails.
CORNER_FRACTION = 0.02


@dataclass(frozen=True)
class Backdrop:
    """``whiteness``: share in [0, 1] of the measured band pixels with every channel >= the level;
    ``crossing``: ``"top"`` / ``"bottom"`` when that edge's stretch was excluded as the subject
    crossing the frame, else None; ``crossing_share``: the excluded stretch's share of that edge's
    length, [0, 1]."""

    whiteness: float
    crossing: str | None = None
    crossing_share: float = 0.0


def backdrop_whiteness(rgb: np.ndarray, level: int = 250, band_fraction: float = 0.01,
                       corner_fraction: float = CORNER_FRACTION) -> Backdrop:
    """Whiteness of the outer band of ``rgb`` (H, W, 3) uint8, not counting a subject that runs
    off the top or bottom edge (see the module doc for the rule and its source).

    The band is ``band_fraction`` of each side (at least 1 px), as
    :func:`catalog_render.quality.scores.background_whiteness` measures it; a pixel is white when
    every channel is >= ``level``. Raises ValueError when ``rgb`` is not (H, W, 3)."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an RGB array of shape (H, W, 3), got {a.shape}")
    h, w = a.shape[:2]
    bh, bw = max(1, round(h * band_fraction)), max(1, round(w * band_fraction))
    white = (a >= level).all(axis=2)
    band = np.zeros((h, w), dtype=bool)
    band[:bh, :] = band[-bh:, :] = True
    band[:, :bw] = band[:, -bw:] = True
    margin = max(1, round(w * corner_fraction))
    best: tuple[int, str, int, int] | None = None  # (non-white pixels, edge, first, last)
    for edge, rows in (("top", slice(0, bh)), ("bottom", slice(h - bh, h))):
        cols = np.flatnonzero(~white[rows, :].all(axis=0))
        if cols.size == 0 or cols[0] < margin or cols[-1] > w - 1 - margin:
            continue
        n = int((~white[rows, :]).sum())
        if best is None or n > best[0]:
            best = (n, edge, int(cols[0]), int(cols[-1]))
    crossing, share = None, 0.0
    if best is not None:
        _, crossing, first, last = best
        rows = slice(0, bh) if crossing == "top" else slice(h - bh, h)
        band[rows, first:last + 1] = False
        share = (last - first + 1) / w
    return Backdrop(float(white[band].mean()), crossing, share)
