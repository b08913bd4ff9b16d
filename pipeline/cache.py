"""Content-addressed extraction cache: one file per (content, kind, extractor version, settings).

An entry holds the extracted text, its GPT-2 tokens and the extraction's metadata. It is
written under a temporary name and renamed into place, and its declared sizes are checked
on read, so a killed run never leaves an entry that is taken for finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

MAGIC = b"GFDOC1\n\x00"
HEADER = struct.Struct("<8sQQQ")  # magic, meta bytes, text bytes, token count
EXTRACTOR_VERSION = "2"


@dataclass
class CacheEntry:
    meta: dict
    text: str
    tokens: np.ndarray


def cache_key(content_sha256: str, kind: str, settings: str) -> str:
    tag = hashlib.sha256(f"{kind}|{settings}|v{EXTRACTOR_VERSION}".encode()).hexdigest()[:16]
    return f"{content_sha256}-{tag}"


class ExtractionCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.doc"

    def has(self, key: str) -> bool:
        return self.read_meta(key) is not None

    def put(self, key: str, meta: dict, text_utf8: bytes, tokens: np.ndarray) -> None:
        """Store an entry; the caller passes the text already encoded (it hashed those bytes)."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        meta_bytes = json.dumps(meta, sort_keys=True).encode()
        tokens = np.ascontiguousarray(tokens, dtype="<u2")
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(HEADER.pack(MAGIC, len(meta_bytes), len(text_utf8), len(tokens)))
            fh.write(meta_bytes)
            fh.write(text_utf8)
            fh.write(tokens.data)
        os.replace(tmp, final)

    def read_meta(self, key: str) -> dict | None:
        """The entry's metadata, or None when it is missing or not complete."""
        parsed = self._open(key, with_body=False)
        return parsed.meta if parsed else None

    def get(self, key: str) -> CacheEntry | None:
        return self._open(key, with_body=True)

    def tokens(self, key: str) -> np.ndarray | None:
        """Only the entry's tokens (all that shards need): the text is skipped, not decoded."""
        try:
            with open(self.path(key), "rb") as fh:
                sizes = self._sizes(fh)
                if sizes is None:
                    return None
                n_meta, n_text, n_tokens = sizes
                fh.seek(HEADER.size + n_meta + n_text)
                return np.frombuffer(fh.read(2 * n_tokens), dtype="<u2")
        except (OSError, struct.error):
            return None

    def _open(self, key: str, with_body: bool) -> CacheEntry | None:
        try:
            with open(self.path(key), "rb") as fh:
                sizes = self._sizes(fh)
                if sizes is None:
                    return None
                n_meta, n_text, n_tokens = sizes
                meta = json.loads(fh.read(n_meta))
                if not with_body:
                    return CacheEntry(meta, "", np.empty(0, dtype="<u2"))
                text = fh.read(n_text).decode("utf-8")
                tokens = np.frombuffer(fh.read(2 * n_tokens), dtype="<u2")
        except (OSError, struct.error, ValueError):
            return None
        return CacheEntry(meta, text, tokens)

    @staticmethod
    def _sizes(fh: BinaryIO) -> tuple[int, int, int] | None:
        """(meta, text, token count) from the header, or None for a foreign or partial file."""
        magic, n_meta, n_text, n_tokens = HEADER.unpack(fh.read(HEADER.size))
        if magic != MAGIC:
            return None
        if os.fstat(fh.fileno()).st_size != HEADER.size + n_meta + n_text + 2 * n_tokens:
            return None
        return n_meta, n_text, n_tokens
