"""Tesseract OCR on prepared page images: one single-threaded tesseract per worker process."""

from __future__ import annotations

import os
from functools import lru_cache

import pytesseract
from PIL import Image, ImageOps

from pipeline.config import ConfigError
from pipeline.textdecode import normalize_text

# Tesseract's own OpenMP threads slow it down when every core already runs one tesseract.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

MAX_OCR_PIXELS = 5000 * 5000
MIN_OCR_HEIGHT = 600


class OcrError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def installed_languages() -> frozenset[str]:
    try:
        return frozenset(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, OSError) as exc:
        raise OcrError("tesseract is not installed (apt-get install tesseract-ocr)") from exc


def check_languages(lang: str) -> None:
    missing = set(lang.split("+")) - installed_languages()
    if missing:
        have = ", ".join(sorted(installed_languages() - {"osd"}))
        raise ConfigError(
            "ocr_lang",
            f"tesseract has no model for {', '.join(sorted(missing))} "
            f"(installed: {have}; apt-get install tesseract-ocr-<lang>)",
        )


def prepare(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit grey on white, at a size tesseract reads well."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = ImageOps.autocontrast(image.convert("I").point(lambda v: v / 256).convert("L"))
    image = image.convert("L")
    width, height = image.size
    if width * height > MAX_OCR_PIXELS:
        scale = (MAX_OCR_PIXELS / (width * height)) ** 0.5
        image = image.resize(
            (max(1, int(width * scale)), max(1, int(height * scale))), Image.LANCZOS
        )
    elif 0 < height < MIN_OCR_HEIGHT and width * height * 4 <= MAX_OCR_PIXELS:
        image = image.resize((width * 2, height * 2), Image.LANCZOS)
    return image


def ocr_image(image: Image.Image, lang: str, timeout_s: float) -> str:
    """OCR one page; orientation is detected (a sideways scan still reads)."""
    try:
        text = pytesseract.image_to_string(
            prepare(image), lang=lang, config="--psm 1", timeout=timeout_s
        )
    except RuntimeError as exc:
        if "timeout" in str(exc).lower():
            raise OcrError(f"OCR of one page took longer than ocr_timeout_s={timeout_s:g}") from exc
        raise OcrError(f"tesseract failed: {exc}") from exc
    except pytesseract.TesseractError as exc:
        raise OcrError(f"tesseract failed: {exc.message.strip()}") from exc
    return normalize_text(text, "NFKC").strip()
