"""Receive a ``multipart/form-data`` upload while it streams in, refusing it the moment a cap is passed.

Why not ``await request.form()``: Starlette spools every file part to a temporary file with no
size cap before the handler sees a byte of it, so a 50 GB upload would fill the disk (and a
slow one hold a worker) before any of :class:`~medrobust.service.limits.ServiceLimits` could
be checked. :func:`receive_multipart` instead feeds the body, chunk by chunk as it arrives, to
python-multipart's push parser and checks every cap on the running counts: the whole request
(also a chunked one, which declares no ``Content-Length``), each file part, each text field and
the number of parts. The first byte past a cap stops the reading, deletes what was written and
raises :class:`UploadRefused`; the rest of the body is never read.

Why the client's file name is never a path: it is text chosen by the sender
(``../../etc/passwd.onnx``, a name with control characters, 10 kB long). A file part is written
to ``folder/<field><suffix>``, where ``<field>`` is one of the server's own field names and the
suffix is kept only when it is one of a short whitelist (the model and archive formats the
service reads); the client's name is kept, sanitised, for display only.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MiB = 2**20

SUFFIXES = frozenset({".keras", ".onnx", ".pt", ".pth", ".zip", ".tar", ".gz", ".tgz"})
"""Suffixes of a client's file name kept on the stored file (``.tar.gz`` is kept whole); any other
name is stored without a suffix, so no client can choose how a later step reads the file."""

MAX_FILENAME_CHARS = 200
"""Longest client file name kept for display."""

REQUEST_OPTION = "--max-request-mb"
"""The ``medrobust serve`` option that raises the cap on a whole request."""
FIELD_OPTION = "--max-field-mb"
"""The ``medrobust serve`` option that raises the cap on one text field."""
FIELDS_OPTION = "--max-fields"
"""The ``medrobust serve`` option that raises the number of parts accepted."""
FILE_OPTION = "--max-{field}-mb"
"""The ``medrobust serve`` option that raises the cap on one file field (``--max-model-mb``, ``--max-images-mb``)."""

_FIELD_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class UploadRefused(Exception):
    """An upload the service will not take, with the HTTP status to answer and a sentence saying
    what to do: 413 too large, 400 malformed, 415 not ``multipart/form-data``, 422 an unknown or
    repeated field."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message

    def __repr__(self) -> str:
        return f"UploadRefused({self.status_code}, {self.message!r})"


@dataclass(frozen=True)
class ReceivedFile:
    """A file part stored on disk under a name the server chose."""

    field: str
    """The form field it came in (a key of ``file_caps``)."""
    filename: str
    """The client's file name, for display only: its last path component, printable characters
    only, at most :data:`MAX_FILENAME_CHARS` characters; ``""`` when the client gave none."""
    path: Path
    """Where it is stored: ``folder/<field><suffix>``."""
    size: int
    """Its size in bytes."""


@dataclass(frozen=True)
class ReceivedForm:
    """The text fields and the stored files of one upload."""

    fields: dict[str, str]
    files: dict[str, ReceivedFile]
    """Each file field's part (a repeatable field's last one)."""
    received: tuple[ReceivedFile, ...] = ()
    """Every file part in the order sent (all of a repeatable field's)."""


def display_filename(raw: str) -> str:
    """The client's file name ``raw`` made safe to show: the part after the last ``/`` or ``\\``,
    without control or other non-printable characters, trimmed, at most :data:`MAX_FILENAME_CHARS`
    characters. Never use it as a path."""
    base = re.split(r"[/\\]", raw)[-1]
    return "".join(ch for ch in base if ch.isprintable()).strip()[:MAX_FILENAME_CHARS]


def stored_suffix(filename: str) -> str:
    """The suffix the stored file keeps: the client's, lower-cased, when it is in :data:`SUFFIXES`
    (``.tar.gz`` as a whole), else ``""``."""
    name = filename.lower()
    if name.endswith(".tar.gz"):
        return ".tar.gz"
    suffix = Path(name).suffix if name not in ("", ".", "..") else ""
    return suffix if suffix in SUFFIXES else ""


def _mb(n: int) -> str:
    """``n`` bytes in MB (MiB) as a person reads it: ``2048 MB``, ``0.25 MB``."""
    v = n / MiB
    if v < 0.01:
        return f"{n} bytes"
    text = f"{v:.0f}" if v >= 100 else f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{text} MB"


def _quoted(name: str) -> str:
    """A client-chosen name for a message: printable, at most 60 characters, quoted."""
    clean = "".join(ch for ch in name if ch.isprintable())
    return repr(clean if len(clean) <= 60 else clean[:57] + "...")


def _accepted(file_caps: dict[str, int], text_fields: Iterable[str]) -> str:
    names = [f"{f} (file)" for f in sorted(file_caps)] + sorted(set(text_fields) - set(file_caps))
    return ", ".join(names) if names else "none"


class _Receiver:
    """The parser's callbacks: one part at a time, files straight to disk, caps checked on every chunk."""

    def __init__(
        self,
        folder: Path,
        file_caps: dict[str, int],
        text_fields: set[str],
        max_field_bytes: int,
        max_fields: int,
        repeatable: frozenset[str] = frozenset(),
    ) -> None:
        self.folder = folder
        self.repeatable = repeatable
        self.received: list[ReceivedFile] = []
        self.file_caps = file_caps
        self.text_fields = text_fields
        self.max_field_bytes = max_field_bytes
        self.max_fields = max_fields
        self.fields: dict[str, str] = {}
        self.files: dict[str, ReceivedFile] = {}
        self.written: list[Path] = []
        self.parts = 0
        self.ended = False
        self._seen: set[str] = set()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._filename = ""
        self._handle: IO[bytes] | None = None
        self._path: Path | None = None
        self._size = 0
        self._text: bytearray | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_fields:
            raise UploadRefused(
                413,
                f"The form has more than {self.max_fields} parts; send only the documented fields "
                f"or start the server with a higher {FIELDS_OPTION}.",
            )
        self._headers = {}
        self._header_field.clear()
        self._header_value.clear()
        self._name = None
        self._filename = ""
        self._size = 0
        self._text = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).strip().lower()] = bytes(self._header_value).strip()
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        raw_name = options.get(b"name")
        if disposition != b"form-data" or raw_name is None:
            raise UploadRefused(
                400,
                'A part of the form has no Content-Disposition "form-data" with a name; '
                "send the upload as multipart/form-data with a name on every part.",
            )
        # parse_options_header decodes as Latin-1; clients send UTF-8, so recover the bytes.
        name = raw_name.decode("latin-1").encode("latin-1").decode("utf-8", "replace")
        if name not in self.file_caps and name not in self.text_fields:
            raise UploadRefused(
                422,
                f"The form has an unknown field {_quoted(name)}; the accepted fields are "
                f"{_accepted(self.file_caps, self.text_fields)}.",
            )
        if name in self._seen and name not in self.repeatable:
            raise UploadRefused(422, f"The field {_quoted(name)} was sent more than once; send each field once.")
        self._seen.add(name)
        self._name = name
        if name in self.file_caps:
            raw_filename = options.get(b"filename", b"")
            self._filename = display_filename(raw_filename.decode("latin-1").encode("latin-1").decode("utf-8", "replace"))
            stem = f"{name}-{len(self.received) + 1}" if name in self.repeatable else name
            path = self.folder / f"{stem}{stored_suffix(self._filename)}"
            # "x": never follow or overwrite anything already there (a symlink planted in folder included).
            self._handle = open(path, "xb")  # closed in on_part_end, or by close()
            self._path = path
            self.written.append(path)
        else:
            self._text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._handle is not None:
            assert self._name is not None
            self._size += n
            cap = self.file_caps[self._name]
            if self._size > cap:
                raise UploadRefused(
                    413,
                    f"The {self._name} file is larger than its {_mb(cap)} cap; send a smaller file "
                    f"or start the server with a higher {FILE_OPTION.format(field=self._name)}.",
                )
            self._handle.write(data[start:end])
        elif self._text is not None:
            if len(self._text) + n > self.max_field_bytes:
                raise UploadRefused(
                    413,
                    f"The text field {_quoted(self._name or '')} is larger than its {_mb(self.max_field_bytes)} cap; "
                    f"shorten it or start the server with a higher {FIELD_OPTION}.",
                )
            self._text += data[start:end]

    def on_part_end(self) -> None:
        assert self._name is not None
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            assert self._path is not None
            self.files[self._name] = ReceivedFile(self._name, self._filename, self._path, self._size)
            self.received.append(self.files[self._name])
        elif self._text is not None:
            try:
                self.fields[self._name] = bytes(self._text).decode("utf-8")
            except UnicodeDecodeError:
                raise UploadRefused(
                    400, f"The text field {_quoted(self._name)} is not valid UTF-8; send text fields encoded as UTF-8."
                ) from None
            self._text = None

    def on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        """Delete every file written so far (the one being written included)."""
        self.close()
        for path in self.written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.written.clear()


async def receive_multipart(
    request: Request,
    folder: Path,
    *,
    file_caps: dict[str, int],
    text_fields: set[str],
    max_request_bytes: int,
    max_field_bytes: int,
    max_fields: int,
    idle_timeout_s: float | None = None,
    repeatable: frozenset[str] = frozenset(),
) -> ReceivedForm:
    """Read ``request``'s ``multipart/form-data`` body as it streams in, storing each file part in
    ``folder`` (created if missing) and checking every cap on the running counts.

    ``file_caps`` maps each accepted file field to its cap in bytes; ``text_fields`` names the
    accepted text fields; ``repeatable`` names the file fields that may come several times (each
    cap then applies to each part; :attr:`ReceivedForm.received` lists them all). A file part is
    stored as ``folder/<field><suffix>`` (a repeatable field's as ``folder/<field>-<n><suffix>``,
    n counting the file parts; see :func:`stored_suffix`), opened exclusively: ``folder`` should be fresh for each upload, and a
    file already there is an error of the caller (``FileExistsError``), not of the client.

    Raises :class:`UploadRefused` (after deleting every file it wrote) when the body is not
    ``multipart/form-data`` with a boundary (415); when the declared ``Content-Length`` is above
    ``max_request_bytes`` (413, before any of the body is read); as soon as the bytes read pass
    ``max_request_bytes``, a file part passes its cap, a text field passes ``max_field_bytes``
    or the parts pass ``max_fields`` (413); on an unknown or repeated field (422); on a
    malformed or truncated body or a text field that is not UTF-8 (400); when no byte arrives
    for ``idle_timeout_s`` seconds before the body is complete (400: a client that declared more
    than it sends, or stalled, would otherwise hold the request and its files for ever; the
    server's own timeouts do not cover a request whose headers have arrived). Any other error
    (the client disconnecting, a full disk) deletes the files too and propagates.
    """
    for field in file_caps:
        if not _FIELD_NAME.fullmatch(field):
            raise ValueError(f"file field name {field!r} is not a plain name (letters, digits, _ and -)")

    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        got = content_type.decode("latin-1") or "no Content-Type"
        raise UploadRefused(
            415,
            f"The upload must be multipart/form-data with a boundary (got {_quoted(got)}); "
            "send the form as multipart/form-data (curl -F model=@model.onnx -F images=@images.zip).",
        )

    declared = request.headers.get("content-length")
    if declared is not None:
        if not re.fullmatch(r"[0-9]{1,20}", declared.strip()):
            raise UploadRefused(
                400, f"The Content-Length header {_quoted(declared)} is not a number of bytes; send a valid one or none."
            )
        if int(declared) > max_request_bytes:
            raise UploadRefused(
                413,
                f"The upload declares {_mb(int(declared))}, above the {_mb(max_request_bytes)} cap on a whole request; "
                f"send smaller files or start the server with a higher {REQUEST_OPTION}.",
            )

    try:
        receiver = _Receiver(folder, file_caps, text_fields, max_field_bytes, max_fields, frozenset(repeatable))
        parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    except FormParserError as exc:  # a boundary longer than RFC 2046 allows
        raise UploadRefused(
            400, f"The multipart boundary is invalid ({exc}); send the form again as multipart/form-data."
        ) from None

    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    chunks = request.stream().__aiter__()
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UploadRefused(
                    400,
                    f"The upload stopped: no bytes arrived for {idle_timeout_s:g} s after {_mb(total)} of the body "
                    "(shorter than its declared Content-Length, or the connection stalled); send it again.",
                ) from None
            total += len(chunk)
            if total > max_request_bytes:
                raise UploadRefused(
                    413,
                    f"The upload is larger than the {_mb(max_request_bytes)} cap on a whole request; "
                    f"send smaller files or start the server with a higher {REQUEST_OPTION}.",
                )
            if chunk:
                parser.write(chunk)
        parser.finalize()
        if not receiver.ended:
            raise UploadRefused(
                400,
                "The multipart body ended before its closing boundary (the upload was cut short or malformed); send it again.",
            )
    except MultipartParseError as exc:
        receiver.discard()
        raise UploadRefused(
            400, f"The multipart body is malformed ({exc}); send the form again as multipart/form-data."
        ) from None
    except BaseException:
        receiver.discard()
        raise
    finally:
        receiver.close()
    return ReceivedForm(fields=dict(receiver.fields), files=dict(receiver.files), received=tuple(receiver.received))
