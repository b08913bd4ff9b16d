"""PDF -> text, page by page: the text layer where it is usable, rendered-page OCR where not.

A page is OCR'd when its text layer has fewer than MIN_PAGE_ALNUM letters/digits or is mostly
unmappable glyphs: scans (any image codec pdfium decodes: JPEG, CCITT, JBIG2, ...), rotated
pages (pdfium honours /Rotate, tesseract detects sideways text) and text drawn as curves.
The OCR text replaces the layer only when it holds more letters and digits.
"""

from __future__ import annotations

import io
import logging
import unicodedata

import pypdfium2
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

from pipeline.ocr import OcrError, ocr_image
from pipeline.records import Extraction, ExtractionError
from pipeline.textdecode import normalize_text

MIN_PAGE_ALNUM = 20
MAX_GARBAGE_FRACTION = 0.1
BLANK_LEVEL = 245

logging.getLogger("pypdf").setLevel(logging.ERROR)


def extract_pdf(
    data: bytes, passwords: tuple[str, ...], ocr_lang: str, ocr_dpi: int, ocr_timeout_s: float
) -> Extraction:
    reader, password = _open(data, passwords)
    try:
        pages = list(reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ExtractionError(f"corrupt PDF: cannot read its page tree ({exc})") from exc
    warnings: list[str] = []
    texts: list[str] = []
    ocr_pages = 0
    renderer: _Renderer | None = None
    for number, page in enumerate(pages, start=1):
        text = _layer_text(page, number, warnings)
        if _usable(text):
            texts.append(text)
            continue
        renderer = renderer or _Renderer(data, password)
        ocr_text = renderer.ocr(number - 1, ocr_lang, ocr_dpi, ocr_timeout_s, warnings)
        if ocr_text is not None and _alnum(ocr_text) > _alnum(text):
            texts.append(ocr_text)
            ocr_pages += 1
        else:
            texts.append(text)
    if renderer:
        renderer.close()
    return Extraction(
        text="\n\n".join(t for t in texts if t),
        extractor="pdf:pypdf+tesseract" if ocr_pages else "pdf:pypdf",
        pages=len(pages),
        ocr_pages=ocr_pages,
        warnings=warnings,
    )


def _open(data: bytes, passwords: tuple[str, ...]) -> tuple[PdfReader, str | None]:
    if not data.strip():
        raise ExtractionError("empty PDF (no bytes)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except DependencyError as exc:
        raise ExtractionError(f"PDF needs an optional dependency: {exc}") from exc
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise ExtractionError(f"corrupt or truncated PDF: {exc}") from exc
    if not reader.is_encrypted:
        return reader, None
    for password in ("", *passwords):
        try:
            if reader.decrypt(password) != PasswordType.NOT_DECRYPTED:
                return reader, password
        except DependencyError as exc:
            raise ExtractionError(
                f"encrypted PDF needs the cryptography package for AES ({exc})"
            ) from exc
        except (PyPdfError, NotImplementedError, ValueError) as exc:
            raise ExtractionError(f"cannot decrypt PDF: {exc}") from exc
    tried = f" ({len(passwords)} supplied password(s) tried)" if passwords else ""
    raise ExtractionError(f"password required{tried}; supply one with pdf_passwords")


def _layer_text(page, number: int, warnings: list[str]) -> str:
    try:
        raw = page.extract_text() or ""
    except (
        PyPdfError,
        FileNotDecryptedError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        ZeroDivisionError,
        RecursionError,
        NotImplementedError,  # a stream filter pypdf lacks; the page is rendered and OCR'd
    ) as exc:
        warnings.append(f"page {number}: text layer unreadable ({type(exc).__name__}: {exc})")
        return ""
    return normalize_text(raw, "NFKC").strip()


def _alnum(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def _usable(text: str) -> bool:
    if _alnum(text) < MIN_PAGE_ALNUM:
        return False
    garbage = sum(ch == "\ufffd" or unicodedata.category(ch) in ("Co", "Cn", "Cs") for ch in text)
    return garbage <= MAX_GARBAGE_FRACTION * len(text)


class _Renderer:
    """pdfium, opened lazily: only PDFs with pages that need OCR pay for it."""

    def __init__(self, data: bytes, password: str | None):
        try:
            self.doc: pypdfium2.PdfDocument | None = pypdfium2.PdfDocument(data, password=password)
            self.error = ""
        except pypdfium2.PdfiumError as exc:
            self.doc, self.error = None, str(exc)

    def ocr(
        self, index: int, lang: str, dpi: int, timeout_s: float, warnings: list[str]
    ) -> str | None:
        if self.doc is None:
            warnings.append(f"page {index + 1}: cannot render for OCR ({self.error})")
            return None
        try:
            image = self.doc[index].render(scale=dpi / 72, grayscale=True).to_pil()
        except (pypdfium2.PdfiumError, ValueError, MemoryError) as exc:
            warnings.append(f"page {index + 1}: cannot render for OCR ({exc})")
            return None
        if image.getextrema()[0] >= BLANK_LEVEL:
            return ""
        try:
            return ocr_image(image, lang, timeout_s)
        except OcrError as exc:
            warnings.append(f"page {index + 1}: {exc}")
            return None

    def close(self) -> None:
        if self.doc is not None:
            self.doc.close()
