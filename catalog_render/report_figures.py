"""The report's pictures: JPEG thumbnails (embedded as ``data:`` URIs), score histograms (PNG),
and the PNG contact sheet a README shows.

Images are read through :mod:`catalog_render.storage` and decoded by :mod:`catalog_render.imaging`
(byte and pixel caps), so a missing or broken image becomes a placeholder with the reason, never
an error.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from catalog_render import imaging, storage
from catalog_render.errors import StorageError
from catalog_render.report_data import load_run, sorted_ok
from catalog_render.templating import data_uri, format_number

#: Units of each score, for histogram axes.
SCORE_UNITS = {"psnr": "dB"}
#: Thumbnail bounding box in the HTML report, pixels (width, height): at most 128 px tall.
THUMB_BOX = (256, 128)
#: JPEG quality of embedded thumbnails.
THUMB_QUALITY = 85

#: PNG contact sheet geometry, pixels: each cell is render|reference (SHEET_THUMB square each,
#: SHEET_GAP apart) over a SHEET_LABEL_H label; cells are SHEET_GAP apart and from the edges.
SHEET_THUMB = 96
SHEET_GAP = 4
SHEET_LABEL_H = 14
#: Largest PNG contact sheet, bytes.
SHEET_MAX_BYTES = 500_000


def _load_image(uri: str) -> Image.Image:
    """Read and decode one image; raises StorageError or ImageDecodeError."""
    return imaging.decode_rgb(storage.read_bytes(uri, max_bytes=imaging.MAX_BYTES))


def thumbnail(uri: str | None) -> tuple[str | None, str]:
    """(data URI of a JPEG thumbnail at most THUMB_BOX, or None; why not / size text)."""
    if not uri:
        return None, "no image"
    try:
        im = _load_image(uri)
    except storage.ObjectNotFound:
        return None, "image missing"
    except StorageError as exc:
        return None, f"unreadable: {exc}"
    except imaging.ImageDecodeError as exc:
        return None, f"undecodable: {exc}"
    size = f"{im.width}\u00d7{im.height}"
    im.thumbnail(THUMB_BOX, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=THUMB_QUALITY)
    return data_uri(buf.getvalue(), "image/jpeg"), size


def thumbnails(uris: list[str | None]) -> dict[str, tuple[str | None, str]]:
    """Thumbnails of distinct URIs, read a few at a time (S3 latency dominates)."""
    distinct = sorted({u for u in uris if u})
    if not distinct:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(distinct))) as pool:
        return dict(zip(distinct, pool.map(thumbnail, distinct)))


#: Most x-axis ticks on a histogram: five labels of up to 6 characters fit its 260 px at 7 pt.
HIST_X_TICKS = 4


def histogram_figure(values: np.ndarray, name: str):
    """The histogram of ``values`` (float array, any shape) of the score ``name`` as a matplotlib
    ``Figure`` (260x180 px, Agg canvas, no pyplot, so no global backend state is touched): at most
    :data:`HIST_X_TICKS` + 1 x ticks, labelled with 3 significant digits and no offset text, so
    labels never run together (e.g. sharpness values around 0.001)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig = Figure(figsize=(3.25, 2.25), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bins = int(min(30, max(5, math.sqrt(values.size) * 2)))
    ax.hist(values, bins=bins, color="#4a78b5", edgecolor="white", linewidth=0.5)
    median = float(np.median(values))
    ax.axvline(median, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_title(f"median {format_number(median)} (dashed)", fontsize=8, color="#c0392b")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=HIST_X_TICKS))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    unit = SCORE_UNITS.get(name)
    ax.set_xlabel(f"{name} ({unit})" if unit else name, fontsize=8)
    ax.set_ylabel("renders", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout(pad=0.4)
    return fig


def histogram_png(values: np.ndarray, name: str) -> bytes:
    """:func:`histogram_figure` as PNG bytes."""
    buf = io.BytesIO()
    histogram_figure(values, name).savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# PNG contact sheet


def contact_sheet_size(count: int, cols: int) -> tuple[int, int]:
    """Pixel size (width, height) of a PNG contact sheet of ``count`` cells at most ``cols`` wide
    (before any downscaling to fit :data:`SHEET_MAX_BYTES`)."""
    ncols = max(1, min(cols, count))
    nrows = max(1, math.ceil(count / ncols))
    cell_w, cell_h = 2 * SHEET_THUMB + SHEET_GAP, SHEET_THUMB + SHEET_LABEL_H
    return ncols * cell_w + (ncols + 1) * SHEET_GAP, nrows * cell_h + (nrows + 1) * SHEET_GAP


def _sheet_cell_image(uri: str | None, fallback: str) -> Image.Image:
    box = (SHEET_THUMB, SHEET_THUMB)
    if uri:
        try:
            return imaging.letterbox(_load_image(uri), *box)
        except (StorageError, imaging.ImageDecodeError) as exc:
            fallback = "missing" if isinstance(exc, storage.ObjectNotFound) else "unreadable"
    im = Image.new("RGB", box, (236, 238, 241))
    draw = ImageDraw.Draw(im)
    font = _font(10)
    w = draw.textlength(fallback, font=font)
    draw.text(((SHEET_THUMB - w) / 2, SHEET_THUMB / 2 - 6), fallback, fill=(110, 117, 128), font=font)
    return im


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "\u2026", font=font) > width:
        text = text[:-1]
    return text + "\u2026"


def _encode_capped(im: Image.Image, max_bytes: int) -> bytes:
    """PNG of ``im`` within ``max_bytes``: full colour, else a 256-colour palette, else the
    palette image downscaled in 15% steps. Raises ValueError if even a tiny version is too big."""
    def png(x: Image.Image) -> bytes:
        buf = io.BytesIO()
        x.save(buf, "PNG", optimize=True)
        return buf.getvalue()

    data = png(im)
    scaled = im
    while len(data) > max_bytes:
        data = png(scaled.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
        if len(data) <= max_bytes:
            break
        w, h = int(scaled.width * 0.85), int(scaled.height * 0.85)
        if w < 32 or h < 16:
            raise ValueError(f"cannot fit a contact sheet in {max_bytes} bytes")
        scaled = im.resize((w, h), Image.Resampling.LANCZOS)
        data = png(scaled)
    return data


def write_contact_sheet_png(output_uri: str, dest_path: str, run_id: str | None = None, n: int = 48, cols: int = 8, max_bytes: int = SHEET_MAX_BYTES) -> str:
    """Write a PNG grid of up to ``n`` ok renders of a run (for a README) and return ``dest_path``.

    Cells are render | reference photo (each letterboxed on white into SHEET_THUMB = 96 px
    squares; a grey "no reference" / "missing" / "unreadable" square stands in when there is none)
    over a tiny product-id label (white cells on grey gutters), in the report's order (lowest ssim first, then by sharpness),
    ``min(cols, count)`` cells per row; the size is :func:`contact_sheet_size`. With no ok render
    the sheet is one empty cell saying so. The PNG is kept within ``max_bytes`` (default 500 KB)
    by palette quantisation and, if needed, downscaling. ``dest_path`` is a local path or
    ``s3://`` URI (written atomically via :mod:`catalog_render.storage`).

    Raises StorageError (no manifest, unknown run, unreadable output, failed write) and ValueError
    (``n`` or ``cols`` < 1).
    """
    if n < 1 or cols < 1:
        raise ValueError(f"n and cols must be >= 1, got n={n}, cols={cols}")
    _, run_id, rows, _ = load_run(output_uri, run_id)
    shown = sorted_ok(rows).slice(0, n).select(["product_id", "image_uri", "reference_uri"]).to_pylist()
    count = len(shown)
    width, height = contact_sheet_size(max(count, 1), cols)
    ncols = max(1, min(cols, count))
    sheet = Image.new("RGB", (width, height), (226, 229, 233))  # grey gutters separate the cells
    draw = ImageDraw.Draw(sheet)
    font = _font(10)
    cell_w, cell_h = 2 * SHEET_THUMB + SHEET_GAP, SHEET_THUMB + SHEET_LABEL_H
    if not shown:
        draw.rectangle((SHEET_GAP, SHEET_GAP, SHEET_GAP + cell_w - 1, SHEET_GAP + cell_h - 1), fill=(255, 255, 255))
        draw.text((SHEET_GAP + 4, SHEET_GAP + SHEET_THUMB // 2), _fit_text(draw, f"no ok renders in run {run_id}", font, cell_w - 8), fill=(90, 90, 90), font=font)

    def cell(r: dict) -> tuple[Image.Image, Image.Image]:
        return _sheet_cell_image(r["image_uri"], "no render"), _sheet_cell_image(r["reference_uri"], "no reference")

    with ThreadPoolExecutor(max_workers=min(8, max(1, count))) as pool:
        pairs = list(pool.map(cell, shown))
    for i, (r, (render, ref)) in enumerate(zip(shown, pairs)):
        x = SHEET_GAP + (i % ncols) * (cell_w + SHEET_GAP)
        y = SHEET_GAP + (i // ncols) * (cell_h + SHEET_GAP)
        draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=(255, 255, 255))
        sheet.paste(render, (x, y))
        sheet.paste(ref, (x + SHEET_THUMB + SHEET_GAP, y))
        label = _fit_text(draw, str(r["product_id"]), font, cell_w - 4)
        draw.text((x + 2, y + SHEET_THUMB + 1), label, fill=(40, 40, 40), font=font)
    storage.write_bytes(dest_path, _encode_capped(sheet, max_bytes), content_type="image/png")
    return dest_path


#: Side of the full-size crops of the report's upscaling section, pixels (1 image pixel = 1 CSS pixel).
UPSCALE_CROP = 320


def _crop_box(published: Image.Image, side: int) -> tuple[int, int, int, int]:
    """A ``side`` x ``side`` box centred on the product (the box of pixels with any channel < 250)
    of a published image, kept inside the image."""
    a = np.asarray(published)
    nonwhite = (a < 250).any(axis=2)
    if nonwhite.any():
        rows, cols = np.flatnonzero(nonwhite.any(axis=1)), np.flatnonzero(nonwhite.any(axis=0))
        cy, cx = (rows[0] + rows[-1]) // 2, (cols[0] + cols[-1]) // 2
    else:
        cy, cx = published.height // 2, published.width // 2
    side = min(side, published.width, published.height)
    left = int(min(max(0, cx - side // 2), published.width - side))
    top = int(min(max(0, cy - side // 2), published.height - side))
    return left, top, left + side, top + side


def _png_data_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return data_uri(buf.getvalue(), "image/png")


def upscaling(rows) -> dict | None:
    """The upscaling section: Real-ESRGAN against Lanczos on one render of the run, at full size.

    A :data:`UPSCALE_CROP` px crop of a published main image (as written: Real-ESRGAN, then Lanczos
    to the canvas) beside the same crop of the same raw render post-processed with Lanczos only.
    The product whose render fills most of its frame is shown (it has the most detail at full
    size). None (section omitted) when no ok row of the run was upscaled with Real-ESRGAN (an
    ``upscaler`` other than ``lanczos``); ``{"crop": None}`` when none of their images can be read."""
    from catalog_render.quality import presets
    from catalog_render.report_data import rows_with

    if "upscaler" not in rows.column_names:
        return None
    cand = [r for r in rows_with(rows, "upscaler") if r["status"] == "ok" and r["upscaler"] not in (None, "lanczos")
            and r.get("image_uri") and r.get("publish_uri")]
    if not cand:
        return None
    cand.sort(key=lambda r: (-(r.get("fill_ratio") or 0.0), str(r["product_id"])))
    for r in cand[:5]:
        try:
            published = _load_image(r["publish_uri"])
            raw = _load_image(r["image_uri"])
        except (StorageError, imaging.ImageDecodeError):
            continue
        lanczos = presets.postprocess(raw, r["preset"], size=published.size)
        box = _crop_box(published, UPSCALE_CROP)
        return {"crop": {
            "product_id": r["product_id"], "side": box[2] - box[0], "preset": r["preset"], "upscaler": r["upscaler"],
            "seconds": format_number(r["upscale_seconds"], 3) if r.get("upscale_seconds") is not None else None,
            "published_size": f"{published.width}×{published.height}", "render_size": f"{raw.width}×{raw.height}",
            "published_src": _png_data_uri(published.crop(box)), "lanczos_src": _png_data_uri(lanczos.crop(box)),
        }}
    return {"crop": None}
