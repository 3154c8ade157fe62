"""The manifest index: what the planner needs from an output's manifest history, compacted into one
Parquet object, ``OUTPUT/index/manifest.parquet``, so planning never re-reads every old part.

A manifest part holds ~64 rows (``execution.manifest_flush_rows``), so a history of 10^7 rows is
~150,000 parts with 19 columns each. The planner needs two things from it: the render_keys of
``ok`` rows (with their image's file extension, to match the image objects present) and the
``quarantine_key`` of every quarantined row (a bad row is recorded once). The index holds exactly
that, one row per key (kind ``ok`` or ``quarantine``; ``ext`` of the latest ok row of a key), and
names in its Parquet metadata (``covered_runs``) the runs whose parts it has absorbed.
:func:`read_index` reads the index and only the parts of runs it does not cover;
:func:`compact` (run at the end of every run, under the output's lease, so no other run writes
parts meanwhile) folds them in. Whether an image object exists is decided by listing
``OUTPUT/images/`` (:meth:`ManifestIndex.done`): an image is named ``<render_key>.<ext>``
(:func:`catalog_render.manifest.image_uri_for`), so the listing names the keys present.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import manifest, storage
from catalog_render.done_index import DoneIndex

INDEX_SCHEMA = pa.schema([("kind", pa.string()), ("key", pa.string()), ("ext", pa.string())])
_RUN = re.compile(r"[/\\]run=([^/\\]+)[/\\]part-[^/\\]+\.parquet$")


def index_uri(output_uri: str) -> str:
    return storage.join(output_uri, "index", "manifest.parquet")


@dataclass
class ManifestIndex:
    """``table`` (:data:`INDEX_SCHEMA`, one row per (kind, key)) and ``covered_runs`` (the run ids
    whose parts it holds: the index object's and those read from parts since)."""

    table: pa.Table
    covered_runs: set[str]

    def quarantine_keys(self) -> set[str]:
        """quarantine_key of every quarantined row of the history."""
        return set(self.table.filter(pc.equal(self.table.column("kind"), "quarantine")).column("key").to_pylist())

    def done(self, image_uris) -> DoneIndex:
        """The planner's view (:class:`planning.DoneIndex`): every ok render_key (``known``) and
        those whose image ``<render_key>.<ext>`` is among ``image_uris`` (the listing of
        ``OUTPUT/images/``: ``current``)."""
        is_ok = pc.equal(self.table.column("kind"), "ok")
        ok = self.table if pc.all(is_ok).as_py() else self.table.filter(is_ok)  # no copy of a history without quarantines
        names = pa.array(image_uris, pa.string()) if not isinstance(image_uris, (pa.Array, pa.ChunkedArray)) else image_uris
        names = pc.replace_substring_regex(names, r"^.*[/\\]", "")  # file names
        mine = pc.binary_join_element_wise(ok.column("key"), ok.column("ext"), ".")
        done = DoneIndex(ok.column("key").filter(pc.is_in(mine, value_set=names)).combine_chunks(), ok.column("key").combine_chunks())
        del names, mine
        pa.default_memory_pool().release_unused()  # hand the listing's strings back before the catalog is read
        return done


def _from_parts(parts: list[str]) -> pa.Table:
    """Index rows of manifest parts, oldest first (ok rows: key = render_key, ext from image_uri)."""
    tables = []
    for uri in parts:
        t = storage.read_parquet(uri)
        status = t.column("status")
        ok = t.filter(pc.and_(pc.equal(status, "ok"), pc.is_valid(t.column("render_key"))))
        ext = pc.extract_regex(ok.column("image_uri").combine_chunks().cast(pa.string()), r"\.(?P<ext>[A-Za-z0-9]+)$").field("ext")
        tables.append(pa.table({"kind": pa.array(["ok"] * ok.num_rows, pa.string()), "key": ok.column("render_key").cast(pa.string()),
                                "ext": ext}, schema=INDEX_SCHEMA))
        if "quarantine_key" in t.column_names:
            q = t.filter(pc.and_(pc.equal(status, "skipped"), pc.is_valid(t.column("quarantine_key")))).column("quarantine_key")
            tables.append(pa.table({"kind": pa.array(["quarantine"] * len(q), pa.string()), "key": q.cast(pa.string()),
                                    "ext": pa.nulls(len(q), pa.string())}, schema=INDEX_SCHEMA))
    return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()


def read_index(output_uri: str) -> ManifestIndex:
    """The output's index plus the parts of runs it does not cover yet (read in full only those).
    An output without an index (made before indexes existed, or new) reads every part once.
    Raises StorageError when the store cannot be read."""
    base, covered = INDEX_SCHEMA.empty_table(), set()
    try:
        base = storage.read_parquet(index_uri(output_uri))
        covered = set(json.loads((base.schema.metadata or {}).get(b"covered_runs", b"[]")))
        base = base.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)
    except storage.ObjectNotFound:
        pass
    parts = storage.list_uris(manifest.manifest_prefix(output_uri), suffix=".parquet")
    runs = {uri: m.group(1) for uri in parts if (m := _RUN.search(uri))}
    fresh = [uri for uri in parts if runs.get(uri) not in covered]
    table = _latest(pa.concat_tables([base, _from_parts(fresh)])) if fresh else base
    return ManifestIndex(table, covered | {runs[u] for u in fresh if u in runs})


def _latest(table: pa.Table) -> pa.Table:
    """One row per (kind, key): the last one (the latest part's ext)."""
    t = table.append_column("_i", pa.array(range(table.num_rows), pa.int64()))
    last = t.group_by(["kind", "key"], use_threads=False).aggregate([("_i", "max")])
    return table.take(pa.array(np.sort(last.column("_i_max").to_numpy())))


def compact(output_uri: str) -> str:
    """Rewrite ``OUTPUT/index/manifest.parquet`` (atomically) to cover every run's parts; returns
    its URI. Call with the output's lease held (no run writes parts meanwhile). Raises
    StorageError when the store cannot be read or written."""
    idx = read_index(output_uri)
    table = idx.table.replace_schema_metadata({"covered_runs": json.dumps(sorted(idx.covered_runs))})
    uri = index_uri(output_uri)
    storage.write_parquet(table, uri)
    return uri
