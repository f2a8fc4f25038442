"""The web console: a single-page app served at ``/console`` on the API's own listener.

The app is built from ``console/`` (Preact + htm + uPlot, bundled by esbuild) into
``console_assets/`` beside this file by ``scripts/build-console.sh`` (``make console``). This
module only serves the result: ``index.html`` for ``/console`` and every client-side route under
it, and the bundled files under ``/console/assets/``. Paths outside ``/v2`` need no token (the
middleware lets them through); the page itself asks for a ``dop_v1_`` token and calls ``/v2``
with it, so nothing here is secret.

Every answer carries a strict Content-Security-Policy: scripts and styles only from this origin
(no inline code), no framing, and ``connect-src`` open to ``http:``/``https:`` so the playground
can stream from an instance's public endpoint, which lives on the gateway's origin.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

ASSETS_DIR = Path(__file__).with_name("console_assets")
"""Build output of ``scripts/build-console.sh`` (git-ignored): ``index.html`` and ``assets/``."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self' http: https:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"

_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HASHED = re.compile(r"-[A-Z0-9]{8}\.(?:js|css|svg)$")
"""esbuild's ``[name]-[hash]`` entry names: content-addressed, so cacheable for good."""
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}

NOT_BUILT_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>inferd console: not built</title></head>
<body>
<main>
<h1>The inferd console is not built</h1>
<p>This server has no console assets. Build them with <code>make console</code>
(runs <code>scripts/build-console.sh</code>, which needs Node.js and npm), then reload this page.</p>
<p>The API at <code>/v2/dedicated-inferences</code> works without it.</p>
</main>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


def _headers(cache_control: str) -> dict[str, str]:
    return {**SECURITY_HEADERS, "cache-control": cache_control}


def _not_found() -> Response:
    return Response("not found\n", status_code=404, media_type="text/plain", headers=_headers(NO_CACHE))


@router.api_route("/console/assets/{name}", methods=["GET", "HEAD"])
def console_asset(name: str) -> Response:
    """A bundled file; hashed names are cached for a year, the rest revalidated."""
    if not _ASSET_NAME.match(name) or Path(name).suffix not in _MEDIA_TYPES:
        return _not_found()
    path = ASSETS_DIR / "assets" / name
    if not path.is_file():
        return _not_found()
    cache = IMMUTABLE if _HASHED.search(name) else NO_CACHE
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_headers(cache))


@router.api_route("/console", methods=["GET", "HEAD"])
@router.api_route("/console/{client_path:path}", methods=["GET", "HEAD"])
def console_page(client_path: str = "") -> Response:
    """The app's page for ``/console`` and each of its client-side routes."""
    if client_path.startswith("assets/"):
        return _not_found()
    index = ASSETS_DIR / "index.html"
    try:
        page = index.read_text(encoding="utf-8")
    except FileNotFoundError:
        return HTMLResponse(NOT_BUILT_PAGE, status_code=503, headers={**_headers("no-store"), "retry-after": "60"})
    return HTMLResponse(page, headers=_headers(NO_CACHE))
