"""Job functions for the memory-ceiling tests: workers import them by name, as `pool_jobs`."""

from __future__ import annotations

import os
import resource

from gptforge.pipeline.jobs import ExtractJob, run_job


def allocate(n_bytes: int) -> int:
    """Allocates `n_bytes`, returns the worker's pid."""
    bytearray(n_bytes)
    return os.getpid()


def abort(_job: object) -> None:
    os.abort()  # what pdfium does when an allocation fails under the ceiling


def measured_run_job(job: ExtractJob) -> dict:
    """`run_job`'s result, plus the worker's peak resident memory and its ceiling (bytes)."""
    result = run_job(job)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {**result, "peak_rss": peak, "limit": resource.getrlimit(resource.RLIMIT_AS)[0]}
