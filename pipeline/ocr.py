"""Tesseract OCR on prepared page images: one single-threaded tesseract per worker process.

pytesseract is imported on first use: it imports pandas (~0.4 s), which text-only ingests and
the planning process never need.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from functools import lru_cache
from types import ModuleType
from typing import TypeVar

from PIL import Image, ImageOps

from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.textdecode import normalize_text

NOT_INSTALLED = "tesseract is not installed (apt-get install tesseract-ocr)"
PROBE_TIMEOUT_S = 10.0
MAX_OCR_PIXELS = 5000 * 5000
MIN_OCR_HEIGHT = 600
# Mean word confidence (0-100) under which a page's orientation is checked. Clean text reads
# at ~95; an upside-down page that --psm 1 did not turn reads as garbage at ~25-50.
LOW_CONFIDENCE = 70.0
T = TypeVar("T")


class OcrError(RuntimeError):
    pass


class OcrTimeoutError(OcrError):
    pass


def _pytesseract() -> ModuleType:
    import pytesseract

    return pytesseract


def _probe(flag: str) -> str:
    """stdout of `tesseract <flag>` within PROBE_TIMEOUT_S: a missing or hanging tesseract
    fails a file in seconds instead of holding a worker until file_timeout_s."""
    try:
        done = subprocess.run(
            ["tesseract", flag],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise OcrError(
            f"tesseract did not answer `tesseract {flag}` within {PROBE_TIMEOUT_S:g} s"
        ) from exc
    except OSError as exc:
        raise OcrError(NOT_INSTALLED) from exc
    if done.returncode != 0:
        raise OcrError(f"`tesseract {flag}` failed (exit code {done.returncode})")
    return done.stdout


@lru_cache(maxsize=1)
def tesseract_problem() -> str | None:
    """Why tesseract cannot run here, or None; asked once per process.

    pytesseract runs `tesseract --version` before its first OCR call, with no time limit;
    probing it here first, with one, keeps a hanging binary from hanging a worker.
    """
    try:
        _probe("--version")
    except OcrError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=1)
def installed_languages() -> frozenset[str]:
    """`tesseract --list-langs`, run directly so that checking settings imports nothing."""
    lines = _probe("--list-langs").splitlines()
    return frozenset(line.strip() for line in lines[1:] if line.strip())


def check_languages(lang: str) -> str | None:
    """Refuse OCR languages tesseract has no model for (a settings error, ConfigError).

    A missing or broken tesseract is no settings error: text, code and born-digital PDFs
    ingest without it. Its reason is returned (None when OCR works) for the caller to show;
    images and scanned pages then each fail with it.
    """
    try:
        installed = installed_languages()
    except OcrError as exc:
        return str(exc)
    missing = set(lang.split("+")) - installed
    if missing:
        have = ", ".join(sorted(installed - {"osd"}))
        raise ConfigError(
            "ocr_lang",
            f"tesseract has no model for {', '.join(sorted(missing))} "
            f"(installed: {have}; apt-get install tesseract-ocr-<lang>)",
        )
    return None


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
    """OCR one page within `timeout_s` in all.

    --psm 1 turns sideways pages itself, and upside-down ones when they hold enough text; a
    page that still reads with low confidence gets tesseract's orientation detection (OSD,
    about half an OCR pass) and, if it is turned, a second pass, whichever reads better.
    """
    problem = tesseract_problem()
    if problem:
        raise OcrError(problem)
    deadline = time.monotonic() + timeout_s
    page = prepare(image)
    text, confidence = _recognise(page, lang, deadline, timeout_s)
    if confidence < LOW_CONFIDENCE:
        angle = _orientation(page, deadline, timeout_s)
        if angle:
            turned = page.rotate(-angle, expand=True, fillcolor=255)
            turned_text, turned_confidence = _recognise(turned, lang, deadline, timeout_s)
            if turned_confidence > confidence:
                text = turned_text
    return normalize_text(text, "NFKC").strip()


def _recognise(
    page: Image.Image, lang: str, deadline: float, timeout_s: float
) -> tuple[str, float]:
    """The page's text (lines, blank lines between paragraphs) and mean word confidence."""
    pytesseract = _pytesseract()
    data = _call(
        lambda remaining: pytesseract.image_to_data(
            page,
            lang=lang,
            config="--psm 1",
            timeout=remaining,
            output_type=pytesseract.Output.DICT,
        ),
        deadline,
        timeout_s,
    )
    parts: list[str] = []
    confidences: list[float] = []
    previous: tuple[int, int, int] | None = None
    for i, word in enumerate(data["text"]):
        if data["level"][i] != 5 or not word.strip():
            continue
        line = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        if previous is not None:
            parts.append(" " if line == previous else "\n" if line[:2] == previous[:2] else "\n\n")
        parts.append(word)
        confidences.append(float(data["conf"][i]))
        previous = line
    return "".join(parts), sum(confidences) / len(confidences) if confidences else 100.0


def _orientation(page: Image.Image, deadline: float, timeout_s: float) -> int:
    """Degrees clockwise that would turn the page upright; 0 when OSD cannot tell."""
    pytesseract = _pytesseract()
    try:
        osd = _call(
            lambda remaining: pytesseract.image_to_osd(
                page, config="--psm 0", timeout=remaining, output_type=pytesseract.Output.DICT
            ),
            deadline,
            timeout_s,
        )
    except OcrTimeoutError:
        raise
    except OcrError:
        return 0  # too few characters to tell, or no osd model: keep the first reading
    return int(osd.get("rotate", 0)) % 360


def _call(run: Callable[[float], T], deadline: float, timeout_s: float) -> T:
    """Run one tesseract call with what is left of the page's time; failures as OcrError."""
    pytesseract = _pytesseract()
    remaining = deadline - time.monotonic()
    timed_out = OcrTimeoutError(f"OCR of one page took longer than ocr_timeout_s={timeout_s:g}")
    if remaining <= 0:
        raise timed_out
    try:
        return run(remaining)
    except pytesseract.TesseractError as exc:  # a RuntimeError too: it must come first
        raise OcrError(f"tesseract failed: {exc.message.strip()}") from exc
    except RuntimeError as exc:
        if "timeout" in str(exc).lower():
            raise timed_out from exc
        raise OcrError(f"tesseract failed: {exc}") from exc
    except OSError as exc:
        raise OcrError(f"tesseract could not run: {exc}") from exc
