"""What the review page answers with a message page instead of content (never a traceback)."""

from __future__ import annotations

from catalog_render.errors import CatalogRenderError


class ReviewError(CatalogRenderError):
    """A request the review page answers with a message page: ``status`` is the HTTP status,
    ``title`` the page's heading; the message says what is wrong and what to do."""

    status = 400
    title = "Bad request"

    def __init__(self, message: str, status: int | None = None, title: str | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title


class NoManifest(ReviewError):
    """The output has no manifest part (no run wrote here, or a wrong URI)."""

    status, title = 404, "No renders in this output"


class OldManifest(ReviewError):
    """A manifest (or feedback) part this version cannot read: a required column missing, a
    column of another type, or not Parquet."""

    status, title = 409, "Manifest from another version"


class UnknownRender(ReviewError):
    """No ok render with that render_key in the manifest (or no such image of it)."""

    status, title = 404, "No such render"


class ImageGone(ReviewError):
    """The image object a manifest row names does not exist (deleted), or is not an image."""

    status, title = 404, "Image missing"


class StorageUnavailable(ReviewError):
    """The output's store cannot be reached or read."""

    status, title = 503, "Output unreachable"
