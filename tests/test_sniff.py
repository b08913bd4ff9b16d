"""`pipeline.sniff`: what a file is, decided by its first bytes before its name."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import random
import zipfile

import pytest
from PIL import Image

from gptforge.pipeline.records import Kind
from gptforge.pipeline.sniff import SNIFF_BYTES, sniff
from gptforge.pipeline.textdecode import decode_text


def image_bytes(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, fmt, **options)
    return buffer.getvalue()


# --- content beats the name -------------------------------------------------------------------


def test_a_pdf_that_is_really_an_html_error_page_is_skipped_as_html():
    page = b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head></html>\n"
    verdict = sniff("papers/attention.pdf", page)
    assert verdict.kind == Kind.UNKNOWN
    assert verdict.skip_reason == (
        "named .pdf but the content is HTML, not PDF (likely a failed download)"
    )


def test_an_image_name_on_plain_text_is_skipped_saying_what_it_is():
    verdict = sniff("photo.JPG", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n")
    assert verdict.kind == Kind.UNKNOWN
    assert verdict.skip_reason == "named .jpg but the content is text, not image"


def test_pdf_content_is_a_pdf_whatever_its_name():
    assert sniff("download.bin", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n").kind == Kind.PDF
    # a few junk bytes before the header are tolerated, as PDF readers do
    assert sniff("x", b"\r\n\r\n%PDF-1.4\n").kind == Kind.PDF


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("make_pdf.py", b'"""Write minimal PDFs by hand."""\nHEADER = b"%PDF-1.4\\n"\n'),
        ("pdf-notes.md", b"# PDF internals\n\nEvery file starts with `%PDF-1.7`.\n"),
    ],
    ids=["python", "markdown"],
)
def test_text_that_mentions_the_pdf_header_is_not_a_pdf(name: str, head: bytes):
    assert sniff(name, head).kind in (Kind.CODE, Kind.TEXT)


def test_binary_junk_before_the_pdf_header_is_tolerated_as_pdf_readers_do():
    macbinary = b"\x00\x11report.pdf" + bytes(115)
    assert sniff("report.pdf", macbinary + b"%PDF-1.4\n1 0 obj\n").kind == Kind.PDF


def test_an_html_page_named_pdf_that_mentions_the_header_is_still_html():
    page = b"<!DOCTYPE html>\n<html><body><pre>%PDF-1.7 expected</pre></body></html>\n"
    assert sniff("paper.pdf", page).skip_reason == (
        "named .pdf but the content is HTML, not PDF (likely a failed download)"
    )


def test_a_python_file_full_of_nul_bytes_is_binary():
    verdict = sniff("model.py", b"\x00" * 4096)
    assert verdict.kind == Kind.BINARY
    assert verdict.skip_reason == "binary content (NUL or control bytes)"


def test_text_with_many_control_bytes_is_binary():
    head = bytes(range(1, 9)) * 50 + b"some text"
    assert sniff("notes.txt", head).kind == Kind.BINARY


@pytest.mark.parametrize(
    ("name", "head", "what"),
    [
        ("data.txt", gzip.compress(b"hello" * 100), "gzip archive"),
        ("report.docx", None, "zip archive"),
        ("tool.py", b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56, "ELF executable"),
        ("store.db", b"SQLite format 3\x00" + b"\x00" * 84, "SQLite database"),
        ("weights.txt", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}", "NumPy array"),
    ],
)
def test_known_binary_formats_are_skipped_with_their_name(name: str, head: bytes | None, what):
    if head is None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("word/document.xml", "<w:document/>")
        head = buffer.getvalue()
    verdict = sniff(name, head[:8192])
    assert verdict.kind == Kind.BINARY
    assert verdict.skip_reason.startswith(f"binary content: {what}")


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "detail", "options"),
    [
        ("PNG", "png", {}),
        ("JPEG", "jpeg", {}),
        ("GIF", "gif", {}),
        ("TIFF", "tiff", {}),
        ("TIFF", "tiff", {"compression": "tiff_lzw"}),
        ("WEBP", "webp", {}),
        ("BMP", "bmp", {}),
    ],
)
def test_images_are_recognised_by_their_signature_not_their_name(fmt, detail, options):
    verdict = sniff("scan_without_extension", image_bytes(fmt, **options))
    assert (verdict.kind, verdict.detail, verdict.skip_reason) == (Kind.IMAGE, detail, None)


def test_big_endian_tiff_is_an_image():
    assert sniff("a.tif", b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 32).detail == "tiff"


@pytest.mark.parametrize(
    "head",
    [
        b"BMW 320i service notes: oil change every 15000 km.\n",
        b"BMP: the Windows bitmap. Bytes 2-5 hold the file size, 6-9 are reserved.\n",
    ],
)
def test_text_that_starts_with_bm_is_text_not_a_bitmap(head: bytes):
    assert sniff("cars.txt", head).kind == Kind.TEXT


@pytest.mark.parametrize(
    "head",
    [
        b"MZ-80K owner's manual, chapter 1: switching on.\n" * 3,
        b"ID3 tags explained: where an MP3 keeps its title.\n",
        b"BZh is how every bzip2 stream begins; the digit after it is the block size.\n",
    ],
    ids=["MZ", "ID3", "BZh"],
)
def test_text_that_starts_with_a_short_binary_signature_is_text(head: bytes):
    assert sniff("notes.txt", head).kind == Kind.TEXT


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (bz2.compress(b"hello" * 100), "bzip2 archive"),
        (bz2.compress(b""), "bzip2 archive"),
        (b"ID3\x04\x00\x00\x00\x00\x01\x7f" + bytes(64), "MP3 audio"),
        (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + bytes(54) + b"\x0e\x1f", "Windows executable"),
    ],
    ids=["bzip2", "empty-bzip2", "ID3v2.4", "MZ"],
)
def test_short_signatures_with_valid_headers_are_binary(head: bytes, what: str):
    assert sniff("data.txt", head).skip_reason == f"binary content: {what}"


# --- text, code, notebooks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["Makefile", "Dockerfile", "Dockerfile.dev", "CMakeLists.txt", "src/main.rs", "app.PY"],
)
def test_code_is_recognised_by_extension_or_well_known_name(name: str):
    assert sniff(name, b"all:\n\techo build\n").kind == Kind.CODE


@pytest.mark.parametrize("name", ["README", "notes.md", "paper.tex.txt", "LICENSE"])
def test_other_readable_files_are_text(name: str):
    assert sniff(name, b"Plain words, nothing else.\n").kind == Kind.TEXT


def test_a_notebook_is_recognised_by_its_extension_when_its_content_is_text():
    notebook = json.dumps({"cells": [], "nbformat": 4, "nbformat_minor": 5}).encode()
    assert sniff("analysis.ipynb", notebook).kind == Kind.NOTEBOOK
    assert sniff("analysis.ipynb", b"\x00" * 64).kind == Kind.BINARY


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_text(codec: str):
    head = "Meeting notes: budget, hiring plan, roadmap.\r\n".encode(codec) * 20
    verdict = sniff("notes.txt", head)
    assert (verdict.kind, verdict.skip_reason) == (Kind.TEXT, None)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize(
    "source",
    [
        "Съешь же ещё этих мягких французских булок, да выпей чаю.\n",
        "\u3000吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\n",
    ],
    ids=["russian", "japanese"],
)
def test_non_latin_utf16_without_a_bom_is_text_and_decodes_as_such(source: str, codec: str):
    head = (source * 200).encode(codec)[:SNIFF_BYTES]
    verdict = sniff("notes.txt", head)
    assert (verdict.kind, verdict.skip_reason) == (Kind.TEXT, None)
    assert decode_text(head, [])[1] == codec  # one rule for both modules


def test_int16_arrays_and_random_bytes_with_nuls_stay_binary():
    generator = random.Random(0)
    noise = bytes(generator.randrange(256) for _ in range(SNIFF_BYTES))
    counts = b"".join(generator.randrange(40).to_bytes(2, "little") for _ in range(4096))
    for head in (noise, counts, b"\x00\x01" * 4096):
        assert sniff("data.txt", head).kind == Kind.BINARY


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-8-sig"])
def test_text_with_a_bom_is_text(codec: str):
    assert sniff("notes.txt", "Grüße, 東京\n".encode(codec)).kind == Kind.TEXT


def test_ansi_colour_codes_do_not_make_a_log_binary():
    log = b"\x1b[32mPASSED\x1b[0m test_one\n\x1b[31mFAILED\x1b[0m test_two\n" * 10
    assert sniff("pytest.log", log).kind == Kind.TEXT


def test_an_empty_file_is_classified_by_its_name():
    assert sniff("empty.py", b"").kind == Kind.CODE
    assert sniff("empty.txt", b"").kind == Kind.TEXT
