"""The review page's Starlette application: routes, CSRF, security headers and error pages.

Routes (everything under one output, see :func:`create_app`):

| route | what |
| --- | --- |
| ``GET /`` | the grid: filters, sort and paging from the query string (:class:`~catalog_render.review.data.Query`) |
| ``GET /render/<render_key>`` | one render full size, beside its published image and the product's photo, with its verdict history |
| ``GET /image/<render_key>/<name>`` | an image of a render, found through the manifest only (:mod:`catalog_render.review.images`) |
| ``POST /api/verdict`` | form fields ``verdict`` (approve/reject), ``key`` (render_key, repeated for a selection), ``comment`` |
| ``POST /api/undo`` | undo this browser session's last action that still stands (:func:`catalog_render.review.verdicts.undo`) |
| ``GET /api/status`` | JSON: reviewer, whether ``current.parquet`` is being rewritten, its last error |
| ``GET /static/review.js`` | the page's keyboard shortcuts and verdict buttons (no build step) |

Safety: ``TrustedHostMiddleware`` answers 400 to a ``Host`` header other than the names the server
was started for (a DNS-rebinding page cannot reach it). The session is a signed cookie
(``SessionMiddleware``, itsdangerous) with a secret made at random per process, ``SameSite=strict``;
it holds the CSRF token that every page embeds and every POST must send back (form field ``csrf``
or header ``X-CSRF-Token``), compared with :func:`secrets.compare_digest`; a POST without it, or
with another, is refused with 403 and stores nothing. Every response carries a
``Content-Security-Policy`` that allows only the server's own script, images and requests, plus
``X-Content-Type-Options: nosniff`` and ``X-Frame-Options: DENY``.

Errors: a :class:`~catalog_render.review.data.ReviewError` (no manifest, a manifest of another
version, an unknown render, a deleted image, a bad parameter, storage unreachable) is a page with
its title and message (JSON ``{"error": ...}`` under ``/api/``), with its status (404, 409, 400,
503); an unknown route is a 404 page; an unexpected exception is logged with its traceback on the
server's stderr and answered with a 500 page that shows no traceback.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.compute as pc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from catalog_render import feedback, storage
from catalog_render.review import images, verdicts
from catalog_render.review.data import SCORES, SORTS, Query, ReviewData, ReviewError
from catalog_render.review.errors import NoManifest, OldManifest, StorageUnavailable
from catalog_render.report_data import json_list
from catalog_render.templating import render

log = logging.getLogger("catalog_render.review")

#: Host names the server answers on loopback.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: Content-Security-Policy of every response.
CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
#: Score labels on the tiles (short).
SHORT = {"sharpness": "sharp", "background_whiteness": "white", "fill_ratio": "fill", "psnr": "psnr", "ssim": "ssim", "lpips": "lpips",
         "colourfulness": "colourful", "colour_delta_e": "ΔE", "clipped_highlights": "hi-clip", "clipped_shadows": "lo-clip",
         "recognisability": "recog"}
#: Scores printed on a grid tile (every score sorts the grid and shows on the render's page).
TILE_SCORES = ("sharpness", "background_whiteness", "fill_ratio", "psnr", "ssim", "lpips")
#: Actions per browser session that undo can walk back through.
MAX_UNDO = 500
_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin")]


class SecurityHeaders:
    """ASGI middleware adding :data:`CSP` and the other security headers to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + _HEADERS
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use, 32 random bytes, URL-safe base64)."""
    _session_id(request)  # set with the token, on the first page, so every later POST carries it
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def _session_id(request: Request) -> str:
    """This browser session's id (made on first use, 16 random bytes): the key of its actions in
    ``app.state.actions``, so that undo undoes this session's verdicts, not another's."""
    sid = request.session.get("sid")
    if not sid:
        sid = request.session["sid"] = secrets.token_urlsafe(16)
    return sid


async def _check_csrf(request: Request) -> dict:
    """The POST's form fields (multi-valued ``key`` kept as a list) after checking its CSRF token.
    Raises ReviewError 403 when the session has no token or the request sends none or another."""
    form = await request.form()
    fields = {k: form.getlist(k) for k in form.keys()}
    sent = request.headers.get("x-csrf-token") or (fields.get("csrf") or [""])[0]
    expected = request.session.get("csrf", "")
    if not expected or not sent or not secrets.compare_digest(str(sent), str(expected)):
        raise ReviewError("the request did not carry this page's CSRF token (open the review page again and retry): nothing was stored",
                          status=403, title="Forbidden")
    return fields


def _wants_json(request: Request) -> bool:
    """JSON for review.js (and any client asking for it under /api/); HTML for a browser's form post."""
    accept = request.headers.get("accept", "")
    return "text/html" not in accept and (request.url.path.startswith("/api/") or "application/json" in accept)


def _page(request: Request, template: str, status: int = 200, **ctx) -> HTMLResponse:
    app = request.app.state
    ctx.setdefault("notice", app.refresher.last_error)
    html = render(template, output=storage.display(app.data.output_uri), reviewer=app.reviewer, csrf=csrf_token(request), **ctx)
    return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})


def _error(request: Request, status: int, title: str, message: str, back: bool = True) -> Response:
    """An error as JSON (``/api/``) or as a page; ``back``: whether the page links to the grid
    (not when the grid itself cannot be shown: the link would lead to the same error)."""
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return _page(request, "review_error.html", status, title=title, message=message, back=back)


# --- pages ---------------------------------------------------------------------------------------


def _tile(r: dict) -> dict:
    key = r["render_key"]
    return {"key": key, "product_id": r["product_id"], "title": r["title"], "category": r["category"], "colour": r["colour"],
            "kind": r["kind"], "run_id": r["run_id"], "quality_status": r["quality_status"],
            "failed": json_list(r["quality_failed"]) or [], "compliance": json_list(r["compliance_failed"]) or [],
            "scores": [(SHORT[s], r[s]) for s in TILE_SCORES if r[s] is not None],
            "verdict": {"verdict": r["verdict"], "reviewer": r["reviewer"], "comment": r["comment"]} if r["verdict"] else None,
            "has_reference": bool(r["reference_uri"]), "size": f"{r['width']}×{r['height']}" if r["width"] else None,
            "recognition": _recognition(r)}


def _recognition(r: dict) -> dict | None:
    """A render's recognisability (catalog_render.recognisability): its ``value`` in [0, 1], the
    ``threshold`` the gate compared it with, whether it is ``below`` it, and the ``note`` (which
    check applied, or why there is no score); None when the row has none of these (no judge, or a
    manifest part written before the columns existed)."""
    value, threshold, note = r.get("recognisability"), r.get("recognisability_threshold"), r.get("recognisability_note")
    if value is None and note is None:
        return None
    return {"value": value, "threshold": threshold, "note": note,
            "below": value is not None and threshold is not None and value < threshold}


async def index(request: Request) -> Response:
    q = Query.from_params(request.query_params)
    data = request.app.state.data
    page = await _threaded(data.page, q)

    def url(**changes) -> str:
        p = q.params(**changes)
        return "/?" + urlencode(p) if p else "/"

    scopes = [("current", "current view + last run"), ("all", "all renders")] + [(f"run:{rid}", f"run {rid} ({n})") for rid, n in reversed(page.runs)]
    return _page(request, "review.html", q=q, page=page, tiles=[_tile(r) for r in page.rows], url=url, scopes=scopes, sorts=SORTS,
                 start=(page.page - 1) * q.per, per_options=(24, 48, 96, 200))


async def detail(request: Request) -> Response:
    key = request.path_params["key"]
    data = request.app.state.data

    def load():
        row = data.manifest_row(key)
        review_row = data.row(key)
        h = data.history()
        hist = [r for r in h.to_pylist() if r["render_key"] == key and r["product_id"] == row["product_id"]]
        missing = [(name, uri) for name, uri in (("image", row["image_uri"]), ("published image", row["publish_uri"]),
                                                   ("product photo", row["reference_uri"])) if uri and not storage.exists(uri)]
        fb = feedback.latest_verdicts(h)
        current = fb.filter(pc.equal(fb.column("render_key"), key)).to_pylist()
        return row, review_row, hist, missing, (current[0] if current else None)

    row, review_row, hist, missing, current = await _threaded(load)
    tile = _tile({**review_row, "verdict": current["verdict"] if current else None, "reviewer": current and current["reviewer"],
                  "comment": current and current["comment"]})
    tile["published_differs"] = bool(row["publish_uri"]) and row["publish_uri"] != row["image_uri"]
    return _page(request, "review_render.html", row=row, tile=tile, history=hist, missing=missing,
                 scores=[(SCORES[s][0], SCORES[s][1], row[s]) for s in SCORES if row.get(s) is not None])


async def image(request: Request) -> Response:
    body, mime = await _threaded(images.load, request.app.state.data, request.path_params["key"], request.path_params["which"])
    return Response(body, media_type=mime, headers={"cache-control": "private, max-age=300"})


async def static_js(request: Request) -> Response:
    return Response(request.app.state.js, media_type="text/javascript", headers={"cache-control": "no-cache"})


# --- actions -------------------------------------------------------------------------------------


def _done(request: Request, fields: dict, payload: dict) -> Response:
    if _wants_json(request):
        return JSONResponse(payload)
    nxt = (fields.get("next") or ["/"])[0]
    if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
        nxt = "/"  # only this server's own pages (no open redirect)
    return RedirectResponse(nxt, status_code=303)


async def post_verdict(request: Request) -> Response:
    fields = await _check_csrf(request)
    state = request.app.state
    verdict = (fields.get("verdict") or [""])[0]
    comment = (fields.get("comment") or [""])[0]
    stored = await _threaded(verdicts.record, state.data, fields.get("key", []), verdict, state.reviewer, comment)
    mine = state.actions.setdefault(_session_id(request), [])
    mine.append(stored.part)
    del mine[:-MAX_UNDO]
    state.refresher.request()
    n = len(stored.verdicts)
    word = "approved" if verdict == "approve" else "rejected"
    return _done(request, fields, {"part": stored.part, "verdicts": stored.verdicts, "skipped": [],
                                   "message": f"{word} {n} render{'s' if n != 1 else ''} ({stored.part})"})


async def post_undo(request: Request) -> Response:
    fields = await _check_csrf(request)
    state = request.app.state
    stored = await _threaded(verdicts.undo, state.data, state.reviewer, list(state.actions.get(_session_id(request), ())))
    state.refresher.request()
    n = len(stored.verdicts)
    msg = f"undid {stored.part}: {n} render{'s' if n != 1 else ''} restored"
    if stored.skipped:
        msg += f", {len(stored.skipped)} left as another reviewer set them since"
    return _done(request, fields, {"part": stored.part, "verdicts": stored.verdicts, "skipped": stored.skipped, "message": msg})


async def status(request: Request) -> Response:
    r = request.app.state.refresher
    return JSONResponse({"reviewer": request.app.state.reviewer, "output": storage.display(request.app.state.data.output_uri),
                         "current_view": {"writes": r.writes, "last_error": r.last_error}})


async def _threaded(fn, *args):
    """Run blocking storage / pyarrow work off the event loop (Starlette's thread pool)."""
    return await run_in_threadpool(fn, *args)


# --- errors --------------------------------------------------------------------------------------


async def on_review_error(request: Request, exc: ReviewError) -> Response:
    whole_output = isinstance(exc, (NoManifest, OldManifest, StorageUnavailable))  # the grid shows the same error
    return _error(request, exc.status, exc.title, str(exc), back=not whole_output)


async def on_http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return _error(request, 404, "Not found", f"nothing at {request.url.path[:200]!r} on this review server: renders are reached "
                      "from the grid, images only through their render's key")
    if exc.status_code == 405:
        return _error(request, 405, "Method not allowed", f"{request.method} is not allowed on {request.url.path[:200]!r}")
    return _error(request, exc.status_code, "Request refused", str(exc.detail))


async def on_exception(request: Request, exc: Exception) -> Response:
    log.exception("review page: unexpected error on %s %s", request.method, request.url.path)
    return _error(request, 500, "Internal error", "the review server hit an unexpected error; it is logged on the server's "
                  "terminal. Nothing half-written is kept: a verdict is stored whole or not at all.")


def create_app(output_uri: str, reviewer: str, *, allowed_hosts: list[str] | None = None, secret: str | None = None) -> Starlette:
    """The review application for one output (local path or ``s3://``).

    ``reviewer``: the name stored with every verdict (non-empty). ``allowed_hosts``: the ``Host``
    header values accepted (default: :data:`LOOPBACK_HOSTS`). ``secret``: the session-signing key
    (default: 32 random bytes made now, so sessions do not outlive the process).
    ``app.state.data`` is the :class:`~catalog_render.review.data.ReviewData`,
    ``app.state.refresher`` the :class:`~catalog_render.review.verdicts.ViewRefresher`,
    ``app.state.actions`` each browser session's verdict parts (what its undo may undo); on
    shutdown the app waits (up to 60 s) for a pending rewrite of ``current.parquet``.
    Raises ValueError for an empty reviewer."""
    if not reviewer or not reviewer.strip():
        raise ValueError("reviewer must be a non-empty name")
    data = ReviewData(output_uri)
    pa.array([0])  # pyarrow imports pandas on its first conversion of Python objects (~1 s): pay it at start, not on the first page

    @asynccontextmanager
    async def lifespan(app):
        yield
        await _threaded(app.state.refresher.wait, 60.0)

    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOOPBACK_HOSTS)),
        Middleware(SessionMiddleware, secret_key=secret or secrets.token_urlsafe(32), session_cookie="catalog_render_review",
                   same_site="strict", https_only=False, max_age=None),
    ]
    routes = [
        Route("/", index), Route("/render/{key}", detail), Route("/image/{key}/{which}", image),
        Route("/api/verdict", post_verdict, methods=["POST"]), Route("/api/undo", post_undo, methods=["POST"]),
        Route("/api/status", status), Route("/static/review.js", static_js),
    ]
    handlers = {ReviewError: on_review_error, HTTPException: on_http_error, Exception: on_exception}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.data = data
    app.state.reviewer = reviewer.strip()
    app.state.refresher = verdicts.ViewRefresher(data)
    app.state.actions = {}  # session id -> the feedback parts of its verdicts, oldest first (at most MAX_UNDO)
    app.state.js = resources.files("catalog_render.review").joinpath("static/review.js").read_bytes()
    return app
