"""Product photos as a backfill sees them: probing one photo (exists, decodes within the caps) and
why a catalog row's photo cannot be used. The planner (:mod:`catalog_render.planning`) asks these;
``validate --check-images`` probes a whole catalog with :func:`check_photos`.
"""

from __future__ import annotations

import threading
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


#: Columns of ``OUTPUT/index/probes.parquet``: one row per photo probed, with the object's size and
#: version (S3 ETag or local mtime in ns) when it was probed, and the probe's answer (null: usable).
PROBES_SCHEMA = pa.schema([("uri", pa.string()), ("size", pa.int64()), ("version", pa.string()), ("problem", pa.string())])


def probes_uri(output_uri: str) -> str:
    return storage.join(output_uri, "index", "probes.parquet")


class ProbeCache:
    """A probe (:func:`probe_image`) that remembers: called with a photo URI, it asks the store for
    the object's size and version (:func:`storage.stat`: an S3 HEAD, or a local stat; or the
    listing :meth:`prefetch` made) and downloads and decodes the photo only when that pair differs
    from the last probe recorded for the URI. A missing object answers ``image missing (not
    found)`` without a download. ``probed`` and ``reused`` count the two outcomes; :meth:`save`
    writes what is known to ``OUTPUT/index/probes.parquet`` (:data:`PROBES_SCHEMA`).

    A photo rewritten with the same size within the same nanosecond (local) is not seen as
    changed; on S3 any rewrite changes the ETag. Thread-safe (the planner probes in threads)."""

    def __init__(self, known: pa.Table | None = None, probe: Callable[[str], str | None] = probe_image):
        rows = known.to_pylist() if known is not None else []
        self._known = {r["uri"]: (r["size"], r["version"], r["problem"]) for r in rows}
        self._stats: dict[str, tuple[int, str]] = {}
        self._probe, self._lock = probe, threading.Lock()
        self.probed = self.reused = 0

    @classmethod
    def load(cls, output_uri: str, probe: Callable[[str], str | None] = probe_image) -> ProbeCache:
        """The output's cache (empty when it has none). Raises StorageError when it cannot be read."""
        try:
            return cls(storage.read_parquet(probes_uri(output_uri)).select(PROBES_SCHEMA.names).cast(PROBES_SCHEMA), probe)
        except storage.ObjectNotFound:
            return cls(None, probe)

    def prefetch(self, uris) -> None:
        """Learn the size and ETag of many S3 photos with LIST requests (one per 1,000 objects under
        each folder holding 20 or more of them) instead of one HEAD each. Local URIs: nothing."""
        folders: dict[str, int] = {}
        for u in uris:
            if u and storage.is_s3(u):
                folders[u.rsplit("/", 1)[0] + "/"] = folders.get(u.rsplit("/", 1)[0] + "/", 0) + 1
        for folder, n in folders.items():
            if n >= 20:
                self._stats.update(storage.list_stats(folder))

    def __call__(self, uri: str) -> str | None:
        try:
            st = self._stats.get(uri) or storage.stat(uri)
        except storage.ObjectNotFound:
            return "image missing (not found)"
        hit = self._known.get(uri)
        if hit is not None and hit[:2] == st:
            with self._lock:
                self.reused += 1
            return hit[2]
        problem = self._probe(uri)
        with self._lock:
            self.probed += 1
            self._known[uri] = (*st, problem)
        return problem

    def save(self, output_uri: str) -> str:
        """Write the cache atomically; returns its URI. Raises StorageError."""
        uris = sorted(self._known)
        table = pa.table({"uri": uris, "size": [self._known[u][0] for u in uris], "version": [self._known[u][1] for u in uris],
                          "problem": [self._known[u][2] for u in uris]}, schema=PROBES_SCHEMA)
        uri = probes_uri(output_uri)
        storage.write_parquet(table, uri)
        return uri
