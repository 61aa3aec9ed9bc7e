"""Uploads the web process accepts, built in memory in microseconds (no model is trained: the
web process reads a checkpoint's model.json, never its weights), and raw multipart bodies for
requests a well-behaved client would not send."""

from __future__ import annotations

import io
import json
import zipfile

CLASSES = ("Normal", "Pneumonia")
BOUNDARY = "medrobust-test-boundary"


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def png_bytes(value: int = 90, size: int = 8) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (size, size), value).save(out, "PNG")
    return out.getvalue()


def checkpoint_zip(classes: tuple[str, ...] = CLASSES) -> bytes:
    """A zipped medrobust checkpoint folder as far as the web process reads one."""
    meta = {"contract": {"classes": list(classes)}}
    return zip_bytes({"chest/model.json": json.dumps(meta).encode(), "chest/model.safetensors": b"\0" * 16})


def images_zip(per_class: int = 1, classes: tuple[str, ...] = CLASSES) -> bytes:
    png = png_bytes()
    return zip_bytes({f"{c}/{i}.png": png for c in classes for i in range(per_class)})


def multipart(parts: list[tuple[bytes, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart body from (Content-Disposition header value, data) pairs, written byte for byte."""
    b = boundary.encode()
    body = b"".join(b"--" + b + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + data + b"\r\n"
                    for disposition, data in parts)
    return body + b"--" + b + b"--\r\n"


def file_part(field: str, filename: bytes, data: bytes) -> tuple[bytes, bytes]:
    return b'form-data; name="' + field.encode("utf-8", "surrogatepass") + b'"; filename="' + filename + b'"', data


def text_part(field: str, value: bytes) -> tuple[bytes, bytes]:
    return b'form-data; name="' + field.encode("utf-8", "surrogatepass") + b'"', value
