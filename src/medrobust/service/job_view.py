"""A job's row as the API shows it (the job JSON of docs/service.md)."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

API = "/api/v1/jobs"


def iso(t: float | None) -> str | None:
    """UTC, to the millisecond: ``2026-11-29T08:00:00.123Z``."""
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stage_eta(done: int | None, total: int | None, started: float | None, now: float) -> float | None:
    """Seconds the current stage still needs at its rate so far: known once its first batch is
    done (``done`` > 0) and while it is not finished; None otherwise."""
    if not done or not total or started is None or not 0 < done < total:
        return None
    return round(max(0.0, now - started) * (total - done) / done, 1)


def job_json(row: sqlite3.Row, now: float | None = None, queue_position: int | None = None) -> dict[str, Any]:
    """The job JSON: its name, status, place in the queue, progress of the current stage
    (fraction and ETA from its rate so far), compute time and its limit, the error, files
    skipped and ignored, the scorecard headline once done, and links."""
    now = time.time() if now is None else now
    request = json.loads(row["request"])
    done, total = row["stage_done"], row["stage_total"]
    fraction = eta = None
    if row["status"] == "running" and row["stage"] is not None and total:
        fraction = min(1.0, (done or 0) / total)
        eta = stage_eta(done, total, row["stage_started"], now)
    job_id = row["id"]
    links = {"self": f"{API}/{job_id}", "events": f"{API}/{job_id}/events"}
    if row["status"] == "done":
        links.update({name: f"{API}/{job_id}/{name}" for name in ("report", "statement", "scorecard", "metrics")})
        links["artifacts"] = f"{API}/{job_id}/artifacts.zip"
        links.update({"guard": f"{API}/{job_id}/guard", "guard_yaml": f"{API}/{job_id}/guard.yaml"})
    return {
        "id": job_id,
        "name": request.get("name"),
        "model_version": request.get("model_version"),
        "status": row["status"],
        "queue_position": queue_position if row["status"] == "queued" else None,
        "created": iso(row["created"]),
        "started": iso(row["started"]),
        "finished": iso(row["finished"]),
        "model_file": request.get("model_file"),
        "images_file": request.get("images_file"),
        "preset": request.get("preset"),
        "classes": request.get("classes"),
        "class_map": request.get("class_map") or (request.get("contract") or {}).get("class_map"),
        "stage": row["stage"] if row["status"] == "running" else None,
        "stage_done": done if row["status"] == "running" else None,
        "stage_total": total if row["status"] == "running" else None,
        "stages_finished": row["stages_finished"],
        "fraction": fraction,
        "eta_seconds": eta,
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "compute_seconds": round(row["compute_s"] or 0.0, 1),
        "time_limit_seconds": row["time_limit_s"],
        "cancel_requested": bool(row["cancel_requested"]),
        "error": row["error"],
        "failed_stage": row["stage"] if row["status"] == "failed" else None,
        "skipped": json.loads(row["skipped"]) if row["skipped"] else [],
        "ignored_files": request.get("ignored_files", []),
        "image_files": request.get("images_kept"),  # extracted; an unreadable one is listed in skipped once run
        "headline": json.loads(row["headline"]) if row["headline"] else None,
        "links": links,
    }
