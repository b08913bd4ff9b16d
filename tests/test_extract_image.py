"""Image extraction and OCR page preparation: every common mode and codec, multi-frame
TIFF, bombs, damage, and tesseract's own failures."""

from __future__ import annotations

import io

import docgen
import numpy as np
import pytest
from extract_helpers import (
    LANG,
    MAX_PIXELS,
    OCR_TIMEOUT,
    assert_reads,
    image,
)
from PIL import Image

from gptforge.pipeline import ocr
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.extract_image import extract_image
from gptforge.pipeline.ocr import (
    MAX_OCR_PIXELS,
    MIN_OCR_HEIGHT,
    OcrError,
    check_languages,
    ocr_image,
    prepare,
)
from gptforge.pipeline.records import ExtractionError

# --- images -----------------------------------------------------------------------------------

IMAGE_TEXT = "Walrus orchestra tuning violins"
FRAMES = ["First frame penguin", "Second frame giraffe", "Third frame hedgehog"]


@pytest.fixture(scope="module")
def text_image() -> Image.Image:
    return docgen.render_text_image(IMAGE_TEXT, size=(900, 200))


def transparent(img: Image.Image) -> Image.Image:
    """Black text on a fully transparent *black* background: read without compositing on
    white, it is black on black."""
    rgba = Image.new("RGBA", img.size, (0, 0, 0, 0))
    rgba.putalpha(img.point(lambda v: 255 - v))
    return rgba


def transparent_palette(img: Image.Image) -> Image.Image:
    """The same as a palette image: index 0 (text) and index 1 (background, marked transparent
    by tRNS) are both black in the palette."""
    indices = img.point(lambda v: 0 if v < 128 else 1)
    palette = Image.frombytes("P", img.size, indices.tobytes())
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 1
    return palette


def sixteen_bit(img: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(img).astype(np.uint16) * 257)


IMAGE_VARIANTS = {
    "png-alpha": lambda img: docgen.image_bytes(transparent(img), "PNG"),
    "png-palette": lambda img: docgen.image_bytes(
        img.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG"
    ),
    "png-palette-transparency": lambda img: docgen.image_bytes(
        transparent_palette(img), "PNG", transparency=1
    ),
    "png-1bit": lambda img: docgen.image_bytes(img.convert("1"), "PNG"),
    "png-16bit": lambda img: docgen.image_bytes(sixteen_bit(img), "PNG"),
    "jpeg-cmyk": lambda img: docgen.image_bytes(img.convert("CMYK"), "JPEG", quality=90),
    "gif": lambda img: docgen.image_bytes(img, "GIF"),
    "webp": lambda img: docgen.image_bytes(img, "WEBP", lossless=True),
    "bmp": lambda img: docgen.image_bytes(img.convert("RGB"), "BMP"),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(IMAGE_VARIANTS))
def test_images_in_every_common_mode_and_format_are_ocrd(text_image: Image.Image, variant: str):
    data = IMAGE_VARIANTS[variant](text_image)
    extraction = image(data)
    assert_reads(extraction.text, IMAGE_TEXT)
    assert (extraction.pages, extraction.ocr_pages) == (1, 1)
    expected_format = variant.split("-")[0]
    assert extraction.extractor == f"image:{expected_format}+tesseract"


@pytest.mark.parametrize("variant", ["png-alpha", "png-palette-transparency"])
def test_the_transparent_test_images_are_unreadable_without_compositing(text_image, variant):
    """Guards the transparency tests above: dropping the alpha makes them black on black."""
    flattened = Image.open(io.BytesIO(IMAGE_VARIANTS[variant](text_image))).convert("L")
    assert np.asarray(flattened).max() == 0


@pytest.fixture(scope="module")
def tiff_frames() -> bytes:
    frames = [docgen.render_text_image(text, size=(900, 200)) for text in FRAMES]
    return docgen.image_bytes(frames[0], "TIFF", save_all=True, append_images=frames[1:])


@pytest.mark.slow
def test_every_frame_of_a_multi_page_tiff_is_ocrd(tiff_frames: bytes):
    extraction = image(tiff_frames)
    texts = extraction.text.split("\n\n")
    assert len(texts) == 3
    for text, expected in zip(texts, FRAMES, strict=True):
        assert_reads(text, expected, at_least=0.66)
    assert (extraction.pages, extraction.ocr_pages) == (3, 3)
    assert extraction.extractor == "image:tiff+tesseract"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_tiff_with_a_truncated_last_frame_keeps_the_frames_before_it():
    frames = [docgen.render_text_image(text, size=(900, 200)) for text in FRAMES[:2]]
    data = docgen.image_bytes(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    extraction = image(data[:-2000])
    assert_reads(extraction.text, FRAMES[0])
    assert "giraffe" not in extraction.text.lower()
    assert len(extraction.warnings) == 1
    assert extraction.warnings[0].startswith("frame 2: truncated or corrupt")


@pytest.mark.slow
def test_an_upside_down_scan_is_read(text_image: Image.Image):
    upside_down = docgen.image_bytes(text_image.rotate(180), "PNG")
    assert_reads(image(upside_down).text, IMAGE_TEXT)


def test_a_page_that_reads_confidently_skips_orientation_detection(
    text_image: Image.Image, monkeypatch: pytest.MonkeyPatch
):
    def no_osd(*_: object) -> int:
        raise AssertionError("OSD costs half an OCR pass; a clean page must not pay for it")

    monkeypatch.setattr(ocr, "_orientation", no_osd)
    assert_reads(ocr_image(text_image, LANG, OCR_TIMEOUT), IMAGE_TEXT)


# --- images that must not be loaded -----------------------------------------------------------


def test_an_image_whose_header_claims_a_huge_size_is_refused_unloaded():
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ExtractionError) as info:
        image(docgen.png_claiming_size(20_000, 20_000))
    assert str(info.value) == (
        "image is 20000x20000 = 400000000 pixels, over max_image_pixels=180000000 "
        "(decompression bomb?)"
    )
    assert pillow_limit == Image.MAX_IMAGE_PIXELS, "Pillow's global limit is left as it was"


def test_an_image_over_max_image_pixels_is_refused(text_image: Image.Image):
    data = docgen.image_bytes(text_image, "PNG")
    with pytest.raises(ExtractionError) as info:
        image(data, max_pixels=100_000)
    assert str(info.value) == (
        "image is 900x200 = 180000 pixels, over max_image_pixels=100000 (decompression bomb?)"
    )


def test_an_image_under_max_image_pixels_is_not_refused_as_a_bomb():
    # 95 M pixels, under the 180 M default; no pixel data, so loading it fails as truncated
    with pytest.raises(ExtractionError) as info:
        image(docgen.png_claiming_size(10_000, 9_500), max_pixels=180_000_000)
    assert "truncated" in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_image_is_an_extraction_error(text_image: Image.Image, fmt: str):
    data = docgen.image_bytes(text_image, fmt)
    with pytest.raises(ExtractionError, match=r"^truncated or corrupt image \(image file is"):
        image(data[: len(data) // 2])


def test_bytes_that_are_no_image_are_an_extraction_error():
    with pytest.raises(ExtractionError, match="^unreadable image: "):
        image(b"GIF89a" + b"\x00" * 3)


# --- preparing pages for tesseract ------------------------------------------------------------


def test_a_huge_image_is_downscaled_to_the_ocr_pixel_budget():
    prepared = prepare(Image.new("L", (8_000, 6_000), 255))
    width, height = prepared.size
    assert width * height <= MAX_OCR_PIXELS
    assert width * height > 0.95 * MAX_OCR_PIXELS
    assert abs(width / height - 4 / 3) < 0.01
    assert prepared.mode == "L"


def test_a_small_image_is_upscaled_for_ocr():
    prepared = prepare(Image.new("L", (500, 100), 255))
    assert prepared.size == (1000, 200)
    assert prepare(Image.new("L", (500, MIN_OCR_HEIGHT), 255)).size == (500, MIN_OCR_HEIGHT)


def test_transparency_is_composited_on_white(text_image: Image.Image):
    prepared = prepare(transparent(text_image))
    assert prepared.mode == "L"
    pixels = np.asarray(prepared)
    assert pixels.max() == 255, "the transparent background became white"
    assert pixels.min() < 64, "the opaque text stayed dark"


def test_sixteen_bit_greyscale_keeps_its_contrast(text_image: Image.Image):
    pixels = np.asarray(prepare(sixteen_bit(text_image)))
    assert (pixels.min(), pixels.max()) == (0, 255)


# --- tesseract's own failures ----------------------------------------------------------------


def test_an_image_slower_than_ocr_timeout_is_an_extraction_error(text_image: Image.Image):
    data = docgen.image_bytes(text_image, "PNG")
    with pytest.raises(ExtractionError, match=r"took longer than ocr_timeout_s=0\.01$"):
        extract_image(data, LANG, 0.01, MAX_PIXELS)


def test_a_missing_language_model_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="no model for xyz") as info:
        check_languages("eng+xyz")
    assert info.value.field == "ocr_lang"
    check_languages("eng")


def test_a_tesseract_failure_is_an_ocr_error(text_image: Image.Image):
    with pytest.raises(OcrError, match="^tesseract failed: "):
        ocr_image(text_image, "xyz", OCR_TIMEOUT)


def test_a_tesseract_failure_reports_tesseracts_own_message(text_image: Image.Image):
    with pytest.raises(OcrError) as info:
        ocr_image(text_image, "xyz", OCR_TIMEOUT)
    assert str(info.value).startswith("tesseract failed: Error opening data file")
