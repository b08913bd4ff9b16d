"""Imported once by the forkserver: every extraction process is forked with the extractors
imported and the GPT-2 tokenizer already built (~0.25 s), not each on its own."""

from pipeline import jobs  # noqa: F401 - imported for its side effect of loading extractors
from pipeline.tokenizer import gpt2_encoding

gpt2_encoding()
