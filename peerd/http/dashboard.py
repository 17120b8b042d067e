"""The read-only web dashboard on the node's HTTP port: static files, no server-side state.

===================  ============================================================================
route                answer
===================  ============================================================================
``/``                ``static/index.html``: one page, hash-routed (``#/``, ``#/tasks/<id>``,
                     ``#/live``)
``/dashboard/...``   ``static/``: ``dashboard.js``, ``dashboard.css``
===================  ============================================================================

Everything the page shows it reads from the node's REST API (``/v1/cluster``, ``/v1/tasks``
with ``includeStatus``, ``/v1/tasks/{id}/runs``, ``/v1/runs:watch``), in the browser; the files
here hold no data. With an auth policy the page asks for a bearer token and sends it in the
``Authorization`` header of every call (kept in the tab's ``sessionStorage``, never a cookie, so
no request is authorised by the browser on its own). Every answer carries a Content Security
Policy that allows scripts, styles and connections from this origin only.

No build step and no vendored code: ``dashboard.js`` is plain ES2020 and draws the lateness
chart as SVG itself. The files ship as package data (``pyproject.toml``).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
"""The dashboard's files."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Content-Security-Policy of every dashboard answer: this origin only, no inline code."""

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


FILES = frozenset(p.name for p in STATIC.iterdir() if p.suffix in (".js", ".css"))
"""The files served under ``/dashboard/`` (nothing else in the folder is reachable)."""


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=_HEADERS)


async def _file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers=_HEADERS)


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def add_dashboard(app: web.Application) -> None:
    """Add the routes of the module table to ``app`` (and an empty ``/favicon.ico``)."""
    app.router.add_get("/", _index)
    app.router.add_get("/favicon.ico", _no_icon)
    app.router.add_get("/dashboard/{name}", _file)
