"""Shared settings and assertions for the extractor tests (OCR output is fuzzy)."""

from __future__ import annotations

import re

import docgen

from gptforge.pipeline.extract_image import extract_image
from gptforge.pipeline.extract_pdf import extract_pdf
from gptforge.pipeline.records import Extraction

LANG, DPI, OCR_TIMEOUT = "eng", 300, 60.0
MAX_PIXELS = 180_000_000
PAGE_ONE = f"Page one: the {docgen.FL_LIGATURE}otilla of {docgen.FL_LIGATURE}at boats set out."
PAGE_TWO = "Page two: the harbour master counted forty-two masts at dawn."


def pdf(data: bytes, passwords: tuple[str, ...] = ()) -> Extraction:
    return extract_pdf(data, passwords, LANG, DPI, OCR_TIMEOUT, MAX_PIXELS)


def image(data: bytes, max_pixels: int = MAX_PIXELS) -> Extraction:
    return extract_image(data, LANG, OCR_TIMEOUT, max_pixels)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def assert_reads(text: str, expected: str, at_least: float = 0.8) -> None:
    """OCR found most of the expected words (case and punctuation aside)."""
    wanted, got = words(expected), set(words(text))
    found = [w for w in wanted if w in got]
    assert len(found) >= at_least * len(wanted), f"read {text!r}, expected {expected!r}"
