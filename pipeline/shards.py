"""llm.c token shards: 256 little-endian int32 of header (magic, version, token count), then
uint16 tokens. Every document is preceded by the end-of-text token.

Shards are written under temporary names; `commit` renames them into place only once all of
them are complete, so a final name never holds half a shard.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptforge.pipeline.errors import write_failure
from gptforge.pipeline.tokenizer import EOT_TOKEN

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
EOT_BYTES = EOT_TOKEN.to_bytes(2, "little")


class ShardFormatError(ValueError):
    pass


@dataclass
class Shard:
    file: str
    tokens: int
    sha256: str
    tmp: Path | None = None


class ShardWriter:
    """Packs documents, whole, into `<split>_NNNNNN.bin` shards of at most `max_tokens`."""

    def __init__(self, directory: Path, split: str, max_tokens: int):
        self.directory, self.split, self.max_tokens = Path(directory), split, max_tokens
        self.shards: list[Shard] = []
        self._fh = None
        self._count = 0

    def add(self, tokens: np.ndarray) -> tuple[str, int]:
        """Append EOT + tokens; returns (shard file name, offset of the EOT token)."""
        needed = len(tokens) + 1
        with self._writing():
            if self._fh is None or (self._count and self._count + needed > self.max_tokens):
                self._next_shard()
            offset = self._count
            self._fh.write(EOT_BYTES)
            self._fh.write(np.ascontiguousarray(tokens, dtype="<u2").data)
        self._count += needed
        return self.shards[-1].file, offset

    def close(self) -> list[Shard]:
        with self._writing():
            self._finish_shard()
        return self.shards

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write (a full disk) is one `RunError` naming the shard being written."""
        try:
            yield
        except OSError as exc:
            where = self.shards[-1].tmp if self.shards else self.directory
            raise write_failure(where, exc) from exc

    def _next_shard(self) -> None:
        self._finish_shard()
        name = f"{self.split}_{len(self.shards):06d}.bin"
        tmp = self.directory / f".{name}.{os.getpid()}.tmp"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fh = open(tmp, "wb")  # noqa: SIM115 - spans many add() calls
        self._fh.write(bytes(HEADER_BYTES))
        self._count = 0
        self.shards.append(Shard(file=name, tokens=0, sha256="", tmp=tmp))

    def _finish_shard(self) -> None:
        if self._fh is None:
            return
        self._fh.seek(0)
        self._fh.write(header(self._count).tobytes())
        self._fh.close()
        self._fh = None
        shard = self.shards[-1]
        shard.tokens = self._count
        shard.sha256 = file_sha256(shard.tmp)


def header(n_tokens: int) -> np.ndarray:
    values = np.zeros(HEADER_INTS, dtype="<i4")
    values[:3] = (SHARD_MAGIC, SHARD_VERSION, n_tokens)
    return values


def read_shard(path: Path, listed_tokens: int | None = None) -> np.memmap:
    """The shard's tokens, memory-mapped. The header is checked against the file size and,
    when given, the token count the manifest lists: a missing, truncated or replaced shard
    is a `ShardFormatError` naming the file."""
    path = Path(path)
    try:
        head = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
        size = path.stat().st_size
    except OSError as exc:
        raise ShardFormatError(f"{path}: cannot read the shard ({exc.strerror or exc})") from exc
    if head.size < HEADER_INTS or head[0] != SHARD_MAGIC or head[1] != SHARD_VERSION:
        raise ShardFormatError(f"{path}: not an llm.c token shard (bad magic or version)")
    tokens = int(head[2])
    if size != HEADER_BYTES + 2 * tokens:
        held = max(0, size - HEADER_BYTES) // 2
        raise ShardFormatError(f"{path}: header says {tokens} tokens, the file holds {held}")
    if listed_tokens is not None and tokens != listed_tokens:
        raise ShardFormatError(
            f"{path}: the manifest lists {listed_tokens} tokens, it holds {tokens}"
        )
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(tokens,))


def file_sha256(path: Path) -> str:
    with open(path, "rb", buffering=0) as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def commit(directory: Path, shards: list[Shard], before_first_change: Callable[[], None]) -> None:
    """Move finished shards to their final names, leaving identical ones untouched.

    `before_first_change` runs once, before the first final file is replaced: the caller
    withdraws the manifest there, so no manifest ever describes a shard that has changed.
    """
    pending = before_first_change
    for shard in shards:
        final = directory / shard.file
        if final.exists() and file_sha256(final) == shard.sha256:
            shard.tmp.unlink()
        else:
            if pending:
                pending()
                pending = None
            os.replace(shard.tmp, final)
        shard.tmp = None
