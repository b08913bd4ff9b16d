"""The plain records that travel between pipeline steps (datatrove-style: data, no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gptforge.pipeline.names import display_path


class Kind(StrEnum):
    PDF = "pdf"
    IMAGE = "image"
    CODE = "code"
    TEXT = "text"
    NOTEBOOK = "notebook"
    BINARY = "binary"
    UNKNOWN = "unknown"


class Status(StrEnum):
    OK = "ok"
    EMPTY = "empty"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    ERROR = "error"


class ExtractionError(RuntimeError):
    """The file cannot be read; the message is the reason users see in the manifest."""


@dataclass
class FoundFile:
    """A file discovery saw: where it is and, if it must not be read, why."""

    path: str
    relpath: str
    root: str
    size: int = 0
    skip_reason: str | None = None
    error_reason: str | None = None


@dataclass
class Extraction:
    """What an extractor got out of one file."""

    text: str
    extractor: str
    pages: int = 0
    ocr_pages: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class FileRecord:
    """One line of the manifest: every discovered file gets exactly one.

    `path` opens the file (a name that is not UTF-8 holds lone surrogates, see
    pipeline.names); `display` is set only when the path must be escaped to be printed."""

    path: str
    relpath: str
    root: str
    size: int
    display: str | None = field(default=None, init=False)
    sha256: str | None = None
    kind: str = Kind.UNKNOWN
    status: str = Status.OK
    reason: str | None = None
    extractor: str | None = None
    pages: int = 0
    ocr_pages: int = 0
    chars: int = 0
    tokens: int = 0
    doc_sha256: str | None = None
    duplicate_of: str | None = None
    split: str | None = None
    shard: str | None = None
    offset: int | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.display = None if self.path.isprintable() else display_path(self.path)

    def to_json(self) -> dict[str, Any]:
        """A copy of the fields; `asdict` would deep-copy them all, ~10x slower per record."""
        return {**vars(self), "warnings": list(self.warnings)}
