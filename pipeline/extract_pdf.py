"""PDF -> text, page by page: the text layer where it is usable, rendered-page OCR where not.

A page is OCR'd when its text layer has fewer than MIN_PAGE_ALNUM letters/digits or is mostly
unmappable glyphs: scans (any image codec pdfium decodes: JPEG, CCITT, JBIG2, ...), rotated
pages (pdfium honours /Rotate, tesseract detects sideways text) and text drawn as curves.
The OCR text replaces the layer only when it holds more letters and digits.

Rendering is where a small PDF can take a worker's memory: a 554-byte PDF with a 200-inch page
is 3.6 G pixels at 300 dpi (7.25 GB), a 2 MB zlib bomb decompresses into a content stream
pdfium spent 18 GB and 5 minutes on. So a page is rendered at no more than max_image_pixels
(the dpi scaled down, with a warning), and not at all when its content decompresses past
pypdf's limits (75 MB a stream) or it holds an image over max_image_pixels. Nested forms are
not inspected: the worker's memory ceiling (`pipeline.workers`) is the last line.

Pages that need OCR while tesseract cannot run keep their text layer, with a warning; a PDF
with no usable layer at all (a scan) fails with tesseract's problem.
"""

from __future__ import annotations

import io
import logging
import math
import unicodedata

import pypdfium2
from PIL import Image
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError

from gptforge.pipeline.ocr import OcrError, ocr_image, tesseract_problem
from gptforge.pipeline.records import Extraction, ExtractionError
from gptforge.pipeline.textdecode import normalize_text

MIN_PAGE_ALNUM = 20
MAX_GARBAGE_FRACTION = 0.1
BLANK_LEVEL = 245

# What pypdf raises on one broken page; pdfium may still render it.
PAGE_ERRORS = (
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
)

logging.getLogger("pypdf").setLevel(logging.ERROR)


def extract_pdf(
    data: bytes,
    passwords: tuple[str, ...],
    ocr_lang: str,
    ocr_dpi: int,
    ocr_timeout_s: float,
    max_pixels: int,
) -> Extraction:
    reader, password = _open(data, passwords)
    try:
        pages = list(reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ExtractionError(f"corrupt PDF: cannot read its page tree ({exc})") from exc
    warnings: list[str] = []
    texts: list[str] = []
    ocr_pages = 0
    unread: list[int] = []  # pages that needed OCR while tesseract cannot run
    problem: str | None = None
    renderer: _Renderer | None = None
    for number, page in enumerate(pages, start=1):
        text = _layer_text(page, number, warnings)
        if not _usable(text):
            problem = tesseract_problem()
            if problem:
                unread.append(number)
            else:
                renderer = renderer or _Renderer(data, password, ocr_dpi, max_pixels)
                ocr_text = renderer.ocr(page, number - 1, ocr_lang, ocr_timeout_s, warnings)
                if ocr_text is not None and _alnum(ocr_text) > _alnum(text):
                    text, ocr_pages = ocr_text, ocr_pages + 1
        texts.append(text)
    if renderer:
        renderer.close()
    if unread and problem:
        if len(unread) == len(pages):
            raise ExtractionError(problem)
        warnings.append(f"{len(unread)} page(s) not OCR'd, first page {unread[0]}: {problem}")
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
    except PAGE_ERRORS as exc:
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


def _unrenderable(page, max_pixels: int) -> str | None:
    """Why pdfium, which bounds neither, must not render this page: content that decompresses
    past pypdf's limits, or an image over max_image_pixels (the image extractor's bound)."""
    try:
        page.get_contents()
        resources = page.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources else None
        for ref in (xobjects.get_object() if xobjects else {}).values():
            image = ref.get_object()
            width, height = int(image.get("/Width", 0)), int(image.get("/Height", 0))
            if image.get("/Subtype") == "/Image" and width * height > max_pixels:
                return (
                    f"it holds a {width}x{height} image, over max_image_pixels={max_pixels} "
                    "(decompression bomb?)"
                )
    except LimitReachedError:
        return "its content decompresses past pypdf's limits (a zlib bomb?)"
    except PAGE_ERRORS:
        pass  # unreadable for pypdf: pdfium may still render it
    return None


def render_scale(width: float, height: float, dpi: int, max_pixels: int) -> float:
    """Pixels per point: dpi / 72, or less so that the bitmap has at most `max_pixels`.

    pdfium rounds each side up, so the cap solves (w*s + 1) * (h*s + 1) = max_pixels.
    """
    width, height = max(width, 1.0), max(height, 1.0)
    area, half_perimeter = width * height, width + height
    cap = (math.sqrt(half_perimeter**2 + 4 * area * (max_pixels - 1)) - half_perimeter) / (2 * area)
    return min(dpi / 72, cap)


class _Renderer:
    """pdfium, opened lazily: only PDFs with pages that need OCR pay for it."""

    def __init__(self, data: bytes, password: str | None, dpi: int, max_pixels: int):
        self.dpi, self.max_pixels = dpi, max_pixels
        try:
            self.doc: pypdfium2.PdfDocument | None = pypdfium2.PdfDocument(data, password=password)
            self.error = ""
        except pypdfium2.PdfiumError as exc:
            self.doc, self.error = None, str(exc)

    def ocr(self, page, index: int, lang: str, timeout_s: float, warnings: list[str]) -> str | None:
        """The OCR text of page `index` (`page` is pypdf's), "" when blank, None when unread."""
        if self.doc is None:
            warnings.append(f"page {index + 1}: cannot render for OCR ({self.error})")
            return None
        refused = _unrenderable(page, self.max_pixels)
        if refused:
            warnings.append(f"page {index + 1}: not rendered for OCR: {refused}")
            return None
        try:
            image = self._render(index, warnings)
        except (pypdfium2.PdfiumError, ValueError) as exc:
            warnings.append(f"page {index + 1}: cannot render for OCR ({exc})")
            return None
        if image.getextrema()[0] >= BLANK_LEVEL:
            return ""
        try:
            return ocr_image(image, lang, timeout_s)
        except OcrError as exc:
            warnings.append(f"page {index + 1}: {exc}")
            return None

    def _render(self, index: int, warnings: list[str]) -> Image.Image:
        page = self.doc[index]
        width, height = page.get_size()
        scale = render_scale(width, height, self.dpi, self.max_pixels)
        if scale < self.dpi / 72:
            warnings.append(
                f"page {index + 1}: {width / 72:.0f}x{height / 72:.0f} in, rendered for OCR at "
                f"{scale * 72:.0f} dpi instead of ocr_dpi={self.dpi} to stay within "
                f"max_image_pixels={self.max_pixels}"
            )
        return page.render(scale=scale, grayscale=True).to_pil()

    def close(self) -> None:
        if self.doc is not None:
            self.doc.close()
