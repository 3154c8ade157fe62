"""Domain errors. The CLI turns each into a one-line message and a distinct exit code."""

from __future__ import annotations


class CatalogRenderError(Exception):
    """Base class for every error the CLI reports as a one-line message (exit code 2 unless set)."""

    exit_code = 2


class ConfigError(CatalogRenderError):
    """A job spec or CLI option is invalid; the message names the field."""

    exit_code = 3


class CatalogError(CatalogRenderError):
    """A catalog cannot be read or breaks the catalog schema as a whole (missing column, duplicate ids)."""

    exit_code = 4


class StorageError(CatalogRenderError):
    """An object cannot be read or written (missing object, unreachable S3 endpoint, denied access)."""

    exit_code = 5


class ModelError(CatalogRenderError):
    """A model directory is missing, incomplete or of an unknown family."""

    exit_code = 6


class TrainingDiverged(CatalogRenderError):
    """Training diverged (a non-finite loss or weight, or a loss that exploded; see
    :class:`catalog_render.training.loop.DivergenceGuard`). Nothing was saved as a model; the message
    names the step, the symptom and the last good checkpoint kept. Exit code 11."""

    exit_code = 11


class RunError(CatalogRenderError):
    """A run could not complete (Ray failure, no work could be scheduled)."""

    exit_code = 7


class LeaseHeld(RunError):
    """Another run holds the output's lease (and still held it after waiting); the message names it.
    Exit code 8 ("output busy"), so a scheduler can tell it from a failed run and retry later.

    ``holder`` is the lease's owner record (run_id, host, pid, command), ``expires_at`` its expiry
    (ISO 8601, UTC) as last renewed."""

    exit_code = 8

    def __init__(self, message: str, holder: dict | None = None, expires_at: str | None = None):
        super().__init__(message)
        self.holder = holder or {}
        self.expires_at = expires_at


class LeaseLost(RunError):
    """This run's lease was taken over by another run (or could not be renewed before it expired):
    the run must stop writing to the output."""


class FeedbackError(CatalogRenderError):
    """A review feedback file is unreadable or has bad rows; ``problems`` lists each one with its line."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class PretrainedError(CatalogRenderError):
    """A pretrained model that ships inside an installed package (LPIPS/DISTS backbones, the
    U²-Net-p product mask, Real-ESRGAN) cannot be used. Exit code 10."""

    exit_code = 10


class DependencyMissing(PretrainedError):
    """A Python package or a Debian shared library a pretrained feature needs is not installed.
    The message is one line naming what is missing and the command that installs it; ``package``
    is the PyPI or Debian package name, ``install`` that command."""

    def __init__(self, message: str, package: str | None = None, install: str | None = None):
        super().__init__(message)
        self.package = package
        self.install = install


class WeightFileError(PretrainedError):
    """A weight file (a package's checkpoint or its converted copy in the cache) is corrupt,
    truncated, or does not hold what its network needs; the message names the file."""


class UnsafePickleError(WeightFileError):
    """A pickle asked for a global outside the allow-list of :mod:`catalog_render.pretrained.safe_pickle`
    (anything but numpy array reconstruction); the message names the global. Nothing was executed."""
