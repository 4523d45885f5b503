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


# The namespaces Word declares on every document part, and the ones it marks ignorable for older readers.
_WORD_NAMESPACES = (
    'xmlns:wpc="http://schemas.microsoft.com/office/word/2010/wordprocessingCanvas" '
    'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
    'xmlns:o="urn:schemas-microsoft-com:office:office" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
    'xmlns:m="http://schemas.openxmlformats.org/officeDocument/2006/math" '
    'xmlns:v="urn:schemas-microsoft-com:vml" '
    'xmlns:wp14="http://schemas.microsoft.com/office/word/2010/wordprocessingDrawing" '
    'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
    'xmlns:w10="urn:schemas-microsoft-com:office:word" '
    'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
    'xmlns:w14="http://schemas.microsoft.com/office/word/2010/wordml" '
    'xmlns:w15="http://schemas.microsoft.com/office/word/2012/wordml" '
    'xmlns:wpg="http://schemas.microsoft.com/office/word/2010/wordprocessingGroup" '
    'xmlns:wne="http://schemas.microsoft.com/office/word/2006/wordml" '
    'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" mc:Ignorable="w14 w15 wp14"'
)
FOOTNOTE = "Figures are unaudited."


def word_docx() -> bytes:
    """A document laid out part for part as Microsoft Word saves one, with the parts python-docx never writes:
    footnotes and endnotes (with Word's separator notes), an Office Math equation, revision ids (``w:rsid*``,
    ``w14:paraId``), settings, web settings, the font table and the application properties.

    Word's math and notes are exactly what markitdown's DOCX pre-processing rewrites, so this is the document that
    breaks when that rewrite loses the XML's namespace prefixes.
    """
    import zipfile

    xml = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'

    def para(text: str, *, style: str | None = None, para_id: str = "1A2B3C4D", extra: str = "") -> str:
        props = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
        return (
            f'<w:p w14:paraId="{para_id}" w14:textId="77777777" w:rsidR="00B41C2E" w:rsidRDefault="00B41C2E">'
            f'{props}<w:r><w:t xml:space="preserve">{text}</w:t></w:r>{extra}</w:p>'
        )

    def table() -> str:
        rows = "".join(
            "<w:tr>"
            + "".join(f'<w:tc><w:tcPr><w:tcW w:w="4508" w:type="dxa"/></w:tcPr>{para(cell)}</w:tc>' for cell in row)
            + "</w:tr>"
            for row in TABLE
        )
        return f'<w:tbl><w:tblPr><w:tblStyle w:val="TableGrid"/><w:tblW w:w="0" w:type="auto"/></w:tblPr>{rows}</w:tbl>'

    equation = (
        '<w:p w14:paraId="2B3C4D5E" w14:textId="77777777" w:rsidR="00B41C2E" w:rsidRDefault="00B41C2E"><m:oMathPara>'
        "<m:oMath><m:sSup><m:e><m:r><m:t>x</m:t></m:r></m:e><m:sup><m:r><m:t>2</m:t></m:r></m:sup></m:sSup></m:oMath>"
        "</m:oMathPara></w:p>"
    )
    footnote_ref = '<w:r><w:rPr><w:rStyle w:val="FootnoteReference"/></w:rPr><w:footnoteReference w:id="1"/></w:r>'
    document = (
        f"{xml}<w:document {_WORD_NAMESPACES}><w:body>"
        + para(HEADING, style="Heading1")
        + para(BODY, extra=footnote_ref)
        + table()
        + equation
        + '<w:sectPr w:rsidR="00B41C2E"><w:pgSz w:w="11906" w:h="16838"/>'
        '<w:pgMar w:top="1440" w:right="1440" w:bottom="1440" w:left="1440" '
        'w:header="708" w:footer="708" w:gutter="0"/>'
        '<w:cols w:space="708"/><w:docGrid w:linePitch="360"/></w:sectPr></w:body></w:document>'
    )

    def notes(kind: str, extra: str) -> str:
        separators = (
            f'<w:{kind} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{kind}>'
            f'<w:{kind} w:type="continuationSeparator" w:id="0">'
            f"<w:p><w:r><w:continuationSeparator/></w:r></w:p></w:{kind}>"
        )
        return f"{xml}<w:{kind}s {_WORD_NAMESPACES}>{separators}{extra}</w:{kind}s>"

    footnotes = notes(
        "footnote",
        f'<w:footnote w:id="1"><w:p><w:pPr><w:pStyle w:val="FootnoteText"/></w:pPr><w:r><w:rPr>'
        f'<w:rStyle w:val="FootnoteReference"/></w:rPr><w:footnoteRef/></w:r><w:r><w:t xml:space="preserve"> {FOOTNOTE}'
        "</w:t></w:r></w:p></w:footnote>",
    )
    styles = (
        f"{xml}<w:styles {_WORD_NAMESPACES}>"
        '<w:docDefaults><w:rPrDefault><w:rPr><w:rFonts w:asciiTheme="minorHAnsi" w:hAnsiTheme="minorHAnsi"/>'
        '<w:sz w:val="22"/><w:lang w:val="en-GB"/></w:rPr></w:rPrDefault></w:docDefaults>'
        '<w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:name w:val="Normal"/><w:qFormat/></w:style>'
        '<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/><w:basedOn w:val="Normal"/>'
        '<w:next w:val="Normal"/><w:uiPriority w:val="9"/><w:qFormat/>'
        '<w:pPr><w:outlineLvl w:val="0"/></w:pPr></w:style>'
        '<w:style w:type="table" w:styleId="TableGrid"><w:name w:val="Table Grid"/></w:style>'
        '<w:style w:type="paragraph" w:styleId="FootnoteText"><w:name w:val="footnote text"/></w:style>'
        '<w:style w:type="character" w:styleId="FootnoteReference"><w:name w:val="footnote reference"/>'
        '<w:rPr><w:vertAlign w:val="superscript"/></w:rPr></w:style></w:styles>'
    )
    settings = (
        f'{xml}<w:settings {_WORD_NAMESPACES}><w:zoom w:percent="100"/><w:defaultTabStop w:val="720"/>'
        '<w:characterSpacingControl w:val="doNotCompress"/><w:footnotePr><w:footnote w:id="-1"/><w:footnote w:id="0"/>'
        '</w:footnotePr><w:endnotePr><w:endnote w:id="-1"/><w:endnote w:id="0"/></w:endnotePr>'
        '<w:compat><w:compatSetting w:name="compatibilityMode" '
        'w:uri="http://schemas.microsoft.com/office/word" w:val="15"/>'
        '</w:compat><w:rsids><w:rsidRoot w:val="00B41C2E"/><w:rsid w:val="00B41C2E"/></w:rsids>'
        '<m:mathPr><m:mathFont m:val="Cambria Math"/></m:mathPr><w:themeFontLang w:val="en-GB"/></w:settings>'
    )
    web_settings = f"{xml}<w:webSettings {_WORD_NAMESPACES}><w:optimizeForBrowser/><w:allowPNG/></w:webSettings>"
    font_table = (
        f'{xml}<w:fonts {_WORD_NAMESPACES}><w:font w:name="Calibri"><w:panose1 w:val="020F0502020204030204"/>'
        '<w:charset w:val="00"/><w:family w:val="swiss"/><w:pitch w:val="variable"/></w:font></w:fonts>'
    )
    app = (
        f'{xml}<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties" '
        'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"><Template>Normal.dotm</Template>'
        "<Application>Microsoft Office Word</Application><DocSecurity>0</DocSecurity><AppVersion>16.0000</AppVersion>"
        "</Properties>"
    )
    core = (
        f'{xml}<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><dc:title></dc:title><cp:revision>2</cp:revision>'
        '<dcterms:created xsi:type="dcterms:W3CDTF">2026-01-05T09:12:00Z</dcterms:created></cp:coreProperties>'
    )
    wml = "application/vnd.openxmlformats-officedocument.wordprocessingml"
    content_types = (
        f'{xml}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/word/document.xml" ContentType="{wml}.document.main+xml"/>'
        f'<Override PartName="/word/styles.xml" ContentType="{wml}.styles+xml"/>'
        f'<Override PartName="/word/settings.xml" ContentType="{wml}.settings+xml"/>'
        f'<Override PartName="/word/webSettings.xml" ContentType="{wml}.webSettings+xml"/>'
        f'<Override PartName="/word/footnotes.xml" ContentType="{wml}.footnotes+xml"/>'
        f'<Override PartName="/word/endnotes.xml" ContentType="{wml}.endnotes+xml"/>'
        f'<Override PartName="/word/fontTable.xml" ContentType="{wml}.fontTable+xml"/>'
        '<Override PartName="/docProps/core.xml" '
        'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        '<Override PartName="/docProps/app.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/></Types>'
    )
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    package_rels = (
        f'{xml}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId3" Type="{rel}/extended-properties" Target="docProps/app.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/'
        'core-properties" Target="docProps/core.xml"/>'
        f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="word/document.xml"/></Relationships>'
    )
    document_rels = (
        f'{xml}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + "".join(
            f'<Relationship Id="rId{i}" Type="{rel}/{kind}" Target="{target}"/>'
            for i, (kind, target) in enumerate(
                [
                    ("styles", "styles.xml"),
                    ("settings", "settings.xml"),
                    ("webSettings", "webSettings.xml"),
                    ("footnotes", "footnotes.xml"),
                    ("endnotes", "endnotes.xml"),
                    ("fontTable", "fontTable.xml"),
                ],
                start=1,
            )
        )
        + "</Relationships>"
    )
    parts = {
        "[Content_Types].xml": content_types,
        "_rels/.rels": package_rels,
        "word/document.xml": document,
        "word/_rels/document.xml.rels": document_rels,
        "word/styles.xml": styles,
        "word/settings.xml": settings,
        "word/webSettings.xml": web_settings,
        "word/footnotes.xml": footnotes,
        "word/endnotes.xml": notes("endnote", ""),
        "word/fontTable.xml": font_table,
        "docProps/core.xml": core,
        "docProps/app.xml": app,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in parts.items():
            archive.writestr(name, content.encode())
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
