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


def job_json(row: sqlite3.Row, now: float | None = None) -> dict[str, Any]:
    """The job JSON: status, progress of the current stage (fraction and ETA from its rate so
    far), the error, files skipped and ignored, the scorecard headline once done, and links."""
    now = time.time() if now is None else now
    request = json.loads(row["request"])
    done, total = row["stage_done"], row["stage_total"]
    fraction = eta = None
    if row["status"] == "running" and row["stage"] is not None and total:
        fraction = min(1.0, (done or 0) / total)
        elapsed = now - (row["stage_started"] or now)
        if done and 0 < fraction < 1:
            eta = round(elapsed * (total - done) / done, 1)
    job_id = row["id"]
    links = {"self": f"{API}/{job_id}", "events": f"{API}/{job_id}/events"}
    if row["status"] == "done":
        links.update({name: f"{API}/{job_id}/{name}" for name in ("report", "statement", "scorecard", "metrics")})
        links["artifacts"] = f"{API}/{job_id}/artifacts.zip"
    return {
        "id": job_id,
        "status": row["status"],
        "created": iso(row["created"]),
        "started": iso(row["started"]),
        "finished": iso(row["finished"]),
        "model_file": request.get("model_file"),
        "images_file": request.get("images_file"),
        "preset": request.get("preset"),
        "classes": request.get("classes"),
        "stage": row["stage"] if row["status"] == "running" else None,
        "stage_done": done if row["status"] == "running" else None,
        "stage_total": total if row["status"] == "running" else None,
        "stages_finished": row["stages_finished"],
        "fraction": fraction,
        "eta_seconds": eta,
        "attempts": row["attempts"],
        "cancel_requested": bool(row["cancel_requested"]),
        "error": row["error"],
        "skipped": json.loads(row["skipped"]) if row["skipped"] else [],
        "ignored_files": request.get("ignored_files", []),
        "image_files": request.get("images_kept"),  # extracted; an unreadable one is listed in skipped once run
        "headline": json.loads(row["headline"]) if row["headline"] else None,
        "links": links,
    }
