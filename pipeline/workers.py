"""A process pool that survives its jobs: a job that hangs is killed at its deadline, a job that
crashes its process (segfault, OOM kill) fails alone, and the pool carries on.

`concurrent.futures.ProcessPoolExecutor` cannot do either: one dead worker breaks the whole
pool, and a running job cannot be cancelled. Several threads may call `map` at once (a Prefect
task runner submitting batches); they share the same worker processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

PRELOAD = ["pipeline.worker_init"]


def _serve(fn: Callable[[Any], Any], conn: Connection) -> None:
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        try:
            conn.send((True, fn(job)))
        except Exception as exc:  # noqa: BLE001 - reported per job, the worker lives on
            conn.send((False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    job: Any = None
    future: Future | None = None
    deadline: float = 0.0


class WorkerPool:
    """Run `fn(job)` in worker processes; `on_failure(job, reason)` replaces lost results."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        workers: int,
        timeout_s: float,
        on_failure: Callable[[Any, str], Any],
    ):
        self._fn, self._timeout, self._on_failure = fn, timeout_s, on_failure
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)
        self._pending: queue.SimpleQueue[tuple[Any, Future]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._closed = False
        self._workers = [self._spawn() for _ in range(workers)]
        self._thread = threading.Thread(target=self._dispatch, name="gptforge-pool", daemon=True)
        self._thread.start()

    def map(self, jobs: Iterable[Any], on_done: Callable[[Any], None] | None = None) -> list[Any]:
        """Results in job order; `on_done(result)` is called as each one finishes."""
        futures = []
        for job in jobs:
            future: Future = Future()
            if on_done:
                future.add_done_callback(lambda f: on_done(f.result()))
            self._pending.put((job, future))
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
        process = self._ctx.Process(target=_serve, args=(self._fn, child), daemon=True)
        process.start()
        child.close()
        return _Worker(process=process, conn=parent)

    def _dispatch(self) -> None:
        while not self._closed:
            self._assign()
            busy = [w for w in self._workers if w.future is not None]
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

    def _assign(self) -> None:
        for w in self._workers:
            if w.future is None and not self._pending.empty():
                w.job, w.future = self._pending.get()
                w.deadline = time.monotonic() + self._timeout
                w.conn.send(w.job)

    def _collect(self, w: _Worker, ready: list[Any]) -> None:
        if w.conn in ready:
            try:
                ok, value = w.conn.recv()
            except (EOFError, OSError):
                pass  # the process died mid-job; reported below as such
            else:
                self._finish(
                    w, value if ok else self._on_failure(w.job, f"unexpected error: {value}")
                )
                return
        if w.process.sentinel in ready or w.conn in ready:
            w.process.join()
            self._replace(w, f"extraction process died (exit code {w.process.exitcode})")
        elif time.monotonic() >= w.deadline:
            self._replace(w, f"timed out after file_timeout_s={self._timeout:g}")

    def _finish(self, w: _Worker, result: Any) -> None:
        future = w.future
        w.job, w.future = None, None
        future.set_result(result)

    def _replace(self, w: _Worker, reason: str) -> None:
        job, future = w.job, w.future
        w.process.kill()
        w.process.join()
        w.conn.close()
        self._workers[self._workers.index(w)] = self._spawn()
        future.set_result(self._on_failure(job, reason))


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
