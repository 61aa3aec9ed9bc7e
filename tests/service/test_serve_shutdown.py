"""``medrobust serve`` stops on SIGTERM within seconds, with a dashboard's event stream open and
its worker in the middle of a forward pass that never returns; no worker or job process is left,
and the job goes back to the queue for the next start (issue 25: "serve does not stop on
SIGTERM while an event stream is open")."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

import httpx  # noqa: E402

from medrobust.service.store import Store  # noqa: E402
from tests.progress_wait import wait_for  # noqa: E402
from tests.service.conftest import medrobust_command, wait_for_http  # noqa: E402

API = "/api/v1/jobs"
EXIT_LIMIT_S = 30.0


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_serve_with_an_open_event_stream_and_leaves_no_worker(tmp_path, port, uploads, forever_model):
    data_dir = tmp_path / "srv"
    token = Store(data_dir).create_token("acme")
    auth = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(medrobust_command("serve", "--data-dir", str(data_dir), "--port", str(port), "--workers",
                                                "1", "--lease-seconds", "3"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes: list[int] = []
    try:
        wait_for_http(base + "/healthz")
        with forever_model.open("rb") as m, uploads.images_zip.open("rb") as i:
            job_id = httpx.post(base + API, headers=auth, timeout=60,
                                data={"classes": "Normal,Pneumonia,Pneumothorax", "intensity": "unit"},
                                files={"model": ("forever.pt", m), "images": ("xrays.zip", i)}).json()["id"]
        wait_for(lambda: httpx.get(f"{base}{API}/{job_id}", headers=auth, timeout=10).json(),
                 lambda j: j["stage"] == "model check", progress=lambda j: (j["status"], j["stage"]),
                 what="the job in its endless forward")
        (worker,) = [row["pid"] for row in Store(data_dir).db.execute("SELECT pid FROM workers")]
        job_processes = _children(worker)
        assert job_processes, "the worker has no job process"
        processes = [worker, *job_processes]

        frames: list[str] = []
        opened = threading.Event()

        def follow() -> None:
            with httpx.stream("GET", f"{base}{API}/{job_id}/events", headers=auth, timeout=None) as stream:
                for line in stream.iter_lines():
                    frames.append(line)
                    opened.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert opened.wait(30), "the event stream did not open"

        server.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        while server.poll() is None and time.monotonic() - stopped_at < EXIT_LIMIT_S:
            time.sleep(0.1)
        assert server.poll() is not None, f"serve did not stop within {EXIT_LIMIT_S:.0f} s of SIGTERM"
        reader.join(10)
        assert not reader.is_alive(), "the event stream stayed open"
        assert "event: end" not in frames  # closed, not ended: the job did not finish
        left = [pid for pid in processes if _alive(pid)]
        assert not left, f"processes left running: {left}"
        row = Store(data_dir).job(job_id)
        assert row["status"] == "queued" and row["attempts"] == 0  # given back, for the next start
    finally:
        if server.poll() is None:
            server.kill()
        for pid in processes:
            if _alive(pid):
                import os

                os.kill(pid, signal.SIGKILL)
