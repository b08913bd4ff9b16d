"""Typed ingestion settings, validated once where they enter (CLI, flow, notebook)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from pipeline.workers import default_workers

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


class ConfigError(ValueError):
    """A setting is out of its allowed range; the message names the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class IngestConfig:
    """Everything that decides what is read and how; the extraction-relevant part keys the cache."""

    sources: tuple[Path, ...]
    out: Path
    val_fraction: float = 0.05
    ocr_lang: str = "eng"
    ocr_dpi: int = 300
    ocr_timeout_s: float = 120.0
    file_timeout_s: float = 900.0
    workers: int = field(default_factory=default_workers)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    default_excludes: bool = True
    include_hidden: bool = False
    ignore_files: bool = True
    follow_symlinks: FollowSymlinks = "inside"
    pdf_passwords: tuple[str, ...] = ()
    max_file_mb: float = 512.0
    max_image_pixels: int = 180_000_000
    shard_tokens: int = 100_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(Path(s).expanduser() for s in self.sources))
        object.__setattr__(self, "out", Path(self.out).expanduser())
        for name in ("include", "exclude", "pdf_passwords"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            else:
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        if not self.sources:
            raise ConfigError("sources", "give at least one file or directory")
        for src in self.sources:
            if not src.exists() and not src.is_symlink():
                raise ConfigError("sources", f"{src} does not exist")
        if self.follow_symlinks not in get_args(FollowSymlinks):
            raise ConfigError(
                "follow_symlinks", f"must be 'inside' or 'all', got {self.follow_symlinks!r}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        if not 1 <= self.workers <= 512:
            raise ConfigError("workers", f"must be in [1, 512], got {self.workers}")
        if not 72 <= self.ocr_dpi <= 1200:
            raise ConfigError("ocr_dpi", f"must be in [72, 1200], got {self.ocr_dpi}")
        for name in ("ocr_timeout_s", "file_timeout_s", "max_file_mb"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        if self.max_image_pixels < 1_000_000:
            raise ConfigError(
                "max_image_pixels", f"must be >= 1000000, got {self.max_image_pixels}"
            )
        if not 1024 <= self.shard_tokens <= 2**31 - 1:
            raise ConfigError(
                "shard_tokens", f"must be in [1024, 2147483647], got {self.shard_tokens}"
            )
        if not self.ocr_lang or not all(part.isidentifier() for part in self.ocr_lang.split("+")):
            raise ConfigError(
                "ocr_lang",
                f"expected tesseract codes like 'eng' or 'eng+deu', got {self.ocr_lang!r}",
            )

    @property
    def excludes(self) -> tuple[str, ...]:
        return (DEFAULT_EXCLUDES if self.default_excludes else ()) + self.exclude

    def extraction_key(self) -> str:
        """The settings that change extracted text; part of every cache key."""
        return f"ocr={self.ocr_lang}@{self.ocr_dpi}"
