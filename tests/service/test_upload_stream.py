"""receive_multipart: caps enforced while the body streams in, client file names never used as paths.

The streaming proofs (a declared Content-Length refused before the body is read, a chunked body
refused part-way) call receive_multipart on a Request built from an ASGI scope and a receive()
that hands out chunks and counts them, so "stopped early" is observed directly; one more goes
through httpx's ASGITransport, which also pulls the request body lazily.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from medrobust.service.upload_stream import (
    ReceivedFile,
    UploadRefused,
    display_filename,
    receive_multipart,
    stored_suffix,
)

BOUNDARY = "medrobust-test-boundary-7Qx"
CAPS = {"model": 10_000, "images": 20_000}
TEXT = {"classes", "preset", "config", "input_size"}


def _part(name: str, content: bytes, filename: str | None = None, boundary: str = BOUNDARY) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
    if filename is not None:
        head += "Content-Type: application/octet-stream\r\n"
    return head.encode() + b"\r\n" + content + b"\r\n"


def _body(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _headers(content_type: str = f"multipart/form-data; boundary={BOUNDARY}") -> dict[str, str]:
    return {"content-type": content_type}


OPTIONS = {"file_caps": CAPS, "text_fields": TEXT, "max_request_bytes": 100_000, "max_field_bytes": 100, "max_fields": 8}
"""receive_multipart's caps in these tests (a test overrides one at a time)."""


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _app(folder: Path, **overrides) -> FastAPI:
    options = OPTIONS | overrides
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request):
        try:
            form = await receive_multipart(request, folder, **options)
        except UploadRefused as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status_code)
        files = {k: {"filename": f.filename, "name": f.path.name, "size": f.size} for k, f in form.files.items()}
        return {"fields": form.fields, "files": files}

    return app


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "incoming" / "up1"


def _post(folder: Path, body: bytes, headers: dict[str, str] | None = None, **overrides) -> httpx.Response:
    with TestClient(_app(folder, **overrides)) as client:
        return client.post("/upload", content=body, headers=headers or _headers())


# --- a fake ASGI request whose body chunks are counted as they are read ---------------------------


class _Body:
    """receive() for a Request: hands out ``chunks`` one message at a time and counts them."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0

    async def __call__(self) -> dict:
        if self.read < len(self.chunks):
            chunk = self.chunks[self.read]
            self.read += 1
            return {"type": "http.request", "body": chunk, "more_body": self.read < len(self.chunks)}
        return {"type": "http.request", "body": b"", "more_body": False}


def _request(headers: dict[str, str], body: _Body) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
    }
    return Request(scope, body)


def _receive_direct(folder: Path, headers: dict[str, str], body: _Body, **overrides):
    options = OPTIONS | overrides
    return asyncio.run(receive_multipart(_request(headers, body), folder, **options))


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- happy path -----------------------------------------------------------------------------------


def test_two_files_and_text_fields_are_stored_under_server_names(folder: Path, tmp_path: Path) -> None:
    model = os.urandom(3_000)
    images = os.urandom(5_000)
    body = _body(
        _part("model", model, filename="../../etc/passwd.onnx"),
        _part("classes", "Normal,Pneumonia,Épanchement".encode()),
        _part("images", images, filename="C:\\data\\xrays.TAR.GZ"),
        _part("preset", b"quick"),
    )
    response = _post(folder, body)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["fields"] == {"classes": "Normal,Pneumonia,Épanchement", "preset": "quick"}
    assert got["files"] == {
        "model": {"filename": "passwd.onnx", "name": "model.onnx", "size": 3_000},
        "images": {"filename": "xrays.TAR.GZ", "name": "images.tar.gz", "size": 5_000},
    }
    assert (folder / "model.onnx").read_bytes() == model
    assert (folder / "images.tar.gz").read_bytes() == images
    # nothing was written anywhere but the folder (no etc/passwd.onnx next to it or above it)
    assert _files_under(tmp_path) == {"incoming/up1/model.onnx", "incoming/up1/images.tar.gz"}


def test_received_form_direct_call_and_small_chunks(folder: Path) -> None:
    """Chunks of 7 bytes split headers, boundaries and data anywhere; the result is the same."""
    model = os.urandom(2_500)
    body = _body(_part("model", model, filename="net.pt"), _part("input_size", b"224"))
    form = _receive_direct(folder, _headers(), _Body(_chunks(body, 7)))
    assert form.fields == {"input_size": "224"}
    assert form.files == {"model": ReceivedFile("model", "net.pt", folder / "model.pt", 2_500)}
    assert (folder / "model.pt").read_bytes() == model


def test_suffix_outside_the_whitelist_is_dropped(folder: Path) -> None:
    body = _body(_part("model", b"MZ...", filename="model.onnx.exe"), _part("images", b"PK..", filename="x.tgz"))
    response = _post(folder, body)
    assert response.status_code == 200, response.text
    assert response.json()["files"]["model"] == {"filename": "model.onnx.exe", "name": "model", "size": 5}
    assert _files_under(folder) == {"model", "images.tgz"}


def test_file_field_without_filename_is_still_a_file(folder: Path) -> None:
    response = _post(folder, _body(_part("model", b"weights")))
    assert response.status_code == 200, response.text
    assert response.json()["files"] == {"model": {"filename": "", "name": "model", "size": 7}}
    assert (folder / "model").read_bytes() == b"weights"


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("a.keras", ".keras"),
        ("a.ONNX", ".onnx"),
        ("a.pth", ".pth"),
        ("ckpt.zip", ".zip"),
        ("imgs.tar", ".tar"),
        ("imgs.tar.gz", ".tar.gz"),
        ("imgs.gz", ".gz"),
        ("run.sh", ""),
        ("noext", ""),
        ("..", ""),
        ("", ""),
    ],
)
def test_stored_suffix(name: str, suffix: str) -> None:
    assert stored_suffix(name) == suffix


def test_display_filename_is_basename_printable_and_short() -> None:
    assert display_filename("../../etc/passwd.onnx") == "passwd.onnx"
    assert display_filename("C:\\Users\\a\\m.onnx") == "m.onnx"
    assert display_filename("evil\r\nSet-Cookie: x\x00.pt") == "evilSet-Cookie: x.pt"
    assert len(display_filename("x" * 1000 + ".onnx")) == 200


# --- caps -----------------------------------------------------------------------------------------


def test_file_over_its_cap_is_refused_and_nothing_is_left(folder: Path) -> None:
    body = _body(
        _part("images", b"i" * 1_000, filename="imgs.zip"),  # written completely first
        _part("model", b"m" * (CAPS["model"] + 1), filename="m.onnx"),
    )
    response = _post(folder, body)
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "model" in detail and "--max-model-mb" in detail and "cap" in detail
    assert _files_under(folder) == set()


def test_file_exactly_at_its_cap_is_accepted(folder: Path) -> None:
    response = _post(folder, _body(_part("model", b"m" * CAPS["model"], filename="m.onnx")))
    assert response.status_code == 200, response.text
    assert response.json()["files"]["model"]["size"] == CAPS["model"]


def test_declared_content_length_over_the_cap_is_refused_before_the_body_is_read(folder: Path) -> None:
    body = _Body(_chunks(_body(_part("model", b"m" * 5_000, filename="m.onnx")), 1_000))
    headers = _headers() | {"content-length": "5000000"}
    with pytest.raises(UploadRefused) as refused:
        _receive_direct(folder, headers, body, max_request_bytes=4_000)
    assert refused.value.status_code == 413
    assert "--max-request-mb" in refused.value.message
    assert body.read == 0
    assert not folder.exists() or _files_under(folder) == set()

    # the same through the app: TestClient declares the true length, which is over the cap
    response = _post(folder, _body(_part("model", b"m" * 5_000, filename="m.onnx")), max_request_bytes=4_000)
    assert response.status_code == 413
    assert "declares" in response.json()["detail"]


def test_chunked_body_over_the_cap_is_refused_while_streaming(folder: Path) -> None:
    """50 chunks of 64 kB, no Content-Length, 256 kB cap: refused at the fifth chunk, the rest never read."""
    head = _part("model", b"", filename="m.onnx")[: -len(b"\r\n")]
    body = _Body([head] + [b"\0" * 65_536] * 50 + [f"\r\n--{BOUNDARY}--\r\n".encode()])
    with pytest.raises(UploadRefused) as refused:
        _receive_direct(folder, _headers(), body, file_caps={"model": 10 * 2**20}, max_request_bytes=256 * 1024)
    assert refused.value.status_code == 413
    assert "0.25 MB" in refused.value.message and "--max-request-mb" in refused.value.message
    assert body.read == 5  # the head and four full chunks fit; the fifth passes the cap
    assert _files_under(folder) == set()


def test_chunked_body_over_the_cap_through_asgi_transport(folder: Path) -> None:
    consumed = 0

    async def chunks():
        nonlocal consumed
        yield _part("model", b"", filename="m.onnx")[: -len(b"\r\n")]
        for _ in range(50):
            consumed += 1
            yield b"\0" * 65_536
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    async def go() -> httpx.Response:
        app = _app(folder, file_caps={"model": 10 * 2**20}, max_request_bytes=256 * 1024)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/upload", content=chunks(), headers=_headers())

    response = asyncio.run(go())
    assert response.status_code == 413
    assert "whole request" in response.json()["detail"]
    assert consumed < 50
    assert _files_under(folder) == set()


def test_text_field_over_its_cap(folder: Path) -> None:
    body = _body(_part("model", b"w", filename="m.pt"), _part("config", b"x" * 101))
    response = _post(folder, body)
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "'config'" in detail and "--max-field-mb" in detail
    assert _files_under(folder) == set()


def test_too_many_parts(folder: Path) -> None:
    body = _body(*(_part(name, b"1") for name in sorted(TEXT)))
    response = _post(folder, body, max_fields=3)
    assert response.status_code == 413
    assert "more than 3 parts" in response.json()["detail"]
    assert "--max-fields" in response.json()["detail"]


# --- refused fields and bodies --------------------------------------------------------------------


def test_unknown_field_is_named_with_the_accepted_ones(folder: Path) -> None:
    body = _body(_part("model", b"w", filename="m.pt"), _part("output_dir", b"/etc"))
    response = _post(folder, body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'output_dir'" in detail
    for name in ("model (file)", "images (file)", "classes", "preset", "config", "input_size"):
        assert name in detail
    assert _files_under(folder) == set()


def test_duplicate_field(folder: Path) -> None:
    response = _post(folder, _body(_part("preset", b"quick"), _part("preset", b"thorough")))
    assert response.status_code == 422
    assert "'preset'" in response.json()["detail"] and "more than once" in response.json()["detail"]


def test_duplicate_file_field_deletes_the_first(folder: Path) -> None:
    body = _body(_part("model", b"a", filename="a.onnx"), _part("model", b"b", filename="b.onnx"))
    response = _post(folder, body)
    assert response.status_code == 422
    assert _files_under(folder) == set()


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "multipart/form-data", "multipart/mixed; boundary=abc", "application/x-www-form-urlencoded"],
)
def test_not_multipart_form_data_with_a_boundary(folder: Path, content_type: str) -> None:
    response = _post(folder, b'{"model": 1}', headers=_headers(content_type))
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


def test_no_content_type_is_415(folder: Path) -> None:
    body = _Body([b"x"])
    with pytest.raises(UploadRefused) as refused:
        _receive_direct(folder, {}, body)
    assert refused.value.status_code == 415
    assert body.read == 0


def test_malformed_body(folder: Path) -> None:
    response = _post(folder, b"this is not a multipart body at all\r\n")
    assert response.status_code == 400
    assert "malformed" in response.json()["detail"]


def test_truncated_body_deletes_the_partial_file(folder: Path) -> None:
    body = _body(_part("model", b"m" * 5_000, filename="m.onnx"))[:3_000]
    response = _post(folder, body)
    assert response.status_code == 400
    assert "ended before" in response.json()["detail"]
    assert _files_under(folder) == set()


def test_part_without_a_name(folder: Path) -> None:
    body = f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    response = _post(folder, body)
    assert response.status_code == 400


def test_text_field_not_utf8(folder: Path) -> None:
    response = _post(folder, _body(_part("classes", b"Normal,\xff\xfe")))
    assert response.status_code == 400
    assert "UTF-8" in response.json()["detail"]


def test_invalid_content_length(folder: Path) -> None:
    body = _Body([b"x"])
    with pytest.raises(UploadRefused) as refused:
        _receive_direct(folder, _headers() | {"content-length": "12abc"}, body)
    assert refused.value.status_code == 400
    assert body.read == 0


def test_existing_file_in_folder_is_never_overwritten(folder: Path, tmp_path: Path) -> None:
    """A fresh folder per upload is the caller's job; a planted symlink is not followed."""
    folder.mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    (folder / "model.onnx").symlink_to(outside)
    body = _Body([_body(_part("model", b"evil", filename="m.onnx"))])
    with pytest.raises(FileExistsError):
        _receive_direct(folder, _headers(), body)
    assert outside.read_bytes() == b"keep"
    assert (folder / "model.onnx").is_symlink()


def test_boundary_longer_than_rfc_allows(folder: Path) -> None:
    boundary = "b" * 300
    body = _body(_part("preset", b"quick", boundary=boundary), boundary=boundary)
    response = _post(folder, body, headers=_headers(f"multipart/form-data; boundary={boundary}"))
    assert response.status_code == 400
    assert "boundary" in response.json()["detail"]
