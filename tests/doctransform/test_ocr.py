"""OCR of scanned documents in the converter process: scans made here (text drawn by Pillow) come back as text."""

from __future__ import annotations

import pytest

from doctransform import services
from doctransform.converter import run_conversion
from doctransform.detection import JPEG, PDF, PNG, TIFF, WEBP, detect_bytes
from doctransform.exceptions import PageLimitExceeded
from doctransform.transformers import get_transformer

from . import scans


def convert(data: bytes, *, name: str | None = None, on_page=None, **options):
    content_type = detect_bytes(data).content_type
    return run_conversion(
        transformer=get_transformer(source_type=content_type, name=name),
        data=data,
        charset=None,
        filename="scan",
        options={**services.conversion_options(), **options},
        on_page=on_page,
    )


def assert_words(markdown: str) -> None:
    for word in scans.WORDS:
        assert word in markdown, markdown


def test_an_image_only_pdf_page_is_read_by_ocr():
    converted = convert(scans.scanned_pdf())
    assert_words(converted.markdown)
    [page] = converted.pages
    assert (page["page"], page["method"], page["words"]) == (1, "ocr", 8)
    assert page["dpi"] == 150  # the scan's own resolution, not DOCUMENT_OCR_DPI (300)
    assert page["confidence"] > 80


def test_a_mixed_pdf_keeps_its_text_layer_and_ocrs_the_scanned_page_in_order():
    text = "The minutes of the village council meeting."
    done = []
    converted = convert(scans.mixed_pdf(text, scans.page_image()), on_page=lambda *page: done.append(page))
    assert converted.markdown.index(text) < converted.markdown.index("Quarterly harvest report")
    assert_words(converted.markdown)
    assert [(page["page"], page["method"]) for page in converted.pages] == [(1, "text_layer"), (2, "ocr")]
    assert done == [(1, 2), (2, 2)]  # each page reported as it is done, in order


def test_a_page_that_is_mostly_a_scan_under_a_typed_header_is_read_whole_by_ocr():
    converted = convert(scans.header_over_scan_pdf("Annex 2: registration of the cooperative", scans.page_image()))
    assert converted.pages[0]["method"] == "ocr"
    assert_words(converted.markdown)
    assert "registration" in converted.markdown


@pytest.mark.parametrize("rotate", [90, 180])
def test_a_page_scanned_sideways_or_upside_down_is_turned_before_it_is_read(rotate):
    assert_words(convert(scans.scanned_pdf(scans.page_image(rotate=rotate))).markdown)


@pytest.mark.parametrize("kind, content_type", [("PNG", PNG), ("JPEG", JPEG), ("TIFF", TIFF), ("WEBP", WEBP)])
def test_images_are_detected_and_read(kind, content_type):
    data = scans.image_file(kind)
    assert detect_bytes(data).content_type == content_type
    converted = convert(data)
    assert_words(converted.markdown)
    assert converted.pages[0]["method"] == "ocr"


def test_only_a_riff_container_of_webp_is_an_image():
    assert detect_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32).content_type == "application/x-riff"


def test_a_multi_page_tiff_is_read_page_by_page():
    import io

    buffer = io.BytesIO()
    first, second = scans.page_image(("Page one of the form",)), scans.page_image(("Signed by the headman",))
    first.save(buffer, format="TIFF", save_all=True, append_images=[second])
    converted = convert(buffer.getvalue())
    assert converted.markdown.index("Page one") < converted.markdown.index("headman"), converted.markdown
    assert len(converted.pages) == 2


def test_over_the_page_or_pixel_limits_the_conversion_fails_clearly():
    two_pages = scans.scanned_pdf(scans.page_image(), scans.page_image())
    with pytest.raises(PageLimitExceeded, match="has 2 pages; at most 1 are converted"):
        convert(two_pages, max_pages=1)
    with pytest.raises(PageLimitExceeded, match="more than the 100000 pixels"):
        convert(scans.image_file("PNG"), max_pixels=100_000)


def test_a_pdf_page_larger_than_the_pixel_limit_is_rasterized_smaller():
    from doctransform import ocr
    from doctransform.transformers import conversion_options

    token = conversion_options.set({**services.conversion_options(), "max_pixels": 450_000})
    pages = ocr.PdfPages(scans.scanned_pdf(scans.page_image(size=(1800, 520))))  # 12 x 3.5 inches
    try:
        width, height = pages.render(0, dpi=150).size  # 1800 x 520 px at 150 DPI: over the limit
    finally:
        pages.close()
        conversion_options.reset(token)
    assert width * height <= 450_000 and width > 1000


def test_the_vision_transformer_renders_each_page_as_a_jpeg():
    import io

    from PIL import Image

    converted = convert(scans.scanned_pdf(scans.page_image(), scans.page_image()), name="vision-llm")
    assert converted.markdown == ""
    assert [page["method"] for page in converted.pages] == ["vision_model", "vision_model"]
    assert [Image.open(io.BytesIO(image)).format for image in converted.images] == ["JPEG", "JPEG"]
    assert get_transformer(source_type=PDF, name="vision-llm").vision


def test_a_page_turned_the_wrong_way_by_orientation_detection_is_read_as_scanned(monkeypatch):
    from doctransform import ocr
    from doctransform.transformers import conversion_options

    monkeypatch.setattr(ocr, "_upright", lambda image: image.rotate(180, expand=True))  # a wrong guess
    token = conversion_options.set(services.conversion_options())
    try:
        read = ocr.recognize(scans.page_image())
    finally:
        conversion_options.reset(token)
    assert_words(read.text)
    assert read.confidence > ocr.DOUBTFUL_CONFIDENCE
