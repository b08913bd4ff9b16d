"""The bundled sample corpus: gptforge's own docs and source, plus a PDF and a scanned-looking
image rendered from its own text. Built on demand, so nothing third-party is shipped."""

from __future__ import annotations

import random
import shutil
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont
from reportlab.lib.pagesizes import A5
from reportlab.pdfgen import canvas

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COPIED = ("README.md", "docs/*.md", "pipeline/*.py", "model/*.py", "flows/*.py")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")


def build_sample(out: Path) -> Path:
    """Write the sample corpus into `out` (replacing an older one) and return it."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "source").mkdir(parents=True)
    for pattern in COPIED:
        for path in sorted(PROJECT_ROOT.glob(pattern)):
            target = out / "source" / path.relative_to(PROJECT_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    readme = _paragraphs((PROJECT_ROOT / "README.md").read_text(encoding="utf-8"))
    design = _paragraphs(_first_doc_text())
    (out / "documents").mkdir()
    scan = render_page(design[:3])
    write_pdf(out / "documents" / "gptforge-overview.pdf", readme[:8], scan)
    noisy_scan(render_page(design[3:6] or design[:3])).save(out / "documents" / "scanned-page.png")
    return out


def _first_doc_text() -> str:
    docs = sorted((PROJECT_ROOT / "docs").glob("*.md"))
    return docs[0].read_text(encoding="utf-8") if docs else (PROJECT_ROOT / "README.md").read_text()


def _paragraphs(markdown: str) -> list[str]:
    """Prose paragraphs of a markdown file (no code blocks, tables or headings)."""
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
