"""Verdicts given on the review page: store them, undo them, keep the current view up to date.

A verdict (or one verdict on a selection of renders) is stored by
:func:`catalog_render.feedback.record_verdicts`, the write path of ``feedback import``: one new
Parquet part under ``OUTPUT/feedback/`` per action, written atomically under a unique name, so two
reviewers at once never lose a verdict. The parts' ``source`` is ``review page``; ``reviewer`` is
the server's reviewer (``--reviewer`` or the OS user).

Undo. The verdict in force on a render is its latest stored row (``imported_at`` order,
:func:`catalog_render.feedback.latest_verdicts`), so parts are never edited or deleted: undo
writes a new part that puts back, for each render of the reviewer's last action, the verdict it
had before (the same verdict, reviewer and comment), or ``withdraw`` when it had none (read as "not
reviewed" everywhere). Its ``source`` is ``undo of <part> by <reviewer>``, which marks that action
as undone, so pressing undo again walks further back. A render whose verdict someone else changed
after the action is left as it is (listed as skipped), and an action whose renders were all
changed by others since is passed over.

After each stored part, ``OUTPUT/current.parquet`` is rewritten as after an import
(:func:`catalog_render.current.write_current_view`), by :class:`ViewRefresher` in a background
thread so that a keystroke does not wait for it (1.6-2.3 CPU s on a 50,000-render output,
``benchmarks/review_open.py``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from catalog_render import current, feedback, storage
from catalog_render.errors import FeedbackError, StorageError
from catalog_render.review.data import ReviewData
from catalog_render.review.errors import ReviewError, StorageUnavailable, UnknownRender

#: ``source`` of the parts the review page writes.
REVIEW_SOURCE = "review page"
#: ``source`` prefix of an undo part: ``undo of <part name> by <reviewer>``.
UNDO_PREFIX = "undo of "
#: Seconds the current-view rewrite waits after a verdict for more to arrive (one write for a burst).
REFRESH_DELAY_S = 0.5
#: Renders one action may judge at most, and the longest comment (characters).
MAX_KEYS, MAX_COMMENT = 1000, 2000


@dataclass
class Stored:
    """What an action stored: the part's object name and, per render_key, the verdict now in
    force (dict with verdict, reviewer, comment; None = not reviewed); ``skipped`` render_keys
    (undo: changed by someone else since)."""

    part: str
    verdicts: dict[str, dict | None]
    skipped: list[str]


def _state(row: dict | None) -> dict | None:
    if row is None or row["verdict"] == feedback.WITHDRAW:
        return None
    return {"verdict": row["verdict"], "reviewer": row["reviewer"], "comment": row["comment"]}


def _name(uri: str) -> str:
    return str(uri).replace("\\", "/").rsplit("/", 1)[-1]


def record(data: ReviewData, keys: list[str], verdict: str, reviewer: str, comment: str | None = None) -> Stored:
    """Store ``verdict`` (approve or reject) by ``reviewer`` on the renders ``keys`` (render_keys)
    as one part. Every key must be an ok render of the manifest, else nothing is stored:
    UnknownRender (404) names the first unknown keys. ReviewError (400) for a bad verdict, no keys,
    too many keys or too long a comment; StorageUnavailable when the part cannot be written."""
    if verdict not in feedback.VERDICTS:
        raise ReviewError(f"field 'verdict': {str(verdict)[:40]!r} is not approve or reject")
    keys = list(dict.fromkeys(k for k in keys if k))
    if not keys:
        raise ReviewError("field 'key': no render selected")
    if len(keys) > MAX_KEYS:
        raise ReviewError(f"field 'key': {len(keys)} renders in one action, at most {MAX_KEYS}")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        raise ReviewError(f"field 'comment': {len(comment)} characters, at most {MAX_COMMENT}")
    t = data.renders()
    hit = t.filter(pc.is_in(t.column("render_key"), value_set=pa.array(keys, pa.string())))
    pid = dict(zip(hit.column("render_key").to_pylist(), hit.column("product_id").to_pylist()))
    unknown = [k for k in keys if k not in pid]
    if unknown:
        shown = ", ".join(repr(k[:80]) for k in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise UnknownRender(f"no rendered image with render_key {shown} in the manifest of {data.output_uri}: nothing was stored")
    rows = [{"product_id": pid[k], "render_key": k, "verdict": verdict, "comment": comment, "reviewer": reviewer} for k in keys]
    uri = _write(data, rows, REVIEW_SOURCE)
    return Stored(_name(uri), {k: {"verdict": verdict, "reviewer": reviewer, "comment": comment} for k in keys}, [])


def _write(data: ReviewData, rows: list[dict], source: str) -> str:
    try:
        return feedback.record_verdicts(data.output_uri, rows, source=source)
    except StorageError as exc:
        raise StorageUnavailable(f"the verdict was not stored: {exc}") from None
    except FeedbackError as exc:
        raise ReviewError(str(exc)) from None


def undo(data: ReviewData, reviewer: str) -> Stored:
    """Undo ``reviewer``'s latest review-page action that still stands (see the module's
    docstring). Raises ReviewError (409) when there is nothing to undo."""
    h = data.history().to_pylist()
    undone = {s[len(UNDO_PREFIX):].split(" ", 1)[0] for s in (r["source"] for r in h) if s.startswith(UNDO_PREFIX)}
    mine = [p for p in dict.fromkeys(r["part"] for r in h if r["source"] == REVIEW_SOURCE and r["reviewer"] == reviewer) if p not in undone]
    by_pair: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(h):
        by_pair.setdefault((r["product_id"], r["render_key"]), []).append(i)
    for part in reversed(mine):
        restore, skipped, states = [], [], {}
        for i, r in enumerate(h):
            if r["part"] != part:
                continue
            pair = (r["product_id"], r["render_key"])
            rows = by_pair[pair]
            latest = h[rows[-1]]
            same = (latest["verdict"], latest["reviewer"], latest["comment"]) == (r["verdict"], r["reviewer"], r["comment"])
            if not same:
                skipped.append(r["render_key"])
                continue
            before = [j for j in rows if j < i]
            prev = h[before[-1]] if before else None
            if prev is None or prev["verdict"] == feedback.WITHDRAW:
                restore.append({"product_id": pair[0], "render_key": pair[1], "verdict": feedback.WITHDRAW, "comment": None, "reviewer": reviewer})
            else:
                restore.append({"product_id": pair[0], "render_key": pair[1], "verdict": prev["verdict"], "comment": prev["comment"],
                                "reviewer": prev["reviewer"]})
            states[pair[1]] = _state(restore[-1])
        if restore:
            _write(data, restore, f"{UNDO_PREFIX}{part} by {reviewer}")
            return Stored(part, states, skipped)
    raise ReviewError(f"nothing to undo: {reviewer} has no verdict given on the review page of {data.output_uri} that still stands",
                      status=409, title="Nothing to undo")


class ViewRefresher:
    """Rewrites ``OUTPUT/current.parquet`` (:func:`catalog_render.current.write_current_view`) in a
    background thread after each :meth:`request`; requests that arrive while it writes are served
    by one more write. ``last_error`` holds the last failure's message (None after a success),
    ``writes`` counts successful writes."""

    def __init__(self, data: ReviewData, delay_s: float = REFRESH_DELAY_S):
        self.data = data
        self.delay_s = delay_s
        self._cond = threading.Condition()
        self._pending = False
        self._busy = False
        self.last_error: str | None = None
        self.writes = 0
        self._thread = threading.Thread(target=self._loop, name="review-current-view", daemon=True)
        self._thread.start()

    def request(self) -> None:
        with self._cond:
            self._pending = True
            self._cond.notify_all()

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until no write is pending or running; False when ``timeout`` (s) passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending)
            time.sleep(self.delay_s)  # let a burst of keystrokes arrive: one write serves them all
            with self._cond:
                self._pending, self._busy = False, True
            try:
                current.write_current_view(self.data.output_uri, feedback_cache=self.data.feedback_cache,
                                           manifest_reader=lambda: self.data.manifest(max_age_s=0))
                self.last_error = None
                self.writes += 1
            except (StorageError, ReviewError, KeyError, ValueError) as exc:  # reported on the page; retried on the next verdict
                self.last_error = f"{storage.display(storage.join(self.data.output_uri, current.CURRENT_VIEW))} not rewritten: {exc}"
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
