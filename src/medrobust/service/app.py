"""The web process: the FastAPI app of ``medrobust serve`` (the API, the dashboard, /healthz).

It answers requests and checks uploads; it never loads or runs a model and never imports torch
(workers do the work, :mod:`medrobust.service.worker`). ``create_app(DIR)`` builds the app over
a data directory; the routes are in :mod:`medrobust.service.api`. See docs/service.md.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from medrobust._version import __version__
from medrobust.service.api import router
from medrobust.service.incoming_uploads import remove_stale_uploads
from medrobust.service.limits import ServiceLimits
from medrobust.service.store import Store

STATIC = Path(__file__).parent / "static"
WORKER_SEEN_WITHIN_S = 30.0
"""A worker that has not written its heartbeat for this long is not counted by /healthz."""


DASHBOARD_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # everything from this origin; reports are shown in sandboxed iframes (srcdoc) and downloaded as blobs
    "Content-Security-Policy": "default-src 'self'; frame-src 'self' blob: data:; img-src 'self' data: blob:; "
                               "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'self'",
}


def create_app(data_dir: str | Path, limits: ServiceLimits | None = None) -> FastAPI:
    """The service's app over ``data_dir`` (created when missing) with upload ``limits``; removes
    the unfinished uploads a web process that died left in ``incoming/``."""
    app = FastAPI(
        docs_url=None,  # served below from local files: the default page loads Swagger UI from a CDN
        redoc_url=None,
        title="medrobust",
        version=__version__,
        description="Upload a medical image classifier and labelled images; get how far adversarial inputs fool it, "
                    "what defenses win back, and whether attacks are detected. Every /api route needs "
                    "`Authorization: Bearer TOKEN` (`medrobust tokens create --data-dir DIR --tenant NAME`).",
    )
    app.state.store = Store(data_dir)
    app.state.data_dir = Path(data_dir)
    app.state.limits = limits or ServiceLimits()
    remove_stale_uploads(app.state.data_dir, started=time.time())  # left by a web process killed mid-upload
    app.state.stopping = threading.Event()  # set when the server shuts down: open event streams then close
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def _one_sentence(_request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()) if p not in ('query', 'path', 'body'))}: "
                             f"{e.get('msg', 'invalid')}" for e in err.errors())
        return JSONResponse({"detail": f"invalid request: {problems}; see /docs for each route's parameters"},
                            status_code=422)

    @app.get("/healthz", tags=["service"], summary="Liveness (no token)")
    async def healthz() -> dict:
        return {"status": "ok", "version": __version__,
                "workers": app.state.store.live_workers(WORKER_SEEN_WITHIN_S)}

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=DASHBOARD_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _offline_docs(app)

    return app


def _offline_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the files the ``fastapi-offline`` package ships (Swagger UI 5,
    which reads OpenAPI 3.1), so that the API's documentation works offline like the dashboard;
    FastAPI's default page loads Swagger UI from a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    try:
        import fastapi_offline
    except ImportError:  # the page then names the missing package instead of staying blank
        @app.get("/docs", include_in_schema=False)
        def docs_missing() -> HTMLResponse:
            return HTMLResponse("<p>The API documentation page needs the fastapi-offline package: "
                                "pip install 'medrobust[service]'. The schema itself is at /openapi.json.</p>")
        return
    app.mount("/docs-assets", StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="medrobust API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")
