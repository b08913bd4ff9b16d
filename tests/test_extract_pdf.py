"""PDF extraction on generated documents: text layers, scans, rotated and vector pages,
encryption and damage. OCR runs tesseract for real on small pages, each document OCR'd once
per module."""

from __future__ import annotations

import contextlib
import io
import random
import re
from pathlib import Path

import docgen
import pytest
from extract_helpers import (
    DPI,
    LANG,
    MAX_PIXELS,
    PAGE_ONE,
    PAGE_TWO,
    assert_reads,
    pdf,
)
from pypdf import PdfReader

from gptforge.pipeline.extract_pdf import extract_pdf
from gptforge.pipeline.records import Extraction, ExtractionError

# --- PDFs with a text layer -------------------------------------------------------------------

PAGE_THREE = "Page three: nobody came back before the autumn storms."


def test_a_text_pdf_gives_each_pages_text_in_order_without_ocr(tmp_path: Path):
    data = docgen.text_pdf(tmp_path / "t.pdf", [PAGE_ONE, PAGE_TWO, PAGE_THREE]).read_bytes()
    extraction = pdf(data)
    pages = [" ".join(page.split()) for page in extraction.text.split("\n\n")]
    assert pages == ["Page one: the flotilla of flat boats set out.", PAGE_TWO, PAGE_THREE]
    assert (extraction.pages, extraction.ocr_pages) == (3, 0)
    assert extraction.extractor == "pdf:pypdf"
    assert extraction.warnings == []


def test_the_ligature_really_is_in_the_pdf_and_nfkc_removes_it(tmp_path: Path):
    path = docgen.text_pdf(tmp_path / "t.pdf", [PAGE_ONE])
    assert docgen.FL_LIGATURE in PdfReader(path).pages[0].extract_text()
    assert docgen.FL_LIGATURE not in pdf(path.read_bytes()).text


def test_a_blank_page_is_neither_text_nor_ocr(tmp_path: Path):
    extraction = pdf(docgen.blank_pdf(tmp_path / "blank.pdf", pages=2).read_bytes())
    assert (extraction.text, extraction.pages, extraction.ocr_pages) == ("", 2, 0)
    assert extraction.warnings == []


# --- PDFs that need OCR -----------------------------------------------------------------------

SCAN_ONE = "Quartz lanterns glow over the harbor"
SCAN_TWO = "Zebra crossing near the museum"
MIXED_TEXT = "This page has a real text layer about the orchestra rehearsal schedule."
MIXED_SCAN = "Scanned violin workshop invoice"
ROTATED = "Sideways invoice for copper pipes and brass fittings"
VECTOR = ["Vector outlines spell", "marmalade kingdom"]


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every OCR-needing PDF, generated once for the module."""
    d = tmp_path_factory.mktemp("pdfs")
    scanned = docgen.scanned_pdf(d / "scanned.pdf", [SCAN_ONE, SCAN_TWO])
    paths = {
        "scanned": scanned,
        "mixed": docgen.mixed_pdf(d / "mixed.pdf", MIXED_TEXT, MIXED_SCAN),
        "rotate-90": docgen.rotated_scan_pdf(d / "rot90.pdf", ROTATED, rotate_key=90),
        "rotate-180": docgen.rotated_scan_pdf(d / "rot180.pdf", ROTATED, rotate_key=180),
        "sideways": docgen.rotated_scan_pdf(d / "side.pdf", ROTATED, rotate_key=0),
        "jpeg": docgen.pillow_scanned_pdf(d / "jpeg.pdf", [SCAN_ONE]),
        "ccitt": docgen.pillow_scanned_pdf(d / "ccitt.pdf", [SCAN_TWO], bilevel=True),
        "encrypted-scan": docgen.encrypted_pdf(d / "enc.pdf", "s3cret", source=scanned),
    }
    with contextlib.suppress(ImportError):  # fontTools comes with matplotlib (via mlflow)
        paths["vector"] = docgen.vector_text_pdf(d / "vector.pdf", VECTOR)
    return {name: path.read_bytes() for name, path in paths.items()}


@pytest.fixture(scope="module")
def scanned(pdfs: dict[str, bytes]) -> Extraction:
    return pdf(pdfs["scanned"])


@pytest.mark.slow
def test_a_scanned_pdf_is_ocrd_page_by_page(scanned: Extraction):
    first, second = scanned.text.split("\n\n")
    assert_reads(first, SCAN_ONE)
    assert_reads(second, SCAN_TWO)
    assert (scanned.pages, scanned.ocr_pages) == (2, 2)
    assert scanned.extractor == "pdf:pypdf+tesseract"
    assert scanned.warnings == []


def test_a_scanned_pdf_has_no_text_layer_to_fall_back_on(pdfs: dict[str, bytes]):
    reader = PdfReader(io.BytesIO(pdfs["scanned"]))
    assert all(not page.extract_text().strip() for page in reader.pages)


@pytest.mark.slow
def test_a_mixed_pdf_reads_its_text_layer_and_ocrs_its_scan(pdfs: dict[str, bytes]):
    extraction = pdf(pdfs["mixed"])
    layer, ocr = extraction.text.split("\n\n")
    assert " ".join(layer.split()) == MIXED_TEXT
    assert_reads(ocr, MIXED_SCAN)
    assert (extraction.pages, extraction.ocr_pages) == (2, 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rotate-90", "rotate-180", "sideways"])
def test_a_rotated_scan_is_read(pdfs: dict[str, bytes], name: str):
    """A turned image on a page whose /Rotate turns it back (pdfium renders it upright; at 180
    degrees nothing else could, see the upside-down image test), and a sideways page with no
    /Rotate at all (tesseract's layout analysis)."""
    extraction = pdf(pdfs[name])
    assert_reads(extraction.text, ROTATED)
    assert extraction.ocr_pages == 1


@pytest.mark.slow
def test_text_drawn_as_vector_curves_is_ocrd(pdfs: dict[str, bytes]):
    if "vector" not in pdfs:
        pytest.skip("fontTools is not installed: no glyph outlines to draw")
    extraction = pdf(pdfs["vector"])
    assert_reads(extraction.text, " ".join(VECTOR), at_least=0.75)
    assert (extraction.pages, extraction.ocr_pages) == (1, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "codec", "expected"),
    [("jpeg", "/DCTDecode", SCAN_ONE), ("ccitt", "/CCITTFaxDecode", SCAN_TWO)],
)
def test_scans_in_the_codecs_scanners_write_are_ocrd(pdfs, name: str, codec: str, expected: str):
    xobjects = PdfReader(io.BytesIO(pdfs[name])).pages[0]["/Resources"]["/XObject"]
    filters = [str(x.get_object()["/Filter"]) for x in xobjects.values()]
    assert any(codec in f for f in filters), filters
    assert_reads(pdf(pdfs[name]).text, expected)


# --- encryption -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["AES-256", "AES-128", "RC4-128"])
def test_a_pdf_encrypted_with_an_empty_user_password_opens_without_one(tmp_path, algorithm):
    path = docgen.encrypted_pdf(tmp_path / "e.pdf", "", algorithm=algorithm)
    extraction = pdf(path.read_bytes())
    assert extraction.text == "This protected report lists the annual harvest figures."


def test_a_pdf_that_needs_a_password_says_so(tmp_path: Path):
    data = docgen.encrypted_pdf(tmp_path / "e.pdf", "s3cret").read_bytes()
    with pytest.raises(ExtractionError) as info:
        pdf(data)
    assert str(info.value) == "password required; supply one with pdf_passwords"
    with pytest.raises(ExtractionError) as info:
        pdf(data, ("wrong", "also wrong"))
    assert str(info.value).startswith("password required (2 supplied password(s) tried)")


@pytest.mark.parametrize("password", ["s3cret", "owner-secret"], ids=["user", "owner"])
def test_a_pdf_opens_with_a_supplied_user_or_owner_password(tmp_path: Path, password: str):
    data = docgen.encrypted_pdf(tmp_path / "e.pdf", "s3cret").read_bytes()
    extraction = pdf(data, ("wrong", password))
    assert extraction.text == "This protected report lists the annual harvest figures."


@pytest.mark.slow
def test_an_encrypted_scan_is_rendered_for_ocr_with_the_password(pdfs: dict[str, bytes]):
    extraction = pdf(pdfs["encrypted-scan"], ("s3cret",))
    assert_reads(extraction.text, f"{SCAN_ONE} {SCAN_TWO}")
    assert extraction.ocr_pages == 2
    assert extraction.warnings == []


# --- damaged PDFs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_pdf() -> bytes:
    return docgen.text_pdf_bytes([PAGE_TWO, PAGE_THREE])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda good: b"", "empty PDF (no bytes)"),
        (lambda good: b" \n\t\n", "empty PDF (no bytes)"),
        (lambda good: b"%PDF-1.7\n", "corrupt or truncated PDF"),
        (lambda good: b"%PDF-1.4\n" + random.Random(7).randbytes(5000), "corrupt or truncated"),
        (lambda good: good[: len(good) // 2], "corrupt or truncated PDF"),
    ],
    ids=["zero-bytes", "whitespace", "header-only", "random-after-header", "first-half"],
)
def test_a_damaged_pdf_is_an_extraction_error_with_a_clear_message(good_pdf, make, message):
    with pytest.raises(ExtractionError, match=re.escape(message)):
        pdf(make(good_pdf))


def test_a_page_with_an_unknown_stream_filter_is_a_warning_not_a_failure(good_pdf: bytes):
    extraction = pdf(docgen.with_unknown_filter(good_pdf, page_index=0))
    assert extraction.text == PAGE_THREE
    assert extraction.pages == 2
    assert any(
        w.startswith("page 1: text layer unreadable (NotImplementedError")
        for w in extraction.warnings
    )


# --- tesseract's own failures in a PDF --------------------------------------------------------


def test_a_page_slower_than_ocr_timeout_fails_alone_in_a_pdf(pdfs: dict[str, bytes]):
    extraction = extract_pdf(pdfs["jpeg"], (), LANG, DPI, 0.01, MAX_PIXELS)
    assert (extraction.text, extraction.pages, extraction.ocr_pages) == ("", 1, 0)
    assert extraction.warnings == ["page 1: OCR of one page took longer than ocr_timeout_s=0.01"]
