"""Word documents convert on the installed libraries: python-docx's and Word's own layout, through the converter.

The lxml pin in requirements.txt works around an upstream change (lxml 6.2.0 hands a parser target's ``start()`` an
empty ``nsmap``); the first two tests state that behaviour directly, so they fail on the day the pin is lifted while
the bug remains, naming the cause rather than a conversion error.
"""

from __future__ import annotations

import pytest
from lxml import etree

from doctransform.converter import run_conversion
from doctransform.detection import DOCX
from doctransform.transformers import get_transformer

from . import files

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def test_an_lxml_parser_target_is_told_the_namespaces_an_element_declares():
    seen = []

    class Target:
        def start(self, tag, attrib, nsmap=None):
            seen.append((tag, dict(nsmap or {})))

        def end(self, tag):
            pass

        def data(self, data):
            pass

        def close(self):
            return None

    parser = etree.XMLParser(target=Target())
    parser.feed(f'<w:document xmlns:w="{W}"><w:body/></w:document>'.encode())
    parser.close()
    assert seen[0] == (f"{{{W}}}document", {"w": W}), (
        f"lxml {etree.__version__} no longer passes declared namespaces to a parser target: BeautifulSoup's xml "
        "builder (markitdown's DOCX pre-processing) then drops prefixes and every Word document fails to convert"
    )


def test_beautifulsoup_xml_keeps_the_namespace_prefixes_of_a_word_part():
    from bs4 import BeautifulSoup

    part = f'<w:document xmlns:w="{W}"><w:body><w:p><w:r><w:t>Hi</w:t></w:r></w:p></w:body></w:document>'
    assert "<w:body>" in str(BeautifulSoup(part, features="xml"))


@pytest.mark.parametrize("build", [files.docx, files.word_docx], ids=["python-docx", "word-layout"])
def test_a_word_document_becomes_markdown_in_the_converter(build):
    markdown = run_conversion(
        transformer=get_transformer(source_type=DOCX), data=build(), charset=None, filename="report.docx"
    ).markdown
    assert f"# {files.HEADING}" in markdown, markdown
    assert files.BODY in markdown
    for row in ("| Region | Units |", "| North | 42 |", "| South | 17 |"):
        assert row in markdown, markdown


def test_word_notes_and_equations_come_through():
    markdown = run_conversion(
        transformer=get_transformer(source_type=DOCX), data=files.word_docx(), charset=None, filename="report.docx"
    ).markdown
    assert files.FOOTNOTE in markdown, markdown
    assert "x^{2}" in markdown, markdown  # the Office Math equation, as LaTeX
