"""End to end with real processes: ``medrobust serve`` and ``medrobust worker`` on 127.0.0.1, a
token made with ``medrobust tokens create``, a tiny job (32 px phantoms, a small CNN, the lean
configuration of ``tests/service/conftest.py``). The worker and the web process are SIGKILLed in
the middle of the run and started again: the job is taken over after its lease, resumes from its
run directory (the stage files written before the kill are not written again), and ends with the
same metrics as the same run done locally with ``mr.evaluate``. Every wait is on the job's progress (issue 25, point 11): it fails
only when the job stops moving for minutes, never on a fixed total."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from tests.progress_wait import wait_for
from tests.run_equality import without_timings
from tests.service.conftest import LEAN_CONFIG

API = "/api/v1/jobs"


def _poll(base_url: str, token: str, job_id: str, until, interval_s: float = 0.05) -> dict:
    """The job once ``until(job)`` holds; fails when the job (its status, stage, count, finished
    stages and attempts) has not moved for minutes."""
    def read() -> dict | None:
        try:
            return httpx.get(f"{base_url}{API}/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        except httpx.HTTPError:
            return None

    return wait_for(read, lambda job: job is not None and until(job), interval_s=interval_s, what=f"job {job_id}",
                    progress=lambda job: job and (job["status"], job["stage"], job["stage_done"], job["stages_finished"],
                                                  job["attempts"]))


def _results(metrics: dict) -> dict:
    """Every number of a run, without its timings (seconds, latencies), names and paths."""
    return without_timings({k: metrics[k] for k in ("baseline", "attacks", "eps_sweep", "transfer", "defenses",
                                                    "detectors", "robustness_score")})


def test_job_survives_sigkill_of_worker_and_web_and_matches_a_local_run(live_service, tmp_path):
    import medrobust as mr

    service, uploads = live_service, live_service.uploads
    auth = {"Authorization": f"Bearer {service.token}"}
    with uploads.checkpoint_zip.open("rb") as model, uploads.images_zip.open("rb") as images:
        response = httpx.post(f"{service.base_url}{API}", headers=auth, data={"config": LEAN_CONFIG}, timeout=60,
                              files={"model": ("chest-cnn.zip", model), "images": ("xrays.zip", images)})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    # stages: model check, data, baseline, attacks...: three finished means the baseline's files are written
    running = _poll(service.base_url, service.token, job_id,
                    lambda j: j["status"] != "queued" and (j["status"] != "running" or j["stages_finished"] >= 3))
    assert running["status"] == "running", f"the job ended before it could be interrupted: {running}"
    worker = service.workers[0]
    worker.send_signal(signal.SIGKILL)
    service.web.send_signal(signal.SIGKILL)
    worker.wait(10)
    service.web.wait(10)
    run_dir = next((service.data_dir / "jobs" / job_id).glob("chest-cnn-*"))
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "stages").rglob("*") if p.is_file()}
    assert before, "no stage was finished before the kill"

    service.restart_web()
    after_kill = httpx.get(f"{service.base_url}{API}/{job_id}", headers=auth, timeout=5).json()
    assert after_kill["status"] == "running"  # nobody holds it until its lease runs out, then a worker takes it over
    service.start_worker()
    done = _poll(service.base_url, service.token, job_id, lambda j: j["status"] in ("done", "failed", "cancelled"),
                 interval_s=0.5)
    assert done["status"] == "done", done["error"]
    assert done["attempts"] == 2
    rewritten = [p.name for p, mtime in before.items() if not p.exists() or p.stat().st_mtime_ns != mtime]
    assert not rewritten, f"finished stages were computed again after the restart: {rewritten}"

    remote = httpx.get(f"{service.base_url}{API}/{job_id}/metrics", headers=auth, timeout=10).json()
    settings = tmp_path / "lean.yaml"
    settings.write_text(LEAN_CONFIG)
    local = mr.evaluate(uploads.checkpoint_dir, uploads.images_dir, settings, run_dir=tmp_path / "local")
    local_metrics = json.loads((tmp_path / "local" / "metrics.json").read_text())
    assert _results(remote) == _results(local_metrics)
    assert remote["baseline"]["n"] == local.baseline.n == 36
    health = httpx.get(f"{service.base_url}/healthz", timeout=5).json()
    assert health["workers"] >= 1


@pytest.mark.parametrize("when", ["queued", "running"])
def test_cancel_stops_a_job(live_service, when):
    service, uploads = live_service, live_service.uploads
    auth = {"Authorization": f"Bearer {service.token}"}
    if when == "queued":
        service.workers[0].send_signal(signal.SIGSTOP)  # hold the worker so the job stays queued
    try:
        with uploads.checkpoint_zip.open("rb") as model, uploads.images_zip.open("rb") as images:
            job_id = httpx.post(f"{service.base_url}{API}", headers=auth, timeout=60,
                                files={"model": ("chest-cnn.zip", model), "images": ("xrays.zip", images)}).json()["id"]
        if when == "running":
            _poll(service.base_url, service.token, job_id, lambda j: j["status"] == "running" and j["stages_finished"] >= 1)
        answer = httpx.post(f"{service.base_url}{API}/{job_id}/cancel", headers=auth, timeout=10)
        assert answer.status_code == 202
        if when == "queued":
            assert answer.json()["status"] == "cancelled"
    finally:
        service.workers[0].send_signal(signal.SIGCONT)
    final = _poll(service.base_url, service.token, job_id, lambda j: j["status"] in ("done", "failed", "cancelled"))
    assert final["status"] == "cancelled"
    events = httpx.get(f"{service.base_url}{API}/{job_id}/events", headers=auth, timeout=10).text
    assert "event: end" in events and '"cancelled"' in events
