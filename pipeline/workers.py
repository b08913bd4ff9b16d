"""A process pool that survives its jobs: a job that hangs is killed at its deadline, a job that
crashes its process (segfault, OOM kill) fails alone, and the pool carries on.

`concurrent.futures.ProcessPoolExecutor` cannot do either: one dead worker breaks the whole
pool, and a running job cannot be cancelled. Several threads may call `map` at once (a Prefect
task runner submitting batches); they share the same worker processes.

Each worker has a memory ceiling (RLIMIT_AS, address space), by default WORKER_MEMORY_SHARE of
the machine's (or the cgroup's) memory split between the workers, at least MIN_WORKER_MEMORY: a
decompression bomb then fails its own file ("ran out of memory (limit N GB)") instead of the
machine. A worker whose job ran out of memory is replaced, so no fragmented heap lingers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

PRELOAD = ["gptforge.pipeline.worker_init"]
# Jobs sent to a worker ahead of its results: the next one waits in its pipe, so a worker
# never idles while the dispatcher thread collects a result and sends more work.
IN_FLIGHT = 2
# Address space, not resident memory: a worker maps ~0.45 GB before its first job.
WORKER_MEMORY_SHARE = 0.75
MIN_WORKER_MEMORY = 2 * 10**9


def start_forkserver() -> None:
    """Start the server that forks extraction processes, without waiting for it.

    Its preload (extractors, tokenizer) then runs while the caller plans, instead of when
    the first worker is needed. Later pools, in this process, reuse the same server.
    """
    mp.get_context("forkserver").set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()


def _serve(fn: Callable[[Any], Any], conn: Connection, memory_limit: int) -> None:
    """A worker's life: results as (True, value), failures as (False, traceback), running out
    of memory as (None, reason), after which the pool replaces the worker."""
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        memory_limit = min(memory_limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, hard))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        try:
            conn.send((True, fn(job)))
        except MemoryError:
            conn.send((None, out_of_memory()))
        except Exception as exc:  # noqa: BLE001 - reported per job, the worker lives on
            conn.send((False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))


def out_of_memory() -> str:
    """The reason for a job that hit this process's memory ceiling."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return "ran out of memory"
    return f"ran out of memory (limit {limit / 1e9:.3g} GB)"


def _died(exitcode: int | None, memory_limit: int) -> str:
    """Why a worker process is gone. Native code that cannot allocate under the ceiling (pdfium
    rendering a bomb) aborts rather than raising MemoryError."""
    reason = f"extraction process died (exit code {exitcode})"
    if exitcode == -signal.SIGABRT:
        reason += f", most likely out of memory (limit {memory_limit / 1e9:.3g} GB)"
    return reason


class PoolClosed(RuntimeError):
    """The pool was closed before this job ran (the command is stopping)."""


@dataclass
class _Worker:
    """A process and its jobs in flight, oldest (the one running) first."""

    process: Any
    conn: Connection
    jobs: deque[tuple[Any, Future]] = field(default_factory=deque)
    deadline: float = 0.0  # of the job running now


class WorkerPool:
    """Run `fn(job)` in worker processes; `on_failure(job, reason)` replaces lost results.

    `may_queue(job)` says whether a job is short enough to wait in the pipe of a busy worker
    (IN_FLIGHT); a long one queued there could leave another worker idle at the end.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        workers: int,
        timeout_s: float,
        on_failure: Callable[[Any, str], Any],
        may_queue: Callable[[Any], bool] = lambda job: True,
        memory_limit: int | None = None,
    ):
        """`memory_limit`: bytes of address space per worker (default `default_memory_limit`)."""
        self._fn, self._timeout, self._on_failure = fn, timeout_s, on_failure
        self._may_queue = may_queue
        self._memory_limit = memory_limit or default_memory_limit(workers)
        self._ctx = mp.get_context("forkserver")
        start_forkserver()
        self._pending: deque[tuple[Any, Future]] = deque()  # appended by map, popped by _dispatch
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._closed = False
        self._workers = [self._spawn() for _ in range(workers)]
        self._thread = threading.Thread(target=self._dispatch, name="gptforge-pool", daemon=True)
        self._thread.start()

    @property
    def capacity(self) -> int:
        """Jobs the workers hold at once (IN_FLIGHT each): as many threads, each waiting in
        `map` for one job, keep every worker busy."""
        return len(self._workers) * IN_FLIGHT

    def map(self, jobs: Iterable[Any]) -> list[Any]:
        """Results in job order."""
        futures = []
        for job in jobs:
            future: Future = Future()
            self._pending.append((job, future))
            futures.append(future)
        self._wake_w.send(None)
        return [f.result() for f in futures]

    def close(self) -> None:
        self._closed = True
        self._wake_w.send(None)
        self._thread.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_serve, args=(self._fn, child, self._memory_limit), daemon=True
        )
        process.start()
        child.close()
        return _Worker(process=process, conn=parent)

    def _dispatch(self) -> None:
        while not self._closed:
            self._assign()
            busy = [w for w in self._workers if w.jobs]
            handles: list[Any] = [self._wake_r]
            for w in busy:
                handles += [w.conn, w.process.sentinel]
            timeout = min((w.deadline for w in busy), default=time.monotonic() + 3600)
            ready = wait(handles, timeout=max(0.0, timeout - time.monotonic()))
            if self._wake_r in ready:
                while self._wake_r.poll():
                    self._wake_r.recv()
            for w in busy:
                self._collect(w, ready)
        for w in self._workers:
            w.conn.close()
            w.process.kill()
            w.process.join()
        # Closed with work left (Ctrl-C, SIGTERM): callers blocked in `map` must not wait
        # forever for results that will never come.
        unfinished = [f for w in self._workers for _, f in w.jobs] + [f for _, f in self._pending]
        for future in unfinished:
            if not future.done():
                future.set_exception(PoolClosed("the extraction pool was closed"))

    def _assign(self) -> None:
        """Idle workers first, then a second job each: a short batch still uses every process."""
        for depth in range(IN_FLIGHT):
            for w in self._workers:
                if len(w.jobs) > depth or not self._pending:
                    continue
                if w.jobs and not self._may_queue(self._pending[0][0]):
                    return
                job, future = self._pending.popleft()
                try:
                    w.conn.send(job)
                except OSError:  # died since it was last seen: its job (if any) is collected
                    self._pending.appendleft((job, future))
                    if not w.jobs:
                        self._respawn(w)
                    continue
                if not w.jobs:
                    w.deadline = time.monotonic() + self._timeout
                w.jobs.append((job, future))

    def _collect(self, w: _Worker, ready: list[Any]) -> None:
        if w.conn in ready:
            try:
                ok, value = w.conn.recv()
            except (EOFError, OSError):
                pass  # the process died mid-job; reported below as such
            else:
                if ok is None:  # out of memory
                    self._replace(w, value)
                    return
                job, future = w.jobs.popleft()
                w.deadline = time.monotonic() + self._timeout  # the next job starts now
                future.set_result(
                    value if ok else self._on_failure(job, f"unexpected error: {value}")
                )
                return
        if w.process.sentinel in ready or w.conn in ready:
            w.process.join()
            self._replace(w, _died(w.process.exitcode, self._memory_limit))
        elif time.monotonic() >= w.deadline:
            self._replace(w, f"timed out after file_timeout_s={self._timeout:g}")

    def _replace(self, w: _Worker, reason: str) -> None:
        """Kill and respawn; the running job fails with `reason`, queued ones run elsewhere."""
        (job, future), *queued = w.jobs
        self._respawn(w)
        self._pending.extendleft(reversed(queued))
        future.set_result(self._on_failure(job, reason))

    def _respawn(self, w: _Worker) -> None:
        w.process.kill()
        w.process.join()
        w.conn.close()
        self._workers[self._workers.index(w)] = self._spawn()


def default_memory_limit(workers: int) -> int:
    """WORKER_MEMORY_SHARE of the memory this process may use, split between `workers`."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:  # a container's limit (cgroup v2), when lower
        cgroup = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        cgroup = "max"
    if cgroup.isdigit():
        memory = min(memory, int(cgroup))
    return max(MIN_WORKER_MEMORY, int(memory * WORKER_MEMORY_SHARE / workers))


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
