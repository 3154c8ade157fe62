"""Product photos as a backfill sees them: probing one photo (exists, decodes within the caps) and
why a catalog row's photo cannot be used. The planner (:mod:`catalog_render.planning`) asks these;
``validate --check-images`` probes a whole catalog with :func:`check_photos`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from catalog_render import imaging, storage
from catalog_render.catalog import image_uri_problem


def probe_image(uri: str) -> str | None:
    """None when the image object exists and decodes within the caps, else why not:
    ``image missing (not found)``, ``image undecodable: <empty file (0 bytes) | not an image |
    truncated (...) | corrupt (...)>``, ``image refused: exceeds pixel cap: 900,000,000 px (...)``
    or ``image refused: exceeds byte cap: ...`` (caps: :data:`imaging.MAX_PIXELS`,
    :data:`imaging.MAX_BYTES`; an over-cap object is refused before it is read or decompressed).

    Raises StorageError when the store cannot answer (unreachable endpoint, denied access, a
    directory): a photo that cannot be checked is not a missing photo, and a backfill must not
    render a whole catalog because S3 is down."""
    try:
        imaging.decode_rgb(storage.read_bytes(uri, max_bytes=imaging.MAX_BYTES))
        return None
    except storage.ObjectNotFound:
        return "image missing (not found)"
    except storage.ObjectTooLarge as exc:
        return f"image refused: exceeds byte cap: {exc.size:,} bytes (max {exc.limit:,})"
    except imaging.ImageTooLarge as exc:
        return f"image refused: {exc}"
    except imaging.ImageDecodeError as exc:
        return f"image undecodable: {exc}"


def photo_problem(uri: str | None, probe: Callable[[str], str | None] = probe_image) -> str | None:
    """Why a catalog row's photo cannot be used (the reason a backfill renders the product), or
    None: ``image missing (no image_uri)``, ``image_uri refused: <why>`` (catalog.image_uri_problem),
    or what ``probe`` (:func:`probe_image`) says. Raises StorageError as ``probe`` does."""
    if not uri:
        return "image missing (no image_uri)"
    refused = image_uri_problem(uri)
    return f"image_uri refused: {refused}" if refused else probe(uri)


def check_photos(catalog: pa.Table, threads: int = 16, probe: Callable[[str], str | None] = probe_image) -> tuple[list, int]:
    """Probe every photo of a catalog as a backfill would (:func:`photo_problem`), ``threads`` at a
    time. Returns ``(problems, without_uri)``: ``problems`` lists ``(row, product_id, reason)`` in
    row order for every row whose ``image_uri`` is set but unusable (missing object, empty, not an
    image, truncated, over the caps, refused path); ``without_uri`` counts rows with no
    ``image_uri`` (not a problem: a backfill renders them). Raises StorageError when the store
    cannot answer (``validate --check-images`` exits 5 then)."""
    rows = catalog.select([c for c in ("product_id", "image_uri") if c in catalog.column_names]).to_pylist()
    uris = [r.get("image_uri") for r in rows]
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(lambda u: photo_problem(u, probe) if u else None, uris))
    problems = [(i, r.get("product_id"), why) for i, (r, why) in enumerate(zip(rows, found)) if why]
    return problems, sum(1 for u in uris if not u)
