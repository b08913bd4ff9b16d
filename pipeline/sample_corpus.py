"""The bundled sample corpus: gptforge's own source, plus a PDF and a scanned-looking image
typeset from its module docstrings. Built on demand from the installed packages alone (a wheel
has no README or docs/), so nothing third-party is shipped."""

from __future__ import annotations

import ast
import random
import shutil
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont
from reportlab.lib.pagesizes import A5
from reportlab.pdfgen import canvas

from gptforge.pipeline.config import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "model", "flows")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
# Only a directory holding this file is ever emptied: `gptforge sample .` must not wipe a folder.
MARKER = ".gptforge-sample"


def build_sample(out: Path) -> Path:
    """Write the sample corpus into `out` and return it. `out` may be missing, empty, or a
    sample written before (which is replaced); anything else is refused with a ConfigError."""
    out = Path(out)
    _make_room(out)
    (out / MARKER).write_text("written by `gptforge sample`, which may replace this folder\n")
    sources = [p for pkg in PACKAGES for p in sorted((PACKAGE_ROOT / pkg).glob("*.py"))]
    for path in sources:
        target = out / "source" / path.relative_to(PACKAGE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    prose = [p for path in sources for p in _paragraphs(_docstring(path))]
    (out / "documents").mkdir()
    scan = render_page(prose[8:11])
    write_pdf(out / "documents" / "gptforge-overview.pdf", prose[:8], scan)
    noisy_scan(render_page(prose[11:14])).save(out / "documents" / "scanned-page.png")
    return out


def _make_room(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError("out", f"{out} exists and is not a directory; give a new folder")
    if not out.exists():
        out.mkdir(parents=True)
    elif (out / MARKER).is_file():
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    elif any(out.iterdir()):
        raise ConfigError(
            "out", f"{out} is not empty and not a sample corpus; give a new or empty folder"
        )


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _paragraphs(markdown: str) -> list[str]:
    """Prose paragraphs of markdown-ish text (no code blocks, tables, headings or lists)."""
    out, in_code = [], False
    for block in markdown.split("\n\n"):
        if block.lstrip().startswith("```"):
            in_code = not in_code if block.count("```") % 2 else in_code
            continue
        text = " ".join(line.strip() for line in block.splitlines())
        if not in_code and text and not text.startswith(("#", "|", "`", "-", "<", "!")):
            out.append(text.replace("`", "").replace("**", ""))
    return out


def write_pdf(path: Path, paragraphs: list[str], scanned_page: Image.Image) -> None:
    """A born-digital page of text, then a page that is only a scanned image."""
    pdf = canvas.Canvas(str(path), pagesize=A5)
    width, height = A5
    text = pdf.beginText(36, height - 48)
    text.setFont("Times-Roman", 10)
    for paragraph in paragraphs:
        for line in textwrap.wrap(paragraph, 80):
            text.textLine(line)
        text.textLine("")
    pdf.drawText(text)
    pdf.showPage()
    image_path = path.with_suffix(".scan.png")
    scanned_page.save(image_path)
    pdf.drawImage(str(image_path), 0, 0, width=width, height=height)
    pdf.showPage()
    pdf.save()
    image_path.unlink()


def render_page(paragraphs: list[str], width: int = 1240, font_px: int = 30) -> Image.Image:
    """Paragraphs typeset onto a white page image (A5 at 150 dpi by default)."""
    font = (
        ImageFont.truetype(str(FONT), font_px) if FONT.exists() else ImageFont.load_default(font_px)
    )
    lines = [line for p in paragraphs for line in [*textwrap.wrap(p, 62), ""]]
    page = Image.new("L", (width, max(400, int(width * 1.41))), 255)
    draw = ImageDraw.Draw(page)
    y = 80
    for line in lines:
        if y > page.height - 80:
            break
        draw.text((80, y), line, font=font, fill=0)
        y += int(font_px * 1.5)
    return page


def noisy_scan(page: Image.Image, seed: int = 0) -> Image.Image:
    """Make a clean page look scanned: a slight skew, blur, grey paper and speckles."""
    rng = random.Random(seed)
    scan = page.rotate(0.7, resample=Image.BICUBIC, fillcolor=255, expand=True)
    scan = scan.filter(ImageFilter.GaussianBlur(0.6)).point(lambda v: 40 + v * 0.8)
    draw = ImageDraw.Draw(scan)
    for _ in range(400):
        x, y = rng.randrange(scan.width), rng.randrange(scan.height)
        draw.point((x, y), fill=rng.randrange(60, 200))
    return scan.convert("RGB")
