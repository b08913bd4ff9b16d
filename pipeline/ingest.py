"""Ingestion as plain steps: plan (discover, hash, sniff) -> extract -> assemble.

`ingest()` is the one sequence (check, lock, plan, extract, assemble); an `Executor` says how
its steps run: here by default, as Prefect tasks in `flows/`. Only extraction is expensive,
and it only sees files whose content the cache has not seen before.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptforge.pipeline.atomic import exclusive
from gptforge.pipeline.cache import EXTRACTOR_VERSION, ExtractionCache, cache_key
from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.discover import discover
from gptforge.pipeline.errors import RunError
from gptforge.pipeline.jobs import ExtractJob, lost_batch, run_batch
from gptforge.pipeline.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SPLITS,
    dataset_digest,
    tokenizer_info,
    write_manifest,
)
from gptforge.pipeline.names import display_path
from gptforge.pipeline.ocr import check_languages
from gptforge.pipeline.records import FileRecord, Kind, Status
from gptforge.pipeline.settings import ConfigError
from gptforge.pipeline.shards import ShardWriter, commit
from gptforge.pipeline.sniff import SNIFF_BYTES, sniff
from gptforge.pipeline.workers import WorkerPool, start_forkserver

Progress = Callable[[str, int, int], None]
Batch = list[ExtractJob]
# A batch of small files is ~40 ms of work: little imbalance at the end of a run, and the
# per-message cost (pipe writes, wake-ups: ~0.15 ms here) spread over ~25 files.
BATCH_FILES = 64
BATCH_BYTES = 256 * 1024
EMPTY_REASONS = {
    Kind.PDF: "no text layer, and OCR of its pages found no text",
    Kind.IMAGE: "OCR found no text",
}


class IngestError(RunError):
    """Ingest cannot go on: the output is locked by another ingest or cannot be written."""


@dataclass
class Plan:
    """One record per discovered file, and the extraction jobs the cache cannot answer."""

    cfg: IngestConfig
    records: list[FileRecord]
    pruned: list[dict[str, str]]
    jobs: list[tuple[int, ExtractJob]] = field(default_factory=list)


class Executor:
    """How `ingest` runs its steps: this one runs them here, the extraction batches on threads
    that share the worker pool; `flows/ingest.py` runs each step as a Prefect task. Executors
    only run steps; the order of the steps is `ingest`'s alone."""

    def plan(self, cfg: IngestConfig) -> Plan:
        return plan(cfg)

    def pool(self, cfg: IngestConfig, jobs: int) -> AbstractContextManager[WorkerPool | None]:
        """The extraction processes `map_batches` gets: here, on this machine."""
        return open_pool(cfg, jobs)

    def map_batches(
        self, batches: Sequence[Batch], pool: WorkerPool | None
    ) -> Iterator[tuple[Batch, list[dict]]]:
        """`extract_batch` on every batch at once; (batch, results) as each one completes."""
        assert pool is not None
        threads = ThreadPoolExecutor(pool.capacity, thread_name_prefix="gptforge-batch")
        try:
            futures = {threads.submit(extract_batch, batch, pool): batch for batch in batches}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:  # stopping early: queued batches never start; closing the pool ends the rest
            threads.shutdown(wait=False, cancel_futures=True)

    def assemble(self, work: Plan) -> dict[str, Any]:
        return assemble(work)


def ingest(
    cfg: IngestConfig, progress: Progress | None = None, executor: Executor | None = None
) -> dict[str, Any]:
    """Run the whole ingestion; returns the manifest it wrote."""
    if executor is None and cfg.executor != "local":
        raise ConfigError(
            "executor", f"{cfg.executor} runs through the ingest flow (gptforge ingest), not here"
        )
    executor = executor or Executor()
    check_languages(cfg.ocr_lang)
    with locked(cfg.out):
        work = executor.plan(cfg)
        if work.jobs:
            extract(work, executor, progress)
        return executor.assemble(work)


def open_pool(cfg: IngestConfig, jobs: int) -> WorkerPool:
    """Extraction processes: no more than there are jobs, each batch killed at `file_timeout_s`."""
    return new_pool(max(1, min(cfg.workers, jobs)), cfg.file_timeout_s)


def new_pool(workers: int, timeout_s: float, memory_limit: int | None = None) -> WorkerPool:
    """A pool of extraction processes that run `batched` batches (also one per Dask worker)."""
    return WorkerPool(
        run_batch, workers, timeout_s, lost_batch, lambda b: is_quick(b[0]), memory_limit
    )


def is_quick(job: ExtractJob) -> bool:
    """Text, code and notebooks take milliseconds; PDFs and images may take minutes of OCR."""
    return job.kind not in (Kind.PDF, Kind.IMAGE)


def cache_for(cfg: IngestConfig) -> ExtractionCache:
    return ExtractionCache(cfg.out / "cache")


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """One ingest per output directory at a time; a killed holder releases it with its life."""
    busy = f"another ingest is writing to {out}; wait for it to end"
    with exclusive(out / ".lock", IngestError(busy)):
        for stale in [*out.glob("shards/.*.tmp"), *out.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)
        yield


def plan(cfg: IngestConfig) -> Plan:
    """Discover, hash and classify every file; answer what the cache already knows.

    The first file the cache cannot answer starts the extraction server, so that its start
    (imports, tokenizer) overlaps the rest of planning; a fully cached run never starts it,
    nor does one whose extraction runs elsewhere (a Dask cluster).
    """
    found = discover(cfg)
    cache = cache_for(cfg)
    work = Plan(cfg=cfg, records=[], pruned=found.pruned)
    first_path: dict[str, str] = {}
    for f in found.files:
        record = FileRecord(path=f.path, relpath=f.relpath, root=f.root, size=f.size)
        work.records.append(record)
        if f.error_reason or f.skip_reason:
            _set(
                record,
                Status.ERROR if f.error_reason else Status.SKIPPED,
                f.error_reason or f.skip_reason,
            )
            continue
        try:
            record.sha256, head = _hash(Path(f.path))
        except OSError as exc:
            _set(record, Status.ERROR, f"cannot read: {exc.strerror or exc}")
            continue
        verdict = sniff(f.relpath, head)
        record.kind = verdict.kind
        if verdict.skip_reason:
            _set(record, Status.SKIPPED, verdict.skip_reason)
        elif record.sha256 in first_path:
            original = display_path(first_path[record.sha256])
            _set(record, Status.DUPLICATE, f"same bytes as {original}")
            record.duplicate_of = first_path[record.sha256]
        elif f.size == 0:
            _set(record, Status.EMPTY, "empty file (0 bytes)")
        else:
            first_path[record.sha256] = f.path
            key = cache_key(record.sha256, record.kind, cfg.extraction_key())
            meta = cache.read_meta(key)
            if meta is not None:
                apply_result(record, {"status": Status.OK, **meta})
            else:
                if not work.jobs and cfg.executor == "local":
                    start_forkserver()
                work.jobs.append((len(work.records) - 1, _job(cfg, record, key, cache)))
    return work


def extract(work: Plan, executor: Executor, progress: Progress | None = None) -> None:
    """The plan's jobs through the extraction processes, in `batched` batches mapped by the
    executor; each file's record gets its result as its batch completes."""
    records = {id(job): work.records[index] for index, job in work.jobs}
    done, total = 0, len(records)
    if progress:
        progress("extract", done, total)
    batches = batched([job for _, job in work.jobs])
    with (
        executor.pool(work.cfg, total) as pool,
        closing(executor.map_batches(batches, pool)) as completed,
    ):
        for batch, results in completed:
            for job, result in zip(batch, results, strict=True):
                apply_result(records[id(job)], result)
            done += len(batch)
            if progress:
                progress("extract", done, total)


def extract_batch(batch: Batch, pool: WorkerPool) -> list[dict]:
    """One batch into the cache; one result dict per job, in order.

    A batch whose process died or timed out is run again file by file, so that only the file
    that caused it is reported. A cache that cannot be written (a full disk) stops the
    ingest: no later file would fare better.
    """
    (results,) = pool.map([batch])
    if results is None:
        results = [alone for (alone,) in pool.map([[job] for job in batch])]
    if fatal := next((r["fatal"] for r in results if "fatal" in r), None):
        raise IngestError(fatal)
    return results


def batched(jobs: Sequence[ExtractJob]) -> list[Batch]:
    """The one batching of ingest: a batch is one message to a worker and, in the flow, one
    Prefect task. Consecutive quick jobs, up to BATCH_FILES files or BATCH_BYTES bytes;
    others alone."""
    batches: list[Batch] = []
    size = 0
    for job in jobs:
        last = batches[-1] if batches else None
        if (
            last
            and is_quick(last[0])
            and is_quick(job)
            and len(last) < BATCH_FILES
            and size + job.size <= BATCH_BYTES
        ):
            last.append(job)
            size += job.size
        else:
            batches.append([job])
            size = job.size
    return batches


def apply_result(record: FileRecord, result: dict) -> None:
    record.status, record.reason = result["status"], result.get("reason")
    for name in ("extractor", "pages", "ocr_pages", "chars", "tokens", "doc_sha256"):
        if name in result:
            setattr(record, name, result[name])
    record.warnings = list(result.get("warnings", []))
    if record.status == Status.OK and record.tokens == 0:
        _set(record, Status.EMPTY, EMPTY_REASONS.get(record.kind, "no text after decoding"))


def assemble(work: Plan) -> dict[str, Any]:
    """Deduplicate by text, split by content hash, write shards, then the manifest."""
    cfg, cache = work.cfg, cache_for(work.cfg)
    _dedupe_text(work.records)
    shard_dir = cfg.out / "shards"
    writers = {split: ShardWriter(shard_dir, split, cfg.shard_tokens) for split in SPLITS}
    documents = [record for record in work.records if record.status == Status.OK]
    assign_splits(documents, cfg.val_fraction)
    for record in documents:
        tokens = cache.tokens(cache_key(record.sha256, record.kind, cfg.extraction_key()))
        if tokens is None:
            raise IngestError(f"cache entry for {display_path(record.path)} vanished during ingest")
        record.shard, record.offset = writers[record.split].add(tokens)
        record.shard = f"shards/{record.shard}"
    shards = {split: writers[split].close() for split in SPLITS}
    manifest_path = cfg.out / MANIFEST_NAME
    for split in SPLITS:
        commit(shard_dir, shards[split], lambda: manifest_path.unlink(missing_ok=True))
    manifest = _manifest(work, shards)
    write_manifest(cfg.out, manifest)
    listed = {s["file"] for split in SPLITS for s in manifest["splits"][split]["shards"]}
    for old in shard_dir.glob("*.bin"):
        if f"shards/{old.name}" not in listed:
            old.unlink()
    return manifest


def split_of(doc_sha256: str, val_fraction: float) -> str:
    """A pure function of the document's content: adding files never moves old documents."""
    return "val" if _hash_point(doc_sha256) < val_fraction * 2**64 else "train"


def assign_splits(documents: list[FileRecord], val_fraction: float) -> None:
    """Each document's split by its own content hash (`split_of`). A small corpus can get no
    validation document that way (8 documents at 0.05: two times in three); then, if it has
    two or more and `val_fraction` > 0, the one whose hash lies lowest goes to val, the one
    the rule would pick first as the fraction grows. Still a pure function of the contents."""
    for record in documents:
        record.split = split_of(record.doc_sha256, val_fraction)
    if val_fraction > 0 and len(documents) >= 2 and all(r.split == "train" for r in documents):
        min(documents, key=lambda r: _hash_point(r.doc_sha256)).split = "val"


def _hash_point(doc_sha256: str) -> int:
    return int(doc_sha256[:16], 16)


def _dedupe_text(records: list[FileRecord]) -> None:
    first: dict[str, str] = {}
    for record in records:
        if record.status != Status.OK:
            continue
        if record.doc_sha256 in first:
            _set(record, Status.DUPLICATE, f"same text as {display_path(first[record.doc_sha256])}")
            record.duplicate_of = first[record.doc_sha256]
        else:
            first[record.doc_sha256] = record.path


def _manifest(work: Plan, shards: dict[str, list]) -> dict[str, Any]:
    cfg = work.cfg
    splits = {
        split: {
            "documents": sum(r.split == split for r in work.records),
            "tokens": sum(s.tokens for s in shards[split]),
            "shards": [
                {"file": f"shards/{s.file}", "tokens": s.tokens, "sha256": s.sha256}
                for s in shards[split]
            ],
        }
        for split in SPLITS
    }
    return {
        "format": MANIFEST_FORMAT,
        "tokenizer": tokenizer_info(),
        "dataset_digest": dataset_digest(splits),
        "splits": splits,
        "counts": {
            "files": len(work.records),
            "by_status": dict(sorted(Counter(r.status for r in work.records).items())),
            "by_kind": dict(sorted(Counter(r.kind for r in work.records).items())),
            "ocr_pages": sum(r.ocr_pages for r in work.records if r.status == Status.OK),
        },
        "settings": {
            "sources": [str(s) for s in cfg.sources],
            "val_fraction": cfg.val_fraction,
            "ocr_lang": cfg.ocr_lang,
            "ocr_dpi": cfg.ocr_dpi,
            "shard_tokens": cfg.shard_tokens,
            "include": list(cfg.include),
            "exclude": list(cfg.excludes),
            "include_hidden": cfg.include_hidden,
            "ignore_files": cfg.ignore_files,
            "follow_symlinks": cfg.follow_symlinks,
            "extractor_version": EXTRACTOR_VERSION,
        },
        "pruned": work.pruned,
        "files": [r.to_json() for r in work.records],
    }


def _set(record: FileRecord, status: Status, reason: str | None) -> None:
    record.status, record.reason = status, reason


def _hash(path: Path) -> tuple[str, bytes]:
    """The file's sha256 and its first bytes, for sniffing. Unbuffered, because file_digest
    may read the descriptor directly."""
    with open(path, "rb", buffering=0) as fh:
        head = os.pread(fh.fileno(), SNIFF_BYTES, 0)
        return hashlib.file_digest(fh, "sha256").hexdigest(), head


def _job(cfg: IngestConfig, record: FileRecord, key: str, cache: ExtractionCache) -> ExtractJob:
    return ExtractJob(
        path=record.path,
        kind=record.kind,
        key=key,
        cache_dir=str(cache.root),
        ocr_lang=cfg.ocr_lang,
        ocr_dpi=cfg.ocr_dpi,
        ocr_timeout_s=cfg.ocr_timeout_s,
        max_image_pixels=cfg.max_image_pixels,
        pdf_passwords=cfg.pdf_passwords,
        size=record.size,
    )
