"""Text on images (comparison and label kinds): fonts that cover the catalog's scripts, wrapping
and ellipsis inside a box, and drawing with Pillow's ImageDraw / ImageFont.

Fonts are Debian packages' files (:data:`FONTS`): DejaVu Sans (fonts-dejavu-core: Latin, Greek,
Cyrillic, Arabic, Hebrew, the ₹ and € signs) first, then Droid Sans Fallback
(fonts-droid-fallback: Chinese, Japanese, Korean). A text is split into runs, each drawn with the
first font whose character map (fontTools) holds every character of the run; a character no font
holds is drawn as U+FFFD (from DejaVu Sans) and counted, so a label never shows a tofu box without
the manifest saying so.

Order: each line is split into pieces of one font and one bidi embedding level (Unicode
Bidirectional Algorithm, UAX #9, computed by GNU FriBidi) and the pieces are put in visual order
(:func:`visual_runs`), so a line mixing right-to-left and CJK or Latin text reads right across
fonts. Shaping: with libraqm (Pillow's wheels load it at run time) each right-to-left piece is
drawn with direction ``rtl``: reversed and, for Arabic, joined. Without it Pillow's basic layout
draws one glyph per character, so right-to-left pieces are reversed here, unjoined.
:func:`engine` says which one is in use; it is part of the comparison and label render keys (the
pixels depend on it).
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from catalog_render.errors import DependencyMissing

#: Font files by style, in fallback order: (path, Debian package).
FONTS = {
    "regular": [("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "fonts-dejavu-core"),
                ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", "fonts-droid-fallback")],
    # DejaVu Sans Bold lacks 140 of the regular face's characters (some Arabic, mathematical): the regular face fills in
    "bold": [("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
             ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "fonts-dejavu-core"),
             ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", "fonts-droid-fallback")],
}
ELLIPSIS = "…"
REPLACEMENT = "\ufffd"


def check_fonts() -> None:
    """Raise DependencyMissing naming the Debian package of the first missing font file."""
    for chain in FONTS.values():
        for path, package in chain:
            if not Path(path).is_file():
                raise DependencyMissing(f"font file {path} is missing: install the Debian package {package} "
                                        f"(apt-get install {package})", package=package, install=f"apt-get install {package}")


@functools.lru_cache(maxsize=None)
def _cmap(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(path, lazy=True)["cmap"].getBestCmap())


@functools.lru_cache(maxsize=1)
def fonts_id() -> str:
    """First 16 hex of the sha256 over the font files' bytes (part of the render keys)."""
    h = hashlib.sha256()
    for path in sorted({p for chain in FONTS.values() for p, _ in chain}):
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def engine() -> str:
    """``raqm`` when Pillow can lay text out with libraqm, else ``basic`` (see the module doc)."""
    from PIL import features

    return "raqm" if features.check("raqm") else "basic"


@functools.lru_cache(maxsize=64)
def font(style: str, index: int, size: int):
    """The PIL FreeTypeFont of :data:`FONTS` ``[style][index]`` at ``size`` px."""
    from PIL import ImageFont

    layout = ImageFont.Layout.RAQM if engine() == "raqm" else ImageFont.Layout.BASIC
    return ImageFont.truetype(FONTS[style][index][0], size, layout_engine=layout)


@dataclass
class Line:
    """One laid-out line: ``runs`` (text, font index) in logical order, its ``width`` in px and
    whether it is right-to-left (``rtl``: its paragraph's first strong character is R or AL)."""

    runs: list[tuple[str, int]]
    width: float
    rtl: bool = False

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.runs)


def clean(text: str | None) -> tuple[str, int]:
    """(text with control/format characters removed and whitespace runs made one space, number of
    characters no font holds, replaced by U+FFFD)."""
    if not text:
        return "", 0
    out, missing = [], 0
    cmaps = [_cmap(p) for p, _ in FONTS["regular"]]
    for ch in " ".join(str(text).split()):
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf") and ch not in ("\u200c", "\u200d"):
            continue
        if ch != " " and not any(ord(ch) in c for c in cmaps):
            ch, missing = REPLACEMENT, missing + 1
        out.append(ch)
    return "".join(out), missing


def _runs(text: str, style: str) -> list[tuple[str, int]]:
    """Split ``text`` into runs drawn by one font each (spaces and marks stay with the run before)."""
    cmaps = [_cmap(p) for p, _ in FONTS[style]]
    runs: list[list] = []
    for ch in text:
        if runs and (ch == " " or unicodedata.combining(ch)):
            runs[-1][0] += ch
            continue
        idx = next((i for i, c in enumerate(cmaps) if ord(ch) in c), 0)
        if runs and runs[-1][1] == idx:
            runs[-1][0] += ch
        else:
            runs.append([ch, idx])
    return [(t, i) for t, i in runs]


def width(text: str, style: str, size: int) -> float:
    """Advance width of ``text`` in px (sum over its font runs)."""
    return sum(font(style, i, size).getlength(t) for t, i in _runs(text, style))


#: GNU FriBidi's paragraph directions (fribidi-bidi-types.h: FRIBIDI_TYPE_LTR / _RTL, the strong
#: letter masks 0x10 | 0x100, plus 0x1 for right-to-left).
FRIBIDI_PAR_LTR, FRIBIDI_PAR_RTL = 0x110, 0x111


@functools.lru_cache(maxsize=1)
def _fribidi():
    """libfribidi (Debian libfribidi0, the library raqm itself uses) through ctypes, or None."""
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("fribidi") or "libfribidi.so.0")
    except OSError:
        return None
    u32p = ctypes.POINTER(ctypes.c_uint32)
    lib.fribidi_get_bidi_types.argtypes = [u32p, ctypes.c_int, u32p]
    lib.fribidi_get_bracket_types.argtypes = [u32p, ctypes.c_int, u32p, u32p]
    lib.fribidi_get_par_embedding_levels_ex.argtypes = [u32p, u32p, ctypes.c_int, u32p, ctypes.POINTER(ctypes.c_int8)]
    lib.fribidi_get_par_embedding_levels_ex.restype = ctypes.c_int8
    return lib


def bidi_levels(text: str, rtl: bool) -> list[int]:
    """The embedding level of each character of one line (even = left-to-right, odd =
    right-to-left) by the Unicode Bidirectional Algorithm (UAX #9, rules P2-I1 and L1), computed
    by GNU FriBidi, in a paragraph of direction ``rtl``. Without libfribidi every character gets
    the paragraph's level (the line is drawn in one direction)."""
    import ctypes

    n, lib = len(text), _fribidi()
    if lib is None or n == 0:
        return [int(rtl)] * n
    chars = (ctypes.c_uint32 * n)(*map(ord, text))
    types, brackets = (ctypes.c_uint32 * n)(), (ctypes.c_uint32 * n)()
    lib.fribidi_get_bidi_types(chars, n, types)
    lib.fribidi_get_bracket_types(chars, n, types, brackets)
    base = ctypes.c_uint32(FRIBIDI_PAR_RTL if rtl else FRIBIDI_PAR_LTR)
    levels = (ctypes.c_int8 * n)()
    if lib.fribidi_get_par_embedding_levels_ex(types, brackets, n, ctypes.byref(base), levels) == 0:
        return [int(rtl)] * n
    return list(levels)


def visual_runs(runs: list[tuple[str, int]], rtl: bool) -> list[tuple[str, int, bool]]:
    """A line's font runs (logical order) as (text in logical order, font index, right-to-left)
    in visual order, left to right: the runs are split where the bidi level changes
    (:func:`bidi_levels`) and reordered by UAX #9 rule L2 (from the highest level down to the
    lowest odd one, every maximal sequence of runs at that level or above is reversed). A
    right-to-left run is drawn with direction ``rtl``, which reverses and shapes it (raqm)."""
    text = "".join(t for t, _ in runs)
    levels = bidi_levels(text, rtl)
    pieces: list[list] = []  # [text, font, level]
    i = 0
    for t, font_index in runs:
        for ch in t:
            if pieces and pieces[-1][1] == font_index and pieces[-1][2] == levels[i]:
                pieces[-1][0] += ch
            else:
                pieces.append([ch, font_index, levels[i]])
            i += 1
    if not pieces:
        return []
    odd = [p[2] for p in pieces if p[2] % 2]
    for level in range(max(p[2] for p in pieces), (min(odd) if odd else max(p[2] for p in pieces) + 1) - 1, -1):
        k = 0
        while k < len(pieces):
            if pieces[k][2] >= level:
                j = k
                while j < len(pieces) and pieces[j][2] >= level:
                    j += 1
                pieces[k:j] = pieces[k:j][::-1]
                k = j
            else:
                k += 1
    return [(t, f, lvl % 2 == 1) for t, f, lvl in pieces]


def is_rtl(text: str) -> bool:
    for ch in text:
        d = unicodedata.bidirectional(ch)
        if d in ("R", "AL"):
            return True
        if d == "L":
            return False
    return False


def _breakable(text: str) -> list[str]:
    """Tokens a line may break between: words with their trailing space; CJK characters one by one
    (those scripts have no spaces between words)."""
    tokens, cur = [], ""
    for ch in text:
        wide = unicodedata.east_asian_width(ch) in ("W", "F")
        if wide:
            if cur:
                tokens.append(cur)
            tokens.append(ch)
            cur = ""
        else:
            cur += ch
            if ch == " ":
                tokens.append(cur)
                cur = ""
    if cur:
        tokens.append(cur)
    return tokens


def _cut(text: str, max_w: float, style: str, size: int, suffix: str = "") -> str:
    """The longest prefix of ``text`` (never splitting a base character from its combining marks)
    that fits ``max_w`` px with ``suffix`` appended."""
    lo, hi = 0, len(text)
    while lo < hi:  # binary search on the character count
        mid = (lo + hi + 1) // 2
        if width(text[:mid].rstrip() + suffix, style, size) <= max_w:
            lo = mid
        else:
            hi = mid - 1
    while 0 < lo < len(text) and unicodedata.combining(text[lo]):
        lo -= 1
    return text[:lo].rstrip()


def wrap(text: str, max_w: float, style: str, size: int, max_lines: int) -> tuple[list[Line], bool]:
    """Lay ``text`` out in at most ``max_lines`` lines of at most ``max_w`` px. Breaks between words
    (CJK: between characters); a word longer than a line is broken inside. When the text does not
    fit, the last line ends with an ellipsis (…) and the second value is True. Every returned
    line's width is <= ``max_w``."""
    lines: list[str] = []
    cur = ""
    tokens = _breakable(text)
    i = 0
    while i < len(tokens) and len(lines) < max_lines:
        tok = tokens[i]
        if width((cur + tok).rstrip(), style, size) <= max_w:
            cur += tok
            i += 1
        elif cur:
            lines.append(cur.rstrip())
            cur = ""
        else:  # a single token wider than the line: break it inside
            head = _cut(tok, max_w, style, size) or tok[:1]
            lines.append(head)
            tokens[i] = tok[len(head):]
    truncated = i < len(tokens)
    if cur and len(lines) < max_lines:
        lines.append(cur.rstrip())
    elif cur:
        truncated = True
    if truncated and lines:
        rest = lines[-1] + " " + "".join(tokens[i:])
        lines[-1] = _cut(rest, max_w, style, size, ELLIPSIS) + ELLIPSIS
    rtl = is_rtl(text)  # the paragraph's direction holds for all its lines
    return [Line(_runs(s, style), width(s, style, size), rtl) for s in lines if s], truncated


def draw_lines(draw, lines: list[Line], box: tuple[int, int, int], style: str, size: int, fill, line_gap: float = 1.25,
               align: str = "start") -> int:
    """Draw ``lines`` into ``draw`` (PIL ImageDraw) from (left, top, width) of ``box``; ``align``
    ``start`` puts left-to-right lines at the left and right-to-left ones at the right, ``center``
    centres them. Returns the y below the last line."""
    left, top, w = box
    step = round(size * line_gap)
    y = top
    for line in lines:
        if align == "center":
            x = left + (w - line.width) / 2
        else:
            x = left + (w - line.width if line.rtl else 0)
        for t, i, rtl_run in visual_runs(line.runs, line.rtl):
            f = font(style, i, size)
            if engine() == "raqm":  # raqm reverses and joins a right-to-left run
                kw = {"direction": "rtl" if rtl_run else "ltr"}
            else:  # the basic layout draws characters in the order given: reverse them ourselves (not joined)
                t, kw = (t[::-1] if rtl_run else t), {}
            draw.text((x, y), t, font=f, fill=fill, **kw)
            x += f.getlength(t, **kw)
        y += step
    return y
