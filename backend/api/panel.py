"""The built control panel (frontend/dist) served by the API under ``/ui/``.

The panel lives under its own prefix rather than at ``/`` because its page names (health, backtests,
models, jobs) are also API paths: a browser reload of ``/ui/health`` must get the panel, and
``GET /health`` must stay the API's. Under ``/ui/`` a path that is a file of the build is that file,
any other is ``index.html`` (the panel routes it in the browser). ``/`` redirects to ``/ui/``. These
routes are outside the OpenAPI schema and need no token: the build holds no data, only code.

The build's ``assets/`` (content-hashed names) go out gzipped to a browser that accepts it and
with a year's ``Cache-Control: immutable``; API responses are never compressed here (a response
holding a token must not be compressed next to request-controlled text: BREACH).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_PANEL_DIR", "PREFIX", "install", "panel_dir"]

log = logging.getLogger(__name__)

PREFIX = "/ui"
DEFAULT_PANEL_DIR = Path(__file__).resolve().parents[2] / "frontend" / "dist"


def panel_dir(setting: str) -> Path | None:
    """The built panel's folder for the ``panel_dir`` setting, or None when there is no build there."""
    folder = Path(setting).expanduser().resolve() if setting else DEFAULT_PANEL_DIR
    return folder if (folder / "index.html").is_file() else None


IMMUTABLE = b"public, max-age=31536000, immutable"


class _Immutable:
    """A hashed asset never changes under its name: a browser may keep it for a year without asking."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_cached(msg: Message) -> None:
            if msg["type"] == "http.response.start" and msg["status"] == 200:
                msg = {**msg, "headers": [*msg.get("headers", []), (b"cache-control", IMMUTABLE)]}
            await send(msg)

        await self.app(scope, receive, send_cached)


def install(app: FastAPI, folder: Path) -> None:
    """Serve the build in ``folder`` at ``/ui/`` (after every API route, so none is shadowed)."""
    index = folder / "index.html"
    assets = StaticFiles(directory=folder / "assets", check_dir=False)
    app.mount(f"{PREFIX}/assets", GZipMiddleware(_Immutable(assets), minimum_size=1024, compresslevel=6),
              name="panel-assets")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @app.get(PREFIX, include_in_schema=False)
    @app.get(PREFIX + "/{path:path}", include_in_schema=False)
    def page(path: str = "") -> FileResponse:
        candidate = (folder / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(folder):
            return FileResponse(candidate)
        # index.html names hashed assets: never cached, so a new build is picked up at the next load
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    log.info("control panel: serving %s at %s/", folder, PREFIX)
