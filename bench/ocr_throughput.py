"""OCR throughput: pages per second of scanned PDF pages and images read by Tesseract in the converter process,
side by side with PDF pages read from their text layer, and the share of the words that come back.

    .venv/bin/python bench/ocr_throughput.py [--pages 4] [--rounds 2]

No broker or database: it drives a converter process (doctransform.converter) as a worker does, with the settings'
OCR options. The scans are made here: A4 pages of text drawn by Pillow at 300 DPI, read at their own resolution
(DOCUMENT_OCR_DPI, 300) and at lower ones.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = (
    "village council farmers harvest millet sorghum water well school health clinic district report quarter "
    "budget seeds rainfall market women group savings loan training teacher students road repair meeting"
).split()
A4_AT_300_DPI = (2480, 3508)


def page_lines(seed: int, lines: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(9)).capitalize() + "." for _ in range(lines)]


def scanned_page(lines: list[str]):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=45)  # about 11 pt at 300 DPI
    image = Image.new("L", A4_AT_300_DPI, 255)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((225, 225 + 75 * number), line, font=font, fill=0)
    return image


def scanned_pdf(pages: list[list[str]]) -> bytes:
    images = [scanned_page(lines) for lines in pages]
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", resolution=300, save_all=True, append_images=images[1:])
    return buffer.getvalue()


def text_pdf(pages: list[list[str]]) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    for lines in pages:
        pdf.setFont("Helvetica", 11)
        for number, line in enumerate(lines):
            pdf.drawString(54, 790 - 18 * number, line)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def png(lines: list[str]) -> bytes:
    buffer = io.BytesIO()
    scanned_page(lines).save(buffer, format="PNG")
    return buffer.getvalue()


def recall(markdown: str, pages: list[list[str]]) -> float:
    expected = [word.strip(".").lower() for lines in pages for line in lines for word in line.split()]
    found = set(markdown.lower().replace(".", " ").split())
    return sum(1 for word in expected if word in found) / len(expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=4, help="pages of each document")
    parser.add_argument("--rounds", type=int, default=2, help="measured conversions of each document")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaapi.settings")
    os.environ.setdefault("SECRET_KEY", "bench-secret-key")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings

    from doctransform.converter import ConverterProcess
    from doctransform.detection import PDF, PNG
    from doctransform.services import conversion_options
    from doctransform.transformers import get_transformer

    pages = [page_lines(seed) for seed in range(args.pages)]
    cases = [  # (label, transformer, data, pages, options)
        ("PDF pages with a text layer (pdfplumber)", get_transformer(source_type=PDF), text_pdf(pages), pages, {}),
        ("scanned PDF pages (300 DPI scans), OCR at 300 DPI", get_transformer(source_type=PDF), None, pages, {}),
        ("the same, OCR at 200 DPI", get_transformer(source_type=PDF), None, pages, {"dpi": 200}),
        ("the same, OCR at 150 DPI", get_transformer(source_type=PDF), None, pages, {"dpi": 150}),
        ("PNG scans (300 DPI), OCR", get_transformer(source_type=PNG), None, pages[:1], {}),
    ]
    scanned = scanned_pdf(pages)
    cases = [
        (label, transformer, data or (png(page_set[0]) if transformer.source_type == PNG else scanned), page_set, extra)
        for label, transformer, data, page_set, extra in cases
    ]
    converter = ConverterProcess(max_memory_mb=settings.DOCUMENT_TRANSFORM_MAX_MEMORY_MB, max_conversions=10**6)
    elapsed = [0.0] * len(cases)
    last = [None] * len(cases)

    def convert(case) -> Any:
        _, transformer, data, _, extra = case
        return converter.run(
            function_path=transformer.function_path,
            data=data,
            hints={"charset": None, "filename": "bench"},
            timeout=600,
            options={**conversion_options(), **extra},
        )

    try:
        for case in cases:
            convert(case)  # warm: imports and Tesseract's models
        for _ in range(args.rounds):  # interleaved, so that the machine's load changes hit every case alike
            for index, case in enumerate(cases):
                started = time.perf_counter()
                last[index] = convert(case)
                elapsed[index] += time.perf_counter() - started
    finally:
        converter.close()

    rows = []
    for (label, _, _, page_set, _), seconds, converted in zip(cases, elapsed, last, strict=True):
        confidence = next((p["confidence"] for p in converted.pages if p.get("confidence") is not None), None)
        methods = sorted({page["method"] for page in converted.pages})
        rows.append(
            (label, len(page_set) * args.rounds / seconds, recall(converted.markdown, page_set), methods, confidence)
        )
    baseline = rows[0][1]
    languages = ",".join(settings.DOCUMENT_OCR_LANGUAGES)
    print(f"### OCR throughput (one converter process, {os.cpu_count()} CPUs, languages {languages})")
    print()
    print("| pages | pages/s | vs text layer | words found | read by | mean confidence |")
    print("|---|---|---|---|---|---|")
    for label, rate, found, methods, confidence in rows:
        shown = "-" if confidence is None else f"{confidence:.0f}"
        print(f"| {label} | {rate:.2f} | {rate / baseline:.3f}x | {found:.1%} | {', '.join(methods)} | {shown} |")
    print()
    print(f"({args.pages} A4 pages of 40 lines each, {args.rounds} measured rounds after a warm-up conversion)")


if __name__ == "__main__":
    main()
