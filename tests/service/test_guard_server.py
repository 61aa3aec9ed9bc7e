"""``medrobust guard serve`` end to end, as a real process on a free loopback port: tokens, PNG,
DICOM, a zip and an unreadable file in one request, upload caps, medrobust's own Square attack
through HTTP flagged by the query-attack watch, /metrics adding up, and the refusals of the
command line. The server stops by itself if this test process dies (``--stop-with-parent``)."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

import httpx  # noqa: E402
import torch  # noqa: E402

from medrobust.service.store import Store  # noqa: E402
from tests.progress_wait import wait_for  # noqa: E402
from tests.service.conftest import free_port, medrobust_command, wait_for_http  # noqa: E402

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


class Server:
    def __init__(self, url: str, token: str, attacker: str, process: subprocess.Popen, log: Path, tmp: Path) -> None:
        self.url, self.token, self.attacker, self.process, self.log = url, token, attacker, process, log
        self.tmp = tmp  # the server's temporary folder (its TMPDIR)

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics", headers=self.auth(), timeout=30).text
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(medrobust_\S+) (\S+)$", text, re.M)}


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_small_cnn, phantom32):
    import medrobust as mr
    from medrobust.models import save_checkpoint

    root = tmp_path_factory.mktemp("guard-server")
    checkpoint = save_checkpoint(trained_small_cnn, root / "model")
    calibration = root / "calibration"
    mr.write_phantoms(calibration, per_class=8, size=32, seed=21)
    store = Store(root / "service")
    token, attacker = store.create_token("clinic"), store.create_token("mallory")
    port = free_port()
    log = root / "server.log"
    tmp = root / "tmp"
    tmp.mkdir()
    with log.open("wb") as out:
        process = subprocess.Popen(medrobust_command(
            "guard", "serve", "--model", str(checkpoint), "--calibration", str(calibration), "--defense", "jpeg:quality=75",
            "--data-dir", str(root / "service"), "--port", str(port), "--max-images", "8",
            "--stop-with-parent", str(os.getpid())), stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(tmp)})
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_http(url + "/healthz", timeout_s=240)
        except TimeoutError:
            pytest.fail(f"the guard server did not start: {log.read_text()[-2000:]}")
        yield Server(url, token, attacker, process, log, tmp)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _png(image: torch.Tensor) -> bytes:
    from medrobust.layer.guard_remote import png_bytes

    return png_bytes(image)


def test_tokens_are_required_but_not_for_healthz(server):
    assert httpx.get(server.url + "/healthz", timeout=30).json()["status"] == "ok"
    assert httpx.get(server.url + "/v1/guard", timeout=30).status_code == 401
    bad = httpx.get(server.url + "/v1/guard", headers=server.auth("mrb_not-a-token"), timeout=30)
    assert bad.status_code == 401 and "not recognised" in bad.json()["detail"]
    assert httpx.post(server.url + "/v1/predict", files=[("images", ("a.png", b"x"))], timeout=30).status_code == 401
    described = httpx.get(server.url + "/v1/guard", headers=server.auth(), timeout=30).json()
    assert described["classes"] == CLASSES and described["defense"].startswith("jpeg")
    assert described["detectors"][0]["name"] == "squeeze" and described["detectors"][0]["calibration"]["n_images"] == 24
    assert described["query_watch"]["neighbours"] == 20 and len(described["model"]["sha256"]) == 64


def test_png_dicom_zip_and_an_unreadable_file_in_one_request(server, phantom32, tmp_path):
    from medrobust.data.dicom import write_dicom

    x = phantom32[0]["test"][0]
    write_dicom(tmp_path / "study.dcm", x[1, 0].numpy(), bits=8)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("batch/one.png", _png(x[2]))
        z.writestr("batch/deeper/two.png", _png(x[3]))
        z.writestr("batch/notes.txt", "not an image")
    files = [("images", ("chest.png", _png(x[0]), "image/png")),
             ("images", ("study.dcm", (tmp_path / "study.dcm").read_bytes(), "application/dicom")),
             ("images", ("xrays.zip", archive.getvalue(), "application/zip")),
             ("images", ("broken.png", b"\x89PNG not really", "image/png"))]
    before = server.metrics()
    response = httpx.post(server.url + "/v1/predict", headers=server.auth(), files=files, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    by_id = {a["id"]: a for a in body["answers"]}
    assert sorted(by_id) == ["broken.png", "chest.png", "study.dcm", "xrays.zip/batch/deeper/two.png",
                             "xrays.zip/batch/one.png"]
    assert body["ignored"] == ["xrays.zip/batch/notes.txt"]
    broken = by_id.pop("broken.png")
    assert broken["decision"] == "abstain" and broken["label"] is None
    assert broken["reason"].startswith("unreadable image: broken.png:") and "medrobust-guard-" not in broken["reason"]
    for answer in by_id.values():
        assert answer["decision"] in ("accept", "abstain")
        if answer["decision"] == "accept":
            assert answer["label"] in CLASSES and abs(sum(answer["probabilities"].values()) - 1) < 1e-4
        assert answer["scores"]["squeeze"] is not None
    assert sum(body["counts"].values()) == 5
    assert body["guard"]["model_sha256"] == httpx.get(server.url + "/healthz", timeout=30).json()["model_sha256"]
    after = server.metrics()
    assert after["medrobust_guard_images_total"] - before["medrobust_guard_images_total"] == 5
    decided = {d: after[f'medrobust_guard_decisions_total{{decision="{d}"}}']
               - before[f'medrobust_guard_decisions_total{{decision="{d}"}}'] for d in ("accept", "abstain", "warn")}
    assert decided == body["counts"]
    key = 'medrobust_guard_requests_total{route="/v1/predict",status="200"}'
    assert after[key] - before.get(key, 0) == 1
    total = 'medrobust_guard_step_seconds_count{step="total"}'
    assert after[total] - before[total] == 1
    assert after['medrobust_guard_step_seconds_sum{step="model"}'] > 0
    timing = dict(part.split(";dur=") for part in response.headers["Server-Timing"].split(", "))
    assert list(timing) == ["upload", "read", "detectors", "defense", "model", "guard"]
    spent = {k: float(v) / 1000 for k, v in timing.items()}
    assert spent["model"] > 0 and spent["guard"] >= spent["read"] + spent["detectors"] + spent["model"] - 1e-6
    grew = after['medrobust_guard_step_seconds_sum{step="total"}'] - before['medrobust_guard_step_seconds_sum{step="total"}']
    assert grew == pytest.approx(spent["guard"], abs=2e-3)  # the header and /metrics time the same call


def test_caps_refuse_with_a_sentence(server):
    nine = [("images", (f"{i}.png", b"x", "image/png")) for i in range(9)]
    response = httpx.post(server.url + "/v1/predict", headers=server.auth(), files=nine, timeout=60)
    assert response.status_code == 413 and "more than 8 images" in response.json()["detail"]
    wrong = httpx.post(server.url + "/v1/predict", headers=server.auth(), files=[("model", ("m.onnx", b"x"))], timeout=60)
    assert wrong.status_code == 422 and "unknown field 'model'" in wrong.json()["detail"]
    empty = httpx.post(server.url + "/v1/predict", headers=server.auth(), data={}, files=[], timeout=60)
    assert empty.status_code in (400, 415)
    metrics = server.metrics()
    assert metrics['medrobust_guard_requests_total{route="/v1/predict",status="413"}'] >= 1


def test_an_uploads_files_are_removed_after_its_answer_or_refusal(server, phantom32):
    splits, _ = phantom32
    answered = httpx.post(server.url + "/v1/predict", headers=server.auth(),
                          files=[("images", ("a.png", _png(splits["test"][0][0]), "image/png"))], timeout=120)
    assert answered.status_code == 200
    refused = httpx.post(server.url + "/v1/predict", headers=server.auth(),
                         files=[("images", (f"{i}.png", b"x", "image/png")) for i in range(9)], timeout=60)
    assert refused.status_code == 413

    def uploads() -> list[str]:
        return sorted(p.name for p in server.tmp.iterdir() if p.name.startswith("medrobust-guard-"))

    # removed beside the answer (not before it is sent): wait for it, on progress, not a clock
    assert wait_for(uploads, lambda left: not left, progress=len, what="the uploads' temporary folders") == []


def test_square_through_http_is_flagged_by_the_query_watch(server, phantom32, trained_small_cnn):
    """medrobust's Square attack (8/255) against the server, each query batch one POST: the watch
    withholds the answers from query 31 or 32 on (tests/detection/test_query_watch.py), and the flags
    are counted in /metrics. The attacker's token is its own tenant: the clinic's history is apart."""
    from medrobust.attacks.square import SquareAttack
    from medrobust.layer.guard_remote import QueryWatchFlagged, RemoteGuard

    x = phantom32[0]["test"][0]
    confident = trained_small_cnn(x).softmax(1).amax(1).argmax()  # the hardest image: Square keeps searching
    image, label = x[confident : confident + 1], trained_small_cnn(x[confident : confident + 1]).argmax(1)
    before = server.metrics()
    remote = RemoteGuard(server.url, token=server.attacker, stop_when_flagged=True)
    try:
        with pytest.raises(QueryWatchFlagged):
            SquareAttack(eps=8 / 255, queries=60)(remote, image, label)
    finally:
        remote.close()
    assert remote.flagged_at in (31, 32), remote.flagged_at
    flagged = remote.answers[-1]
    assert flagged["decision"] == "abstain" and flagged["probabilities"] is None
    assert flagged["reason"].startswith("query-attack watch:") or "; query-attack watch:" in flagged["reason"]
    after = server.metrics()
    assert after["medrobust_guard_query_watch_flags_total"] - before["medrobust_guard_query_watch_flags_total"] == 1
    assert after["medrobust_guard_images_total"] - before["medrobust_guard_images_total"] == remote.flagged_at
    clinic = httpx.post(server.url + "/v1/predict", headers=server.auth(), timeout=60,
                        files=[("images", ("next.png", _png(x[5]), "image/png"))]).json()
    assert "query-attack watch" not in clinic["answers"][0]["reason"]  # another tenant is not flagged


def test_no_auth_is_refused_on_every_interface_and_one_choice_is_required(tmp_path):
    from typer.testing import CliRunner

    from medrobust.cli import app

    runner = CliRunner()
    refused = runner.invoke(app, ["guard", "serve", "--model", str(tmp_path / "m"), "--no-auth", "--host", "0.0.0.0"])
    assert refused.exit_code == 2
    assert "--no-auth is refused on --host 0.0.0.0" in refused.stderr
    neither = runner.invoke(app, ["guard", "serve", "--model", str(tmp_path / "m")])
    assert neither.exit_code == 2 and "--data-dir DIR" in neither.stderr and "--no-auth" in neither.stderr
    both = runner.invoke(app, ["guard", "serve", "--run", str(tmp_path), "--model", str(tmp_path / "m"), "--no-auth"])
    assert both.exit_code == 2 and "one of them" in both.stderr


def test_two_worker_processes_answer_and_stop_with_the_parent(tmp_path, trained_small_cnn, phantom32):
    from medrobust.models import save_checkpoint

    checkpoint = save_checkpoint(trained_small_cnn, tmp_path / "model")
    port, log = free_port(), tmp_path / "workers.log"
    with log.open("wb") as out:
        process = subprocess.Popen(medrobust_command(
            "guard", "serve", "--model", str(checkpoint), "--defense", "none", "--detector", "none", "--no-auth",
            "--no-watch", "--port", str(port), "--workers", "2", "--threads", "1", "--stop-with-parent", str(os.getpid())),
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/healthz", timeout_s=240)
        x = phantom32[0]["test"][0]
        for i in range(4):  # a new connection each time: either process may answer
            answer = httpx.post(url + "/v1/predict", files=[("images", (f"{i}.png", _png(x[i]), "image/png"))],
                                timeout=120).json()["answers"][0]
            assert answer["decision"] == "accept" and answer["label"] in CLASSES
        children = [int(p) for p in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
        assert "2 processes of 1 thread" in " ".join(log.read_text().split())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    def running(child: int) -> bool:
        try:
            return "zombie" not in Path(f"/proc/{child}/status").read_text().lower()
        except OSError:  # gone
            return False

    # every child ends: the workers with the parent, multiprocessing's resource tracker once the
    # last of them has closed its pipe (a moment after the parent, so this waits for it)
    wait_for(lambda: [c for c in children if running(c)], lambda left: not left, what="the guard's worker processes")
