"""How a model directory's weights are read: safetensors only, pickle checkpoints refused unread.

Every family and the registry read weights through :func:`read_safetensors`. A directory whose
weights are pickle checkpoints only (:data:`PICKLE_SUFFIXES`) is refused with a ModelError naming
the files, before any of their bytes are read: unpickling a file runs whatever code it names.
"""

from __future__ import annotations

from catalog_render import storage
from catalog_render.errors import ModelError, StorageError

#: File name endings of pickle checkpoints (torch.save, pickle, joblib): never loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")


def pickle_refusal(model_uri: str, pickles: list[str]) -> ModelError:
    """The ModelError for a directory that offers pickle checkpoints instead of safetensors."""
    shown = ", ".join(pickles[:5]) + (f" and {len(pickles) - 5} more" if len(pickles) > 5 else "")
    return ModelError(
        f"model directory {model_uri} has pickle checkpoint(s) {shown} and no safetensors weights: "
        "pickle checkpoints are not loaded (unpickling runs code); convert them to safetensors"
    )


def _pickles(model_uri: str, under: str = "") -> list[str]:
    """Relative names of the pickle checkpoints in a model directory (or its ``under`` folder)."""
    base = model_uri.rstrip("/")
    rel = [f[len(base) :].lstrip("/").replace("\\", "/") for f in _files(model_uri)]
    return [r for r in rel if r.endswith(PICKLE_SUFFIXES) and (not under or r.startswith(under.rstrip("/") + "/"))]


def read_safetensors(model_uri: str, name: str) -> bytes:
    """The bytes of ``name`` (a .safetensors file) in a model directory. Raises ModelError when it
    is missing: naming the directory's pickle checkpoints, if any, as refused (never read)."""
    try:
        return storage.read_bytes(storage.join(model_uri, name))
    except storage.ObjectNotFound:
        pickles = _pickles(model_uri)
        if pickles:
            raise pickle_refusal(model_uri, pickles) from None
        raise ModelError(f"model directory {model_uri} has no {name}") from None


def _files(model_uri: str) -> list[str]:
    """Every object URI under a model directory (ModelError when it cannot be listed)."""
    try:
        return storage.list_uris(model_uri)
    except StorageError as exc:
        raise ModelError(f"cannot list model directory {model_uri}: {exc}") from None
