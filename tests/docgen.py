"""Generate test documents at test time: text PDFs, scans (Flate, JPEG and CCITT G4), rotated
and vector-curve pages, encrypted and damaged PDFs, and images of text. Nothing is downloaded:
the only font is DejaVu (the system's fonts-dejavu-core, else the copy matplotlib bundles).

Scans are small (4 x 2 inch pages at 300 dpi, 1200 x 600 pixels) with large type so that
tesseract reads them reliably and in well under a second each.
"""

from __future__ import annotations

import io
import struct
import textwrap
import zlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter
from pypdf.generic import NameObject
from reportlab.lib.utils import ImageReader, simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas


def _font(name: str) -> Path:
    system = Path("/usr/share/fonts/truetype/dejavu") / name
    if system.is_file():
        return system
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


DEJAVU_SANS = _font("DejaVuSans.ttf")  # has the U+FB02 'ﬂ' ligature glyph
DEJAVU_SERIF = _font("DejaVuSerif.ttf")
PDF_FONT = "DejaVuSans"

SCAN_DPI = 300
SCAN_PAGE = (4 * 72, 2 * 72)  # points: a 4 x 2 inch page, 1200 x 600 pixels at 300 dpi
TEXT_PAGE = (6.5 * 72, 3 * 72)
FL_LIGATURE = "\ufb02"  # LATIN SMALL LIGATURE FL; NFKC turns it into "fl"


def _register_font() -> str:
    if PDF_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(PDF_FONT, str(DEJAVU_SANS)))
    return PDF_FONT


def _draw_text(pdf: canvas.Canvas, text: str, size: tuple[float, float], font_size: float) -> None:
    """Word-wrapped lines from the top left corner of the page, as a real text layer."""
    font = _register_font()
    width, height = size
    margin = 0.4 * 72
    pdf.setFont(font, font_size)
    y = height - margin - font_size
    for paragraph in text.split("\n"):
        for line in simpleSplit(paragraph, font, font_size, width - 2 * margin) or [""]:
            pdf.drawString(margin, y, line)
            y -= font_size * 1.3


def _draw_scan(pdf: canvas.Canvas, image: Image.Image, size: tuple[float, float]) -> None:
    """An image covering the whole page, the way a scanner writes one."""
    pdf.drawImage(ImageReader(image), 0, 0, width=size[0], height=size[1])


def text_pdf(path: Path, pages: Sequence[str], font_size: float = 11) -> Path:
    """A PDF with a real text layer (DejaVu Sans, which has the 'ﬂ' ligature glyph), one page
    per string."""
    Path(path).write_bytes(text_pdf_bytes(pages, font_size))
    return Path(path)


def text_pdf_bytes(pages: Sequence[str], font_size: float = 11) -> bytes:
    """`text_pdf`, in memory."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=TEXT_PAGE)
    for text in pages:
        _draw_text(pdf, text, TEXT_PAGE, font_size)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def render_text_image(
    text: str,
    size: tuple[int, int] = (1200, 600),
    font_size: int = 40,
    mode: str = "L",
) -> Image.Image:
    """Black DejaVu Serif on white, word-wrapped to the width: what a clean scan looks like."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(DEJAVU_SERIF), font_size)
    margin = font_size
    chars_per_line = max(8, int((size[0] - 2 * margin) / (font_size * 0.6)))
    y = margin
    for paragraph in text.split("\n"):
        for line in textwrap.wrap(paragraph, chars_per_line) or [""]:
            draw.text((margin, y), line, fill=0, font=font)
            y += int(font_size * 1.4)
    return image.convert(mode) if mode != "L" else image


def scan_page_image(text: str) -> Image.Image:
    """The 1200 x 600 pixel image of one 4 x 2 inch scanned page."""
    width, height = (round(s * SCAN_DPI / 72) for s in SCAN_PAGE)
    return render_text_image(text, size=(width, height))


def scanned_pdf(path: Path, texts: Sequence[str]) -> Path:
    """Image-only pages (no text layer at all), one per text, Flate-compressed by reportlab."""
    pdf = canvas.Canvas(str(path), pagesize=SCAN_PAGE)
    for text in texts:
        _draw_scan(pdf, scan_page_image(text), SCAN_PAGE)
        pdf.showPage()
    pdf.save()
    return Path(path)


def pillow_scanned_pdf(path: Path, texts: Sequence[str], bilevel: bool = False) -> Path:
    """Image-only pages written by Pillow: greyscale pages become JPEG (/DCTDecode), 1-bit
    pages CCITT Group 4 (/CCITTFaxDecode), the two codecs scanners use most."""
    images = [scan_page_image(text) for text in texts]
    if bilevel:
        images = [image.convert("1") for image in images]
    images[0].save(path, "PDF", resolution=SCAN_DPI, save_all=True, append_images=images[1:])
    return Path(path)


def mixed_pdf(path: Path, text: str, scan_text: str) -> Path:
    """Page 1 has a text layer; page 2 is a scan."""
    pdf = canvas.Canvas(str(path), pagesize=SCAN_PAGE)
    _draw_text(pdf, text, SCAN_PAGE, 11)
    pdf.showPage()
    _draw_scan(pdf, scan_page_image(scan_text), SCAN_PAGE)
    pdf.showPage()
    pdf.save()
    return Path(path)


def rotated_scan_pdf(path: Path, text: str, rotate_key: int = 90) -> Path:
    """A scan whose image is stored turned.

    With `rotate_key` (90, 180 or 270) the image is stored turned by that many degrees
    counter-clockwise and the page says /Rotate `rotate_key` (clockwise), so a viewer and
    pdfium show it upright, as many scanners write them. With `rotate_key=0` the image is
    stored sideways and nothing says so: only orientation detection can read it.
    """
    angle = rotate_key or 90
    turned = scan_page_image(text).rotate(angle, expand=True)
    size = SCAN_PAGE if angle == 180 else (SCAN_PAGE[1], SCAN_PAGE[0])
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=size)
    _draw_scan(pdf, turned, size)
    pdf.showPage()
    pdf.save()
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(buffer.getvalue())))
    if rotate_key:
        writer.pages[0].rotate(rotate_key)
    writer.write(path)
    return Path(path)


def vector_text_pdf(path: Path, lines: Sequence[str], font_size: float = 28) -> Path:
    """Text drawn as filled Bézier outlines (DejaVu Sans glyph shapes via fontTools): it looks
    like text, but the page has no text layer and no font at all."""
    from fontTools.pens.basePen import BasePen
    from fontTools.ttLib import TTFont as FontFile

    class CanvasPen(BasePen):
        """Replays a glyph's outline on a reportlab canvas path (quadratics become cubics)."""

        def __init__(self, glyph_set, path):
            super().__init__(glyph_set)
            self.path = path

        def _moveTo(self, p):
            self.path.moveTo(*p)

        def _lineTo(self, p):
            self.path.lineTo(*p)

        def _curveToOne(self, p1, p2, p3):
            self.path.curveTo(*p1, *p2, *p3)

        def _closePath(self):
            self.path.close()

    font = FontFile(str(DEJAVU_SANS))
    glyphs, cmap, advances = font.getGlyphSet(), font.getBestCmap(), font["hmtx"].metrics
    scale = font_size / font["head"].unitsPerEm
    names = [[cmap.get(ord(char), ".notdef") for char in line] for line in lines]
    margin = 0.25 * 72
    width = max(sum(advances[name][0] for name in line) for line in names) * scale
    size = (width + 2 * margin, len(lines) * font_size * 1.35 + 2 * margin)
    pdf = canvas.Canvas(str(path), pagesize=size)
    pdf.setFillColorRGB(0, 0, 0)
    y = size[1] - margin - font_size
    for line in names:
        x = margin
        for name in line:
            outline = pdf.beginPath()
            glyphs[name].draw(CanvasPen(glyphs, outline))
            pdf.saveState()
            pdf.translate(x, y)
            pdf.scale(scale, scale)
            pdf.drawPath(outline, stroke=0, fill=1)
            pdf.restoreState()
            x += advances[name][0] * scale
        y -= font_size * 1.35
    pdf.showPage()
    pdf.save()
    return Path(path)


def encrypted_pdf(
    path: Path,
    user_password: str,
    owner_password: str = "owner-secret",
    algorithm: str = "AES-256",
    pages: Sequence[str] = (),
    source: Path | None = None,
) -> Path:
    """An encrypted copy of `source` (default: a one-page text PDF). An empty `user_password`
    means anyone may open it (the owner password only guards permissions), as with many
    "protected" PDFs in the wild."""
    plain = (
        Path(source).read_bytes()
        if source
        else text_pdf_bytes(pages or ["This protected report lists the annual harvest figures."])
    )
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(plain)))
    writer.encrypt(user_password, owner_password, algorithm=algorithm)
    writer.write(path)
    return Path(path)


def blank_pdf(path: Path, pages: int = 1) -> Path:
    """Empty white pages: nothing to read and nothing worth OCR."""
    pdf = canvas.Canvas(str(path), pagesize=SCAN_PAGE)
    for _ in range(pages):
        pdf.showPage()
    pdf.save()
    return Path(path)


def with_unknown_filter(data: bytes, page_index: int = 0) -> bytes:
    """The PDF with one page's content stream claiming a filter no reader implements, as a
    damaged or exotic file might: the rest of the document stays valid."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    contents = writer.pages[page_index]["/Contents"].get_object()
    contents[NameObject("/Filter")] = NameObject("/NoSuchDecode")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def image_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    """The image encoded as `fmt` with Pillow's save `options`."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` 1-bit pixels, with no pixel data: what
    a decompression bomb looks like to anything that reads headers first."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
