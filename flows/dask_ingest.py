"""Ingest's extraction batches on a Dask cluster (`--executor dask` or `dask://HOST:PORT`).

The batches go through Prefect's Dask task runner (`prefect-dask`); on each Dask worker they
run in that worker's own pool of extraction processes (one per worker thread), which write
to the extraction cache under the dataset directory.
Every worker must see the sources and the dataset directory at the same paths (one machine,
or shared storage). Planning and assembly stay in the process that runs the flow.
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from urllib.parse import urlsplit

import dask
import distributed
from prefect import task
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from gptforge.flows.ingest import RETRIED, PrefectExecutor
from gptforge.pipeline.config import IngestConfig, scheduler_address
from gptforge.pipeline.errors import RunError
from gptforge.pipeline.ingest import Batch, extract_batch, new_pool
from gptforge.pipeline.workers import MIN_WORKER_MEMORY, WORKER_MEMORY_SHARE, WorkerPool

CONNECT_TIMEOUT_S = 10.0
# A worker process's extraction pools, one per ingest that sent it batches.
_pools: dict[str, WorkerPool] = {}
_pools_lock = threading.Lock()


class DaskExecutor(PrefectExecutor):
    """`PrefectExecutor` with the extraction batches on a Dask cluster: this process plans and
    assembles, and starts no extraction processes of its own."""

    def __init__(self, cfg: IngestConfig):
        self.runner = task_runner(cfg)
        self.ingest_id = uuid.uuid4().hex
        self.file_timeout_s = cfg.file_timeout_s

    def pool(self, cfg: IngestConfig, jobs: int) -> AbstractContextManager[None]:
        return nullcontext()

    def map_batches(
        self, batches: Sequence[Batch], pool: WorkerPool | None
    ) -> Iterator[tuple[Batch, list[dict]]]:
        """Every batch submitted at once; Dask runs a lost worker's batches again elsewhere.
        A result taken is released, so that Dask never recomputes a finished batch whose
        worker died later (prefect#15442)."""
        with (
            dask.config.set({"distributed.worker.daemon": False}),
            self.runner.duplicate() as runner,
        ):
            check_workers(runner.client)
            try:
                futures = {
                    runner.submit(
                        extract_on_worker_task,
                        {  # batch not quoted: Dask would turn the quote (a namedtuple) into a tuple
                            "batch": batch,
                            "ingest_id": self.ingest_id,
                            "file_timeout_s": self.file_timeout_s,
                        },
                    ): batch
                    for batch in batches
                }
                for future in as_completed(list(futures)):
                    results = future.result()
                    future.wrapped_future.release()
                    yield futures[future], results
            finally:  # a lost scheduler or worker takes its pools with it
                with suppress(OSError, TimeoutError):
                    runner.client.run(close_pools, self.ingest_id)


def check_scheduler(executor: str) -> None:
    """A running scheduler must answer before anything starts; one line naming it if not."""
    address = scheduler_address(executor)
    if address is None:
        return
    parts = urlsplit(address)
    try:
        socket.create_connection((parts.hostname, parts.port), CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise RunError(
            f"cannot reach the Dask scheduler at {address} ({exc.strerror or exc}); "
            "start one with `dask scheduler` or correct --executor"
        ) from exc


def check_workers(client: distributed.Client) -> None:
    """Some worker must be there, and none may be a daemon process: those may not start the
    extraction processes (a nanny's workers are, unless Dask's `worker.daemon` is false)."""
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except TimeoutError as exc:
        raise RunError(f"the Dask scheduler at {client.scheduler.address} has no workers") from exc
    if daemons := sorted(w for w, daemon in client.run(is_daemon).items() if daemon):
        raise RunError(
            f"Dask workers {', '.join(daemons)} run as daemon processes, which cannot start "
            "extraction processes; start them with DASK_DISTRIBUTED__WORKER__DAEMON=False"
        )


def task_runner(cfg: IngestConfig) -> DaskTaskRunner:
    """The running scheduler `cfg.executor` names, or a cluster on this machine for `dask`:
    `workers` worker processes of one thread each, bound to 127.0.0.1 (the dashboard on a
    free port)."""
    address = scheduler_address(cfg.executor)
    if address:
        return DaskTaskRunner(address=address, client_kwargs={"timeout": CONNECT_TIMEOUT_S})
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": cfg.workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",
        }
    )


def extract_on_worker(batch: Batch, ingest_id: str, file_timeout_s: float) -> list[dict]:
    """`extract_batch` on a Dask worker, through this worker's extraction pool for this ingest
    (started by its first batch): one process per worker thread, and the worker's memory
    limit, when it has one, shared between them."""
    with _pools_lock:
        pool = _pools.get(ingest_id)
        if pool is None:
            worker = distributed.get_worker()
            processes = worker.state.nthreads
            limit = worker.memory_manager.memory_limit
            share = limit and max(MIN_WORKER_MEMORY, int(limit * WORKER_MEMORY_SHARE / processes))
            pool = _pools[ingest_id] = new_pool(processes, file_timeout_s, share or None)
    return extract_batch(batch, pool)


def close_pools(ingest_id: str) -> None:
    """Run on every worker when an ingest ends: its extraction processes stop with it."""
    with _pools_lock:
        pool = _pools.pop(ingest_id, None)
    if pool is not None:
        pool.close()


def is_daemon() -> bool:
    """Daemon processes may not have children (multiprocessing refuses to start them)."""
    return multiprocessing.current_process().daemon


extract_on_worker_task = task(extract_on_worker, name="extract-batch", **RETRIED)
