"""Text on images (comparison and label kinds): fonts that cover the catalog's scripts, wrapping
and ellipsis inside a box, and drawing with Pillow's ImageDraw / ImageFont.

Fonts are Debian packages' files (:data:`FONTS`): DejaVu Sans (fonts-dejavu-core: Latin, Greek,
Cyrillic, Arabic, Hebrew, the ₹ and € signs) first, then Droid Sans Fallback
(fonts-droid-fallback: Chinese, Japanese, Korean). A text is split into runs, each drawn with the
first font whose character map (fontTools) holds every character of the run; a character no font
holds is drawn as U+FFFD (from DejaVu Sans) and counted, so a label never shows a tofu box without
the manifest saying so.

Shaping: with libraqm (Debian libraqm0; Pillow's wheels load it at run time) Pillow lays text out
with raqm: right-to-left runs (Arabic, Hebrew) are ordered and Arabic letters joined. Without it
Pillow's basic layout draws characters in logical order, one glyph each: Latin and CJK look right,
Arabic and Hebrew come out reversed and unjoined. :func:`engine` says which one is in use; it is
part of the comparison and label render keys (the pixels depend on it).
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
        runs = line.runs[::-1] if line.rtl and len(line.runs) > 1 else line.runs
        for t, i in runs:
            f = font(style, i, size)
            # raqm orders and joins a right-to-left run (base direction: the paragraph's)
            kw = {"direction": "rtl" if line.rtl else "ltr"} if engine() == "raqm" else {}
            draw.text((x, y), t, font=f, fill=fill, **kw)
            x += f.getlength(t)
        y += step
    return y
