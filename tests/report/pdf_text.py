"""The text of a PDF printed by headless Chromium, page by page, without a PDF library (none is a
dependency, and pdftotext is not installed everywhere): Chromium (Skia) writes uncompressed
object tables, FlateDecode streams, Type0 fonts with Identity-H encoding and a ToUnicode CMap
each, and text as hex glyph strings shown by ``Tj`` / ``TJ``. Enough to check that words are on
a printed page; not a general PDF reader."""

from __future__ import annotations

import re
import unicodedata
import zlib

_OBJECT = re.compile(rb"(\d+) 0 obj(.*?)endobj", re.S)


def _objects(data: bytes) -> dict[int, bytes]:
    return {int(m.group(1)): m.group(2) for m in _OBJECT.finditer(data)}


def _stream(body: bytes) -> bytes:
    raw = body.split(b"stream", 1)[1].lstrip(b"\r\n")
    raw = raw[:raw.rfind(b"endstream")]
    return zlib.decompressobj().decompress(raw) if b"/FlateDecode" in body.split(b"stream", 1)[0] else raw


def _to_unicode(cmap: bytes) -> dict[int, str]:
    """Glyph code -> text, from a ToUnicode CMap's bfchar and bfrange sections."""
    out: dict[int, str] = {}

    def text(hex_: bytes) -> str:
        return bytes.fromhex(hex_.decode()).decode("utf-16-be")

    for block in re.findall(rb"beginbfchar(.*?)endbfchar", cmap, re.S):
        for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            out[int(src, 16)] = text(dst)
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", cmap, re.S):
        for lo, hi, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            start = int(dst, 16)
            for k, code in enumerate(range(int(lo, 16), int(hi, 16) + 1)):
                out[code] = chr(start + k)
    return out


def pdf_pages_text(data: bytes) -> list[str]:
    """Each page's text in drawing order (a space between text objects, NFKC-normalised so
    ligatures read as their letters)."""
    objects = _objects(data)
    fonts: dict[int, dict[int, str]] = {}
    for number, body in objects.items():
        ref = re.search(rb"/ToUnicode (\d+) 0 R", body)
        if ref and b"/Type /Font" in body:
            fonts[number] = _to_unicode(_stream(objects[int(ref.group(1))]))
    pages = re.search(rb"/Type /Pages.*?/Kids \[([^\]]*)\]", data, re.S)
    out = []
    for page_ref in re.findall(rb"(\d+) 0 R", pages.group(1)):
        page = objects[int(page_ref)]
        names = {name: fonts.get(int(ref), {}) for name, ref in re.findall(rb"/(\w+) (\d+) 0 R",
                                                                        page.split(b"/Font", 1)[1].split(b">>", 1)[0])}
        contents = re.search(rb"/Contents (\d+) 0 R", page)
        text, cmap = [], {}
        for token in re.finditer(rb"/(\w+) [\d.]+ Tf|<([0-9A-Fa-f]*)>|\bBT\b", _stream(objects[int(contents.group(1))])):
            if token.group(1):
                cmap = names.get(token.group(1), {})
            elif token.group(2) is not None:
                hex_ = token.group(2).decode()
                text.extend(cmap.get(int(hex_[i:i + 4], 16), "") for i in range(0, len(hex_), 4))
            else:
                text.append(" ")
        out.append(unicodedata.normalize("NFKC", "".join(text)))
    return out
