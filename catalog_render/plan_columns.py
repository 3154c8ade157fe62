"""Columnar building blocks of the planner: prompts, conditioning JSON, seeds and render_keys for a
whole Arrow batch at once, byte-identical to the per-row definitions in :mod:`catalog_render.planning`.

The per-row definitions (:func:`planning.build_prompt`, ``Conditioning.to_json``,
:func:`planning.render_key`, :func:`planning.product_seed`) are Python's ``str.format``, ``re.sub``
and ``json.dumps``; here the same strings are assembled with pyarrow compute kernels (string
concatenation, RE2 replacement, per-row list joins), and only the sha256 digests run in a Python
loop (hashlib, about 1 µs per row). Where Arrow cannot reproduce Python exactly the rows concerned
are computed by the per-row code: strings holding control characters (``json.dumps`` escapes them
as ``\\uXXXX``) and templates with a format spec, a conversion or an index (``{title!r}``,
``{title:>9}``, ``{attributes.x[0]}``).

Equivalences relied on (checked by tests/test_plan_scale.py against the per-row planner on the
fashion and IKEA catalogs and on edge-case rows):

* ``json.dumps(s, ensure_ascii=False)`` escapes exactly ``"``, ``\\`` and U+0000-U+001F
  (CPython's ``c_encode_basestring``); the first two are escaped here, the third is the fallback.
* Python's ``\\s`` on ``str`` is the 29 code points for which ``str.isspace()`` holds; RE2's
  ``\\s`` is ASCII only, so :data:`PY_SPACE` spells the 29 out.
* ``sort_keys`` orders by code point, which is the byte order of UTF-8 that Arrow's ``less`` and
  ``sort_indices`` use; ``dict(pairs)`` keeps the last value of a repeated key.
"""

from __future__ import annotations

import hashlib
import json
import string

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: RE2 character class body of the code points Python's ``re`` matches with ``\s`` on str
#: (every ``c`` with ``chr(c).isspace()``: U+0009-000D, U+001C-0020, U+0085, U+00A0, U+1680,
#: U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000).
PY_SPACE = r"\t-\r\x1c-\x20\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_NOT_SPACE_SPACE = PY_SPACE.replace(r"\x1c-\x20", r"\x1c-\x1f")  # PY_SPACE without " "
_CONTROL = r"[\x00-\x1f]"
_MAP = pa.map_(pa.string(), pa.string())


def _str(arr) -> pa.Array:
    """A string Array (chunks combined, large_string cast down, null type -> all-null strings)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.string())
    return arr if arr.type == pa.string() else arr.cast(pa.string())


def concat(*parts) -> pa.Array:
    """Element-wise concatenation of string Arrays and Python str constants (null if any is null)."""
    return pc.binary_join_element_wise(*[pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts], "")


def json_strings(arr) -> pa.Array:
    """``json.dumps(v, ensure_ascii=False)`` of every value: a quoted, escaped JSON string, or
    ``null`` for a null. (n,) string -> (n,) string, no nulls."""
    arr = _str(arr)
    out = concat('"', pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"'), '"').fill_null("null")
    control = pc.match_substring_regex(arr, _CONTROL).fill_null(False)
    if pc.any(control).as_py():
        values = [json.dumps(v, ensure_ascii=False) for v in arr.filter(control).to_pylist()]
        out = pc.replace_with_mask(out, control, pa.array(values, pa.string()))
    return out


class Attributes:
    """A batch's ``attributes`` map column as sorted, de-duplicated entries (what
    ``dict(sorted(dict(pairs).items()))`` gives per row): ``keys``/``values`` (string Arrays,
    values nullable), ``rows`` (int64 numpy: the row of each entry, ascending) and ``n`` rows."""

    def __init__(self, col, n: int):
        self.n = n
        self._json: tuple[pa.Array, pa.Array] | None = None  # JSON of keys and values, made once
        if col is None:
            self.keys = self.values = pa.array([], pa.string())
            self.rows = np.zeros(0, np.int64)
            return
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if col.type != _MAP:
            col = col.cast(_MAP)
        offsets = np.asarray(col.offsets, dtype=np.int64)  # absolute into col.values (a slice keeps its parent's child)
        lengths = np.diff(offsets)
        if col.null_count:
            lengths[np.asarray(col.is_null())] = 0  # a null map may still span entries: not its own
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        starts = np.repeat(offsets[:-1] - (np.cumsum(lengths) - lengths), lengths)
        take = pa.array(starts + np.arange(len(rows), dtype=np.int64))
        keys, values = col.values.field(0).take(take), col.values.field(1).take(take)
        if len(keys) > 1:
            same_row = rows[1:] == rows[:-1]
            ordered = np.asarray(pc.less(keys.slice(0, len(keys) - 1), keys.slice(1)))
            if not np.all(ordered | ~same_row):  # some row is unsorted or repeats a key: sort (stable) and keep each key's last value
                t = pa.table({"row": rows, "key": keys, "i": np.arange(len(keys))})
                order = pc.sort_indices(t, [("row", "ascending"), ("key", "ascending"), ("i", "ascending")])
                rows, keys, values = rows[np.asarray(order)], keys.take(order), values.take(order)
                later_same = np.zeros(len(keys), bool)
                later_same[:-1] = (rows[1:] == rows[:-1]) & np.asarray(pc.equal(keys.slice(0, len(keys) - 1), keys.slice(1)))
                keep = pa.array(~later_same)
                rows, keys, values = rows[~later_same], keys.filter(keep), values.filter(keep)
        self.keys, self.values, self.rows = _str(keys), _str(values), rows

    def json_objects(self, item_sep: str, key_sep: str) -> pa.Array:
        """Per row ``{"k":"v",...}`` as json.dumps writes the sorted dict with separators
        ``(item_sep, key_sep)``; ``{}`` for no attributes. (n,) string."""
        if self._json is None:
            self._json = (json_strings(self.keys), json_strings(self.values))
        entries = concat(self._json[0], key_sep, self._json[1])
        offsets = np.zeros(self.n + 1, np.int32)
        np.cumsum(np.bincount(self.rows, minlength=self.n), out=offsets[1:])
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), entries), item_sep)
        return concat("{", joined, "}")

    def take(self, idx: np.ndarray) -> Attributes:
        """The entries of rows ``idx`` (ascending int positions), renumbered 0..len(idx)-1."""
        out = Attributes(None, len(idx))
        renumber = np.full(self.n, -1, np.int64)
        renumber[idx] = np.arange(len(idx))
        rows = renumber[self.rows]
        keep = rows >= 0
        mask = pa.array(keep)
        out.keys, out.values, out.rows = self.keys.filter(mask), self.values.filter(mask), rows[keep]
        if self._json is not None:
            out._json = (self._json[0].filter(mask), self._json[1].filter(mask))
        return out

    def lookup(self, name: str, missing: str | None = "", null: str | None = "None") -> pa.Array:
        """Per row the value of attribute ``name``; ``missing`` where the row lacks it, ``null``
        where its value is null. The defaults are what ``_Attrs.__getattr__`` gives a template
        (``str.format`` of None is ``"None"``). (n,) string."""
        where = np.flatnonzero(np.asarray(pc.equal(self.keys, name).fill_null(False)))
        index = np.full(self.n, -1, np.int64)
        index[self.rows[where]] = where
        values = self.values if null is None else self.values.fill_null(null)
        taken = values.take(pa.array(index, mask=index < 0))
        return taken if missing is None else taken.fill_null(missing)


def template_parts(template: str) -> list[tuple[str, str | None]] | None:
    """(literal, field) pairs of a prompt template (``str.format`` grammar), or None when a field
    has a format spec, a conversion or an index (those rows are formatted by Python)."""
    parts = []
    for literal, fieldname, spec, conversion in string.Formatter().parse(template):
        if fieldname is not None and (spec or conversion or "[" in fieldname):
            return None
        parts.append((literal, fieldname))
    return parts


def prompts(parts: list[tuple[str, str | None]], batch: pa.Table, attrs: Attributes) -> pa.Array:
    """:func:`planning.build_prompt` of every row: the template filled (missing fields empty),
    ``(\\s*,\\s*)+`` runs collapsed to ``", "``, whitespace runs to one space, and `` ,`` stripped
    from both ends. (n,) string, no nulls."""
    n = batch.num_rows

    def column(name: str) -> pa.Array:
        if name.startswith("attributes."):
            return attrs.lookup(name.split(".", 1)[1])
        if name not in batch.column_names:
            return pa.array([""] * n, pa.string())
        return _str(batch.column(name)).fill_null("")

    pieces: list = []
    for literal, fieldname in parts:
        if literal:
            pieces.append(literal)
        if fieldname is not None:
            pieces.append(column(fieldname))
    if not any(isinstance(p, pa.Array) for p in pieces):
        pieces.append(pa.array([""] * n, pa.string()))
    text = concat(*pieces) if len(pieces) > 1 else pieces[0]
    text = pc.replace_substring_regex(text, f"([{PY_SPACE}]*,[{PY_SPACE}]*)+", ", ")
    # Every whitespace run -> " ": only runs of 2+ and single non-" " spaces change, and matching just those is 4x faster.
    text = pc.replace_substring_regex(text, f"[{PY_SPACE}]{{2,}}|[{_NOT_SPACE_SPACE}]", " ")
    return pc.utf8_trim(text, " ,")


def conditioning_json(title, category, prompt, attrs: Attributes, compact: bool) -> pa.Array:
    """``Conditioning.to_json()`` of every row (``compact=False``: json's default separators), or
    the compact form :func:`planning.render_key` hashes (``compact=True``). ``title``,
    ``category``, ``prompt``: the values already through :func:`json_strings`. (n,) string."""
    item, key = ("," , ":") if compact else (", ", ": ")
    return concat("{", f'"attributes"{key}', attrs.json_objects(item, key), f'{item}"category"{key}', category,
                  f'{item}"prompt"{key}', prompt, f'{item}"title"{key}', title, "}")


def _sha256_hex(docs: pa.Array) -> list[str]:
    return [hashlib.sha256(d).hexdigest() for d in docs.cast(pa.binary()).to_pylist()]


def product_seeds(job_seed: int, product_ids) -> np.ndarray:
    """:func:`planning.product_seed` of every id: first 8 bytes of sha256("job_seed:product_id")
    mod 2**63. (n,) string -> (n,) int64."""
    docs = concat(f"{job_seed}:", _str(product_ids)).cast(pa.binary()).to_pylist()
    digests = b"".join(hashlib.sha256(d).digest()[:8] for d in docs)
    return (np.frombuffer(digests, dtype=">u8") & np.uint64(2**63 - 1)).astype(np.int64)


def render_keys(compact_conditioning: pa.Array, model_id: str, params_used: dict, seeds: np.ndarray) -> list[str]:
    """:func:`planning.render_key` of every row: sha256 hex of
    ``{"conditioning":C,"model_id":M,"params":P,"seed":S}`` (json.dumps with sort_keys, compact
    separators, ensure_ascii=False). Raises TypeError for params json cannot encode."""
    tail = ',"model_id":' + json.dumps(model_id, ensure_ascii=False) + ',"params":' + json.dumps(
        params_used, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + ',"seed":'
    docs = concat('{"conditioning":', compact_conditioning, tail, pa.array(seeds, pa.int64()).cast(pa.string()), "}")
    return _sha256_hex(docs)
