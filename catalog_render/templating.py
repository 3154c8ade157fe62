"""The Jinja2 environment of the project's HTML pages (the run report, the evaluation page).

Templates live in ``catalog_render/templates/``: ``base.html`` (the page layout: one
self-contained file, inline CSS, no JavaScript, no network), ``macros.html`` (image cells, badges,
key/value tables) and one template per page. A server-rendered page (e.g. a review page in a
Starlette/FastAPI app) reuses them through :func:`environment`.

Autoescaping is on for every template. Each ``{{ value }}`` is escaped with :func:`html.escape`
(``quote=True``: ``& < > " '`` become ``&amp; &lt; &gt; &quot; &#x27;``) unless it is already
markup (a macro's output, :class:`markupsafe.Markup`); None prints as nothing.
"""

from __future__ import annotations

import base64
import functools
import html
import math

import jinja2
from markupsafe import Markup

DASH = "\u2013"


def format_number(value, digits: int = 4) -> str:
    """How the pages print a number: ``digits`` significant digits (``f"{v:.4g}"``), ints as
    is, ``inf``/``-inf``/``nan`` spelled out, None as an en dash."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def pct(n: int, d: int) -> str:
    """``n / d`` as a percentage: whole numbers without decimals (40%), else one decimal (33.3%);
    an en dash when ``d`` is 0."""
    if not d:
        return DASH
    p = 100.0 * n / d
    return f"{p:.0f}%" if abs(p - round(p)) < 1e-9 else f"{p:.1f}%"


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...``: an image embedded in the page itself."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _escape(value):
    """Every printed value: None -> "", markup as is, anything else through html.escape."""
    if value is None:
        return Markup("")
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value), quote=True))


@functools.cache
def environment() -> jinja2.Environment:
    """The shared environment: templates from the package, autoescaping on, undefined names are
    errors, block tags leave no blank lines."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("catalog_render", "templates"),
        autoescape=True,
        finalize=_escape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = format_number
    env.filters["pct"] = pct
    return env


def render(template: str, **context) -> str:
    """Render ``template`` (a file name under ``catalog_render/templates/``) with ``context``.
    Raises jinja2.TemplateError on a template error or a name the context lacks."""
    return environment().get_template(template).render(**context)
