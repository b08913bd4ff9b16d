"""Imported once by the forkserver: every extraction process is forked with the text path
(decoding, numpy, tiktoken) imported and the GPT-2 tokenizer already built (~0.25 s), not each
on its own. The PDF and image extractors are left to the workers that meet such files."""

from pipeline import jobs  # noqa: F401 - imported for its side effect of loading the text path
from pipeline.tokenizer import gpt2_encoding

gpt2_encoding()
