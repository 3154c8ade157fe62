"""A lease on an output root, so that two runs never write the same output at once.

The lease is one object, ``<output>/_lease.json`` (local or S3)::

    {"version": 1, "owner": {"run_id": ..., "host": ..., "pid": ..., "command": ...},
     "nonce": "<32 hex>", "ttl_s": 120.0,
     "acquired_at": "2026-11-30T12:00:00.000000+00:00", "renewed_at": "...", "expires_at": "..."}

Times are UTC, ISO 8601. A lease is held until ``expires_at``; its holder renews it (every
``ttl_s / 3`` with :meth:`Lease.start_heartbeat`), so a lease expires only when its holder died, hung
or lost the store for a whole ``ttl_s``. Expiry compares the reader's clock with the writer's: hosts
sharing an output must have clocks within a small part of ``ttl_s`` of each other (NTP).

Every change is a compare-and-swap on that object (see :mod:`catalog_render.storage`):

- acquire: create it only if absent (S3 ``PutObject`` ``If-None-Match: *``; local: a complete temp
  file hard-linked to the name under an ``fcntl.flock`` on ``_lease.json.lock``);
- take over an expired lease, renew: replace it only if it is still the version read (S3
  ``If-Match: <ETag>``; local: content sha256 compared under the flock). Of several contenders for
  one expired lease, exactly one replace succeeds; the others see a changed object and re-read it;
- release: delete it only if it is still ours (S3 ``DeleteObject`` ``If-Match``).

A conditional write whose answer was lost (connection reset after S3 executed it) is retried by
botocore and then fails its condition against our own write. Each lease record carries a random
nonce, so acquire and renew recognise their own landed write by reading the object back.

All of this rests on the store refusing a conditional write whose condition fails. AWS S3 does
(atomically); some S3-compatible stores ignore the headers and write anyway, and then two runs can
both "hold" the lease. So before its first acquire on an S3 output, a process checks the store
once (:func:`check_conditional_writes`, cached per output) and refuses to run on one that does not
honour them (:class:`ConditionalWritesIgnored`, exit 5); ``run --no-lease`` runs without a lease
(:class:`NoLease`) for users who accept the risk. Local outputs use the ``fcntl.flock`` above
(exclusive between processes of one host; a shared network mount must support flock).

Errors: :class:`~catalog_render.errors.LeaseHeld` when another run holds the lease after
``wait_s``; :class:`~catalog_render.errors.LeaseLost` from :meth:`Lease.renew` / :meth:`Lease.check`
once another run took it over; StorageError when the store cannot answer.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Self

from catalog_render import storage
from catalog_render.errors import LeaseHeld, LeaseLost, StorageError

log = logging.getLogger(__name__)

#: Name of the lease object under an output root.
LEASE_NAME = "_lease.json"
#: Default time to live, seconds: a dead holder blocks the output at most this long.
DEFAULT_TTL_S = 120.0
#: Name of the object :func:`check_conditional_writes` writes under an S3 output root.
PROBE_NAME = "_lease_probe.json"
#: S3 outputs whose store this process found to honour conditional writes.
_checked: set[str] = set()
_checked_lock = threading.Lock()


class ConditionalWritesIgnored(StorageError):
    """The output's store accepted a conditional write whose condition had failed: the lease cannot
    work there. Exit code 5 (a storage error); the message names the store, the probe object and
    ``--no-lease``."""


def check_conditional_writes(output_uri: str) -> None:
    """Check, once per S3 output and process, that its store refuses conditional writes whose
    condition fails, as the lease needs. On ``<output>/_lease_probe.json`` (written first, so it
    exists): a ``PutObject`` with ``If-None-Match: *`` and one with ``If-Match`` and a wrong ETag
    must both be refused (412 PreconditionFailed). A store that accepts either, or answers
    ``NotImplemented``, raises :class:`ConditionalWritesIgnored`; other StorageErrors (the store is
    down) are raised as they are. Local outputs are not checked (the lease uses ``fcntl.flock``).
    Costs four requests the first time; the probe object is deleted afterwards."""
    if not storage.is_s3(output_uri):
        return
    with _checked_lock:
        if output_uri in _checked:
            return
    uri = storage.join(output_uri, PROBE_NAME)
    probe = json.dumps({"probe": secrets.token_hex(8), "purpose": "catalog-render checks that this store honours conditional writes"}).encode()
    storage.write_bytes(uri, probe, content_type="application/json")
    accepted = []
    for what, attempt in (("a PutObject with If-None-Match: * on an existing object", lambda: storage.create_exclusive(uri, probe + b" ")),
                          ("a PutObject with If-Match and a wrong ETag", lambda: storage.replace_if_match(uri, probe + b"  ", '"0123456789abcdef0123456789abcdef"'))):
        try:
            attempt()
            accepted.append(f"{what} was accepted")
        except storage.PreconditionFailed:
            pass
        except StorageError as exc:
            if "NotImplemented" not in str(exc):
                raise
            accepted.append(f"{what} was answered NotImplemented")
    try:
        storage.delete(uri)
    except StorageError as exc:
        log.warning("could not delete the probe object %s: %s", uri, exc)
    if accepted:
        raise ConditionalWritesIgnored(
            f"the S3 store at {storage.s3_client().meta.endpoint_url} (output {output_uri}) does not honour conditional writes ({'; '.join(accepted)}, probe {uri}): the output lease "
            f"cannot keep two runs from writing it at once. Use a store that does (AWS S3 does), or pass --no-lease if only one "
            f"run at a time ever writes this output")
    with _checked_lock:
        _checked.add(output_uri)


def lease_uri(output_uri: str) -> str:
    """``<output>/_lease.json``."""
    return storage.join(output_uri, LEASE_NAME)


def default_owner(run_id: str, command: str | None = None) -> dict:
    """The owner record of this process: run_id, host name, pid and command line."""
    return {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
            "command": command if command is not None else " ".join(sys.argv)}


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.isoformat()


def _parse(data: bytes) -> dict:
    """A lease record; {} when unreadable (treated as expired: nobody can be holding it)."""
    try:
        record = json.loads(data)
        datetime.fromisoformat(record["expires_at"])
        return record if isinstance(record, dict) else {}
    except (ValueError, KeyError, TypeError):
        return {}


def _expired(record: dict, now: datetime) -> bool:
    return not record or now >= datetime.fromisoformat(record["expires_at"]) or _holder_dead_here(record)


def _holder_dead_here(record: dict) -> bool:
    """True when the holder ran on this host (same host name) and its process no longer exists:
    a SIGKILLed run on a laptop or cron host frees its output at once instead of after ``ttl_s``.
    A pid reused by an unrelated process within ``ttl_s`` only delays the takeover until expiry.
    Hosts sharing a host name but not a pid namespace (two containers named alike) must not share an
    output; Kubernetes pods and default Docker containers have distinct host names."""
    owner = record.get("owner") or {}
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        return False
    return False


def read_lease(output_uri: str) -> dict | None:
    """The current lease record of an output, or None when there is none. Raises StorageError."""
    try:
        data = storage.read_bytes(lease_uri(output_uri))
    except storage.ObjectNotFound:
        return None
    return _parse(data) or None


def _describe(record: dict) -> str:
    o = record.get("owner") or {}
    cmd = str(o.get("command", "?"))
    cmd = cmd if len(cmd) <= 200 else cmd[:197] + "..."
    return f"run {o.get('run_id', '?')} (host {o.get('host', '?')}, pid {o.get('pid', '?')}, command {cmd!r})"


def acquire(output_uri: str, owner: dict, ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0,
            poll_s: float | None = None) -> Lease:
    """Take the lease on ``output_uri`` for ``ttl_s`` seconds; returns the :class:`Lease`.

    Takes it when there is none, or takes over one whose ``expires_at`` has passed. While another
    run holds an unexpired lease, polls every ``poll_s`` seconds (default ``ttl_s / 20``, between
    0.05 and 1 s) for up to ``wait_s`` seconds (0: do not wait), then raises LeaseHeld naming the
    holder's run_id, host, pid, command and expiry. ``owner`` is stored as given (JSON), see
    :func:`default_owner`. Raises ValueError on a non-positive ``ttl_s`` or negative ``wait_s``,
    ConditionalWritesIgnored for an S3 store that does not honour conditional writes
    (:func:`check_conditional_writes`), StorageError when the store cannot answer.

    The returned lease is not renewed by itself: use it as a context manager (starts the heartbeat,
    releases at the end) or call :meth:`Lease.start_heartbeat`.
    """
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be > 0, not {ttl_s!r}")
    if not wait_s >= 0:
        raise ValueError(f"wait_s must be >= 0, not {wait_s!r}")
    check_conditional_writes(output_uri)
    uri = lease_uri(output_uri)
    poll = poll_s if poll_s is not None else min(1.0, max(0.05, ttl_s / 20))
    nonce = secrets.token_hex(16)
    t0 = time.monotonic()
    while True:
        now = _now()
        record = {"version": 1, "owner": owner, "nonce": nonce, "ttl_s": ttl_s, "acquired_at": _iso(now),
                  "renewed_at": _iso(now), "expires_at": _iso(now + timedelta(seconds=ttl_s))}
        data = json.dumps(record, sort_keys=True).encode()
        try:
            return Lease(uri, record, storage.create_exclusive(uri, data, content_type="application/json"))
        except storage.PreconditionFailed:
            pass
        try:
            current, token = storage.read_versioned(uri)
        except storage.ObjectNotFound:
            continue  # released since our create: try again at once
        held = _parse(current)
        if held.get("nonce") == nonce:  # our own write landed; only its answer was lost
            return Lease(uri, held, token)
        if _expired(held, now):
            try:
                lease = Lease(uri, record, storage.replace_if_match(uri, data, token, content_type="application/json"))
            except storage.PreconditionFailed:
                continue  # another contender (or the holder's renewal) got there first: re-read
            lease.took_over = held
            why = "its process is gone" if _holder_dead_here(held) else f"expired at {held.get('expires_at', '?')}"
            log.warning("took over the lease %s of %s (%s)", uri, _describe(held), why)
            return lease
        waited = time.monotonic() - t0
        if waited >= wait_s:
            waited_txt = f"; waited {waited:.0f}s" if wait_s else ""
            raise LeaseHeld(
                f"output {storage.display(output_uri)} is in use by {_describe(held)}: its lease {uri} expires at "
                f"{held['expires_at']} unless renewed{waited_txt}. Wait for it (--wait-lease SECONDS); if that run "
                f"died, its lease is taken over after that time (at once on its own host)",
                holder=held.get("owner"), expires_at=held["expires_at"],
            )
        time.sleep(min(poll, wait_s - waited))


class Lease:
    """A held lease. ``lost`` (a threading.Event) is set once another run took it over, or once it
    could not be renewed before it expired; ``lost_reason`` then says why.

    ``expires_at`` (datetime, UTC) is the expiry last written; ``token`` the object's version
    (S3 ETag or local sha256); ``took_over`` the expired record this lease replaced, if any.
    """

    def __init__(self, uri: str, record: dict, token: str):
        self.uri = uri
        self.record = record
        self.token = token
        self.took_over: dict | None = None
        self.lost = threading.Event()
        self.lost_reason: str | None = None
        self.last_error: Exception | None = None
        self._lock = threading.Lock()
        self._released = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def owner(self) -> dict:
        return self.record["owner"]

    @property
    def ttl_s(self) -> float:
        return float(self.record["ttl_s"])

    @property
    def expires_at(self) -> datetime:
        return datetime.fromisoformat(self.record["expires_at"])

    def _mark_lost(self, reason: str) -> None:
        self.lost_reason = reason
        self.lost.set()
        log.error("%s", reason)

    def check(self) -> None:
        """Raise LeaseLost when the lease is lost (call it between units of work)."""
        if self.lost.is_set():
            raise LeaseLost(self.lost_reason or f"lease {self.uri} lost")

    def renew(self) -> None:
        """Push ``expires_at`` to now + ``ttl_s``.

        Raises LeaseLost (and sets ``lost``) when the lease is no longer ours (taken over after it
        expired, or deleted) or was released; StorageError when the store cannot answer (the lease
        is then still ours until ``expires_at``)."""
        with self._lock:
            self.check()
            if self._released:
                raise LeaseLost(f"lease {self.uri} was released")
            now = _now()
            record = {**self.record, "renewed_at": _iso(now), "expires_at": _iso(now + timedelta(seconds=self.ttl_s))}
            data = json.dumps(record, sort_keys=True).encode()
            try:
                token = storage.replace_if_match(self.uri, data, self.token, content_type="application/json")
            except storage.PreconditionFailed:
                try:
                    current, token = storage.read_versioned(self.uri)
                except storage.ObjectNotFound:
                    current, token = None, None
                if current != data:  # not our own landed write with a lost answer
                    holder = _parse(current) if current else {}
                    now_by = f"is now held by {_describe(holder)}" if holder else "was deleted"
                    self._mark_lost(f"lease {self.uri} of run {self.owner.get('run_id', '?')} was lost: it {now_by}; "
                                    f"this run stops writing to the output")
                    self.check()
            self.token, self.record = token, record

    def _beat(self, interval_s: float, on_lost: Callable[[str], None] | None) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.renew()
                self.last_error = None
            except LeaseLost:
                break
            except StorageError as exc:
                self.last_error = exc
                log.warning("could not renew lease %s: %s", self.uri, exc)
                if _now() >= self.expires_at:
                    self._mark_lost(f"lease {self.uri} expired at {self.record['expires_at']} before it could be renewed "
                                    f"({exc}); this run stops writing to the output")
                    break
        if self.lost.is_set() and on_lost is not None:
            on_lost(self.lost_reason or "")

    def start_heartbeat(self, interval_s: float | None = None, on_lost: Callable[[str], None] | None = None) -> Self:
        """Renew in a daemon thread every ``interval_s`` seconds (default ``ttl_s / 3``).

        A renewal that fails for a store error is tried again at the next beat; once the lease has
        expired unrenewed, or was taken over, ``lost`` is set, ``on_lost(reason)`` is called (in the
        heartbeat thread) and the heartbeat stops."""
        if self._thread is None:
            interval = interval_s if interval_s is not None else self.ttl_s / 3
            self._thread = threading.Thread(target=self._beat, args=(interval, on_lost), name=f"lease-heartbeat {self.uri}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop_heartbeat(self) -> None:
        """Stop renewing (waits for a renewal in flight)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def release(self) -> bool:
        """Stop the heartbeat and delete the lease if it is still ours.

        Returns True when deleted, False when it was no longer ours (lost, taken over, already
        released, or deleted by a retry whose first answer was lost). Raises StorageError when the
        store cannot answer (the lease then expires after ``ttl_s``)."""
        self.stop_heartbeat()
        with self._lock:
            if self._released or self.lost.is_set():
                self._released = True
                return False
            self._released = True
            return storage.delete_if_match(self.uri, self.token)

    def __enter__(self) -> Self:
        return self.start_heartbeat()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.release()
        except StorageError as err:
            if exc_type is None:
                raise
            log.warning("could not release lease %s (it expires at %s): %s", self.uri, self.record["expires_at"], err)


class NoLease:
    """Stands in for a :class:`Lease` when a run is told to hold none (``run --no-lease``): nothing
    is written, nothing is checked, nothing stops a second run writing the same output."""

    def __init__(self) -> None:
        self.took_over: dict | None = None
        self.lost = threading.Event()

    def check(self) -> None:
        """Never raises: there is no lease to lose."""

    def __enter__(self) -> Self:
        log.warning("running without the output lease (--no-lease): nothing stops another run writing this output at once")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None
