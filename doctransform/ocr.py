"""Scanned documents: pages as images, read by Tesseract (runs in the converter process).

PDF pages are rasterized by PDFium (pypdfium2), images (PNG, JPEG, TIFF, WebP) are read by Pillow, and the text is
recognised by Tesseract through its C API (tesserocr): everything stays in the converter process, under its memory
cap and its time limit, and nothing leaves the machine. The conversion's options (languages, resolution, limits) are
set by the converter in ``transformers.conversion_options``; pages are read in order and each one is reported to
``transformers.report_page``, which the worker turns into the job's progress.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .exceptions import DocumentEncrypted, DocumentUnreadable, PageLimitExceeded

# What happened to a page, as the result names it.
TEXT_LAYER = "text_layer"
OCR = "ocr"
VISION_MODEL = "vision_model"

# A page with fewer visible characters in its text layer is read from its image instead: a scan whose text layer
# is empty or holds only a page number or a stamp. Glyphs without a Unicode mapping ("(cid:12)") are not text.
MIN_TEXT_CHARACTERS = 20
# A page with a little more text is still a scan when pictures cover most of it: a typed header above a scanned
# form. A scanner's own searchable PDF (an invisible text layer over the scan) has far more text and is kept.
SCANNED_PAGE_MAX_CHARACTERS = 200
SCANNED_PAGE_IMAGE_SHARE = 0.5
_UNMAPPED_GLYPH = re.compile(r"\(cid:\d+\)|\ufffd")
# A page turned by orientation detection and then read with less confidence is read as scanned too; the better wins.
DOUBTFUL_CONFIDENCE = 60
# A scan is never rasterized below this resolution for OCR, whatever its own (a fax at 100 DPI reads better at 150).
MIN_OCR_DPI = 150
# Vision models scale a page down to about this long edge anyway (Anthropic recommends at most 1568 px).
VISION_MAX_EDGE = 1568
VISION_JPEG_QUALITY = 85


@dataclass(frozen=True)
class PageText:
    text: str
    confidences: list[int]  # Tesseract's confidence (0-100) of each word

    @property
    def confidence(self) -> float | None:
        return round(sum(self.confidences) / len(self.confidences), 1) if self.confidences else None


def scan_dpi(images: list[dict[str, Any]]) -> int:
    """The resolution to rasterize a scanned PDF page at: that of its largest picture (a 200 DPI scan gains nothing
    from 300 DPI but time: Tesseract's time grows with the pixels), between MIN_OCR_DPI and DOCUMENT_OCR_DPI; the
    latter for a page without pictures (text drawn as outlines)."""
    best = int(_options().get("dpi") or 300)
    largest, largest_area = None, 0.0
    for image in images:
        width, height = float(image["x1"]) - float(image["x0"]), float(image["bottom"]) - float(image["top"])
        if image.get("srcsize") and width > 0 and height > 0 and width * height > largest_area:
            largest, largest_area = (image, width, height), width * height
    if largest is None:
        return best
    image, width, height = largest
    # the long edges of the picture in pixels and as drawn (points): a picture drawn turned still matches
    native = max(float(size) for size in image["srcsize"]) / (max(width, height) / 72)
    return int(max(MIN_OCR_DPI, min(best, round(native))))


def usable_characters(text: str) -> int:
    """How many characters of a page's text layer are real text (not whitespace, not unmapped glyphs)."""
    return sum(1 for char in _UNMAPPED_GLYPH.sub("", text) if not char.isspace())


# --- Options ----------------------------------------------------------------------------------------------
def _options() -> dict:
    from .transformers import conversion_options

    return conversion_options.get() or {}


def check_page_count(count: int, *, counted: bool = True) -> None:
    """``PageLimitExceeded`` when a document of ``count`` pages (``counted=False``: with a page ``count``, its
    pages counted one by one) is over the limit."""
    limit = _options().get("max_pages")
    if limit and count > limit:
        pages = count if counted else f"more than {limit}"
        raise PageLimitExceeded(
            f"the document has {pages} pages; at most {limit} are converted (DOCUMENT_MAX_PAGES): split it"
        )


def _check_pixels(width: int, height: int, page: int) -> None:
    limit = _options().get("max_pixels")
    if limit and width * height > limit:
        raise PageLimitExceeded(
            f"page {page} is {width} x {height} pixels, more than the {limit} pixels a page may have "
            "(DOCUMENT_MAX_PAGE_PIXELS): scan it at a lower resolution"
        )


# --- Tesseract ----------------------------------------------------------------------------------------------
_engines: dict[tuple[str, str], Any] = {}  # (tessdata, languages) -> PyTessBaseAPI, kept for the process


def _engine(languages: str, *, osd: bool = False):
    import tesserocr

    tessdata = _options().get("tessdata") or ""
    key = (tessdata, "osd" if osd else languages)
    if key in _engines:
        return _engines[key]
    if not osd:  # one set of models at a time: each is tens of MiB
        for old_key in [k for k in _engines if k[1] != "osd"]:
            _engines.pop(old_key).End()
    try:
        if osd:
            engine = tesserocr.PyTessBaseAPI(path=tessdata, lang="osd", psm=tesserocr.PSM.OSD_ONLY)
        else:
            engine = tesserocr.PyTessBaseAPI(path=tessdata, lang=languages)
    except RuntimeError:
        if osd:  # no orientation model: pages are read as they are
            _engines[key] = None
            return None
        raise DocumentUnreadable(
            f"OCR is not available for the languages {languages!r}: their Tesseract models are not installed "
            f"in {tessdata}"
        ) from None
    _engines[key] = engine
    return engine


def _upright(image):
    """The image turned so that its text reads left to right (a page scanned sideways or upside down), or None
    when it already does or its orientation cannot be told."""
    engine = _engine("", osd=True)
    if engine is None:
        return None
    engine.SetImage(image)
    found = engine.DetectOrientationScript()  # None: too little text to tell
    if not found or not found.get("orient_deg"):
        return None
    return image.rotate(found["orient_deg"], expand=True, fillcolor="white")


def recognize(image) -> PageText:
    """The text of one page image (Pillow), in reading order, paragraphs separated by blank lines."""
    engine = _engine("+".join(_options().get("languages") or ["eng"]))
    image = _flatten(image)
    turned = _upright(image)
    if turned is None:
        return _read(engine, image)
    read = _read(engine, turned)
    if (read.confidence or 0) < DOUBTFUL_CONFIDENCE:  # orientation detection can be wrong on a page of few words
        as_scanned = _read(engine, image)
        if (as_scanned.confidence or 0) > (read.confidence or 0):
            return as_scanned
    return read


def _read(engine, image) -> PageText:
    engine.SetImage(image)
    text = engine.GetUTF8Text()
    confidences = list(engine.AllWordConfidences())
    engine.Clear()
    paragraphs = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
    return PageText(text="\n\n".join(p for p in paragraphs if p), confidences=confidences)


def _flatten(image):
    """Grayscale or RGB, transparency on white (black text on a transparent background must stay readable)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode not in ("L", "RGB"):
        return image.convert("RGB")
    return image


# --- Pages of a PDF ---------------------------------------------------------------------------------------------
class PdfPages:
    """The pages of a PDF as images, rendered by PDFium on demand."""

    def __init__(self, data: bytes) -> None:
        import pypdfium2 as pdfium

        try:
            self._pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if "password" in str(exc).lower():
                raise DocumentEncrypted(
                    "the PDF is password-protected; remove the password and upload it again"
                ) from None
            raise DocumentUnreadable(
                f"the file could not be read as a PDF; it is corrupt or truncated ({exc})"
            ) from None

    def __len__(self) -> int:
        return len(self._pdf)

    def render(self, index: int, *, dpi: int | None = None, grayscale: bool = True, max_edge: int | None = None):
        """Page ``index`` (0-based) at ``dpi`` (DOCUMENT_OCR_DPI), or lower when it would have more pixels than
        DOCUMENT_MAX_PAGE_PIXELS (a poster-sized page) or a longer edge than ``max_edge``."""
        page = self._pdf[index]
        try:
            width, height = page.get_size()  # points: 1/72 inch
            scale = (dpi or _options().get("dpi") or 300) / 72
            max_pixels = _options().get("max_pixels")
            if max_pixels and width * height * scale * scale > max_pixels:
                scale = (max_pixels / (width * height)) ** 0.5 * 0.995  # PDFium rounds each side up
            if max_edge and max(width, height) * scale > max_edge:
                scale = max_edge / max(width, height)
            return page.render(scale=scale, grayscale=grayscale).to_pil()
        finally:
            page.close()

    def close(self) -> None:
        self._pdf.close()


# --- Images -------------------------------------------------------------------------------------------------------
def image_frames(data: bytes) -> tuple[int, Iterator]:
    """The number of pages of an image file (a TIFF may hold several) and an iterator that decodes them one at a
    time, upright by their EXIF orientation. Every page is checked against the limits, from its header, before
    the first one is decoded."""
    from PIL import Image

    limit = _options().get("max_pixels")
    if limit:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check, in this process only
    with _image_errors(limit):
        image = Image.open(io.BytesIO(data))
        count = 0
        for count, size in enumerate(_frame_sizes(image), start=1):
            check_page_count(count, counted=False)
            _check_pixels(*size, count)
    return count, _decoded_frames(image, limit)


def _frame_sizes(image) -> Iterator[tuple[int, int]]:
    from PIL import ImageSequence

    for frame in ImageSequence.Iterator(image):
        yield frame.size


def _decoded_frames(image, limit: int | None) -> Iterator:
    from PIL import ImageOps, ImageSequence

    with _image_errors(limit):
        for frame in ImageSequence.Iterator(image):
            yield ImageOps.exif_transpose(frame.copy())


@contextmanager
def _image_errors(limit: int | None) -> Iterator[None]:
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except Image.DecompressionBombError:
        raise PageLimitExceeded(
            f"the image has more than the {limit} pixels a page may have (DOCUMENT_MAX_PAGE_PIXELS)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DocumentUnreadable(f"the image could not be read; it is corrupt or truncated ({exc})") from None


def vision_image(image) -> bytes:
    """A page image as a vision model gets it: JPEG, at most VISION_MAX_EDGE pixels on its long edge."""
    image = _flatten(image)
    if max(image.size) > VISION_MAX_EDGE:
        image = image.copy()
        image.thumbnail((VISION_MAX_EDGE, VISION_MAX_EDGE))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=VISION_JPEG_QUALITY)
    return out.getvalue()


def check_image_limits(stream, *, max_pixels: int, max_pages: int) -> None:
    """``PageLimitExceeded`` for an image file with a page over ``max_pixels`` or more than ``max_pages`` pages,
    from its headers alone (cheap enough for the web process: no page is decoded). An image Pillow cannot open is
    left for the conversion to report."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    stream.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
            # Counted page by page up to the limit: Pillow's n_frames walks every page of a TIFF first.
            for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
                if number > max_pages:
                    raise PageLimitExceeded(
                        f"the image has more than {max_pages} pages; at most {max_pages} are converted "
                        "(DOCUMENT_MAX_PAGES)"
                    )
                width, height = frame.size
                if width * height > max_pixels:
                    raise PageLimitExceeded(
                        f"page {number} of the image is {width} x {height} pixels, more than the {max_pixels} "
                        "pixels a page may have (DOCUMENT_MAX_PAGE_PIXELS)"
                    )
    except Image.DecompressionBombError:
        raise PageLimitExceeded(
            f"the image has more than the {max_pixels} pixels a page may have (DOCUMENT_MAX_PAGE_PIXELS)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        pass
    finally:
        stream.seek(0)
