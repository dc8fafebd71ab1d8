"""The live-caption page: ``GET /`` serves gateway/static/index.html, ``GET /static/{name}`` its script.

The page itself needs no key (it holds none); the WebSocket and the upload it makes need the
API key, typed into the page. Everything is served from here: no CDN, it works offline.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STATIC = Path(__file__).resolve().parent / "static"
# The only files served, with their types: a fixed list, so no path ever reaches the file system.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "pcm-worklet.js": "text/javascript; charset=utf-8",
}
# Scripts and connections only to this origin (ws: and wss: to it as well).
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


def _file(name: str) -> Response:
    media_type = FILES.get(name)
    path = STATIC / name
    if media_type is None or not path.is_file():  # (an install without the package's static files)
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(path.read_bytes(), media_type=media_type, headers=HEADERS)


async def index(request: Request) -> Response:
    return _file("index.html")


async def static_file(request: Request) -> Response:
    return _file(request.path_params["name"])


PAGE_ROUTES = [
    Route("/", index, methods=["GET"]),
    Route("/static/{name}", static_file, methods=["GET"]),
]
