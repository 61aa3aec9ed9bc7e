"""The guard server's FastAPI app (``medrobust guard serve``): one
:class:`~medrobust.layer.guard.Guard` behind HTTP, the query-attack watch in front of it.

Its own process, apart from the platform's web process (which never loads a model: nothing in
:mod:`medrobust.service.app` imports this module). Routes (README.md, "Guarded inference"):

* ``POST /v1/predict``: multipart field ``images`` (repeatable): PNG, JPEG or DICOM files, or
  zip/tar archives of them (any folder layout), received with the platform's caps and archive
  checks (:mod:`medrobust.service.guard_uploads`); answers
  ``{"answers": [GuardAnswer...], "counts": {...}, "ignored": [...], "guard": {"model_sha256", "version"}}``.
  An image the readers cannot read is answered ``abstain`` with the reason; an upload refused by
  a cap is answered 413 (400, 415, 422 for a malformed one) with the sentence.
* ``GET /v1/guard``: what it runs (``Guard.describe()``) and the query watch's settings.
* ``GET /healthz`` (no token), ``GET /metrics`` (Prometheus text, :mod:`medrobust.service.guard_metrics`).

Every answer of ``POST /v1/predict`` carries a ``Server-Timing`` header (W3C Server Timing):
``upload`` (receiving the multipart body and laying its files out), the guard's steps (``read``,
``detectors``, ``defense``, ``model``) and ``guard`` (``Guard.predict`` in all), in milliseconds,
so a client can tell the server's time on its request from the network's, and the model's from
the server's own (``benchmarks/bench_guard.py`` reads it).

Every route but ``/healthz`` needs ``Authorization: Bearer TOKEN`` from the service's token store,
unless the server runs with ``--no-auth`` on a loopback address. The model runs off the event loop,
one request at a time per process, on **one compute thread** that also built the guard
(:func:`compute_thread`): torch uses the cores for one batch already, the watch's histories must
see queries in order, and torch's OpenMP threads serve the thread that first used them at full
speed but another thread at about half (measured with ``benchmarks/bench_guard.py``: the guard
took 998 ms per 224-px image in the server's request threads against 530 ms in process, after the
main thread had built it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.requests import ClientDisconnect

from medrobust._version import __version__
from medrobust.layer.guard_watch import QueryWatch, watch_screen
from medrobust.service.guard_auth import GuardAuth
from medrobust.service.guard_metrics import CONTENT_TYPE, GuardMetrics
from medrobust.service.guard_spec import SPEC_VARIABLE, GuardSpec, build_guard
from medrobust.service.guard_uploads import lay_out_images
from medrobust.service.limits import MiB, ServiceLimits
from medrobust.service.upload_stream import UploadRefused, receive_multipart

ROUTES = ("/v1/predict", "/v1/guard", "/healthz", "/metrics")


def server_timing(upload_seconds: float, timings: dict[str, float]) -> str:
    """The ``Server-Timing`` header of one prediction: ``upload``, the guard's steps and ``guard``
    (its ``total``), each ``name;dur=MILLISECONDS``.

    >>> server_timing(0.0021, {"read": 0.001, "model": 0.0305, "total": 0.04})
    'upload;dur=2.100, read;dur=1.000, model;dur=30.500, guard;dur=40.000'
    """
    steps = [("upload", upload_seconds), *((k, v) for k, v in timings.items() if k != "total")]
    if "total" in timings:
        steps.append(("guard", timings["total"]))
    return ", ".join(f"{name};dur={1000 * seconds:.3f}" for name, seconds in steps)


def compute_thread() -> ThreadPoolExecutor:
    """The guard server's one compute thread: build the guard on it (``submit(build_guard,
    spec).result()``) and give it to :func:`create_guard_app`, which runs every prediction there."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="guard-compute")


def guard_limits(**overrides: Any) -> ServiceLimits:
    """The caps of one prediction request: an inference request carries a few studies, not an
    evaluation set, so the platform's caps are lowered (256 MB per file, 512 MB per request, 256
    parts, 1,000 images); ``overrides`` are :class:`ServiceLimits` fields."""
    values: dict[str, Any] = {"max_images_bytes": 256 * MiB, "max_request_bytes": 512 * MiB, "max_fields": 256,
                              "max_images": 1000, "max_archive_members": 10_000, "max_expanded_bytes": 2048 * MiB}
    values.update(overrides)
    return ServiceLimits(**values)


class RequestCounter:
    """ASGI middleware counting each HTTP request by route and status in the guard's metrics (a
    plain ASGI wrapper: Starlette's ``BaseHTTPMiddleware`` streams every body through a task group,
    a cost on each request's own time)."""

    def __init__(self, app: Any, metrics: GuardMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]  # an app that raises before it answers is a server error

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            self.metrics.request(path if path in ROUTES else "other", status[0])


def create_guard_app(guard: Any, *, data_dir: str | Path | None, watch: QueryWatch | None = None,
                     limits: ServiceLimits | None = None, compute: Executor | None = None) -> FastAPI:
    """The guard server's app around ``guard`` (module docstring).

    Args:
        guard: the built :class:`~medrobust.layer.guard.Guard`.
        data_dir: the service's data directory whose tokens authorise requests; None answers
            without tokens (the command line allows it on loopback only).
        watch: the query-attack watch, or None for none.
        limits: the upload caps. Default None: :func:`guard_limits`.
        compute: where predictions run, best the thread that built ``guard`` (module docstring).
            Default None: a new :func:`compute_thread`.

    Returns:
        The FastAPI app.
    """
    app = FastAPI(title="medrobust guard", version=__version__, docs_url=None, redoc_url=None,
                  description="A model behind the defense and detectors it was evaluated with.")
    auth = GuardAuth(Path(data_dir) if data_dir is not None else None)
    limits = limits or guard_limits()
    metrics = GuardMetrics(guard.detectors)
    lock = threading.Lock()  # the default compute thread serialises already; a caller's executor may not
    compute = compute or compute_thread()
    described = guard.describe()  # the model file's SHA-256 is read once, not per request
    about = {"model_sha256": described["model"]["sha256"], "version": __version__}
    app.state.guard, app.state.watch, app.state.metrics = guard, watch, metrics

    app.add_middleware(RequestCounter, metrics=metrics)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "version": __version__, "model_sha256": about["model_sha256"]}

    @app.get("/v1/guard")
    async def describe(request: Request) -> JSONResponse:
        auth.client(request)
        return JSONResponse({**described, "query_watch": watch.settings() if watch is not None else None})

    @app.get("/metrics")
    async def prometheus(request: Request) -> PlainTextResponse:
        auth.client(request)
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    def answer(sources: list[Path], client: str, folder: Path) -> dict[str, Any]:
        timings: dict[str, float] = {}
        flagged = [0]

        def counted(verdict: Any) -> None:
            flagged[0] += int(verdict.flagged)

        with lock:
            screen = watch_screen(watch, client, counted) if watch is not None else None
            result = guard.predict([str(s) for s in sources], timings=timings, screen=screen)
        answers = result.to_dicts()
        inside = re.compile(re.escape(str(folder)) + r"/part-\d+/")
        for a in answers:  # an unreadable file's reason names it as the client did, not where it was stored
            a["reason"] = inside.sub("", a["reason"])
        metrics.answers(answers, timings, flagged[0])
        return {"answers": answers, "counts": result.counts()}, timings

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        client = auth.client(request)
        started = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix="medrobust-guard-"))
        try:
            try:
                form = await receive_multipart(
                    request, folder / "received", file_caps={"images": limits.max_images_bytes}, text_fields=set(),
                    max_request_bytes=limits.max_request_bytes, max_field_bytes=limits.max_field_bytes,
                    max_fields=limits.max_fields, idle_timeout_s=limits.upload_idle_timeout_s,
                    repeatable=frozenset({"images"}))
                upload = await run_in_threadpool(lay_out_images, form.received, folder / "images", limits)
            except UploadRefused as err:
                raise HTTPException(err.status_code, err.message) from None
            except ClientDisconnect:
                return JSONResponse({"detail": "the client disconnected before the upload was complete"}, 400)
            received = time.perf_counter()
            body, timings = await asyncio.wrap_future(compute.submit(answer, upload.sources, client, folder / "images"))
        finally:  # the upload's files go beside the answer, not before it (0.8 ms of a request's own time)
            asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, folder, True)
        return JSONResponse({**body, "ignored": upload.ignored, "guard": about},
                            headers={"Server-Timing": server_timing(received - started, timings)})

    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``medrobust guard serve --workers N``: the guard built from
    the spec in :data:`SPEC_VARIABLE` (each process loads the model once)."""
    spec = GuardSpec.from_json(os.environ[SPEC_VARIABLE])
    watch = QueryWatch(**spec.watch) if spec.watch is not None else None
    compute = compute_thread()
    return create_guard_app(compute.submit(build_guard, spec).result(), data_dir=spec.data_dir, watch=watch,
                            limits=guard_limits(**spec.limits), compute=compute)
