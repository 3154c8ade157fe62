"""One interface over local paths and ``s3://bucket/prefix`` URIs.

Every function takes a URI string: a local path (absolute or relative, ``file://`` accepted) or
``s3://bucket/key``. S3 goes through boto3 with the standard AWS credential chain; an S3-compatible
store is reached through the standard ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) variable,
which botocore reads itself. Parquet is read and written as bytes through the same boto3 calls
(:func:`read_parquet`, :func:`write_parquet`): the project never uses pyarrow's S3 filesystem, so
the retry policy below covers every S3 request it makes.

Retries (see :func:`s3_client`) are botocore's ``standard`` retry mode, never a home-made loop:
up to ``CATALOG_RENDER_S3_MAX_ATTEMPTS`` attempts per request (default 10, the first included) on
throttling (503 ``SlowDown``), 500/502/503/504 answers and connection failures (refused, reset,
closed, connect or read timeout), with truncated exponential backoff and full jitter.

Writes are atomic: a local file is written to a temporary name in the same directory and renamed
(``os.replace``), and an S3 object is written by a single ``PutObject``, which S3 makes visible only
once complete. A reader therefore never sees a half-written object under its final name.

Conditional writes (:func:`create_exclusive`, :func:`replace_if_match`, :func:`delete_if_match`,
with :func:`read_versioned`) give compare-and-swap on one object, for leases: on S3 they are
``PutObject`` with ``If-None-Match: *`` / ``If-Match: <ETag>`` and ``DeleteObject`` with
``If-Match``; on local disk the token is the content's sha256 and the compare and the write happen
under an exclusive ``fcntl.flock`` on a sidecar ``<file>.lock``.

Errors: every failure surfaces as :class:`~catalog_render.errors.StorageError` whose message names
the URI (``FileNotFoundError`` semantics are kept by :class:`ObjectNotFound`, a subclass; a failed
condition is :class:`PreconditionFailed`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from catalog_render.errors import StorageError

#: Longest object-key segment derived from a product id (file systems cap names at 255 bytes).
MAX_KEY_SEGMENT = 200


class ObjectNotFound(StorageError):
    """The object or file does not exist."""


class ObjectTooLarge(StorageError):
    """The object is larger than the ``max_bytes`` a reader accepts; ``size`` is its length in bytes."""

    def __init__(self, message: str, size: int, limit: int):
        super().__init__(message)
        self.size = size
        self.limit = limit


class PreconditionFailed(StorageError):
    """A conditional write found the object in another state (exists, changed, or gone)."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def parse_s3(uri: str) -> S3Location:
    """Split ``s3://bucket/key`` into bucket and key. Raises StorageError on a malformed URI."""
    rest = str(uri)[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"malformed S3 URI (no bucket): {uri!r}")
    return S3Location(bucket, key)


def _local(uri: str) -> Path:
    uri = str(uri)
    uri = uri.removeprefix("file://")
    return Path(uri)


def join(base: str, *parts: str) -> str:
    """Join URI parts with ``/`` (S3) or the OS separator (local). Parts must be safe keys already."""
    base = str(base)
    if is_s3(base):
        out = base.rstrip("/")
        for p in parts:
            out += "/" + str(p).strip("/")
        return out
    return str(_local(base).joinpath(*parts))


def safe_key(product_id: str) -> str:
    """Encode an untrusted product id into a single, collision-free object-key segment.

    The id's UTF-8 bytes (lone surrogates kept with ``surrogatepass``) are percent-encoded
    (RFC 3986: every byte outside ``[A-Za-z0-9_.~-]`` becomes ``%XX``). That encoding is injective,
    so two distinct ids never share a key, and its output holds no ``/``, ``\\``, NUL or other
    control byte, so a key is always one segment. Ids made only of dots (``.``, ``..``), the only
    encodings that a path would read as "this folder" or "the parent", have their dots encoded as
    ``%2E`` too; plain percent-encoding never emits ``%2E``, so this stays injective. The empty id
    (which would name the parent folder itself) is ``%``, which no encoding produces. An encoding
    longer than :data:`MAX_KEY_SEGMENT` (200) characters keeps its first 184 characters plus ``~``
    and 16 hex digits of the id's sha256: such keys are exactly 201 characters, so they never equal
    a short id's key, and two long ids share one only if their sha256 prefixes collide (2**-64).
    Keys are ASCII, so at most 201 bytes: under the 255-byte name limit of common file systems.

    Keys keep letter case: on a case-insensitive file system (macOS, Windows defaults) ``SKU-a``
    and ``SKU-A`` would share a folder; S3 and Linux file systems are case-sensitive.
    """
    raw = str(product_id).encode("utf-8", "surrogatepass")
    enc = quote(raw, safe="")
    if not enc:
        return "%"  # the empty id: a lone '%' is never produced by percent-encoding
    if set(enc) <= {"."}:
        enc = enc.replace(".", "%2E")
    if len(enc) > MAX_KEY_SEGMENT:  # file systems cap a name at 255 bytes: keep a prefix + a hash of the id
        enc = enc[: MAX_KEY_SEGMENT - 16] + "~" + hashlib.sha256(raw).hexdigest()[:16]
    return enc


_UMASK = os.umask(0)
os.umask(_UMASK)

_clients: dict[int, object] = {}
_lock = threading.Lock()

#: Default attempts per S3 request (the first included), see :func:`s3_client`.
DEFAULT_S3_MAX_ATTEMPTS = 10


def s3_max_attempts() -> int:
    """Attempts per S3 request, the first included: ``CATALOG_RENDER_S3_MAX_ATTEMPTS`` (default 10, >= 1)."""
    raw = os.environ.get("CATALOG_RENDER_S3_MAX_ATTEMPTS", str(DEFAULT_S3_MAX_ATTEMPTS))
    try:
        n = int(raw)
    except ValueError:
        raise StorageError(f"CATALOG_RENDER_S3_MAX_ATTEMPTS must be an integer >= 1, not {raw!r}") from None
    if n < 1:
        raise StorageError(f"CATALOG_RENDER_S3_MAX_ATTEMPTS must be an integer >= 1, not {raw!r}")
    return n


def s3_client():
    """A boto3 S3 client per process: botocore ``standard`` retries, short connect timeout.

    The endpoint comes from ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` when set (botocore reads
    them), credentials from the standard chain. The client is made once per process, so these
    variables (and the ones below) must be set before the first S3 call; Ray workers inherit the
    driver's environment.

    Attempts: ``CATALOG_RENDER_S3_MAX_ATTEMPTS`` (default 10) attempts per request in total, the
    first included (botocore's ``total_max_attempts``; its ``max_attempts`` counts retries only).
    With independent faults at rate ``p`` a request fails only when all ``n`` attempts fail, with
    probability ``p**n``. At ``p = 0.3``: 4 attempts give 8.1e-3 per request (a run of 5,000
    images, about 10,000 requests, would almost surely lose some), 10 attempts give 5.9e-6 per
    request, i.e. about 0.03 expected failed image writes in 5,000 and a 0.1 % chance that one of
    a run's ~200 driver requests (catalog, listing, manifest parts, run record) fails. Connect and
    read timeouts: ``CATALOG_RENDER_S3_CONNECT_TIMEOUT`` (default 3 s) and 60 s.

    Retried (botocore.retries.standard, botocore 1.44): HTTP 500/502/503/504, 429, throttling
    codes (``SlowDown``, ``Throttling`` ...), ``RequestTimeout``, and every botocore
    ``ConnectionError``/``HTTPClientError`` (``EndpointConnectionError`` = refused,
    ``ConnectionClosedError`` = reset or closed before a response, ``ConnectTimeoutError``,
    ``ReadTimeoutError``). Backoff before retry ``i`` (1-based): ``rand(0,1) * min(b * 2**(i-1),
    20 s)`` with ``b`` = 1 s for throttling, 50 ms otherwise, so a request to a store that is down
    gives up after at most 25.6 s of backoff (resets, 500s) or 111 s (``SlowDown``) with 10 attempts.

    Retry quota: botocore's standard mode also keeps a per-client retry quota (500 tokens; a
    retry costs 14, or 5 for throttling; a first-try success gives back 1; a success after
    retries gives back the last cost), meant as a circuit breaker. Under a sustained 30 % fault
    rate it drains by about 0.5-1 token per request, and from then on faults are not retried at
    all: measured through ``tests/faultproxy.py`` at p = 0.3 with 10 attempts, 51 of 1,500 PUTs
    failed, the first after 962 (the formula above predicts 0.009). botocore has no setting for
    the quota's size, so :func:`_register_standard_retries` registers botocore's own standard
    retry handler with an unbounded quota: the only bound is the attempts per request.
    """
    pid = os.getpid()
    with _lock:
        client = _clients.get(pid)
        if client is None:
            import boto3
            from botocore.config import Config

            attempts = s3_max_attempts()
            cfg = Config(
                retries={"mode": "standard", "total_max_attempts": attempts},
                connect_timeout=float(os.environ.get("CATALOG_RENDER_S3_CONNECT_TIMEOUT", "3")),
                read_timeout=60,
            )
            client = boto3.session.Session().client("s3", config=cfg)
            _register_standard_retries(client, attempts)
            _clients[pid] = client
    return client


def _register_standard_retries(client, max_attempts: int) -> None:
    """Replace the client's retry handler by botocore's standard one with an unbounded retry quota.

    Mirrors ``botocore.retries.standard.register_retry_handler`` (same retry conditions, backoff
    and event names) except for the quota's capacity; keyword arguments that an older botocore
    does not take are left out. See :func:`s3_client` for why.
    """
    import inspect
    import sys

    from botocore.retries import quota, standard

    def make(cls, *args, **kwargs):
        accepted = inspect.signature(cls).parameters
        return cls(*args, **{k: v for k, v in kwargs.items() if k in accepted})

    name = client.meta.service_model.service_id.hyphenize()  # "s3"
    events = client.meta.events
    events.unregister(f"needs-retry.{name}", unique_id=f"retry-config-{name}")
    adapter = standard.RetryEventAdapter()
    throttling = standard.ThrottlingErrorDetector(adapter)
    checker = make(standard.RetryQuotaChecker, quota.RetryQuota(initial_capacity=sys.maxsize), throttling_detector=throttling)
    handler = make(
        standard.RetryHandler,
        retry_policy=standard.RetryPolicy(
            retry_checker=standard.StandardRetryConditions(max_attempts=max_attempts),
            retry_backoff=make(standard.ExponentialBackoff, service_name=name, throttling_detector=throttling),
        ),
        retry_event_adapter=adapter,
        retry_quota=checker,
        service_name=name,
    )
    events.register(f"after-call.{name}", checker.release_retry_quota)
    events.register(f"needs-retry.{name}", handler.needs_retry, unique_id=f"retry-config-{name}")


def _endpoint() -> str:
    try:
        return s3_client().meta.endpoint_url
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def _s3_error(uri: str, exc: Exception) -> StorageError:
    """One StorageError for a boto3/botocore failure, naming the URI, the endpoint and what was tried."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
    )

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        meta = exc.response.get("ResponseMetadata", {})
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFound(f"not found: {uri}")
        if code == "NoSuchBucket":
            return ObjectNotFound(f"no such bucket for {uri}")
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return PreconditionFailed(f"S3 precondition failed ({code}) on {uri}")
        status = meta.get("HTTPStatusCode")
        if status is not None and status >= 500:
            return StorageError(f"S3 error {code or 'unknown'} (HTTP {status}) on {uri} from the S3 endpoint {_endpoint()}, "
                                f"after {meta.get('RetryAttempts', 0) + 1} attempt(s)")
        return StorageError(f"S3 error {code or 'unknown'} on {uri}")
    if isinstance(exc, EndpointConnectionError):
        return StorageError(f"cannot reach the S3 endpoint for {uri} ({exc.kwargs.get('endpoint_url', '?')})")
    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return StorageError(f"connection to the S3 endpoint {_endpoint()} failed for {uri}: {type(exc).__name__}, "
                            f"after {s3_max_attempts()} attempt(s)")
    if isinstance(exc, NoCredentialsError):
        return StorageError(f"no AWS credentials found for {uri} (standard credential chain)")
    return StorageError(f"S3 failure on {uri}: {type(exc).__name__}")


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """Read a whole object. Raises ObjectNotFound, ObjectTooLarge when it is larger than
    ``max_bytes`` (checked before its bytes are read), or StorageError."""
    if is_s3(uri):
        loc = parse_s3(uri)
        try:
            obj = s3_client().get_object(Bucket=loc.bucket, Key=loc.key)
            if max_bytes is not None and obj["ContentLength"] > max_bytes:
                obj["Body"].close()
                raise ObjectTooLarge(f"object too large ({obj['ContentLength']:,} bytes > {max_bytes:,}): {uri}", obj["ContentLength"], max_bytes)
            return obj["Body"].read()
        except StorageError:
            raise
        except Exception as exc:  # botocore raises many types; map them to one
            raise _s3_error(uri, exc) from exc
    path = _local(uri)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise ObjectTooLarge(f"file too large ({size:,} bytes > {max_bytes:,}): {uri}", size, max_bytes)
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"not found: {uri}") from exc
    except (IsADirectoryError, NotADirectoryError) as exc:
        raise StorageError(f"is a directory, not a file: {uri}") from exc
    except PermissionError as exc:
        raise StorageError(f"permission denied: {uri}") from exc
    except ValueError as exc:  # e.g. "embedded null byte": no such file can exist
        raise ObjectNotFound(f"not found (invalid path: {exc}): {uri!r}") from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # no such file can exist either
            raise ObjectNotFound(f"not found (file name too long): {uri[:200]}") from exc
        raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    """Write an object atomically (temp file + rename locally; one PutObject on S3)."""
    if is_s3(uri):
        loc = parse_s3(uri)
        kwargs = {"ContentType": content_type} if content_type else {}
        try:
            s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **kwargs)
        except Exception as exc:
            raise _s3_error(uri, exc) from exc
        return
    try:
        _write_local(_local(uri), data)
    except OSError as exc:
        raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc


def _write_local(path: Path, data: bytes, link: bool = False) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path`` (or,
    with ``link``, hard-link it to ``path``, which fails with FileExistsError if ``path`` exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are meant to be read by others
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if link:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


# --- conditional writes (compare-and-swap on one object) -------------------------------------


def _token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _LocalLock:
    """Exclusive ``fcntl.flock`` on ``<path>.lock`` (created, never deleted): serialises the
    conditional writers of one local file across threads and processes; the kernel drops it when
    its holder dies."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing the descriptor releases the flock


def read_versioned(uri: str) -> tuple[bytes, str]:
    """Read an object and its version token (S3: the ETag; local: the content's sha256, hex).

    Raises ObjectNotFound or StorageError."""
    if is_s3(uri):
        loc = parse_s3(uri)
        try:
            obj = s3_client().get_object(Bucket=loc.bucket, Key=loc.key)
            return obj["Body"].read(), obj["ETag"]
        except Exception as exc:
            raise _s3_error(uri, exc) from exc
    data = read_bytes(uri)
    return data, _token(data)


def create_exclusive(uri: str, data: bytes, content_type: str | None = None) -> str:
    """Create an object only if none exists; returns its version token.

    S3: ``PutObject`` with ``If-None-Match: *`` (atomic in S3). Local: a complete temp file
    hard-linked to the final name (``link`` fails if the name exists), under the file's flock.
    Raises PreconditionFailed when the object exists, StorageError otherwise.

    Retries: if a first attempt succeeded but its answer was lost, botocore's retry gets 412 and
    this raises PreconditionFailed for the caller's own object; callers that can tell their own
    content (e.g. a nonce in it) should read it back with :func:`read_versioned`.
    """
    if is_s3(uri):
        loc = parse_s3(uri)
        kwargs = {"ContentType": content_type} if content_type else {}
        try:
            return s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, IfNoneMatch="*", **kwargs)["ETag"]
        except Exception as exc:
            raise _s3_error(uri, exc) from exc
    path = _local(uri)
    try:
        with _LocalLock(path):
            _write_local(path, data, link=True)
    except FileExistsError:
        raise PreconditionFailed(f"already exists: {uri}") from None
    except OSError as exc:
        raise StorageError(f"cannot create {uri}: {exc.strerror or exc}") from exc
    return _token(data)


def replace_if_match(uri: str, data: bytes, token: str, content_type: str | None = None) -> str:
    """Overwrite an object only if it is still the version ``token`` names; returns the new token.

    S3: ``PutObject`` with ``If-Match: <ETag>``. Local: under the file's flock, compare the
    current content's sha256 with ``token``, then write atomically (temp + rename). Raises
    PreconditionFailed when the object changed or is gone, StorageError otherwise. The same note
    on lost answers as :func:`create_exclusive` applies.
    """
    if is_s3(uri):
        loc = parse_s3(uri)
        kwargs = {"ContentType": content_type} if content_type else {}
        try:
            return s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, IfMatch=token, **kwargs)["ETag"]
        except Exception as exc:
            err = _s3_error(uri, exc)
            raise (PreconditionFailed(f"gone: {uri}") if isinstance(err, ObjectNotFound) else err) from exc
    path = _local(uri)
    try:
        with _LocalLock(path):
            try:
                current = path.read_bytes()
            except FileNotFoundError:
                raise PreconditionFailed(f"gone: {uri}") from None
            if _token(current) != token:
                raise PreconditionFailed(f"changed since read: {uri}")
            _write_local(path, data)
    except OSError as exc:
        raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc
    return _token(data)


def delete_if_match(uri: str, token: str) -> bool:
    """Delete an object only if it is still the version ``token`` names.

    Returns True when deleted, False when the object changed or is already gone. S3:
    ``DeleteObject`` with ``If-Match``; local: compare and unlink under the file's flock.
    Raises StorageError when the store cannot answer.
    """
    if is_s3(uri):
        loc = parse_s3(uri)
        try:
            s3_client().delete_object(Bucket=loc.bucket, Key=loc.key, IfMatch=token)
            return True
        except Exception as exc:
            err = _s3_error(uri, exc)
            if isinstance(err, (PreconditionFailed, ObjectNotFound)):
                return False
            raise err from exc
    path = _local(uri)
    try:
        with _LocalLock(path):
            try:
                if _token(path.read_bytes()) != token:
                    return False
            except FileNotFoundError:
                return False
            path.unlink()
            return True
    except OSError as exc:
        raise StorageError(f"cannot delete {uri}: {exc.strerror or exc}") from exc


def exists(uri: str) -> bool:
    """True if the object/file exists. Raises StorageError when the store cannot be reached."""
    if is_s3(uri):
        loc = parse_s3(uri)
        try:
            s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
            return True
        except Exception as exc:
            err = _s3_error(uri, exc)
            if isinstance(err, ObjectNotFound):
                return False
            raise err from exc
    return _local(uri).is_file()


def list_uris(prefix: str, suffix: str = "") -> list[str]:
    """All object URIs under a prefix (recursively), sorted; [] when the prefix does not exist."""
    if is_s3(prefix):
        loc = parse_s3(prefix)
        key_prefix = loc.key.rstrip("/") + "/" if loc.key else ""
        out: list[str] = []
        try:
            paginator = s3_client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=loc.bucket, Prefix=key_prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(suffix):
                        out.append(f"s3://{loc.bucket}/{obj['Key']}")
        except Exception as exc:
            err = _s3_error(prefix, exc)
            if isinstance(err, ObjectNotFound):
                return []
            raise err from exc
        return sorted(out)
    root = _local(prefix)
    if not root.is_dir():
        return []
    out, stack = [], [str(root)]  # os.scandir gives entry types from the listing: 4x less CPU than rglob + is_file
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.name.endswith(suffix) and not e.name.endswith(".tmp") and e.is_file():
                        out.append(e.path)
        except (FileNotFoundError, NotADirectoryError):  # removed while listing
            continue
    return sorted(out)


def delete(uri: str) -> None:
    """Delete an object if it exists."""
    if is_s3(uri):
        loc = parse_s3(uri)
        try:
            s3_client().delete_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            raise _s3_error(uri, exc) from exc
        return
    _local(uri).unlink(missing_ok=True)


def read_parquet(uri: str) -> pa.Table:
    """Read a Parquet file into an Arrow table. Raises ObjectNotFound / StorageError on bad input."""
    data = read_bytes(uri)
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise StorageError(f"not a readable Parquet file: {uri} ({exc})") from exc


def write_parquet(table: pa.Table, uri: str) -> None:
    """Write an Arrow table as one Parquet object, atomically."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes(uri, buf.getvalue(), content_type="application/vnd.apache.parquet")


def display(uri: str) -> str:
    """A URI as shown to people (local paths made absolute)."""
    return str(uri) if is_s3(uri) else str(_local(uri).resolve())


def absolute(uri: str) -> str:
    """A URI that means the same from any working directory: ``s3://`` as is, a local path made
    absolute (what model cards and a LoRA model's base pointer store)."""
    return str(uri) if is_s3(uri) else str(Path(os.path.abspath(_local(uri))))
