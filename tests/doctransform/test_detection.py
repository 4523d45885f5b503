"""Content types come from the bytes; the extension only refines between text formats."""

import io
import zipfile

import pytest

from doctransform import detection
from doctransform.detection import detect_bytes

from . import files


@pytest.mark.parametrize("kind", sorted(files.SUPPORTED))
def test_each_supported_type_is_detected(kind):
    filename, build, content_type = files.SUPPORTED[kind]
    assert detect_bytes(build(), filename=filename).content_type == content_type
    # ... and without any file name, except where only the extension can tell (none of these)
    assert detect_bytes(build(), filename="upload").content_type == content_type


@pytest.mark.parametrize(
    ("builder", "misleading_name", "expected"),
    [
        (files.pdf, "notes.txt", detection.PDF),
        (files.docx, "sheet.xlsx", detection.DOCX),
        (files.xlsx, "slides.pptx", detection.XLSX),
        (files.html, "data.csv", detection.HTML),
        (files.json_bytes, "page.html", detection.JSON),
    ],
)
def test_the_bytes_win_over_a_misleading_extension(builder, misleading_name, expected):
    assert detect_bytes(builder(), filename=misleading_name).content_type == expected


def test_text_is_refined_by_the_extension():
    assert detect_bytes(b"just one column\nsecond\n", filename="a.csv").content_type == detection.CSV
    assert detect_bytes(b"# Title\n\ntext\n", filename="a.md").content_type == detection.MARKDOWN
    assert detect_bytes(b"a,b\n1,2\n", filename="a.txt").content_type == detection.TEXT
    assert detect_bytes("café, crème\n".encode("latin-1"), filename="x.txt").charset not in (None, "utf-8")


def test_unsupported_and_binary_types_are_named():
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    assert detect_bytes(png, filename="report.pdf").content_type == "image/png"
    assert detect_bytes(bytes(range(256)) * 4).content_type == detection.OCTET_STREAM
    assert detect_bytes(b"<?xml version='1.0'?><note>x</note>").content_type == detection.XML
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "hello")
    assert detect_bytes(archive.getvalue(), filename="report.docx").content_type == detection.ZIP


def test_office_containers():
    # A damaged OOXML file keeps its type (the transformation then reports it corrupt).
    assert detect_bytes(files.docx()[:2000], filename="r.docx").content_type == detection.DOCX
    # A password-protected OOXML file is an OLE2 container with an EncryptedPackage stream.
    encrypted = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "EncryptedPackage".encode("utf-16-le")
    found = detect_bytes(encrypted, filename="secret.xlsx")
    assert (found.content_type, found.encrypted) == (detection.XLSX, True)
    legacy = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "WordDocument".encode("utf-16-le")
    assert detect_bytes(legacy, filename="old.doc").content_type == "application/msword"
