"""Requests the service once answered wrongly (issue 25): a bad field at the job cap (429 for a
422), a job compared with itself, images archives whose client name says nothing of their format,
file names holding NUL or CR/LF, an offset past SQLite's integers, a full disk, a configuration
whose error echoed the server's upload path or whose split fractions do not sum to 1, an archive
of more images than a job may test, and unfinished uploads left in ``incoming/``. Every answer
is checked for its status and its one-sentence ``detail``; uploads are built in memory
(:mod:`tiny_uploads`), so no model is trained and no worker runs."""

from __future__ import annotations

import errno
import gzip
import os
import signal
import time

import pytest

pytest.importorskip("fastapi")

import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from medrobust.service import upload_archives, upload_stream  # noqa: E402
from medrobust.service.app import create_app  # noqa: E402
from medrobust.service.incoming_uploads import receiving_folder  # noqa: E402
from medrobust.service.limits import ServiceLimits  # noqa: E402
from medrobust.service.store import Store  # noqa: E402

from .tiny_uploads import BOUNDARY, checkpoint_zip, file_part, images_zip, multipart  # noqa: E402

API = "/api/v1/jobs"


class Service:
    """The app over a fresh data directory with tenant acme's token; posts tiny uploads."""

    def __init__(self, data_dir, limits: ServiceLimits) -> None:
        self.data_dir = data_dir
        self.token = Store(data_dir).create_token("acme")
        self.auth = {"Authorization": f"Bearer {self.token}"}
        self.client = TestClient(create_app(data_dir, limits), raise_server_exceptions=False)

    def submit(self, images: bytes | None = None, images_name: str = "xrays.zip", **fields):
        return self.client.post(API, headers=self.auth, data=fields,
                                files={"model": ("chest.zip", checkpoint_zip()),
                                       "images": (images_name, images_zip() if images is None else images)})

    def post_raw(self, body: bytes):
        return self.client.post(API, content=body,
                                headers={**self.auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})

    def leftovers(self) -> list[str]:
        """Files under incoming/ (every request's folder is removed when it ends)."""
        incoming = self.data_dir / "incoming"
        return sorted(str(p.relative_to(incoming)) for p in incoming.rglob("*")) if incoming.exists() else []

    def job_folders(self) -> list[str]:
        jobs = self.data_dir / "jobs"
        return sorted(p.name for p in jobs.iterdir()) if jobs.exists() else []


@pytest.fixture
def make_service(tmp_path):
    made: list[Service] = []

    def make(**limits) -> Service:
        service = Service(tmp_path / f"service{len(made)}", ServiceLimits(**{"max_active_jobs": 50, **limits}))
        made.append(service)
        return service

    yield make
    for service in made:
        service.client.close()


def refused(response, status: int, *fragments: str) -> str:
    """The response's detail, after checking its status, that it is one line and names ``fragments``."""
    assert response.status_code == status, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail, detail
    for fragment in fragments:
        assert fragment in detail, (fragment, detail)
    return detail


# ---- point 6: the request is checked before the tenant's job cap ----------------------------------
def test_a_bad_request_at_the_job_cap_hears_what_is_wrong_not_the_cap(make_service):
    service = make_service(max_active_jobs=1)
    assert service.submit().status_code == 202
    refused(service.submit(preset="fast"), 422, "preset", "quick")
    refused(service.submit(config="data: {split: [0.5, 0.5, 0.5]}\n"), 422, "data.split")
    refused(service.submit(images=b"not an archive"), 422, "images", "not a zip or tar archive")
    refused(service.submit(input_size="0"), 422, "input_size")
    # a good request then meets the cap, and nothing of the refused ones is kept
    refused(service.submit(), 429, "queued or running")
    assert len(service.job_folders()) == 1 and service.leftovers() == []


# ---- point 7: a job is not compared with itself ---------------------------------------------------
def test_a_job_compared_with_itself_is_refused(make_service):
    service = make_service()
    first, second = (service.submit().json()["id"] for _ in range(2))
    refused(service.client.get(f"{API}/{first}/compare/{first}", headers=service.auth), 422, "itself", first)
    # the ids are checked as usual first (404), and two different jobs still need to be finished (409)
    refused(service.client.get(f"{API}/nope/compare/nope", headers=service.auth), 404, "not found")
    refused(service.client.get(f"{API}/{first}/compare/{second}", headers=service.auth), 409, "is queued")


# ---- point 15: requests that answered 500 ---------------------------------------------------------
@pytest.mark.parametrize("name", ["xrays", "images", "xrays.7z", "-", "model.zip", "images.tar.gz", ""])
def test_an_images_archive_is_read_by_its_content_whatever_its_name(make_service, name):
    service = make_service()
    response = service.submit(images_name=name)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["image_files"] == 2 and job["images_file"] == (name or "images")
    assert service.leftovers() == []
    upload = service.data_dir / "jobs" / job["id"] / "upload"
    assert sorted(p.name for p in upload.iterdir()) == ["images", "model"]  # no stored part is left beside them


@pytest.mark.parametrize("content", [
    b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(64),  # a 7-Zip archive
    gzip.compress(b"a gzip stream that holds no tar archive"),
    b"",
])
def test_an_archive_of_another_format_is_refused_by_its_content(make_service, content):
    service = make_service()
    for name in ("xrays.7z", "xrays", "xrays.zip"):
        refused(service.submit(images=content, images_name=name), 422, "images:", "tar")
    assert service.leftovers() == [] and service.job_folders() == []


@pytest.mark.parametrize("filename", [b"a\x00b.zip", b"\x00", b"x\r\ny.zip", b"x\ry.zip", b"x\ny.zip", b"\r\n",
                                      b'a\r\nContent-Type: text/plain', b"..\\..\\etc\\passwd"])
def test_a_file_name_holding_nul_or_cr_lf_is_answered_4xx_or_accepted_cleaned(make_service, filename):
    service = make_service()
    body = multipart([file_part("model", b"chest.zip", checkpoint_zip()), file_part("images", filename, images_zip())])
    response = service.post_raw(body)
    if response.status_code == 202:
        shown = response.json()["images_file"]
        assert shown.isprintable() and "/" not in shown and "\\" not in shown, shown
    else:
        refused(response, 400, "multipart")
    assert service.leftovers() == []


@pytest.mark.parametrize("query", ["offset=9223372036854775808", "offset=9223372036854775807", "offset=1e3",
                                   "offset=-1", "limit=101", "limit=99999999999999999999999", "limit=0"])
def test_list_paging_out_of_range_is_422(make_service, query):
    service = make_service()
    refused(service.client.get(f"{API}?{query}", headers=service.auth), 422, query.split("=")[0])


def test_the_largest_offset_accepted_answers_an_empty_page(make_service):
    from medrobust.service.api import MAX_OFFSET

    service = make_service()
    page = service.client.get(f"{API}?offset={MAX_OFFSET}", headers=service.auth)
    assert page.status_code == 200 and page.json()["jobs"] == [] and page.json()["offset"] == MAX_OFFSET


class _FillsUp:
    """A file whose disk is full: the first write stores half its bytes, then ENOSPC."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.name = handle.name

    def write(self, data) -> int:
        self.handle.write(bytes(data[: max(1, len(data) // 2)]))
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _full_disk_open(module, monkeypatch, written: list):
    """Make ``module``'s ``open`` return files whose disk fills up at their first write."""
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode or "x" in mode:
            written.append(path)
            return _FillsUp(handle)
        return handle

    monkeypatch.setattr(module, "open", fake_open, raising=False)


@pytest.mark.parametrize("module", [upload_stream, upload_archives], ids=["receiving", "extracting"])
def test_a_full_disk_answers_507_and_keeps_no_partial_file(make_service, monkeypatch, module):
    service = make_service()
    written: list = []
    _full_disk_open(module, monkeypatch, written)
    detail = refused(service.submit(), 507, "disk is full", "nothing was kept")
    assert str(service.data_dir) not in detail
    assert written and not any(os.path.exists(p) for p in written)  # a partial file was written, then removed
    assert service.leftovers() == [] and service.job_folders() == []


# ---- point 17: images per job ---------------------------------------------------------------------
def test_an_archive_of_more_images_than_a_job_may_test_is_refused_before_extraction(make_service, monkeypatch):
    service = make_service(max_images=3)
    me = service.client.get("/api/v1/me", headers=service.auth).json()
    assert me["max_images"] == 3

    extract = upload_archives._extract

    def no_image_extraction(kind, archive, kept, dest, context):
        assert not any(m.suffix == ".png" for m in kept), "images extracted before they were counted"
        return extract(kind, archive, kept, dest, context)

    monkeypatch.setattr(upload_archives, "_extract", no_image_extraction)
    refused(service.submit(images=images_zip(per_class=2)), 422, "holds 4 images", "over the 3 one job may test")
    assert service.leftovers() == [] and service.job_folders() == []
    monkeypatch.undo()
    assert service.submit(images=images_zip(per_class=1)).status_code == 202


def test_the_image_cap_defaults_to_20000_and_serve_sets_it(make_service, monkeypatch, tmp_path):
    assert ServiceLimits().max_images == 20_000
    service = make_service()
    assert service.client.get("/api/v1/me", headers=service.auth).json()["max_images"] == 20_000
    from medrobust.cli import app
    from medrobust.service import server

    served = {}

    class NotServed:  # the server's configuration, kept instead of being served
        def __init__(self, config, stopping) -> None:
            served.update(limits=config.app.state.limits)

        def run(self) -> None:
            pass

    class UnconfiguredUvicorn:  # uvicorn.Config would point the process's log handlers at CliRunner's stream
        def __init__(self, app, **_settings) -> None:
            self.app = app

    monkeypatch.setattr(server, "ShutdownServer", NotServed)
    monkeypatch.setattr(uvicorn, "Config", UnconfiguredUvicorn)
    monkeypatch.setattr(signal, "signal", lambda *_args: None)  # nor replace pytest's own SIGINT handler
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "srv"), "--workers", "0",
                                      "--max-images", "500", "--upload-idle-seconds", "2.5"])
    assert result.exit_code == 0, result.output
    assert served["limits"].max_images == 500 and served["limits"].upload_idle_timeout_s == 2.5


# ---- point 18: unfinished uploads are removed at start-up -----------------------------------------
def test_start_up_removes_unfinished_uploads_no_live_request_holds(tmp_path):
    data_dir = tmp_path / "service"
    incoming = data_dir / "incoming"
    stale = incoming / "0123456789abcdef" / "received"
    stale.mkdir(parents=True)
    (stale / "images.zip").write_bytes(bytes(4096))  # what a web process killed mid-upload left
    (incoming / "loose.part").write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    for path in (stale / "images.zip", stale, stale.parent, incoming / "loose.part"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    # an upload that another web process on the same data directory is receiving right now
    with receiving_folder(incoming / "fedcba9876543210") as live:
        (live / "model.onnx").write_bytes(b"still arriving")
        os.utime(live, (an_hour_ago, an_hour_ago))
        with TestClient(create_app(data_dir)):
            assert sorted(p.name for p in incoming.iterdir()) == ["fedcba9876543210"]
            assert (live / "model.onnx").read_bytes() == b"still arriving"
    assert list(incoming.iterdir()) == []  # the live request removed its own folder when it ended


# ---- point 20: configuration errors name the field, never a server path ---------------------------
@pytest.mark.parametrize("config, fragments", [
    ("surrogates: [{name: s, train: {arch: small-cnn}}]\ndata: {split: test}\n", ["cannot be trained"]),
    ("data: {split: [0.5, 0.5, 0.5]}\n", ["data.split", "summing to 1"]),
    ("data: {split: [0.7, 0.4, -0.1]}\n", ["data.split", "non-negative"]),
    ("data: {size: 3, per_class: 0}\nattacks: [{name: pgd, stepz: 3}]\n", ["data.size", "data.per_class",
                                                                            "attacks[0].stepz"]),
    ("data: [1, 2]\n", ["data:", "mapping"]),
])
def test_a_configuration_error_names_the_fields_and_no_server_path(make_service, config, fragments):
    service = make_service()
    detail = refused(service.submit(config=config), 422, "config:", *fragments)
    for leak in (str(service.data_dir), "incoming", "/upload", "input_value", "errors.pydantic.dev"):
        assert leak not in detail, (leak, detail)
    assert service.leftovers() == [] and service.job_folders() == []
