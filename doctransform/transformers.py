"""The registry of transformers, keyed by (source content type, target format) and name.

A transformer names a conversion function by dotted path; the function runs in the converter process
(``doctransform.converter_server``), never in the web process or the worker itself, so this module imports
no converter library at import time (markitdown costs ~1 s and ~130 MB to import).

Conversion functions take ``(data: bytes, *, charset: str | None, filename: str)`` and return Markdown, or a
``Converted`` when they say what happened to each page. They raise ``DocumentEncrypted`` / ``DocumentUnreadable``
with a message for the job's error.
"""

from __future__ import annotations

import importlib
import io
import json
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from kaapi.registry import dotted_path, register

from . import detection as ct
from . import ocr
from .exceptions import (
    DocumentEncrypted,
    DocumentUnreadable,
    TransformationFailed,
    UnsupportedTransformation,
    markdown_too_large,
)

MARKDOWN = "markdown"
TARGET_FORMATS = (MARKDOWN,)
TARGET_CONTENT_TYPES = {MARKDOWN: ct.MARKDOWN}

ConversionFunction = Callable[..., "str | Converted"]

# The output cap of the running conversion in bytes (0: none), set by the converter process, which checks every
# output against it. A conversion function that can tell early that its output will not fit raises
# ``markdown_too_large`` before building it.
output_limit: ContextVar[int] = ContextVar("output_limit", default=0)
# The running conversion's options (OCR languages, resolution, page limits; see ``services.conversion_options``)
# and where it reports each page it finished (the converter sends it to the worker as the job's progress).
conversion_options: ContextVar[dict[str, Any] | None] = ContextVar("conversion_options", default=None)
page_reporter: ContextVar[Callable[[int, int], None] | None] = ContextVar("page_reporter", default=None)


def report_page(done: int, total: int) -> None:
    reporter = page_reporter.get()
    if reporter is not None:
        reporter(done, total)


@dataclass
class Converted:
    """A conversion's Markdown and what happened to each page; ``images`` are the pages for a vision model."""

    markdown: str
    pages: list[dict[str, Any]] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class Transformer:
    name: str
    source_type: str
    target_format: str
    function_path: str  # "package.module.function", imported by the converter process
    description: str = ""
    vision: bool = False  # the function returns page images, which the worker sends to a vision model


# (source type, target format) -> {name: transformer}; the first registered name is the default.
_registry: dict[tuple[str, str], dict[str, Transformer]] = {}


def register_transformer(
    *,
    name: str,
    source_types: tuple[str, ...],
    target_format: str = MARKDOWN,
    description: str = "",
    vision: bool = False,
) -> Callable[[ConversionFunction], ConversionFunction]:
    def decorator(fn: ConversionFunction) -> ConversionFunction:
        for source_type in source_types:
            transformer = Transformer(
                name=name,
                source_type=source_type,
                target_format=target_format,
                function_path=dotted_path(fn),
                description=description or (fn.__doc__ or "").strip().splitlines()[0],
                vision=vision,
            )
            register(
                _registry.setdefault((source_type, target_format), {}),
                name,
                transformer,
                what=f"transformer {name!r} for {source_type} -> {target_format}",
            )
        return fn

    return decorator


def supported_transformations() -> list[dict]:
    """Every supported pair, for answers that refuse an unsupported one."""
    return [
        {
            "source_type": source_type,
            "target_format": target_format,
            "transformers": list(by_name),
            "default": next(iter(by_name)),
        }
        for (source_type, target_format), by_name in sorted(_registry.items())
    ]


def get_transformer(*, source_type: str, target_format: str = MARKDOWN, name: str | None = None) -> Transformer:
    """The transformer for the pair (the default one unless ``name``); ``UnsupportedTransformation`` if none."""
    by_name = _registry.get((source_type, target_format))
    if by_name is None:
        known_type = any(source == source_type for source, _ in _registry)
        if known_type:
            message = f"{source_type} documents cannot be transformed to {target_format!r}"
        else:
            message = f"documents of type {source_type} are not supported"
        raise UnsupportedTransformation(
            message,
            content_type=source_type,
            unsupported_type=not known_type,
            supported=supported_transformations(),
        )
    if name is None:
        return next(iter(by_name.values()))
    try:
        return by_name[name]
    except KeyError:
        raise UnsupportedTransformation(
            f"no transformer {name!r} for {source_type} -> {target_format}; choose one of {sorted(by_name)}",
            content_type=source_type,
            unsupported_type=False,
            supported=supported_transformations(),
        ) from None


def load_function(path: str) -> ConversionFunction:
    """Import a conversion function by dotted path (called by the converter process only)."""
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


# --- Conversion functions (run in the converter process) --------------------------------------------
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_LABELS = {
    ct.PDF: "a PDF",
    ct.DOCX: "a Word document (DOCX)",
    ct.PPTX: "a PowerPoint presentation (PPTX)",
    ct.XLSX: "an Excel workbook (XLSX)",
    ct.HTML: "HTML",
    ct.CSV: "CSV",
    ct.JSON: "JSON",
    ct.TEXT: "text",
    ct.MARKDOWN: "Markdown",
}


def _markitdown(converter: str, data: bytes, *, source_type: str, charset: str | None, filename: str) -> str:
    from markitdown import StreamInfo, converters

    stream_info = StreamInfo(
        mimetype=source_type, extension=ct.EXTENSIONS.get(source_type), charset=charset, filename=filename or None
    )
    label = _LABELS.get(source_type, source_type)
    try:
        return getattr(converters, converter)().convert(io.BytesIO(data), stream_info).markdown or ""
    except (TransformationFailed, MemoryError):
        raise
    except Exception as exc:
        if _is_pdf_encryption_error(exc):
            raise DocumentEncrypted("the PDF is password-protected; remove the password and upload it again") from None
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DocumentUnreadable(
            f"the file could not be read as {label}; it is corrupt or truncated ({detail})"
        ) from None


def _is_pdf_encryption_error(exc: Exception) -> bool:
    try:
        from pdfminer.pdfdocument import PDFEncryptionError
    except ImportError:  # pragma: no cover - pdfminer is a dependency of markitdown[pdf]
        return False
    return isinstance(exc, PDFEncryptionError)


def _refuse_encrypted_office(data: bytes) -> None:
    # A password-protected OOXML file is not a ZIP but an OLE2 container with an EncryptedPackage stream.
    if data.startswith(_OLE2_MAGIC):
        raise DocumentEncrypted(
            "the document is password-protected (an encrypted Office file); remove the password and upload it again"
        )


def _refuse_expanding_workbook(data: bytes) -> None:
    """Refuse a workbook whose cells alone pass the output cap, before markitdown expands it.

    A shared string is stored once and shown in any number of cells: 25 KB of XLSX can hold 100 MB of text, which
    markitdown would hold three times (pandas, HTML, Markdown) before the converter could measure it. The text of
    the cells, whitespace collapsed as in Markdown, is a lower bound of the Markdown, so only a workbook whose
    Markdown would be refused anyway is refused here; the count streams through the sheet and stops at the cap.
    """
    limit = output_limit.get()
    if not limit:
        return
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # markitdown reports an unreadable workbook in its own words
        return
    total = 0
    try:
        for sheet in workbook.worksheets:
            for row in sheet.iter_rows(values_only=True):
                for value in row:
                    if value is not None:
                        total += len(" ".join(str(value).split()))
                if total > limit:
                    raise markdown_too_large(limit)
    except (TransformationFailed, MemoryError):
        raise
    except Exception:  # likewise: a broken sheet is markitdown's to report
        return
    finally:
        workbook.close()


@register_transformer(name="pdfplumber", source_types=(ct.PDF,))
def pdf_to_structured_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> Converted:
    """PDF through pdfplumber: headings from font sizes, ruled tables as Markdown tables, then the text; a page
    without a usable text layer (a scan) is read by OCR."""
    import pdfplumber

    try:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            ocr.check_page_count(len(pdf.pages))
            return _pdf_markdown(pdf.pages, data)
    except (TransformationFailed, MemoryError):
        raise
    except Exception as exc:
        cause = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc  # pdfplumber wraps
        if _is_pdf_encryption_error(cause):
            raise DocumentEncrypted("the PDF is password-protected; remove the password and upload it again") from None
        detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        raise DocumentUnreadable(
            f"the file could not be read as a PDF; it is corrupt or truncated ({detail})"
        ) from None


def _pdf_markdown(pages, data: bytes) -> Converted:
    # The most common character size is the body text; up to three larger sizes are heading levels 1-3.
    sizes = Counter(round(char["size"], 1) for page in pages for char in page.chars)
    body_size = sizes.most_common(1)[0][0] if sizes else 0.0
    levels = {
        size: level
        for level, size in enumerate(sorted((s for s in sizes if s >= body_size * 1.15), reverse=True)[:3], start=1)
    }
    blocks: list[str] = []
    report: list[dict[str, Any]] = []
    images: ocr.PdfPages | None = None
    try:
        for number, page in enumerate(pages, start=1):
            if not _needs_ocr(page):
                _page_blocks(page, levels, body_size, blocks)
                report.append({"page": number, "method": ocr.TEXT_LAYER})
            else:
                if images is None:
                    images = ocr.PdfPages(data)
                dpi = ocr.scan_dpi(page.images)
                read = ocr.recognize(images.render(number - 1, dpi=dpi))
                blocks.extend(read.text.split("\n\n") if read.text else [])
                report.append({**_ocr_page(number, read), "dpi": dpi})
            report_page(number, len(pages))
    finally:
        if images is not None:
            images.close()
    return Converted(markdown="\n\n".join(blocks).strip() + "\n", pages=report)


def _needs_ocr(page) -> bool:
    """Whether a page has no usable text layer: almost no text, or a little text (a typed header, a stamp) on a
    page that is mostly a picture (the scan of the rest). OCR then reads the whole page, that text included."""
    characters = ocr.usable_characters("".join(char["text"] for char in page.chars))
    if characters < ocr.MIN_TEXT_CHARACTERS:
        return True
    if characters >= ocr.SCANNED_PAGE_MAX_CHARACTERS:
        return False
    page_area = float(page.width * page.height) or 1.0
    covered = 0.0
    for image in page.images:
        width = min(float(image["x1"]), float(page.width)) - max(float(image["x0"]), 0.0)
        height = min(float(image["bottom"]), float(page.height)) - max(float(image["top"]), 0.0)
        covered += max(width, 0.0) * max(height, 0.0)
    return covered / page_area >= ocr.SCANNED_PAGE_IMAGE_SHARE


def _page_blocks(page, levels: dict[float, int], body_size: float, blocks: list[str]) -> None:
    """Append the Markdown blocks of a page read from its text layer."""
    tables = page.find_tables()
    boxes = [table.bbox for table in tables]

    def outside_tables(obj, boxes=boxes) -> bool:
        return obj.get("object_type") != "char" or not any(
            x0 <= obj["x0"] and obj["x1"] <= x1 and top <= obj["top"] and obj["bottom"] <= bottom
            for x0, top, x1, bottom in boxes
        )

    items: list[tuple[float, str, bool]] = []  # (top, markdown, is a paragraph line)
    for line in page.filter(outside_tables).extract_text_lines(return_chars=True):
        text = line["text"].strip()
        if not text:
            continue
        size = round(max(char["size"] for char in line["chars"]), 1) if line["chars"] else body_size
        level = levels.get(size)
        items.append((line["top"], f"{'#' * level} {text}" if level else text, level is None))
    items += [(table.bbox[1], _markdown_table(table.extract()), False) for table in tables]
    items.sort(key=lambda item: item[0])
    for _, markdown, is_text in items:  # consecutive text lines form one paragraph
        if is_text and blocks and blocks[-1] and not blocks[-1].startswith(("#", "|")) and not blocks[-1] == "":
            blocks[-1] += "\n" + markdown
        else:
            blocks.append(markdown)


def _markdown_table(rows: list[list[str | None]]) -> str:
    cells = [[(cell or "").replace("\n", " ").replace("|", "\\|").strip() for cell in row] for row in rows if row]
    if not cells:
        return ""
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


@register_transformer(name="markitdown", source_types=(ct.PDF,))
def pdf_to_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> str:
    """PDF text through markitdown (pdfminer.six); layout and images are dropped."""
    text = _markitdown("PdfConverter", data, source_type=ct.PDF, charset=None, filename=filename)
    return text.replace("\f", "\n\n").strip() + "\n"  # pdfminer separates pages with form feeds


@register_transformer(name="markitdown", source_types=(ct.DOCX,))
def docx_to_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> str:
    """Word documents through markitdown (mammoth): headings, lists, tables, links."""
    _refuse_encrypted_office(data)
    return _markitdown("DocxConverter", data, source_type=ct.DOCX, charset=None, filename=filename)


@register_transformer(name="markitdown", source_types=(ct.PPTX,))
def pptx_to_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> str:
    """PowerPoint through markitdown (python-pptx): slide titles, text, tables, notes."""
    _refuse_encrypted_office(data)
    return _markitdown("PptxConverter", data, source_type=ct.PPTX, charset=None, filename=filename)


@register_transformer(name="markitdown", source_types=(ct.XLSX,))
def xlsx_to_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> str:
    """Excel through markitdown (pandas + openpyxl): one table per sheet."""
    _refuse_encrypted_office(data)
    _refuse_expanding_workbook(data)
    return _markitdown("XlsxConverter", data, source_type=ct.XLSX, charset=None, filename=filename)


@register_transformer(name="markitdown", source_types=(ct.HTML,))
def html_to_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> str:
    """HTML through markitdown (BeautifulSoup + markdownify); scripts and styles are dropped."""
    return _markitdown("HtmlConverter", data, source_type=ct.HTML, charset=charset, filename=filename)


@register_transformer(name="markitdown", source_types=(ct.CSV,))
def csv_to_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> str:
    """CSV through markitdown: one Markdown table."""
    return _markitdown("CsvConverter", data, source_type=ct.CSV, charset=charset, filename=filename)


@register_transformer(name="json-codeblock", source_types=(ct.JSON,))
def json_to_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> str:
    """JSON, pretty-printed in a fenced ```json block (so no character is read as Markdown)."""
    try:
        value = json.loads(data.decode(charset or "utf-8"))
    except (UnicodeDecodeError, LookupError, ValueError) as exc:
        raise DocumentUnreadable(f"the file could not be read as JSON ({type(exc).__name__}: {exc})") from None
    body = json.dumps(value, indent=2, ensure_ascii=False)
    fence = "```"
    while fence in body:  # a longer fence than any backtick run inside
        fence += "`"
    return f"{fence}json\n{body}\n{fence}\n"


@register_transformer(name="markitdown", source_types=(ct.TEXT, ct.MARKDOWN, ct.JSON))
def text_to_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> str:
    """Text as it is, decoded to UTF-8 by markitdown."""
    return _markitdown("PlainTextConverter", data, source_type=ct.TEXT, charset=charset, filename=filename)


# --- Scans: OCR and vision models -------------------------------------------------------------------
def _ocr_page(number: int, read: ocr.PageText) -> dict[str, Any]:
    return {"page": number, "method": ocr.OCR, "confidence": read.confidence, "words": len(read.confidences)}


@register_transformer(name="tesseract", source_types=ct.IMAGES)
def image_to_markdown(data: bytes, *, charset: str | None = None, filename: str = "") -> Converted:
    """Images (PNG, JPEG, TIFF, WebP) read by Tesseract OCR, offline; a multi-page TIFF page by page."""
    blocks: list[str] = []
    report: list[dict[str, Any]] = []
    count, frames = ocr.image_frames(data)
    for number, frame in enumerate(frames, start=1):
        read = ocr.recognize(frame)
        if read.text:
            blocks.append(read.text)
        report.append(_ocr_page(number, read))
        report_page(number, count)
    return Converted(markdown="\n\n".join(blocks).strip() + "\n", pages=report)


@register_transformer(name="vision-llm", source_types=(ct.PDF, *ct.IMAGES), vision=True)
def page_images(data: bytes, *, charset: str | None = None, filename: str = "") -> Converted:
    """Each page as an image to a vision model of the project's LLM credentials (config_id/config_version or
    config_blob), which writes its Markdown."""
    images: list[bytes] = []
    size = 0
    limit = output_limit.get()
    for number, count, image in _pages(data):
        images.append(ocr.vision_image(image))
        size += len(images[-1])
        if limit and size > limit:  # the images travel to the worker as the Markdown would
            raise markdown_too_large(limit)
        report_page(number, count)
    pages = [{"page": number, "method": ocr.VISION_MODEL} for number in range(1, len(images) + 1)]
    return Converted(markdown="", pages=pages, images=images)


def _pages(data: bytes):
    """(page number, page count, colour image) of each page of a PDF or an image file, in order."""
    if ct.detect_bytes(data).content_type != ct.PDF:
        count, frames = ocr.image_frames(data)
        for number, frame in enumerate(frames, start=1):
            yield number, count, frame
        return
    pdf = ocr.PdfPages(data)
    try:
        ocr.check_page_count(len(pdf))
        for index in range(len(pdf)):
            yield index + 1, len(pdf), pdf.render(index, grayscale=False, max_edge=ocr.VISION_MAX_EDGE)
    finally:
        pdf.close()
