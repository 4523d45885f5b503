"""Content types come from the bytes; the extension only refines between text formats."""

import io
import json
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


# A document that takes the detector exponential time would hold a web worker past its timeout: the detector runs
# in a child process that is killed after a generous bound, far above what a linear scan of 64 KiB needs.
_PATHOLOGICAL_INPUTS = {
    "comments_never_closed_before_a_tag": b"<!--" + b"--><!--" * (64 * 1024 // 7) + b"x",
    "comments_then_no_tag": b"<!---->" * (64 * 1024 // 7) + b"x",
    "xml_declaration_then_comments": b"<?xml version='1.0'?>" + b"<!-- -->\n" * (64 * 1024 // 9) + b"<",
}


@pytest.mark.parametrize("name", sorted(_PATHOLOGICAL_INPUTS))
def test_detection_is_linear_in_pathological_markup(name):
    import subprocess
    import sys

    code = (
        "import sys; from doctransform.detection import detect_bytes; "
        "print(detect_bytes(sys.stdin.buffer.read(), filename='page.html').content_type)"
    )
    data = _PATHOLOGICAL_INPUTS[name]
    assert len(data) >= 64 * 1024 - 16
    done = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=5, check=True)
    assert done.stdout.strip() in (b"text/html", b"text/plain", b"application/xml")


def test_comments_before_the_html_tag_are_still_skipped():
    page = b"\n<!-- generated -->\n<!-- -- twice -- -->  <!DOCTYPE html><html><body>hi</body></html>"
    assert detect_bytes(page, filename="upload").content_type == detection.HTML
    assert detect_bytes(b"<?xml version='1.0'?><!-- x --><html>", filename="upload").content_type == detection.HTML
    unterminated = b"<!-- no end <html><body>hi"
    assert detect_bytes(unterminated, filename="upload").content_type != detection.HTML


def test_json_nested_deeper_than_python_recursion_is_detected_without_error():
    deep = b"[" * 100_000 + b"]" * 100_000
    assert detect_bytes(deep, filename="data.json").content_type == detection.JSON


def test_a_large_json_upload_is_detected_without_building_it_in_memory():
    """25 MiB of ``[{},{},…]`` became 8 million dicts (about 640 MiB) in the web worker just to name its type."""
    import subprocess
    import sys

    code = (
        "import resource; from doctransform.detection import detect_bytes; "
        "data = b'[' + b'{},' * (25 * 1024 * 1024 // 3) + b'{}]'; "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "kind = detect_bytes(data, filename='x.json').content_type; "
        "print(kind, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    kind, grown_mib = done.stdout.split()
    assert kind == detection.JSON
    assert int(grown_mib) < 200  # the decoded text and its copies; not a Python object per element


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (json.dumps([{"k": i, "text": "é" * 50} for i in range(5000)]).encode(), detection.JSON),
        (json.dumps({"long": "x" * 200_000, "after": [1, 2.5, None]}).encode(), detection.JSON),
        (json.dumps([1.25] * 40_000).encode(), detection.JSON),
        (b"[" + b"not json " * 20_000 + b"]", detection.TEXT),
        (json.dumps(["x"] * 20_000).encode() + b" trailing words", detection.TEXT),
        (json.dumps(["x"] * 20_000).encode()[:-1], detection.TEXT),
    ],
    ids=["objects", "long-string-across-the-sniffed-head", "numbers", "bracketed-text", "trailing-text", "truncated"],
)
def test_json_longer_than_the_sniffed_head(data, expected):
    assert len(data) > 64 * 1024
    assert detect_bytes(data, filename="upload.txt").content_type == expected


def _zip_of_empty_members(count: int, *, zip64: bool = False) -> bytes:
    buffer = io.BytesIO()
    limit = zipfile.ZIP_FILECOUNT_LIMIT
    zipfile.ZIP_FILECOUNT_LIMIT = 0 if zip64 else limit  # above it, zipfile writes the ZIP64 end records
    try:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for index in range(count):
                archive.writestr(f"{index}", b"")
    finally:
        zipfile.ZIP_FILECOUNT_LIMIT = limit
    return buffer.getvalue()


def test_a_zip_with_a_huge_central_directory_is_not_read_in_the_web_worker(monkeypatch):
    """300,000 empty members fit in 25 MiB; zipfile builds an object for each when it opens the archive (about
    4 s and 180 MiB in the web worker). Such an archive is no Office document: it is named a ZIP unread."""
    archives = [_zip_of_empty_members(60_000), _zip_of_empty_members(60_000, zip64=True)]
    assert b"PK\x06\x06" in archives[1][-200:]
    opened = []
    monkeypatch.setattr(detection.zipfile, "ZipFile", lambda *args, **kwargs: opened.append(args) or 1 / 0)
    for archive in archives:
        assert detect_bytes(archive, filename="x.docx").content_type == detection.ZIP
    assert opened == []


def test_office_files_and_zip64_archives_are_still_opened():
    assert detect_bytes(files.docx(), filename="upload").content_type == detection.DOCX
    buffer = io.BytesIO()
    limit = zipfile.ZIP_FILECOUNT_LIMIT
    zipfile.ZIP_FILECOUNT_LIMIT = 0
    try:
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("[Content_Types].xml", _OOXML_TYPES)
    finally:
        zipfile.ZIP_FILECOUNT_LIMIT = limit
    assert b"PK\x06\x06" in buffer.getvalue()
    assert detect_bytes(buffer.getvalue(), filename="upload").content_type == detection.DOCX


_OOXML_TYPES = b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
