"""Content-type detection from the bytes of a document.

Signatures and container inspection decide the family (PDF, OOXML inside a ZIP, legacy/encrypted Office
inside an OLE2 compound file, images, ...); a file name's extension only refines the choice between text
formats that the bytes cannot tell apart (CSV vs. plain text vs. Markdown). This module is pure Python (no
Django, no markitdown), cheap enough to run in the web process on every upload.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import PurePath
from typing import BinaryIO

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HTML = "text/html"
CSV = "text/csv"
JSON = "application/json"
TEXT = "text/plain"
MARKDOWN = "text/markdown"
XML = "application/xml"
ZIP = "application/zip"
OLE2 = "application/x-ole-storage"
OCTET_STREAM = "application/octet-stream"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
WEBP = "image/webp"
IMAGES = (PNG, JPEG, TIFF, WEBP)  # scans and photographs, read by OCR

# The extension a stored document gets (never the client's: only what the bytes were detected as).
EXTENSIONS = {
    PDF: ".pdf",
    DOCX: ".docx",
    PPTX: ".pptx",
    XLSX: ".xlsx",
    HTML: ".html",
    CSV: ".csv",
    JSON: ".json",
    TEXT: ".txt",
    MARKDOWN: ".md",
    PNG: ".png",
    JPEG: ".jpg",
    TIFF: ".tif",
    WEBP: ".webp",
}

_OOXML_BY_EXTENSION = {".docx": DOCX, ".pptx": PPTX, ".xlsx": XLSX}
# The main part's content type in [Content_Types].xml names the kind of OOXML package.
_OOXML_MAIN_PARTS = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml": DOCX,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml": PPTX,
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml": PPTX,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": XLSX,
    "application/vnd.ms-word.document.macroEnabled.main+xml": "application/vnd.ms-word.document.macroEnabled.12",
    "application/vnd.ms-excel.sheet.macroEnabled.main+xml": "application/vnd.ms-excel.sheet.macroEnabled.12",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml": (
        "application/vnd.ms-powerpoint.presentation.macroEnabled.12"
    ),
}
_OLE2_STREAMS = (  # stream names (UTF-16LE in the directory) -> type
    ("EncryptedPackage", None),  # a password-protected OOXML file; the type comes from the extension
    ("WordDocument", "application/msword"),
    ("Workbook", "application/vnd.ms-excel"),
    ("Book", "application/vnd.ms-excel"),
    ("PowerPoint Document", "application/vnd.ms-powerpoint"),
)
_SIGNATURES = (  # (offset, magic, type) of binary formats: images are OCRed, the others only named in an answer
    (0, b"\x89PNG\r\n\x1a\n", PNG),
    (0, b"\xff\xd8\xff", JPEG),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"RIFF", "application/x-riff"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"BZh", "application/x-bzip2"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"Rar!\x1a\x07", "application/vnd.rar"),
    (0, b"\x7fELF", "application/x-executable"),
    (0, b"MZ", "application/x-msdownload"),
    (0, b"{\\rtf", "application/rtf"),
    (0, b"II*\x00", TIFF),
    (0, b"MM\x00*", TIFF),
    (4, b"ftyp", "video/mp4"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"OggS", "audio/ogg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"SQLite format 3\x00", "application/vnd.sqlite3"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_TAIL_BYTES = 22 + 65535  # the end record and the longest comment it may carry
# Office documents have hundreds of parts (about 100 bytes each in the directory), rarely a few thousand.
_ZIP_MAX_DIRECTORY_BYTES = 2 * 1024 * 1024
# Patterns here run on client bytes in the web process: none may repeat a group of unbounded length (a nested
# quantifier backtracks exponentially); the comments before an HTML start tag are skipped by _html_start instead.
_WHITESPACE = re.compile(rb"\s*")
_XML_DECLARATION = re.compile(rb"<\?xml[^>]*>")
_HTML_START_TAG = re.compile(rb"<(?:!doctype\s+html|html|head|body)[\s>]", re.IGNORECASE)
_HTML_TAG = re.compile(r"<(html|head|body|div|p|h[1-6]|table|ul|ol|span|a|br|title|section|article)[\s>/]", re.I)
_CLOSING_TAG = re.compile(r"</[a-zA-Z][a-zA-Z0-9]*\s*>")
_SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class Detected:
    content_type: str
    charset: str | None = None  # text formats only
    encrypted: bool = False  # a password-protected Office file (recognised from its container)


def detect(*, stream: BinaryIO, filename: str = "") -> Detected:
    """What ``stream`` (seekable, read from the start) contains. ``filename`` is only a hint for text."""
    extension = PurePath(filename or "").suffix.lower()
    stream.seek(0)
    head = stream.read(_SNIFF_BYTES)
    try:
        return _detect(stream, head, extension)
    finally:
        stream.seek(0)


def detect_bytes(data: bytes, *, filename: str = "") -> Detected:
    return detect(stream=io.BytesIO(data), filename=filename)


def _detect(stream: BinaryIO, head: bytes, extension: str) -> Detected:
    if b"%PDF-" in head[:1024]:  # the PDF header may follow up to 1 KiB of junk
        return Detected(PDF)
    if head.startswith(_ZIP_MAGIC):
        return _detect_zip(stream, extension)
    if head.startswith(_OLE2_MAGIC):
        return _detect_ole2(stream, extension)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Detected(WEBP)
    for offset, magic, content_type in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return Detected(content_type)
    stream.seek(0)
    return _detect_text(stream.read(), extension)


def _central_directory_size(stream: BinaryIO) -> int | None:
    """The size of a ZIP's central directory from its end records (ZIP64 included), or None when there are none.
    zipfile reads the whole directory and builds an object per member as it opens an archive."""
    stream.seek(0, io.SEEK_END)
    length = stream.tell()
    tail_start = max(0, length - _ZIP_TAIL_BYTES)
    stream.seek(tail_start)
    tail = stream.read()
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or len(tail) - end < 22:
        return None
    locator = end - 20  # ZIP64: a locator just before the end record points to the ZIP64 end record
    if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
        return struct.unpack_from("<I", tail, end + 12)[0]
    (record,) = struct.unpack_from("<Q", tail, locator + 8)  # zipfile then reads the size there, as here
    stream.seek(record)
    head = stream.read(56)
    if len(head) < 56 or head[:4] != b"PK\x06\x06":
        return None
    return struct.unpack_from("<Q", head, 40)[0]


def _detect_zip(stream: BinaryIO, extension: str) -> Detected:
    directory = _central_directory_size(stream)
    if directory is not None and directory > _ZIP_MAX_DIRECTORY_BYTES:
        return Detected(ZIP)  # tens of thousands of members: no Office document
    stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            names = set(archive.namelist())
            if "[Content_Types].xml" in names:
                with archive.open("[Content_Types].xml") as fh:
                    types = fh.read(1024 * 1024).decode("utf-8", "replace")
                for main_part, content_type in _OOXML_MAIN_PARTS.items():
                    if main_part in types:
                        return Detected(content_type)
            if "mimetype" in names:  # OpenDocument, EPUB: the first member names the type
                with archive.open("mimetype") as fh:
                    declared = fh.read(200).decode("ascii", "replace").strip()
                if re.fullmatch(r"[\w.+-]+/[\w.+-]+", declared):
                    return Detected(declared)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, OSError, EOFError, ValueError):
        # A damaged container: trust the extension for the OOXML types, so the transformation reports
        # that the file is corrupt instead of the upload calling it "not supported".
        if extension in _OOXML_BY_EXTENSION:
            return Detected(_OOXML_BY_EXTENSION[extension])
    return Detected(ZIP)


def _detect_ole2(stream: BinaryIO, extension: str) -> Detected:
    stream.seek(0)
    data = stream.read()
    for name, content_type in _OLE2_STREAMS:
        if name.encode("utf-16-le") in data:
            if content_type is None:
                if extension in _OOXML_BY_EXTENSION:
                    return Detected(_OOXML_BY_EXTENSION[extension], encrypted=True)
                return Detected(OLE2, encrypted=True)
            return Detected(content_type)
    return Detected(OLE2)


def _decode(data: bytes) -> tuple[str, str] | None:
    """(text, charset) when ``data`` is text; None for binary data."""
    for bom, charset in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(charset), charset
            except UnicodeDecodeError:
                return None
    if b"\x00" in data[:_SNIFF_BYTES]:
        return None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[:_SNIFF_BYTES]).best()
    if best is None:
        return None
    try:
        return data.decode(best.encoding), best.encoding
    except (UnicodeDecodeError, LookupError):
        return None


def _is_json(text: str) -> bool:
    """Whether ``text`` is JSON. A document longer than the sniffed head is judged by its head (a valid start of
    JSON) and its last character: parsing it whole built a Python object per element in the web worker (25 MiB of
    ``[{},…]`` took 640 MiB). One invalid past the head is then called JSON, and its conversion fails instead."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return False
    whole = len(stripped) <= _SNIFF_BYTES
    head = stripped if whole else stripped[:_SNIFF_BYTES]
    try:
        json.loads(head)
    except json.JSONDecodeError as exc:
        if whole:
            return False
        # Cut inside a string, or at the end of the head (a few characters back when inside a number or a
        # literal): a prefix of JSON, not an error in it.
        if not (exc.msg.startswith("Unterminated string") or exc.pos >= len(head) - 8):
            return False
    except ValueError:  # e.g. an integer with more digits than Python converts
        return False
    except RecursionError:  # nested deeper than Python parses: still JSON, for the converter to refuse
        return True
    return whole or stripped[-1] in "]}"


def _html_start(head: bytes) -> bool:
    """Whether ``head`` opens with an HTML start tag, after whitespace, an XML declaration and comments, in one
    pass: each step moves past what it read, and every search starts where the previous one ended."""
    position = _WHITESPACE.match(head).end()  # type: ignore[union-attr]  # \s* always matches
    declaration = _XML_DECLARATION.match(head, position)
    if declaration:
        position = declaration.end()
    while True:
        position = _WHITESPACE.match(head, position).end()  # type: ignore[union-attr]  # \s* always matches
        if not head.startswith(b"<!--", position):
            return bool(_HTML_START_TAG.match(head, position))
        end = head.find(b"-->", position + 4)
        if end < 0:
            return False
        position = end + 3


def _looks_like_html(text: str, head: bytes, *, hinted: bool) -> bool:
    if _html_start(head):
        return True
    sample = text[:_SNIFF_BYTES]
    if hinted:
        return bool(_HTML_TAG.search(sample) or _CLOSING_TAG.search(sample))
    return sample.lstrip().startswith("<") and bool(_HTML_TAG.search(sample)) and bool(_CLOSING_TAG.search(sample))


def _looks_like_csv(text: str) -> bool:
    lines = [line for line in text[:_SNIFF_BYTES].splitlines()[:50] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        rows = list(csv.reader(lines))
    except csv.Error:
        return False
    widths = {len(row) for row in rows[:-1] or rows}  # the last sampled line may be cut short
    return len(widths) == 1 and widths.pop() >= 2


def _detect_text(data: bytes, extension: str) -> Detected:
    decoded = _decode(data)
    if decoded is None:
        return Detected(OCTET_STREAM)
    text, charset = decoded
    head = text[:_SNIFF_BYTES].encode("utf-8", "replace")
    if _is_json(text):
        return Detected(JSON, charset)
    if _looks_like_html(text, head, hinted=extension in (".html", ".htm", ".xhtml")):
        return Detected(HTML, charset)
    if text.lstrip().startswith("<?xml"):
        return Detected(XML, charset)
    if extension in (".csv",):
        return Detected(CSV, charset)
    if extension in (".md", ".markdown"):
        return Detected(MARKDOWN, charset)
    if extension not in (".txt", ".text") and _looks_like_csv(text):
        return Detected(CSV, charset)
    return Detected(TEXT, charset)
