"""The ``/api/v1`` routes: submit a job, list and read jobs, follow their progress, fetch their
results, compare two, cancel and delete. Every route needs ``Authorization: Bearer TOKEN``; a
tenant sees only its own jobs (another tenant's job answers 404, as a missing one does).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from medrobust.layer.guard_definition import GuardDefinition
from medrobust.service.guard_file import guard_yaml, job_guard_definition
from medrobust.service.incoming_uploads import receiving_folder
from medrobust.service.job_files import JobFiles, folder_bytes, incoming_dir, job_files, run_name
from medrobust.service.job_view import API, job_json
from medrobust.service.limits import MiB, ServiceLimits
from medrobust.service.store import ACTIVE, FINISHED, Store, Tenant
from medrobust.service.submission import TEXT_FIELDS, SubmissionRefused, prepare_job
from medrobust.service.upload_stream import UploadRefused, receive_multipart

router = APIRouter(prefix="/api/v1", tags=["jobs"])
log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False, description="A token from `medrobust tokens create --data-dir DIR --tenant NAME`")

MAX_OFFSET = 10**9
"""Largest ``offset`` of the job list: far beyond any tenant's jobs, and within SQLite's integers."""
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""A write failed for want of room (the disk, or the service user's quota): answered 507."""
EVENTS_POLL_S = 0.5
EVENTS_KEEPALIVE_S = 15.0
HTML_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'; "
                "img-src data:; style-src 'unsafe-inline'"}
"""A report opened straight from the API runs no script and reaches nothing: it is self-contained."""

_RESULT_FILES = {"report": ("report.html", "text/html; charset=utf-8"),
                 "statement": ("statement.html", "text/html; charset=utf-8"),
                 "scorecard": ("scorecard.json", "application/json"),
                 "metrics": ("metrics.json", "application/json")}

_UPLOAD_SCHEMA = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["model", "images"],
        "properties": {
            "model": {"type": "string", "format": "binary",
                      "description": ".keras, .onnx, TorchScript .pt/.pth, or a .zip of a medrobust checkpoint folder"},
            "images": {"type": "string", "format": "binary",
                       "description": ".zip / .tar.gz / .tar of one folder of images (PNG, JPEG, DICOM) per class"},
            "classes": {"type": "string", "description": "the model's classes in its output order, comma-separated"},
            "input_size": {"type": "string", "description": "the side the model takes (224), HEIGHT,WIDTH, or a "
                           "volume model's DEPTH,HEIGHT,WIDTH (16,64,64)"},
            "intensity": {"type": "string", "description": "unit | imagenet | symmetric | byte | percentile:LOW,HIGH | "
                                                           "hu_windows:LEVEL,WIDTH;... (CT windows in HU)"},
            "window": {"type": "string", "description": "CT windows in HU the model takes, LEVEL,WIDTH each, "
                       "';'-separated (40,80 or 40,80;80,200): instead of intensity"},
            "output_kind": {"type": "string", "description": "softmax | binary | multilabel"},
            "normal_class": {"type": "string"},
            "class_map": {"type": "string", "description": "FOLDER=CLASS pairs, comma-separated: a folder of the "
                          "images archive is this model class (e.g. NORMAL=Normal,PNEU=Pneumonia)"},
            "name": {"type": "string", "description": "the job's name (shown on the job, the report and the statement)"},
            "model_version": {"type": "string", "description": "the model's version, as you name it"},
            "preset": {"type": "string", "enum": ["quick", "standard", "thorough"], "default": "quick"},
            "config": {"type": "string", "description": "YAML in the medrobust evaluate schema (instead of preset)"},
        }}}}},
}


async def tenant(request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Tenant:
    """The tenant of the request's bearer token; 401 without a valid one.

    The lookups of this and the read routes are SQLite reads of microseconds (WAL: never blocked
    by a worker's write), so they run on the event loop: a hand-off to the thread pool costs far
    more under load than the read itself."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(401, "missing token: send the header 'Authorization: Bearer TOKEN' (an administrator creates "
                                 "tokens with: medrobust tokens create --data-dir DIR --tenant NAME)", headers=challenge)
    found = _store(request).tenant_for_token(credentials.credentials)
    if found is None:
        raise HTTPException(401, "token not recognised or revoked; ask your administrator for a new one",
                            headers=challenge)
    return found


Caller = Annotated[Tenant, Depends(tenant)]


def _store(request: Request) -> Store:
    return request.app.state.store


MIN_ID_PREFIX = 6
"""Shortest start of a job id that the routes accept in place of the whole id (when unique)."""


def _own_job(request: Request, job_id: str, who: Tenant):
    """The tenant's job with this id, or with an id starting with it (at least
    :data:`MIN_ID_PREFIX` characters, and only one such job); 404 otherwise."""
    store = _store(request)
    row = store.job(job_id, who)
    if row is None and len(job_id) >= MIN_ID_PREFIX:
        matches = store.job_ids_starting(job_id.lower(), who)
        if len(matches) > 1:
            raise HTTPException(404, f"job {job_id!r}: several of your jobs start with it; give more of the id "
                                     "(GET /api/v1/jobs lists them)")
        row = store.job(matches[0], who) if matches else None
    if row is None or row["delete_requested"]:
        raise HTTPException(404, f"job {job_id!r} not found (it does not exist, was deleted, or belongs to another "
                                 "tenant); list yours with GET /api/v1/jobs")
    return row


@router.post("/jobs", status_code=202, summary="Submit a model and images for evaluation", openapi_extra=_UPLOAD_SCHEMA)
async def submit_job(request: Request, who: Caller) -> JSONResponse:
    """Receive the upload (caps enforced while it streams), check all of it, then the tenant's
    job quota, and queue the job: 202 with the job. A request that is refused (or whose client
    goes away) leaves no file behind."""
    store, limits = _store(request), request.app.state.limits
    data_dir: Path = request.app.state.data_dir
    room = limits.max_stored_bytes - store.stored_bytes(who)
    declared = request.headers.get("content-length")
    if room <= 0 or (declared and declared.isdigit() and int(declared) > room):
        raise HTTPException(413, _quota_message(limits, room))
    job_id = store.new_job_id()
    try:
        with receiving_folder(incoming_dir(data_dir) / job_id) as folder:
            return await _receive_and_queue(request, who, job_id, folder, room)
    except ClientDisconnect:  # nobody is left to answer: one line in the log, not a traceback
        log.info("job %s (tenant %s): client disconnected mid-upload", job_id, who.name)  # its files are removed
        return JSONResponse({"detail": "the client disconnected before the upload was complete"}, status_code=400)
    except OSError as err:
        if err.errno not in _DISK_FULL:
            raise
        log.error("upload of job %s (tenant %s) refused: the data folder %s is full (%s)", job_id, who.name,
                  data_dir, err.strerror)
        raise HTTPException(507, "the server has no room left to store this upload (its disk is full); nothing was "
                                 "kept: try again later, and tell the service's administrator if it persists") from None


async def _receive_and_queue(request: Request, who: Tenant, job_id: str, folder: Path, room: int) -> JSONResponse:
    store, limits = _store(request), request.app.state.limits
    data_dir: Path = request.app.state.data_dir
    try:
        # parts are stored apart from what the checks write beside them (images/, model/, the model's name)
        form = await receive_multipart(
            request, folder / "received", file_caps={"model": min(limits.max_model_bytes, room),
                                                     "images": min(limits.max_images_bytes, room)},
            text_fields=set(TEXT_FIELDS), max_request_bytes=min(limits.max_request_bytes, room + MiB),
            max_field_bytes=limits.max_field_bytes, max_fields=limits.max_fields,
            idle_timeout_s=limits.upload_idle_timeout_s)
    except UploadRefused as err:
        over_quota = err.status_code == 413 and room < limits.max_request_bytes
        raise HTTPException(err.status_code, _quota_message(limits, room) if over_quota else err.message) from None
    try:
        prepared = await run_in_threadpool(prepare_job, form, folder, limits)
    except SubmissionRefused as err:
        raise HTTPException(err.status_code, err.message) from None
    shutil.rmtree(folder / "received", ignore_errors=True)
    if store.active_jobs(who) >= limits.max_active_jobs:  # after every check: a bad request hears what is wrong
        raise _too_many_jobs(limits)
    size = await run_in_threadpool(folder_bytes, folder)
    if size > room:
        raise HTTPException(413, _quota_message(limits, room, f"the extracted upload takes {size / 2**30:.2f} GiB; "))
    request_json = {**prepared.request, "run_name": run_name(prepared.request["model_file"], job_id)}
    files = JobFiles(data_dir, job_id, request_json["run_name"])
    try:
        files.root.mkdir(parents=True, exist_ok=True)
        os.replace(folder, files.upload)
        time_limit = store.tenant_job_seconds(who) or limits.max_job_seconds
        queued = store.add_job(job_id, who, request_json, size, limits.max_active_jobs, time_limit_s=time_limit,
                               max_attempts=limits.max_attempts)
    except BaseException:
        files.delete()
        raise
    if not queued:  # another upload won the race for the last place
        files.delete()
        raise _too_many_jobs(limits)
    row = store.job(job_id)
    return JSONResponse(job_json(row, queue_position=store.queue_position(row)), status_code=202,
                        headers={"Location": f"{API}/{job_id}"})


def _too_many_jobs(limits: ServiceLimits) -> HTTPException:
    return HTTPException(429, f"you have {limits.max_active_jobs} jobs queued or running, the most allowed at once; "
                              "wait for one to finish or cancel one (POST /api/v1/jobs/ID/cancel)")


def _quota_message(limits: ServiceLimits, room: int, why: str = "") -> str:
    used = limits.max_stored_bytes - room
    return (f"{why}your jobs hold {used / 2**30:.2f} GiB of the {limits.max_stored_bytes / 2**30:.2f} GiB you may store; "
            "delete finished jobs (DELETE /api/v1/jobs/ID) to make room, or send a smaller upload")


@router.get("/me", summary="Who the token acts for, and the tenant's use of its limits")
async def whoami(request: Request, who: Caller) -> dict[str, Any]:
    store, limits = _store(request), request.app.state.limits
    return {"tenant": who.name, "active_jobs": store.active_jobs(who), "max_active_jobs": limits.max_active_jobs,
            "stored_bytes": store.stored_bytes(who), "max_stored_bytes": limits.max_stored_bytes,
            "max_model_bytes": limits.max_model_bytes, "max_images_bytes": limits.max_images_bytes,
            "max_images": limits.max_images,
            "max_job_seconds": store.tenant_job_seconds(who) or limits.max_job_seconds,
            "max_attempts": limits.max_attempts, "ceilings": dict(limits.ceilings)}


@router.get("/jobs", summary="Your jobs, newest first")
async def list_jobs(request: Request, who: Caller, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
    store = _store(request)
    rows, total = store.jobs(who, limit, offset)
    now = time.time()
    queue = store.queue_positions() if any(r["status"] == "queued" for r in rows) else {}
    return {"jobs": [job_json(r, now, queue.get(r["id"])) for r in rows], "total": total, "limit": limit,
            "offset": offset}


@router.get("/jobs/{job_id}", summary="One job: status, stage, fraction done, ETA, error, skipped files")
async def get_job(request: Request, job_id: str, who: Caller) -> dict[str, Any]:
    row = _own_job(request, job_id, who)
    return job_json(row, queue_position=_store(request).queue_position(row))


@router.get("/jobs/{job_id}/events", summary="Server-Sent Events of the job's progress",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(request: Request, job_id: str, who: Caller) -> StreamingResponse:
    """``event: job`` with the job JSON whenever it changes; ``event: end`` once it is finished.
    When the server shuts down the stream closes (the client reconnects after ``retry``)."""
    store = _store(request)
    job_id = _own_job(request, job_id, who)["id"]
    stopping = request.app.state.stopping

    async def stream():
        last, last_sent = None, time.monotonic()
        yield "retry: 3000\n\n"
        while not stopping.is_set():
            row = store.job(job_id, who)
            if row is None or row["delete_requested"]:
                yield "event: end\ndata: {\"status\": \"deleted\"}\n\n"
                return
            view = job_json(row, queue_position=store.queue_position(row))
            stamp = (row["updated"], view["status"], view["stage_done"], view["queue_position"])
            if stamp != last:
                last, last_sent = stamp, time.monotonic()
                yield f"event: job\ndata: {json.dumps(view)}\n\n"
            if view["status"] in FINISHED:
                yield f"event: end\ndata: {json.dumps({'status': view['status']})}\n\n"
                return
            if time.monotonic() - last_sent > EVENTS_KEEPALIVE_S:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(EVENTS_POLL_S)
        yield ": the server is shutting down\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _finished_run(request: Request, job_id: str, who: Tenant) -> JobFiles:
    row = _own_job(request, job_id, who)
    job_id = row["id"]
    if row["status"] != "done":
        if row["status"] in ACTIVE:
            raise HTTPException(409, f"job {job_id} is {row['status']}; its results exist once its status is done "
                                     f"(follow it with GET {API}/{job_id}/events)")
        ended = f"failed: {row['error']}" if row["status"] == "failed" else "was cancelled"
        raise HTTPException(409, f"job {job_id} {ended}; it has no results: submit it again (POST /api/v1/jobs)")
    return job_files(request.app.state.data_dir, row)


def _result(name: str):
    filename, media_type = _RESULT_FILES[name]

    def read(request: Request, job_id: str, who: Caller) -> Response:
        path = _finished_run(request, job_id, who).run / filename
        if not path.is_file():
            raise HTTPException(404, f"job {job_id}: {filename} was not written (see the job's error and metrics)")
        headers = {**HTML_HEADERS} if filename.endswith(".html") else {"X-Content-Type-Options": "nosniff"}
        return FileResponse(path, media_type=media_type, headers=headers)

    read.__name__ = f"job_{name}"
    return read


for _name in _RESULT_FILES:
    router.add_api_route(f"/jobs/{{job_id}}/{_name}", _result(_name), methods=["GET"], response_class=FileResponse,
                         summary=f"The finished job's {_RESULT_FILES[_name][0]}")


@router.get("/jobs/{job_id}/artifacts.zip", summary="The run directory as a zip (without the uploaded model)",
            response_class=FileResponse)
async def job_artifacts(request: Request, job_id: str, who: Caller) -> FileResponse:
    files = _finished_run(request, job_id, who)
    handle, name = tempfile.mkstemp(prefix=f"artifacts-{job_id}-", suffix=".zip", dir=files.root)
    os.close(handle)
    await run_in_threadpool(_zip_folder, files.run, Path(name))
    return FileResponse(name, media_type="application/zip", filename=f"{files.run_name}.zip",
                        background=BackgroundTask(os.unlink, name))


def _job_guard(request: Request, job_id: str, who: Tenant, defense: str | None) -> tuple[str, GuardDefinition]:
    files = _finished_run(request, job_id, who)
    return files.job_id, job_guard_definition(files, defense)


_DEFENSE = Query(max_length=500, description="one of the run's defenses (default: its first)")


@router.get("/jobs/{job_id}/guard", summary="The finished job's guard: what `medrobust guard serve` would serve "
                                           "and what the run measured of it (JSON)")
def job_guard(request: Request, job_id: str, who: Caller, defense: Annotated[str | None, _DEFENSE] = None) -> dict:
    """The definition as JSON (the dashboard's "Serve this guard"); guard.yaml is the same as a file."""
    return _job_guard(request, job_id, who, defense)[1].to_dict()


@router.get("/jobs/{job_id}/guard.yaml", summary="The finished job's guard definition as a file, with the command "
                                                "that serves it", response_class=Response,
            responses={200: {"content": {"application/yaml": {}}}})
def job_guard_yaml(request: Request, job_id: str, who: Caller,
                   defense: Annotated[str | None, _DEFENSE] = None) -> Response:
    """``guard.yaml``: the run's model (file, SHA-256, contract), defense, squeeze detector and
    threshold, the run's figures and the exact ``medrobust guard serve --run`` command, which
    runs on this service's host, where the run folder is. The web process loads no model."""
    found_id, definition = _job_guard(request, job_id, who, defense)
    return Response(guard_yaml(definition, found_id), media_type="application/yaml",
                    headers={"Content-Disposition": 'attachment; filename="guard.yaml"',
                             "X-Content-Type-Options": "nosniff"})


def _zip_folder(folder: Path, out: Path) -> None:
    """Zip ``folder`` (regular files only, links not followed) under its own name."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for dirpath, dirs, names in os.walk(folder):
            dirs.sort()
            for filename in sorted(names):
                path = Path(dirpath) / filename
                if path.is_symlink() or not path.is_file():
                    continue
                archive.write(path, (Path(folder.name) / path.relative_to(folder)).as_posix())


@router.get("/jobs/{job_id}/compare/{other_id}", summary="The comparison of two finished jobs (HTML)",
            response_class=HTMLResponse)
def compare_jobs(request: Request, job_id: str, other_id: str, who: Caller) -> HTMLResponse:
    from medrobust.report.compare import comparison, comparison_html

    rows = [_own_job(request, j, who) for j in (job_id, other_id)]
    if rows[0]["id"] == rows[1]["id"]:
        raise HTTPException(422, f"job {rows[0]['id']} cannot be compared with itself: a comparison shows how two "
                                 f"evaluations differ; give another finished job's id ({API}/{job_id}/compare/OTHER)")
    runs = [_finished_run(request, j, who).run for j in (job_id, other_id)]
    try:
        html = comparison_html(comparison(runs))
    except ValueError as err:
        raise HTTPException(409, f"cannot compare {job_id} and {other_id}: {err}") from None
    return HTMLResponse(html, headers=HTML_HEADERS)


@router.post("/jobs/{job_id}/cancel", status_code=202, summary="Cancel a queued or running job")
def cancel_job(request: Request, job_id: str, who: Caller) -> JSONResponse:
    """A queued job is cancelled at once; a running one as soon as its worker ends its process (a second or two)."""
    store = _store(request)
    row = _own_job(request, job_id, who)
    job_id = row["id"]
    if row["status"] not in ACTIVE:
        raise HTTPException(409, f"job {job_id} is {row['status']}: there is nothing to cancel "
                                 f"(DELETE {API}/{job_id} removes it and its files)")
    store.request_cancel(job_id, delete=False)
    after = store.job(job_id)
    return JSONResponse(job_json(after, queue_position=store.queue_position(after)), status_code=202)


@router.delete("/jobs/{job_id}", status_code=202, summary="Cancel the job, then delete its files")
def delete_job(request: Request, job_id: str, who: Caller) -> dict[str, Any]:
    """Finished (or queued) jobs are deleted now; a running one once its worker has ended its process."""
    store = _store(request)
    row = _own_job(request, job_id, who)
    job_id = row["id"]
    if store.request_cancel(job_id, delete=True) in FINISHED:
        job_files(request.app.state.data_dir, row).delete()
        store.forget_job(job_id)
        return {"id": job_id, "status": "deleted"}
    return {"id": job_id, "status": "deleting", "detail": "the job stops within a second or two; its files are then deleted"}

