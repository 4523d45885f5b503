"""Scanned documents made by the tests: text drawn by Pillow into an image, saved as an image file or wrapped in
a PDF without a text layer (as a scanner writes it)."""

from __future__ import annotations

import io

LINES = ("Quarterly harvest report", "Farmers planted millet and sorghum")
WORDS = ("Quarterly", "harvest", "millet", "sorghum")


def page_image(lines: tuple[str, ...] = LINES, *, rotate: int = 0, size: tuple[int, int] = (900, 260)):
    """A white page with black text (36 px, Pillow's own font: no system font needed), turned ``rotate`` degrees
    counter-clockwise as a page fed sideways into a scanner."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=36)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((40, 40 + 80 * number), line, font=font, fill=0)
    return image.rotate(rotate, expand=True) if rotate else image


def image_file(kind: str = "PNG", **kwargs) -> bytes:
    image = page_image(**kwargs)
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


def scanned_pdf(*images) -> bytes:
    """A PDF of image-only pages (no text layer)."""
    images = images or (page_image(),)
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", resolution=150, save_all=True, append_images=list(images[1:]))
    return buffer.getvalue()


def mixed_pdf(text: str, image) -> bytes:
    """Page 1 with ``text`` in its text layer, page 2 a scanned image only (small pages: OCR at 300 DPI of a whole
    A4 page takes seconds)."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    width, height = image.size
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=(width / 2 + 36, height / 2 + 36))
    pdf.setFont("Helvetica", 14)
    pdf.drawString(18, height / 2, text)
    pdf.showPage()
    pdf.drawImage(ImageReader(image), 18, 18, width=width / 2, height=height / 2)  # 144 DPI
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def header_over_scan_pdf(header: str, image) -> bytes:
    """One page: a typed ``header`` in the text layer above a scanned image that covers most of the page."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    width, height = image.size
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=(width / 2 + 20, height / 2 + 40))
    pdf.setFont("Helvetica", 12)
    pdf.drawString(10, height / 2 + 24, header)
    pdf.drawImage(ImageReader(image), 10, 10, width=width / 2, height=height / 2)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()
