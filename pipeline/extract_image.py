"""Images -> OCR text: every frame of a multi-page TIFF, any Pillow mode, bombs refused."""

from __future__ import annotations

import io

from PIL import Image, ImageSequence, UnidentifiedImageError

from gptforge.pipeline.ocr import OcrError, ocr_image, tesseract_problem
from gptforge.pipeline.records import Extraction, ExtractionError

MULTI_PAGE_FORMATS = ("TIFF", "MPO")


def extract_image(data: bytes, lang: str, timeout_s: float, max_pixels: int) -> Extraction:
    try:
        image = _open_header(data)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ExtractionError(f"unreadable image: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ExtractionError(
            f"image is {width}x{height} = {width * height} pixels, over max_image_pixels="
            f"{max_pixels} (decompression bomb?)"
        )
    frames = ImageSequence.Iterator(image) if image.format in MULTI_PAGE_FORMATS else [image]
    texts, warnings, pages = [], [], 0
    try:
        for frame in frames:
            pages += 1
            if frame.size[0] * frame.size[1] > max_pixels:
                raise ExtractionError(f"frame {pages} is over max_image_pixels={max_pixels}")
            frame.load()
            try:
                texts.append(ocr_image(frame, lang, timeout_s))
            except OcrError as exc:
                alone = image.format not in MULTI_PAGE_FORMATS
                if pages == 1 and (alone or tesseract_problem()):  # no frame will read either
                    raise ExtractionError(str(exc)) from exc
                warnings.append(f"frame {pages}: {exc}")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        if not texts:
            raise ExtractionError(f"truncated or corrupt image ({exc})") from exc
        warnings.append(f"frame {pages}: truncated or corrupt ({exc}); earlier frames kept")
    return Extraction(
        text="\n\n".join(t for t in texts if t),
        extractor=f"image:{(image.format or 'unknown').lower()}+tesseract",
        pages=pages,
        ocr_pages=pages,
        warnings=warnings,
    )


def _open_header(data: bytes) -> Image.Image:
    """Read only the header, with Pillow's own pixel limit (89 M, a warning, then an error at
    twice that) off: `max_image_pixels` is checked on the size right after, in its own words,
    before any pixel is decoded."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(io.BytesIO(data))
    finally:
        Image.MAX_IMAGE_PIXELS = limit
