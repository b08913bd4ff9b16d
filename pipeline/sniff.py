"""Decide what a file is from its first bytes first and its name second.

Names lie (a `.pdf` that is an HTML error page, a `.py` full of NUL bytes); magic bytes
rarely do. The verdict is a Kind plus, for files we will not read, the reason why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from gptforge.pipeline.records import Kind
from gptforge.pipeline.signatures import binary_format, image_format
from gptforge.pipeline.textdecode import is_text

SNIFF_BYTES = 8192

PDF_HEADER_WINDOW = 1024

CODE_EXTENSIONS = frozenset(
    [
        ".py",
        ".pyi",
        ".pyx",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".cxx",
        ".hpp",
        ".hh",
        ".cu",
        ".cuh",
        ".m",
        ".mm",
        ".java",
        ".kt",
        ".kts",
        ".scala",
        ".groovy",
        ".go",
        ".rs",
        ".swift",
        ".js",
        ".mjs",
        ".cjs",
        ".jsx",
        ".ts",
        ".tsx",
        ".vue",
        ".svelte",
        ".rb",
        ".php",
        ".pl",
        ".pm",
        ".lua",
        ".r",
        ".jl",
        ".sh",
        ".bash",
        ".zsh",
        ".fish",
        ".ps1",
        ".bat",
        ".cmd",
        ".sql",
        ".hs",
        ".ml",
        ".mli",
        ".fs",
        ".fsx",
        ".ex",
        ".exs",
        ".erl",
        ".clj",
        ".cljs",
        ".dart",
        ".zig",
        ".nim",
        ".v",
        ".sv",
        ".vhd",
        ".asm",
        ".s",
        ".cs",
        ".vb",
        ".f",
        ".f90",
        ".cmake",
        ".mk",
        ".gradle",
        ".tf",
        ".proto",
        ".thrift",
        ".graphql",
        ".css",
        ".scss",
        ".sass",
        ".less",
        ".html",
        ".htm",
        ".xml",
        ".xsl",
        ".json",
        ".jsonc",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".conf",
        ".properties",
        ".dockerfile",
        ".nix",
        ".el",
        ".vim",
        ".tex",
        ".sty",
        ".bib",
    ]
)
CODE_NAMES = frozenset(
    [
        "Makefile",
        "GNUmakefile",
        "makefile",
        "Dockerfile",
        "Containerfile",
        "CMakeLists.txt",
        "Rakefile",
        "Gemfile",
        "Jenkinsfile",
        "Vagrantfile",
        "Justfile",
        "justfile",
        "BUILD",
        "WORKSPACE",
        "Procfile",
        "Snakefile",
    ]
)
IMAGE_EXTENSIONS = frozenset(
    [".png", ".jpg", ".jpeg", ".jpe", ".gif", ".tif", ".tiff", ".bmp", ".webp"]
)
CLAIMED_FORMATS = {".pdf": "PDF", **{ext: "image" for ext in IMAGE_EXTENSIONS}}


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    detail: str = ""
    skip_reason: str | None = None


def sniff(name: str, head: bytes) -> Verdict:
    """Classify a file by its name and its first SNIFF_BYTES bytes."""
    suffix = PurePosixPath(name).suffix.lower()
    if _is_pdf(head):
        return Verdict(Kind.PDF, "pdf")
    image = image_format(head)
    if image:
        return Verdict(Kind.IMAGE, image)
    binary = binary_format(head)
    if binary:
        return Verdict(Kind.BINARY, skip_reason=f"binary content: {binary}")
    if not head:
        return Verdict(_text_kind(name), "empty")
    if suffix in CLAIMED_FORMATS:
        what = "HTML" if _looks_like_html(head) else "text" if is_text(head) else "unknown bytes"
        return Verdict(
            Kind.UNKNOWN,
            skip_reason=f"named {suffix} but the content is {what}, not {CLAIMED_FORMATS[suffix]}"
            + (" (likely a failed download)" if what == "HTML" else ""),
        )
    if not is_text(head):
        return Verdict(Kind.BINARY, skip_reason="binary content (NUL or control bytes)")
    if suffix == ".ipynb":
        return Verdict(Kind.NOTEBOOK, "ipynb")
    return Verdict(_text_kind(name), suffix.lstrip(".") or "plain")


def _is_pdf(head: bytes) -> bool:
    """The header at offset 0, or within the first 1 KB after whitespace or binary junk (a
    MacBinary or mail-gateway prefix), as PDF readers accept; never after text, which only
    mentions it (`HEADER = b"%PDF-1.4"` in a script, a note about the format)."""
    at = head.find(b"%PDF-", 0, PDF_HEADER_WINDOW)
    if at <= 0:
        return at == 0
    prefix = head[:at]
    return not prefix.strip() or not is_text(prefix)


def _text_kind(name: str) -> Kind:
    path = PurePosixPath(name)
    if path.name in CODE_NAMES or path.suffix.lower() in CODE_EXTENSIONS:
        return Kind.CODE
    if path.name.startswith(("Dockerfile.", "Makefile.")):
        return Kind.CODE
    return Kind.TEXT


def _looks_like_html(head: bytes) -> bool:
    start = head[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in start
