"""One interface over local paths and ``s3://bucket/prefix`` URIs.

Every function takes a URI string: a local path (absolute or relative, ``file://`` accepted) or
``s3://bucket/key``. S3 goes through boto3 with the standard AWS credential chain; an S3-compatible
store is reached through the standard ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) variable,
which botocore reads itself. Retries use botocore's ``standard`` retry mode (exponential backoff
with jitter, bounded attempts), never a home-made loop.

Writes are atomic: a local file is written to a temporary name in the same directory and renamed
(``os.replace``), and an S3 object is written by a single ``PutObject``, which S3 makes visible only
once complete. A reader therefore never sees a half-written object under its final name.

Errors: every failure surfaces as :class:`~catalog_render.errors.StorageError` whose message names
the URI (``FileNotFoundError`` semantics are kept by :class:`ObjectNotFound`, a subclass).
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
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
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


def s3_client():
    """A boto3 S3 client per process (standard retries, short connect timeout).

    The endpoint comes from ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` when set (botocore reads
    them), credentials from the standard chain.
    """
    pid = os.getpid()
    with _lock:
        client = _clients.get(pid)
        if client is None:
            import boto3
            from botocore.config import Config

            cfg = Config(
                retries={"mode": "standard", "max_attempts": int(os.environ.get("CATALOG_RENDER_S3_MAX_ATTEMPTS", "4"))},
                connect_timeout=float(os.environ.get("CATALOG_RENDER_S3_CONNECT_TIMEOUT", "3")),
                read_timeout=60,
            )
            client = boto3.session.Session().client("s3", config=cfg)
            _clients[pid] = client
    return client


def _s3_error(uri: str, exc: Exception) -> StorageError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFound(f"not found: {uri}")
        if code == "NoSuchBucket":
            return ObjectNotFound(f"no such bucket for {uri}")
        return StorageError(f"S3 error {code or 'unknown'} on {uri}")
    if isinstance(exc, EndpointConnectionError):
        return StorageError(f"cannot reach the S3 endpoint for {uri} ({exc.kwargs.get('endpoint_url', '?')})")
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
    path = _local(uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are meant to be read by others
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc


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
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and p.name.endswith(suffix) and not p.name.endswith(".tmp"))


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
