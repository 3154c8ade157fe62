"""What an output has rendered, as the planner looks it up: :class:`DoneIndex`.

Built from the manifest index (:meth:`catalog_render.manifest_index.ManifestIndex.done`) or from a
mapping of render_key -> image_uri; looked up one catalog batch at a time by
:class:`catalog_render.planning.Planner`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class DoneIndex:
    """The output's ``ok`` renders as the planner looks them up: ``known`` (every ok render_key,
    image present or not) and ``current`` (those of them whose image object exists: such a product
    is up to date; a product whose key is known but not current is re-rendered with plan_reason
    ``render_key in manifest but its image is missing``). Each a string Array or a list;
    ``current`` must be a subset of ``known``.

    Lookups (:meth:`lookup`) are binary searches in the known keys' sha256 digests, sorted once
    (32 bytes a key: 10^7 keys take 320 MB; a batch's lookup is O(batch log n)); when a key is not
    64 lowercase hex digits, keys are looked up as strings (pyarrow ``is_in``)."""

    def __init__(self, current, known):
        self.current, self.known = (pa.array(k, pa.string()) if not isinstance(k, (pa.Array, pa.ChunkedArray)) else k for k in (current, known))
        self.known = self.known.combine_chunks() if isinstance(self.known, pa.ChunkedArray) else self.known
        self._words, order = _digests(self.known)
        if self._words is not None:
            self._current = np.asarray(pc.is_in(self.known, value_set=self.current), dtype=bool)[order]

    @classmethod
    def from_mapping(cls, done_keys: dict[str, str], existing_images) -> DoneIndex:
        """From render_key -> image_uri of ok rows and the set of image URIs present."""
        return cls([k for k, u in done_keys.items() if u in existing_images], list(done_keys))

    def lookup(self, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(current, known): bool arrays, one entry per key of ``keys`` (a string Array)."""
        queries = _digests(keys, sort=False)[0] if self._words is not None else None
        if queries is None:
            return tuple(np.asarray(pc.is_in(keys, value_set=v).fill_null(False), dtype=bool) for v in (self.current, self.known))
        if not len(self._words):
            return np.zeros(len(keys), bool), np.zeros(len(keys), bool)
        pos = np.minimum(np.searchsorted(self._words[:, 0], queries[:, 0]), len(self._words) - 1)
        known = np.all(self._words[pos] == queries, axis=1)
        return known & self._current[pos], known


def _digests(keys: pa.Array, sort: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
    """((n, 4) uint64 words of 64-hex-digit keys, sorted by the first word when ``sort``, the
    sorting order), or (None, None) when a key is not 64 lowercase hex digits or (``sort``) two
    keys share their first word (then strings are compared)."""
    if len(keys) and not pc.all(pc.match_substring_regex(keys, r"^[0-9a-f]{64}$")).as_py():
        return None, None
    words = np.empty((len(keys), 4), np.uint64)
    for start in range(0, len(keys), 1 << 20):  # a million keys at a time: no 640 MB text for 10^7 keys
        part = keys.slice(start, 1 << 20).cast(pa.string())
        text = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(part)], pa.int32()), part), "")[0].as_py()
        words[start:start + len(part)] = np.frombuffer(bytes.fromhex(text), dtype=">u8").reshape(-1, 4)
    if not sort:
        return words, None
    order = np.argsort(words[:, 0], kind="stable")
    words = words[order]
    if len(words) > 1 and np.any(words[1:, 0] == words[:-1, 0]):
        return None, None
    return words, order
