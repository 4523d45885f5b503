"""Real documents of each supported type, written with the libraries that write them."""

from __future__ import annotations

import io
import json
import zipfile

HEADING = "Quarterly Report"
BODY = "Revenue grew by twelve percent in the northern region."
TABLE = [["Region", "Units"], ["North", "42"], ["South", "17"]]


def pdf(*, encrypt: str | None = None, pages: int = 1) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table, TableStyle

    buffer = io.BytesIO()
    styles = getSampleStyleSheet()
    story = []
    for page in range(pages):
        table = Table(TABLE, style=TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black)]))  # a ruled table
        story += [Paragraph(HEADING, styles["Heading1"]), Paragraph(BODY, styles["BodyText"]), table]
        if page < pages - 1:
            story.append(PageBreak())
    SimpleDocTemplate(buffer, pagesize=A4, encrypt=encrypt).build(story)
    return buffer.getvalue()


def docx() -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading(HEADING, level=1)
    document.add_paragraph(BODY)
    table = document.add_table(rows=len(TABLE), cols=2)
    for r, row in enumerate(TABLE):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pptx() -> bytes:
    import pptx as python_pptx
    from pptx.util import Inches

    presentation = python_pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = HEADING
    slide.placeholders[1].text = BODY
    slide = presentation.slides.add_slide(presentation.slide_layouts[5])
    slide.shapes.title.text = "Units by region"
    shape = slide.shapes.add_table(len(TABLE), 2, Inches(1), Inches(2), Inches(6), Inches(2))
    for r, row in enumerate(TABLE):
        for c, value in enumerate(row):
            shape.table.cell(r, c).text = value
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def xlsx() -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sales"
    sheet.append(TABLE[0])
    for region, units in TABLE[1:]:
        sheet.append([region, int(units)])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def xlsx_expanding(*, string_bytes: int = 10_000, cells: int = 10_000) -> bytes:
    """One shared string of ``string_bytes`` shown in ``cells`` cells: ~25 KB of XLSX, ~100 MB of Markdown.

    openpyxl writes every string inline, so its workbook gets the shared-string table that Excel would write.
    """
    import openpyxl

    workbook = openpyxl.Workbook()
    columns = 100
    for _ in range(cells // columns):
        workbook.active.append(["S"] * columns)
    written = io.BytesIO()
    workbook.save(written)
    shared = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<sst xmlns="{_SPREADSHEET_NS}" count="{cells}" uniqueCount="1"><si><t>{"x" * string_bytes}</t></si></sst>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(written.getvalue())) as source, zipfile.ZipFile(buffer, "w", _DEFLATE) as out:
        for item in source.infolist():
            content = source.read(item.filename).decode()
            if item.filename == "xl/worksheets/sheet1.xml":
                content = content.replace('t="inlineStr"><is><t>S</t></is>', 't="s"><v>0</v>')
            elif item.filename == "[Content_Types].xml":
                content = content.replace(
                    "</Types>", f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_SST_TYPE}"/></Types>'
                )
            elif item.filename == "xl/_rels/workbook.xml.rels":
                content = content.replace(
                    "</Relationships>",
                    f'<Relationship Id="rIdShared" Type="{_SST_REL}" Target="sharedStrings.xml"/></Relationships>',
                )
            out.writestr(item.filename, content)
        out.writestr("xl/sharedStrings.xml", shared)
    return buffer.getvalue()


_DEFLATE = zipfile.ZIP_DEFLATED
_SPREADSHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_SST_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
_SST_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"


def html() -> bytes:
    rows = "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in TABLE[1:])
    return (
        f"<!DOCTYPE html><html><head><title>Report</title><script>var hidden = 1;</script></head>"
        f"<body><h1>{HEADING}</h1><p>{BODY}</p>"
        f"<table><tr><th>{TABLE[0][0]}</th><th>{TABLE[0][1]}</th></tr>{rows}</table></body></html>"
    ).encode()


def csv() -> bytes:
    return "".join(",".join(row) + "\n" for row in TABLE).encode()


def json_bytes() -> bytes:
    return json.dumps({"title": HEADING, "rows": TABLE}).encode()


def text() -> bytes:
    return f"{HEADING}\n\n{BODY}\n".encode()


# name -> (file name, bytes builder, detected type)
SUPPORTED = {
    "pdf": ("report.pdf", pdf, "application/pdf"),
    "docx": ("report.docx", docx, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "pptx": ("report.pptx", pptx, "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    "xlsx": ("report.xlsx", xlsx, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "html": ("report.html", html, "text/html"),
    "csv": ("report.csv", csv, "text/csv"),
    "json": ("report.json", json_bytes, "application/json"),
    "text": ("report.txt", text, "text/plain"),
}
