"""Imported once by the forkserver: every extraction process is forked with the text path
(decoding, numpy, tiktoken) imported and the GPT-2 tokenizer already built (~0.25 s), not each
on its own. The PDF and image extractors are left to the workers that meet such files.

It also limits the tesseract processes the workers start to one OpenMP thread each: every
core already runs a worker, and tesseract's own threads only slow it down then. This is set
here, in the extraction processes only: the variable must not reach the process that trains
(with it, torch's bf16 CPU matmuls return garbage, see `model/precision.py`)."""

import os

from gptforge.pipeline import jobs  # noqa: F401 - imported for its side effect of loading the text path
from gptforge.pipeline.tokenizer import gpt2_encoding

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
gpt2_encoding()
