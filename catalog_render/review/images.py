"""Image bytes for the review page, found only through the manifest.

A request names a render_key and which image of that render it wants; the URI comes from the
render's manifest row (``image_uri``, ``publish_uri``, the ``thumb_256`` rendition, or
``reference_uri``, the product's photo) and the bytes from :mod:`catalog_render.storage`. Nothing
from the URL is ever joined into a path or an object key: an unknown render_key or image name is
a 404 (:class:`~catalog_render.review.data.UnknownRender`), and so is an object that is gone.

Only images are served: bytes in a format browsers show (PNG, JPEG, WebP, GIF; told apart by their
magic bytes, not by the name) are sent as they are with that type; any other format Pillow reads
(TIFF, BMP, ...) is decoded with the caps of :func:`catalog_render.imaging.decode_rgb` and sent as
PNG; anything else is refused (404). Reference thumbnails for the grid are reduced with Pillow to
at most :data:`THUMB_SIDE` pixels a side (JPEG, quality 90).
"""

from __future__ import annotations

import io
import json

from PIL import Image

from catalog_render import imaging, storage
from catalog_render.errors import StorageError
from catalog_render.review.data import IMAGE_LISTING_TTL_S, ReviewData
from catalog_render.review.errors import ImageGone, StorageUnavailable, UnknownRender

#: Images of a render, by the name used in ``/image/<render_key>/<name>``.
WHICH = ("render", "published", "thumb", "reference", "reference_thumb")
#: Longest side of a reference thumbnail, pixels.
THUMB_SIDE = 320

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def sniff(data: bytes) -> str | None:
    """The MIME type of PNG, JPEG, GIF or WebP bytes (by magic number); None for anything else."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_uri(row: dict, which: str) -> str | None:
    """The URI of one image of a review-table row (None: the render has no such image)."""
    if which == "render":
        return row["image_uri"]
    if which == "published":
        return row["publish_uri"] or row["image_uri"]
    if which == "thumb":
        try:
            renditions = json.loads(row["renditions"]) if row["renditions"] else {}
        except ValueError:
            renditions = {}
        thumb = renditions.get("thumb_256") if isinstance(renditions, dict) else None
        return thumb if isinstance(thumb, str) and thumb else row["image_uri"]
    if which in ("reference", "reference_thumb"):
        return row["reference_uri"]
    raise UnknownRender(f"no image {which[:40]!r}: a render has {', '.join(WHICH)}")


def _reduce(data: bytes, side: int) -> bytes | None:
    """JPEG of the image at most ``side`` px a side, or None when it is already that small."""
    im = imaging.decode_rgb(data)
    if max(im.size) <= side:
        return None
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def load(data: ReviewData, render_key: str, which: str) -> tuple[bytes, str]:
    """(bytes, MIME type) of one image of the render ``render_key``.

    Raises UnknownRender (no such render or image name, or the render has no reference photo),
    ImageGone (the object named by the manifest does not exist, or is not an image),
    StorageUnavailable (the store cannot be reached)."""
    if which not in WHICH:
        raise UnknownRender(f"no image {which[:40]!r}: a render has {', '.join(WHICH)}")
    row = data.row(render_key, max_age_s=IMAGE_LISTING_TTL_S)
    uri = image_uri(row, which)
    if not uri:
        raise UnknownRender(f"render {render_key[:80]!r} of product {row['product_id']!r} has no {which.replace('_', ' ')} image")
    try:
        body = storage.read_bytes(uri, max_bytes=imaging.MAX_BYTES)
    except storage.ObjectNotFound:
        raise ImageGone(f"the image object of render {render_key[:80]!r} (product {row['product_id']!r}) is gone: {storage.display(uri)} "
                        "was deleted after the run recorded it. The next `catalog-render run` on this output renders the product "
                        "again.") from None
    except storage.ObjectTooLarge as exc:
        raise ImageGone(f"{storage.display(uri)} is not served: {exc}") from None
    except StorageError as exc:
        raise StorageUnavailable(f"cannot read {storage.display(uri)}: {exc}") from None
    mime = sniff(body)
    try:
        if which == "reference_thumb":
            small = _reduce(body, THUMB_SIDE)
            if small is not None:
                return small, "image/jpeg"
        if mime is None:  # a format browsers do not show (TIFF, BMP, ...): decode with the caps, send PNG
            return imaging.encode(imaging.decode_rgb(body), "PNG"), "image/png"
    except imaging.ImageDecodeError as exc:
        raise ImageGone(f"{storage.display(uri)} is not a usable image: {exc}") from None
    return body, mime
