"""PDFs that would take a worker's memory: a 200-inch page, zlib and image bombs, each generated
here; and the memory ceiling every extraction worker runs under."""

from __future__ import annotations

import hashlib
import io
import math
import os
import time
import zlib
from pathlib import Path

import memory_jobs
from extract_helpers import DPI, LANG, OCR_TIMEOUT
from hypothesis import given, settings
from hypothesis import strategies as st
from reportlab.pdfgen import canvas

from gptforge.pipeline.extract_pdf import extract_pdf, render_scale
from gptforge.pipeline.jobs import ExtractJob, failed
from gptforge.pipeline.records import Kind, Status
from gptforge.pipeline.workers import MIN_WORKER_MEMORY, WorkerPool, default_memory_limit

CEILING = 1_500_000_000
SMALL_RENDER = 4_000_000  # pixels: a quick OCR, still ~900x smaller than 300 dpi here


def huge_page_pdf() -> bytes:
    """One 200 x 200 inch page (PDF's largest) saying a few words: 3.6 G pixels at 300 dpi."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=(14400, 14400))
    pdf.setFont("Helvetica", 600)
    pdf.drawString(1000, 7000, "HUGE PAGE")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def raw_pdf(page: bytes, streams: list[bytes]) -> bytes:
    """A one-page PDF: catalog, pages, `page` (object 3) and Flate `streams` (objects 4...)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"]
    objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] " + page + b" >>")
    for stream in streams:
        head, data = stream.split(b"\n", 1)
        packed = zlib.compress(data, 9)
        objects.append(
            b"<< /Length %d /Filter /FlateDecode %s >>\nstream\n" % (len(packed), head)
            + packed
            + b"\nendstream"
        )
    out, offsets = bytearray(b"%PDF-1.7\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def extract(data: bytes, max_pixels: int = 180_000_000):
    return extract_pdf(data, (), LANG, DPI, OCR_TIMEOUT, max_pixels)


# --- render size ------------------------------------------------------------------------------


@settings(max_examples=300, database=None)
@given(
    width=st.floats(1, 14400),
    height=st.floats(1, 14400),
    dpi=st.integers(72, 1200),
    max_pixels=st.integers(1_000_000, 2_000_000_000),
)
def test_a_rendered_page_never_exceeds_max_pixels_and_keeps_the_dpi_when_it_fits(
    width: float, height: float, dpi: int, max_pixels: int
) -> None:
    scale = render_scale(width, height, dpi, max_pixels)
    assert math.ceil(width * scale) * math.ceil(height * scale) <= max_pixels  # pdfium's size
    assert scale <= dpi / 72
    if (width * dpi / 72 + 1) * (height * dpi / 72 + 1) <= max_pixels:
        assert scale == dpi / 72


def test_a_200_inch_page_is_rendered_at_a_lower_dpi_with_a_warning() -> None:
    extraction = extract(huge_page_pdf(), SMALL_RENDER)
    assert "HUGE PAGE" in extraction.text
    assert extraction.warnings == [
        "page 1: 200x200 in, rendered for OCR at 10 dpi instead of ocr_dpi=300 to stay within "
        "max_image_pixels=4000000"
    ]


# --- bombs are not rendered -------------------------------------------------------------------


def test_a_zlib_bomb_page_is_not_rendered_and_says_why() -> None:
    content = b"\n" + b"0 0 m 1 1 l S\n" * 6_000_000  # 84 MB of paths from ~0.1 MB
    data = raw_pdf(b"/Contents 4 0 R", [content])
    assert len(data) < 1_000_000
    started = time.monotonic()
    extraction = extract(data)
    assert time.monotonic() - started < 20  # pdfium took minutes and 18 GB on a bigger one
    assert (extraction.text, extraction.ocr_pages) == ("", 0)
    assert extraction.warnings == [
        "page 1: not rendered for OCR: its content decompresses past pypdf's limits (a zlib bomb?)"
    ]


def test_an_image_over_max_image_pixels_is_not_decoded_and_says_why() -> None:
    side = 20_000  # 400 M pixels of zeros, 0.4 MB compressed
    image = b"/Type /XObject /Subtype /Image /Width %d /Height %d " % (side, side)
    image += b"/ColorSpace /DeviceGray /BitsPerComponent 8\n" + bytes(side * side)
    page = b"/Contents 4 0 R /Resources << /XObject << /Im0 5 0 R >> >>"
    extraction = extract(raw_pdf(page, [b"\nq 612 0 0 792 0 0 cm /Im0 Do Q\n", image]))
    assert extraction.warnings == [
        "page 1: not rendered for OCR: it holds a 20000x20000 image, over "
        "max_image_pixels=180000000 (decompression bomb?)"
    ]


# --- the memory ceiling -----------------------------------------------------------------------


def test_the_default_ceiling_shares_the_machines_memory_between_workers() -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert default_memory_limit(1) <= memory
    assert default_memory_limit(1) >= default_memory_limit(4) >= MIN_WORKER_MEMORY
    assert default_memory_limit(10_000) == MIN_WORKER_MEMORY


def lost(job, reason: str) -> dict:
    return failed(job, reason)


def test_a_200_inch_page_pdf_is_ingested_under_the_ceiling(tmp_path: Path) -> None:
    data = huge_page_pdf()
    path = tmp_path / "huge.pdf"
    path.write_bytes(data)
    job = ExtractJob(
        path=str(path),
        kind=Kind.PDF,
        key=f"{hashlib.sha256(data).hexdigest()}-test",
        cache_dir=str(tmp_path / "cache"),
        ocr_lang=LANG,
        ocr_dpi=DPI,
        ocr_timeout_s=OCR_TIMEOUT,
        max_image_pixels=SMALL_RENDER,
    )
    with WorkerPool(memory_jobs.measured_run_job, 1, 120, lost, memory_limit=CEILING) as pool:
        [result] = pool.map([job])
    assert (result["status"], result["reason"]) == (Status.OK, None)
    assert "rendered for OCR at 10 dpi" in result["warnings"][0]
    assert result["limit"] == CEILING
    assert result["peak_rss"] < CEILING / 2  # 300 dpi would be 3.6 GB of pixels


def test_a_job_out_of_memory_fails_alone_and_its_worker_is_replaced() -> None:
    with WorkerPool(
        memory_jobs.allocate, 1, 60, lambda job, why: why, memory_limit=CEILING
    ) as pool:
        before, reason, after = pool.map([10, 2 * CEILING, 20])
    assert reason == "ran out of memory (limit 1.5 GB)"
    assert before != after  # a fresh worker ran the next job


def test_a_worker_aborted_by_native_code_is_reported_as_likely_out_of_memory() -> None:
    with WorkerPool(memory_jobs.abort, 1, 60, lambda job, why: why, memory_limit=CEILING) as pool:
        [reason] = pool.map([None])
    assert (
        reason == "extraction process died (exit code -6), most likely out of memory (limit 1.5 GB)"
    )
