"""``/dashboard``: a read-only web page over the management API (no build step, no CDN: these files
ship in the package). The files hold no data and are served to anyone; every figure the page shows
comes from ``/api/v1`` and ``/metrics``, so with an API key set the page asks for it and sends it."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
FILES = {"app.js": "text/javascript", "style.css": "text/css"}


async def page(request: Request) -> Response:
    return FileResponse(HERE / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in FILES:  # only the page's own files: nothing else under this directory is reachable
        return Response(f"no dashboard file '{name}'", status_code=404, media_type="text/plain")
    return FileResponse(HERE / name, media_type=FILES[name], headers={"Cache-Control": "no-cache"})


def dashboard_routes() -> list[Route]:
    return [Route("/dashboard", page), Route("/dashboard/{name}", asset)]
