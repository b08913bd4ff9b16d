"""Typed ingestion settings, validated once where they enter (CLI, flow, notebook)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from gptforge.pipeline.settings import ConfigError, check_fields, check_output, setting
from gptforge.pipeline.workers import default_workers

# Version control and tool caches only. Not `build`, `dist`, `target` or `venv`: real source
# has those names (pip's _internal/operations/build, CPython's Lib/venv); a virtualenv is
# recognised by its pyvenv.cfg, and build output is usually in a .gitignore, which is honoured.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    "**/.git",
    "**/.hg",
    "**/.svn",
    "**/node_modules",
    "**/__pycache__",
    "**/.venv",
    "**/.tox",
    "**/.nox",
    "**/.mypy_cache",
    "**/.pytest_cache",
    "**/.ruff_cache",
    "**/*.egg-info",
)
FollowSymlinks = Literal["inside", "all"]


@dataclass(frozen=True)
class IngestConfig:
    """Everything that decides what is read and how; the extraction-relevant part keys the cache."""

    sources: tuple[Path, ...]
    out: Path
    val_fraction: float = setting(
        0.05, "share of documents held out for validation, by content hash", ge=0, lt=1
    )
    ocr_lang: str = setting("eng", "tesseract languages, e.g. eng+deu")
    ocr_dpi: int = setting(
        300, "resolution scanned PDF pages are rendered at for OCR", ge=72, le=1200
    )
    ocr_timeout_s: float = setting(120.0, "seconds tesseract may take per page", gt=0)
    file_timeout_s: float = setting(900.0, "seconds one file may take in all", gt=0)
    workers: int | None = setting(None, "extraction processes; unset: every core", ge=1, le=512)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    default_excludes: bool = setting(True, "leave out VCS and tool-cache directories")
    include_hidden: bool = setting(False, "also read dot-files and dot-directories")
    ignore_files: bool = setting(True, "honour .gitignore and .ignore files, as ripgrep does")
    follow_symlinks: FollowSymlinks = setting(
        "inside",
        "follow links that stay inside the sources, or all (never into /proc, /sys, /dev)",
        choices=get_args(FollowSymlinks),
    )
    pdf_passwords: tuple[str, ...] = ()
    max_file_mb: float = setting(512.0, "files larger than this are skipped", gt=0)
    max_image_pixels: int = setting(
        180_000_000, "images and rendered pages larger than this are not OCR'd", ge=1_000_000
    )
    shard_tokens: int = setting(100_000_000, "tokens per shard file", ge=1024, le=2**31 - 1)
    executor: str = setting(
        "local",
        "where extraction batches run: local (processes here), dask (a Dask cluster started on "
        "this machine) or dask://HOST:PORT (a running Dask scheduler)",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(Path(s).expanduser() for s in self.sources))
        object.__setattr__(self, "out", check_output("out", self.out))
        for name in ("include", "exclude", "pdf_passwords"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            else:
                object.__setattr__(self, name, tuple(value or ()))
        self._validate()
        if self.workers is None:
            object.__setattr__(self, "workers", default_workers())

    def _validate(self) -> None:
        check_fields(self)
        if not self.sources:
            raise ConfigError("sources", "give at least one file or directory")
        for src in self.sources:
            if not src.exists() and not src.is_symlink():
                raise ConfigError("sources", f"{src} does not exist")
        if not self.ocr_lang or not all(part.isidentifier() for part in self.ocr_lang.split("+")):
            raise ConfigError(
                "ocr_lang",
                f"expected tesseract codes like 'eng' or 'eng+deu', got {self.ocr_lang!r}",
            )
        scheduler_address(self.executor)

    @property
    def excludes(self) -> tuple[str, ...]:
        return (DEFAULT_EXCLUDES if self.default_excludes else ()) + self.exclude

    def extraction_key(self) -> str:
        """The settings that change extracted text; part of every cache key."""
        return f"ocr={self.ocr_lang}@{self.ocr_dpi},max_pixels={self.max_image_pixels}"


def scheduler_address(executor: str) -> str | None:
    """The Dask scheduler a `dask://HOST:PORT` (or `tcp://HOST:PORT`) executor names, as Dask
    spells it (`tcp://HOST:PORT`); None for `local` and `dask`, which start their own."""
    if executor in ("local", "dask"):
        return None
    expected = f"expected local, dask or dask://HOST:PORT, got {executor!r}"
    parts = urlsplit(executor)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("dask", "tcp") or not parts.hostname or not port or parts.path:
        raise ConfigError("executor", expected)
    return f"tcp://{parts.netloc}"
