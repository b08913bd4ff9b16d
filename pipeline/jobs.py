"""What one extraction process does with one file: read, extract, tokenize, cache.

Runs inside the worker pool, so everything it returns is a small picklable dict; the text
and tokens go straight to the cache instead of through a pipe.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from gptforge.pipeline.cache import ExtractionCache
from gptforge.pipeline.errors import write_failure
from gptforge.pipeline.extract_text import extract_notebook, extract_plain
from gptforge.pipeline.records import Extraction, ExtractionError, Kind, Status
from gptforge.pipeline.tokenizer import encode_array


@dataclass(frozen=True)
class ExtractJob:
    path: str
    kind: str
    key: str
    cache_dir: str
    ocr_lang: str
    ocr_dpi: int
    ocr_timeout_s: float
    max_image_pixels: int
    pdf_passwords: tuple[str, ...] = ()
    size: int = 0  # bytes, to group small files into one round trip to a worker


def run_job(job: ExtractJob) -> dict:
    """Extract one file into the cache; returns its status, reason and metadata."""
    try:
        data = Path(job.path).read_bytes()
    except OSError as exc:
        return failed(job, f"cannot read: {exc.strerror or exc}")
    if hashlib.sha256(data).hexdigest() != job.key.split("-")[0]:
        return failed(job, "file changed while being ingested; run again")
    try:
        extraction = extract(data, job)
    except ExtractionError as exc:
        return failed(job, str(exc))
    tokens = encode_array(extraction.text)
    text_utf8 = extraction.text.encode("utf-8")  # once, for the hash and the cache
    meta = {
        "extractor": extraction.extractor,
        "pages": extraction.pages,
        "ocr_pages": extraction.ocr_pages,
        "warnings": extraction.warnings,
        "chars": len(extraction.text),
        "tokens": int(tokens.size),
        "doc_sha256": hashlib.sha256(text_utf8).hexdigest(),
    }
    try:
        ExtractionCache(Path(job.cache_dir)).put(job.key, meta, text_utf8, tokens)
    except OSError as exc:  # a full or read-only disk: no later file can be cached either
        return failed(job, "the extraction cache cannot be written") | {
            "fatal": str(write_failure(job.cache_dir, exc))
        }
    return {"status": Status.OK, "reason": None, **meta}


def failed(job: ExtractJob, reason: str) -> dict:
    """The result of a job that produced nothing (also stands in for killed or crashed ones)."""
    return {"status": Status.ERROR, "reason": reason}


def run_batch(batch: list[ExtractJob]) -> list[dict]:
    """Several small files per message to and from a worker process: on the VMs measured, the
    pipe round trip of one job cost as much CPU as tokenizing 1 kB."""
    return [run_job(job) for job in batch]


def lost_batch(batch: list[ExtractJob], reason: str) -> list[dict] | None:
    """A batch whose process died or timed out: its one file failed; of several files, the
    culprit is unknown (None), and the caller runs them again one by one."""
    return [failed(batch[0], reason)] if len(batch) == 1 else None


def extract(data: bytes, job: ExtractJob) -> Extraction:
    """The PDF and image extractors are imported on first use (pypdf, pdfium and Pillow take
    ~0.3 s): a worker that only reads text never pays for them."""
    if job.kind == Kind.PDF:
        from gptforge.pipeline.extract_pdf import extract_pdf

        return extract_pdf(
            data,
            job.pdf_passwords,
            job.ocr_lang,
            job.ocr_dpi,
            job.ocr_timeout_s,
            job.max_image_pixels,
        )
    if job.kind == Kind.IMAGE:
        from gptforge.pipeline.extract_image import extract_image

        return extract_image(data, job.ocr_lang, job.ocr_timeout_s, job.max_image_pixels)
    if job.kind == Kind.NOTEBOOK:
        return extract_notebook(data)
    return extract_plain(data)
