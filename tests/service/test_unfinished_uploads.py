"""Uploads that never finish, against a real server on 127.0.0.1 and a free port, spoken to over
a raw socket (issue 25, points 18, 20 and 21):

* a body shorter than its declared Content-Length is answered 400 once no byte has come for the
  service's idle limit (1 s here), and the part already received is removed;
* a client that disconnects mid-upload costs one line in the server's log, not a traceback, and
  its files are removed;
* a web process killed mid-upload leaves its partial file, and the next start removes it.

Each wait is on progress (an answer, a file appearing or going) under a generous limit."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

from medrobust.service.app import create_app  # noqa: E402
from medrobust.service.limits import ServiceLimits  # noqa: E402
from medrobust.service.store import Store  # noqa: E402

from .tiny_uploads import BOUNDARY, checkpoint_zip, file_part, images_zip, multipart  # noqa: E402

GENEROUS_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition, what: str, timeout_s: float = GENEROUS_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not happen within {timeout_s} s")


def _incoming_files(data_dir: Path) -> list[Path]:
    incoming = data_dir / "incoming"
    return [p for p in incoming.rglob("*") if p.is_file()] if incoming.exists() else []


class Server:
    """The app on uvicorn in a thread of this process, stopped by the fixture."""

    def __init__(self, data_dir: Path, limits: ServiceLimits) -> None:
        import uvicorn

        self.data_dir = data_dir
        self.token = Store(data_dir).create_token("acme")
        self.port = _free_port()
        config = uvicorn.Config(create_app(data_dir, limits), host="127.0.0.1", port=self.port, log_config=None,
                                access_log=False, lifespan="off", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.thread.start()
        _wait_for(lambda: self.server.started, "the server's start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(GENEROUS_S)


@pytest.fixture
def server(tmp_path):
    running = Server(tmp_path / "service", ServiceLimits(upload_idle_timeout_s=1.0))
    try:
        yield running
    finally:
        running.stop()


def _head(token: str, declared: int) -> bytes:
    return (f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {declared}\r\n\r\n").encode()


def _partial_upload() -> tuple[bytes, int]:
    """The first half of a valid upload's body (the model part whole, the images part begun) and
    the length of the whole."""
    body = multipart([file_part("model", b"chest.zip", checkpoint_zip()), file_part("images", b"x.zip", images_zip(8))])
    sent = body[: body.index(b'filename="x.zip"') + 200]
    return sent, len(body)


def test_a_body_shorter_than_its_content_length_is_answered_400_and_its_files_removed(server):
    sent, declared = _partial_upload()
    with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS_S) as client:
        client.sendall(_head(server.token, declared) + sent)
        _wait_for(lambda: _incoming_files(server.data_dir), "the upload's first file on disk")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = client.recv(65536)  # the socket's timeout (GENEROUS_S) fails the test if no answer comes
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"no bytes arrived for 1 s" in rest and b"send it again" in rest, rest[-400:]
    _wait_for(lambda: not (server.data_dir / "incoming").exists() or not any((server.data_dir / "incoming").iterdir()),
              "the partial upload's removal")
    assert not (server.data_dir / "jobs").exists() or not any((server.data_dir / "jobs").iterdir())


def test_a_client_gone_mid_upload_costs_one_log_line_and_no_file(server, caplog):
    caplog.set_level(logging.INFO)
    sent, declared = _partial_upload()
    with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS_S) as client:
        client.sendall(_head(server.token, declared) + sent)
        _wait_for(lambda: _incoming_files(server.data_dir), "the upload's first file on disk")
    # the client has closed its connection

    def said_so():
        return [r for r in caplog.records if "client disconnected mid-upload" in r.getMessage()]

    lines = _wait_for(said_so, "the server's line about the disconnect")
    _wait_for(lambda: not any((server.data_dir / "incoming").iterdir()), "the partial upload's removal")
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "tenant acme" in lines[0].getMessage()
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]


def test_a_web_process_killed_mid_upload_leaves_nothing_once_started_again(tmp_path):
    data_dir = tmp_path / "service"
    token = Store(data_dir).create_token("acme")
    port = _free_port()
    env = {**os.environ, "MEDROBUST_TUNE_MALLOC": "0"}
    command = [sys.executable, "-m", "medrobust", "serve", "--data-dir", str(data_dir), "--port", str(port),
               "--workers", "0"]

    def start() -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

        def answering() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                assert process.poll() is None, "medrobust serve exited"
                return False

        _wait_for(answering, "medrobust serve's start")
        return process

    web = start()
    try:
        sent, declared = _partial_upload()
        with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS_S) as client:
            client.sendall(_head(token, declared) + sent)
            partial = _wait_for(lambda: _incoming_files(data_dir), "the upload's first file on disk")
            web.send_signal(signal.SIGKILL)
            web.wait(GENEROUS_S)
        assert all(p.exists() for p in partial)  # what a killed process leaves behind
        web = start()
        assert _incoming_files(data_dir) == [] and list((data_dir / "incoming").iterdir()) == []
    finally:
        if web.poll() is None:
            web.send_signal(signal.SIGTERM)
            try:
                web.wait(GENEROUS_S)
            except subprocess.TimeoutExpired:
                web.kill()
                web.wait()
