"""Notebooks reduced to their sources and text outputs, and the job a worker process runs."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import docgen
import numpy as np
import pytest
from extract_helpers import (
    DPI,
    LANG,
    MAX_PIXELS,
    OCR_TIMEOUT,
    PAGE_ONE,
    PAGE_TWO,
)
from PIL import Image

from gptforge.pipeline.cache import ExtractionCache, cache_key
from gptforge.pipeline.extract_text import extract_notebook, extract_plain
from gptforge.pipeline.jobs import ExtractJob, run_job
from gptforge.pipeline.records import ExtractionError, Kind, Status
from gptforge.pipeline.tokenizer import (
    data_dir,
    decode,
    encode,
    encode_array,
    gpt2_encoding,
    mergeable_ranks,
)

# --- notebooks --------------------------------------------------------------------------------

PNG_BASE64 = base64.b64encode(docgen.image_bytes(Image.new("RGB", (4, 4)), "PNG")).decode()

NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3"}},
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Loss curves\n", "We plot them."]},
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": 1,
            "source": ["import numpy as np\n", "print('training done')"],
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": ["training done\n"]},
                {
                    "output_type": "execute_result",
                    "execution_count": 1,
                    "metadata": {},
                    "data": {
                        "text/plain": ["array([1, 2, 3])"],
                        "text/html": ["<table><tr><td>HTML_ONLY_MARKER</td></tr></table>"],
                    },
                },
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"image/png": PNG_BASE64, "text/plain": ["<Figure size 640x480>"]},
                },
                {"output_type": "display_data", "metadata": {}, "data": {"image/png": PNG_BASE64}},
            ],
        },
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": 2,
            "source": "1 / 0",
            "outputs": [
                {
                    "output_type": "error",
                    "ename": "ZeroDivisionError",
                    "evalue": "division by zero",
                    "traceback": [
                        "\x1b[0;31m----------------------------------------\x1b[0m",
                        "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
                    ],
                }
            ],
        },
        {"cell_type": "raw", "metadata": {}, "source": "raw cell text"},
        {"cell_type": "markdown", "metadata": {}, "source": "   "},
    ],
}


def test_a_notebook_becomes_its_sources_and_text_outputs_in_order():
    extraction = extract_notebook(json.dumps(NOTEBOOK).encode())
    assert extraction.extractor == "notebook"
    assert extraction.text == (
        "# Loss curves\nWe plot them.\n\n"
        "import numpy as np\nprint('training done')\n\n"
        "training done\n\n"
        "array([1, 2, 3])\n\n"
        "<Figure size 640x480>\n\n"
        "1 / 0\n\n"
        "----------------------------------------\n"
        "ZeroDivisionError: division by zero\n\n"
        "raw cell text"
    )


def test_a_notebook_loses_its_images_html_and_ansi_colours():
    text = extract_notebook(json.dumps(NOTEBOOK).encode()).text
    assert PNG_BASE64[:16] not in text
    assert "HTML_ONLY_MARKER" not in text
    assert "\x1b" not in text and "[0;31m" not in text


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"this is not json {", "Expecting value"),
        (b'{"nbformat": 4, "metadata": {}}', "cells"),
        (b'{"cells": "not a list"}', "cells"),
        (b"[1, 2, 3]", "cells"),
    ],
    ids=["not-json", "no-cells", "cells-not-a-list", "not-an-object"],
)
def test_an_invalid_notebook_is_an_extraction_error(data: bytes, detail: str):
    with pytest.raises(ExtractionError, match="not a valid Jupyter notebook") as info:
        extract_notebook(data)
    assert detail in str(info.value)


def test_odd_cells_and_outputs_in_a_notebook_are_passed_over():
    notebook = {
        "cells": [
            "not a cell",
            {"cell_type": "code", "source": "x = 1", "outputs": ["not an output", {}]},
            {"cell_type": "markdown", "source": ["still ", "read"]},
        ]
    }
    assert extract_notebook(json.dumps(notebook).encode()).text == "x = 1\n\nstill read"


# --- through the job a worker process runs ----------------------------------------------------


def job_for(path: Path, kind: Kind, cache_dir: Path, **overrides) -> ExtractJob:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    settings = dict(
        path=str(path),
        kind=kind,
        key=cache_key(sha, kind, f"ocr={LANG}@{DPI}"),
        cache_dir=str(cache_dir),
        ocr_lang=LANG,
        ocr_dpi=DPI,
        ocr_timeout_s=OCR_TIMEOUT,
        max_image_pixels=MAX_PIXELS,
    )
    return ExtractJob(**(settings | overrides))


def test_run_job_caches_the_text_and_its_tokens(tmp_path: Path):
    path = docgen.text_pdf(tmp_path / "doc.pdf", [PAGE_ONE, PAGE_TWO])
    job = job_for(path, Kind.PDF, tmp_path / "cache")
    result = run_job(job)
    assert result["status"] == Status.OK
    assert (result["pages"], result["ocr_pages"], result["extractor"]) == (2, 0, "pdf:pypdf")
    entry = ExtractionCache(tmp_path / "cache").get(job.key)
    assert entry.text.startswith("Page one: the flotilla of flat boats")
    assert decode(entry.tokens.tolist()) == entry.text
    assert result["tokens"] == entry.tokens.size
    assert result["doc_sha256"] == hashlib.sha256(entry.text.encode()).hexdigest()


def test_the_cache_reads_tokens_alone_and_refuses_a_truncated_entry(tmp_path: Path):
    paths = [tmp_path / "a.md", tmp_path / "b.md"]
    paths[0].write_text("Tokens without the text: <|endoftext|> stays text.\n" * 50)
    paths[1].write_text("A second entry, appended to the same pack.\n")
    jobs = [job_for(path, Kind.TEXT, tmp_path / "cache") for path in paths]
    assert [run_job(job)["status"] for job in jobs] == [Status.OK, Status.OK]
    cache = ExtractionCache(tmp_path / "cache")
    for job in jobs:
        assert cache.tokens(job.key).tolist() == cache.get(job.key).tokens.tolist()
    (pack,) = (tmp_path / "cache").rglob("*.pack")
    pack.write_bytes(pack.read_bytes()[:-2])
    fresh = ExtractionCache(tmp_path / "cache")
    assert fresh.read_meta(jobs[0].key) is not None, "the first entry is whole"
    assert (fresh.read_meta(jobs[1].key), fresh.tokens(jobs[1].key), fresh.get(jobs[1].key)) == (
        None,
        None,
        None,
    )


def test_a_cache_instance_sees_entries_added_after_it_first_looked(tmp_path: Path):
    path = tmp_path / "late.md"
    path.write_text("Written by a worker after the planner looked.\n")
    job = job_for(path, Kind.TEXT, tmp_path / "cache")
    cache = ExtractionCache(tmp_path / "cache")
    assert cache.read_meta(job.key) is None
    run_job(job)
    assert cache.read_meta(job.key)["tokens"] == cache.tokens(job.key).size > 0


def test_the_tokenizer_is_tiktokens_gpt2_and_encode_array_matches_encode_ordinary():
    import tiktoken.load

    data = data_dir()
    verified = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(data / "vocab.bpe"), encoder_json_file=str(data / "encoder.json")
    )
    assert mergeable_ranks() == verified
    text = "Hello world <|endoftext|> Grüße, 東京 🎉\r\n\tend"
    assert encode("Hello world") == [15496, 995]
    tokens = encode_array(text)
    assert tokens.dtype == np.dtype("<u2")
    assert tokens.tolist() == gpt2_encoding().encode_ordinary(text)
    assert encode_array("").size == 0


def test_run_job_reports_extraction_errors_as_failed_results(tmp_path: Path):
    path = docgen.encrypted_pdf(tmp_path / "locked.pdf", "s3cret")
    result = run_job(job_for(path, Kind.PDF, tmp_path / "cache"))
    assert result == {
        "status": Status.ERROR,
        "reason": "password required; supply one with pdf_passwords",
    }
    unlocked = run_job(job_for(path, Kind.PDF, tmp_path / "cache", pdf_passwords=("s3cret",)))
    assert unlocked["status"] == Status.OK


def test_run_job_notices_a_file_that_changed_after_it_was_hashed(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("first version")
    job = job_for(path, Kind.TEXT, tmp_path / "cache")
    path.write_text("second version")
    assert run_job(job) == {
        "status": Status.ERROR,
        "reason": "file changed while being ingested; run again",
    }
    assert not ExtractionCache(tmp_path / "cache").has(job.key)


def test_run_job_reports_a_file_that_vanished(tmp_path: Path):
    path = tmp_path / "gone.txt"
    path.write_text("soon deleted")
    job = job_for(path, Kind.TEXT, tmp_path / "cache")
    path.unlink()
    assert run_job(job) == {
        "status": Status.ERROR,
        "reason": "cannot read: No such file or directory",
    }


def test_run_job_reads_text_and_notebooks_by_kind(tmp_path: Path):
    text = tmp_path / "a.md"
    text.write_bytes("Grüße\r\n".encode("utf-16"))
    notebook = tmp_path / "n.ipynb"
    notebook.write_text(json.dumps(NOTEBOOK))
    cache = tmp_path / "cache"
    assert run_job(job_for(text, Kind.TEXT, cache))["extractor"] == "text:utf-16-le"
    assert run_job(job_for(notebook, Kind.NOTEBOOK, cache))["extractor"] == "notebook"
    assert extract_plain(text.read_bytes()).text == "Grüße\n"
